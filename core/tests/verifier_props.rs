//! Differential property test of the verifier (bounded, a few seconds): on random and mutated
//! programs the verifier never panics; every program it accepts runs under the interpreter
//! (which bounds-checks every access against the context and the stack) without an error,
//! compiles under the JIT, and JIT and interpreter agree on r0 and the context bytes (unless
//! it holds the one accepted construct they read differently, see `engines_may_disagree`);
//! no store changes a byte outside the program's verified store footprint nor sets an op's
//! kind to a mutation when the verifier says it only reads, and a context
//! reused for another message is the same as a fresh one.

mod common;

use common::gen::{engines_may_disagree, program, Src};
use common::{engines, random_ctx, run_one};
use naam_core::abi::{ctx, is_writable, op, Ctx, OpKind, CTX_SIZE, MAX_OPS, OP_SIZE};
use naam_core::elf::Program;
use naam_core::verifier::{verify, VerifierConfig};
use proptest::prelude::*;
use rand::SeedableRng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

static ACCEPTED: AtomicUsize = AtomicUsize::new(0);

fn check(input: &[u8]) {
    let mut src = Src::new(input);
    let prog = Program::from_insns("gen", program(&mut src, 80));
    let Ok(v) = verify(&prog, &VerifierConfig::default()) else {
        return;
    };
    ACCEPTED.fetch_add(1, Ordering::Relaxed);
    let v = Arc::new(v);
    let Some((jit, interp)) = engines(&v) else {
        return;
    };
    let seed = input.iter().fold(0u64, |h, &b| h.rotate_left(5) ^ b as u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..8 {
        let ctx = random_ctx(&mut rng);
        let (j, i) = (run_one(&jit, &ctx), run_one(&interp, &ctx));
        // The store footprint is sound: a byte outside it never changes (so a context reused
        // for the next message is clean after clearing only the footprint).
        for (k, (a, b)) in ctx.as_bytes().iter().zip(&i.1).enumerate() {
            assert!(
                a == b || v.ctx_writes().contains(k),
                "byte {k} changed outside the store footprint of {:02x?}",
                prog.insns
            );
            assert!(
                a == b || is_writable(k, 1),
                "byte {k}, in a read-only field, changed by {:02x?}",
                prog.insns
            );
        }
        // A program proven to ask for READs only never sets an op's kind to anything else.
        if v.first_mutating_op().is_none() {
            for o in 0..MAX_OPS {
                let k = ctx::OPS + o * OP_SIZE + op::KIND;
                let (before, after) = (ctx.as_bytes()[k], i.1[k]);
                assert!(
                    after == before || after == 0 || after == OpKind::Read as u8,
                    "op {o}'s kind set to {after} by {:02x?}, proven to only read",
                    prog.insns
                );
            }
        }
        let mut reused = Ctx::boxed();
        reused.start(&ctx.as_bytes()[..64]);
        let _ = jit.run(&mut reused);
        reused.start(b"next");
        let mut fresh = Ctx::boxed();
        fresh.start(b"next");
        assert!(
            reused.as_bytes() == fresh.as_bytes(),
            "a reused context differs from a fresh one after {:02x?}",
            prog.insns
        );
        if engines_may_disagree(v.insns()) {
            continue;
        }
        assert_eq!(
            j.0,
            i.0,
            "r0 differs for {:02x?} on context {:02x?}",
            prog.insns,
            &ctx.as_bytes()[..CTX_SIZE]
        );
        assert!(j.1 == i.1, "context bytes differ for {:02x?}", prog.insns);
    }
}

proptest! {
    // Fewer cases off x86_64: there this runs under qemu, where every compile is emulated.
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(if cfg!(target_arch = "x86_64") { 1000 } else { 100 }), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn accepted_programs_are_memory_safe_and_engines_agree(input in prop::collection::vec(any::<u8>(), 0..1024)) {
        check(&input);
    }
}

#[test]
fn the_generator_produces_accepted_programs() {
    // Guards the property above against a generator that only produces rejected programs.
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut accepted = 0;
    for _ in 0..2000 {
        let input: Vec<u8> = (0..600).map(|_| rand::Rng::gen(&mut rng)).collect();
        let prog = Program::from_insns("gen", program(&mut Src::new(&input), 80));
        if verify(&prog, &VerifierConfig::default()).is_ok() {
            accepted += 1;
        }
    }
    println!("accepted {accepted} of 2000 generated programs");
    // A meaningful share (331 of 2000 with this seed on 2026-12-04): the property above is
    // only as strong as the accepted programs it runs.
    assert!(
        accepted >= 200,
        "only {accepted} of 2000 generated programs were accepted (at least 10 % wanted)"
    );
}
