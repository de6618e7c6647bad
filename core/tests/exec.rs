//! The step executor end to end: a three-step handler (READ, then CAS, then DONE) under every
//! engine, engines agreeing on random inputs, isolation violations turned into counted errors,
//! and the step budget.

mod common;

use common::*;
use naam_core::abi::{ret_abort, Ctx};
use naam_core::elf::Program;
use naam_core::exec::{ExecError, Executor, Outcome, Run, StepOutcome};
use naam_core::pool::compile;
use naam_core::region::{OpError, OpErrorCode};
use naam_core::verifier::{verify, VerifierConfig};
use naam_core::vm::Engine;
use proptest::prelude::*;
use std::sync::Arc;

fn engines() -> Vec<Engine> {
    [Engine::native(), Engine::Interpreter]
        .into_iter()
        .filter(|e| e.available())
        .collect()
}

thread_local! {
    /// One compiled VM per engine for the whole test thread: compiling is slow under qemu
    /// (the aarch64 run), and a VM is reusable across messages.
    static VMS: Vec<(Engine, naam_core::vm::CompiledVm)> =
        engines().into_iter().map(|e| (e, compile(three_step(), e).unwrap())).collect();
}

fn run(engine: Engine, w: &mut World, tenant: u32, args: &[u8]) -> (Outcome, Box<Ctx>, Executor) {
    VMS.with(|vms| {
        let vm = &vms
            .iter()
            .find(|(e, _)| *e == engine)
            .expect("engine compiled")
            .1;
        run_on(vm, w, tenant, args)
    })
}

fn run_on(
    vm: &naam_core::vm::CompiledVm,
    w: &mut World,
    tenant: u32,
    args: &[u8],
) -> (Outcome, Box<Ctx>, Executor) {
    let mut ex = Executor::default();
    let mut ctx = Ctx::boxed();
    ctx.start(args);
    let out = ex.run(vm, tenant, &w.regions, &mut w.mem, &mut ctx);
    (out, ctx, ex)
}

const ORDERED_OPS: &[u8] = include_bytes!("../../handlers/test/ordered_ops.bpf.o");

/// `ordered_ops` on region 1 at `offset`, its 32 bytes set to 1..=32 first; its CAS expects
/// the last word.
fn ordered_world(offset: u64) -> (World, Vec<u8>) {
    let w = World::new();
    let init: Vec<u8> = (1..=32).collect();
    assert!(w.mem.get(1).unwrap().write(offset, &init));
    let mut args = Vec::new();
    args.extend_from_slice(&1u32.to_le_bytes());
    args.extend_from_slice(&0u32.to_le_bytes());
    args.extend_from_slice(&offset.to_le_bytes());
    args.extend_from_slice(&init[24..32]);
    args.extend_from_slice(&0xfeed_u64.to_le_bytes());
    (w, args)
}

#[test]
fn a_run_sent_in_ordered_batches_ends_as_one_run_at_once() {
    // The NIC posting a step's ops and the client sending them as one-sided requests drive
    // `Run` batch by batch; the host applies a step's ops at once. Same reply, same memory;
    // and the WRITE whose window overlaps the READ's waits for it.
    let prog = Arc::new(
        verify(
            &naam_core::elf::load_program(ORDERED_OPS, None).unwrap(),
            &VerifierConfig::default(),
        )
        .unwrap(),
    );
    let vm = compile(prog, Engine::native()).unwrap();

    let (mut host, args) = ordered_world(64);
    let mut ctx = Ctx::boxed();
    ctx.start(&args);
    let out = Executor::default().run(&vm, 1, &host.regions, &mut host.mem, &mut ctx);
    assert!(matches!(out, Outcome::Done { steps: 2 }), "{out:?}");
    let at_once = ctx.out().unwrap().to_vec();

    let (mut away, args) = ordered_world(64);
    let mut ctx = Ctx::boxed();
    ctx.start(&args);
    let mut run = Run::new();
    assert_eq!(run.step(&vm, &mut ctx, 8).unwrap(), StepOutcome::Ops(4));
    assert!(run.ops().is_empty(), "no ops before they are checked");
    run.check(&away.regions, 1, &ctx).unwrap();
    let mut batches = Vec::new();
    while run.ops_left() {
        batches.push(run.next_batch());
        run.apply_batch(&mut away.mem, &mut ctx).unwrap();
    }
    assert_eq!(batches, [0..1, 1..4]);
    assert!(run.next_batch().is_empty());
    assert_eq!(run.step(&vm, &mut ctx, 8).unwrap(), StepOutcome::Done);
    assert_eq!(run.steps(), 2);
    assert_eq!(ctx.out().unwrap(), &at_once[..]);
    assert_eq!(
        &at_once[24..32],
        &(9..=16).collect::<Vec<u8>>()[..],
        "the WRITE sent the READ's bytes"
    );

    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    assert!(host.mem.get(1).unwrap().read(64, &mut a));
    assert!(away.mem.get(1).unwrap().read(64, &mut b));
    assert_eq!(a, b);
    assert_eq!(a[24..32], 0xfeed_u64.to_le_bytes());

    // The budget: a Run that has spent it refuses the next step and runs nothing.
    let mut ctx = Ctx::boxed();
    ctx.start(&args);
    let mut run = Run::new();
    assert!(matches!(
        run.step(&vm, &mut ctx, 1),
        Ok(StepOutcome::Ops(4))
    ));
    assert!(matches!(
        run.step(&vm, &mut ctx, 1),
        Err(ExecError::StepBudget { max: 1 })
    ));
    assert_eq!(run.steps(), 1);
}

fn reply_words(ctx: &Ctx) -> [u64; 3] {
    let out = ctx.out().expect("reply");
    assert_eq!(out.len(), 24);
    [0, 1, 2].map(|i| u64::from_le_bytes(out[i * 8..i * 8 + 8].try_into().unwrap()))
}

#[test]
fn three_steps_read_cas_done_under_each_engine() {
    for engine in engines() {
        let mut w = World::new();
        w.mem.get(1).unwrap().store_u64(64, 1000).unwrap();
        let (out, ctx, ex) = run(engine, &mut w, 1, &three_step_args(1, 64, 5));
        assert!(
            matches!(out, Outcome::Done { steps: 3 }),
            "{engine:?}: {out:?}"
        );
        assert_eq!(reply_words(&ctx), [1000, 1000, 1], "{engine:?}");
        assert_eq!(
            w.mem.get(1).unwrap().load_u64(64),
            Some(1005),
            "{engine:?}: CAS applied"
        );
        assert_eq!((ex.stats.steps, ex.stats.ops, ex.stats.done), (3, 2, 1));
    }
}

#[test]
fn short_arguments_abort_with_the_handler_code() {
    for engine in engines() {
        let mut w = World::new();
        let (out, _, ex) = run(engine, &mut w, 1, &[1, 2, 3]);
        assert!(
            matches!(out, Outcome::Aborted { code: 1, steps: 1 }),
            "{engine:?}: {out:?}"
        );
        assert_eq!(ex.stats.aborted, 1);
    }
}

#[test]
fn isolation_violations_end_the_message_and_are_counted() {
    for engine in engines() {
        let cases: [(u32, u32, u64, OpErrorCode); 4] = [
            (1, 1, 4096, OpErrorCode::OutOfBounds), // past the end of region 1
            (1, 3, 0, OpErrorCode::WrongTenant),    // tenant 2's region
            (1, 2, 0, OpErrorCode::PermissionDenied), // read-only region: the CAS is refused
            (1, 9, 0, OpErrorCode::NoSuchRegion),
        ];
        for (tenant, region, offset, code) in cases {
            let mut w = World::new();
            let (out, _, ex) = run(engine, &mut w, tenant, &three_step_args(region, offset, 1));
            match out {
                Outcome::Failed {
                    error: ExecError::Op(e),
                    ..
                } => assert_eq!(e.code(), code, "{engine:?} {e}"),
                other => panic!(
                    "{engine:?} region {region} offset {offset}: expected {code:?}, got {other:?}"
                ),
            }
            assert_eq!(ex.stats.op_errors[code as usize], 1, "{engine:?}: counted");
            assert_eq!(ex.stats.errors(), 1);
        }
        // Nothing was written by a refused CAS on the read-only region.
        let mut w = World::new();
        let _ = run(engine, &mut w, 1, &three_step_args(2, 0, 1));
        assert_eq!(w.mem.get(2).unwrap().load_u64(0), Some(0));
    }
}

/// The finding of the operator probe of 2026-12-06: a writing handler registered
/// `--read-only` (no de-duplication) ran its writes again on every retransmission. Its VM now
/// refuses any op but READ, wherever it runs; the READ step before it still runs.
#[test]
fn an_offload_registered_read_only_may_not_write() {
    for engine in engines() {
        let vm = compile(three_step(), engine).unwrap().read_only(true);
        let mut w = World::new();
        w.mem.get(1).unwrap().store_u64(64, 1000).unwrap();
        let (out, _, ex) = run_on(&vm, &mut w, 1, &three_step_args(1, 64, 5));
        match out {
            Outcome::Failed {
                error: ExecError::Op(e @ OpError::ReadOnlyOffload { index: 0, .. }),
                steps: 2,
            } => assert!(e.to_string().contains("read-only"), "{e}"),
            other => panic!("{engine:?}: expected the CAS refused, got {other:?}"),
        }
        assert_eq!(
            w.mem.get(1).unwrap().load_u64(64),
            Some(1000),
            "not written"
        );
        assert_eq!(
            ex.stats.op_errors[OpErrorCode::PermissionDenied as usize],
            1
        );
    }
}

#[test]
fn misaligned_cas_is_refused() {
    let mut w = World::new();
    let (out, _, _) = run(Engine::Interpreter, &mut w, 1, &three_step_args(1, 4, 1));
    assert!(
        matches!(
            out,
            Outcome::Failed {
                error: ExecError::Op(OpError::BadAtomic { .. }),
                ..
            }
        ),
        "{out:?}"
    );
}

/// `r0 = NEXT` with one READ op, forever: the step budget must end it.
fn looping_program() -> Program {
    let mut insns = Vec::new();
    let mut put = |op: u8, regs: u8, off: i16, imm: i32| {
        insns.push(op);
        insns.push(regs);
        insns.extend_from_slice(&off.to_le_bytes());
        insns.extend_from_slice(&imm.to_le_bytes());
    };
    let op0 = naam_core::abi::ctx::OPS as i16;
    put(0x72, 0x01, op0, 1); // *(u8 *)(r1 + kind) = READ
    put(0x62, 0x01, op0 + 4, 1); // region = 1
    put(0x62, 0x01, op0 + 16, 8); // len = 8
    put(0x62, 0x01, naam_core::abi::ctx::N_OPS as i16, 1); // n_ops = 1
    put(0xb7, 0x00, 0, 1); // r0 = NEXT
    put(0x95, 0, 0, 0);
    Program::from_insns("forever", insns)
}

#[test]
fn step_budget_ends_a_message_that_never_finishes() {
    let prog = Arc::new(verify(&looping_program(), &VerifierConfig::default()).unwrap());
    for engine in engines() {
        let vm = compile(prog.clone(), engine).unwrap();
        let mut w = World::new();
        let mut ex = Executor::new(5);
        let mut ctx = Ctx::boxed();
        ctx.start(&[]);
        let out = ex.run(&vm, 1, &w.regions, &mut w.mem, &mut ctx);
        assert!(
            matches!(
                out,
                Outcome::Failed {
                    error: ExecError::StepBudget { max: 5 },
                    steps: 5
                }
            ),
            "{out:?}"
        );
        assert_eq!(ex.stats.step_budget, 1);
    }
}

#[test]
fn abort_code_encoding_matches_the_header() {
    assert_eq!(ret_abort(1), 0x102);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(target_arch = "x86_64") { 256 } else { 64 }, ..ProptestConfig::default() })]

    /// JIT and interpreter agree on the reply, the memory and the step count for any start
    /// value, offset and addend (including out-of-range offsets, which both must refuse).
    #[test]
    fn engines_agree(start in any::<u64>(), slot in 0u64..600, add in any::<u64>(), region in 0u32..4) {
        let offset = slot * 8;
        let mut results = Vec::new();
        for engine in engines() {
            let mut w = World::new();
            if offset + 8 <= 4096 {
                w.mem.get(1).unwrap().store_u64(offset, start).unwrap();
            }
            let (out, ctx, _) = run(engine, &mut w, 1, &three_step_args(region, offset, add));
            let summary = match out {
                Outcome::Done { steps } => format!("done {steps} {:?}", reply_words(&ctx)),
                Outcome::Aborted { code, steps } => format!("abort {code} {steps}"),
                Outcome::Failed { error, steps } => format!("failed {:?} {steps}", error.kind()),
            };
            let word = w.mem.get(1).unwrap().load_u64(offset.min(4088));
            results.push((summary, word));
        }
        for r in &results[1..] {
            prop_assert_eq!(r, &results[0]);
        }
    }
}

/// One eBPF instruction, encoded.
/// Where a handler finds its arguments in the context.
const ARG_OFF: i16 = naam_core::abi::ctx::ARGS as i16;

fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let (o, i) = (off.to_le_bytes(), imm.to_le_bytes());
    [op, dst | (src << 4), o[0], o[1], i[0], i[1], i[2], i[3]]
}

/// Every conditional jump, 64- and 32-bit, register and immediate, on operands that differ
/// only above bit 31 or only in the sign bit, taken or not exactly as the eBPF semantics say,
/// under every engine. rbpf 0.4.1's cranelift JIT (the aarch64 engine) compared the low 32
/// bits for every jump (see third_party/rbpf/PATCHED.md); the verifier's bounds rest on these
/// branches.
#[test]
fn conditional_jumps_compare_what_their_class_says_under_every_engine() {
    const VALUES: [u64; 9] = [
        0,
        1,
        100,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_0000_0064,
        1 << 63,
        u64::MAX,
    ];
    // (opcode's operation bits, the comparison on 64-bit operands, on 32-bit operands)
    type Cmp = fn(u64, u64) -> bool;
    let ops: [(u8, Cmp, Cmp); 11] = [
        (0x10, |a, b| a == b, |a, b| a as u32 == b as u32),
        (0x20, |a, b| a > b, |a, b| a as u32 > b as u32),
        (0x30, |a, b| a >= b, |a, b| a as u32 >= b as u32),
        (0x40, |a, b| a & b != 0, |a, b| a as u32 & b as u32 != 0),
        (0x50, |a, b| a != b, |a, b| a as u32 != b as u32),
        (0x60, |a, b| a as i64 > b as i64, |a, b| a as i32 > b as i32),
        (
            0x70,
            |a, b| a as i64 >= b as i64,
            |a, b| a as i32 >= b as i32,
        ),
        (0xa0, |a, b| a < b, |a, b| (a as u32) < b as u32),
        (0xb0, |a, b| a <= b, |a, b| a as u32 <= b as u32),
        (
            0xc0,
            |a, b| (a as i64) < b as i64,
            |a, b| (a as i32) < b as i32,
        ),
        (
            0xd0,
            |a, b| a as i64 <= b as i64,
            |a, b| a as i32 <= b as i32,
        ),
    ];
    let mut checked = 0;
    for engine in engines() {
        for &(op, cmp64, cmp32) in &ops {
            for (class, cmp) in [(0x05u8, cmp64), (0x06, cmp32)] {
                // r5 and r6 from the context's argument bytes, then `if r5 OP r6 goto +1`
                // (register form) or `if r5 OP 100 goto +1` (immediate form): r0 = 1 when taken.
                for reg_form in [true, false] {
                    let jump = if reg_form {
                        insn(op | class | 0x08, 5, 6, 1, 0)
                    } else {
                        insn(op | class, 5, 0, 1, 100)
                    };
                    let prog = Program::from_insns(
                        "jump",
                        [
                            insn(0xb7, 0, 0, 0, 0),
                            insn(0x79, 5, 1, ARG_OFF, 0),
                            insn(0x79, 6, 1, ARG_OFF + 8, 0),
                            jump,
                            insn(0x95, 0, 0, 0, 0),
                            insn(0xb7, 0, 0, 0, 1),
                            insn(0x95, 0, 0, 0, 0),
                        ]
                        .concat(),
                    );
                    let v = Arc::new(verify(&prog, &VerifierConfig::default()).expect("verifies"));
                    let vm = compile(v, engine).unwrap();
                    for a in VALUES {
                        for b in if reg_form { &VALUES[..] } else { &[100][..] } {
                            let mut ctx = Ctx::boxed();
                            let args = &mut ctx.as_bytes_mut()[ARG_OFF as usize..];
                            args[..8].copy_from_slice(&a.to_le_bytes());
                            args[8..16].copy_from_slice(&b.to_le_bytes());
                            let taken = vm.run(&mut ctx).unwrap() == 1;
                            assert_eq!(
                                taken,
                                cmp(a, *b),
                                "{engine:?}: jump {:#04x} on {a:#x}, {b:#x}",
                                jump[0]
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 0);
}

/// The x86 JIT's code is never writable and executable at once (rbpf patched: it kept every
/// program's code pages `-wx` for the program's life; the probe of 2026-12-06).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn jit_code_is_never_writable_and_executable() {
    let vms: Vec<_> = (0..8)
        .map(|_| compile(three_step(), Engine::Jit).unwrap())
        .collect();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let wx: Vec<&str> = maps
        .lines()
        .filter(|l| {
            let perms = l.split_whitespace().nth(1).unwrap_or("");
            perms.contains('w') && perms.contains('x')
        })
        .collect();
    assert!(wx.is_empty(), "{wx:#?}");
    // Still runs, and dropping them gives the pages back without a fault.
    let mut w = World::new();
    w.mem.get(1).unwrap().store_u64(64, 7).unwrap();
    let (out, _, _) = run_on(&vms[3], &mut w, 1, &three_step_args(1, 64, 1));
    assert!(matches!(out, Outcome::Done { steps: 3 }), "{out:?}");
    drop(vms);
}
