//! B-tree handlers: programs verify, edge cases (empty tree, missing and boundary keys, scans
//! across leaves and off the end, deep trees, bad arguments), bulk load to 10 M keys.

mod btree_support;

use btree_support::{engines, model_scan, region, Failure, Vm, REGION};
use naam_handlers::btree::layout::{Node, NODE_SIZE, SCAN_MAX, SUPER_SIZE};
use naam_handlers::btree::{native, program, AbortCode, Args, BTree, BTreeConfig};
use std::collections::BTreeMap;

#[test]
fn both_programs_verify_with_the_default_config() {
    let p = naam_handlers::btree::programs().expect("load and verify");
    assert_eq!(p.lookup.name(), "btree_lookup");
    assert_eq!(p.scan.name(), "btree_scan");
    for prog in [&p.lookup, &p.scan] {
        println!(
            "{}: {} instructions, longest path {}",
            prog.name(),
            prog.insn_count(),
            prog.worst_case_insns()
        );
        assert!(
            prog.insn_count() < 600,
            "{} has {} instructions",
            prog.name(),
            prog.insn_count()
        );
    }
    assert!(program::load("naam/nope", &Default::default()).is_err());
}

#[test]
fn empty_tree_has_no_keys() {
    let cfg = BTreeConfig::default();
    let r = region(cfg.region_len(0, 0));
    let t = BTree::create(r.mem(), cfg).expect("create");
    assert_eq!(t.height(), 1);
    assert!(t.is_empty());
    for engine in engines() {
        let mut vm = Vm::new(engine, r.mem());
        for key in [0, 1, 77, u64::MAX] {
            assert_eq!(
                vm.lookup(key).expect("lookup"),
                None,
                "{engine:?} key {key}"
            );
            assert_eq!(vm.scan(key, 10), vec![], "{engine:?} scan from {key}");
            assert_eq!(vm.scan_once(key, 10).expect("scan"), (vec![], true));
        }
    }
    assert_eq!(native::lookup(&r.mem(), t.root(), 5), Ok(None));
    let mut out = [(0, 0); 4];
    assert_eq!(
        native::scan(&r.mem(), t.root(), 0, &mut out).map(|s| (s.n, s.end)),
        Ok((0, true))
    );
}

/// A tree of `n` keys 10, 20, .. with keys 0 and u64::MAX added, for each config.
fn boundary_tree(
    cfg: BTreeConfig,
    n: u64,
) -> (naam_core::memory::OwnedRegion, BTree, BTreeMap<u64, u64>) {
    let mut model: BTreeMap<u64, u64> = (1..=n).map(|i| (i * 10, i * 1000 + 7)).collect();
    model.insert(0, 123);
    model.insert(u64::MAX, 456);
    let r = region(cfg.region_len(model.len() as u64, 0));
    let t = BTree::bulk_load(r.mem(), cfg, model.iter().map(|(&k, &v)| (k, v))).expect("bulk load");
    (r, t, model)
}

#[test]
fn boundary_and_missing_keys() {
    for cfg in [
        BTreeConfig::default(),
        BTreeConfig::new(2, 2).unwrap(),
        BTreeConfig::new(16, 5).unwrap(),
    ] {
        let (r, t, model) = boundary_tree(cfg, 500);
        for engine in engines() {
            let mut vm = Vm::new(engine, r.mem());
            let probes = [0, 1, 9, 10, 11, 4999, 5000, 5001, u64::MAX - 1, u64::MAX];
            for key in probes {
                let want = model.get(&key).copied();
                assert_eq!(
                    vm.lookup(key).expect("lookup"),
                    want,
                    "{cfg:?} {engine:?} key {key}"
                );
                assert_eq!(native::lookup(&r.mem(), t.root(), key), Ok(want));
                assert_eq!(native::lookup_copying(&r.mem(), t.root(), key), Ok(want));
                // Starting at the root given in the args skips the superblock read.
                let args = Args::lookup(REGION, key).with_root(t.root());
                assert_eq!(vm.lookup_args(args).expect("lookup"), want);
            }
            // The last key, scans from it and past it.
            assert_eq!(
                vm.scan_once(u64::MAX, 5).expect("scan"),
                (vec![(u64::MAX, 456)], true)
            );
            assert_eq!(vm.scan(5001, 3), model_scan(&model, 5001, 3));
            assert_eq!(vm.scan(0, 2), model_scan(&model, 0, 2));
        }
    }
}

#[test]
fn scans_cross_leaves_and_stop_at_the_end() {
    for cfg in [BTreeConfig::default(), BTreeConfig::new(3, 2).unwrap()] {
        let (r, t, model) = boundary_tree(cfg, 300);
        let mut out = vec![(0, 0); SCAN_MAX];
        for engine in engines() {
            let mut vm = Vm::new(engine, r.mem());
            for (from, count) in [
                (0, 64),
                (15, 40),
                (2500, 64),
                (2995, 64),
                (2991, 1),
                (3001, 64),
                (1, 301),
            ] {
                let want = model_scan(&model, from, count);
                assert_eq!(
                    vm.scan(from, count),
                    want,
                    "{cfg:?} {engine:?} from {from} count {count}"
                );
                if count <= SCAN_MAX {
                    let got = native::scan(&r.mem(), t.root(), from, &mut out[..count])
                        .expect("native scan");
                    assert_eq!(out[..got.n].to_vec(), want);
                    assert_eq!(got.end, want.len() < count, "native end flag");
                    let (pairs, end) = vm.scan_once(from, count as u32).expect("scan");
                    assert_eq!(pairs, want, "one message");
                    assert_eq!(end, want.len() < count, "handler end flag");
                }
            }
            // The largest scan one message may ask for fits the reply and crosses leaves.
            let (pairs, end) = vm.scan_once(0, SCAN_MAX as u32).expect("scan");
            assert_eq!(pairs.len(), SCAN_MAX.min(model.len()));
            assert_eq!(pairs, model_scan(&model, 0, SCAN_MAX));
            assert!(!end);
        }
    }
}

#[test]
fn bad_scan_counts_and_short_args_abort() {
    let cfg = BTreeConfig::default();
    let (r, _, _) = boundary_tree(cfg, 10);
    for engine in engines() {
        let mut vm = Vm::new(engine, r.mem());
        for count in [0, SCAN_MAX as u32 + 1, u32::MAX] {
            match vm.scan_once(0, count) {
                Err(Failure::Aborted(c)) => {
                    assert_eq!(AbortCode::from_u32(c), Some(AbortCode::Args))
                }
                other => panic!("scan count {count}: {other:?}"),
            }
        }
        match vm.call(false, &Args::lookup(REGION, 1).to_bytes()[..16]) {
            Err(Failure::Aborted(c)) => assert_eq!(AbortCode::from_u32(c), Some(AbortCode::Args)),
            other => panic!("short args: {other:?}"),
        }
        // A root outside the region is refused by the op checks, not read.
        match vm.lookup_args(Args::lookup(REGION, 1).with_root(1 << 40)) {
            Err(Failure::Failed(e)) => assert!(e.contains("region") || e.contains("bounds"), "{e}"),
            other => panic!("wild root: {other:?}"),
        }
        // A root that is not a node (the superblock) breaks the invariants: clear abort.
        match vm.lookup_args(Args::lookup(REGION, 1).with_root(8)) {
            Err(Failure::Aborted(c)) => {
                assert_eq!(AbortCode::from_u32(c), Some(AbortCode::Corrupt))
            }
            other => panic!("superblock as root: {other:?}"),
        }
    }
}

#[test]
fn deep_tree_with_small_nodes() {
    // Two keys per node: 64 keys make a tree of height 6 (2-key leaves, 3-way internal nodes).
    let cfg = BTreeConfig::new(2, 2).unwrap();
    let model: BTreeMap<u64, u64> = (0..200u64).map(|i| (i * 3 + 1, i)).collect();
    let r = region(cfg.region_len(model.len() as u64, 0));
    let t = BTree::bulk_load(r.mem(), cfg, model.iter().map(|(&k, &v)| (k, v))).expect("bulk load");
    assert!(t.height() >= 5, "height {}", t.height());
    for engine in engines() {
        let mut vm = Vm::new(engine, r.mem());
        for key in 0..650 {
            assert_eq!(
                vm.lookup(key).expect("lookup"),
                model.get(&key).copied(),
                "key {key}"
            );
        }
        assert_eq!(vm.scan(0, 1000), model_scan(&model, 0, 1000));
    }
}

#[test]
fn inserts_grow_a_tree_from_empty_to_height_five() {
    let cfg = BTreeConfig::new(2, 2).unwrap();
    let r = region(cfg.region_len(0, 2000));
    let mut t = BTree::create(r.mem(), cfg).expect("create");
    let mut model = BTreeMap::new();
    // Reversed, interleaved order splits on both sides of nodes.
    for i in (0..1000u64).rev() {
        let key = if i % 2 == 0 { i * 7 } else { u64::MAX - i };
        assert_eq!(t.insert(key, i).expect("insert"), model.insert(key, i));
    }
    assert!(t.height() >= 5, "height {}", t.height());
    assert_eq!(t.len(), model.len() as u64);
    assert_eq!(t.insert(14, 99).expect("update"), Some(2));
    model.insert(14, 99);
    let mut vm = Vm::new(engines()[0], r.mem());
    for (&k, &v) in &model {
        assert_eq!(vm.lookup(k).expect("lookup"), Some(v));
    }
    assert_eq!(vm.scan(0, 2000), model_scan(&model, 0, 2000));
    let reopened = BTree::open(r.mem()).expect("open");
    assert_eq!(
        (reopened.root(), reopened.height(), reopened.len()),
        (t.root(), t.height(), t.len())
    );
}

#[test]
fn region_full_is_an_error_not_a_panic() {
    let cfg = BTreeConfig::new(2, 2).unwrap();
    let r = region(cfg.region_len(0, 0) + NODE_SIZE);
    let mut t = BTree::create(r.mem(), cfg).expect("create");
    let mut err = None;
    for k in 0..100 {
        if let Err(e) = t.insert(k, k) {
            err = Some(e);
            break;
        }
    }
    assert!(
        matches!(
            err,
            Some(naam_handlers::btree::BTreeError::RegionFull { .. })
        ),
        "{err:?}"
    );
    assert!(
        BTree::bulk_load(r.mem(), cfg, [(2, 0), (1, 0)]).is_err(),
        "unsorted keys are refused"
    );
    let _ = Node::empty(0, 0, 0);
}

#[test]
fn bulk_load_ten_million_keys() {
    let n = 10_000_000u64;
    let cfg = BTreeConfig::default();
    let r = region(cfg.region_len(n, 0));
    let key = |i: u64| i * 2 + 1;
    let t = BTree::bulk_load(r.mem(), cfg, (0..n).map(|i| (key(i), i))).expect("bulk load");
    assert_eq!(t.len(), n);
    assert_eq!(t.height(), 6);
    assert_eq!(
        t.used(),
        (SUPER_SIZE + NODE_SIZE * cfg.bulk_nodes(n) as usize) as u64
    );
    let mut vm = Vm::new(engines()[0], r.mem());
    for i in [0, 1, n / 2, n - 2, n - 1] {
        assert_eq!(vm.lookup(key(i)).expect("lookup"), Some(i));
        assert_eq!(vm.lookup(key(i) + 1).expect("lookup"), None);
    }
    assert_eq!(
        vm.scan_once(key(n - 3), 40).expect("scan"),
        (
            vec![
                (key(n - 3), n - 3),
                (key(n - 2), n - 2),
                (key(n - 1), n - 1)
            ],
            true
        )
    );
}
