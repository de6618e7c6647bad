//! A generator of structurally plausible eBPF programs driven by a byte string (so proptest
//! and cargo-fuzz share it, and both shrink/mutate the bytes). Programs mix the instruction
//! shapes compiled handlers use — loads and stores near r1 and r10, pointer moves, masks,
//! bound checks, forward jumps, helper calls, exits — with raw random instructions, so some
//! are accepted and many are rejected for every kind of reason.

use naam_core::abi::CTX_SIZE;

/// Reads the input bytes; past the end it yields zeros (so every input is a program).
pub struct Src<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Src<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn below(&mut self, n: u32) -> u32 {
        if n == 0 {
            0
        } else {
            self.u16() as u32 % n
        }
    }
    pub fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }
}

fn raw(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let m = imm.to_le_bytes();
    [op, dst | (src << 4), o[0], o[1], m[0], m[1], m[2], m[3]]
}

const SIZES: [u8; 4] = [0x00, 0x08, 0x10, 0x18];
const IMMS: [i32; 14] = [0, 1, 2, 7, 8, 15, 16, 31, 32, 63, 64, 255, 1088, -8];

fn imm(s: &mut Src) -> i32 {
    match s.u8() % 4 {
        0 | 1 => IMMS[s.below(IMMS.len() as u32) as usize],
        2 => s.below(5000) as i32,
        _ => s.u32() as i32,
    }
}

/// The base of a load or store: mostly r1 or r10, sometimes any register.
fn base(s: &mut Src) -> u8 {
    match s.u8() % 4 {
        0 => reg(s),
        1 => 10,
        _ => 1,
    }
}

/// A register, biased towards the ones a program has set up.
fn reg(s: &mut Src) -> u8 {
    match s.u8() % 8 {
        0 => 1,
        1 => 10,
        2 => 0,
        _ => 2 + s.u8() % 6,
    }
}

fn ctx_off(s: &mut Src) -> i16 {
    match s.u8() % 5 {
        0 => s.below(64) as i16,
        1 => (CTX_SIZE as i16) - s.below(24) as i16,
        // On or just before an op's kind byte (what decides whether it only reads).
        2 => {
            (naam_core::abi::ctx::OPS + s.below(4) as usize * naam_core::abi::OP_SIZE) as i16
                - s.below(8) as i16
        }
        _ => s.below(CTX_SIZE as u32) as i16,
    }
}

fn stack_off(s: &mut Src) -> i16 {
    match s.u8() % 3 {
        0 => -8 * (1 + s.below(8) as i16),
        1 => -(s.below(520) as i16),
        _ => s.below(16) as i16 - 8,
    }
}

/// One program of at most `max` instruction slots.
pub fn program(s: &mut Src, max: usize) -> Vec<u8> {
    let n = 2 + s.below(max.saturating_sub(2) as u32) as usize;
    let mut out: Vec<[u8; 8]> = Vec::with_capacity(n + 2);
    // Most programs start by setting up registers the way compiled code does.
    if s.u8() % 4 != 0 {
        out.push(raw(0xb7, 0, 0, 0, 0));
        for r in 2..10 {
            if s.u8() % 2 == 0 {
                out.push(raw(
                    0x61 | SIZES[s.below(4) as usize],
                    r,
                    1,
                    (32 + s.below(64)) as i16,
                    0,
                ));
            } else {
                out.push(raw(0xb7, r, 0, 0, imm(s)));
            }
        }
    }
    while out.len() < n && !s.exhausted() {
        let left = (n - out.len()) as u32;
        let kind = s.u8() % 20;
        let i = match kind {
            // ALU on scalars (64- and 32-bit, every op including neg and byte swaps)
            0..=4 => {
                let class = if s.u8() % 3 == 0 { 0x04 } else { 0x07 };
                let code = s.u8() % 14;
                let dst = 2 + s.u8() % 8;
                if code == 0xd {
                    let w = [16, 32, 64][s.below(3) as usize];
                    // Mostly `be`: `le16/32` are rejected (the engines disagree on them).
                    let be = if s.u8() % 8 == 0 { 0 } else { 0x08 };
                    raw(0xd4 | be, dst, 0, 0, w)
                } else if code == 0x8 {
                    raw((code << 4) | class, dst, 0, 0, 0)
                } else if s.u8() % 2 == 0 {
                    raw((code << 4) | class | 0x08, dst, reg(s), 0, 0)
                } else {
                    raw((code << 4) | class, dst, 0, 0, imm(s))
                }
            }
            // Masks and shifts that bound an index
            5 => {
                let dst = 2 + s.u8() % 8;
                let (op, k) = [
                    (0x57, 15),
                    (0x57, 255),
                    (0x57, 0x7f8),
                    (0x77, 56),
                    (0x67, 3),
                    (0x74, 24),
                ][s.below(6) as usize];
                raw(op, dst, 0, 0, k)
            }
            // A context pointer on a stride, then moved by a constant, as
            // `&ctx->ops[i].arg0 + c` compiles (the verifier once dropped the constant's
            // remainder here and checked the stores at the wrong offsets)
            6 | 7 if s.u8() % 3 == 0 => {
                let (dst, idx) = (2 + s.u8() % 4, 6 + s.u8() % 4);
                out.push(raw(0x57, idx, 0, 0, [1, 3, 7][s.below(3) as usize]));
                out.push(raw(0x67, idx, 0, 0, [3, 6, 9, 11][s.below(4) as usize]));
                out.push(raw(0xbf, dst, 1, 0, 0));
                out.push(raw(0x0f, dst, idx, 0, 0));
                let op = if s.u8() % 2 == 0 { 0x07 } else { 0x17 };
                out.push(raw(op, dst, 0, 0, imm(s)));
                raw(0x62 | SIZES[s.below(4) as usize], dst, 0, 0, imm(s))
            }
            // Pointer setup: rX = r1 or r10, then moved by a constant or a register
            6 | 7 => {
                let dst = 2 + s.u8() % 8;
                out.push(raw(0xbf, dst, if s.u8() % 2 == 0 { 1 } else { 10 }, 0, 0));
                if s.u8() % 2 == 0 {
                    raw(0x07, dst, 0, 0, imm(s))
                } else {
                    raw(0x0f, dst, reg(s), 0, 0)
                }
            }
            // Loads
            8..=10 => {
                let base = base(s);
                let off = if base == 10 || s.u8() % 4 == 0 {
                    stack_off(s)
                } else {
                    ctx_off(s)
                };
                raw(0x61 | SIZES[s.below(4) as usize], s.u8() % 10, base, off, 0)
            }
            // Stores
            11..=12 => {
                let base = base(s);
                let off = if base == 10 { stack_off(s) } else { ctx_off(s) };
                if s.u8() % 2 == 0 {
                    raw(0x62 | SIZES[s.below(4) as usize], base, 0, off, imm(s))
                } else {
                    raw(0x63 | SIZES[s.below(4) as usize], base, reg(s), off, 0)
                }
            }
            // Forward conditional jumps (JMP and JMP32), rarely backwards
            13..=15 => {
                let class = if s.u8() % 3 == 0 { 0x06 } else { 0x05 };
                let code = [1u8, 2, 3, 4, 5, 6, 7, 0xa, 0xb, 0xc, 0xd][s.below(11) as usize];
                let off = if s.u8() % 128 == 0 {
                    -(s.below(4) as i16) - 1
                } else {
                    s.below(left.min(24)) as i16
                };
                let dst = s.u8() % 10;
                if s.u8() % 2 == 0 {
                    raw((code << 4) | class | 0x08, dst, reg(s), off, 0)
                } else {
                    // Mostly non-negative: 64-bit unsigned comparisons with a negative
                    // immediate are rejected (the engines disagree on them).
                    let k = if s.u8() % 8 == 0 {
                        imm(s)
                    } else {
                        imm(s) & i32::MAX
                    };
                    raw((code << 4) | class, dst, 0, off, k)
                }
            }
            16 => raw(0x05, 0, 0, s.below(left.min(16)) as i16, 0),
            17 => {
                out.push(raw(0xbf, 1, 2 + s.u8() % 8, 0, 0));
                out.push(raw(0xbf, 2, 2 + s.u8() % 8, 0, 0));
                raw(0x85, 0, 0, 0, if s.u8() % 8 == 0 { 2 } else { 1 })
            }
            18 => {
                out.push(raw(0xb7, 0, 0, 0, imm(s)));
                raw(0x95, 0, 0, 0, 0)
            }
            // A raw random instruction (the mutation part), or a load of a constant.
            _ if s.u8() % 4 != 0 => {
                let v = (s.u32() as u64) << (s.u8() % 40);
                out.push(raw(0x18, 2 + s.u8() % 8, 0, 0, v as u32 as i32));
                raw(0, 0, 0, 0, (v >> 32) as u32 as i32)
            }
            _ => {
                let mut b = [0u8; 8];
                for x in &mut b {
                    *x = s.u8();
                }
                b
            }
        };
        out.push(i);
        if kind == 19 && out.last().map(|b| b[0]) == Some(0x18) {
            out.push(raw(0, 0, 0, 0, imm(s)));
        }
    }
    if s.u8() % 8 != 0 {
        out.push(raw(0xb7, 0, 0, 0, imm(s)));
    }
    out.push(raw(0x95, 0, 0, 0, 0));
    out.concat()
}

/// Whether the program holds a 64-bit unsigned or equality comparison with a negative
/// immediate, the one construct the verifier accepts on which rbpf's interpreter and JIT may
/// take different branches (both safely); their results are then not compared.
pub fn engines_may_disagree(bytes: &[u8]) -> bool {
    bytes.chunks_exact(8).any(|b| {
        let imm = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        b[0] & 0x0f == 0x05 && matches!(b[0] >> 4, 0x1 | 0x2 | 0x3 | 0x5 | 0xa | 0xb) && imm < 0
    })
}
