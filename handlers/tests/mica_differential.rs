//! Differential tests: random GET / PUT / DELETE through the handlers (each engine) and the
//! native implementation on one table, against a `HashMap` model.

mod mica_common;

use mica_common::*;
use naam_core::vm::Engine;
use naam_handlers::mica::{key_for, MicaGeometry};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// Keys of every length 1..=16 (most of them 16 bytes).
fn key(id: u64) -> Vec<u8> {
    let k = key_for(99, id);
    let len = if id % 5 == 0 {
        1 + (id as usize % 16)
    } else {
        16
    };
    let mut k = k[..len].to_vec();
    k[0] = id as u8; // short keys of different ids differ in their first byte(s)
    if len >= 2 {
        k[1] = (id >> 8) as u8;
    }
    k
}

fn value(rng: &mut StdRng, id: u64, seq: u64) -> Vec<u8> {
    let len = match rng.gen_range(0..10) {
        0 => rng.gen_range(257..=1024),
        1..=2 => rng.gen_range(65..=256),
        _ => rng.gen_range(1..=64),
    };
    (0..len)
        .map(|i| (id as usize * 31 + seq as usize * 7 + i) as u8)
        .collect()
}

/// Runs `ops` random operations; `vm_share` of them through the VM, the rest native.
fn run(engine: Option<Engine>, ops: usize, seed: u64) {
    let keys = 3000u64;
    let p = programs();
    // Few buckets for the keys (chains overflow), a log large enough that nothing is evicted.
    let geom = MicaGeometry {
        index_region: 0,
        log_region: 1,
        bucket_count: 512,
        overflow_count: 1024,
        log_size: 1 << 26,
        lossless: false,
    };
    let mut s = Store::new(geom);
    // Keys of length < 16 that collide after truncation would alias; keep only distinct ones.
    let mut ids: Vec<u64> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for id in 0..keys {
        if seen.insert(key(id)) {
            ids.push(id);
        }
    }
    let mut vm = engine.map(|e| vm(&p, e));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut out = vec![0u8; 1024];
    let (mut hits, mut misses, mut puts, mut deletes) = (0, 0, 0, 0);
    for seq in 0..ops as u64 {
        let id = ids[rng.gen_range(0..ids.len())];
        let k = key(id);
        let via_vm = vm.is_some() && rng.gen_bool(0.8);
        match rng.gen_range(0..100) {
            0..=49 => {
                // Small buffers sometimes: the handler's first read is short, then it reads
                // the whole item.
                let cap = if rng.gen_bool(0.2) { 64 } else { 1024 };
                let want = model.get(&id);
                if want.is_some_and(|v| v.len() > cap) {
                    continue;
                }
                let got = match (&mut vm, via_vm) {
                    (Some(vm), true) => vm
                        .get(&s.regions, &mut s.mem, &s.geom, &k, &mut out[..cap])
                        .unwrap(),
                    _ => s.table.get(&k, &mut out[..cap]).unwrap(),
                };
                assert_eq!(
                    got.map(|n| &out[..n]),
                    want.map(|v| &v[..]),
                    "op {seq}: GET key {id} (vm: {via_vm})"
                );
                if got.is_some() {
                    hits += 1
                } else {
                    misses += 1
                }
            }
            50..=84 => {
                let v = value(&mut rng, id, seq);
                match (&mut vm, via_vm) {
                    (Some(vm), true) => vm.put(&s.regions, &mut s.mem, &s.geom, &k, &v).unwrap(),
                    _ => s.table.put(&k, &v).unwrap(),
                }
                model.insert(id, v);
                puts += 1;
            }
            _ => {
                let was = match (&mut vm, via_vm) {
                    (Some(vm), true) => vm.delete(&s.regions, &mut s.mem, &s.geom, &k).unwrap(),
                    _ => s.table.delete(&k).unwrap(),
                };
                assert_eq!(
                    was,
                    model.remove(&id).is_some(),
                    "op {seq}: DELETE key {id} (vm: {via_vm})"
                );
                deletes += 1;
            }
        }
    }
    println!("{engine:?}: {ops} ops: {hits} hits, {misses} misses, {puts} puts, {deletes} deletes");
    assert!(
        hits > ops / 10 && misses > ops / 50 && deletes > ops / 20,
        "the mix exercised every outcome"
    );
    // Everything the model holds is in the table, through both paths.
    for (&id, v) in &model {
        let n = s.table.get(&key(id), &mut out).unwrap();
        assert_eq!(
            n.map(|n| &out[..n]),
            Some(&v[..]),
            "final native GET of key {id}"
        );
        if let Some(vm) = &mut vm {
            let n = vm
                .get(&s.regions, &mut s.mem, &s.geom, &key(id), &mut out)
                .unwrap();
            assert_eq!(
                n.map(|n| &out[..n]),
                Some(&v[..]),
                "final VM GET of key {id}"
            );
        }
    }
    if let Some(vm) = &vm {
        assert_eq!(vm.executor().stats.errors(), 0);
    }
}

#[test]
fn jit_against_a_hashmap() {
    if !Engine::native().available() || Engine::native() == Engine::Interpreter {
        println!("skipped: no JIT engine on this machine");
        return;
    }
    run(Some(Engine::native()), 100_000, 1);
}

#[test]
fn interpreter_against_a_hashmap() {
    run(Some(Engine::Interpreter), 30_000, 2);
}

#[test]
fn native_against_a_hashmap() {
    run(None, 100_000, 3);
}
