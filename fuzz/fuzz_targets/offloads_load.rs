//! Loads arbitrary bytes as a host agent's offloads file (`FILE.offloads` beside `--persist`
//! or `--snapshot`): the loader must refuse every file it does not take whole (nothing of it
//! registered) and never panic. Seed the corpus with a file a host agent wrote. The bounded
//! property test of the same is in `host-agent/src/offload_store.rs`
//! (`any_bytes_load_whole_or_not_at_all`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use naam_core::pool::Registry;
use naam_core::verifier::VerifierConfig;
use naam_host_agent::offload_store::load_bytes;

fuzz_target!(|data: &[u8]| {
    let registry = Registry::new();
    match load_bytes(data.to_vec(), &registry, &VerifierConfig::default()) {
        Ok(loaded) => assert_eq!(loaded.count, registry.len()),
        Err(_) => assert!(registry.is_empty(), "a refused file left offloads"),
    }
});
