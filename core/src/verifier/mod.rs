//! The static verifier: every program passes here before any engine compiles it.
//!
//! This first version checks structure only (opcodes, jump targets, `lddw` pairs, the final
//! `exit`, no back-edges, whitelisted helpers, size and longest path). The memory proof
//! (issue "Static verifier") replaces its internals; the API stays.

use crate::elf::{Program, INSN_SIZE};

/// Limits the verifier enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Largest program, in instructions. rbpf's x86 JIT fails near 800 instructions (one page
    /// of code), so the default leaves a margin.
    pub max_insns: usize,
    /// Largest worst-case number of instructions executed by one step (longest path).
    pub max_path_insns: u64,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            max_insns: 640,
            max_path_insns: 640,
        }
    }
}

/// A program the verifier accepted. Only [`verify`] builds one, so holding one is proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProgram {
    name: String,
    insns: Vec<u8>,
    worst_case_insns: u64,
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
}

/// Why a program was rejected: the instruction and a reason a person understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instruction {insn}: {reason}")]
pub struct VerifyError {
    pub insn: usize,
    pub reason: String,
}

fn reject<T>(insn: usize, reason: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError {
        insn,
        reason: reason.into(),
    })
}

const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const OP_EXIT: u8 = 0x95;
const OP_CALL: u8 = 0x85;
const OP_JA: u8 = 0x05;
const OP_LDDW: u8 = 0x18;

/// Verifies `program` under `cfg`.
pub fn verify(program: &Program, cfg: &VerifierConfig) -> Result<VerifiedProgram, VerifyError> {
    let bytes = &program.insns;
    if bytes.is_empty() || bytes.len() % INSN_SIZE != 0 {
        return reject(
            0,
            format!(
                "program is {} bytes, not a non-empty whole number of instructions",
                bytes.len()
            ),
        );
    }
    let n = bytes.len() / INSN_SIZE;
    if n > cfg.max_insns {
        return reject(
            n - 1,
            format!(
                "program has {n} instructions, more than the {} the engine can compile",
                cfg.max_insns
            ),
        );
    }
    let insn = |i: usize| &bytes[i * INSN_SIZE..(i + 1) * INSN_SIZE];
    // Second halves of lddw are not instructions of their own.
    let mut is_lddw_tail = vec![false; n];
    let mut i = 0;
    while i < n {
        if insn(i)[0] == OP_LDDW {
            if i + 1 >= n {
                return reject(i, "lddw is missing its second half");
            }
            is_lddw_tail[i + 1] = true;
            i += 2;
        } else {
            i += 1;
        }
    }
    if insn(n - 1)[0] != OP_EXIT {
        return reject(
            n - 1,
            "the program does not end in exit (execution could fall off the end)",
        );
    }
    // Longest path, computed backwards: with no back-edges every successor has a larger index.
    let mut longest = vec![0u64; n + 1];
    for i in (0..n).rev() {
        if is_lddw_tail[i] {
            continue;
        }
        let b = insn(i);
        let (op, class) = (b[0], b[0] & 0x07);
        let off = i16::from_le_bytes([b[2], b[3]]) as i64;
        let imm = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let target = |i: usize| -> Result<usize, VerifyError> {
            let t = i as i64 + 1 + off;
            if t < 0 || t as usize >= n {
                return reject(i, format!("jump to {t} is outside the program (0..{n})"));
            }
            if t as usize <= i {
                return reject(
                    i,
                    format!("jump back to {t}: loops are not allowed (unroll them)"),
                );
            }
            if is_lddw_tail[t as usize] {
                return reject(i, format!("jump to {t} lands inside an lddw"));
            }
            Ok(t as usize)
        };
        let next = |i: usize, len: usize| -> Result<u64, VerifyError> {
            if i + len >= n {
                return reject(i, "execution falls off the end of the program");
            }
            Ok(longest[i + len])
        };
        let cost = match (class, op) {
            (_, OP_EXIT) => 0,
            (_, OP_LDDW) => next(i, 2)?,
            (CLASS_JMP, OP_CALL) => {
                if b[1] >> 4 != 0 {
                    return reject(
                        i,
                        "bpf-to-bpf calls are not supported (mark functions always_inline)",
                    );
                }
                if crate::helpers::lookup(imm as u32).is_none() {
                    return reject(i, format!("call to helper {imm}, which is not whitelisted"));
                }
                next(i, 1)?
            }
            (CLASS_JMP, OP_JA) => longest[target(i)?],
            (CLASS_JMP | CLASS_JMP32, _) => {
                if !known_jump(op) {
                    return reject(i, format!("unknown jump opcode {op:#04x}"));
                }
                longest[target(i)?].max(next(i, 1)?)
            }
            _ => {
                if !known_non_jump(op) {
                    return reject(i, format!("unknown opcode {op:#04x}"));
                }
                next(i, 1)?
            }
        };
        longest[i] = cost + 1;
    }
    let worst = longest[0];
    if worst > cfg.max_path_insns {
        return reject(
            0,
            format!(
                "worst-case path runs {worst} instructions, over the budget of {}",
                cfg.max_path_insns
            ),
        );
    }
    Ok(VerifiedProgram {
        name: program.name.clone(),
        insns: bytes.clone(),
        worst_case_insns: worst,
    })
}

fn known_jump(op: u8) -> bool {
    matches!(op >> 4, 0x1..=0x7 | 0xa..=0xd) && (op & 0x07 == CLASS_JMP || op & 0x07 == CLASS_JMP32)
}

fn known_non_jump(op: u8) -> bool {
    match op & 0x07 {
        // ALU / ALU64
        0x04 | 0x07 => matches!(op >> 4, 0x0..=0xd),
        // LDX and ST/STX with sizes b/h/w/dw, MEM mode
        0x01..=0x03 => op & 0xe0 == 0x60,
        _ => false,
    }
}
