//! Performance isolation between tenants on one NIC worker: admission by deficit round robin
//! over the handler time each tenant's messages really cost.
//!
//! The verifier keeps tenants out of each other's memory, not out of each other's time: a
//! tenant with expensive handlers, or one that sends at a high rate, would take the shared VM
//! pool from everyone (first come, first served). Here every handler step is charged to its
//! tenant in measured nanoseconds, and time is cut into rounds (`window_ns`, 1 ms). While the
//! worker is saturated (busy for most of the last round), each round gives every active tenant
//! a quantum of handler time in proportion to its weight — what a tenant that needs less than
//! its share leaves is shared among the others (water-filling), so the scheduler is
//! work-conserving — and a tenant whose deficit is spent is refused (`busy`, with the time
//! until its next quantum as the retry-after hint) until the next round. Debt carries over,
//! credit does not (no tenant banks an idle round to burst later). A worker that is not
//! saturated admits everything.
//!
//! Refusing rather than queueing keeps the data path as it is (no per-tenant packet queues,
//! no copies): a refused message costs a parse and a short reply, and the client's window,
//! cut by the refusal, lowers the offered load.
//!
//! Pure logic: time is passed in, nothing allocates after [`TenantShares::new`].

/// Tenants tracked per worker; more share the last slot (and its share).
pub const MAX_TENANTS: usize = 32;

/// Rounds of one millisecond: short next to a client's retry, long next to a handler step.
pub const DEFAULT_WINDOW_NS: u64 = 1_000_000;

/// The longest retry-after a refusal names, in rounds past the current one.
const MAX_WAIT_ROUNDS: u64 = 4;

/// The worker counts as saturated when it was busy for this share of the last round.
const SATURATED: f64 = 0.9;

#[derive(Debug, Clone, PartialEq)]
pub struct FairConfig {
    /// Off: first come, first served (every message admitted; time still charged).
    pub enabled: bool,
    pub window_ns: u64,
    /// `(tenant, weight)`; tenants not listed weigh 1.
    pub weights: Vec<(u32, u32)>,
}

impl Default for FairConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_ns: DEFAULT_WINDOW_NS,
            weights: Vec::new(),
        }
    }
}

impl FairConfig {
    fn weight(&self, tenant: u32) -> u32 {
        self.weights
            .iter()
            .find(|(t, _)| *t == tenant)
            .map_or(1, |(_, w)| (*w).max(1))
    }

    /// Parses `TENANT=WEIGHT` (the `--tenant-weight` flag).
    pub fn parse_weight(s: &str) -> Result<(u32, u32), String> {
        let (t, w) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected TENANT=WEIGHT"))?;
        let t = t
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: tenant {t:?} is not a number"))?;
        let w: u32 = w
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: weight {w:?} is not a number"))?;
        if w == 0 || w > 1_000_000 {
            return Err(format!("{s:?}: weight {w} is not in 1..=1000000"));
        }
        Ok((t, w))
    }
}

/// One tenant's account on this worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantAccount {
    pub tenant: u32,
    weight: u32,
    /// Handler ns it may still use this round (negative: in debt).
    deficit: i64,
    /// This round: handler ns used, messages refused, whether it sent anything.
    used: u64,
    refused_now: u64,
    active: bool,
    /// Its quantum this round.
    quantum: u64,
    /// Totals.
    pub admitted: u64,
    pub refused: u64,
    pub run_ns: u64,
}

/// Where a tenant's account is (returned by [`TenantShares::admit`], given back to
/// [`TenantShares::charge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Account(u8);

pub struct TenantShares {
    cfg: FairConfig,
    accounts: [TenantAccount; MAX_TENANTS],
    len: usize,
    round_start: u64,
    busy_ns: u64,
    saturated: bool,
    /// More than one tenant was active in the last round.
    competing: bool,
}

impl TenantShares {
    pub fn new(cfg: FairConfig, now: u64) -> Self {
        Self {
            cfg,
            accounts: [TenantAccount::default(); MAX_TENANTS],
            len: 0,
            round_start: now,
            busy_ns: 0,
            saturated: false,
            competing: false,
        }
    }

    /// Whether the last round saw the worker saturated (refusals happen only then).
    pub fn saturated(&self) -> bool {
        self.saturated
    }

    /// The accounts in use (for the counters).
    pub fn accounts(&self) -> &[TenantAccount] {
        &self.accounts[..self.len]
    }

    fn account(&mut self, tenant: u32) -> usize {
        if let Some(i) = self.accounts[..self.len]
            .iter()
            .position(|a| a.tenant == tenant)
        {
            return i;
        }
        if self.len == MAX_TENANTS {
            return MAX_TENANTS - 1;
        }
        let i = self.len;
        self.len += 1;
        let weight = self.cfg.weight(tenant);
        self.accounts[i] = TenantAccount {
            tenant,
            weight,
            ..TenantAccount::default()
        };
        i
    }

    /// Admits a message of `tenant` at `now`, or refuses it with the nanoseconds until its
    /// next quantum.
    pub fn admit(&mut self, tenant: u32, now: u64) -> Result<Account, u64> {
        self.roll(now);
        let i = self.account(tenant);
        let saturated = self.saturated;
        let a = &mut self.accounts[i];
        a.active = true;
        if self.cfg.enabled && saturated && self.competing && a.deficit < 0 {
            a.refused += 1;
            a.refused_now += 1;
            // The next round gives `quantum` back; a deeper debt takes more rounds (told at
            // most a few: the quanta follow the load, which may change by then).
            let left = (self.round_start + self.cfg.window_ns).saturating_sub(now);
            let rounds = (a.deficit.unsigned_abs() / a.quantum.max(1)).min(MAX_WAIT_ROUNDS);
            return Err(left.max(1) + rounds * self.cfg.window_ns);
        }
        a.admitted += 1;
        Ok(Account(i as u8))
    }

    /// Charges `ns` of handler time to the account `admit` gave.
    pub fn charge(&mut self, account: Account, ns: u64) {
        let a = &mut self.accounts[account.0 as usize];
        a.used += ns;
        a.run_ns += ns;
        a.deficit = a.deficit.saturating_sub(ns as i64);
    }

    /// Adds time the worker was busy (polls that did work).
    pub fn add_busy(&mut self, ns: u64) {
        self.busy_ns += ns;
    }

    /// Starts a new round when the current one is over: decides whether the worker is
    /// saturated and deals the quanta.
    fn roll(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.round_start);
        if elapsed < self.cfg.window_ns {
            return;
        }
        let accounts = &mut self.accounts[..self.len];
        // Saturated only when the last round was one round long: after an idle gap nothing
        // competes.
        self.saturated =
            elapsed < 2 * self.cfg.window_ns && self.busy_ns as f64 >= SATURATED * elapsed as f64;
        // Handler time a round offers: the round minus what the worker spent around the
        // handlers (parsing, replies, refusals), as measured in the last one.
        let handlers: u64 = accounts.iter().map(|a| a.used).sum();
        let overhead = self
            .busy_ns
            .saturating_sub(handlers)
            .min(self.cfg.window_ns);
        let capacity = self.cfg.window_ns - overhead;
        // Fair shares among the tenants active last round; the ones that used less than
        // theirs without being refused are satisfied, and what they leave goes to the others.
        self.competing = accounts.iter().filter(|a| a.active).count() > 1;
        let total_w: u64 = accounts
            .iter()
            .filter(|a| a.active)
            .map(|a| a.weight as u64)
            .sum();
        let fair = |a: &TenantAccount| capacity * a.weight as u64 / total_w.max(1);
        let mut spare = 0u64;
        let mut wanting_w = 0u64;
        for a in accounts.iter().filter(|a| a.active) {
            if a.refused_now == 0 && a.used < fair(a) {
                spare += fair(a) - a.used;
            } else {
                wanting_w += a.weight as u64;
            }
        }
        for a in accounts.iter_mut() {
            let quantum = if !a.active {
                // What it would get if it came back now.
                capacity * a.weight as u64 / (total_w + a.weight as u64)
            } else if a.refused_now == 0 && a.used < fair(a) {
                fair(a)
            } else {
                fair(a) + spare * a.weight as u64 / wanting_w.max(1)
            };
            a.quantum = quantum;
            // Debt carries over (bounded by a round), credit does not.
            let debt = a.deficit.min(0).max(-(self.cfg.window_ns as i64));
            a.deficit = debt + quantum as i64;
            a.used = 0;
            a.refused_now = 0;
            a.active = false;
        }
        self.round_start = now;
        self.busy_ns = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// One round of a worker running flat out: each tenant sends `sends[t]` messages of
    /// `cost[t]` ns in an interleaved stream (FCFS order) until the round's time is used.
    /// Returns the handler ns each got and the refusals each saw.
    fn round(
        s: &mut TenantShares,
        now: &mut u64,
        tenants: &[(u32, u64, u64)], // (tenant, cost, sends)
    ) -> Vec<(u64, u64)> {
        let mut got = vec![(0u64, 0u64); tenants.len()];
        let mut sent = vec![0u64; tenants.len()];
        let end = *now + MS;
        let refusal = 200; // ns a refusal costs the worker
        'outer: loop {
            let mut any = false;
            for (k, &(t, cost, sends)) in tenants.iter().enumerate() {
                if sent[k] == sends {
                    continue;
                }
                any = true;
                sent[k] += 1;
                match s.admit(t, *now) {
                    Ok(a) => {
                        s.charge(a, cost);
                        s.add_busy(cost);
                        *now += cost;
                        got[k].0 += cost;
                    }
                    Err(after) => {
                        assert!(after > 0);
                        s.add_busy(refusal);
                        *now += refusal;
                        got[k].1 += 1;
                    }
                }
                if *now >= end {
                    break 'outer;
                }
            }
            if !any {
                break;
            }
        }
        if *now < end {
            *now = end;
        }
        got
    }

    #[test]
    fn a_light_tenant_keeps_what_it_needs_and_the_heavy_one_gets_the_rest() {
        let mut s = TenantShares::new(FairConfig::default(), 0);
        let mut now = 0;
        // Light: 50 messages of 1 µs a round (5 %); heavy: 20 µs messages, far more than fit.
        let tenants = [(1, 1_000, 50), (2, 20_000, 1_000)];
        let mut last = Vec::new();
        for _ in 0..20 {
            last = round(&mut s, &mut now, &tenants);
        }
        assert!(s.saturated());
        let (light, heavy) = (last[0], last[1]);
        assert_eq!(light, (50_000, 0), "every light message admitted");
        assert!(heavy.1 > 0, "the heavy tenant is refused");
        // Work-conserving: the heavy tenant gets the rest of the round (not just its half):
        // the round is full of handler time and refusals.
        assert!(heavy.0 >= 700_000, "heavy got {} ns of 1 ms", heavy.0);
        assert!(
            light.0 + heavy.0 + heavy.1 * 200 >= 980_000,
            "{light:?} {heavy:?}"
        );
    }

    #[test]
    fn first_come_first_served_lets_the_heavy_tenant_crowd_the_light_one_out() {
        let cfg = FairConfig {
            enabled: false,
            ..FairConfig::default()
        };
        let mut s = TenantShares::new(cfg, 0);
        let mut now = 0;
        // The heavy tenant's backlog comes first in the stream.
        let tenants = [(2, 20_000, 1_000), (1, 1_000, 50)];
        let mut last = Vec::new();
        for _ in 0..5 {
            last = round(&mut s, &mut now, &tenants);
        }
        assert_eq!(last[0].1 + last[1].1, 0, "nothing refused");
        assert!(last[1].0 < 50_000, "the light tenant got {} ns", last[1].0);
    }

    #[test]
    fn two_heavy_tenants_split_by_weight() {
        let cfg = FairConfig {
            weights: vec![(1, 3)],
            ..FairConfig::default()
        };
        let mut s = TenantShares::new(cfg, 0);
        let mut now = 0;
        let tenants = [(1, 10_000, 1_000), (2, 10_000, 1_000)];
        let mut total = [0u64; 2];
        for r in 0..40 {
            let got = round(&mut s, &mut now, &tenants);
            if r >= 10 {
                total[0] += got[0].0;
                total[1] += got[1].0;
            }
        }
        let share = total[0] as f64 / (total[0] + total[1]) as f64;
        assert!(
            (0.65..0.85).contains(&share),
            "tenant 1 (weight 3) got {share}"
        );
    }

    #[test]
    fn an_idle_worker_refuses_nobody_and_a_lone_tenant_is_never_refused() {
        let mut s = TenantShares::new(FairConfig::default(), 0);
        let mut now = 0;
        // Half busy: not saturated.
        for _ in 0..10 {
            let got = round(&mut s, &mut now, &[(1, 10_000, 25), (2, 10_000, 25)]);
            assert_eq!(got[0].1 + got[1].1, 0);
        }
        // One tenant alone, flat out: saturated, but its quantum is the whole round.
        let mut refused = 0;
        for r in 0..20 {
            let got = round(&mut s, &mut now, &[(2, 10_000, 1_000)]);
            if r > 2 {
                refused += got[0].1;
            }
        }
        assert_eq!(refused, 0);
    }

    #[test]
    fn a_refusal_says_when_the_next_quantum_comes() {
        let mut s = TenantShares::new(FairConfig::default(), 0);
        let mut now = 0;
        for _ in 0..5 {
            round(&mut s, &mut now, &[(1, 1_000, 50), (2, 20_000, 1_000)]);
        }
        // Mid-round, heavy in debt: told to come back at (or after) the next round.
        let a = s.admit(2, now).unwrap();
        s.charge(a, 2 * MS);
        let after = s.admit(2, now + 1_000).unwrap_err();
        assert!(
            (MS - 1_000..=(1 + MAX_WAIT_ROUNDS) * MS).contains(&after),
            "{after}"
        );
    }

    #[test]
    fn weights_parse_and_bad_ones_are_refused() {
        assert_eq!(FairConfig::parse_weight("2=5"), Ok((2, 5)));
        for bad in ["2", "x=1", "2=0", "2=y", "=", "2=2000000"] {
            assert!(FairConfig::parse_weight(bad).is_err(), "{bad}");
        }
    }
}
