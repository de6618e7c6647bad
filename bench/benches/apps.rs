//! Application micro-benchmarks (DESIGN §8 "micro"): one MICA GET per iteration on warm data,
//! native Rust on the same layout vs the handlers under the JIT and the interpreter. All go
//! through the same `RegionMem` atomics; the VM paths include the step executor (op checks
//! against the region table, three steps: bucket, item + tail, reply).
//!
//! Run: `cargo bench -p naam-bench --bench apps`

use criterion::{criterion_group, criterion_main, Criterion};
use naam_core::memory::{LocalMemory, OwnedRegion};
use naam_core::region::{Perms, RegionDesc, RegionTable};
use naam_core::verifier::VerifierConfig;
use naam_core::vm::Engine;
use naam_handlers::mica::{key_for, MicaGeometry, MicaPrograms, MicaTable, MicaVm};
use std::hint::black_box;

const KEYS: u64 = 100_000;
const VALUE_LEN: usize = 8;
const TENANT: u32 = 1;
const HOT: usize = 1024;

fn mica(c: &mut Criterion) {
    let geom = MicaGeometry::for_keys(KEYS, VALUE_LEN);
    let index = OwnedRegion::zeroed(geom.index_len() as usize);
    let log = OwnedRegion::zeroed(geom.log_len() as usize);
    let table = MicaTable::format(geom, index.mem(), log.mem()).expect("format");
    table.fill(0..KEYS, 42, VALUE_LEN).expect("fill");
    let mut regions = RegionTable::new();
    let mut mem = LocalMemory::new();
    for (id, r) in [(geom.index_region, &index), (geom.log_region, &log)] {
        regions
            .insert(RegionDesc {
                id,
                tenant: TENANT,
                len: r.mem().len() as u64,
                perms: Perms::ALL,
                key: 1,
            })
            .expect("region");
        mem.map(id, r.mem());
    }
    let progs = MicaPrograms::load(&VerifierConfig::default()).expect("MICA handlers verify");
    // Warm data: a hot set of HOT keys (their buckets and items fit in L2) in a fixed
    // pseudo-random order, so every engine does the same work on cached lines. With a cold
    // set the native loop overlaps the cache misses of consecutive GETs, which a VM path of
    // a few thousand instructions cannot, and the comparison measures the memory system.
    let keys: Vec<[u8; 16]> = (0..HOT as u64)
        .map(|i| key_for(42, (i * 7919) % KEYS))
        .collect();

    let mut g = c.benchmark_group("mica");
    let mut i = 0usize;
    let mut out = [0u8; VALUE_LEN];
    g.bench_function("get/native", |b| {
        b.iter(|| {
            i = (i + 1) % HOT;
            black_box(table.get(black_box(&keys[i]), &mut out).expect("get"))
        })
    });
    for engine in [Engine::native(), Engine::Interpreter] {
        let mut vm = MicaVm::new(&progs, engine, TENANT).expect("compile");
        g.bench_function(format!("get/{}", engine.name()), |b| {
            b.iter(|| {
                i = (i + 1) % HOT;
                black_box(
                    vm.get(&regions, &mut mem, &geom, black_box(&keys[i]), &mut out)
                        .expect("get"),
                )
            })
        });
    }
    // PUT updates of hot keys (8-byte values): FAA + item WRITE + slot CAS.
    let value = [7u8; VALUE_LEN];
    g.bench_function("put/native", |b| {
        b.iter(|| {
            i = (i + 1) % HOT;
            table.put(black_box(&keys[i]), &value).expect("put")
        })
    });
    let mut vm = MicaVm::new(&progs, Engine::native(), TENANT).expect("compile");
    g.bench_function(format!("put/{}", Engine::native().name()), |b| {
        b.iter(|| {
            i = (i + 1) % HOT;
            vm.put(&regions, &mut mem, &geom, black_box(&keys[i]), &value)
                .expect("put")
        })
    });
    g.finish();
}

criterion_group!(benches, mica);
criterion_main!(benches);
