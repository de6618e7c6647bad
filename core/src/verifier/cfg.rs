//! Structure: decoding, the instruction set we accept, jump targets, the DAG, the longest
//! path and the size of the JIT's machine code.
//!
//! Everything here looks at instructions one at a time; nothing depends on register values.

use super::{fail, Kind, VerifierConfig, VerifyError};
use crate::elf::INSN_SIZE;

/// Instruction classes (low three bits of the opcode).
pub mod class {
    pub const LD: u8 = 0x00;
    pub const LDX: u8 = 0x01;
    pub const ST: u8 = 0x02;
    pub const STX: u8 = 0x03;
    pub const ALU: u8 = 0x04;
    pub const JMP: u8 = 0x05;
    pub const JMP32: u8 = 0x06;
    pub const ALU64: u8 = 0x07;
}

/// ALU operations (high four bits).
pub mod alu {
    pub const ADD: u8 = 0x0;
    pub const SUB: u8 = 0x1;
    pub const MUL: u8 = 0x2;
    pub const DIV: u8 = 0x3;
    pub const OR: u8 = 0x4;
    pub const AND: u8 = 0x5;
    pub const LSH: u8 = 0x6;
    pub const RSH: u8 = 0x7;
    pub const NEG: u8 = 0x8;
    pub const MOD: u8 = 0x9;
    pub const XOR: u8 = 0xa;
    pub const MOV: u8 = 0xb;
    pub const ARSH: u8 = 0xc;
    pub const END: u8 = 0xd;
}

/// Jump operations (high four bits).
pub mod jmp {
    pub const JA: u8 = 0x0;
    pub const JEQ: u8 = 0x1;
    pub const JGT: u8 = 0x2;
    pub const JGE: u8 = 0x3;
    pub const JSET: u8 = 0x4;
    pub const JNE: u8 = 0x5;
    pub const JSGT: u8 = 0x6;
    pub const JSGE: u8 = 0x7;
    pub const CALL: u8 = 0x8;
    pub const EXIT: u8 = 0x9;
    pub const JLT: u8 = 0xa;
    pub const JLE: u8 = 0xb;
    pub const JSLT: u8 = 0xc;
    pub const JSLE: u8 = 0xd;
}

/// The source bit: operand is `src` (set) or `imm` (clear).
pub const SRC_REG: u8 = 0x08;
pub const OP_LDDW: u8 = 0x18;
/// `mode | class` of the atomic stores (XADD), which rbpf does not implement.
const MODE_ATOMIC: u8 = 0xc0;
const MODE_MEM: u8 = 0x60;

/// One decoded instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub op: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub fn decode(bytes: &[u8], i: usize) -> Insn {
        let b = &bytes[i * INSN_SIZE..(i + 1) * INSN_SIZE];
        Insn {
            op: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn class(&self) -> u8 {
        self.op & 0x07
    }

    /// The operation (high four bits) of ALU and jump instructions.
    pub fn code(&self) -> u8 {
        self.op >> 4
    }

    pub fn uses_src_reg(&self) -> bool {
        self.op & SRC_REG != 0
    }

    /// Bytes moved by a load or store.
    pub fn mem_size(&self) -> usize {
        match self.op & 0x18 {
            0x00 => 4,
            0x08 => 2,
            0x10 => 1,
            _ => 8,
        }
    }
}

/// The checked structure of a program.
pub struct Cfg {
    pub insns: Vec<Insn>,
    /// The 64-bit constant of each `lddw` (indexed by its first slot).
    pub lddw_value: Vec<u64>,
    /// Second halves of `lddw`, which are not instructions of their own.
    pub is_tail: Vec<bool>,
    /// Instructions executed on the longest path.
    pub worst_case: u64,
}

/// Checks everything that does not depend on values.
pub fn build(bytes: &[u8], cfg: &VerifierConfig) -> Result<Cfg, VerifyError> {
    if bytes.is_empty() || bytes.len() % INSN_SIZE != 0 {
        return fail(
            0,
            Kind::Malformed,
            format!(
                "program is {} bytes, not a non-empty whole number of 8-byte instructions",
                bytes.len()
            ),
        );
    }
    let n = bytes.len() / INSN_SIZE;
    if n > cfg.max_insns {
        return fail(
            n - 1,
            Kind::TooLarge,
            format!(
                "program has {n} instructions, more than the {} the engine can compile",
                cfg.max_insns
            ),
        );
    }
    let insns: Vec<Insn> = (0..n).map(|i| Insn::decode(bytes, i)).collect();
    let mut is_tail = vec![false; n];
    let mut lddw_value = vec![0u64; n];
    let mut i = 0;
    while i < n {
        if insns[i].op == OP_LDDW {
            let Some(t) = insns.get(i + 1) else {
                return fail(i, Kind::Lddw, "lddw is missing its second half");
            };
            if t.op != 0 || t.dst != 0 || t.src != 0 || t.off != 0 {
                return fail(
                    i,
                    Kind::Lddw,
                    "the second half of lddw must be all zero except its immediate",
                );
            }
            lddw_value[i] = (insns[i].imm as u32 as u64) | ((t.imm as u32 as u64) << 32);
            is_tail[i + 1] = true;
            i += 2;
        } else {
            i += 1;
        }
    }

    // With no back-edges every successor has a larger index, so one backward pass computes the
    // longest path and one sum the JIT's code size.
    let mut longest = vec![0u64; n + 1];
    let mut jit_bytes = JIT_FIXED_BYTES;
    for i in (0..n).rev() {
        if is_tail[i] {
            continue;
        }
        let insn = insns[i];
        check_encoding(i, &insn)?;
        jit_bytes += jit_size(&insn);
        let next = |len: usize| -> Result<u64, VerifyError> {
            if i + len >= n {
                return fail(
                    i,
                    Kind::FallThrough,
                    "execution can fall off the end of the program (it must end in exit)",
                );
            }
            Ok(longest[i + len])
        };
        let target = || -> Result<usize, VerifyError> {
            let t = i as i64 + 1 + insn.off as i64;
            if t < 0 || t >= n as i64 {
                return fail(
                    i,
                    Kind::JumpOutOfRange,
                    format!("jump to {t} is outside the program (0..{n})"),
                );
            }
            let t = t as usize;
            if t <= i {
                return fail(
                    i,
                    Kind::BackEdge,
                    format!(
                        "jump back to {t}: loops are not allowed (unroll them with NAAM_UNROLL)"
                    ),
                );
            }
            if is_tail[t] {
                return fail(
                    i,
                    Kind::JumpIntoLddw,
                    format!("jump to {t} lands in the middle of an lddw"),
                );
            }
            Ok(t)
        };
        let rest = match (insn.class(), insn.code()) {
            (class::LD, _) => next(2)?,
            (class::JMP, jmp::EXIT) => 0,
            (class::JMP, jmp::CALL) => next(1)?,
            (class::JMP, jmp::JA) => longest[target()?],
            (class::JMP | class::JMP32, _) => {
                let t = target()?;
                longest[t].max(next(1)?)
            }
            _ => next(1)?,
        };
        longest[i] = rest + 1;
    }
    if jit_bytes > cfg.max_jit_bytes {
        return fail(
            n - 1,
            Kind::TooLarge,
            format!(
                "program may need up to {jit_bytes} bytes of machine code, more than the {} the JIT's code buffer holds",
                cfg.max_jit_bytes
            ),
        );
    }
    let worst_case = longest[0];
    if worst_case > cfg.max_path_insns {
        return fail(
            0,
            Kind::PathBudget,
            format!(
                "the longest path runs {worst_case} instructions, over the budget of {}",
                cfg.max_path_insns
            ),
        );
    }
    Ok(Cfg {
        insns,
        lddw_value,
        is_tail,
        worst_case,
    })
}

/// Accepts exactly the subset of eBPF that rbpf 0.4.1's interpreter and x86 JIT implement
/// identically; unused fields must be zero so no engine can read meaning into them.
fn check_encoding(i: usize, insn: &Insn) -> Result<(), VerifyError> {
    let unknown = || {
        fail(
            i,
            Kind::UnknownOpcode,
            format!("unknown or unsupported opcode {:#04x}", insn.op),
        )
    };
    let malformed = |what: &str| {
        fail(
            i,
            Kind::Malformed,
            format!("opcode {:#04x}: {what}", insn.op),
        )
    };
    if insn.dst > 10 || insn.src > 10 {
        return malformed("register number above r10");
    }
    let writes_dst = || -> Result<(), VerifyError> {
        if insn.dst == 10 {
            return fail(i, Kind::WriteR10, "r10 (the frame pointer) is read-only");
        }
        Ok(())
    };
    match insn.class() {
        class::LD => {
            if insn.op != OP_LDDW {
                return fail(
                    i,
                    Kind::UnknownOpcode,
                    format!(
                        "opcode {:#04x}: legacy packet loads are not supported",
                        insn.op
                    ),
                );
            }
            if insn.src != 0 {
                return fail(
                    i,
                    Kind::Lddw,
                    format!("lddw with src_reg {} (a map or pseudo load) is not supported: handlers have no maps", insn.src),
                );
            }
            if insn.off != 0 {
                return malformed("offset must be 0");
            }
            writes_dst()
        }
        class::LDX => {
            if insn.op & 0xe0 != MODE_MEM {
                return unknown();
            }
            if insn.imm != 0 {
                return malformed("immediate must be 0");
            }
            writes_dst()
        }
        class::ST | class::STX => {
            if insn.op & 0xe0 == MODE_ATOMIC && insn.class() == class::STX {
                return fail(
                    i,
                    Kind::Atomic,
                    "atomic instructions are not supported by rbpf",
                );
            }
            if insn.op & 0xe0 != MODE_MEM {
                return unknown();
            }
            if insn.class() == class::ST && insn.src != 0 {
                return malformed("source register must be 0");
            }
            if insn.class() == class::STX && insn.imm != 0 {
                return malformed("immediate must be 0");
            }
            Ok(())
        }
        class::ALU | class::ALU64 => {
            let code = insn.code();
            if insn.off != 0 {
                return fail(
                    i,
                    Kind::UnknownOpcode,
                    format!(
                        "opcode {:#04x} with a non-zero offset (eBPF v4) is not supported",
                        insn.op
                    ),
                );
            }
            match code {
                alu::END => {
                    if insn.class() == class::ALU64 {
                        return unknown();
                    }
                    if insn.src != 0 || !matches!(insn.imm, 16 | 32 | 64) {
                        return malformed(
                            "byte swaps take a width of 16, 32 or 64 and no source register",
                        );
                    }
                    if !insn.uses_src_reg() && insn.imm != 64 {
                        return fail(
                            i,
                            Kind::EngineMismatch,
                            format!(
                                "le{} truncates under rbpf's interpreter but not under its JIT; mask the value instead",
                                insn.imm
                            ),
                        );
                    }
                }
                alu::NEG => {
                    if insn.uses_src_reg() {
                        return unknown();
                    }
                    if insn.src != 0 || insn.imm != 0 {
                        return malformed("neg takes no operand");
                    }
                }
                0xe | 0xf => return unknown(),
                _ if insn.uses_src_reg() && insn.imm != 0 => {
                    return malformed("immediate must be 0")
                }
                _ if !insn.uses_src_reg() && insn.src != 0 => {
                    return malformed("source register must be 0")
                }
                _ => {}
            }
            writes_dst()
        }
        class::JMP | class::JMP32 => {
            let code = insn.code();
            let is32 = insn.class() == class::JMP32;
            match code {
                jmp::JA | jmp::CALL | jmp::EXIT if is32 => unknown(),
                jmp::JA => {
                    if insn.uses_src_reg() || insn.src != 0 || insn.dst != 0 || insn.imm != 0 {
                        return malformed("ja takes only an offset");
                    }
                    Ok(())
                }
                jmp::EXIT => {
                    if insn.op != 0x95
                        || insn.src != 0
                        || insn.dst != 0
                        || insn.off != 0
                        || insn.imm != 0
                    {
                        return malformed("exit takes no operands");
                    }
                    Ok(())
                }
                jmp::CALL => {
                    if insn.uses_src_reg() {
                        return fail(
                            i,
                            Kind::UnknownOpcode,
                            "callx (an indirect call through a register) is not supported: call helpers by id",
                        );
                    }
                    match insn.src {
                        0 => {}
                        1 => {
                            return fail(
                                i,
                                Kind::BpfCall,
                                "bpf-to-bpf calls are not supported (rbpf's cranelift engine cannot run them): \
                                 mark functions static inline __attribute__((always_inline))",
                            )
                        }
                        _ => return fail(i, Kind::UnknownOpcode, format!("call type {} is not supported", insn.src)),
                    }
                    if insn.dst != 0 || insn.off != 0 {
                        return malformed("helper calls take only an id");
                    }
                    // Checked here, not only on reachable paths: the JIT refuses to compile a
                    // call to an unregistered helper even in dead code.
                    if crate::helpers::lookup(insn.imm as u32).is_none() {
                        return fail(
                            i,
                            Kind::UnknownHelper,
                            format!(
                                "call to helper {}, which is not in the whitelist",
                                insn.imm as u32
                            ),
                        );
                    }
                    Ok(())
                }
                0xe | 0xf => unknown(),
                _ => {
                    if insn.dst == 10 {
                        return malformed("rbpf refuses r10 as the first operand of a comparison (swap the operands)");
                    }
                    if insn.uses_src_reg() && insn.imm != 0 {
                        return malformed("immediate must be 0");
                    }
                    if !insn.uses_src_reg() && insn.src != 0 {
                        return malformed("source register must be 0");
                    }
                    Ok(())
                }
            }
        }
        _ => unknown(),
    }
}

/// Prologue, epilogue and the exit trampoline of rbpf's x86 JIT, with a margin.
const JIT_FIXED_BYTES: usize = 96;

/// An upper bound of the machine code rbpf 0.4.1's x86 JIT emits for one instruction, measured
/// by compiling long runs of each kind until its one-page code buffer overflowed (e.g. 96
/// register divisions fill it, but 1348 register moves). Rounded up.
fn jit_size(insn: &Insn) -> usize {
    match insn.class() {
        class::LD => 11,
        class::LDX => 8,
        class::ST => 12,
        class::STX => 9,
        class::ALU | class::ALU64 => match insn.code() {
            alu::DIV | alu::MOD if insn.uses_src_reg() => 44,
            alu::DIV | alu::MOD => 24,
            alu::MUL => 21,
            alu::END => 13,
            alu::LSH | alu::RSH | alu::ARSH if insn.uses_src_reg() => 7,
            alu::NEG => 4,
            _ if insn.uses_src_reg() => 4,
            _ => 8,
        },
        _ => match insn.code() {
            jmp::EXIT => 2,
            jmp::CALL => 16,
            jmp::JA => 6,
            _ if insn.uses_src_reg() => 10,
            _ => 14,
        },
    }
}
