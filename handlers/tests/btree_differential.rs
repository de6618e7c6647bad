//! Differential test: random LOOKUPs, SCANs and inserts through the VM (step executor, local
//! memory) at each engine, and through the native reference, against a BTreeMap model.

mod btree_support;

use btree_support::{engines, model_scan, region, Vm};
use naam_core::vm::Engine;
use naam_handlers::btree::layout::SCAN_MAX;
use naam_handlers::btree::{native, BTree, BTreeConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Instant;

/// Random operations per run.
const OPS: usize = 100_000;

/// Operations per run at `engine`. rbpf's interpreter takes about 200 µs per step in a debug
/// build on this (shared, 2-core) machine, so 100 000 operations (about 500 000 steps) would
/// take two minutes there: debug builds run fewer at the interpreter; optimised builds
/// (`cargo test --release`) run them all.
fn ops_for(engine: Engine, small_nodes: bool) -> usize {
    match engine {
        Engine::Interpreter if cfg!(debug_assertions) => {
            if small_nodes {
                5_000
            } else {
                15_000
            }
        }
        _ => OPS,
    }
}

/// Keys from a small space (so that inserts update and lookups hit) plus the boundaries.
fn random_key(rng: &mut StdRng) -> u64 {
    match rng.gen_range(0..100) {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX - rng.gen_range(0..4),
        3..=10 => rng.gen(),
        _ => rng.gen_range(0..40_000) * 16,
    }
}

fn run(engine: Engine, cfg: BTreeConfig, seed: u64, ops: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let initial: BTreeMap<u64, u64> = (0..4000)
        .map(|_| (rng.gen_range(0..40_000) * 16 + 8, rng.gen()))
        .collect();
    let mut model = initial.clone();
    let r = region(cfg.region_len(initial.len() as u64, ops as u64));
    let mut t = BTree::bulk_load(r.mem(), cfg, initial).expect("bulk load");
    let mem = r.mem();
    let mut vm = Vm::new(engine, mem.clone());
    let mut out = vec![(0, 0); SCAN_MAX];
    let (mut hits, mut scanned) = (0, 0);
    let started = Instant::now();
    for op in 0..ops {
        let key = random_key(&mut rng);
        match rng.gen_range(0..10) {
            0..=3 => {
                let want = model.get(&key).copied();
                hits += want.is_some() as usize;
                assert_eq!(
                    vm.lookup(key).expect("lookup"),
                    want,
                    "op {op}: {engine:?} lookup {key}"
                );
                assert_eq!(
                    native::lookup(&mem, t.root(), key),
                    Ok(want),
                    "op {op}: native lookup {key}"
                );
            }
            4..=6 => {
                let val = rng.gen();
                assert_eq!(
                    t.insert(key, val).expect("insert"),
                    model.insert(key, val),
                    "op {op}: insert {key}"
                );
            }
            _ => {
                let count = rng.gen_range(1..=SCAN_MAX);
                let want = model_scan(&model, key, count);
                scanned += want.len();
                assert_eq!(
                    vm.scan(key, count),
                    want,
                    "op {op}: {engine:?} scan {count} from {key}"
                );
                let got =
                    native::scan(&mem, t.root(), key, &mut out[..count]).expect("native scan");
                assert_eq!(
                    out[..got.n].to_vec(),
                    want,
                    "op {op}: native scan {count} from {key}"
                );
                assert_eq!(got.end, want.len() < count);
            }
        }
    }
    assert_eq!(t.len(), model.len() as u64);
    assert!(
        hits > ops / 100 && scanned > ops,
        "the workload must exercise hits ({hits}) and scans ({scanned})"
    );
    let stats = vm.executor().stats.clone();
    assert_eq!(stats.errors(), 0);
    println!(
        "{engine:?} {cfg:?}: {ops} ops in {:?}, height {}, {} messages, {} steps",
        started.elapsed(),
        t.height(),
        stats.messages,
        stats.steps
    );
}

#[test]
fn random_ops_match_the_model_at_the_compiled_engine() {
    let engine = Engine::native();
    run(engine, BTreeConfig::default(), 1, ops_for(engine, false));
}

#[test]
fn random_ops_match_the_model_at_the_interpreter() {
    run(
        Engine::Interpreter,
        BTreeConfig::default(),
        2,
        ops_for(Engine::Interpreter, false),
    );
}

#[test]
fn random_ops_match_the_model_with_small_nodes() {
    // Four keys per node: deeper trees, many more splits, scans across many leaves.
    let cfg = BTreeConfig::new(4, 3).expect("config");
    for (i, engine) in engines().into_iter().enumerate() {
        run(engine, cfg, 10 + i as u64, ops_for(engine, true));
    }
}
