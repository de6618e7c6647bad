//! The rewrites the verifier makes before proving anything, for two rbpf 0.4.1 defects:
//!
//! - `wD = wS` (`mov32` from a register) becomes `rD = rS; wD += 0` (or `wD += 0` alone when
//!   `D == S`);
//! - `rD = -rD` (`neg64`) becomes `rD *= -1`: the interpreter computes `-(x as i64)`, which
//!   panics on `i64::MIN` when overflow checks are on (debug and test builds, cargo-fuzz);
//!   the multiplication wraps in every engine and build.
//!
//! rbpf 0.4.1's x86 JIT compiles `mov32` from a register as a 64-bit move, so the upper half
//! of the destination is *not* cleared, unlike in its interpreter, its cranelift JIT and
//! Linux. clang emits this instruction for every `(u32)` cast, so the bug changes results of
//! real handlers, and a verifier that believed the upper half was zero would be unsound under
//! the JIT. The expansion means the same in every engine (the 32-bit `add` zero-extends on
//! x86 too); the analysis then runs on the expanded program, which is the one compiled.

use super::cfg::OP_LDDW;
use crate::elf::INSN_SIZE;

const OP_MOV32_REG: u8 = 0xbc;
const OP_MOV64_REG: u8 = 0xbf;
const OP_ADD32_IMM: u8 = 0x04;
const OP_NEG64: u8 = 0x87;
const OP_MUL64_IMM: u8 = 0x27;

/// An expanded program and, for each of its instructions, the index of the original
/// instruction it came from (so errors name what the author wrote).
pub struct Expanded {
    pub bytes: Vec<u8>,
    pub origin: Vec<usize>,
}

fn is_mov32_reg(b: &[u8]) -> bool {
    // Only well-formed moves are rewritten; anything else is left for the encoding check.
    b[0] == OP_MOV32_REG && b[1] & 0x0f <= 9 && b[1] >> 4 <= 10 && b[2..8].iter().all(|&x| x == 0)
}

/// `None` when there is nothing to rewrite (then the check costs one scan).
pub fn normalize(bytes: &[u8]) -> Option<Expanded> {
    let n = bytes.len() / INSN_SIZE;
    let insn = |i: usize| &bytes[i * INSN_SIZE..(i + 1) * INSN_SIZE];
    // Which slots are the second half of an lddw (their bytes are data, never rewritten).
    let mut tail = vec![false; n];
    let mut expand = vec![false; n];
    let mut i = 0;
    while i < n {
        if insn(i)[0] == OP_LDDW && i + 1 < n {
            tail[i + 1] = true;
            i += 2;
            continue;
        }
        expand[i] = is_mov32_reg(insn(i)) && insn(i)[1] & 0x0f != insn(i)[1] >> 4;
        i += 1;
    }
    let same_reg =
        |i: usize| !tail[i] && is_mov32_reg(insn(i)) && insn(i)[1] & 0x0f == insn(i)[1] >> 4;
    // Only well-formed negations (dst <= r9, every other field zero).
    let neg64 = |i: usize| {
        let b = insn(i);
        !tail[i] && b[0] == OP_NEG64 && b[1] <= 9 && b[2..8].iter().all(|&x| x == 0)
    };
    if !(0..n).any(|i| expand[i] || same_reg(i) || neg64(i)) {
        return None;
    }
    // New index of each original instruction (and of the end, for jumps past it).
    let mut new_index = Vec::with_capacity(n + 1);
    let mut k = 0usize;
    for &e in &expand {
        new_index.push(k);
        k += if e { 2 } else { 1 };
    }
    new_index.push(k);
    let mut out = Vec::with_capacity(k * INSN_SIZE);
    let mut origin = Vec::with_capacity(k);
    for i in 0..n {
        let mut b: [u8; 8] = insn(i).try_into().expect("8 bytes");
        let dst = b[1] & 0x0f;
        if expand[i] {
            b[0] = OP_MOV64_REG;
            out.extend_from_slice(&b);
            out.extend_from_slice(&[OP_ADD32_IMM, dst, 0, 0, 0, 0, 0, 0]);
            origin.extend([i, i]);
            continue;
        }
        if same_reg(i) {
            // `wD = wD` only clears the upper half.
            b = [OP_ADD32_IMM, dst, 0, 0, 0, 0, 0, 0];
        } else if neg64(i) {
            b = [OP_MUL64_IMM, dst, 0, 0, 0xff, 0xff, 0xff, 0xff];
        } else if !tail[i] && is_jump(b[0]) {
            let off = i16::from_le_bytes([b[2], b[3]]) as i64;
            let target = i as i64 + 1 + off;
            // Out-of-range targets stay out of range (the structure check reports them).
            let new_target = if (0..=n as i64).contains(&target) {
                new_index[target as usize] as i64
            } else if target < 0 {
                target
            } else {
                target + (k as i64 - n as i64)
            };
            let new_off = new_target - (new_index[i] as i64 + 1);
            // Offsets that no longer fit are left unfixable: keep the old one, whose target is
            // wrong, and poison the jump so the structure check rejects it.
            match i16::try_from(new_off) {
                Ok(o) => b[2..4].copy_from_slice(&o.to_le_bytes()),
                Err(_) => b[0] = 0xff,
            }
        }
        out.extend_from_slice(&b);
        origin.push(i);
    }
    Some(Expanded { bytes: out, origin })
}

/// Jumps with an offset: JMP and JMP32 classes other than `call` and `exit`.
fn is_jump(op: u8) -> bool {
    matches!(op & 0x07, 0x05 | 0x06) && !matches!(op >> 4, 0x8 | 0x9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
        let o = off.to_le_bytes();
        let m = imm.to_le_bytes();
        [op, dst | (src << 4), o[0], o[1], m[0], m[1], m[2], m[3]]
    }

    #[test]
    fn expands_moves_and_fixes_jumps_over_them() {
        let prog = [
            raw(0x15, 1, 0, 2, 0), // if r1 == 0 goto 3 (over the move)
            raw(0xbc, 2, 3, 0, 0), // w2 = w3
            raw(0xbc, 4, 4, 0, 0), // w4 = w4
            raw(0x87, 5, 0, 0, 0), // r5 = -r5
            raw(0x95, 0, 0, 0, 0),
        ]
        .concat();
        let e = normalize(&prog).expect("has moves");
        let want = [
            raw(0x15, 1, 0, 3, 0),
            raw(0xbf, 2, 3, 0, 0),
            raw(0x04, 2, 0, 0, 0),
            raw(0x04, 4, 0, 0, 0),
            raw(0x27, 5, 0, 0, -1),
            raw(0x95, 0, 0, 0, 0),
        ]
        .concat();
        assert_eq!(e.bytes, want);
        assert_eq!(e.origin, vec![0, 1, 1, 2, 3, 4]);
        assert!(normalize(&raw(0x95, 0, 0, 0, 0)).is_none());
    }
}
