//! The abstract value of a scalar register: unsigned and signed intervals plus known bits.
//!
//! The three views are kept consistent by [`Scalar::sync`], the way the Linux verifier does it
//! (simplified): known bits bound the unsigned interval, and each interval bounds the other
//! when it does not cross the sign boundary. Every transfer function over-approximates the
//! concrete result of rbpf's interpreter *and* its JIT (which agree on every instruction the
//! verifier accepts), so a value the analysis says lies in `[umin, umax]` really does.

/// Known bits: bit `i` is known to be `value`'s bit `i` unless `mask` has it set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tnum {
    pub value: u64,
    pub mask: u64,
}

impl Tnum {
    pub const UNKNOWN: Tnum = Tnum {
        value: 0,
        mask: u64::MAX,
    };

    pub const fn konst(v: u64) -> Tnum {
        Tnum { value: v, mask: 0 }
    }

    /// All values in `[min, max]`: the common high bits are known.
    pub fn range(min: u64, max: u64) -> Tnum {
        let chi = min ^ max;
        let bits = 64 - chi.leading_zeros();
        if bits >= 64 {
            return Tnum::UNKNOWN;
        }
        let delta = (1u64 << bits) - 1;
        Tnum {
            value: min & !delta,
            mask: delta,
        }
    }

    pub fn and(self, o: Tnum) -> Tnum {
        let alpha = self.value | self.mask;
        let beta = o.value | o.mask;
        let v = self.value & o.value;
        Tnum {
            value: v,
            mask: alpha & beta & !v,
        }
    }

    pub fn or(self, o: Tnum) -> Tnum {
        let v = self.value | o.value;
        let mu = self.mask | o.mask;
        Tnum {
            value: v,
            mask: mu & !v,
        }
    }

    pub fn xor(self, o: Tnum) -> Tnum {
        let v = self.value ^ o.value;
        let mu = self.mask | o.mask;
        Tnum {
            value: v & !mu,
            mask: mu,
        }
    }

    pub fn add(self, o: Tnum) -> Tnum {
        let sm = self.mask.wrapping_add(o.mask);
        let sv = self.value.wrapping_add(o.value);
        let sigma = sm.wrapping_add(sv);
        let chi = sigma ^ sv;
        let mu = chi | self.mask | o.mask;
        Tnum {
            value: sv & !mu,
            mask: mu,
        }
    }

    pub fn sub(self, o: Tnum) -> Tnum {
        let dv = self.value.wrapping_sub(o.value);
        let alpha = dv.wrapping_add(self.mask);
        let beta = dv.wrapping_sub(o.mask);
        let chi = alpha ^ beta;
        let mu = chi | self.mask | o.mask;
        Tnum {
            value: dv & !mu,
            mask: mu,
        }
    }

    pub fn shl(self, k: u32) -> Tnum {
        Tnum {
            value: self.value << k,
            mask: self.mask << k,
        }
    }

    pub fn shr(self, k: u32) -> Tnum {
        Tnum {
            value: self.value >> k,
            mask: self.mask >> k,
        }
    }

    pub fn ashr(self, k: u32) -> Tnum {
        Tnum {
            value: ((self.value as i64) >> k) as u64,
            mask: ((self.mask as i64) >> k) as u64,
        }
    }

    /// The low 32 bits, zero-extended.
    pub fn low32(self) -> Tnum {
        Tnum {
            value: self.value & 0xffff_ffff,
            mask: self.mask & 0xffff_ffff,
        }
    }

    /// Values either side may hold.
    pub fn union(self, o: Tnum) -> Tnum {
        let mu = self.mask | o.mask | (self.value ^ o.value);
        Tnum {
            value: self.value & !mu,
            mask: mu,
        }
    }

    /// Values both sides allow; `None` when they contradict each other.
    pub fn intersect(self, o: Tnum) -> Option<Tnum> {
        let known_both = !self.mask & !o.mask;
        if (self.value ^ o.value) & known_both != 0 {
            return None;
        }
        let v = self.value | o.value;
        let mu = self.mask & o.mask;
        Some(Tnum {
            value: v & !mu,
            mask: mu,
        })
    }

    fn umin(self) -> u64 {
        self.value
    }

    fn umax(self) -> u64 {
        self.value | self.mask
    }
}

/// A scalar: every concrete value `v` it stands for satisfies `umin <= v <= umax`,
/// `smin <= v as i64 <= smax`, `v` matches the known bits of `bits`, and `v % stride == rem`
/// (a congruence, the stride domain: `i * 56` for a bounded `i` is a multiple of 56, which
/// intervals and known bits cannot say; `stride == 1` says nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scalar {
    pub umin: u64,
    pub umax: u64,
    pub smin: i64,
    pub smax: i64,
    pub bits: Tnum,
    pub stride: u64,
    pub rem: u64,
}

/// Greatest common divisor (`gcd(0, x) == x`).
pub fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Scalar {
    pub const UNKNOWN: Scalar = Scalar {
        umin: 0,
        umax: u64::MAX,
        smin: i64::MIN,
        smax: i64::MAX,
        bits: Tnum::UNKNOWN,
        stride: 1,
        rem: 0,
    };

    pub const fn konst(v: u64) -> Scalar {
        Scalar {
            umin: v,
            umax: v,
            smin: v as i64,
            smax: v as i64,
            bits: Tnum::konst(v),
            stride: 1,
            rem: 0,
        }
    }

    /// The congruence as `(modulus, remainder)`, with modulus 0 for a constant (exactly the
    /// remainder): the form in which gcds combine two of them.
    pub fn congruence(&self) -> (u64, u64) {
        match self.as_const() {
            Some(c) => (0, c),
            None => (self.stride, self.rem),
        }
    }

    /// The same values, also known to be `rem` modulo `stride` (nothing new when `stride` is 0
    /// or 1).
    pub fn with_congruence(mut self, stride: u64, rem: u64) -> Scalar {
        if stride > 1 && self.as_const().is_none() {
            self.stride = stride;
            self.rem = rem % stride;
        }
        self
    }

    /// Any value in `[min, max]` (unsigned).
    pub fn urange(min: u64, max: u64) -> Scalar {
        Scalar {
            umin: min,
            umax: max,
            smin: i64::MIN,
            smax: i64::MAX,
            bits: Tnum::range(min, max),
            stride: 1,
            rem: 0,
        }
        .sync()
        .unwrap_or(Scalar::UNKNOWN)
    }

    /// Any value whose signed view lies in `[min, max]`.
    pub fn srange(min: i64, max: i64) -> Scalar {
        Scalar::build(0, u64::MAX, min, max, Tnum::UNKNOWN)
    }

    /// Any value `0 ..= 2^(8 * bytes) - 1`: what a load of `bytes` bytes produces.
    pub fn of_width(bytes: u32) -> Scalar {
        if bytes >= 8 {
            Scalar::UNKNOWN
        } else {
            Scalar::urange(0, (1u64 << (8 * bytes)) - 1)
        }
    }

    pub fn as_const(&self) -> Option<u64> {
        (self.umin == self.umax).then_some(self.umin)
    }

    /// Tightens the three views against each other; `None` when no value satisfies all of them
    /// (the path that produced this scalar cannot run).
    pub fn sync(mut self) -> Option<Scalar> {
        // Known bits bound the unsigned interval, and a narrow interval fixes high bits.
        self.umin = self.umin.max(self.bits.umin());
        self.umax = self.umax.min(self.bits.umax());
        if self.umin > self.umax {
            return None;
        }
        self.bits = self.bits.intersect(Tnum::range(self.umin, self.umax))?;
        // Unsigned -> signed when the unsigned range does not cross the sign boundary.
        if (self.umin as i64) <= (self.umax as i64) {
            self.smin = self.smin.max(self.umin as i64);
            self.smax = self.smax.min(self.umax as i64);
        }
        if self.smin > self.smax {
            return None;
        }
        // Signed -> unsigned when the signed range does not cross zero.
        if (self.smin as u64) <= (self.smax as u64) {
            self.umin = self.umin.max(self.smin as u64);
            self.umax = self.umax.min(self.smax as u64);
        }
        if self.umin > self.umax {
            return None;
        }
        if self.umin == self.umax {
            self.bits = self.bits.intersect(Tnum::konst(self.umin))?;
        }
        Some(self)
    }

    /// Sound after any operation: rebuild from the given parts, falling back to "anything".
    fn build(umin: u64, umax: u64, smin: i64, smax: i64, bits: Tnum) -> Scalar {
        Scalar {
            umin,
            umax,
            smin,
            smax,
            bits,
            stride: 1,
            rem: 0,
        }
        .sync()
        .unwrap_or(Scalar::UNKNOWN)
    }

    fn from_bits(bits: Tnum) -> Scalar {
        Scalar::build(0, u64::MAX, i64::MIN, i64::MAX, bits)
    }

    pub fn join(self, o: Scalar) -> Scalar {
        let ((m1, r1), (m2, r2)) = (self.congruence(), o.congruence());
        let m = gcd(gcd(m1, m2), r1.abs_diff(r2));
        Scalar::build(
            self.umin.min(o.umin),
            self.umax.max(o.umax),
            self.smin.min(o.smin),
            self.smax.max(o.smax),
            self.bits.union(o.bits),
        )
        .with_congruence(m, r1 % m.max(1))
    }

    pub fn add(self, o: Scalar) -> Scalar {
        let (umin, umax) = match (self.umin.checked_add(o.umin), self.umax.checked_add(o.umax)) {
            (Some(a), Some(b)) => (a, b),
            _ => (0, u64::MAX),
        };
        let (smin, smax) = match (self.smin.checked_add(o.smin), self.smax.checked_add(o.smax)) {
            (Some(a), Some(b)) => (a, b),
            _ => (i64::MIN, i64::MAX),
        };
        let sum = Scalar::build(umin, umax, smin, smax, self.bits.add(o.bits));
        // Without wrap-around (the unsigned sum cannot overflow), remainders add.
        if self.umax.checked_add(o.umax).is_none() {
            return sum;
        }
        let ((m1, r1), (m2, r2)) = (self.congruence(), o.congruence());
        let m = gcd(m1, m2);
        sum.with_congruence(m, (r1 % m.max(1) + r2 % m.max(1)) % m.max(1))
    }

    pub fn sub(self, o: Scalar) -> Scalar {
        let (umin, umax) = if self.umin >= o.umax {
            (self.umin - o.umax, self.umax - o.umin)
        } else {
            (0, u64::MAX)
        };
        let (smin, smax) = match (self.smin.checked_sub(o.smax), self.smax.checked_sub(o.smin)) {
            (Some(a), Some(b)) => (a, b),
            _ => (i64::MIN, i64::MAX),
        };
        Scalar::build(umin, umax, smin, smax, self.bits.sub(o.bits))
    }

    pub fn mul(self, o: Scalar) -> Scalar {
        if let (Some(a), Some(b)) = (self.as_const(), o.as_const()) {
            return Scalar::konst(a.wrapping_mul(b));
        }
        match self.umax.checked_mul(o.umax) {
            Some(max) => {
                let product = Scalar::urange(self.umin * o.umin, max);
                // Without wrap-around, `v * c` for `v = r + k * m` is `r * c + k * (m * c)`.
                let (v, c) = match (self.as_const(), o.as_const()) {
                    (_, Some(c)) => (self, c),
                    (Some(c), _) => (o, c),
                    _ => return product,
                };
                if c == 0 {
                    return Scalar::konst(0);
                }
                // `rem < stride`, so `rem * c` cannot overflow where `stride * c` did not.
                match v.stride.checked_mul(c) {
                    Some(m) if v.stride > 1 => product.with_congruence(m, v.rem * c % m),
                    _ => product.with_congruence(c, 0),
                }
            }
            None => Scalar::UNKNOWN,
        }
    }

    /// Unsigned division as rbpf does it: division by zero gives 0.
    pub fn div(self, o: Scalar) -> Scalar {
        match o.as_const() {
            Some(0) => Scalar::konst(0),
            Some(c) => Scalar::urange(self.umin / c, self.umax / c),
            None if o.umin > 0 => Scalar::urange(self.umin / o.umax, self.umax / o.umin),
            None => Scalar::urange(0, self.umax),
        }
    }

    /// Unsigned remainder as rbpf does it: modulo zero leaves the dividend unchanged.
    pub fn rem(self, o: Scalar) -> Scalar {
        match o.as_const() {
            Some(0) => self,
            Some(c) if self.umax < c => self,
            Some(c) => Scalar::urange(0, c - 1),
            None if o.umin > 0 => Scalar::urange(0, self.umax.min(o.umax - 1)),
            None => Scalar::urange(0, self.umax),
        }
    }

    pub fn and(self, o: Scalar) -> Scalar {
        let bits = self.bits.and(o.bits);
        Scalar::build(bits.value, self.umax.min(o.umax), i64::MIN, i64::MAX, bits)
    }

    pub fn or(self, o: Scalar) -> Scalar {
        // a | b <= a + b: bounds `(i << 1 & 126) | 1` by 95, where known bits only give 127.
        let bits = self.bits.or(o.bits);
        let umax = self.umax.saturating_add(o.umax);
        Scalar::build(self.umin.max(o.umin), umax, i64::MIN, i64::MAX, bits)
    }

    pub fn xor(self, o: Scalar) -> Scalar {
        // a ^ b <= a | b <= a + b.
        let umax = self.umax.saturating_add(o.umax);
        Scalar::build(0, umax, i64::MIN, i64::MAX, self.bits.xor(o.bits))
    }

    /// Left shift by `k < 64`.
    pub fn shl(self, k: u32) -> Scalar {
        let bits = self.bits.shl(k);
        if k == 0 {
            return self;
        }
        if self.umax.leading_zeros() >= k {
            // Without overflow a shift is a multiplication by 2^k.
            self.mul(Scalar::konst(1 << k)).meet_bounds(Scalar::build(
                self.umin << k,
                self.umax << k,
                i64::MIN,
                i64::MAX,
                bits,
            ))
        } else {
            Scalar::from_bits(bits)
        }
    }

    /// Logical right shift by `k < 64`.
    pub fn shr(self, k: u32) -> Scalar {
        Scalar::build(
            self.umin >> k,
            self.umax >> k,
            i64::MIN,
            i64::MAX,
            self.bits.shr(k),
        )
    }

    /// Arithmetic right shift by `k < 64`.
    pub fn ashr(self, k: u32) -> Scalar {
        Scalar::build(
            0,
            u64::MAX,
            self.smin >> k,
            self.smax >> k,
            self.bits.ashr(k),
        )
    }

    pub fn neg(self) -> Scalar {
        match self.as_const() {
            Some(v) => Scalar::konst(v.wrapping_neg()),
            None => Scalar::UNKNOWN,
        }
    }

    /// `self` further bounded by `o`'s intervals and known bits (both hold), keeping `self`'s
    /// congruence.
    fn meet_bounds(self, o: Scalar) -> Scalar {
        let bits = self.bits.intersect(o.bits).unwrap_or(self.bits);
        Scalar {
            umin: self.umin.max(o.umin),
            umax: self.umax.min(o.umax),
            smin: self.smin.max(o.smin),
            smax: self.smax.min(o.smax),
            bits,
            ..self
        }
        .sync()
        .unwrap_or(self)
    }

    /// The low 32 bits, zero-extended (what every 32-bit ALU operation leaves behind).
    pub fn low32(self) -> Scalar {
        if self.umax <= u32::MAX as u64 {
            self
        } else {
            Scalar::build(0, u32::MAX as u64, 0, u32::MAX as i64, self.bits.low32())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(s: &Scalar, v: u64) -> bool {
        s.umin <= v
            && v <= s.umax
            && s.smin <= v as i64
            && v as i64 <= s.smax
            && (v & !s.bits.mask) == s.bits.value
            && v % s.stride == s.rem
    }

    #[test]
    fn a_strided_value_times_zero_is_zero_not_a_panic() {
        // Found by the random differential test: `m = stride * 0` was then a divisor.
        let v = Scalar::urange(8, 64).with_congruence(8, 0);
        let z = Scalar::konst(0);
        assert_eq!(v.mul(z).as_const(), Some(0));
        assert_eq!(z.mul(v).as_const(), Some(0));
    }

    #[test]
    fn and_with_mask_bounds_index() {
        let s = Scalar::UNKNOWN.and(Scalar::konst(15));
        assert_eq!((s.umin, s.umax), (0, 15));
        assert_eq!((s.smin, s.smax), (0, 15));
    }

    #[test]
    fn shifts_and_constants() {
        let s = Scalar::urange(0, 15).shl(3);
        assert_eq!((s.umin, s.umax), (0, 120));
        assert_eq!(s.bits.value & 7, 0);
        assert_eq!(s.bits.mask & 7, 0, "low bits known zero");
        let s = Scalar::UNKNOWN.shr(60);
        assert_eq!(s.umax, 15);
        assert_eq!(Scalar::konst(5).add(Scalar::konst(7)).as_const(), Some(12));
        assert_eq!(
            Scalar::konst(5).sub(Scalar::konst(7)).as_const(),
            Some(u64::MAX - 1)
        );
    }

    #[test]
    fn a_scaled_index_is_a_multiple_of_its_scale() {
        let i = Scalar::urange(0, 3);
        let s = i.mul(Scalar::konst(56));
        assert_eq!((s.umin, s.umax, s.stride, s.rem), (0, 168, 56, 0));
        let s = s.add(Scalar::konst(1392));
        assert_eq!(
            (s.umin, s.umax, s.stride, s.rem),
            (1392, 1560, 56, 1392 % 56)
        );
        let t = Scalar::urange(0, 7).shl(4).add(Scalar::urange(0, 3).shl(5));
        assert_eq!(t.stride, 16, "gcd of the two scales");
        let j = Scalar::konst(0)
            .join(Scalar::konst(56))
            .join(Scalar::konst(112));
        assert_eq!((j.stride, j.rem), (56, 0));
        // Wrap-around forgets it.
        let w = Scalar::urange(0, u64::MAX / 2).mul(Scalar::konst(3));
        assert_eq!(w.stride, 1);
        let w =
            Scalar::urange(u64::MAX - 10, u64::MAX).add(Scalar::urange(0, 5).mul(Scalar::konst(8)));
        assert_eq!(w.stride, 1);
    }

    #[test]
    fn ops_contain_concrete_results() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let pick = |rng: &mut rand::rngs::StdRng| -> (Scalar, u64) {
                let a: u64 = match rng.gen_range(0..4) {
                    0 => rng.gen_range(0..64),
                    1 => rng.gen(),
                    2 => (rng.gen::<i16>()) as i64 as u64,
                    _ => rng.gen_range(0..5000),
                };
                let b = a.wrapping_add(rng.gen_range(0..300));
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                let s = Scalar::urange(lo, hi);
                let v = rng.gen_range(lo..=hi);
                if rng.gen_range(0..3) == 0 && hi < 1 << 20 {
                    // A scaled index: `k * c` with its stride.
                    let c = rng.gen_range(2..100u64);
                    let s = Scalar::urange(lo, hi).mul(Scalar::konst(c));
                    return (s, v * c);
                }
                (s, v)
            };
            let (x, xv) = pick(&mut rng);
            let (y, yv) = pick(&mut rng);
            assert!(contains(&x, xv));
            let k = (yv & 63) as u32;
            let cases = [
                (x.add(y), xv.wrapping_add(yv)),
                (x.sub(y), xv.wrapping_sub(yv)),
                (x.mul(y), xv.wrapping_mul(yv)),
                (x.div(y), xv.checked_div(yv).unwrap_or(0)),
                (x.rem(y), xv.checked_rem(yv).unwrap_or(xv)),
                (x.and(y), xv & yv),
                (x.or(y), xv | yv),
                (x.xor(y), xv ^ yv),
                (x.shl(k), xv << k),
                (x.shr(k), xv >> k),
                (x.ashr(k), ((xv as i64) >> k) as u64),
                (x.neg(), xv.wrapping_neg()),
                (x.low32(), xv & 0xffff_ffff),
                (x.join(y), xv),
            ];
            for (i, (s, v)) in cases.iter().enumerate() {
                assert!(
                    contains(s, *v),
                    "op {i}: {x:?} {xv} {y:?} {yv} -> {s:?} misses {v}"
                );
            }
        }
    }
}
