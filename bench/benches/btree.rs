//! B-tree LOOKUP per operation on a warm 1 M-key tree: the handler through the step executor
//! (JIT, interpreter) against the native Rust reference on the same region.
//!
//! Run: `cargo bench -p naam-bench --bench btree`
//!
//! - `native_in_place`: `native::lookup`, reading node words in place (what host code does);
//! - `native_copying`: `native::lookup_copying`, copying every node out with the handler's
//!   three reads (version, body, version), then searching the copy: the handler's logic
//!   without the VM and the executor;
//! - `jit` / `interpreter`: one LOOKUP message through `Executor::run` with `LocalMemory`, the
//!   root given in the args (as the native functions take it), one step per level;
//! - `jit_superblock`: the same, reading the root from the superblock first (one step more).

use criterion::{criterion_group, criterion_main, Criterion};
use naam_core::abi::Ctx;
use naam_core::exec::{Executor, Outcome};
use naam_core::memory::{LocalMemory, OwnedRegion};
use naam_core::region::{Perms, RegionDesc, RegionTable};
use naam_core::vm::{CompiledVm, Engine};
use naam_handlers::btree::{native, parse_lookup_reply, programs, Args, BTree, BTreeConfig};
use std::hint::black_box;
use std::sync::Arc;

const KEYS: u64 = 1_000_000;
const REGION: u32 = 1;
const TENANT: u32 = 1;

/// Keys to look up: present keys in a scrambled order, cycled through.
fn probe_keys() -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % KEYS) * 2 + 1
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let cfg = BTreeConfig::default();
    let region = OwnedRegion::zeroed(cfg.region_len(KEYS, 0));
    let mem = region.mem();
    let tree = BTree::bulk_load(mem, cfg, (0..KEYS).map(|i| (i * 2 + 1, i))).expect("bulk load");
    let root = tree.root();
    let keys = probe_keys();
    let progs = programs().expect("B-tree handlers load and verify");

    let mut regions = RegionTable::new();
    regions
        .insert(RegionDesc {
            id: REGION,
            tenant: TENANT,
            len: mem.len() as u64,
            perms: Perms::READ,
            key: 1,
        })
        .expect("region");
    let mut local = LocalMemory::new();
    local.map(REGION, mem);

    let mut g = c.benchmark_group(format!(
        "btree_lookup_{}k_keys_height_{}",
        KEYS / 1000,
        tree.height()
    ));
    let mut i = 0usize;
    g.bench_function("native_in_place", |b| {
        b.iter(|| {
            i = (i + 1) & (keys.len() - 1);
            black_box(native::lookup(&mem, root, black_box(keys[i])).expect("lookup"))
        })
    });
    g.bench_function("native_copying", |b| {
        b.iter(|| {
            i = (i + 1) & (keys.len() - 1);
            black_box(native::lookup_copying(&mem, root, black_box(keys[i])).expect("lookup"))
        })
    });
    let mut ctx = Ctx::boxed();
    let mut exec = Executor::default();
    for (name, engine, with_root) in [
        ("jit", Engine::native(), true),
        ("jit_superblock", Engine::native(), false),
        ("interpreter", Engine::Interpreter, true),
    ] {
        let vm = CompiledVm::new(Arc::clone(&progs.lookup), engine).expect("compile");
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & (keys.len() - 1);
                let key = keys[i];
                let args = if with_root {
                    Args::lookup(REGION, key).with_root(root)
                } else {
                    Args::lookup(REGION, key)
                };
                ctx.start(&args.to_bytes());
                match exec.run(&vm, TENANT, &regions, &mut local, &mut ctx) {
                    Outcome::Done { .. } => {}
                    other => panic!("lookup {key}: {other:?}"),
                }
                let v = parse_lookup_reply(ctx.out().expect("reply")).expect("reply");
                debug_assert_eq!(v, Some(key / 2));
                black_box(v)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
