//! The value analysis: one forward pass over the DAG in index order.
//!
//! Every successor of an instruction has a larger index (`cfg` rejected back-edges), so when
//! the pass reaches instruction `i` every path into it has been seen: the state there is the
//! join of the fall-through state and the states of the jumps that target it. Each instruction
//! is checked once against that joined state, so the pass is linear in the program size.
//!
//! Precision choices (all sound, some conservative):
//! - joins widen intervals to cover both sides and drop what only one side knows; a register
//!   of different types on different paths becomes unreadable;
//! - branch refinement on unsigned and signed comparisons and `jset` (`refine.rs`); 32-bit
//!   comparisons refine only when both operands are known to fit in 32 bits (signed ones
//!   through the sign-extended halves); comparisons of a register with itself are not refined;
//! - a variable offset must keep the whole access inside one region; a store into the context
//!   must land in writable bytes from every offset it may start at. Scalars and pointers
//!   carry a congruence (the stride domain, `Scalar::stride`): `ctx->ops[i].arg0` for a
//!   bounded `i` starts at one of a few offsets 56 bytes apart, each checked (up to
//!   `Addr::MAX_STARTS` of them; beyond, the whole interval must be writable);
//! - an edge whose refined condition is unsatisfiable is dead and contributes nothing;
//!   instructions no path reaches are not checked (they cannot run);
//! - shifts by a register, `neg` and byte swaps of non-constants produce wide ranges.

use super::cfg::{alu, class, jmp, Cfg, Insn};
use super::refine::refine;
use super::scalar::{gcd, Scalar};
use super::state::{Reg, Region, Slot, State};
use super::{fail, Kind, VerifyError};
use crate::abi::{
    ctx, op, writable_ranges, CtxWords, OpKind, CTX_SIZE, MAX_OPS, OP_SIZE, STACK_SIZE,
};

/// Where an access may start: offsets `lo ..= hi` of `region` that are `rem` modulo
/// `stride` (any of them when `stride < 2`).
struct Addr {
    region: Region,
    lo: i64,
    hi: i64,
    stride: u64,
    rem: i64,
}

impl Addr {
    /// Most starts a strided access is checked at one by one; beyond, the interval is checked
    /// whole.
    const MAX_STARTS: i64 = 64;

    /// The possible starts one by one, when the congruence leaves few of them.
    fn starts(&self) -> Option<impl Iterator<Item = i64>> {
        if self.stride < 2 || self.lo == self.hi {
            return None;
        }
        let stride = self.stride as i64;
        let first = self.lo + (self.rem - self.lo).rem_euclid(stride);
        ((self.hi - first) / stride < Self::MAX_STARTS)
            .then(|| (first..=self.hi).step_by(stride as usize))
    }
}

/// Where control goes after one instruction.
enum Flow {
    Next,
    Exit,
    Jump(usize),
    Branch {
        target: usize,
        taken: Option<Box<State>>,
        fall: Option<Box<State>>,
    },
}

/// What the analysis learnt of a safe program's stores into the context.
pub struct Stores {
    /// The context words any store may touch.
    pub words: CtxWords,
    /// The first instruction that may set an op's kind to something other than a READ (or
    /// leave it unknown), if any: a program without one never asks for a WRITE, CAS or FAA.
    pub first_mutating_op: Option<usize>,
}

/// Proves every reachable instruction safe; returns the first violation found, or what the
/// program's stores may touch.
pub fn analyze(cfg: &Cfg) -> Result<Stores, VerifyError> {
    let mut writes = Stores {
        words: CtxWords::NONE,
        first_mutating_op: None,
    };
    let n = cfg.insns.len();
    let mut pending: Vec<Option<Box<State>>> = vec![None; n];
    let mut cur: Option<Box<State>> = Some(Box::new(State::entry()));
    for i in 0..n {
        if cfg.is_tail[i] {
            continue;
        }
        let mut st = match (cur.take(), pending[i].take()) {
            (Some(mut a), Some(b)) => {
                a.join_from(&b);
                a
            }
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => continue,
        };
        let step = Step {
            i,
            insn: cfg.insns[i],
        };
        match step.run(&mut st, cfg, &mut writes)? {
            Flow::Next => cur = Some(st),
            Flow::Exit => {}
            Flow::Jump(t) => merge(&mut pending[t], st),
            Flow::Branch {
                target,
                taken,
                fall,
            } => {
                if let Some(t) = taken {
                    merge(&mut pending[target], t);
                }
                cur = fall;
            }
        }
    }
    Ok(writes)
}

/// Whether a `size`-byte store of `value` at context offset `at` may set an op's kind byte to
/// something other than 0 (no op) or READ: a WRITE, CAS, FAA or an unknown value.
fn may_set_mutating_kind(at: usize, size: usize, value: &Reg) -> bool {
    op_kind_bytes()
        .filter(|&k| at <= k && k < at + size)
        .any(|k| match value {
            // The byte's possible values are 0 and READ (1) only when no bit above the
            // lowest may be set.
            Reg::Scalar(s) => {
                let shift = 8 * (k - at);
                let may_be_set = ((s.bits.value | s.bits.mask) >> shift) & 0xff;
                may_be_set & !(OpKind::Read as u64) != 0
            }
            _ => true,
        })
}

/// The context offsets of the ops' kind bytes.
fn op_kind_bytes() -> impl Iterator<Item = usize> {
    (0..MAX_OPS).map(|i| ctx::OPS + i * OP_SIZE + op::KIND)
}

fn merge(slot: &mut Option<Box<State>>, st: Box<State>) {
    match slot {
        Some(s) => s.join_from(&st),
        None => *slot = Some(st),
    }
}

struct Step {
    i: usize,
    insn: Insn,
}

impl Step {
    fn run(&self, st: &mut State, cfg: &Cfg, writes: &mut Stores) -> Result<Flow, VerifyError> {
        let insn = &self.insn;
        match insn.class() {
            class::LD => {
                st.set(
                    insn.dst as usize,
                    Reg::Scalar(Scalar::konst(cfg.lddw_value[self.i])),
                );
                Ok(Flow::Next)
            }
            class::LDX => self.load(st).map(|_| Flow::Next),
            class::ST | class::STX => self.store(st, writes).map(|_| Flow::Next),
            class::ALU | class::ALU64 => self.alu(st).map(|_| Flow::Next),
            _ => self.jump(st),
        }
    }

    fn fail<T>(&self, kind: Kind, reason: impl Into<String>) -> Result<T, VerifyError> {
        fail(self.i, kind, reason)
    }

    /// The value of register `r`, which must be initialised.
    fn read(&self, st: &State, r: u8) -> Result<Reg, VerifyError> {
        match st.regs[r as usize] {
            Reg::Uninit => self.fail(
                Kind::UninitRegister,
                format!("r{r} is read but not initialised on every path here"),
            ),
            Reg::Mixed => self.fail(
                Kind::MixedTypes,
                format!("r{r} holds a pointer on some paths to here and a scalar (or another region's pointer) on others; give it one type on every path"),
            ),
            v => Ok(v),
        }
    }

    // ----- memory -------------------------------------------------------------------------

    /// The byte offsets `[lo, hi]` the access through `base` may start at (congruent to
    /// `rem` modulo `stride`), checked inside its region.
    fn address(&self, st: &State, base: u8, size: usize, store: bool) -> Result<Addr, VerifyError> {
        let (region, min, max, stride, rem) = match self.read(st, base)? {
            Reg::Ptr {
                region,
                min,
                max,
                stride,
                rem,
            } => (region, min, max, stride, rem),
            Reg::Scalar(s) => {
                return self.fail(
                    Kind::ScalarDeref,
                    format!(
                        "memory access through r{base}, which is {}, not a pointer",
                        Reg::Scalar(s).describe()
                    ),
                )
            }
            Reg::Uninit | Reg::Mixed => unreachable!("read() rejects these"),
        };
        let off = self.insn.off as i64;
        let (lo, hi) = (min.saturating_add(off), max.saturating_add(off));
        let (start, end) = match region {
            Region::Ctx => (0, CTX_SIZE as i64),
            Region::Stack => (-(STACK_SIZE as i64), 0),
        };
        let what = if store { "store" } else { "load" };
        if lo < start || hi.saturating_add(size as i64) > end {
            let at = if lo == hi {
                format!("offset {lo}")
            } else {
                format!("offsets [{lo}, {hi}]")
            };
            return self.fail(
                Kind::OutOfBounds,
                format!(
                    "{size}-byte {what} at {} {at} may fall outside it (valid: [{start}, {end}))",
                    region.name()
                ),
            );
        }
        Ok(Addr {
            region,
            lo,
            hi,
            stride,
            rem: (rem as i64 + off).rem_euclid(stride.max(1) as i64),
        })
    }

    fn load(&self, st: &mut State) -> Result<(), VerifyError> {
        let insn = &self.insn;
        let size = insn.mem_size();
        let Addr { region, lo, hi, .. } = self.address(st, insn.src, size, false)?;
        let value = match region {
            Region::Ctx => Reg::Scalar(Scalar::of_width(size as u32)),
            Region::Stack => self.stack_load(st, lo, hi, size)?,
        };
        st.set(insn.dst as usize, value);
        Ok(())
    }

    fn stack_load(&self, st: &State, lo: i64, hi: i64, size: usize) -> Result<Reg, VerifyError> {
        if lo == hi && size == 8 && lo % 8 == 0 {
            if let Slot::Spill(r) = st.stack[State::slot_of(lo).0] {
                return Ok(r);
            }
        }
        let end = hi + size as i64;
        if st.bytes_readable(lo, end) {
            return Ok(Reg::Scalar(Scalar::of_width(size as u32)));
        }
        let (first, last) = (State::slot_of(lo).0, State::slot_of(end - 1).0);
        if st.stack[first..=last]
            .iter()
            .any(|s| matches!(s, Slot::Spill(Reg::Ptr { .. })))
        {
            return self.fail(
                Kind::PointerLeak,
                format!("load from stack offset {lo} reads part of a spilled pointer"),
            );
        }
        self.fail(
            Kind::UninitStack,
            format!(
                "load of {size} bytes from stack offsets [{lo}, {end}) reads uninitialised bytes"
            ),
        )
    }

    fn store(&self, st: &mut State, writes: &mut Stores) -> Result<(), VerifyError> {
        let insn = &self.insn;
        let size = insn.mem_size();
        let value = if insn.class() == class::ST {
            Reg::Scalar(Scalar::konst(insn.imm as i64 as u64))
        } else {
            self.read(st, insn.src)?
        };
        let addr = self.address(st, insn.dst, size, true)?;
        let (region, lo, hi) = (addr.region, addr.lo, addr.hi);
        let is_ptr = matches!(value, Reg::Ptr { .. });
        match region {
            Region::Ctx => {
                if is_ptr {
                    return self.fail(
                        Kind::PointerLeak,
                        format!(
                            "stores r{}, {}, into the context",
                            insn.src,
                            value.describe()
                        ),
                    );
                }
                let end = hi as usize + size;
                match addr.starts() {
                    // Each possible start (a strided pointer: few) lands in writable bytes.
                    Some(starts) => {
                        for at in starts {
                            let at = at as usize;
                            if !ctx_writable(at, at + size) {
                                return self.fail(
                                    Kind::ReadOnlyCtx,
                                    format!("{size}-byte store at context offset {at} (one of [{lo}, {hi}] that are {} modulo {}) touches a read-only field", addr.rem, addr.stride),
                                );
                            }
                            writes.words.mark(at..at + size);
                            if writes.first_mutating_op.is_none()
                                && may_set_mutating_kind(at, size, &value)
                            {
                                writes.first_mutating_op = Some(self.i);
                            }
                        }
                    }
                    None => {
                        if !ctx_writable(lo as usize, end) {
                            return self.fail(
                                Kind::ReadOnlyCtx,
                                format!("{size}-byte store at context offsets [{lo}, {end}) touches a read-only field"),
                            );
                        }
                        writes.words.mark(lo as usize..end);
                        // A store at one of several offsets could put any of its bytes in a
                        // kind field: only a store at a known offset tells which.
                        let mutating = if lo == hi {
                            may_set_mutating_kind(lo as usize, size, &value)
                        } else {
                            op_kind_bytes().any(|k| lo as usize <= k && k < end)
                        };
                        if mutating && writes.first_mutating_op.is_none() {
                            writes.first_mutating_op = Some(self.i);
                        }
                    }
                }
            }
            Region::Stack => {
                let whole_slot = lo == hi && size == 8 && lo % 8 == 0;
                if whole_slot {
                    st.stack[State::slot_of(lo).0] = Slot::Spill(value);
                } else if is_ptr {
                    return self.fail(
                        Kind::PointerLeak,
                        format!("a pointer may only be spilled whole, by an aligned 8-byte store at a known stack offset (here {size} bytes at [{lo}, {hi}])"),
                    );
                } else if lo == hi {
                    st.write_bytes(lo, size);
                } else {
                    st.clobber_bytes(lo, hi + size as i64);
                }
            }
        }
        Ok(())
    }

    // ----- arithmetic ---------------------------------------------------------------------

    fn alu(&self, st: &mut State) -> Result<(), VerifyError> {
        let insn = &self.insn;
        let is64 = insn.class() == class::ALU64;
        let code = insn.code();
        let dst = insn.dst as usize;
        let src = if insn.uses_src_reg() && code != alu::END {
            self.read(st, insn.src)?
        } else if is64 {
            Reg::Scalar(Scalar::konst(insn.imm as i64 as u64))
        } else {
            Reg::Scalar(Scalar::konst(insn.imm as u32 as u64))
        };
        if code == alu::MOV {
            if is64 && insn.uses_src_reg() {
                st.copy(dst, insn.src as usize, self.i);
                return Ok(());
            }
            let v = match (is64, src) {
                (true, v) => v,
                (false, Reg::Scalar(s)) => Reg::Scalar(s.low32()),
                (false, p) => {
                    return self.fail(
                        Kind::PointerArithmetic,
                        format!("32-bit move of r{}, {}", insn.src, p.describe()),
                    )
                }
            };
            st.set(dst, v);
            return Ok(());
        }
        let cur = self.read(st, insn.dst)?;
        let v = match (cur, src) {
            (Reg::Scalar(a), Reg::Scalar(b)) if is64 => Reg::Scalar(self.scalar64(code, a, b)),
            (Reg::Scalar(a), Reg::Scalar(b)) => Reg::Scalar(self.scalar32(code, a, b)),
            (a, b) if is64 => self.pointer_op(code, a, b)?,
            (a, b) => {
                let p = if matches!(a, Reg::Ptr { .. }) { a } else { b };
                return self.fail(
                    Kind::PointerArithmetic,
                    format!("32-bit arithmetic on {}", p.describe()),
                );
            }
        };
        st.set(dst, v);
        Ok(())
    }

    fn scalar64(&self, code: u8, a: Scalar, b: Scalar) -> Scalar {
        let shift = b.as_const().map(|k| (k & 63) as u32);
        match code {
            alu::ADD => a.add(b),
            alu::SUB => a.sub(b),
            alu::MUL => a.mul(b),
            alu::DIV => a.div(b),
            alu::MOD => a.rem(b),
            alu::OR => a.or(b),
            alu::AND => a.and(b),
            alu::XOR => a.xor(b),
            alu::NEG => a.neg(),
            alu::LSH => shift.map_or(Scalar::UNKNOWN, |k| a.shl(k)),
            alu::RSH => shift.map_or(Scalar::urange(0, a.umax), |k| a.shr(k)),
            alu::ARSH => shift.map_or(Scalar::srange(a.smin.min(0), a.smax.max(0)), |k| a.ashr(k)),
            _ => unreachable!("cfg admits only known ALU64 operations"),
        }
    }

    fn scalar32(&self, code: u8, full: Scalar, b: Scalar) -> Scalar {
        let a = full.low32();
        let b = b.low32();
        let shift = b.as_const().map(|k| (k & 31) as u32);
        let sign_clear = a.umax <= i32::MAX as u64;
        let r = match code {
            alu::ADD => a.add(b),
            alu::SUB => a.sub(b),
            alu::MUL => a.mul(b),
            alu::DIV => a.div(b),
            // Modulo zero leaves all 64 bits of the destination unchanged in both engines.
            alu::MOD => match b.as_const() {
                Some(0) => return full,
                _ if b.umin == 0 => return full.join(a.rem(b).low32()),
                _ => a.rem(b),
            },
            alu::OR => a.or(b),
            alu::AND => a.and(b),
            alu::XOR => a.xor(b),
            alu::NEG => match a.as_const() {
                Some(v) => Scalar::konst((v as u32).wrapping_neg() as u64),
                None => Scalar::UNKNOWN,
            },
            alu::LSH => shift.map_or(Scalar::UNKNOWN, |k| a.shl(k)),
            alu::RSH => shift.map_or(Scalar::urange(0, a.umax), |k| a.shr(k)),
            alu::ARSH if sign_clear => shift.map_or(Scalar::urange(0, a.umax), |k| a.shr(k)),
            alu::ARSH => Scalar::UNKNOWN,
            alu::END => return self.byte_swap(full),
            _ => unreachable!("cfg admits only known ALU operations"),
        };
        r.low32()
    }

    /// `be16/32/64` (swap) or `le64` (no-op); cfg rejected `le16/32`.
    fn byte_swap(&self, a: Scalar) -> Scalar {
        let width = self.insn.imm;
        if !self.insn.uses_src_reg() {
            return a;
        }
        match (a.as_const(), width) {
            (Some(v), 16) => Scalar::konst((v as u16).swap_bytes() as u64),
            (Some(v), 32) => Scalar::konst((v as u32).swap_bytes() as u64),
            (Some(v), _) => Scalar::konst(v.swap_bytes()),
            (None, 16) => Scalar::of_width(2),
            (None, 32) => Scalar::of_width(4),
            (None, _) => Scalar::UNKNOWN,
        }
    }

    /// 64-bit arithmetic with a pointer operand: pointer ± scalar moves the pointer, pointer -
    /// pointer into the same region is a scalar distance; everything else would expose or
    /// forge an address.
    fn pointer_op(&self, code: u8, a: Reg, b: Reg) -> Result<Reg, VerifyError> {
        let moved = |region: Region,
                     min: i64,
                     max: i64,
                     stride: u64,
                     rem: u64,
                     s: Scalar,
                     neg: bool|
         -> Result<Reg, VerifyError> {
            let (dlo, dhi) = if neg {
                (
                    (s.smax as i128).wrapping_neg(),
                    (s.smin as i128).wrapping_neg(),
                )
            } else {
                (s.smin as i128, s.smax as i128)
            };
            let (lo, hi) = (min as i128 + dlo, max as i128 + dhi);
            // Offsets far outside both regions can only ever fail the access check; keeping
            // them bounded keeps the arithmetic exact.
            const LIMIT: i128 = 1 << 40;
            if lo < -LIMIT || hi > LIMIT {
                return self.fail(
                    Kind::PointerArithmetic,
                    format!(
                        "{} pointer moved by an unbounded scalar (in [{}, {}])",
                        region.name(),
                        s.smin,
                        s.smax
                    ),
                );
            }
            // The congruence of the new offsets: the pointer's and the scalar's combined, when
            // the scalar is a non-negative value (its congruence is of its unsigned value).
            let (mp, rp) = Reg::ptr_congruence(min, max, stride, rem);
            let (ms, rs) = s.congruence();
            let (m, r) = if s.smin >= 0 && (ms == 0 || ms <= i64::MAX as u64) {
                // A constant (modulus 0) moves the remainder by all of itself: reducing it
                // modulo 1 dropped it, and the stores of `ctx + i * 2^k + c` were checked
                // (and their footprint taken) at the wrong offsets. The bounds check above
                // keeps a constant below 2^40.
                let rs = if ms == 0 { rs as i64 } else { (rs % ms) as i64 };
                (gcd(mp, ms), if neg { rp - rs } else { rp + rs })
            } else {
                (1, 0)
            };
            Ok(Reg::ptr_range(region, lo as i64, hi as i64, m, r))
        };
        match (code, a, b) {
            (
                alu::ADD,
                Reg::Ptr {
                    region,
                    min,
                    max,
                    stride,
                    rem,
                },
                Reg::Scalar(s),
            )
            | (
                alu::ADD,
                Reg::Scalar(s),
                Reg::Ptr {
                    region,
                    min,
                    max,
                    stride,
                    rem,
                },
            ) => moved(region, min, max, stride, rem, s, false),
            (
                alu::SUB,
                Reg::Ptr {
                    region,
                    min,
                    max,
                    stride,
                    rem,
                },
                Reg::Scalar(s),
            ) => moved(region, min, max, stride, rem, s, true),
            (
                alu::SUB,
                Reg::Ptr {
                    region: ra,
                    min: a0,
                    max: a1,
                    ..
                },
                Reg::Ptr {
                    region: rb,
                    min: b0,
                    max: b1,
                    ..
                },
            ) if ra == rb => Ok(Reg::Scalar(Scalar::srange(a0 - b1, a1 - b0))),
            _ => {
                let p = if matches!(a, Reg::Ptr { .. }) { a } else { b };
                self.fail(
                    Kind::PointerArithmetic,
                    format!("{} on {}: only pointer ± scalar and the distance of two pointers into one region are allowed", alu_name(code), p.describe()),
                )
            }
        }
    }

    // ----- control ------------------------------------------------------------------------

    fn jump(&self, st: &mut State) -> Result<Flow, VerifyError> {
        let insn = &self.insn;
        let target = (self.i as i64 + 1 + insn.off as i64) as usize;
        match insn.code() {
            jmp::JA => return Ok(Flow::Jump(target)),
            jmp::EXIT => {
                if st.regs[0] == Reg::Mixed {
                    return self.fail(
                        Kind::ReturnPointer,
                        "r0 at exit is a pointer on some paths: handlers may only return scalars",
                    );
                }
                return match self.read(st, 0) {
                    Ok(Reg::Scalar(_)) => Ok(Flow::Exit),
                    Ok(p) => self.fail(
                        Kind::ReturnPointer,
                        format!(
                            "r0 at exit is {}: handlers may only return scalars",
                            p.describe()
                        ),
                    ),
                    Err(_) => self.fail(
                        Kind::UninitRegister,
                        "r0 is not initialised at exit on every path",
                    ),
                };
            }
            jmp::CALL => return self.call(st),
            _ => {}
        }
        let is32 = insn.class() == class::JMP32;
        let a = self.read(st, insn.dst)?;
        let unsigned_cmp = matches!(
            insn.code(),
            jmp::JEQ | jmp::JNE | jmp::JGT | jmp::JGE | jmp::JLT | jmp::JLE
        );
        let b = if insn.uses_src_reg() {
            self.read(st, insn.src)?
        } else if is32 {
            Reg::Scalar(Scalar::konst(insn.imm as u32 as u64))
        } else if unsigned_cmp && insn.imm < 0 {
            // rbpf's interpreter zero-extends this immediate, its JIT sign-extends it (as
            // Linux does): refine with a range holding both, which is sound for either.
            Reg::Scalar(Scalar::urange(
                insn.imm as u32 as u64,
                insn.imm as i64 as u64,
            ))
        } else {
            Reg::Scalar(Scalar::konst(insn.imm as i64 as u64))
        };
        let (a, b) = match (a, b) {
            (Reg::Scalar(a), Reg::Scalar(b)) => (a, b),
            (Reg::Ptr { region: ra, .. }, Reg::Ptr { region: rb, .. })
                if ra == rb && !is32 && insn.code() != jmp::JSET =>
            {
                // Comparing two pointers into one region (ordering or equality) reveals only
                // their distance; `jset` would test bits of the addresses themselves.
                return Ok(Flow::Branch {
                    target,
                    taken: Some(Box::new(st.clone())),
                    fall: Some(Box::new(st.clone())),
                });
            }
            (a, b) => {
                let p = if matches!(a, Reg::Ptr { .. }) { a } else { b };
                return self.fail(
                    Kind::PointerCompare,
                    format!("comparison involving {}: pointers may only be compared (64-bit, by order or equality, not jset) with pointers into the same region", p.describe()),
                );
            }
        };
        let same_reg = insn.uses_src_reg() && insn.src == insn.dst;
        let refined = |taken: bool| -> Option<Box<State>> {
            if same_reg {
                return Some(Box::new(st.clone()));
            }
            let (ra, rb) = refine(insn.code(), is32, a, b, taken)?;
            let mut s = Box::new(st.clone());
            let (d, r) = (insn.dst as usize, insn.src as usize);
            if insn.uses_src_reg() && s.links[d] != 0 && s.links[d] == s.links[r] {
                // Two copies of one value compared: nothing to learn about either alone.
                return Some(s);
            }
            s.refine(d, Reg::Scalar(ra));
            if insn.uses_src_reg() {
                s.refine(r, Reg::Scalar(rb));
            }
            Some(s)
        };
        Ok(Flow::Branch {
            target,
            taken: refined(true),
            fall: refined(false),
        })
    }

    fn call(&self, st: &mut State) -> Result<Flow, VerifyError> {
        let id = self.insn.imm as u32;
        let Some(&(_, name, nargs, _)) = crate::helpers::lookup(id) else {
            return self.fail(
                Kind::UnknownHelper,
                format!("call to helper {id}, which is not in the whitelist"),
            );
        };
        for r in 1..=nargs {
            match st.regs[r as usize] {
                Reg::Scalar(_) => {}
                v => {
                    return self.fail(
                        Kind::HelperArg,
                        format!(
                            "{name} takes {nargs} scalar arguments, but r{r} is {}",
                            v.describe()
                        ),
                    )
                }
            }
        }
        for r in 1..=5 {
            st.set(r, Reg::Uninit);
        }
        st.set(0, Reg::Scalar(Scalar::UNKNOWN));
        Ok(Flow::Next)
    }
}

/// Whether every byte of `lo .. end` lies in a writable part of the context (adjacent
/// writable ranges, like `state` and `ops[0]`, count as one).
fn ctx_writable(lo: usize, end: usize) -> bool {
    let mut covered = lo;
    for r in writable_ranges() {
        if r.start <= covered && covered < r.end {
            covered = r.end;
        }
        if covered >= end {
            return true;
        }
    }
    false
}

fn alu_name(code: u8) -> &'static str {
    [
        "add", "sub", "mul", "div", "or", "and", "lsh", "rsh", "neg", "mod", "xor", "mov", "arsh",
        "end",
    ]
    .get(code as usize)
    .copied()
    .unwrap_or("?")
}
