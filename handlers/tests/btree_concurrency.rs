//! One writer inserts and updates while readers look up and scan through the VM (and the
//! native reference) on the same region: readers must never see a value that was not
//! written for the key they asked for, lose a key that was in the tree before they asked,
//! or get a scan out of order.

mod btree_support;

use btree_support::{region, Vm};
use naam_core::vm::Engine;
use naam_handlers::btree::{native, BTree, BTreeConfig};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;

/// Bulk-loaded keys are `4 i`; the writer inserts `4 i + 2` in a random order.
const BULK: u64 = 20_000;
const WRITES: u64 = 30_000;
const GEN_BITS: u32 = 20;

/// A value names its key and the write that produced it.
fn value(key: u64, gen: u64) -> u64 {
    key << GEN_BITS | gen
}

struct Shared {
    /// Writes finished so far (the newest generation any value may carry).
    gen: AtomicU64,
    /// How many of `new_keys` are in the tree.
    inserted: AtomicUsize,
    done: AtomicBool,
    new_keys: Vec<u64>,
}

impl Shared {
    /// Checks a value read for `key`; called with the generation counter read after the
    /// lookup. The writer publishes a generation after its write lands, so one write (the
    /// next generation) may be visible before its number is.
    fn check(&self, key: u64, v: u64, gen_after: u64, who: &str) {
        assert_eq!(
            v >> GEN_BITS,
            key,
            "{who}: key {key} returned a value {v:#x} written for another key"
        );
        assert!(
            v & ((1 << GEN_BITS) - 1) <= gen_after + 1,
            "{who}: key {key} returned a value from the future {v:#x}"
        );
    }
}

/// Calls `f` again while it reports `Busy` (bounded).
fn retry_busy<T>(
    mut f: impl FnMut() -> Result<T, native::NativeError>,
) -> Result<T, native::NativeError> {
    for _ in 0..1000 {
        match f() {
            Err(native::NativeError::Busy) => std::thread::yield_now(),
            other => return other,
        }
    }
    f()
}

fn reader(
    shared: &Shared,
    mem: naam_core::memory::RegionMem,
    root: u64,
    seed: u64,
    use_vm: bool,
) -> (u64, u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut vm = use_vm.then(|| Vm::new(Engine::native(), mem.clone()));
    let who = if use_vm { "vm" } else { "native" };
    let (mut lookups, mut scans) = (0u64, 0u64);
    while !shared.done.load(Ordering::Acquire) {
        let inserted = shared.inserted.load(Ordering::Acquire);
        // A key that must be there: bulk-loaded, or inserted before this read started.
        let key = if inserted > 0 && rng.gen_bool(0.5) {
            shared.new_keys[rng.gen_range(0..inserted)]
        } else {
            rng.gen_range(0..BULK) * 4
        };
        if rng.gen_range(0..8) == 0 {
            let count = rng.gen_range(1..=48);
            let pairs = match &mut vm {
                Some(vm) => vm.scan(key, count),
                None => {
                    let mut out = vec![(0, 0); count];
                    // Busy: the writer kept the nodes changing past the native retry budget;
                    // a caller tries again.
                    let got = retry_busy(|| native::scan(&mem, native::root(&mem)?, key, &mut out))
                        .expect("scan");
                    out.truncate(got.n);
                    out
                }
            };
            let gen_after = shared.gen.load(Ordering::Acquire);
            assert_eq!(
                pairs.first().map(|p| p.0),
                Some(key),
                "{who}: scan from a present key starts there"
            );
            for w in pairs.windows(2) {
                assert!(w[0].0 < w[1].0, "{who}: scan out of order: {w:?}");
                // Bulk keys are never removed: none may be skipped.
                let skipped = (w[0].0 / 4 + 1..w[1].0.div_ceil(4)).next();
                assert!(
                    skipped.is_none(),
                    "{who}: scan skipped bulk key {} between {w:?}",
                    skipped.unwrap_or(0) * 4
                );
            }
            for &(k, v) in &pairs {
                shared.check(k, v, gen_after, who);
            }
            scans += 1;
        } else {
            let got = match &mut vm {
                // Half the lookups start at a root read from the superblock, half at the
                // root the tree had at the start (stale after root splits: must still work).
                Some(vm) if rng.gen_bool(0.5) => vm.lookup(key).expect("lookup"),
                Some(vm) => vm
                    .lookup_args(
                        naam_handlers::btree::Args::lookup(btree_support::REGION, key)
                            .with_root(root),
                    )
                    .expect("lookup"),
                None => retry_busy(|| native::lookup(&mem, root, key)).expect("native lookup"),
            };
            let gen_after = shared.gen.load(Ordering::Acquire);
            let v = got.unwrap_or_else(|| {
                panic!("{who}: key {key} present before the lookup was not found")
            });
            shared.check(key, v, gen_after, who);
            lookups += 1;
        }
    }
    (lookups, scans)
}

#[test]
fn readers_see_only_written_values_while_the_writer_splits_nodes() {
    for cfg in [
        BTreeConfig::default(),
        BTreeConfig::new(3, 3).expect("config"),
    ] {
        let r = region(cfg.region_len(BULK, WRITES));
        let mem = r.mem();
        let mut tree = BTree::bulk_load(
            mem.clone(),
            cfg,
            (0..BULK).map(|i| (i * 4, value(i * 4, 0))),
        )
        .expect("bulk load");
        let root = tree.root();
        let mut new_keys: Vec<u64> = (0..BULK).map(|i| i * 4 + 2).collect();
        new_keys.shuffle(&mut StdRng::seed_from_u64(7));
        let shared = Shared {
            gen: AtomicU64::new(0),
            inserted: AtomicUsize::new(0),
            done: AtomicBool::new(false),
            new_keys,
        };
        let height_before = tree.height();

        let results = thread::scope(|s| {
            let readers: Vec<_> = (0..3)
                .map(|i| {
                    let (shared, mem) = (&shared, mem.clone());
                    s.spawn(move || reader(shared, mem, root, 100 + i, i != 2))
                })
                .collect();
            let mut rng = StdRng::seed_from_u64(3);
            for gen in 1..=WRITES {
                if gen % 2 == 0 {
                    let i = shared.inserted.load(Ordering::Relaxed);
                    let key = shared.new_keys[i];
                    assert_eq!(tree.insert(key, value(key, gen)).expect("insert"), None);
                    shared.inserted.store(i + 1, Ordering::Release);
                } else {
                    let key = rng.gen_range(0..BULK) * 4;
                    assert!(tree.insert(key, value(key, gen)).expect("update").is_some());
                }
                shared.gen.store(gen, Ordering::Release);
                if gen % 64 == 0 {
                    thread::yield_now();
                }
            }
            shared.done.store(true, Ordering::Release);
            readers
                .into_iter()
                .map(|h| h.join().expect("reader"))
                .collect::<Vec<_>>()
        });
        println!(
            "{cfg:?}: height {height_before} -> {}, reads (lookups, scans) per reader {results:?}",
            tree.height()
        );
        assert!(
            tree.height() > height_before || cfg.max_keys == 16,
            "the writer must split up to the root"
        );
        assert!(
            results.iter().all(|&(l, _)| l > 0),
            "every reader must have run"
        );
        // After the writer: everything is there with its last value.
        let mut vm = Vm::new(Engine::native(), mem);
        for &k in shared.new_keys.iter().take(WRITES as usize / 2) {
            assert_eq!(
                vm.lookup(k).expect("lookup").map(|v| v >> GEN_BITS),
                Some(k)
            );
        }
    }
}
