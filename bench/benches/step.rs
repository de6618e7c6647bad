//! One handler step under the JIT, the interpreter, and the same logic in native Rust.
//!
//! The step is the middle step of `handlers/test/three_step.bpf.c`: read the word the previous
//! READ fetched, keep it in the state block, and request a CAS. Run with
//! `cargo bench -p naam-bench --bench step`.

use criterion::{criterion_group, criterion_main, Criterion};
use naam_core::abi::{ctx, op, Ctx, OpKind, RawOp, RET_NEXT};
use naam_core::elf::load_program;
use naam_core::pool::compile;
use naam_core::verifier::{verify, VerifierConfig};
use naam_core::vm::Engine;
use std::hint::black_box;
use std::sync::Arc;

const THREE_STEP: &[u8] = include_bytes!("../../handlers/test/three_step.bpf.o");

/// The native twin of step 1, on the same context bytes.
fn native_step(c: &mut Ctx) -> u64 {
    let b = c.as_bytes();
    let word = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    if u32::from_le_bytes(b[ctx::ARGS_LEN..ctx::ARGS_LEN + 4].try_into().unwrap()) < 24 {
        return naam_core::abi::ret_abort(1);
    }
    let region = u32::from_le_bytes(b[ctx::ARGS..ctx::ARGS + 4].try_into().unwrap());
    let offset = word(ctx::ARGS + 8);
    let add = word(ctx::ARGS + 16);
    let v = word(ctx::DATA);
    let b = c.as_bytes_mut();
    b[ctx::STATE..ctx::STATE + 8].copy_from_slice(&v.to_le_bytes());
    c.set_raw_op(
        0,
        &RawOp {
            kind: OpKind::Cas as u8,
            region,
            offset,
            len: 8,
            data_off: 0,
            arg0: v,
            arg1: v + add,
        },
    );
    c.set_n_ops(1);
    debug_assert_eq!(op::KIND, 0);
    RET_NEXT
}

fn step_ctx() -> Box<Ctx> {
    let mut c = Ctx::boxed();
    let mut args = Vec::new();
    args.extend_from_slice(&1u32.to_le_bytes());
    args.extend_from_slice(&0u32.to_le_bytes());
    args.extend_from_slice(&64u64.to_le_bytes());
    args.extend_from_slice(&5u64.to_le_bytes());
    c.start(&args);
    c.set_step(1);
    c.data_mut()[..8].copy_from_slice(&1000u64.to_le_bytes());
    c
}

fn bench_step(c: &mut Criterion) {
    let prog = Arc::new(
        verify(
            &load_program(THREE_STEP, None).unwrap(),
            &VerifierConfig::default(),
        )
        .unwrap(),
    );
    let mut g = c.benchmark_group("three_step/step1");
    for engine in [Engine::native(), Engine::Interpreter] {
        let vm = compile(prog.clone(), engine).unwrap();
        let mut cx = step_ctx();
        assert_eq!(vm.run(&mut cx).unwrap(), RET_NEXT);
        g.bench_function(engine.name(), |b| {
            b.iter(|| vm.run(black_box(&mut cx)).unwrap())
        });
    }
    let mut cx = step_ctx();
    let expect = {
        let vm = compile(prog.clone(), Engine::Interpreter).unwrap();
        let mut e = step_ctx();
        vm.run(&mut e).unwrap();
        e
    };
    native_step(&mut cx);
    assert_eq!(
        cx.as_bytes()[..],
        expect.as_bytes()[..],
        "native twin computes the same context"
    );
    g.bench_function("native", |b| b.iter(|| native_step(black_box(&mut cx))));
    g.finish();
}

criterion_group!(benches, bench_step);
criterion_main!(benches);
