//! B-tree LOOKUP per operation on warm trees of 10 k and 1 M keys: the handler through the step executor
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
use naam_core::abi::{self, Ctx};
use naam_core::exec::{Executor, Outcome};
use naam_core::memory::{LocalMemory, OwnedRegion};
use naam_core::region::{Perms, RegionDesc, RegionTable};
use naam_core::vm::{CompiledVm, Engine};
use naam_handlers::btree::layout::{Node, FANOUT, LEVEL_ANY, NODE_SIZE};
use naam_handlers::btree::{native, parse_lookup_reply, programs, Args, BTree, BTreeConfig};
use std::hint::black_box;
use std::sync::Arc;

/// Tree sizes: one that stays in the caches, and the 1 M-key tree of the brief (20 MB of
/// nodes: lookups miss the caches on the lower levels).
const SIZES: [u64; 2] = [10_000, 1_000_000];
const REGION: u32 = 1;
const TENANT: u32 = 1;

/// Keys to look up: present keys in a scrambled order, cycled through.
fn probe_keys(keys: u64) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % keys) * 2 + 1
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for keys in SIZES {
        bench_size(c, keys);
    }
    bench_step(c);
}

/// The leaf step alone: the handler (JIT) on a context whose data holds a validated leaf
/// image, against the same step in Rust on the same bytes. No executor, no memory copies: the
/// cost of the compiled handler code itself.
fn bench_step(c: &mut Criterion) {
    let mut leaf = Node::empty(0, u64::MAX, 0);
    leaf.count = FANOUT as u32;
    for i in 0..FANOUT {
        leaf.keys[i] = i as u64 * 10;
        leaf.vals[i] = i as u64 + 1000;
    }
    let mut body = [0u8; NODE_SIZE - 8];
    leaf.encode_body(&mut body);
    let mut ctx = Ctx::boxed();
    ctx.start(&Args::lookup(REGION, 0).with_root(64).to_bytes());
    ctx.data_mut()[8..NODE_SIZE].copy_from_slice(&body);
    ctx.data_mut()[..8].copy_from_slice(&2u64.to_le_bytes());
    ctx.data_mut()[NODE_SIZE..NODE_SIZE + 8].copy_from_slice(&2u64.to_le_bytes());
    ctx.set_step(5);
    // struct btree_state: node, key, level, n.
    let state = |ctx: &mut Ctx, key: u64| {
        let b = &mut ctx.as_bytes_mut()[abi::ctx::STATE..abi::ctx::STATE + 24];
        b[0..8].copy_from_slice(&64u64.to_le_bytes());
        b[8..16].copy_from_slice(&key.to_le_bytes());
        b[16..20].copy_from_slice(&LEVEL_ANY.to_le_bytes());
    };
    let progs = programs().expect("B-tree handlers load and verify");
    let vm = CompiledVm::new(Arc::clone(&progs.lookup), Engine::native()).expect("compile");
    let mut g = c.benchmark_group("btree_leaf_step");
    let mut key = 0u64;
    g.bench_function("jit", |b| {
        b.iter(|| {
            key = (key + 7) % 170;
            state(&mut ctx, key);
            let r0 = vm.run(&mut ctx).expect("run");
            black_box((r0, ctx.out_len()))
        })
    });
    g.bench_function("native", |b| {
        b.iter(|| {
            key = (key + 7) % 170;
            state(&mut ctx, key);
            black_box(native_leaf_step(black_box(&mut ctx)))
        })
    });
    g.finish();
}

/// The handler's leaf step in Rust: version check, header checks, the same search, the reply.
fn native_leaf_step(ctx: &mut Ctx) -> u64 {
    let st = abi::ctx::STATE;
    let word = |b: &[u8], off: usize| u64::from_le_bytes(b[off..off + 8].try_into().expect("8"));
    let bytes = ctx.as_bytes();
    let key = word(bytes, st + 8);
    let d = ctx.data();
    let v = word(d, 0);
    if v & 1 != 0 || v != word(d, NODE_SIZE) {
        return 1;
    }
    let lc = word(d, 8);
    let (level, count) = (lc as u32, (lc >> 32) as u32);
    if level != 0 || count as usize > FANOUT || key > word(d, 16) {
        return 2;
    }
    let key_at = |i: u32| word(d, 32 + 8 * (i as usize & 15));
    let mut idx = 0u32;
    for step in [8u32, 4, 2, 1] {
        let p = idx + step - 1;
        if p < count && key_at(p) <= key {
            idx += step;
        }
    }
    if idx == 15 && count == 16 && key_at(15) <= key {
        idx = 16;
    }
    let found = idx != 0 && key_at(idx - 1) == key;
    let value = if found {
        word(d, 160 + 8 * (idx as usize - 1))
    } else {
        0
    };
    let out = &mut ctx.as_bytes_mut()[abi::ctx::OUT..abi::ctx::OUT + 16];
    out[..8].copy_from_slice(&(found as u64).to_le_bytes());
    out[8..].copy_from_slice(&value.to_le_bytes());
    0
}

fn bench_size(c: &mut Criterion, n_keys: u64) {
    let cfg = BTreeConfig::default();
    let region = OwnedRegion::zeroed(cfg.region_len(n_keys, 0));
    let mem = region.mem();
    let tree =
        BTree::bulk_load(mem.clone(), cfg, (0..n_keys).map(|i| (i * 2 + 1, i))).expect("bulk load");
    let root = tree.root();
    let keys = probe_keys(n_keys);
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
    local.map(REGION, mem.clone());

    let mut g = c.benchmark_group(format!(
        "btree_lookup_{}k_keys_height_{}",
        n_keys / 1000,
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
