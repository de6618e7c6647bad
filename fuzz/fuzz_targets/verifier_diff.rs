//! Differential fuzzing of the verifier: the input drives the program generator shared with
//! `core/tests/verifier_props.rs`. The verifier must never panic; a program it accepts must
//! compile under the JIT, run under the interpreter (which bounds-checks every access against
//! the context and the stack) without an error, and JIT and interpreter must agree on r0 and
//! the context bytes (unless it holds the one accepted construct they read differently, see
//! `engines_may_disagree`); and no store may change a byte outside the program's verified
//! store footprint or in a read-only field of the context.
#![no_main]

use libfuzzer_sys::fuzz_target;
use naam_core::abi::{is_writable, Ctx};
use naam_core::elf::Program;
use naam_core::verifier::{verify, VerifierConfig};
use naam_core::vm::{CompiledVm, Engine};
use std::sync::Arc;

#[path = "../../core/tests/common/gen.rs"]
mod gen;

/// SplitMix64: context bytes from the input without another dependency.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fuzz_target!(|data: &[u8]| {
    let prog = Program::from_insns("fuzz", gen::program(&mut gen::Src::new(data), 120));
    let Ok(v) = verify(&prog, &VerifierConfig::default()) else {
        return;
    };
    let native = Engine::native();
    if native == Engine::Interpreter {
        return;
    }
    let v = Arc::new(v);
    let v_writes = *v.ctx_writes();
    let jit =
        CompiledVm::new(v.clone(), native).expect("a verified program compiles under the JIT");
    let interp = CompiledVm::new(v, Engine::Interpreter).expect("a verified program loads");
    let mut seed = data.iter().fold(0u64, |h, &b| h.rotate_left(7) ^ b as u64);
    for style in 0..3u64 {
        let mut ctx = Ctx::boxed();
        for b in ctx.as_bytes_mut().iter_mut() {
            let r = next(&mut seed);
            *b = match style {
                0 => r as u8,
                1 => (r & 3) as u8,
                _ => 0,
            };
        }
        let mut a = ctx.clone();
        let mut b = ctx.clone();
        let r_jit = jit.run(&mut a).expect("the JIT runs");
        let r_int = interp.run(&mut b).unwrap_or_else(|e| {
            panic!(
                "interpreter error on an accepted program: {e:?}: {:02x?}",
                prog.insns
            )
        });
        // What makes a reused context safe for the next tenant: no store lands outside the
        // verified footprint (only it is cleared) or in a read-only field.
        for (k, (was, is)) in ctx.as_bytes().iter().zip(b.as_bytes()).enumerate() {
            assert!(
                was == is || (v_writes.contains(k) && is_writable(k, 1)),
                "byte {k} changed outside the footprint or in a read-only field: {:02x?}",
                prog.insns
            );
        }
        if gen::engines_may_disagree(jit.program().insns()) {
            continue;
        }
        assert_eq!(r_jit, r_int, "r0 differs: {:02x?}", prog.insns);
        assert!(
            a.as_bytes() == b.as_bytes(),
            "context bytes differ: {:02x?}",
            prog.insns
        );
    }
});
