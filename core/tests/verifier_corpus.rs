//! The verifier corpus: unsafe programs, each rejected for its specific reason, and safe
//! programs, each accepted and computing the same r0 and context bytes under the JIT and the
//! interpreter on random contexts.

mod common;

use common::*;
use naam_core::abi::ctx;
use naam_core::elf::{load_program, Program};
use naam_core::verifier::{verify, VerifierConfig, VerifyErrorKind as K};
use rand::SeedableRng;
use std::sync::Arc;

const ARGS: i16 = ctx::ARGS as i16;
const STATE: i16 = ctx::STATE as i16;
const OUT: i16 = ctx::OUT as i16;
const SIZE: i16 = ctx::SIZE as i16;

fn c_program(file: &str) -> Program {
    let path = format!("{}/../handlers/test/{file}", env!("CARGO_MANIFEST_DIR"));
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run handlers/build.sh)"));
    load_program(&bytes, None).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn expect_reject(name: &str, p: &Program, cfg: &VerifierConfig, kind: K) {
    match verify(p, cfg) {
        Ok(_) => panic!("{name}: accepted, expected rejection as {kind:?}"),
        Err(e) => {
            assert_eq!(e.kind, kind, "{name}: rejected for the wrong reason: {e}");
            assert!(!e.reason.is_empty());
            println!("{name}: rejected as expected: {e}");
        }
    }
}

/// Hand-written unsafe programs.
fn unsafe_bytecode() -> Vec<(&'static str, Vec<I>, K)> {
    let [l0, l1] = lddw(2, 0x1234_5678_9abc_def0);
    let mut big_div = vec![mov_imm(0, 1), mov_imm(2, 3)];
    big_div.extend(std::iter::repeat_n(alu64_reg(DIV, 0, 2), 300));
    big_div.push(exit());
    vec![
        (
            "unknown opcode",
            vec![raw(0xff, 0, 0, 0, 0), exit()],
            K::UnknownOpcode,
        ),
        (
            "legacy packet load",
            vec![raw(0x20, 0, 0, 0, 0), exit()],
            K::UnknownOpcode,
        ),
        (
            "atomic xadd",
            vec![
                mov_imm(2, 1),
                raw(0xdb, 10, 2, -8, 0),
                mov_imm(0, 0),
                exit(),
            ],
            K::Atomic,
        ),
        (
            "register r11",
            vec![raw(0xb7, 11, 0, 0, 0), exit()],
            K::Malformed,
        ),
        (
            "lddw missing its second half",
            vec![mov_imm(0, 0), exit(), raw(0x18, 0, 0, 0, 1)],
            K::Lddw,
        ),
        (
            "map lddw",
            vec![
                raw(0x18, 2, 1, 0, 3),
                raw(0, 0, 0, 0, 0),
                mov_imm(0, 0),
                exit(),
            ],
            K::Lddw,
        ),
        (
            "jump out of range",
            vec![mov_imm(0, 0), ja(5), exit()],
            K::JumpOutOfRange,
        ),
        (
            "jump into lddw",
            vec![mov_imm(0, 0), ja(1), l0, l1, exit()],
            K::JumpIntoLddw,
        ),
        ("falls off the end", vec![mov_imm(0, 0)], K::FallThrough),
        (
            "conditional falls off the end",
            vec![mov_imm(0, 0), jmp_imm(JEQ, 0, 0, -2)],
            K::BackEdge,
        ),
        (
            "branch past last exit",
            vec![mov_imm(0, 0), exit(), mov_imm(0, 1)],
            K::FallThrough,
        ),
        (
            "back edge",
            vec![mov_imm(0, 0), alu64_imm(ADD, 0, 1), ja(-2), exit()],
            K::BackEdge,
        ),
        (
            "bpf-to-bpf call",
            vec![raw(0x85, 0, 1, 0, 1), exit(), mov_imm(0, 0), exit()],
            K::BpfCall,
        ),
        ("too much JIT code", big_div, K::TooLarge),
        (
            "uninitialised register",
            vec![mov_reg(0, 2), exit()],
            K::UninitRegister,
        ),
        ("uninitialised r0 at exit", vec![exit()], K::UninitRegister),
        (
            "r0 set on one path only",
            vec![
                ldx(B, 2, 1, ARGS),
                jmp_imm(JEQ, 2, 0, 1),
                mov_imm(0, 0),
                exit(),
            ],
            K::UninitRegister,
        ),
        (
            "r0 a pointer on one path and a scalar on the other",
            vec![
                ldx(B, 2, 1, ARGS),
                mov_reg(0, 1),
                jmp_imm(JEQ, 2, 0, 1),
                mov_imm(0, 0),
                exit(),
            ],
            K::ReturnPointer,
        ),
        (
            "a register used as an address that is a pointer on one path only",
            vec![
                ldx(B, 2, 1, ARGS),
                mov_reg(3, 1),
                jmp_imm(JEQ, 2, 0, 1),
                mov_imm(3, 0),
                ldx(B, 0, 3, 0),
                exit(),
            ],
            K::MixedTypes,
        ),
        (
            "callx (indirect call)",
            vec![raw(0x8d, 0, 1, 0, 0), mov_imm(0, 0), exit()],
            K::UnknownOpcode,
        ),
        (
            "write r10",
            vec![mov_imm(10, 0), mov_imm(0, 0), exit()],
            K::WriteR10,
        ),
        (
            "load into r10",
            vec![ldx(DW, 10, 1, 0), mov_imm(0, 0), exit()],
            K::WriteR10,
        ),
        (
            "uninitialised stack",
            vec![ldx(DW, 0, 10, -8), exit()],
            K::UninitStack,
        ),
        (
            "half-initialised stack word",
            vec![st(W, 10, -8, 1), ldx(DW, 0, 10, -8), exit()],
            K::UninitStack,
        ),
        (
            "load past the context",
            vec![ldx(W, 0, 1, SIZE - 2), exit()],
            K::OutOfBounds,
        ),
        (
            "load before the context",
            vec![ldx(B, 0, 1, -1), exit()],
            K::OutOfBounds,
        ),
        (
            "store above the stack",
            vec![st(DW, 10, 0, 1), mov_imm(0, 0), exit()],
            K::OutOfBounds,
        ),
        (
            "store below the stack",
            vec![st(B, 10, -513, 1), mov_imm(0, 0), exit()],
            K::OutOfBounds,
        ),
        (
            "unbounded index",
            vec![
                ldx(B, 2, 1, ARGS),
                alu64_imm(LSH, 2, 5),
                alu64_reg(ADD, 2, 1),
                ldx(DW, 0, 2, OUT),
                exit(),
            ],
            K::OutOfBounds,
        ),
        (
            // The bound admits i == 1088: one past the last byte of out.
            "off-by-one bound",
            vec![
                ldx(W, 2, 1, ARGS),
                jmp_imm(JGT, 2, 1088, 3),
                alu64_reg(ADD, 2, 1),
                st(B, 2, OUT, 1),
                mov_imm(0, 0),
                mov_imm(0, 0),
                exit(),
            ],
            K::OutOfBounds,
        ),
        (
            // A 32-bit test says nothing about a 64-bit value's high half.
            "32-bit check of a 64-bit index",
            vec![
                ldx(B, 2, 1, ARGS),
                alu64_imm(LSH, 2, 32),
                ldx(B, 3, 1, ARGS + 1),
                alu64_reg(OR, 2, 3),
                jmp32_imm(JGT, 2, 15, 2),
                alu64_reg(ADD, 2, 1),
                ldx(B, 0, 2, ARGS),
                mov_imm(0, 0),
                exit(),
            ],
            K::OutOfBounds,
        ),
        (
            "store to step (read-only)",
            vec![st(W, 1, 4, 1), mov_imm(0, 0), exit()],
            K::ReadOnlyCtx,
        ),
        (
            "store to args (read-only)",
            vec![st(B, 1, ARGS, 1), mov_imm(0, 0), exit()],
            K::ReadOnlyCtx,
        ),
        // A pointer on a stride (ctx + {0, 2048}) moved by a constant lands at the constant
        // modulo the stride: the verifier dropped the constant's remainder and checked the
        // store at 2048 (writable data) while it lands on `step` (probe 7: a tenant planted
        // bytes in read-only fields and outside its store footprint, where the next message,
        // another tenant's, read them).
        (
            "store through a strided pointer moved by a constant, to step (read-only)",
            vec![
                ldx(W, 2, 1, ARGS),
                alu64_imm(AND, 2, 1),
                alu64_imm(LSH, 2, 11),
                mov_reg(3, 1),
                alu64_reg(ADD, 3, 2),
                alu64_imm(ADD, 3, ctx::STEP as i32),
                st(W, 3, 0, 7),
                mov_imm(0, 0),
                exit(),
            ],
            K::ReadOnlyCtx,
        ),
        (
            "store through a strided pointer moved back by a constant, to args (read-only)",
            vec![
                ldx(W, 2, 1, ARGS),
                alu64_imm(AND, 2, 1),
                alu64_imm(LSH, 2, 11),
                mov_reg(3, 1),
                alu64_imm(ADD, 3, 2048 + ARGS as i32 + 8),
                alu64_reg(ADD, 3, 2),
                // Lands at args + 16 or 2048 later.
                alu64_imm(SUB, 3, 2040),
                st(DW, 3, 0, 7),
                mov_imm(0, 0),
                exit(),
            ],
            K::ReadOnlyCtx,
        ),
        (
            "store straddling an op's result",
            vec![st(DW, 1, (ctx::OPS + 36) as i16, 1), mov_imm(0, 0), exit()],
            K::ReadOnlyCtx,
        ),
        (
            "scalar dereference",
            vec![mov_imm(2, 4096), ldx(B, 0, 2, 0), exit()],
            K::ScalarDeref,
        ),
        (
            "lddw dereference",
            vec![l0, l1, ldx(B, 0, 2, 0), exit()],
            K::ScalarDeref,
        ),
        (
            "pointer multiply",
            vec![mov_reg(2, 1), alu64_imm(MUL, 2, 2), mov_imm(0, 0), exit()],
            K::PointerArithmetic,
        ),
        (
            "pointer 32-bit add",
            vec![mov_reg(2, 1), alu32_imm(ADD, 2, 2), mov_imm(0, 0), exit()],
            K::PointerArithmetic,
        ),
        (
            "pointer 32-bit move",
            vec![alu32_reg(MOV, 2, 1), mov_imm(0, 0), exit()],
            K::PointerArithmetic,
        ),
        (
            "pointer plus pointer",
            vec![mov_reg(2, 1), alu64_reg(ADD, 2, 10), mov_imm(0, 0), exit()],
            K::PointerArithmetic,
        ),
        (
            "stack minus context",
            vec![mov_reg(0, 10), alu64_reg(SUB, 0, 1), exit()],
            K::PointerArithmetic,
        ),
        (
            "pointer masking",
            vec![mov_reg(2, 10), alu64_imm(AND, 2, -8), mov_imm(0, 0), exit()],
            K::PointerArithmetic,
        ),
        (
            "pointer moved by an unbounded scalar",
            vec![
                ldx(DW, 2, 1, ARGS),
                alu64_reg(ADD, 2, 1),
                mov_imm(0, 0),
                exit(),
            ],
            K::PointerArithmetic,
        ),
        (
            "bound checked on a copy, the original moved after the copy",
            vec![
                ldx(DW, 2, 1, ARGS),
                mov_reg(3, 2),
                alu64_imm(ADD, 2, 1 << 20),
                mov_imm(0, 0),
                jmp_imm(JGT, 3, 100, 2),
                alu64_reg(ADD, 1, 2),
                ldx(B, 0, 1, ARGS),
                exit(),
            ],
            K::PointerArithmetic,
        ),
        (
            "bound checked on a 32-bit copy (not the same 64-bit value)",
            vec![
                ldx(DW, 2, 1, ARGS),
                alu32_reg(MOV, 3, 2),
                mov_imm(0, 0),
                jmp_imm(JGT, 3, 100, 2),
                alu64_reg(ADD, 1, 2),
                ldx(B, 0, 1, ARGS),
                exit(),
            ],
            K::PointerArithmetic,
        ),
        (
            "bound checked on a register copied on one path only",
            vec![
                ldx(DW, 2, 1, ARGS),
                ldx(DW, 3, 1, ARGS + 8),
                mov_imm(0, 0),
                jmp_imm(JGT, 2, 7, 1),
                mov_reg(3, 2),
                // r3 is r2's copy on one path, another value on the other.
                jmp_imm(JGT, 3, 100, 2),
                alu64_reg(ADD, 1, 2),
                ldx(B, 0, 1, ARGS),
                exit(),
            ],
            K::PointerArithmetic,
        ),
        (
            "bound checked on a copy overwritten by a helper call",
            vec![
                mov_reg(7, 1),
                ldx(DW, 6, 7, ARGS),
                mov_reg(0, 6),
                mov_imm(1, 0),
                mov_imm(2, 0),
                call(1),
                // r0 is the helper's result now, no copy of r6.
                jmp_imm(JGT, 0, 100, 2),
                alu64_reg(ADD, 7, 6),
                ldx(B, 0, 7, ARGS),
                exit(),
            ],
            K::PointerArithmetic,
        ),
        (
            "pointer compared with a constant",
            vec![mov_imm(0, 0), jmp_imm(JGT, 1, 4096, 0), exit()],
            K::PointerCompare,
        ),
        (
            "context compared with stack",
            vec![mov_imm(0, 0), jmp_reg(JGT, 1, 10, 0), exit()],
            K::PointerCompare,
        ),
        (
            "jset between two pointers into one region (tests address bits)",
            vec![mov_reg(2, 1), mov_imm(0, 0), jmp_reg(JSET, 1, 2, 0), exit()],
            K::PointerCompare,
        ),
        (
            "pointer stored into the context",
            vec![stx(DW, 1, 1, STATE), mov_imm(0, 0), exit()],
            K::PointerLeak,
        ),
        (
            "stack pointer stored into the context",
            vec![stx(DW, 1, 10, OUT), mov_imm(0, 0), exit()],
            K::PointerLeak,
        ),
        (
            "partial pointer spill",
            vec![stx(W, 10, 1, -8), mov_imm(0, 0), exit()],
            K::PointerLeak,
        ),
        (
            "half of a spilled pointer read back",
            vec![stx(DW, 10, 1, -8), ldx(W, 0, 10, -8), exit()],
            K::PointerLeak,
        ),
        (
            "context pointer returned",
            vec![mov_reg(0, 1), exit()],
            K::ReturnPointer,
        ),
        (
            "stack pointer returned",
            vec![mov_reg(0, 10), alu64_imm(ADD, 0, -16), exit()],
            K::ReturnPointer,
        ),
        (
            "unknown helper",
            vec![mov_imm(1, 0), call(99), exit()],
            K::UnknownHelper,
        ),
        (
            "pointer helper argument",
            vec![mov_imm(2, 0), call(1), exit()],
            K::HelperArg,
        ),
        (
            "uninitialised helper argument",
            vec![mov_imm(1, 0), call(1), exit()],
            K::HelperArg,
        ),
        (
            "context pointer used after a call clobbered r1",
            vec![
                mov_imm(1, 0),
                mov_imm(2, 0),
                call(1),
                ldx(B, 0, 1, 0),
                exit(),
            ],
            K::UninitRegister,
        ),
        (
            "le16 (engines disagree)",
            vec![ldx(DW, 0, 1, ARGS), raw(0xd4, 0, 0, 0, 16), exit()],
            K::EngineMismatch,
        ),
        (
            "le32 (engines disagree)",
            vec![ldx(DW, 0, 1, ARGS), raw(0xd4, 0, 0, 0, 32), exit()],
            K::EngineMismatch,
        ),
        (
            // `if r2 > -1` holds for no value under the JIT (sign-extended: u64::MAX) and for
            // values above 0xffffffff under the interpreter: neither bounds r2 to 32 bits.
            "negative-immediate compare used as a bound",
            vec![
                ldx(DW, 2, 1, ARGS),
                jmp_imm(JGT, 2, -1, 2),
                alu64_reg(ADD, 2, 1),
                ldx(B, 0, 2, ARGS),
                mov_imm(0, 0),
                exit(),
            ],
            K::PointerArithmetic,
        ),
    ]
}

#[test]
fn unsafe_bytecode_is_rejected_for_its_reason() {
    let cases = unsafe_bytecode();
    for (name, insns, kind) in &cases {
        expect_reject(
            name,
            &program(name, insns),
            &VerifierConfig::default(),
            *kind,
        );
    }
    assert!(cases.len() >= 30);
}

#[test]
fn size_and_path_limits() {
    let cfg = VerifierConfig::default();
    let mut long = vec![mov_imm(0, 0); cfg.max_insns];
    long.push(exit());
    expect_reject(
        "too many instructions",
        &program("long", &long),
        &cfg,
        K::TooLarge,
    );
    let small = VerifierConfig {
        max_path_insns: 10,
        ..cfg
    };
    let mut path = vec![mov_imm(0, 0); 10];
    path.push(exit());
    expect_reject(
        "path over budget",
        &program("path", &path),
        &small,
        K::PathBudget,
    );
    path.remove(0);
    let ok = verify(&program("path", &path), &small).expect("10 instructions fit a budget of 10");
    assert_eq!(ok.worst_case_insns(), 10);
    expect_reject(
        "empty",
        &Program::from_insns("empty", vec![]),
        &cfg,
        K::Malformed,
    );
    expect_reject(
        "7 bytes",
        &Program::from_insns("short", vec![0x95; 7]),
        &cfg,
        K::Malformed,
    );
}

#[test]
fn unsafe_c_programs_are_rejected_for_their_reason_at_their_c_line() {
    // The corpus is compiled with -g: each rejection names the C line of the instruction,
    // the line that holds `at` in the source.
    let cases = [
        ("oob_args_index", K::OutOfBounds, "&ctx->args[i * 32]"),
        ("unbounded_loop", K::BackEdge, "for (naam_u32 i = 0;"),
        ("write_step", K::ReadOnlyCtx, "ctx->step = 7;"),
        ("leak_ctx_ptr", K::PointerLeak, "= (naam_u64)ctx;"),
        (
            "return_ctx_ptr",
            K::ReturnPointer,
            "return (naam_u64)&ctx->out[0];",
        ),
        (
            "uninit_stack",
            K::UninitStack,
            "return buf[ctx->args[0] & 3];",
        ),
        ("bpf_call", K::BpfCall, "return twice(ctx->args[0]);"),
        ("unknown_helper", K::UnknownHelper, "return not_a_helper("),
        ("oob_stack_index", K::OutOfBounds, "buf[i] = 1;"),
        ("off_by_one_out", K::OutOfBounds, "ctx->out[i] = 1;"),
        (
            "helper_ptr_arg",
            K::HelperArg,
            "naam_hash64((naam_u64)ctx, 1)",
        ),
        (
            "atomic_add",
            K::Atomic,
            "__sync_fetch_and_add(&ctx->scratch, 1);",
        ),
        (
            "variable_op_result_store",
            K::ReadOnlyCtx,
            "ctx->ops[i].result = 7;",
        ),
    ];
    for (name, kind, at) in cases {
        let file = format!("verifier/{name}.bpf.o");
        let p = c_program(&file);
        expect_reject(&file, &p, &VerifierConfig::default(), kind);
        let e = verify(&p, &VerifierConfig::default()).unwrap_err();
        let src_path = format!(
            "{}/../handlers/test/verifier/{name}.bpf.c",
            env!("CARGO_MANIFEST_DIR")
        );
        let src = std::fs::read_to_string(&src_path).unwrap();
        let want = src
            .lines()
            .position(|l| l.contains(at))
            .unwrap_or_else(|| panic!("{src_path} has no line with {at:?}"))
            + 1;
        let line = e
            .line
            .clone()
            .unwrap_or_else(|| panic!("{file}: no source line in {e}"));
        assert_eq!(line.line as usize, want, "{file}: {line}");
        assert!(line.file.ends_with(&format!("{name}.bpf.c")), "{line}");
        assert!(line.text.contains(at), "{line}");
    }
    // Without line information (no -g), the same rejection simply has none.
    let bare = Program::from_insns("bare", c_program("verifier/write_step.bpf.o").insns);
    let e = verify(&bare, &VerifierConfig::default()).unwrap_err();
    assert_eq!((e.kind, e.line), (K::ReadOnlyCtx, None));
}

/// Hand-written safe programs.
fn safe_bytecode() -> Vec<(&'static str, Vec<I>)> {
    vec![
        (
            "masked index",
            vec![
                ldx(B, 2, 1, ARGS),
                alu64_imm(AND, 2, 15),
                mov_reg(3, 1),
                alu64_reg(ADD, 3, 2),
                ldx(B, 0, 3, ARGS + 1),
                stx(B, 3, 0, STATE),
                exit(),
            ],
        ),
        (
            "checked index",
            vec![
                mov_imm(0, 0),
                ldx(W, 2, 1, ARGS),
                jmp_imm(JGE, 2, 1088, 4),
                mov_reg(3, 1),
                alu64_reg(ADD, 3, 2),
                st(B, 3, OUT, 7),
                mov_imm(0, 1),
                exit(),
            ],
        ),
        (
            "bound checked on a copy bounds the original (linked scalars)",
            vec![
                ldx(DW, 2, 1, ARGS),
                mov_reg(3, 2),
                mov_imm(0, 0),
                jmp_imm(JGT, 3, 100, 2),
                alu64_reg(ADD, 1, 2),
                ldx(B, 0, 1, ARGS),
                exit(),
            ],
        ),
        (
            "bound checked on a copy of a copy, both ends",
            vec![
                ldx(DW, 2, 1, ARGS),
                mov_reg(3, 2),
                mov_reg(4, 3),
                mov_imm(0, 0),
                jmp_imm(JGE, 4, 64, 5),
                jmp_imm(JLT, 3, 8, 4),
                mov_reg(5, 1),
                alu64_reg(ADD, 5, 2),
                alu64_imm(ADD, 5, -8),
                ldx(DW, 0, 5, ARGS),
                exit(),
            ],
        ),
        (
            "pointer spilled and filled",
            vec![
                stx(DW, 10, 1, -8),
                mov_imm(1, 0),
                ldx(DW, 1, 10, -8),
                ldx(W, 0, 1, 8),
                stx(W, 1, 0, OUT),
                exit(),
            ],
        ),
        (
            "bounded scalar spilled and filled",
            vec![
                ldx(B, 2, 1, ARGS),
                alu64_imm(AND, 2, 7),
                stx(DW, 10, 2, -16),
                mov_imm(2, 0),
                ldx(DW, 3, 10, -16),
                alu64_imm(LSH, 3, 3),
                alu64_reg(ADD, 3, 1),
                ldx(DW, 0, 3, STATE),
                exit(),
            ],
        ),
        (
            "helper call",
            vec![
                mov_reg(6, 1),
                ldx(DW, 1, 6, ARGS),
                mov_imm(2, 5),
                call(1),
                stx(DW, 6, 0, OUT),
                alu64_imm(AND, 0, 0xff),
                exit(),
            ],
        ),
        (
            "32-bit shift bound",
            vec![
                ldx(W, 2, 1, ARGS),
                alu32_imm(RSH, 2, 24),
                alu64_reg(ADD, 2, 1),
                ldx(B, 0, 2, ARGS),
                alu32_imm(MUL, 0, 77),
                exit(),
            ],
        ),
        (
            "64-bit shift and multiply bound",
            vec![
                ldx(DW, 2, 1, ARGS),
                alu64_imm(RSH, 2, 56),
                alu64_imm(MUL, 2, 4),
                alu64_reg(ADD, 2, 1),
                ldx(W, 0, 2, ARGS),
                exit(),
            ],
        ),
        (
            "stack buffer with variable index",
            vec![
                st(DW, 10, -16, 0x0102_0304),
                st(DW, 10, -8, -1),
                ldx(B, 2, 1, ARGS),
                alu64_imm(AND, 2, 15),
                mov_reg(3, 10),
                alu64_imm(ADD, 3, -16),
                alu64_reg(ADD, 3, 2),
                ldx(B, 0, 3, 0),
                stx(B, 3, 0, 0),
                ldx(DW, 4, 10, -8),
                alu64_reg(XOR, 0, 4),
                exit(),
            ],
        ),
        (
            "signed checks on both sides",
            vec![
                mov_imm(0, 2),
                ldx(W, 2, 1, ARGS),
                alu64_imm(LSH, 2, 32),
                alu64_imm(ARSH, 2, 32),
                jmp_imm(JSGT, 2, 1000, 5),
                jmp_imm(JSLT, 2, 0, 4),
                alu64_reg(ADD, 2, 1),
                ldx(H, 0, 2, OUT),
                stx(H, 2, 0, OUT + 2),
                mov_imm(0, 0),
                exit(),
            ],
        ),
        (
            "pointer distance and 32-bit signed compare",
            vec![
                mov_reg(2, 1),
                alu64_imm(ADD, 2, 100),
                mov_reg(0, 2),
                alu64_reg(SUB, 0, 1),
                ldx(W, 3, 1, ARGS),
                jmp32_imm(JSLT, 3, 0, 3),
                jmp32_imm(JSGE, 3, 64, 2),
                alu64_reg(ADD, 3, 1),
                ldx(B, 0, 3, ARGS),
                exit(),
            ],
        ),
        (
            // rbpf's x86 JIT compiles `w2 = w5` as a 64-bit move; the verifier expands it (found
            // by the verifier_diff fuzz target).
            "mov32 of a 64-bit value",
            vec![
                ldx(DW, 5, 1, ARGS),
                alu32_reg(MOV, 2, 5),
                stx(DW, 1, 2, STATE),
                alu32_reg(MOV, 5, 5),
                stx(DW, 1, 5, STATE + 8),
                mov_reg(0, 2),
                exit(),
            ],
        ),
        (
            // rbpf's interpreter computes `neg` as `-(x as i64)`, which panics on i64::MIN under
            // overflow checks; the verifier rewrites it to `*= -1` (found by fuzzing).
            "neg of i64::MIN",
            {
                let [a, b] = lddw(2, 1 << 63);
                vec![
                    a,
                    b,
                    raw(0x87, 2, 0, 0, 0),
                    ldx(DW, 3, 1, ARGS),
                    raw(0x87, 3, 0, 0, 0),
                    alu64_reg(XOR, 2, 3),
                    mov_reg(0, 2),
                    exit(),
                ]
            },
        ),
        ("lddw, byte swaps, division and modulo", {
            let [a, b] = lddw(4, 0x0102_0304_0506_0708);
            vec![
                a,
                b,
                ldx(DW, 2, 1, ARGS),
                raw(0xdc, 2, 0, 0, 16),
                ldx(B, 3, 1, ARGS + 8),
                alu64_reg(DIV, 4, 3),
                alu64_imm(OR, 3, 1),
                alu64_reg(MOD, 2, 3),
                alu32_reg(MOD, 4, 3),
                alu64_reg(ADD, 2, 1),
                ldx(B, 0, 2, STATE),
                alu64_reg(ADD, 0, 4),
                raw(0xdc, 0, 0, 0, 64),
                exit(),
            ]
        }),
    ]
}

fn check_engines_agree(name: &str, p: &Program, runs: usize) {
    let v = Arc::new(
        verify(p, &VerifierConfig::default()).unwrap_or_else(|e| panic!("{name}: rejected: {e}")),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    // Compiled once: compiling is the slow part under qemu (the aarch64 run).
    let Some((jit_vm, interp_vm)) = engines(&v) else {
        return;
    };
    for run in 0..runs {
        let c = random_ctx(&mut rng);
        let (jit, interp) = (run_one(&jit_vm, &c), run_one(&interp_vm, &c));
        assert_eq!(jit.0, interp.0, "{name}: r0 differs on run {run}");
        assert!(
            jit.1 == interp.1,
            "{name}: context bytes differ on run {run}"
        );
    }
}

#[test]
fn safe_bytecode_is_accepted_and_engines_agree() {
    let cases = safe_bytecode();
    for (name, insns) in &cases {
        check_engines_agree(name, &program(name, insns), 200);
    }
    assert!(cases.len() >= 10);
}

#[test]
fn safe_c_programs_are_accepted_and_engines_agree() {
    for file in [
        "three_step.bpf.o",
        "verifier/safe_masked_index.bpf.o",
        "verifier/safe_unrolled_sum.bpf.o",
        "verifier/safe_signed_window.bpf.o",
        "verifier/safe_variable_op_index.bpf.o",
    ] {
        check_engines_agree(file, &c_program(file), 200);
    }
}

/// The JIT code-size estimate is an upper bound: for each instruction shape, the longest run
/// the verifier accepts (other limits lifted) compiles under rbpf's x86 JIT without overflowing
/// its buffer.
#[test]
fn every_accepted_size_fits_the_jit_buffer() {
    use naam_core::vm::{CompiledVm, Engine};
    if Engine::native() != Engine::Jit {
        println!("skipped: the x86 JIT is not available here");
        return;
    }
    // r0, r2..r6, r8, r9 hold constants; r7 is a context pointer.
    let mut prologue = vec![mov_imm(0, 1)];
    for r in [2, 3, 4, 5, 6, 8, 9] {
        prologue.push(mov_imm(r, 3 + r as i32));
    }
    prologue.push(mov_reg(7, 1));
    let [l0, l1] = lddw(9, 0x1234_5678_9abc_def0);
    let shapes: Vec<(&str, Vec<I>)> = vec![
        ("div64 reg", vec![alu64_reg(DIV, 9, 8)]),
        ("mod32 reg", vec![alu32_reg(MOD, 9, 3)]),
        ("div64 reg into r0", vec![alu64_reg(DIV, 0, 8)]),
        ("mul64 reg", vec![alu64_reg(MUL, 9, 8)]),
        ("mod64 imm", vec![alu64_imm(MOD, 9, 7)]),
        ("mul32 imm", vec![alu32_imm(MUL, 9, 100_000)]),
        ("lddw", vec![l0, l1]),
        ("st dw stack", vec![st(DW, 10, -8, 100_000)]),
        ("st h ctx via r7", vec![st(H, 7, STATE + 200, 1000)]),
        ("stx dw ctx via r7", vec![stx(DW, 7, 9, STATE)]),
        ("stx h ctx", vec![stx(H, 1, 9, STATE)]),
        ("ldx dw via r7", vec![ldx(DW, 9, 7, 300)]),
        ("ldx dw stack", vec![st(DW, 10, -8, 1), ldx(DW, 9, 10, -8)]),
        ("helper call", vec![mov_reg(1, 6), mov_reg(2, 8), call(1)]),
        ("jeq imm", vec![jmp_imm(JEQ, 9, 100_000, 0)]),
        ("jsgt32 imm", vec![jmp32_imm(JSGT, 9, -100_000, 0)]),
        ("jeq reg", vec![jmp_reg(JEQ, 9, 8, 0)]),
        ("ja", vec![ja(0)]),
        ("be16", vec![raw(0xdc, 9, 0, 0, 16)]),
        ("lsh64 reg", vec![alu64_reg(LSH, 9, 8)]),
        ("add64 imm", vec![alu64_imm(ADD, 9, 100_000)]),
        ("mov64 reg", vec![mov_reg(9, 8)]),
        ("mov32 reg (expanded)", vec![alu32_reg(MOV, 9, 8)]),
        ("neg64", vec![raw(0x87, 9, 0, 0, 0)]),
    ];
    let cfg = VerifierConfig {
        max_insns: 1 << 20,
        max_path_insns: 1 << 20,
        ..VerifierConfig::default()
    };
    let build = |body: &[I], reps: usize| {
        let mut p = prologue.clone();
        for _ in 0..reps {
            p.extend_from_slice(body);
        }
        p.push(exit());
        program("size", &p)
    };
    for (name, body) in shapes {
        // The largest number of repetitions the verifier accepts.
        let (mut lo, mut hi) = (0usize, 4096usize);
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            match verify(&build(&body, mid), &cfg) {
                Ok(_) => lo = mid,
                Err(e) if e.kind == K::TooLarge => hi = mid,
                Err(e) => panic!("{name}: {e}"),
            }
        }
        let v = Arc::new(verify(&build(&body, lo), &cfg).expect("accepted"));
        let n = v.insn_count();
        CompiledVm::new(v, Engine::Jit)
            .unwrap_or_else(|e| panic!("{name}: {n} accepted instructions do not compile: {e}"));
        println!("{name}: {lo} repetitions ({n} instructions) accepted and compiled");
    }
}

/// Whether a program may ask for an op other than a READ: what `--read-only` needs proven.
#[test]
fn the_ops_a_program_may_ask_for_are_known() {
    use naam_core::abi::{op, OpKind, OP_SIZE};
    let kind = |i: usize| (ctx::OPS + i * OP_SIZE + op::KIND) as i16;
    let cases: Vec<(&str, Vec<I>, Option<usize>)> = vec![
        (
            "a READ and no op",
            vec![
                st(B, 1, kind(0), OpKind::Read as i32),
                st(B, 1, kind(1), 0),
                mov_imm(0, 0),
                exit(),
            ],
            None,
        ),
        (
            "a CAS in the third op",
            vec![
                st(B, 1, kind(0), OpKind::Read as i32),
                st(B, 1, kind(2), OpKind::Cas as i32),
                mov_imm(0, 0),
                exit(),
            ],
            Some(1),
        ),
        (
            "kind, flags and region of a READ in one 8-byte store",
            vec![
                mov_imm(2, 7),
                alu64_imm(LSH, 2, 32),
                alu64_imm(OR, 2, OpKind::Read as i32),
                stx(DW, 1, 2, kind(3)),
                mov_imm(0, 0),
                exit(),
            ],
            None,
        ),
        (
            "a WRITE in the low byte of a 4-byte store",
            vec![
                mov_imm(2, 0x0300 | OpKind::Write as i32),
                stx(W, 1, 2, kind(1)),
                mov_imm(0, 0),
                exit(),
            ],
            Some(1),
        ),
        (
            "a kind taken from the arguments",
            vec![
                ldx(B, 2, 1, ARGS),
                stx(B, 1, 2, kind(0)),
                mov_imm(0, 0),
                exit(),
            ],
            Some(1),
        ),
        (
            "a kind from the arguments, but only ever 0 or 1",
            vec![
                ldx(B, 2, 1, ARGS),
                alu64_imm(AND, 2, 1),
                stx(B, 1, 2, kind(0)),
                mov_imm(0, 0),
                exit(),
            ],
            None,
        ),
        (
            "a READ stored at one of several offsets that include an op's kind",
            vec![
                ldx(B, 2, 1, ARGS),
                alu64_imm(AND, 2, 7),
                alu64_reg(ADD, 2, 1),
                st(B, 2, kind(0) - 4, OpKind::Read as i32),
                mov_imm(0, 0),
                exit(),
            ],
            Some(3),
        ),
        (
            "other words of an op, whatever their value",
            vec![
                ldx(DW, 2, 1, ARGS),
                stx(DW, 1, 2, kind(0) + op::OFFSET as i16),
                stx(W, 1, 2, kind(0) + op::REGION as i16),
                mov_imm(0, 0),
                exit(),
            ],
            None,
        ),
    ];
    for (name, insns, first) in cases {
        let v = verify(&program(name, &insns), &VerifierConfig::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.first_mutating_op(), first, "{name}");
    }
    // The C test program with a CAS in its second step.
    let v = verify(&c_program("three_step.bpf.o"), &VerifierConfig::default()).unwrap();
    assert!(v.first_mutating_op().is_some());
}
