//! The abstract machine state at one instruction: eleven registers and the 512-byte stack.
//!
//! Registers are uninitialised, scalars, or pointers into one of the two memory regions a
//! handler may touch (its context, its stack) with an interval of byte offsets. The stack is
//! tracked per 8-byte slot: either bytes (with a per-byte "initialised" mask) or a register
//! spilled whole by an aligned 8-byte store, so clang's spills and fills of pointers and
//! bounded counters keep their types. States from two paths are joined by widening every
//! interval to cover both and forgetting what only one side knows.

use super::scalar::{gcd, Scalar};
use crate::abi::STACK_SIZE;

/// Which memory a pointer points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The context block (`r1` at entry); offset 0 is its first byte.
    Ctx,
    /// The stack; offset 0 is `r10`, the valid bytes are `-512 .. 0`.
    Stack,
}

impl Region {
    pub fn name(self) -> &'static str {
        match self {
            Region::Ctx => "context",
            Region::Stack => "stack",
        }
    }
}

/// The abstract value of one register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    /// Never written on some path to here.
    Uninit,
    /// Written on every path, but with different types (a pointer on some, a scalar or a
    /// pointer into another region on others): unusable, like `Uninit`, but said so.
    Mixed,
    Scalar(Scalar),
    /// A pointer into `region`; its offset from the region's base lies in `min ..= max` and is
    /// `rem` modulo `stride` (`stride == 1`: any offset in the interval; `ctx->ops[i]` for a
    /// variable `i` is the first op's offset modulo the op's size).
    Ptr {
        region: Region,
        min: i64,
        max: i64,
        stride: u64,
        rem: u64,
    },
}

impl Reg {
    pub fn ptr(region: Region, off: i64) -> Reg {
        Reg::Ptr {
            region,
            min: off,
            max: off,
            stride: 1,
            rem: 0,
        }
    }

    /// A pointer into `region` at offsets `min ..= max` congruent to `rem` modulo `stride`
    /// (the congruence forgotten when `stride < 2`).
    pub fn ptr_range(region: Region, min: i64, max: i64, stride: u64, rem: i64) -> Reg {
        let (stride, rem) = if stride > 1 && min < max {
            (stride, rem.rem_euclid(stride as i64) as u64)
        } else {
            (1, 0)
        };
        Reg::Ptr {
            region,
            min,
            max,
            stride,
            rem,
        }
    }

    /// A pointer's offset congruence as `(modulus, remainder)`, modulus 0 for an exact offset.
    pub fn ptr_congruence(min: i64, max: i64, stride: u64, rem: u64) -> (u64, i64) {
        if min == max {
            (0, min)
        } else {
            (stride, rem as i64)
        }
    }

    pub fn join(self, o: Reg) -> Reg {
        match (self, o) {
            (Reg::Scalar(a), Reg::Scalar(b)) => Reg::Scalar(a.join(b)),
            (
                Reg::Ptr {
                    region: ra,
                    min: a0,
                    max: a1,
                    stride: sa,
                    rem: qa,
                },
                Reg::Ptr {
                    region: rb,
                    min: b0,
                    max: b1,
                    stride: sb,
                    rem: qb,
                },
            ) if ra == rb => {
                let (m1, r1) = Reg::ptr_congruence(a0, a1, sa, qa);
                let (m2, r2) = Reg::ptr_congruence(b0, b1, sb, qb);
                let m = gcd(gcd(m1, m2), r1.abs_diff(r2));
                Reg::ptr_range(ra, a0.min(b0), a1.max(b1), m, r1)
            }
            (Reg::Uninit, _) | (_, Reg::Uninit) => Reg::Uninit,
            _ => Reg::Mixed,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Reg::Uninit => "uninitialised".into(),
            Reg::Mixed => "a pointer on some paths and not the same on others".into(),
            Reg::Scalar(s) => match s.as_const() {
                Some(v) => format!("the scalar {v:#x}"),
                None => format!("a scalar in [{}, {}]", s.umin, s.umax),
            },
            Reg::Ptr {
                region, min, max, ..
            } if min == max => {
                format!("a {} pointer at offset {min}", region.name())
            }
            Reg::Ptr {
                region,
                min,
                max,
                stride,
                rem,
            } if *stride > 1 => format!(
                "a {} pointer at offsets [{min}, {max}] that are {rem} modulo {stride}",
                region.name()
            ),
            Reg::Ptr {
                region, min, max, ..
            } => {
                format!("a {} pointer at offsets [{min}, {max}]", region.name())
            }
        }
    }
}

/// One 8-byte stack slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Plain bytes; bit `i` of the mask is set when byte `i` of the slot holds a known-written
    /// scalar byte.
    Bytes(u8),
    /// A whole register stored by an aligned 8-byte store (a scalar or a pointer).
    Spill(Reg),
}

impl Slot {
    fn join(self, o: Slot) -> Slot {
        match (self, o) {
            (Slot::Spill(a), Slot::Spill(b)) => match a.join(b) {
                Reg::Uninit | Reg::Mixed => Slot::Bytes(0),
                r => Slot::Spill(r),
            },
            (Slot::Bytes(a), Slot::Bytes(b)) => Slot::Bytes(a & b),
            (Slot::Spill(Reg::Scalar(_)), Slot::Bytes(m))
            | (Slot::Bytes(m), Slot::Spill(Reg::Scalar(_))) => Slot::Bytes(m),
            // A pointer on one path and bytes on the other: reading it could expose the
            // pointer's bits as a scalar, so it counts as uninitialised.
            _ => Slot::Bytes(0),
        }
    }

    /// Bytes of this slot a read may see as scalar data.
    pub fn init_mask(&self) -> u8 {
        match self {
            Slot::Bytes(m) => *m,
            Slot::Spill(Reg::Scalar(_)) => 0xff,
            Slot::Spill(_) => 0,
        }
    }
}

pub const SLOTS: usize = STACK_SIZE / 8;

/// The machine state before one instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Read freely; written through [`State::set`], [`State::copy`] and [`State::refine`],
    /// which keep `links` true.
    pub regs: [Reg; 11],
    /// Scalars known to hold the same value (Linux's scalar ids): registers with the same
    /// non-zero link were copied from one another by a 64-bit move and not written since, so a
    /// bound learnt on one holds for all (`r3 = r2; if r3 > 100 goto out; r1 += r2`). A link
    /// is the index + 1 of the move that made it; linked registers always have the same
    /// abstract value.
    pub links: [u32; 11],
    /// Slot `i` covers stack offsets `-512 + 8 i .. -512 + 8 i + 8`.
    pub stack: [Slot; SLOTS],
}

impl State {
    /// The state at entry: `r1` points at the context, `r10` at the top of the stack.
    pub fn entry() -> State {
        let mut regs = [Reg::Uninit; 11];
        regs[1] = Reg::ptr(Region::Ctx, 0);
        regs[10] = Reg::ptr(Region::Stack, 0);
        State {
            regs,
            links: [0; 11],
            stack: [Slot::Bytes(0); SLOTS],
        }
    }

    /// Writes register `r` (any write but a 64-bit copy of a scalar): it is linked to nothing.
    pub fn set(&mut self, r: usize, v: Reg) {
        self.regs[r] = v;
        self.links[r] = 0;
    }

    /// `dst = src` (64-bit) at instruction `insn`: a scalar copy is linked to its source.
    pub fn copy(&mut self, dst: usize, src: usize, insn: usize) {
        let v = self.regs[src];
        if !matches!(v, Reg::Scalar(_)) {
            return self.set(dst, v);
        }
        if self.links[src] == 0 {
            self.links[src] = insn as u32 + 1;
        }
        self.regs[dst] = v;
        self.links[dst] = self.links[src];
    }

    /// Narrows register `r` to `v` (a branch taught something about it), and every register
    /// linked to it: they hold the same value.
    pub fn refine(&mut self, r: usize, v: Reg) {
        let link = self.links[r];
        for k in 0..self.regs.len() {
            if k == r || (link != 0 && self.links[k] == link) {
                self.regs[k] = v;
            }
        }
    }

    pub fn join_from(&mut self, o: &State) {
        for (a, b) in self.regs.iter_mut().zip(o.regs.iter()) {
            *a = a.join(*b);
        }
        // A link survives where both paths have it: then the registers are equal on each.
        for (a, b) in self.links.iter_mut().zip(o.links.iter()) {
            if a != b {
                *a = 0;
            }
        }
        for (a, b) in self.stack.iter_mut().zip(o.stack.iter()) {
            *a = a.join(*b);
        }
    }

    /// Slot index and byte index of stack offset `off` (`-512 <= off < 0`).
    pub fn slot_of(off: i64) -> (usize, usize) {
        let b = (off + STACK_SIZE as i64) as usize;
        (b / 8, b % 8)
    }

    /// Records a store of `size` bytes of scalar data at the known offset `off`.
    pub fn write_bytes(&mut self, off: i64, size: usize) {
        for k in 0..size as i64 {
            let (s, b) = State::slot_of(off + k);
            let m = self.stack[s].init_mask();
            self.stack[s] = Slot::Bytes(m | (1 << b));
        }
    }

    /// Records a store of unknown position somewhere in `min .. max + size`: no byte becomes
    /// known-initialised, and spilled registers there are lost (pointers become unreadable).
    pub fn clobber_bytes(&mut self, min: i64, max_end: i64) {
        let (first, _) = State::slot_of(min);
        let (last, _) = State::slot_of(max_end - 1);
        for s in &mut self.stack[first..=last] {
            *s = Slot::Bytes(s.init_mask());
        }
    }

    /// Whether every byte in `min .. max_end` holds readable scalar data.
    pub fn bytes_readable(&self, min: i64, max_end: i64) -> bool {
        (min..max_end).all(|o| {
            let (s, b) = State::slot_of(o);
            self.stack[s].init_mask() & (1 << b) != 0
        })
    }
}
