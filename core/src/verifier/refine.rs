//! Branch refinement: what a comparison's outcome says about its two scalar operands, on each
//! edge of a conditional jump (used by `check.rs`). Each relation narrows the operands'
//! intervals and known bits, or proves the edge impossible (`None`).

use super::cfg::jmp;
use super::scalar::{Scalar, Tnum};

/// Refines two operands assuming one relation between them.
type Refine = fn(Scalar, Scalar) -> Option<(Scalar, Scalar)>;

/// The operands of a comparison refined by its outcome (`taken`), or `None` when that outcome
/// is impossible.
pub(super) fn refine(
    code: u8,
    is32: bool,
    a: Scalar,
    b: Scalar,
    taken: bool,
) -> Option<(Scalar, Scalar)> {
    let signed = matches!(code, jmp::JSGT | jmp::JSGE | jmp::JSLT | jmp::JSLE);
    if is32 {
        // A 32-bit comparison sees the low halves. When both values fit in 32 bits, an
        // unsigned one means the 64-bit comparison; a signed one means the comparison of the
        // sign-extended halves, which are intervals again unless they straddle the sign bit.
        if a.umax > u32::MAX as u64 || b.umax > u32::MAX as u64 {
            return Some((a, b));
        }
        if signed {
            let (ra, rb) = refine(code, false, sext32(a), sext32(b), taken)?;
            return Some((unsext32(a, ra)?, unsext32(b, rb)?));
        }
    }
    let swap = |r: Option<(Scalar, Scalar)>| r.map(|(x, y)| (y, x));
    let (lt, le): (Refine, Refine) = if signed && !is32 {
        (slt, sle)
    } else {
        (ult, ule)
    };
    match (code, taken) {
        (jmp::JEQ, true) | (jmp::JNE, false) => eq(a, b),
        (jmp::JEQ, false) | (jmp::JNE, true) => ne(a, b),
        (jmp::JGT | jmp::JSGT, true) => swap(lt(b, a)),
        (jmp::JGT | jmp::JSGT, false) => le(a, b),
        (jmp::JGE | jmp::JSGE, true) => swap(le(b, a)),
        (jmp::JGE | jmp::JSGE, false) => lt(a, b),
        (jmp::JLT | jmp::JSLT, true) => lt(a, b),
        (jmp::JLT | jmp::JSLT, false) => swap(le(b, a)),
        (jmp::JLE | jmp::JSLE, true) => le(a, b),
        (jmp::JLE | jmp::JSLE, false) => swap(lt(b, a)),
        (jmp::JSET, false) => match b.as_const() {
            Some(c) => {
                let bits = a.bits.intersect(Tnum { value: 0, mask: !c })?;
                Some((Scalar { bits, ..a }.sync()?, b))
            }
            None => Some((a, b)),
        },
        _ => Some((a, b)),
    }
}

/// The signed value of a 32-bit quantity's sign extension.
fn sext32(s: Scalar) -> Scalar {
    const HALF: u64 = 1 << 31;
    if s.umax < HALF {
        s
    } else if s.umin >= HALF {
        Scalar::srange(s.umin as i64 - (1 << 32), s.umax as i64 - (1 << 32))
    } else {
        Scalar::srange(i32::MIN as i64, i32::MAX as i64)
    }
}

/// `orig` narrowed by what [`sext32`]'s refined image `r` says; `None` when nothing is left.
fn unsext32(orig: Scalar, r: Scalar) -> Option<Scalar> {
    if r.smin >= 0 {
        meet(orig, Scalar::urange(r.smin as u64, r.smax as u64))
    } else if r.smax < 0 {
        meet(
            orig,
            Scalar::urange((r.smin + (1 << 32)) as u64, (r.smax + (1 << 32)) as u64),
        )
    } else {
        Some(orig)
    }
}

/// Values both scalars allow (with either's congruence: both hold).
fn meet(a: Scalar, b: Scalar) -> Option<Scalar> {
    let (stride, rem) = if a.stride > 1 {
        (a.stride, a.rem)
    } else {
        (b.stride, b.rem)
    };
    Scalar {
        umin: a.umin.max(b.umin),
        umax: a.umax.min(b.umax),
        smin: a.smin.max(b.smin),
        smax: a.smax.min(b.smax),
        bits: a.bits.intersect(b.bits)?,
        stride,
        rem,
    }
    .sync()
}

fn ult(mut a: Scalar, mut b: Scalar) -> Option<(Scalar, Scalar)> {
    a.umax = a.umax.min(b.umax.checked_sub(1)?);
    b.umin = b.umin.max(a.umin.checked_add(1)?);
    Some((a.sync()?, b.sync()?))
}

fn ule(mut a: Scalar, mut b: Scalar) -> Option<(Scalar, Scalar)> {
    a.umax = a.umax.min(b.umax);
    b.umin = b.umin.max(a.umin);
    Some((a.sync()?, b.sync()?))
}

fn slt(mut a: Scalar, mut b: Scalar) -> Option<(Scalar, Scalar)> {
    a.smax = a.smax.min(b.smax.checked_sub(1)?);
    b.smin = b.smin.max(a.smin.checked_add(1)?);
    Some((a.sync()?, b.sync()?))
}

fn sle(mut a: Scalar, mut b: Scalar) -> Option<(Scalar, Scalar)> {
    a.smax = a.smax.min(b.smax);
    b.smin = b.smin.max(a.smin);
    Some((a.sync()?, b.sync()?))
}

fn eq(a: Scalar, b: Scalar) -> Option<(Scalar, Scalar)> {
    let m = meet(a, b)?;
    Some((m, m))
}

fn ne(a: Scalar, b: Scalar) -> Option<(Scalar, Scalar)> {
    fn exclude(mut s: Scalar, v: u64) -> Option<Scalar> {
        if s.umin == v {
            s.umin = s.umin.checked_add(1)?;
        }
        if s.umax == v {
            s.umax = s.umax.checked_sub(1)?;
        }
        if s.smin == v as i64 {
            s.smin = s.smin.checked_add(1)?;
        }
        if s.smax == v as i64 {
            s.smax = s.smax.checked_sub(1)?;
        }
        s.sync()
    }
    let a2 = match b.as_const() {
        Some(v) => exclude(a, v)?,
        None => a,
    };
    let b2 = match a.as_const() {
        Some(v) => exclude(b, v)?,
        None => b,
    };
    Some((a2, b2))
}
