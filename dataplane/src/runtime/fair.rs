//! Performance isolation between tenants on one NIC worker: each burst is served in fair
//! order, by the handler time each tenant's messages really cost, and a saturated worker
//! refuses what it cannot serve soon instead of making everyone wait for it.
//!
//! The verifier keeps tenants out of each other's memory, not out of each other's time: under
//! first come, first served a tenant with expensive handlers, or one that sends at a high
//! rate, fills every burst, and another tenant's message waits for the whole burst (hundreds
//! of microseconds) however little it asks. Here:
//!
//! - Every active message's time on the worker (steps, ops on host memory, the reply) is
//!   charged to its tenant's account ([`TenantShares::charge`]); an account's *virtual time*
//!   is what it used in the current round (1 ms) divided by its weight
//!   (`--tenant-weight`).
//! - The packets of a burst are queued per tenant in arrival order ([`BurstQueues`]); the
//!   worker always takes the next packet of the tenant with the least virtual time (start-time
//!   fair queueing within the burst; packets that name no tenant — one-sided ops, control —
//!   first). A light tenant's message is served next, not after the heavy tenant's burst.
//! - One tenant's replies leave before the next tenant's run of the burst starts: a light
//!   tenant's reply does not wait for the heavy tenant's handlers to send with theirs.
//! - A poll takes from the port only as many packets as `poll_budget_ns` pays for at what
//!   a packet has lately cost ([`BurstSize`]): a datagram that arrives during a poll waits
//!   for it to end, and a whole burst of expensive messages was a poll of hundreds of µs.
//!   The rest waits at the port, in its own class's queue.
//! - When the burst took all it could (more is waiting: the worker is behind), the worker
//!   spends at most `poll_budget_ns` on it; once that is spent, each tenant's further
//!   messages of the burst are refused (`busy`, retry after a round), so the next burst,
//!   which may hold another tenant's message, comes soon. A worker that keeps up serves
//!   everything, and a burst of one tenant is served whole: nobody else is waiting.
//!
//! Refusing rather than carrying packets over keeps the data path as it is (no copies, no
//! queues across polls): a refused message costs a parse and a short reply, and the client
//! library's window, cut by the refusal, lowers what that tenant sends. The scheduler is
//! work-conserving: what the light tenant does not use, the heavy one gets.
//!
//! Pure logic: time is passed in, nothing allocates after setup.

/// Tenants tracked per worker; more share the last account.
pub const MAX_TENANTS: usize = 32;

/// Rounds of one millisecond: virtual times start again at each.
pub const DEFAULT_WINDOW_NS: u64 = 1_000_000;

/// What one poll may take (the packets it receives are sized to it; a worker that is behind
/// refuses the rest of a burst past it): next to the light tenant's own latency (tens of
/// µs), and a few heavy messages long.
pub const DEFAULT_POLL_BUDGET_NS: u64 = 50_000;

#[derive(Debug, Clone, PartialEq)]
pub struct FairConfig {
    /// Off: first come, first served (bursts in arrival order, nothing refused; time still
    /// charged).
    pub enabled: bool,
    pub window_ns: u64,
    pub poll_budget_ns: u64,
    /// `(tenant, weight)`; tenants not listed weigh 1.
    pub weights: Vec<(u32, u32)>,
}

impl Default for FairConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_ns: DEFAULT_WINDOW_NS,
            poll_budget_ns: DEFAULT_POLL_BUDGET_NS,
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
        let t: u32 = t
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: tenant {t:?} is not a number"))?;
        if t == naam_core::auth::ANY_TENANT {
            return Err(format!(
                "{s:?}: tenant {t} is reserved (no tenant's messages carry it)"
            ));
        }
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

/// How many packets a poll takes from the port under the tenants' shares: as many as the
/// poll budget pays for at what a packet has lately cost this worker (its handler, its reply,
/// the port's system calls), at most the batch's capacity. A datagram that arrives during a
/// poll waits for that poll to end; a burst of expensive messages read whole (and their
/// replies sent) is a poll of hundreds of µs, so the light tenant's message waited that long
/// before the worker even saw it (`docs/profiles/fairness-2026-12-07.md`). Cheap messages
/// still come in full bursts. The packets not taken wait at the port, in their tenant's
/// class queue, not in a queue of the worker's.
#[derive(Debug, Clone)]
pub struct BurstSize {
    max: usize,
    budget_ns: u64,
    /// Moving average of the ns a received packet cost (0: nothing seen yet).
    ns_per_packet: u64,
}

impl BurstSize {
    pub fn new(max: usize, budget_ns: u64) -> Self {
        Self {
            max: max.max(1),
            budget_ns,
            ns_per_packet: 0,
        }
    }

    /// A poll took `ns` for `packets` received packets (everything from the receive burst to
    /// the replies' send). Averaged over about the last eight polls.
    pub fn observe(&mut self, packets: usize, ns: u64) {
        if packets == 0 {
            return;
        }
        let sample = ns / packets as u64;
        self.ns_per_packet = if self.ns_per_packet == 0 {
            sample.max(1)
        } else {
            // Weight 1/8, rounded up: it never returns to 0 ("nothing seen").
            (self.ns_per_packet * 7 + sample).div_ceil(8)
        };
    }

    /// Packets the next poll takes.
    pub fn limit(&self) -> usize {
        if self.ns_per_packet == 0 {
            return self.max;
        }
        let n = self.budget_ns / self.ns_per_packet;
        (n.min(self.max as u64) as usize).max(1)
    }
}

/// One tenant's account on this worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantAccount {
    pub tenant: u32,
    weight: u32,
    /// Handler ns used this round.
    used: u64,
    /// Totals.
    pub admitted: u64,
    pub refused: u64,
    pub run_ns: u64,
}

/// An account's place in [`TenantShares`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Account(u8);

impl Account {
    /// Its index, below [`MAX_TENANTS`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

pub struct TenantShares {
    cfg: FairConfig,
    accounts: [TenantAccount; MAX_TENANTS],
    len: usize,
    round_start: u64,
}

impl TenantShares {
    pub fn new(cfg: FairConfig) -> Self {
        Self {
            cfg,
            accounts: [TenantAccount::default(); MAX_TENANTS],
            len: 0,
            round_start: 0,
        }
    }

    pub fn config(&self) -> &FairConfig {
        &self.cfg
    }

    /// The accounts in use (for the counters).
    pub fn accounts(&self) -> &[TenantAccount] {
        &self.accounts[..self.len]
    }

    /// `tenant`'s account (opened on first sight).
    pub fn account(&mut self, tenant: u32) -> Account {
        if let Some(i) = self.accounts[..self.len]
            .iter()
            .position(|a| a.tenant == tenant)
        {
            return Account(i as u8);
        }
        if self.len == MAX_TENANTS {
            return Account(MAX_TENANTS as u8 - 1);
        }
        let i = self.len;
        self.len += 1;
        self.accounts[i] = TenantAccount {
            tenant,
            weight: self.cfg.weight(tenant),
            ..TenantAccount::default()
        };
        Account(i as u8)
    }

    /// Starts a new round when the current one is over (virtual times start again).
    pub fn start_poll(&mut self, now: u64) {
        if now.saturating_sub(self.round_start) >= self.cfg.window_ns {
            self.round_start = now;
            for a in &mut self.accounts[..self.len] {
                a.used = 0;
            }
        }
    }

    /// What `a` used this round, per unit of weight: the tenant with the least goes first.
    pub fn virtual_time(&self, a: Account) -> u64 {
        let a = &self.accounts[a.0 as usize];
        a.used / u64::from(a.weight.max(1))
    }

    pub fn charge(&mut self, a: Account, ns: u64) {
        let a = &mut self.accounts[a.0 as usize];
        a.used += ns;
        a.run_ns += ns;
    }

    pub fn count_admitted(&mut self, a: Account) {
        self.accounts[a.0 as usize].admitted += 1;
    }

    pub fn count_refused(&mut self, a: Account) {
        self.accounts[a.0 as usize].refused += 1;
    }

    pub fn tenant(&self, a: Account) -> u32 {
        self.accounts[a.0 as usize].tenant
    }
}

const NONE: u16 = u16::MAX;
/// The queue of packets that name no tenant (served first).
const UNNAMED: usize = MAX_TENANTS;

/// One burst's packets (by index) queued per account, in arrival order.
pub struct BurstQueues {
    next: Box<[u16]>,
    account: Box<[u8]>,
    head: [u16; MAX_TENANTS + 1],
    tail: [u16; MAX_TENANTS + 1],
    /// Whether the account got a packet served in this burst.
    served: [bool; MAX_TENANTS + 1],
    accounts: usize,
}

impl BurstQueues {
    /// Queues for bursts of up to `capacity` packets.
    pub fn new(capacity: usize) -> Self {
        Self {
            next: vec![NONE; capacity].into_boxed_slice(),
            account: vec![0; capacity].into_boxed_slice(),
            head: [NONE; MAX_TENANTS + 1],
            tail: [NONE; MAX_TENANTS + 1],
            served: [false; MAX_TENANTS + 1],
            accounts: 0,
        }
    }

    pub fn clear(&mut self) {
        self.head = [NONE; MAX_TENANTS + 1];
        self.tail = [NONE; MAX_TENANTS + 1];
        self.served = [false; MAX_TENANTS + 1];
        self.accounts = 0;
    }

    /// Appends packet `index` (of `account`, or naming none) to its queue.
    pub fn push(&mut self, index: usize, account: Option<Account>) {
        if index >= self.next.len() {
            return;
        }
        let q = account.map_or(UNNAMED, |a| a.0 as usize);
        let i = index as u16;
        self.next[index] = NONE;
        self.account[index] = q as u8;
        match self.tail[q] {
            NONE => {
                self.head[q] = i;
                if q != UNNAMED {
                    self.accounts += 1;
                }
            }
            t => self.next[t as usize] = i,
        }
        self.tail[q] = i;
    }

    /// Tenants with packets in this burst.
    pub fn tenants(&self) -> usize {
        self.accounts
    }

    /// The next packet to serve: one naming no tenant, else the oldest of the tenant with the
    /// least virtual time (ties: the one whose packet came first). Also says whether its
    /// tenant was already served in this burst.
    pub fn pop(&mut self, shares: &TenantShares) -> Option<(usize, Option<Account>, bool)> {
        let q = if self.head[UNNAMED] != NONE {
            UNNAMED
        } else {
            (0..MAX_TENANTS)
                .filter(|&q| self.head[q] != NONE)
                .min_by_key(|&q| (shares.virtual_time(Account(q as u8)), self.head[q]))?
        };
        let i = self.head[q];
        self.head[q] = self.next[i as usize];
        if self.head[q] == NONE {
            self.tail[q] = NONE;
        }
        let served = std::mem::replace(&mut self.served[q], true);
        let account = (q != UNNAMED).then_some(Account(q as u8));
        Some((i as usize, account, served))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_sized_to_the_poll_budget_at_what_packets_cost() {
        let mut b = BurstSize::new(32, 50_000);
        assert_eq!(b.limit(), 32, "nothing measured yet: a full burst");
        // Expensive messages (8 µs each, reply included): six fill the 50 µs budget.
        for _ in 0..40 {
            b.observe(6, 6 * 8_000);
        }
        assert_eq!(b.limit(), 6);
        // Cheap ones (300 ns): a full burst again within a few dozen polls.
        let mut polls = 0;
        while b.limit() < 32 {
            b.observe(32, 32 * 300);
            polls += 1;
            assert!(polls < 40, "still {} after {polls} polls", b.limit());
        }
        // A message dearer than the whole budget: one at a time, never none.
        for _ in 0..60 {
            b.observe(1, 200_000);
        }
        assert_eq!(b.limit(), 1);
        // Polls that received nothing say nothing of a packet's cost.
        b.observe(0, 1_000_000);
        assert_eq!(b.limit(), 1);
    }

    #[test]
    fn the_least_served_tenant_goes_first_and_each_tenant_in_arrival_order() {
        let mut s = TenantShares::new(FairConfig::default());
        let (heavy, light) = (s.account(1), s.account(2));
        s.start_poll(0);
        s.charge(heavy, 50_000);
        s.charge(light, 1_000);
        let mut q = BurstQueues::new(16);
        for i in 0..6 {
            q.push(i, Some(heavy));
        }
        q.push(6, Some(light));
        q.push(7, None); // a one-sided request
        q.push(8, Some(light));
        assert_eq!(q.tenants(), 2);
        let mut order = Vec::new();
        while let Some((i, a, _)) = q.pop(&s) {
            order.push(i);
            if let Some(a) = a {
                s.charge(a, if a == heavy { 10_000 } else { 1_000 });
            }
        }
        // Unnamed first; the light tenant's two (it stays below the heavy one); then heavy.
        assert_eq!(order, [7, 6, 8, 0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn equal_tenants_alternate_and_weights_share_unequally() {
        let cfg = FairConfig {
            weights: vec![(1, 3)],
            ..FairConfig::default()
        };
        let mut s = TenantShares::new(cfg);
        let (a, b) = (s.account(1), s.account(2));
        s.start_poll(0);
        let mut q = BurstQueues::new(64);
        for i in 0..32 {
            q.push(2 * i, Some(a));
            q.push(2 * i + 1, Some(b));
        }
        let mut first_32 = [0usize; 2];
        for _ in 0..32 {
            let (_, acc, _) = q.pop(&s).unwrap();
            let acc = acc.unwrap();
            s.charge(acc, 1_000);
            first_32[usize::from(acc == b)] += 1;
        }
        // Weight 3 against 1: three of every four while both have packets.
        assert_eq!(first_32, [24, 8]);
    }

    /// Issue 17's acceptance: weights respected within 5 % over 10 000 steps, with simulated
    /// per-message costs that differ 23-fold between tenants. Every tenant is backlogged (each
    /// burst holds 64 messages of each); the worker serves a burst in fair order until the
    /// poll budget is spent and refuses the rest, as `Worker::serve_fair` does.
    #[test]
    fn weights_hold_within_5_percent_over_10_000_steps_of_unequal_costs() {
        let cfg = FairConfig {
            weights: vec![(1, 1), (2, 3), (3, 2)],
            ..FairConfig::default()
        };
        let budget = cfg.poll_budget_ns;
        let mut s = TenantShares::new(cfg);
        let accounts = [s.account(1), s.account(2), s.account(3)];
        let cost = [7_000u64, 1_500, 300];
        let weight = [1.0, 3.0, 2.0];
        let mut q = BurstQueues::new(3 * 64);
        let (mut now, mut steps) = (0u64, 0u32);
        let mut used = [0u64; 3];
        while steps < 10_000 {
            s.start_poll(now);
            q.clear();
            for i in 0..3 * 64 {
                q.push(i, Some(accounts[i % 3]));
            }
            let deadline = now + budget;
            while let Some((_, a, _)) = q.pop(&s) {
                if now >= deadline {
                    break;
                }
                let t = a.unwrap().index();
                s.charge(accounts[t], cost[t]);
                now += cost[t];
                used[t] += cost[t];
                steps += 1;
            }
        }
        let total: u64 = used.iter().sum();
        let weights: f64 = weight.iter().sum();
        for t in 0..3 {
            let share = used[t] as f64 / total as f64;
            let fair = weight[t] / weights;
            assert!(
                (share / fair - 1.0).abs() <= 0.05,
                "tenant {}: {:.3} of the time, its weight says {fair:.3} ({used:?})",
                t + 1,
                share
            );
        }
    }

    #[test]
    fn a_new_round_forgets_what_was_used() {
        let mut s = TenantShares::new(FairConfig::default());
        let a = s.account(1);
        s.start_poll(0);
        s.charge(a, 123_000);
        assert_eq!(s.virtual_time(a), 123_000);
        s.start_poll(DEFAULT_WINDOW_NS - 1);
        assert_eq!(s.virtual_time(a), 123_000);
        s.start_poll(DEFAULT_WINDOW_NS);
        assert_eq!(s.virtual_time(a), 0);
        assert_eq!(s.accounts()[0].run_ns, 123_000, "totals stay");
    }

    #[test]
    fn pop_says_whether_the_tenant_was_served_in_this_burst() {
        let mut s = TenantShares::new(FairConfig::default());
        let a = s.account(7);
        let mut q = BurstQueues::new(4);
        q.push(0, Some(a));
        q.push(1, Some(a));
        assert_eq!(q.pop(&s), Some((0, Some(a), false)));
        assert_eq!(q.pop(&s), Some((1, Some(a), true)));
        assert_eq!(q.pop(&s), None);
        q.clear();
        q.push(2, Some(a));
        assert_eq!(q.pop(&s), Some((2, Some(a), false)), "a new burst");
    }

    #[test]
    fn accounts_past_the_table_share_the_last() {
        let mut s = TenantShares::new(FairConfig::default());
        for t in 0..MAX_TENANTS as u32 {
            assert_eq!(s.account(t), Account(t as u8));
        }
        assert_eq!(s.account(1000), Account(MAX_TENANTS as u8 - 1));
        assert_eq!(s.accounts().len(), MAX_TENANTS);
    }

    #[test]
    fn weights_parse_and_bad_ones_are_refused() {
        assert_eq!(FairConfig::parse_weight("2=5"), Ok((2, 5)));
        for bad in ["2", "x=1", "2=0", "2=y", "=", "2=2000000"] {
            assert!(FairConfig::parse_weight(bad).is_err(), "{bad}");
        }
    }
}
