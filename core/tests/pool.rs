//! The VM pool: 1024 distinct programs registered while workers run, each invoked correctly
//! by every worker; an unregistered offload's messages fail with "unknown offload".

mod common;

use common::World;
use naam_core::abi::{ctx, Ctx};
use naam_core::elf::Program;
use naam_core::exec::{Executor, Outcome};
use naam_core::pool::{OffloadSpec, Registry, VmPool};
use naam_core::verifier::{verify, VerifierConfig};
use naam_core::vm::Engine;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// 1024 offloads; fewer on other architectures, where this runs under qemu and every
/// cranelift compile is emulated.
const N: u32 = if cfg!(target_arch = "x86_64") {
    1024
} else {
    96
};
const WORKERS: usize = 2;

/// A program that replies with its own number: out = n (u64), out_len = 8.
fn numbered_program(n: u32) -> Program {
    let mut insns = Vec::new();
    let mut put = |op: u8, regs: u8, off: i16, imm: i32| {
        insns.push(op);
        insns.push(regs);
        insns.extend_from_slice(&off.to_le_bytes());
        insns.extend_from_slice(&imm.to_le_bytes());
    };
    put(0x18, 0x02, 0, n as i32); // lddw r2, n
    put(0x00, 0x00, 0, 0);
    put(0x7b, 0x21, ctx::OUT as i16, 0); // *(u64 *)(r1 + out) = r2
    put(0x62, 0x01, ctx::OUT_LEN as i16, 8); // out_len = 8
    put(0xb7, 0x00, 0, 0); // r0 = DONE
    put(0x95, 0, 0, 0);
    Program::from_insns(format!("numbered{n}"), insns)
}

fn spec(n: u32) -> OffloadSpec {
    OffloadSpec {
        name: format!("numbered{n}"),
        tenant: 1,
        class: (n % 64) as u16,
        read_only: true,
    }
}

/// Runs offload `id` on a worker's pool; Some(reply) or the error text.
fn invoke(
    pool: &VmPool,
    ex: &mut Executor,
    w: &mut World,
    ctx: &mut Ctx,
    id: u32,
) -> Result<u64, String> {
    ctx.start(&[]);
    let out = match pool.get(id) {
        Some(e) => ex.run(&e.vm, e.offload.tenant, &w.regions, &mut w.mem, ctx),
        None => ex.unknown_offload(id),
    };
    match out {
        Outcome::Done { .. } => Ok(u64::from_le_bytes(ctx.out().unwrap().try_into().unwrap())),
        Outcome::Aborted { code, .. } => Err(format!("aborted {code}")),
        Outcome::Failed { error, .. } => Err(error.to_string()),
    }
}

#[test]
fn register_many_while_workers_run_then_unregister_one() {
    let registry = Registry::new();
    let stop = Arc::new(AtomicBool::new(false));
    let complete = Arc::new(AtomicUsize::new(0));
    let mut probes = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..WORKERS {
        let (probe_tx, probe_rx) = mpsc::channel::<(u32, mpsc::Sender<Result<u64, String>>)>();
        probes.push(probe_tx);
        let (registry, stop, complete) = (registry.clone(), stop.clone(), complete.clone());
        handles.push(std::thread::spawn(move || {
            let mut pool = VmPool::new(registry, Engine::native());
            let mut ex = Executor::default();
            let mut w = World::new();
            let mut ctx = Ctx::boxed();
            let mut seen = vec![false; N as usize];
            let mut reported = false;
            while !stop.load(Ordering::Relaxed) {
                pool.sync();
                for id in (0..N).filter(|id| pool.get(*id).is_some()) {
                    let v = invoke(&pool, &mut ex, &mut w, &mut ctx, id)
                        .expect("registered offload runs");
                    assert_eq!(v, id as u64, "offload {id} ran another program");
                    seen[id as usize] = true;
                }
                if !reported && seen.iter().all(|s| *s) {
                    complete.fetch_add(1, Ordering::SeqCst);
                    reported = true;
                }
                while let Ok((id, reply)) = probe_rx.try_recv() {
                    pool.sync();
                    reply
                        .send(invoke(&pool, &mut ex, &mut w, &mut ctx, id))
                        .unwrap();
                }
            }
            assert!(pool.compile_errors.is_empty(), "{:?}", pool.compile_errors);
            ex.stats
        }));
    }

    for n in 0..N {
        let prog = Arc::new(verify(&numbered_program(n), &VerifierConfig::default()).unwrap());
        let off = registry.register(spec(n), prog).unwrap();
        assert_eq!(off.id, n, "ids are allocated densely");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while complete.load(Ordering::SeqCst) < WORKERS {
        assert!(
            Instant::now() < deadline,
            "workers did not see all offloads"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    registry.unregister(7).unwrap();
    for probe in &probes {
        let (tx, rx) = mpsc::channel();
        probe.send((7, tx)).unwrap();
        assert_eq!(rx.recv().unwrap(), Err("unknown offload 7".to_string()));
        let (tx, rx) = mpsc::channel();
        probe.send((8, tx)).unwrap();
        assert_eq!(rx.recv().unwrap(), Ok(8), "other offloads keep working");
    }
    assert!(
        registry.unregister(7).is_err(),
        "unregistering twice is an error"
    );

    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let stats = h.join().unwrap();
        assert!(stats.done >= N as u64);
        assert_eq!(stats.unknown_offload, 1);
    }
}

#[test]
fn registering_an_existing_id_is_refused() {
    let registry = Registry::new();
    let prog = Arc::new(verify(&numbered_program(1), &VerifierConfig::default()).unwrap());
    registry.register_as(5, spec(1), prog.clone()).unwrap();
    let err = registry.register_as(5, spec(1), prog).unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");
}

#[test]
fn every_pool_runs_the_one_program_its_registration_compiled() {
    let registry = Registry::for_engine(Engine::native());
    let prog = Arc::new(verify(&numbered_program(3), &VerifierConfig::default()).unwrap());
    let off = registry.register_as(3, spec(3), prog).unwrap();
    let compiled = off.compiled(Engine::native()).unwrap();
    // Pools of other threads take that one compiled program (no worker compiles) and run it
    // at the same time.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (registry, compiled) = (registry.clone(), compiled.clone());
            std::thread::spawn(move || {
                let pool = VmPool::new(registry, Engine::native());
                assert!(Arc::ptr_eq(&pool.get(3).expect("registered").vm, &compiled));
                let (mut ex, mut w, mut ctx) = (Executor::default(), World::new(), Ctx::boxed());
                for _ in 0..10_000 {
                    assert_eq!(invoke(&pool, &mut ex, &mut w, &mut ctx, 3), Ok(3));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn a_program_that_does_not_compile_is_refused_at_registration() {
    let other = if cfg!(target_arch = "x86_64") {
        Engine::Cranelift
    } else {
        Engine::Jit
    };
    let registry = Registry::for_engine(other);
    let prog = Arc::new(verify(&numbered_program(1), &VerifierConfig::default()).unwrap());
    let err = registry.register(spec(1), prog).unwrap_err();
    assert!(
        matches!(err, naam_core::pool::RegistryError::Compile { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("does not compile"), "{err}");
    assert!(registry.is_empty(), "nothing was registered");
}
