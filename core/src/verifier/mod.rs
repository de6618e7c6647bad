//! The static verifier: every program passes here before any engine compiles it.
//!
//! rbpf's JIT checks nothing at run time, so a program this module accepts must be unable to
//! touch memory outside its context and its stack, to loop, to leak an address, or to
//! overflow the JIT's code buffer. The proof has two parts:
//!
//! 1. [`cfg`]: structure. Only the eBPF subset rbpf 0.4.1 implements the same way in its
//!    interpreter and its x86 JIT: ALU/ALU64, `be16/32/64` and `le64`, LDX/ST/STX of
//!    b/h/w/dw, `lddw` of a constant, JMP and JMP32 comparisons, helper calls, `exit`.
//!    Rejected: atomics (rbpf has none), legacy packet loads, map/pseudo `lddw`, `le16/32`
//!    (the interpreter truncates, the JIT does not), eBPF v4 encodings, `r10` as the first
//!    operand of a comparison and calls to unlisted helpers even in dead code (rbpf refuses
//!    to load both), and **bpf-to-bpf calls**: rbpf's cranelift engine (the one we use on
//!    aarch64) cannot run them, so handlers inline their functions.
//!    Jumps stay in the program and never land inside an `lddw`; no path falls off the end.
//!    **No back-edges**: loops must be unrolled (`NAAM_UNROLL`), so every program is a DAG,
//!    which bounds its run time by its longest path (checked against a budget) and lets the
//!    value analysis run in one pass. The program's size is bounded twice: by a number of
//!    instructions and by an upper estimate of the x86 JIT's machine code, whose one-page
//!    buffer overflows (rbpf panics) after as few as 96 register divisions.
//! 2. [`check`]: values, by abstract interpretation over [`state`] (register types and a
//!    per-slot stack) with intervals and known bits ([`scalar`]), refined on branches, a
//!    bound learnt on one register also bounding the registers a 64-bit move copied it to or
//!    from and that were not written since (linked scalars, as Linux's scalar ids, so
//!    `r3 = r2; if r3 > 100 goto out; r1 += r2` passes; `State::links`). It
//!    proves: no uninitialised register or stack byte is read; `r10` is never written; every
//!    load and store lies inside the context (`abi::CTX_SIZE`; stores only inside
//!    `abi::writable_ranges`) or the 512-byte stack; pointers change only by adding or
//!    subtracting scalars, are compared only with pointers into the same region, are never
//!    stored outside the stack nor partially; `r0` is a scalar at `exit`; helpers are
//!    whitelisted (`helpers::HELPERS`) and get scalar arguments.
//!
//! Two rewrites happen first ([`rewrite`]): rbpf's x86 JIT miscompiles `wD = wS` (it keeps
//! the upper half), so such moves are expanded into `rD = rS; wD += 0`, and its interpreter
//! panics on `neg` of `i64::MIN` under overflow checks, so `neg` becomes `*= -1`. Every engine
//! runs the rewritten code the same way; the proof is about it, and it is what gets compiled.
//!
//! One disagreement between rbpf's engines is accepted: a 64-bit unsigned or equality
//! comparison with a negative immediate (`if r1 == -1`, which clang emits) zero-extends the
//! immediate in the interpreter and sign-extends it in the JIT (the Linux meaning). Branch
//! refinement there holds for both readings, so safety holds under either engine, but the
//! two may take different branches; the differential tests skip such programs' results.
//!
//! This is our own code: the `prevail` verifier is C++ only and its context model (packet
//! data with `data`/`data_end`) does not fit ours, so it was not used.

mod cfg;
mod check;
mod refine;
mod rewrite;
mod scalar;
mod state;

use crate::abi::CtxWords;
use crate::elf::{Program, INSN_SIZE};

/// Limits the verifier enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Largest program, in instruction slots (an `lddw` takes two).
    pub max_insns: usize,
    /// Largest upper estimate of the x86 JIT's machine code, in bytes. The JIT's code buffer
    /// (`third_party/rbpf`, patched from rbpf 0.4.1's one page) is two 4 KiB pages; this
    /// leaves a margin below it.
    pub max_jit_bytes: usize,
    /// Largest worst-case number of instructions executed by one step (longest path).
    pub max_path_insns: u64,
}

impl Default for VerifierConfig {
    /// Measured on rbpf 0.4.1's x86 JIT: straight-line code of the cheapest instructions fits
    /// ~1300 to a page, typical compiled handlers ~550–800, register divisions only 96; the
    /// byte estimate is the binding limit, the instruction count a coarse first cut.
    fn default() -> Self {
        Self {
            max_insns: 1024,
            max_jit_bytes: 2 * 4096 - 128,
            max_path_insns: 1024,
        }
    }
}

/// A program the verifier accepted. Only [`verify`] builds one, so holding one is proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProgram {
    name: String,
    insns: Vec<u8>,
    worst_case_insns: u64,
    ctx_writes: CtxWords,
    first_mutating_op: Option<usize>,
}

impl VerifiedProgram {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn insns(&self) -> &[u8] {
        &self.insns
    }

    pub fn insn_count(&self) -> usize {
        self.insns.len() / INSN_SIZE
    }

    /// Instructions on the longest path through one step.
    pub fn worst_case_insns(&self) -> u64 {
        self.worst_case_insns
    }

    /// The context words any store of the program may touch (every reachable store, over the
    /// whole range of offsets the analysis allows it).
    pub fn ctx_writes(&self) -> &CtxWords {
        &self.ctx_writes
    }

    /// The first instruction that may ask for an op other than a READ (set an op's kind to a
    /// WRITE, CAS or FAA, or to a value the analysis does not know), if any. `None` proves
    /// that the program only ever reads: what an offload registered read-only must do.
    pub fn first_mutating_op(&self) -> Option<usize> {
        self.first_mutating_op
    }
}

/// What a rejected program did wrong; tests match on it, people read [`VerifyError::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifyErrorKind {
    /// Not a whole number of instructions, register numbers above r10, non-zero reserved
    /// fields.
    Malformed,
    /// An opcode outside the supported subset.
    UnknownOpcode,
    /// Atomic memory operations (rbpf implements none).
    Atomic,
    /// An incomplete `lddw`, or one loading a map or other pseudo value.
    Lddw,
    JumpOutOfRange,
    JumpIntoLddw,
    /// A path runs past the last instruction.
    FallThrough,
    /// A jump backwards: a loop.
    BackEdge,
    /// A bpf-to-bpf call.
    BpfCall,
    /// Too many instructions or too much machine code for the JIT.
    TooLarge,
    /// The longest path exceeds the budget.
    PathBudget,
    /// An instruction whose result differs between rbpf's interpreter and its JIT.
    EngineMismatch,
    UninitRegister,
    /// A register read where it holds a pointer on some paths and something else on others.
    MixedTypes,
    WriteR10,
    UninitStack,
    /// A load or store that may fall outside its region.
    OutOfBounds,
    /// A store into a read-only part of the context.
    ReadOnlyCtx,
    /// A load or store through a register that holds a scalar.
    ScalarDeref,
    /// An operation on a pointer other than ± scalar (or a pointer distance).
    PointerArithmetic,
    /// A comparison of a pointer with a scalar or a pointer into another region.
    PointerCompare,
    /// A pointer stored into the context, or split into bytes on the stack.
    PointerLeak,
    /// A pointer in `r0` at `exit`.
    ReturnPointer,
    UnknownHelper,
    /// A helper argument that is not a scalar.
    HelperArg,
}

/// Why a program was rejected: the instruction, the kind, a reason a person understands, and
/// the C source line of the instruction when the object carried line information
/// (`clang -g`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instruction {insn}{}: {reason}", line_suffix(.line))]
pub struct VerifyError {
    pub insn: usize,
    pub kind: VerifyErrorKind,
    pub reason: String,
    pub line: Option<crate::btf::SourceLine>,
}

fn line_suffix(line: &Option<crate::btf::SourceLine>) -> String {
    line.as_ref()
        .map_or_else(String::new, |s| format!(" ({s})"))
}

use VerifyErrorKind as Kind;

fn fail<T>(insn: usize, kind: Kind, reason: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError {
        insn,
        kind,
        reason: reason.into(),
        line: None,
    })
}

/// Verifies `program` under `cfg`. The accepted program may differ from the input by the
/// rewrites of [`rewrite`]; errors name the original instructions.
pub fn verify(program: &Program, cfg: &VerifierConfig) -> Result<VerifiedProgram, VerifyError> {
    let expanded = if program.insns.len() % INSN_SIZE == 0 {
        rewrite::normalize(&program.insns)
    } else {
        None
    };
    let (bytes, origin) = match &expanded {
        Some(e) => (&e.bytes, Some(&e.origin)),
        None => (&program.insns, None),
    };
    let with_source = |mut e: VerifyError| {
        e.line = program.source_line(e.insn).cloned();
        e
    };
    if expanded.is_some() {
        // Structure errors (jump targets, loops) are reported against the original program.
        cfg::build(&program.insns, cfg).map_err(with_source)?;
    }
    let result = cfg::build(bytes, cfg).and_then(|structure| {
        let stores = check::analyze(&structure)?;
        Ok((structure.worst_case, stores))
    });
    match result {
        Ok((worst_case_insns, stores)) => Ok(VerifiedProgram {
            name: program.name.clone(),
            insns: bytes.clone(),
            worst_case_insns,
            ctx_writes: stores.words,
            // Named as the instruction of the program given, as errors are.
            first_mutating_op: stores
                .first_mutating_op
                .map(|i| origin.and_then(|o| o.get(i)).copied().unwrap_or(i)),
        }),
        Err(mut e) => {
            if let Some(&i) = origin.and_then(|o| o.get(e.insn)) {
                e.insn = i;
            }
            Err(with_source(e))
        }
    }
}
