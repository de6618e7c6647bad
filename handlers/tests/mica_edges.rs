//! MICA edge cases, through the handlers (every engine) and the native implementation.

mod mica_common;

use mica_common::*;
use naam_core::abi::Ctx;
use naam_core::exec::{Executor, Outcome};
use naam_core::vm::{CompiledVm, Engine};
use naam_handlers::mica::layout::{self, args, MicaArgs, ITEM_MAX, VALUE_MAX};
use naam_handlers::mica::{key_for, MicaError, MicaGeometry, RunError};

fn small(bucket_count: u64, overflow_count: u64, log_size: u64) -> MicaGeometry {
    MicaGeometry {
        index_region: 3,
        log_region: 4,
        bucket_count,
        overflow_count,
        log_size,
        lossless: false,
    }
}

fn mica(e: RunError) -> MicaError {
    match e {
        RunError::Mica(m) => m,
        RunError::Exec(e) => panic!("message failed: {e}"),
    }
}

#[test]
fn handlers_pass_the_verifier_with_room_to_spare() {
    let p = programs();
    for prog in [&p.get, &p.put, &p.delete] {
        println!(
            "{}: {} instructions, worst path {}",
            prog.name(),
            prog.insn_count(),
            prog.worst_case_insns()
        );
        // The x86 JIT's code buffer fails near 800 instructions; the default budget is 640.
        let max = naam_core::verifier::VerifierConfig::default().max_insns;
        assert!(
            prog.insn_count() <= max - 32,
            "{} has {} instructions",
            prog.name(),
            prog.insn_count()
        );
    }
}

#[test]
fn missing_keys_miss_everywhere() {
    let p = programs();
    for engine in engines() {
        let mut s = Store::new(small(4, 2, 1 << 16));
        let mut vm = vm(&p, engine);
        let mut out = [0u8; 64];
        assert_eq!(
            vm.get(&s.regions, &mut s.mem, &s.geom, b"nope", &mut out)
                .unwrap(),
            None
        );
        assert!(!vm.delete(&s.regions, &mut s.mem, &s.geom, b"nope").unwrap());
        assert_eq!(s.table.get(b"nope", &mut out).unwrap(), None);
        vm.put(&s.regions, &mut s.mem, &s.geom, b"yes", b"12345678")
            .unwrap();
        assert_eq!(
            vm.get(&s.regions, &mut s.mem, &s.geom, b"nope", &mut out)
                .unwrap(),
            None,
            "{engine:?}"
        );
        assert_eq!(
            vm.get(&s.regions, &mut s.mem, &s.geom, b"yes", &mut out)
                .unwrap(),
            Some(8)
        );
        assert!(vm.delete(&s.regions, &mut s.mem, &s.geom, b"yes").unwrap());
        assert!(!s.table.delete(b"yes").unwrap(), "deleted by the handler");
        assert_eq!(s.table.get(b"yes", &mut out).unwrap(), None);
    }
}

#[test]
fn keys_of_different_lengths_are_different_keys() {
    let p = programs();
    let mut s = Store::new(small(1, 2, 1 << 16));
    let mut vm = vm(&p, engines()[0]);
    vm.put(&s.regions, &mut s.mem, &s.geom, b"a", b"one")
        .unwrap();
    vm.put(&s.regions, &mut s.mem, &s.geom, b"a\0", b"two")
        .unwrap();
    s.table.put(&[0x61; 16], b"three").unwrap();
    let mut out = [0u8; 8];
    assert_eq!(
        vm.get(&s.regions, &mut s.mem, &s.geom, b"a", &mut out)
            .unwrap(),
        Some(3)
    );
    assert_eq!(&out[..3], b"one");
    assert_eq!(s.table.get(b"a\0", &mut out).unwrap(), Some(3));
    assert_eq!(&out[..3], b"two");
    assert_eq!(
        vm.get(&s.regions, &mut s.mem, &s.geom, &[0x61; 16], &mut out)
            .unwrap(),
        Some(5)
    );
    assert_eq!(&out[..5], b"three");
    assert_eq!(
        s.table.get(b"", &mut out),
        Err(MicaError::KeyLength { len: 0 })
    );
    assert!(matches!(
        vm.get(&s.regions, &mut s.mem, &s.geom, &[1; 17], &mut out),
        Err(RunError::Mica(MicaError::KeyLength { len: 17 }))
    ));
}

#[test]
fn full_chains_take_overflow_buckets_until_none_is_left() {
    let p = programs();
    for engine in engines() {
        // One home bucket and three overflow buckets: 4 * 6 = 24 slots.
        let mut s = Store::new(small(1, 3, 1 << 16));
        let mut vm = vm(&p, engine);
        let mut out = [0u8; 16];
        for i in 0..24u64 {
            let v = (i * 3).to_le_bytes();
            if i % 2 == 0 {
                vm.put(&s.regions, &mut s.mem, &s.geom, &key_for(1, i), &v)
                    .unwrap();
            } else {
                s.table.put(&key_for(1, i), &v).unwrap();
            }
        }
        for i in 0..24u64 {
            assert_eq!(
                vm.get(&s.regions, &mut s.mem, &s.geom, &key_for(1, i), &mut out)
                    .unwrap(),
                Some(8),
                "{engine:?} key {i}"
            );
            assert_eq!(out[..8], (i * 3).to_le_bytes());
        }
        assert_eq!(
            vm.put(&s.regions, &mut s.mem, &s.geom, &key_for(1, 24), b"x")
                .map_err(mica),
            Err(MicaError::TableFull)
        );
        assert_eq!(
            s.table.put(&key_for(1, 25), b"x"),
            Err(MicaError::TableFull)
        );
        // Updates still work in a full table, and a delete frees a slot for a new key.
        vm.put(&s.regions, &mut s.mem, &s.geom, &key_for(1, 5), b"updated")
            .unwrap();
        assert_eq!(s.table.get(&key_for(1, 5), &mut out).unwrap(), Some(7));
        assert!(vm
            .delete(&s.regions, &mut s.mem, &s.geom, &key_for(1, 17))
            .unwrap());
        vm.put(&s.regions, &mut s.mem, &s.geom, &key_for(1, 24), b"new")
            .unwrap();
        assert_eq!(
            vm.get(&s.regions, &mut s.mem, &s.geom, &key_for(1, 24), &mut out)
                .unwrap(),
            Some(3)
        );
        assert_eq!(
            vm.get(&s.regions, &mut s.mem, &s.geom, &key_for(1, 17), &mut out)
                .unwrap(),
            None
        );
    }
}

#[test]
fn log_wrap_around_evicts_old_items_and_never_returns_wrong_ones() {
    let p = programs();
    for engine in engines() {
        // 4 KiB of log: about 25 items of 100..200 bytes fit; write 40 keys 10 times over.
        let log_size = 4096;
        let mut s = Store::new(small(16, 16, log_size));
        let mut vm = vm(&p, engine);
        let value = |k: u64, round: u64| -> Vec<u8> {
            vec![(k * 16 + round) as u8; 100 + (k as usize * 7 + round as usize * 13) % 100]
        };
        let mut out = [0u8; VALUE_MAX];
        for round in 0..10 {
            for k in 0..40u64 {
                let v = value(k, round);
                if (k + round) % 3 == 0 {
                    s.table.put(&key_for(2, k), &v).unwrap();
                } else {
                    vm.put(&s.regions, &mut s.mem, &s.geom, &key_for(2, k), &v)
                        .unwrap();
                }
                // The key just written is always there.
                let n = vm
                    .get(&s.regions, &mut s.mem, &s.geom, &key_for(2, k), &mut out)
                    .unwrap();
                assert_eq!(
                    n.map(|n| &out[..n]),
                    Some(&v[..]),
                    "{engine:?} round {round} key {k}"
                );
            }
            let (mut hits, mut misses) = (0, 0);
            for k in 0..40u64 {
                match vm
                    .get(&s.regions, &mut s.mem, &s.geom, &key_for(2, k), &mut out)
                    .unwrap()
                {
                    Some(n) => {
                        assert_eq!(&out[..n], &value(k, round)[..], "only the latest value");
                        hits += 1;
                    }
                    None => misses += 1,
                }
                let native = s.table.get(&key_for(2, k), &mut out).unwrap();
                assert_eq!(
                    native.is_some(),
                    n_is_hit(&mut vm, &mut s, k),
                    "native and handler agree"
                );
            }
            assert!(
                hits >= 10 && misses >= 5,
                "round {round}: {hits} hits, {misses} misses"
            );
        }
        let tail = s.table.get(b"x", &mut out).unwrap();
        assert_eq!(tail, None);
    }
}

#[test]
fn a_lossless_table_refuses_puts_when_its_log_is_used_up_and_keeps_every_acknowledged_item() {
    let p = programs();
    for engine in engines() {
        // The same workload that evicts in lossy mode (40 keys written over and over into
        // 4 KiB of log).
        let mut s = Store::new(small(16, 16, 4096).lossless(true));
        let mut vm = vm(&p, engine);
        let mut acked: Vec<Option<Vec<u8>>> = vec![None; 40];
        let mut out = [0u8; VALUE_MAX];
        let mut refused = 0;
        for round in 0..10u64 {
            for k in 0..40u64 {
                let v = vec![(k * 16 + round) as u8; 100 + (k as usize * 7) % 100];
                let r = if (k + round) % 3 == 0 {
                    s.table.put(&key_for(2, k), &v)
                } else {
                    vm.put(&s.regions, &mut s.mem, &s.geom, &key_for(2, k), &v)
                        .map_err(mica)
                };
                match r {
                    Ok(()) => acked[k as usize] = Some(v),
                    Err(MicaError::LogFull) => refused += 1,
                    Err(e) => panic!("{engine:?}: {e}"),
                }
            }
        }
        assert!(
            refused > 300,
            "{engine:?}: the log filled early ({refused} refused)"
        );
        assert_eq!(s.table.evicted_bytes(), 0);
        for (k, v) in acked.iter().enumerate() {
            let k = k as u64;
            let want = v.as_deref();
            let got = vm
                .get(&s.regions, &mut s.mem, &s.geom, &key_for(2, k), &mut out)
                .unwrap();
            assert_eq!(
                got.map(|n| &out[..n]),
                want,
                "{engine:?} key {k}: the last acked value"
            );
            let native = s.table.get(&key_for(2, k), &mut out).unwrap();
            assert_eq!(native.map(|n| &out[..n]), want, "native agrees");
        }
    }
    // Lossy, the same writes overwrite the log and count it.
    let s = Store::new(small(16, 16, 4096));
    for k in 0..100u64 {
        s.table.put(&key_for(2, k % 40), &[7u8; 150]).unwrap();
    }
    assert!(s.table.evicted_bytes() > 0);
}

fn n_is_hit(vm: &mut naam_handlers::mica::MicaVm, s: &mut Store, k: u64) -> bool {
    let mut out = [0u8; VALUE_MAX];
    vm.get(&s.regions, &mut s.mem, &s.geom, &key_for(2, k), &mut out)
        .unwrap()
        .is_some()
}

#[test]
fn maximum_values_round_trip_and_larger_ones_are_rejected() {
    let p = programs();
    for engine in engines() {
        let mut s = Store::new(small(4, 2, 1 << 16));
        let mut vm = vm(&p, engine);
        let big: Vec<u8> = (0..VALUE_MAX).map(|i| (i * 7 + 3) as u8).collect();
        vm.put(&s.regions, &mut s.mem, &s.geom, b"big", &big)
            .unwrap();
        let mut out = vec![0u8; VALUE_MAX];
        assert_eq!(
            vm.get(&s.regions, &mut s.mem, &s.geom, b"big", &mut out)
                .unwrap(),
            Some(VALUE_MAX)
        );
        assert_eq!(out, big);
        assert_eq!(s.table.get(b"big", &mut out).unwrap(), Some(VALUE_MAX));
        assert_eq!(out, big);
        // A short first read makes the handler read the whole item again; the caller's small
        // buffer then gets a clear error.
        let mut small_out = [0u8; 8];
        assert!(matches!(
            vm.get(&s.regions, &mut s.mem, &s.geom, b"big", &mut small_out),
            Err(RunError::Mica(MicaError::BufferTooSmall {
                len: VALUE_MAX,
                have: 8
            }))
        ));
        let too_big = vec![1u8; VALUE_MAX + 1];
        assert_eq!(
            MicaArgs::put(&s.geom, b"k", &too_big).unwrap_err(),
            MicaError::ValueTooLarge {
                len: VALUE_MAX + 1,
                max: VALUE_MAX
            }
        );
        assert_eq!(
            s.table.put(b"k", &too_big),
            Err(MicaError::ValueTooLarge {
                len: VALUE_MAX + 1,
                max: VALUE_MAX
            })
        );
        assert_eq!(s.table.put(b"k", b""), Err(MicaError::EmptyValue));
        assert_eq!(ITEM_MAX, 1056);
    }
}

/// Arguments a buggy or hostile client could send get abort codes, not undefined behaviour.
#[test]
fn handlers_abort_on_bad_arguments() {
    let p = programs();
    let geom = small(4, 2, 1 << 16);
    for engine in engines() {
        let mut s = Store::new(geom);
        let put = CompiledVm::new(p.put.clone(), engine).unwrap();
        let get = CompiledVm::new(p.get.clone(), engine).unwrap();
        let mut exec = Executor::default();
        let mut ctx = Ctx::boxed();
        let good = MicaArgs::put(&geom, b"key", &[9u8; VALUE_MAX]).unwrap();
        let mut run = |vm: &CompiledVm, bytes: &[u8]| {
            ctx.start(bytes);
            match exec.run(vm, TENANT, &s.regions, &mut s.mem, &mut ctx) {
                Outcome::Aborted { code, .. } => code,
                other => panic!("{engine:?}: expected an abort, got {other:?}"),
            }
        };
        let mut b = good.as_bytes().to_vec();
        b[args::VALUE_LEN..][..2].copy_from_slice(&(VALUE_MAX as u16 + 1).to_le_bytes());
        assert_eq!(
            run(&put, &b),
            layout::E_VALUE,
            "value longer than the maximum"
        );
        b[args::VALUE_LEN..][..2].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(run(&put, &b), layout::E_VALUE, "empty value");
        let mut b = good.as_bytes().to_vec();
        b.truncate(layout::ARGS_FIXED + 100);
        assert_eq!(
            run(&put, &b),
            layout::E_ARGS,
            "value shorter than value_len"
        );
        let mut b = good.as_bytes().to_vec();
        b[args::KEY_LEN..][..2].copy_from_slice(&17u16.to_le_bytes());
        assert_eq!(
            run(&get, &b[..layout::ARGS_FIXED]),
            layout::E_ARGS,
            "key too long"
        );
        assert_eq!(run(&get, &b[..20]), layout::E_ARGS, "arguments cut short");
        assert_eq!(exec.stats.errors(), 0);
    }
    let _ = Engine::native();
}

#[test]
fn geometry_scales_to_ten_million_keys_and_fill_is_readable() {
    let g = MicaGeometry::for_keys(10_000_000, 8);
    g.validate().unwrap();
    assert!(
        g.bucket_count * 6 >= 2 * 10_000_000,
        "at most half the home slots used"
    );
    assert!(g.log_size >= 2 * 10_000_000 * layout::item_size(8) as u64);
    assert!(
        g.index_len() < 1 << 30 && g.log_len() < 1 << 31,
        "index {} log {}",
        g.index_len(),
        g.log_len()
    );
    // A smaller table of the same shape, filled by the builder, reads back through the VM.
    let n = 20_000;
    let mut s = Store::new(MicaGeometry::for_keys(n, 8));
    s.table.fill(0..n, 11, 8).unwrap();
    let p = programs();
    let mut vm = vm(&p, engines()[0]);
    let (mut out, mut want) = ([0u8; 8], [0u8; 8]);
    for i in (0..n).step_by(97) {
        naam_handlers::mica::value_for(11, i, &mut want);
        assert_eq!(
            vm.get(&s.regions, &mut s.mem, &s.geom, &key_for(11, i), &mut out)
                .unwrap(),
            Some(8)
        );
        assert_eq!(out, want, "key {i}");
    }
}

/// The common paths take the steps the design promises (a regression here costs latency).
#[test]
fn common_paths_take_three_steps() {
    let p = programs();
    for engine in engines() {
        let mut s = Store::new(small(64, 8, 1 << 16));
        let mut vm = vm(&p, engine);
        let mut out = [0u8; 8];
        let steps =
            |vm: &naam_handlers::mica::MicaVm, before: u64| vm.executor().stats.steps - before;
        let b = vm.executor().stats.steps;
        vm.put(&s.regions, &mut s.mem, &s.geom, b"k", b"v1234567")
            .unwrap();
        assert_eq!(
            steps(&vm, b),
            3,
            "{engine:?}: PUT of a new key: bucket + FAA, install, check"
        );
        let b = vm.executor().stats.steps;
        vm.get(&s.regions, &mut s.mem, &s.geom, b"k", &mut out)
            .unwrap();
        assert_eq!(
            steps(&vm, b),
            3,
            "{engine:?}: GET: bucket, item + tail, reply"
        );
        let b = vm.executor().stats.steps;
        vm.put(&s.regions, &mut s.mem, &s.geom, b"k", b"v7654321")
            .unwrap();
        assert_eq!(
            steps(&vm, b),
            4,
            "{engine:?}: PUT update: bucket, candidate, install, check"
        );
        let b = vm.executor().stats.steps;
        assert!(vm.delete(&s.regions, &mut s.mem, &s.geom, b"k").unwrap());
        assert_eq!(
            steps(&vm, b),
            4,
            "{engine:?}: DELETE: bucket, candidate, CAS, check"
        );
        let b = vm.executor().stats.steps;
        assert_eq!(
            vm.get(&s.regions, &mut s.mem, &s.geom, b"k", &mut out)
                .unwrap(),
            None
        );
        assert_eq!(steps(&vm, b), 2, "{engine:?}: GET miss: bucket, reply");
    }
}

/// Values at the boundaries of the handlers' copy chunks (PUT stages 128 bytes per step, GET
/// replies 512 bytes per step) round-trip between the handlers and the native code.
#[test]
fn values_at_chunk_boundaries_round_trip() {
    let p = programs();
    for engine in engines() {
        let mut s = Store::new(small(8, 4, 1 << 16));
        let mut vm = vm(&p, engine);
        let mut out = vec![0u8; VALUE_MAX];
        for (i, len) in [
            1usize, 7, 8, 9, 127, 128, 129, 255, 256, 257, 511, 512, 513, 640, 1023, 1024,
        ]
        .into_iter()
        .enumerate()
        {
            let v: Vec<u8> = (0..len).map(|j| (j * 13 + len) as u8).collect();
            let (ka, kb) = (key_for(3, 2 * i as u64), key_for(3, 2 * i as u64 + 1));
            vm.put(&s.regions, &mut s.mem, &s.geom, &ka, &v).unwrap();
            s.table.put(&kb, &v).unwrap();
            assert_eq!(
                s.table.get(&ka, &mut out).unwrap(),
                Some(len),
                "{engine:?} len {len}"
            );
            assert_eq!(
                &out[..len],
                &v[..],
                "{engine:?}: native GET of a VM PUT, len {len}"
            );
            assert_eq!(
                vm.get(&s.regions, &mut s.mem, &s.geom, &kb, &mut out)
                    .unwrap(),
                Some(len)
            );
            assert_eq!(
                &out[..len],
                &v[..],
                "{engine:?}: VM GET of a native PUT, len {len}"
            );
        }
    }
}
