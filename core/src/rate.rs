//! A token bucket with the time passed in: `per_s` events a second on average, `burst` at
//! once. The credit is kept as time (nanoseconds of earned events), so no fraction of an
//! event is lost between two looks.

/// See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Nanoseconds one event costs (`1e9 / per_s`).
    every_ns: u64,
    /// The most credit kept (`burst` events).
    full_ns: u64,
    credit_ns: u64,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ns`. `per_s` and `burst` are at least 1.
    pub fn new(per_s: u64, burst: u64, now_ns: u64) -> TokenBucket {
        let every_ns = 1_000_000_000 / per_s.clamp(1, 1_000_000_000);
        let full_ns = every_ns.saturating_mul(burst.max(1));
        TokenBucket {
            every_ns,
            full_ns,
            credit_ns: full_ns,
            last_ns: now_ns,
        }
    }

    /// Takes one event at `now_ns`; `Err(ns)` until one is available, and how long that is.
    pub fn take(&mut self, now_ns: u64) -> Result<(), u64> {
        let earned = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        self.credit_ns = self.credit_ns.saturating_add(earned).min(self.full_ns);
        if self.credit_ns >= self.every_ns {
            self.credit_ns -= self.every_ns;
            Ok(())
        } else {
            Err(self.every_ns - self.credit_ns)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::new(10, 3, 0);
        assert!((0..3).all(|_| b.take(0).is_ok()));
        assert_eq!(b.take(0), Err(S / 10));
        assert_eq!(b.take(S / 20), Err(S / 20), "half earned");
        assert_eq!(b.take(S / 10), Ok(()));
        // Over 10 s, 100 more, however they are asked for.
        let taken = (0..10_000u64)
            .filter(|i| b.take(S / 10 + i * S / 1000).is_ok())
            .count();
        assert!((99..=101).contains(&taken), "{taken}");
        // A clock that goes back earns nothing and loses nothing.
        let mut b = TokenBucket::new(1, 1, 5 * S);
        assert_eq!(b.take(4 * S), Ok(()));
        assert!(b.take(5 * S).is_err());
        assert_eq!(b.take(6 * S), Ok(()));
    }
}
