//! Restores arbitrary bytes as a region snapshot (`--snapshot FILE`): the loader must refuse
//! every damaged file whole (nothing of it registered) and never panic. Seed the corpus with
//! a snapshot a host agent wrote. The bounded property test of the same is in
//! `link/tests/conformance.rs` (`a_damaged_snapshot_is_refused_whole_and_never_panics`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use naam_link::shm::{ShmConfig, ShmHost};

fuzz_target!(|data: &[u8]| {
    let mut host = ShmHost::create(&ShmConfig {
        qps: 1,
        ring_slots: 8,
        max_regions: 8,
        load_slots: 1,
        arena_bytes: 1 << 20,
        ..Default::default()
    })
    .expect("an empty host");
    if host.restore_snapshot(&mut &data[..]).is_err() {
        assert!(host.directory().is_empty(), "a refused snapshot left regions");
    }
});
