//! Per-worker counters. Each worker is the only writer of its [`WorkerStats`] (plain
//! load + store of relaxed atomics, no locked instruction); the monitor and the control
//! socket read them at any time. The struct is cache-line aligned so two workers' counters
//! never share a line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use naam_core::pool::{OffloadId, RunCounters};
use naam_core::wire::ErrorCode;

use super::fair::{TenantAccount, MAX_TENANTS};
use crate::port::{DropReason, PortStats};

/// Why the worker dropped a message without answering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Dropped {
    /// Not a NAAM datagram: the header did not parse (wrong magic, truncated header).
    Malformed,
    /// A reply kind (AM_REPLY, ERROR, ...) sent to the server.
    UnexpectedKind,
    /// The steering table said drop.
    Steered,
    /// A host reply whose token names no waiting request (stale or unknown).
    StaleToken,
    /// A host ring entry that was corrupt or too short to hold a token.
    BadRingEntry,
    /// A duplicate of a request still in progress (its reply will come).
    DuplicateInProgress,
    /// A reply that could not be built (too large for a packet, emit failed).
    ReplyFailed,
    /// A completion whose work request id names no waiting op.
    StaleCompletion,
    /// A refusal not sent to a sender that proved nothing (no capability, no region key),
    /// past [`UNPROVEN_REPLIES_PER_S`](crate::runtime::worker::UNPROVEN_REPLIES_PER_S): a
    /// flood of junk costs the worker its parsing, not a reply each.
    UnprovenUnanswered,
}

impl Dropped {
    pub const COUNT: usize = 9;
    pub const ALL: [Dropped; Self::COUNT] = [
        Dropped::Malformed,
        Dropped::UnexpectedKind,
        Dropped::Steered,
        Dropped::StaleToken,
        Dropped::BadRingEntry,
        Dropped::DuplicateInProgress,
        Dropped::ReplyFailed,
        Dropped::StaleCompletion,
        Dropped::UnprovenUnanswered,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dropped::Malformed => "malformed",
            Dropped::UnexpectedKind => "unexpected_kind",
            Dropped::Steered => "steered_drop",
            Dropped::StaleToken => "stale_token",
            Dropped::BadRingEntry => "bad_ring_entry",
            Dropped::DuplicateInProgress => "duplicate_in_progress",
            Dropped::ReplyFailed => "reply_failed",
            Dropped::StaleCompletion => "stale_completion",
            Dropped::UnprovenUnanswered => "unproven_unanswered",
        }
    }
}

/// Counters of one worker.
#[repr(align(64))]
pub struct WorkerStats {
    pub rx: AtomicU64,
    pub tx: AtomicU64,
    /// Datagrams that failed to parse (answered or not).
    pub malformed: AtomicU64,
    /// Active messages run to the end on the NIC (done or aborted).
    pub nic_executed: AtomicU64,
    /// Handler steps run on the NIC.
    pub steps: AtomicU64,
    /// Handler ops posted on the link.
    pub ops: AtomicU64,
    /// Active messages forwarded to the host over the ring.
    pub forwarded: AtomicU64,
    /// Replies from the host sent on to clients.
    pub host_replies: AtomicU64,
    /// Requests answered `Busy` (ring full or no free slot).
    pub busy: AtomicU64,
    /// Of those, because the host ring was full.
    pub ring_full: AtomicU64,
    /// Requests answered `HostUnavailable`.
    pub host_unavailable: AtomicU64,
    /// One-sided requests and ops served.
    pub one_sided: AtomicU64,
    pub one_sided_ops: AtomicU64,
    /// One-sided ops refused for a wrong region key.
    pub bad_key: AtomicU64,
    /// Active messages refused for a capability that does not prove their tenant.
    pub bad_capability: AtomicU64,
    /// Active messages for an offload of the host agent this dataplane has not added yet
    /// (after its start, or a reconnection): answered `busy` or `host_unavailable` (retry),
    /// not `unknown_offload`.
    pub not_yet_added: AtomicU64,
    /// Duplicates answered from the reply cache.
    pub dup_replayed: AtomicU64,
    /// Retransmissions of requests a previous dataplane process had begun and not finished:
    /// answered `outcome_unknown`, not run again.
    pub dup_lost: AtomicU64,
    /// Requests whose id the reply cache remembers for another tenant's or kind of request:
    /// refused, not run.
    pub dup_other: AtomicU64,
    /// Completed mutations forgotten to make room (a retransmission of one would run again).
    pub dedup_evicted: AtomicU64,
    /// Mutations refused (`busy`) because the reply cache held only requests in progress.
    pub dedup_full: AtomicU64,
    /// Mutations refused `busy` because their tenant held its share of the reply cache.
    pub dedup_over_share: AtomicU64,
    /// Messages refused `busy` because every slot was held.
    pub slots_full: AtomicU64,
    /// Messages refused `busy` because their tenant held its share of the slots while
    /// another tenant used the worker.
    pub slots_over_share: AtomicU64,
    /// Requests with the RETRANSMIT flag.
    pub retransmits: AtomicU64,
    /// Replies with a placement hint.
    pub hints: AtomicU64,
    /// Nanoseconds spent in polls that did work, and polls in all.
    pub busy_ns: AtomicU64,
    /// Nanoseconds the core was taken by other work (the NIC congestion injector): busy for
    /// the load monitor, but no class's cost.
    pub background_ns: AtomicU64,
    pub polls: AtomicU64,
    /// Messages waiting in the slot table (parked on ops or at the host) at the last poll.
    pub in_flight: AtomicU64,
    /// Of those, waiting for the host (the rest are parked on link ops: the NIC's queue).
    pub at_host: AtomicU64,
    drops: [AtomicU64; Dropped::COUNT],
    /// Error replies sent, indexed like [`ErrorCode::ALL`].
    errors: [AtomicU64; ErrorCode::ALL.len()],
    /// One-sided ops refused or failed, by code (inside ONE_SIDED_REPLYs, whose request as a
    /// whole succeeded).
    op_errors: [AtomicU64; ErrorCode::ALL.len()],
    /// The port's drops by reason (copied from its `PortStats` after polls that did work).
    port_drops: [AtomicU64; DropReason::COUNT],
    /// Per class: messages received, NIC steps run.
    class_msgs: Box<[AtomicU64]>,
    class_steps: Box<[AtomicU64]>,
    /// The run counters of the offloads the worker has compiled, republished by the worker
    /// when its pool changes (never per message); read by the control thread.
    offloads: Mutex<Vec<(OffloadId, Arc<RunCounters>)>>,
    /// Per tenant: `[tenant + 1 (0: unused), admitted, refused, run_ns]`, copied from the
    /// worker's accounts every few milliseconds.
    tenants: [[AtomicU64; 4]; MAX_TENANTS],
}

pub(crate) use naam_core::counter::bump;

fn zeros(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl WorkerStats {
    pub fn new(classes: u16) -> WorkerStats {
        WorkerStats {
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            nic_executed: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            host_replies: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            ring_full: AtomicU64::new(0),
            host_unavailable: AtomicU64::new(0),
            one_sided: AtomicU64::new(0),
            one_sided_ops: AtomicU64::new(0),
            bad_key: AtomicU64::new(0),
            bad_capability: AtomicU64::new(0),
            not_yet_added: AtomicU64::new(0),
            dup_replayed: AtomicU64::new(0),
            dup_lost: AtomicU64::new(0),
            dup_other: AtomicU64::new(0),
            dedup_evicted: AtomicU64::new(0),
            dedup_full: AtomicU64::new(0),
            dedup_over_share: AtomicU64::new(0),
            slots_full: AtomicU64::new(0),
            slots_over_share: AtomicU64::new(0),
            retransmits: AtomicU64::new(0),
            hints: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            background_ns: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            at_host: AtomicU64::new(0),
            drops: Default::default(),
            errors: Default::default(),
            op_errors: Default::default(),
            port_drops: Default::default(),
            class_msgs: zeros(classes as usize),
            class_steps: zeros(classes as usize),
            offloads: Mutex::new(Vec::new()),
            tenants: Default::default(),
        }
    }

    #[inline]
    pub(crate) fn count_drop(&self, reason: Dropped) {
        bump(&self.drops[reason as usize], 1);
    }

    #[inline]
    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            bump(&self.errors[i], 1);
        }
    }

    #[inline]
    pub(crate) fn op_error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            bump(&self.op_errors[i], 1);
        }
    }

    #[inline]
    pub(crate) fn class_msg(&self, class: u16) {
        if let Some(a) = self.class_msgs.get(class as usize) {
            bump(a, 1);
        }
    }

    #[inline]
    pub(crate) fn class_steps(&self, class: u16, steps: u64) {
        if let Some(a) = self.class_steps.get(class as usize) {
            bump(a, steps);
        }
    }

    pub(crate) fn publish_port(&self, p: &PortStats) {
        for r in DropReason::ALL {
            self.port_drops[r as usize].store(p.drops(r), Ordering::Relaxed);
        }
    }

    pub(crate) fn publish_tenants(&self, accounts: &[TenantAccount]) {
        for (slot, a) in self.tenants.iter().zip(accounts) {
            let values = [u64::from(a.tenant) + 1, a.admitted, a.refused, a.run_ns];
            for (c, v) in slot.iter().zip(values) {
                c.store(v, Ordering::Relaxed);
            }
        }
    }

    /// `(tenant, [admitted, refused, run_ns])` of the tenants this worker has seen at the NIC,
    /// as of the last publication.
    pub fn tenant_counts(&self) -> Vec<(u32, [u64; 3])> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.tenants
            .iter()
            .filter(|t| l(&t[0]) != 0)
            .map(|t| ((l(&t[0]) - 1) as u32, [l(&t[1]), l(&t[2]), l(&t[3])]))
            .collect()
    }

    pub(crate) fn publish_offloads(&self, runs: Vec<(OffloadId, Arc<RunCounters>)>) {
        *self.offloads.lock().unwrap_or_else(|e| e.into_inner()) = runs;
    }

    /// `(id, [runs, steps, errors, run_ns])` of every offload this worker has compiled.
    pub fn offload_runs(&self) -> Vec<(OffloadId, [u64; 4])> {
        let runs = self.offloads.lock().unwrap_or_else(|e| e.into_inner());
        runs.iter().map(|(id, c)| (*id, c.read())).collect()
    }

    /// The port's drops for `reason`, as of the last publication.
    pub fn port_drops(&self, reason: DropReason) -> u64 {
        self.port_drops[reason as usize].load(Ordering::Relaxed)
    }

    pub fn drops(&self, reason: Dropped) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }

    /// Error replies sent with `code`.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    pub fn classes(&self) -> usize {
        self.class_msgs.len()
    }

    /// Messages and NIC steps of `class` so far.
    pub fn class_counts(&self, class: u16) -> (u64, u64) {
        let get = |v: &[AtomicU64]| {
            v.get(class as usize)
                .map_or(0, |a| a.load(Ordering::Relaxed))
        };
        (get(&self.class_msgs), get(&self.class_steps))
    }

    /// `(name, value)` of every counter (error and drop counters only when non-zero), for the
    /// STATS reply; names are prefixed by the caller.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut v = vec![
            ("rx".to_string(), l(&self.rx)),
            ("tx".into(), l(&self.tx)),
            ("malformed".into(), l(&self.malformed)),
            ("nic_executed".into(), l(&self.nic_executed)),
            ("steps".into(), l(&self.steps)),
            ("ops".into(), l(&self.ops)),
            ("forwarded".into(), l(&self.forwarded)),
            ("host_replies".into(), l(&self.host_replies)),
            ("busy".into(), l(&self.busy)),
            ("ring_full".into(), l(&self.ring_full)),
            ("host_unavailable".into(), l(&self.host_unavailable)),
            ("one_sided".into(), l(&self.one_sided)),
            ("one_sided_ops".into(), l(&self.one_sided_ops)),
            ("bad_key".into(), l(&self.bad_key)),
            ("bad_capability".into(), l(&self.bad_capability)),
            ("not_yet_added".into(), l(&self.not_yet_added)),
            ("dup_replayed".into(), l(&self.dup_replayed)),
            ("dup_lost".into(), l(&self.dup_lost)),
            ("dup_other".into(), l(&self.dup_other)),
            ("dedup_evicted".into(), l(&self.dedup_evicted)),
            ("dedup_full".into(), l(&self.dedup_full)),
            ("dedup_over_share".into(), l(&self.dedup_over_share)),
            ("slots_full".into(), l(&self.slots_full)),
            ("slots_over_share".into(), l(&self.slots_over_share)),
            ("retransmits".into(), l(&self.retransmits)),
            ("hints".into(), l(&self.hints)),
            ("busy_ns".into(), l(&self.busy_ns)),
            ("background_ns".into(), l(&self.background_ns)),
            ("polls".into(), l(&self.polls)),
            ("in_flight".into(), l(&self.in_flight)),
            ("at_host".into(), l(&self.at_host)),
        ];
        for (tenant, [admitted, refused, run_ns]) in self.tenant_counts() {
            v.push((format!("tenant.{tenant}.admitted"), admitted));
            v.push((format!("tenant.{tenant}.refused"), refused));
            v.push((format!("tenant.{tenant}.run_ns"), run_ns));
        }
        for d in Dropped::ALL {
            let n = self.drops(d);
            if n > 0 {
                v.push((format!("drop.{}", d.name()), n));
            }
        }
        for r in DropReason::ALL {
            let n = self.port_drops(r);
            if n > 0 {
                v.push((format!("port_drop.{}", r.name()), n));
            }
        }
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            let n = self.errors[i].load(Ordering::Relaxed);
            if n > 0 {
                v.push((format!("error.{}", c.name()), n));
            }
            let n = self.op_errors[i].load(Ordering::Relaxed);
            if n > 0 {
                v.push((format!("op_error.{}", c.name()), n));
            }
        }
        v
    }
}
