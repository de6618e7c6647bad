//! Verification time: one program, and 1024 programs of ~300 instructions (goal: < 1 s in
//! total); and the compile time of one program for this machine's engine, which a registration
//! costs once (the registry compiles it for every worker, `Registry::for_engine`) instead of
//! once in each worker's poll loop. Run: `cargo bench -p naam-bench --bench verifier`.

use criterion::{criterion_group, criterion_main, Criterion};
use naam_core::abi::ctx;
use naam_core::elf::{load_program, Program};
use naam_core::verifier::{verify, VerifierConfig};
use std::hint::black_box;

fn raw(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let m = imm.to_le_bytes();
    [op, dst | (src << 4), o[0], o[1], m[0], m[1], m[2], m[3]]
}

/// A safe program of about 300 instructions shaped like compiled handler code: masked and
/// checked indexes into the context, pointer moves, stack spills, forward branches.
fn program(seed: usize) -> Program {
    let args = ctx::ARGS as i16;
    let state = ctx::STATE as i16;
    let mut p = vec![raw(0xb7, 0, 0, 0, 0)];
    for block in 0..27 {
        let k = ((seed * 7 + block * 13) % 64) as i16;
        let slot = -8 * (1 + (block % 8) as i16);
        p.extend([
            raw(0x71, 2, 1, args + k, 0),           // r2 = ctx->args[k]
            raw(0x57, 2, 0, 0, 15),                 // r2 &= 15
            raw(0xbf, 3, 1, 0, 0),                  // r3 = r1
            raw(0x0f, 3, 2, 0, 0),                  // r3 += r2
            raw(0x71, 4, 3, args, 0),               // r4 = r3->args[0]
            raw(0x25, 4, 0, 3, 100 + block as i32), // if r4 > c goto +3
            raw(0x73, 3, 4, state + k, 0),          // state[r2 + k] = r4
            raw(0x0f, 0, 4, 0, 0),                  // r0 += r4
            raw(0x27, 4, 0, 0, 3),                  // r4 *= 3
            raw(0x7b, 10, 4, slot, 0),              // spill r4
            raw(0x79, 5, 10, slot, 0),              // fill r5
        ]);
    }
    p.push(raw(0x95, 0, 0, 0, 0));
    Program::from_insns(format!("bench{seed}"), p.concat())
}

fn bench(c: &mut Criterion) {
    let cfg = VerifierConfig::default();
    let programs: Vec<Program> = (0..1024).map(program).collect();
    for p in &programs {
        verify(p, &cfg).unwrap_or_else(|e| panic!("{}: {e}", p.name));
    }
    println!(
        "{} programs of {} instructions",
        programs.len(),
        programs[0].insn_count()
    );
    // Copied so the ELF parser gets an aligned buffer.
    let elf = include_bytes!("../../handlers/test/three_step.bpf.o").to_vec();
    let three_step = load_program(&elf, None).expect("three_step loads");

    c.bench_function("verify three_step (45 insns)", |b| {
        b.iter(|| verify(black_box(&three_step), &cfg).unwrap())
    });
    c.bench_function("verify one ~300-insn program", |b| {
        b.iter(|| verify(black_box(&programs[0]), &cfg).unwrap())
    });
    let engine = naam_core::vm::Engine::native();
    let verified = std::sync::Arc::new(verify(&programs[0], &cfg).unwrap());
    c.bench_function(
        &format!("compile one ~300-insn program ({})", engine.name()),
        |b| b.iter(|| naam_core::vm::CompiledVm::new(black_box(verified.clone()), engine).unwrap()),
    );
    let mut g = c.benchmark_group("batch");
    g.sample_size(10);
    g.bench_function("verify 1024 programs of ~300 insns", |b| {
        b.iter(|| {
            for p in &programs {
                black_box(verify(black_box(p), &cfg).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
