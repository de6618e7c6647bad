//! The load monitor and placement (issue 7 items 3–4, DESIGN §5): every millisecond (time
//! passed in) it turns the workers' counters and the host's published load into a
//! [`LoadSample`], feeds [`Policy::update`], and applies each [`Decision`]: class → NIC queue
//! or host in the steering table, class → clients (with a lease) in the hint table. Every
//! decision is logged with `tracing::info!` and kept (the most recent ones) for STATS.
//!
//! Costs: the NIC's busy time is attributed to classes in proportion to the handler steps they
//! ran; a class that has not run on the NIC keeps its last estimate (initially
//! [`MonitorConfig::default_cost`]). The host's cost is the NIC's divided by
//! [`MonitorConfig::host_speedup`] (host cores are faster than the NIC's Arm cores).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use naam_core::policy::{ClassLoad, Decision, LoadSample, Location, Policy, PolicyConfig};
use naam_core::pool::Registry;

use super::shared::HintTable;
use super::stats::WorkerStats;
use crate::steering::{Match, RuleId, SoftSwitch, Steering, Target};

/// Monitor knobs.
#[derive(Debug, Clone, Copy)]
pub struct MonitorConfig {
    pub policy: PolicyConfig,
    /// Sampling period.
    pub period_ns: u64,
    /// Host cores run a handler this many times faster than NIC cores.
    pub host_speedup: f64,
    /// Cost of one message (core-seconds) before anything was measured.
    pub default_cost: f64,
    /// Decisions kept for STATS.
    pub keep_decisions: usize,
    /// Where every class starts (and returns to when load is calm).
    pub home: Location,
    /// Classes stay at `home`: load is still sampled (for STATS) but the policy is not
    /// consulted. The placement comparison's fixed baselines (host-only, NIC-only) use it.
    pub pinned: bool,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            policy: PolicyConfig::default(),
            period_ns: 1_000_000,
            host_speedup: 2.0,
            default_cost: 2e-6,
            keep_decisions: 64,
            home: Location::Nic,
            pinned: false,
        }
    }
}

/// Placement decisions logged a second at most, on average, and at once: two moves of every
/// class of a default deployment. Past that they are counted and said in one line.
pub const DECISIONS_LOGGED_PER_S: u64 = 20;
pub const DECISIONS_LOGGED_BURST: u64 = 128;

/// The host's load as read from the link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostLoad {
    pub alive: bool,
    /// Mean busy fraction of the host workers, 0..=1.
    pub busy: f64,
    /// Messages waiting in host rings, summed over workers.
    pub queue: u32,
    pub workers: u32,
    /// When the newest of these figures was published (the host's clock, which is this
    /// machine's monotonic clock; 0: unknown).
    pub published_ns: u64,
}

impl HostLoad {
    pub const GONE: HostLoad = HostLoad {
        alive: false,
        busy: 0.0,
        queue: 0,
        workers: 0,
        published_ns: 0,
    };
}

/// The inputs of one sample, kept for the log of the decisions they led to.
#[derive(Debug, Clone, Copy)]
struct Input {
    at: u64,
    nic_busy: f64,
    nic_queue: u32,
    host: HostLoad,
}

/// Samples kept for the decision log: enough to show the onset before a decision.
const INPUTS_LOGGED: usize = 4;

/// The last samples, oldest first, as one log field: `-3ms nic 5% q0 host 12% q0 (0.4ms old)`.
struct Inputs<'a>(&'a VecDeque<Input>, u64);

impl std::fmt::Display for Inputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            let ago = self.1.saturating_sub(s.at) as f64 / 1e6;
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(
                f,
                "-{ago:.1}ms nic {:.0}% q{}",
                s.nic_busy * 100.0,
                s.nic_queue
            )?;
            if !s.host.alive {
                write!(f, " host gone")?;
            } else {
                write!(f, " host {:.0}% q{}", s.host.busy * 100.0, s.host.queue)?;
                if s.host.published_ns > 0 {
                    let age = s.at.saturating_sub(s.host.published_ns) as f64 / 1e6;
                    write!(f, " ({age:.1}ms old)")?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Snap {
    busy_ns: u64,
    background_ns: u64,
    other_work: u64,
    msgs: Vec<u64>,
    steps: Vec<u64>,
}

/// The monitor's state.
pub struct Monitor {
    cfg: MonitorConfig,
    base: u16,
    classes: u16,
    policy: Policy,
    rules: Vec<RuleId>,
    last_ns: Option<u64>,
    prev: Vec<Snap>,
    cost: Vec<f64>,
    read_only: Vec<bool>,
    /// Classes that have at least one registered offload.
    in_use: Vec<bool>,
    registry_epoch: u64,
    loads: Vec<ClassLoad>,
    out: Vec<Decision>,
    recent: VecDeque<Decision>,
    /// Moves per class since the start (the recent ones are a log; these, a counter to alert
    /// on flapping).
    moves: Vec<u64>,
    /// The last samples' inputs, for the decision log.
    inputs: VecDeque<Input>,
    /// Decisions the log may still take ([`DECISIONS_LOGGED_PER_S`]), and those it did not
    /// since the last one it took: placement follows the load, which any tenant can make
    /// (probe 16: a tenant's flood wrote 1 MB of decision lines in 12 s).
    log_budget: naam_core::rate::TokenBucket,
    unlogged: u64,
    unlogged_total: u64,
    /// Last sample's NIC busy fraction and queue depth (for STATS).
    pub last_nic_busy: f64,
    pub last_nic_queue: u32,
    pub last_host: HostLoad,
}

impl Monitor {
    /// Installs one steering rule per class (to the home location) and commits it.
    pub fn new(
        cfg: MonitorConfig,
        base: u16,
        classes: u16,
        switch: &mut SoftSwitch,
    ) -> Result<Monitor, crate::steering::SteeringError> {
        let target = target_of(cfg.home);
        let mut rules = Vec::with_capacity(classes as usize);
        for c in 0..classes {
            rules.push(switch.insert(Match::class(base, c), target)?);
        }
        switch.commit()?;
        Ok(Monitor {
            policy: Policy::new(cfg.policy, classes as usize, cfg.home),
            cfg,
            base,
            classes,
            rules,
            last_ns: None,
            prev: Vec::new(),
            cost: vec![cfg.default_cost; classes as usize],
            read_only: vec![false; classes as usize],
            in_use: vec![false; classes as usize],
            registry_epoch: u64::MAX,
            loads: Vec::with_capacity(classes as usize),
            out: Vec::new(),
            recent: VecDeque::new(),
            moves: vec![0; classes as usize],
            inputs: VecDeque::with_capacity(INPUTS_LOGGED),
            log_budget: naam_core::rate::TokenBucket::new(
                DECISIONS_LOGGED_PER_S,
                DECISIONS_LOGGED_BURST,
                0,
            ),
            unlogged: 0,
            unlogged_total: 0,
            last_nic_busy: 0.0,
            last_nic_queue: 0,
            last_host: HostLoad::GONE,
        })
    }

    /// Of `made` decisions at `now_ns`, how many the log takes (the first ones), and how many
    /// it did not take since it last took one (to be said before the next it takes).
    fn budget_log(&mut self, made: usize, now_ns: u64) -> (usize, u64) {
        let mut logged = 0;
        while logged < made && self.log_budget.take(now_ns).is_ok() {
            logged += 1;
        }
        let before = self.unlogged;
        if logged > 0 {
            self.unlogged = 0;
        }
        self.unlogged += (made - logged) as u64;
        self.unlogged_total += (made - logged) as u64;
        (logged, if logged > 0 { before } else { 0 })
    }

    /// Decisions the log did not take (the rate limit), since the start.
    pub fn decisions_unlogged(&self) -> u64 {
        self.unlogged_total
    }

    pub fn base(&self) -> u16 {
        self.base
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Where classes run when nothing is congested.
    pub fn home(&self) -> Location {
        self.cfg.home
    }

    /// The steering rule of `class`.
    pub fn rule(&self, class: u16) -> Option<RuleId> {
        self.rules.get(class as usize).copied()
    }

    /// Where `class` runs now.
    pub fn placement(&self, class: u16) -> Location {
        self.policy.placement(class)
    }

    /// How many times `class` has moved.
    pub fn moves(&self, class: u16) -> u64 {
        self.moves.get(class as usize).copied().unwrap_or(0)
    }

    /// The most recent decisions, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &Decision> {
        self.recent.iter()
    }

    /// True when a sample is due at `now_ns`.
    pub fn due(&self, now_ns: u64) -> bool {
        self.until_due(now_ns) == 0
    }

    /// Nanoseconds from `now_ns` until the next sample is due (0: due now).
    pub fn until_due(&self, now_ns: u64) -> u64 {
        self.last_ns.map_or(0, |t| {
            self.cfg.period_ns.saturating_sub(now_ns.saturating_sub(t))
        })
    }

    /// Takes one sample and applies the decisions; returns how many were made.
    pub fn tick(
        &mut self,
        now_ns: u64,
        workers: &[Arc<WorkerStats>],
        host: HostLoad,
        registry: &Registry,
        switch: &mut SoftSwitch,
        hints: &HintTable,
    ) -> usize {
        let n = self.classes as usize;
        if registry.epoch() != self.registry_epoch {
            self.registry_epoch = registry.epoch();
            // A class may run at clients only if every offload in it is read-only.
            let mut any = vec![false; n];
            let mut all_ro = vec![true; n];
            for o in registry.list() {
                if let Some(c) = any.get_mut(o.class as usize) {
                    *c = true;
                    all_ro[o.class as usize] &= o.read_only;
                }
            }
            for c in 0..n {
                self.read_only[c] = any[c] && all_ro[c];
            }
            self.in_use = any;
        }
        if self.prev.len() != workers.len() {
            self.prev = vec![
                Snap {
                    busy_ns: 0,
                    background_ns: 0,
                    other_work: 0,
                    msgs: vec![0; n],
                    steps: vec![0; n],
                };
                workers.len()
            ];
        }
        let dt_ns = self.last_ns.map_or(0, |t| now_ns.saturating_sub(t));
        self.last_ns = Some(now_ns);

        // Deltas since the last sample, summed over workers.
        let mut busy_ns = 0u64;
        // Time the cores spent on other work: it loads the NIC but is no class's cost.
        let mut background_ns = 0u64;
        let mut other_work = 0u64;
        let mut queue = 0u64;
        let mut msgs = vec![0u64; n];
        let mut steps = vec![0u64; n];
        for (w, prev) in workers.iter().zip(self.prev.iter_mut()) {
            let b = w.busy_ns.load(Ordering::Relaxed);
            busy_ns += b.saturating_sub(prev.busy_ns);
            prev.busy_ns = b;
            let bg = w.background_ns.load(Ordering::Relaxed);
            background_ns += bg.saturating_sub(prev.background_ns);
            prev.background_ns = bg;
            // Work the NIC does that is no handler step: one-sided ops (clients running
            // classes locally), forwarding to the host and relaying its replies. Each counts
            // like one step when busy time is shared out, so a few steps next to much of it are
            // not charged with all of it.
            let o = w.one_sided_ops.load(Ordering::Relaxed)
                + w.forwarded.load(Ordering::Relaxed)
                + w.host_replies.load(Ordering::Relaxed);
            other_work += o.saturating_sub(prev.other_work);
            prev.other_work = o;
            // The NIC's queue: messages parked on link ops, not those waiting at the host.
            let in_flight = w.in_flight.load(Ordering::Relaxed);
            queue += in_flight.saturating_sub(w.at_host.load(Ordering::Relaxed));
            for c in 0..n.min(w.classes()) {
                let (m, s) = w.class_counts(c as u16);
                msgs[c] += m.saturating_sub(prev.msgs[c]);
                steps[c] += s.saturating_sub(prev.steps[c]);
                prev.msgs[c] = m;
                prev.steps[c] = s;
            }
        }
        if dt_ns == 0 {
            return 0; // the first sample only sets the baseline
        }
        let dt = dt_ns as f64 / 1e9;
        let total_steps: u64 = steps.iter().sum::<u64>() + other_work;
        let nic_workers = workers.len().max(1) as f64;
        let nic_busy =
            ((busy_ns + background_ns) as f64 / (dt_ns as f64 * nic_workers)).clamp(0.0, 1.0);
        self.loads.clear();
        for c in 0..n {
            if msgs[c] > 0 && steps[c] > 0 && total_steps > 0 {
                let share = busy_ns as f64 * steps[c] as f64 / total_steps as f64;
                let per_msg = share / 1e9 / msgs[c] as f64;
                // Smooth the estimate: one busy millisecond should not swing placement.
                self.cost[c] = 0.5 * self.cost[c] + 0.5 * per_msg.max(1e-9);
            }
            // Classes without offloads and without traffic have nothing to move: leaving
            // them out keeps the policy from shuffling empty classes around. Classes with
            // offloads stay in even when idle: a stalled host stops a closed-loop client's
            // traffic, and the class must still move.
            if msgs[c] == 0 && !self.in_use[c] && self.policy.placement(c as u16) == self.cfg.home {
                continue;
            }
            self.loads.push(ClassLoad {
                class: c as u16,
                rate: msgs[c] as f64 / dt,
                nic_cost: self.cost[c],
                host_cost: self.cost[c] / self.cfg.host_speedup.max(0.01),
                read_only: self.read_only[c],
            });
        }
        self.last_nic_busy = nic_busy;
        self.last_nic_queue = queue as u32;
        self.last_host = host;
        if self.inputs.len() == INPUTS_LOGGED {
            self.inputs.pop_front();
        }
        self.inputs.push_back(Input {
            at: now_ns,
            nic_busy,
            nic_queue: queue as u32,
            host,
        });
        let sample = LoadSample {
            now: now_ns,
            nic_busy,
            nic_queue: queue as u32,
            nic_workers: workers.len() as u32,
            host_busy: host.busy,
            host_queue: host.queue,
            host_workers: host.workers.max(1),
            host_alive: host.alive,
            classes: &self.loads,
        };
        self.out.clear();
        if !self.cfg.pinned {
            self.policy.update(&sample, &mut self.out);
        }
        let made = self.out.len();
        let (logged, unlogged_before) = self.budget_log(made, now_ns);
        if logged > 0 {
            if unlogged_before > 0 {
                tracing::info!(
                    unlogged = unlogged_before,
                    "placement decisions not logged (more than {DECISIONS_LOGGED_PER_S} a \
                     second: STATS keeps the last ones, class.C.moves counts every one)"
                );
            }
            // What the policy saw, so the time from an onset to its decision can be read
            // sample by sample (docs/placement.md).
            let (nic, host) = self.policy.smoothed();
            tracing::info!(
                samples = %Inputs(&self.inputs, now_ns),
                smoothed = %format_args!("nic {:.0}% host {:.0}%", nic * 100.0, host * 100.0),
                "placement inputs"
            );
        }
        let mut changed = false;
        for (i, d) in self.out.drain(..).enumerate() {
            if i < logged {
                tracing::info!(decision = %d, "placement");
            }
            match d.to {
                Location::Client => {
                    if let Some(until) = self.policy.lease_until(d.class) {
                        hints.set(d.class, until);
                    }
                    // Messages that still arrive (clients without the lease yet, writes)
                    // run on the NIC: a class coming from a congested host must not stay
                    // steered to it.
                    if let Some(rule) = self.rules.get(d.class as usize) {
                        if switch.update(*rule, target_of(d.to)).is_ok() {
                            changed = true;
                        }
                    }
                }
                to => {
                    hints.clear(d.class);
                    if let Some(rule) = self.rules.get(d.class as usize) {
                        if switch.update(*rule, target_of(to)).is_ok() {
                            changed = true;
                        }
                    }
                }
            }
            if let Some(n) = self.moves.get_mut(d.class as usize) {
                *n += 1;
            }
            if self.recent.len() == self.cfg.keep_decisions.max(1) {
                self.recent.pop_front();
            }
            self.recent.push_back(d);
        }
        // Leases renewed without a move.
        for c in 0..self.classes {
            if let Some(until) = self.policy.lease_until(c) {
                hints.set(c, until);
            }
        }
        if changed {
            if let Err(e) = switch.commit() {
                tracing::warn!(error = %e, "steering commit failed");
            }
        }
        made
    }
}

fn target_of(l: Location) -> Target {
    match l {
        Location::Host => Target::Host,
        // Client: messages that still arrive run on the NIC (the hint does the moving).
        Location::Nic | Location::Client => Target::NicQueue(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    const MS: u64 = 1_000_000;

    fn set(a: &AtomicU64, v: u64) {
        a.store(v, Ordering::Relaxed);
    }

    struct T {
        m: Monitor,
        switch: SoftSwitch,
        hints: HintTable,
        registry: Arc<Registry>,
        workers: Vec<Arc<WorkerStats>>,
        now: u64,
    }

    fn rig() -> T {
        let mut switch = SoftSwitch::new(7000, 4, 1, Target::Drop);
        let cfg = MonitorConfig::default();
        let m = Monitor::new(cfg, 7000, 4, &mut switch).unwrap();
        T {
            m,
            switch,
            hints: HintTable::new(4),
            registry: Registry::new(),
            workers: vec![Arc::new(WorkerStats::new(4)), Arc::new(WorkerStats::new(4))],
            now: 10 * MS,
        }
    }

    impl T {
        /// One millisecond in which each worker was busy `busy` of the time running `msgs`
        /// messages of class 1 (one step each).
        fn ms(&mut self, busy: f64, msgs: u64, host: HostLoad) -> usize {
            self.now += MS;
            for w in &self.workers {
                set(
                    &w.busy_ns,
                    w.busy_ns.load(Ordering::Relaxed) + (busy * MS as f64) as u64,
                );
                w.class_msg(1);
                for _ in 1..msgs {
                    w.class_msg(1);
                }
                w.class_steps(1, msgs);
            }
            let r = self.registry.clone();
            self.m.tick(
                self.now,
                &self.workers,
                host,
                &r,
                &mut self.switch,
                &self.hints,
            )
        }
    }

    fn host(busy: f64) -> HostLoad {
        HostLoad {
            alive: true,
            busy,
            queue: 0,
            workers: 2,
            published_ns: 0,
        }
    }

    /// The decision log takes a burst, then 20 a second; the rest are counted and said once
    /// before the next line it takes.
    #[test]
    fn the_decision_log_is_rate_limited_and_says_what_it_left_out() {
        let mut t = rig();
        let now = 5_000 * MS;
        let burst = DECISIONS_LOGGED_BURST as usize;
        assert_eq!(t.m.budget_log(1000, now), (burst, 0));
        assert_eq!(t.m.budget_log(10, now), (0, 0));
        assert_eq!(t.m.decisions_unlogged(), (1000 - burst + 10) as u64);
        // A second later: 20 more, after saying the 1000 - burst + 10 left out.
        let later = now + 1_000 * MS;
        assert_eq!(t.m.budget_log(25, later), (20, (1000 - burst + 10) as u64));
        assert_eq!(t.m.budget_log(1, later + 50 * MS), (1, 5));
        assert_eq!(t.m.decisions_unlogged(), (1000 - burst + 15) as u64);
    }

    #[test]
    fn classes_start_at_the_nic_in_the_steering_table() {
        let t = rig();
        let table = t.switch.table();
        for c in 0..4 {
            assert_eq!(table.steer(7000 + c, 0, 0), Target::NicQueue(0));
        }
    }

    #[test]
    fn a_pinned_monitor_never_moves_a_class() {
        let mut t = rig();
        t.m.cfg.pinned = true;
        t.ms(0.0, 0, host(0.1)); // baseline
        let mut moved = 0;
        for _ in 0..20 {
            moved += t.ms(1.0, 500, host(1.0));
        }
        assert_eq!(moved, 0);
        assert_eq!(t.m.placement(1), Location::Nic);
        assert_eq!(t.switch.table().steer(7001, 0, 0), Target::NicQueue(0));
        assert!(t.m.last_nic_busy > 0.9, "load is still sampled");
    }

    #[test]
    fn background_load_saturates_the_nic_without_inflating_class_costs() {
        let mut t = rig();
        t.ms(0.0, 0, host(0.1));
        for _ in 0..5 {
            t.ms(0.1, 50, host(0.1));
        }
        let calm_cost = t.m.cost[1];
        assert_eq!(t.m.placement(1), Location::Nic);
        // The congestion injector: the cores are taken by other work, little real work runs.
        for _ in 0..20 {
            for w in &t.workers {
                set(
                    &w.background_ns,
                    w.background_ns.load(Ordering::Relaxed) + 950_000,
                );
            }
            t.ms(0.05, 25, host(0.1));
        }
        assert!(t.m.last_nic_busy > 0.9, "busy {}", t.m.last_nic_busy);
        assert_eq!(t.m.placement(1), Location::Host);
        let d = t.m.recent().last().unwrap();
        assert_eq!(d.reason, naam_core::policy::Reason::NicCongested);
        assert!(
            t.m.cost[1] < 2.0 * calm_cost,
            "cost {} grew from {calm_cost}",
            t.m.cost[1]
        );
    }

    #[test]
    fn one_sided_work_is_not_charged_to_the_few_steps_beside_it() {
        let mut t = rig();
        t.ms(0.0, 0, host(0.1));
        for _ in 0..5 {
            t.ms(0.1, 50, host(0.1));
        }
        let calm_cost = t.m.cost[1];
        // Clients run the class locally: the NIC is busy with their one-sided ops, and only
        // a straggler message runs a step here.
        for _ in 0..10 {
            for w in &t.workers {
                set(
                    &w.one_sided_ops,
                    w.one_sided_ops.load(Ordering::Relaxed) + 200,
                );
            }
            t.ms(0.5, 1, host(0.1));
        }
        assert!(
            t.m.cost[1] < 2.0 * calm_cost,
            "cost {} grew from {calm_cost}",
            t.m.cost[1]
        );
    }

    #[test]
    fn saturated_nic_moves_load_to_an_idle_host_and_logs_it() {
        let mut t = rig();
        t.ms(0.0, 0, host(0.1)); // baseline
        let mut moved = 0;
        for _ in 0..20 {
            moved += t.ms(1.0, 500, host(0.1));
        }
        assert!(moved >= 1);
        assert_eq!(t.m.placement(1), Location::Host);
        assert_eq!(t.switch.table().steer(7001, 0, 0), Target::Host);
        let d = t.m.recent().last().unwrap();
        assert_eq!((d.class, d.from, d.to), (1, Location::Nic, Location::Host));
        assert!(t.m.last_nic_busy > 0.9);
    }

    #[test]
    fn host_gone_keeps_classes_on_the_nic_and_idle_load_stays_put() {
        let mut t = rig();
        t.ms(0.0, 0, host(0.1));
        for _ in 0..20 {
            t.ms(0.2, 10, HostLoad::GONE);
        }
        assert_eq!(t.m.placement(1), Location::Nic);
        assert_eq!(t.m.recent().count(), 0, "no decision without a reason");
    }

    #[test]
    fn both_congested_sends_a_read_only_class_to_clients_with_a_lease() {
        use naam_core::elf::load_program;
        use naam_core::pool::OffloadSpec;
        use naam_core::verifier::{verify, VerifierConfig};
        let mut t = rig();
        let prog = verify(
            &load_program(naam_handlers::RECORD_OBJECT, None).unwrap(),
            &VerifierConfig::default(),
        )
        .unwrap();
        let spec = OffloadSpec {
            name: "record".into(),
            tenant: 1,
            class: 1,
            read_only: true,
        };
        t.registry.register_as(5, spec, Arc::new(prog)).unwrap();
        t.ms(0.0, 0, host(0.95));
        for _ in 0..20 {
            t.ms(1.0, 500, host(0.95));
        }
        assert_eq!(t.m.placement(1), Location::Client);
        let lease = t.hints.lease_ms(1, t.now).expect("hint set");
        assert!(lease > 0 && lease <= 50, "lease {lease} ms");
        assert_eq!(t.hints.lease_ms(2, t.now), None);
        // Load returns: the class comes back and the hint ends.
        for _ in 0..200 {
            t.ms(0.1, 1, host(0.1));
        }
        assert_ne!(t.m.placement(1), Location::Client);
        assert_eq!(t.hints.lease_ms(1, t.now), None);
    }

    #[test]
    fn a_class_sent_from_the_host_to_clients_is_steered_to_the_nic_meanwhile() {
        use naam_core::elf::load_program;
        use naam_core::pool::OffloadSpec;
        use naam_core::verifier::{verify, VerifierConfig};
        let mut switch = SoftSwitch::new(7000, 4, 1, Target::Drop);
        let cfg = MonitorConfig {
            home: Location::Host,
            ..MonitorConfig::default()
        };
        let m = Monitor::new(cfg, 7000, 4, &mut switch).unwrap();
        let mut t = T {
            m,
            switch,
            hints: HintTable::new(4),
            registry: Registry::new(),
            workers: vec![Arc::new(WorkerStats::new(4)), Arc::new(WorkerStats::new(4))],
            now: 10 * MS,
        };
        let prog = verify(
            &load_program(naam_handlers::RECORD_OBJECT, None).unwrap(),
            &VerifierConfig::default(),
        )
        .unwrap();
        let spec = OffloadSpec {
            name: "record".into(),
            tenant: 1,
            class: 1,
            read_only: true,
        };
        t.registry.register_as(5, spec, Arc::new(prog)).unwrap();
        assert_eq!(t.switch.table().steer(7001, 0, 0), Target::Host);
        t.ms(0.0, 0, host(0.95));
        for _ in 0..20 {
            t.ms(1.0, 500, host(0.95));
        }
        assert_eq!(t.m.placement(1), Location::Client);
        assert_eq!(
            t.switch.table().steer(7001, 0, 0),
            Target::NicQueue(0),
            "not the congested host"
        );
    }
}
