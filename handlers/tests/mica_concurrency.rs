//! One writer and several VM readers on one table: readers never see a value that was never
//! written for a key, nor a half-written one, also while the log wraps and overwrites items.
//!
//! Values describe themselves: every 8-byte word is (key id << 32 | sequence), and the length
//! is a function of (key id, sequence). Each word of a torn or mixed value would disagree.

mod mica_common;

use mica_common::*;
use naam_core::vm::Engine;
use naam_handlers::mica::{key_for, MicaGeometry};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const KEYS: u64 = 48;

fn value_len(id: u64, seq: u64) -> usize {
    8 * (1 + ((id * 7 + seq * 13) % 40) as usize)
}

fn value(id: u64, seq: u64) -> Vec<u8> {
    let w = (id << 32 | seq).to_le_bytes();
    w.iter().copied().cycle().take(value_len(id, seq)).collect()
}

/// Checks a value read for key `id`; returns its sequence number.
fn check(id: u64, v: &[u8], started: &[AtomicU64]) -> u64 {
    assert!(
        v.len() >= 8 && v.len() % 8 == 0,
        "key {id}: length {}",
        v.len()
    );
    let w0 = u64::from_le_bytes(v[..8].try_into().unwrap());
    for c in v.chunks(8) {
        assert_eq!(
            u64::from_le_bytes(c.try_into().unwrap()),
            w0,
            "key {id}: mixed words"
        );
    }
    let (kid, seq) = (w0 >> 32, w0 & 0xffff_ffff);
    assert_eq!(kid, id, "value of another key");
    assert_eq!(
        v.len(),
        value_len(id, seq),
        "key {id} seq {seq}: wrong length"
    );
    assert!(
        seq <= started[id as usize].load(Ordering::SeqCst),
        "key {id}: seq {seq} was never written"
    );
    seq
}

fn run(writer_on_vm: bool, engine: Engine) {
    let p = programs();
    // A 16 KiB log for 48 keys of up to 320 bytes: it wraps every ~80 writes.
    let geom = MicaGeometry {
        index_region: 0,
        log_region: 1,
        bucket_count: 8,
        overflow_count: 64,
        log_size: 1 << 14,
        lossless: false,
    };
    let s = Store::new(geom);
    let started: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(0)).collect();
    for id in 0..KEYS {
        started[id as usize].store(1, Ordering::SeqCst);
        s.table.put(&key_for(5, id), &value(id, 1)).unwrap();
    }
    let done = AtomicBool::new(false);
    let writes = 10_000u64;
    std::thread::scope(|sc| {
        let readers: Vec<_> = (0..3)
            .map(|r| {
                let (s, started, done, p) = (&s, &started, &done, &p);
                sc.spawn(move || {
                    let mut vm = vm(p, engine);
                    let mut mem = s.mem.clone();
                    let mut out = [0u8; 1024];
                    let (mut reads, mut hits) = (0u64, 0u64);
                    let mut id = r as u64;
                    while !done.load(Ordering::SeqCst) || reads < 1000 {
                        id = (id * 17 + 1) % KEYS;
                        if let Some(n) = vm
                            .get(&s.regions, &mut mem, &s.geom, &key_for(5, id), &mut out)
                            .unwrap()
                        {
                            check(id, &out[..n], started);
                            hits += 1;
                        }
                        reads += 1;
                    }
                    assert_eq!(vm.executor().stats.errors(), 0);
                    (reads, hits)
                })
            })
            .collect();
        let mut wvm = writer_on_vm.then(|| vm(&p, engine));
        let mut mem = s.mem.clone();
        for i in 0..writes {
            let id = (i * 5) % KEYS;
            let seq = 2 + i;
            started[id as usize].store(seq, Ordering::SeqCst);
            let v = value(id, seq);
            match &mut wvm {
                Some(vm) => vm
                    .put(&s.regions, &mut mem, &s.geom, &key_for(5, id), &v)
                    .unwrap(),
                None => s.table.put(&key_for(5, id), &v).unwrap(),
            }
            if i % 1000 == 999 {
                // Deletes and re-inserts too.
                let k = key_for(5, id);
                match &mut wvm {
                    Some(vm) => assert!(vm.delete(&s.regions, &mut mem, &s.geom, &k).unwrap()),
                    None => assert!(s.table.delete(&k).unwrap()),
                }
                s.table.put(&k, &v).unwrap();
            }
        }
        done.store(true, Ordering::SeqCst);
        for r in readers {
            let (reads, hits) = r.join().expect("reader");
            println!("reader: {reads} reads, {hits} hits");
            assert!(hits > 0, "readers saw values");
        }
    });
    let laps = s.table.log_tail() / s.table.geometry().log_size;
    assert!(laps >= 10, "the log wrapped only {laps} times");
}

#[test]
fn native_writer_and_vm_readers() {
    run(false, Engine::native());
}

#[test]
fn vm_writer_and_vm_readers() {
    run(true, Engine::native());
}

#[test]
fn vm_writer_and_interpreter_readers() {
    run(true, Engine::Interpreter);
}
