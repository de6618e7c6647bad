//! The worker: one poll-mode, run-to-completion loop per NIC core (the data path).
//!
//! One [`Worker::poll`] does, without blocking and without allocating:
//!
//! 1. completions of link ops → resume the messages parked on them;
//! 2. replies from the host ring → matched by token to the parked request → tx;
//! 3. an rx burst → parse → by kind: active message (steering, then execute here or forward
//!    to the host), one-sided ops (the one-sided engine, [`super::onesided`]), anything else
//!    answered or dropped and counted;
//! 4. completions again (the shm link completes at once) and a tx burst.
//!
//! A message whose handler step asks for ops is **parked** in a preallocated slot: its ops are
//! posted on the link with work-request ids naming the slot, and it resumes when all of them
//! completed. Messages forwarded to the host wait in a slot too; the ring entry's token names
//! the slot (index + generation, so a reply for a recycled slot is recognised as stale).
//!
//! The worker is generic over the [`Port`] and the [`Link`], and takes time as an argument,
//! so tests drive it without threads (quinn style).

use std::fmt::Write as _;
use std::sync::Arc;

use naam_core::abi::{Ctx, OpKind, DATA_SIZE, MAX_OPS};
use naam_core::exec::{
    apply_ops, check_ops, ordered_batch_end, run_step, StepOutcome, DEFAULT_MAX_STEPS,
};
use naam_core::pool::VmPool;
use naam_core::region::{CheckedOp, RegionTable};
use naam_core::vm::Engine;
use naam_core::wire::{
    peek_am_tenant, AmReplyRepr, AmRequestRepr, AmStatus, Body, ErrorCode, ErrorRepr, Flags,
    HeaderPacket, Kind, Location, Message, OpResult, PlacementHint, WireError, HEADER_LEN,
};
use naam_link::{
    now_ns, Completion, CompletionStatus, Link, LinkError, RemoteAddr, MSG_MAX, TOKEN_LEN,
};

use super::dedup::{Begin, ReplyCache, Seen};
use super::fair::{Account, BurstQueues, FairConfig, TenantShares};
use super::shared::Shared;
use super::stats::{bump, Dropped, WorkerStats};
use crate::port::{Packet, PacketBatch, Peer, Port, MAX_PAYLOAD};
use crate::steering::Target;

/// Settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker index (also its link queue pair).
    pub id: u16,
    /// Steering classes (sizes the per-class counters).
    pub classes: u16,
    /// Packets per rx burst.
    pub burst: usize,
    /// Messages in flight at once (parked on ops or waiting for the host). The link's staging
    /// buffer must hold `slots × DATA_SIZE` bytes ([`WorkerConfig::staging_bytes`]).
    pub slots: usize,
    /// Requests remembered for de-duplication.
    pub dedup_entries: usize,
    /// How long a completed request is remembered when its client does not say it is
    /// finished with it: the longest time a client retries.
    pub dedup_retain_ns: u64,
    pub max_steps: u32,
    pub engine: Engine,
    /// Measure the nanoseconds each offload spends in the VM (two clock reads per step; on
    /// when metrics are exported, and for the tenants' shares).
    pub run_time: bool,
    /// Fair order and refusal between tenants (docs/dataplane.md, "Tenants' shares").
    pub fair: FairConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: 0,
            classes: crate::port::DEFAULT_CLASSES,
            burst: 32,
            slots: 64,
            dedup_entries: 1024,
            dedup_retain_ns: super::dedup::DEFAULT_RETAIN_NS,
            max_steps: DEFAULT_MAX_STEPS,
            engine: Engine::native(),
            run_time: false,
            fair: FairConfig::default(),
        }
    }
}

impl WorkerConfig {
    /// Staging bytes the worker's link queue pair needs (one data area per slot).
    pub fn staging_bytes(&self) -> usize {
        self.slots * DATA_SIZE
    }

    /// Completion-queue depth the link needs so posting never finds it full.
    pub fn cq_depth(&self) -> usize {
        self.slots * MAX_OPS
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    Free,
    /// Waiting for `pending` link ops.
    Ops,
    /// Forwarded to the host, waiting for its reply.
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotKind {
    Am,
    OneSided,
}

/// The result of one one-sided op, kept while its completion is outstanding.
#[derive(Debug, Clone, Copy)]
pub(super) struct OsResult {
    pub kind: OpKind,
    pub error: Option<ErrorCode>,
    pub previous: u64,
    /// Where READ data lands in the slot's staging area, and how much.
    pub local_off: u32,
    pub len: u32,
}

/// The retry-after hint of a `busy` for a full slot table or host ring: both drain as link
/// work completes, in tens of microseconds; a millisecond lets a backlog clear before the
/// retries arrive (the client's window, cut by the refusal, lowers its rate meanwhile).
pub(super) const BUSY_RETRY_AFTER_NS: u64 = 1_000_000;

/// How often the tenants' counters are copied to the shared stats.
const TENANTS_PUBLISH_NS: u64 = 10_000_000;

pub(super) const OS_EMPTY: OsResult = OsResult {
    kind: OpKind::Read,
    error: None,
    previous: 0,
    local_off: 0,
    len: 0,
};

const OP_EMPTY: CheckedOp = CheckedOp {
    kind: OpKind::Read,
    region: 0,
    offset: 0,
    len: 0,
    data_off: 0,
    arg0: 0,
    arg1: 0,
};

/// A message in flight.
pub(super) struct Slot {
    pub state: SlotState,
    pub kind: SlotKind,
    pub generation: u32,
    pub peer: Peer,
    pub request_id: u64,
    pub class: u16,
    pub exec_hint: bool,
    pub read_only: bool,
    /// Remembered in the reply cache (its final reply is stored there).
    pub dedup: bool,
    /// It may have changed host memory: a write or atomic was posted for it, or it was
    /// forwarded to the host as a mutation. Lost then, its outcome is unknown.
    pub wrote: bool,
    pub offload: u32,
    pub tenant: u32,
    /// Its tenant's account, charged with each step's run time.
    pub account: Account,
    pub steps: u32,
    pub pending: u8,
    pub failed: Option<ErrorCode>,
    pub n_ops: u8,
    /// The first of `ops` not posted yet (ops are posted in ordered batches).
    pub next_op: u8,
    pub ops: [CheckedOp; MAX_OPS],
    pub os: [OsResult; MAX_OPS],
    pub ctx: Box<Ctx>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: SlotState::Free,
            kind: SlotKind::Am,
            generation: 0,
            peer: Peer::default(),
            request_id: 0,
            class: 0,
            exec_hint: false,
            read_only: true,
            dedup: false,
            wrote: false,
            offload: 0,
            tenant: 0,
            account: Account::default(),
            steps: 0,
            pending: 0,
            failed: None,
            n_ops: 0,
            next_op: 0,
            ops: [OP_EMPTY; MAX_OPS],
            os: [OS_EMPTY; MAX_OPS],
            ctx: Ctx::boxed(),
        }
    }
}

/// Where a request came from, everything a reply needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReqInfo {
    pub peer: Peer,
    pub request_id: u64,
    pub class: u16,
    /// The client's window (docs/protocol.md, "De-duplication"); 0: not said.
    pub window: u32,
}

/// Work-request id: generation (30 bits) | slot (32 bits) | op (2 bits).
#[inline]
pub(super) fn wr_id(slot: usize, generation: u32, op: usize) -> u64 {
    (u64::from(generation & 0x3fff_ffff) << 34) | ((slot as u64) << 2) | op as u64
}

#[inline]
fn split_wr_id(wr: u64) -> (usize, u32, usize) {
    (
        ((wr >> 2) & 0xffff_ffff) as usize,
        (wr >> 34) as u32,
        (wr & 3) as usize,
    )
}

/// Ring token: generation (32 bits) | slot (32 bits).
#[inline]
fn token(slot: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | slot as u64
}

/// A fixed buffer implementing `fmt::Write`, for error details without allocating.
pub(super) struct Detail {
    buf: [u8; 200],
    len: usize,
}

impl Detail {
    pub fn new() -> Detail {
        Detail {
            buf: [0; 200],
            len: 0,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only whole `&str`s are appended, cut at a char boundary below.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for Detail {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = naam_core::wire::clip_utf8(s, room).len();
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// One NIC worker's state. Cache-line aligned; everything it uses on the data path is
/// allocated in [`Worker::new`].
#[repr(align(64))]
pub struct Worker {
    pub(super) cfg: WorkerConfig,
    pub(super) shared: Arc<Shared>,
    pub(super) stats: Arc<WorkerStats>,
    pub(super) pool: VmPool,
    pub(super) regions: Arc<RegionTable>,
    regions_epoch: u64,
    pub(super) slots: Box<[Slot]>,
    free: Vec<u32>,
    pub(super) cache: ReplyCache,
    rx: Option<PacketBatch>,
    pub(super) tx: PacketBatch,
    /// The handler time each tenant used, and a burst's packets queued per tenant.
    shares: TenantShares,
    queues: BurstQueues,
    /// When the tenants' counters were last published.
    shares_published: u64,
    /// A ring entry being built or received.
    ring_buf: Box<[u8; MSG_MAX]>,
    /// Slots in state `Host`.
    at_host: usize,
    /// Whether host memory is reachable over the link (its peer is not gone), as of the last
    /// poll: NIC execution and one-sided ops need it.
    pub(super) host_ok: bool,
    /// Whether the host agent's workers answer (connected and heartbeat fresh): forwarding
    /// needs it. A suspect host's classes run on the NIC meanwhile.
    host_fresh: bool,
    now_ns: u64,
}

impl Worker {
    pub fn new(cfg: WorkerConfig, shared: Arc<Shared>, stats: Arc<WorkerStats>) -> Worker {
        let pool = VmPool::new(shared.registry.clone(), cfg.engine);
        stats.publish_offloads(pool.run_counters());
        let slots: Box<[Slot]> = (0..cfg.slots.max(1)).map(|_| Slot::new()).collect();
        let free = (0..slots.len() as u32).rev().collect();
        Worker {
            regions: shared.regions.current(),
            regions_epoch: shared.regions.epoch(),
            pool,
            slots,
            free,
            cache: ReplyCache::new(cfg.dedup_entries, cfg.dedup_retain_ns),
            rx: Some(PacketBatch::with_capacity(cfg.burst.max(1))),
            tx: PacketBatch::with_capacity(cfg.burst.max(1) * 2),
            ring_buf: Box::new([0; MSG_MAX]),
            shares: TenantShares::new(cfg.fair.clone()),
            queues: BurstQueues::new(cfg.burst.max(1)),
            shares_published: 0,
            host_ok: true,
            host_fresh: true,
            at_host: 0,
            now_ns: 0,
            cfg,
            shared,
            stats,
        }
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Messages waiting in the slot table.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Of those, the ones forwarded to the host and waiting for its reply.
    pub fn at_host(&self) -> usize {
        self.at_host
    }

    /// One turn of the loop; returns how much work it found (0 = idle, back off).
    pub fn poll<P: Port, L: Link>(&mut self, now_ns: u64, port: &mut P, link: &mut L) -> usize {
        self.now_ns = now_ns;
        self.refresh();
        let mut work = self.drain_completions(port, link);
        // Replies already in the ring are delivered even when the host has just died.
        work += self.drain_host_ring(port, link);
        let was_ok = self.host_ok;
        // A late heartbeat (suspect) leaves the memory path up and messages at the host
        // waiting for it: a stalled host agent answers them when it resumes.
        let peer = link.check_peer(now_ns);
        self.host_ok =
            self.shared.host_up() && peer.as_ref().map_or_else(|e| e.is_peer_suspect(), |_| true);
        self.host_fresh = self.host_ok && peer.is_ok();
        if was_ok && !self.host_ok {
            work += self.fail_in_flight(port);
        }

        // The batch is taken out while its packets are handled (they borrow it, the handlers
        // borrow the worker); it is always put back.
        let mut got = 0;
        if let Some(mut rx) = self.rx.take() {
            rx.clear();
            got = port.rx_burst(&mut rx).unwrap_or(0);
            if self.cfg.fair.enabled && got > 1 {
                // A burst that filled the batch: more is waiting in the kernel.
                let behind = got == rx.capacity();
                self.serve_fair(&rx, behind, port, link);
            } else {
                for p in rx.iter() {
                    self.on_packet(p, port, link);
                }
            }
            self.rx = Some(rx);
        }
        work += got;
        if got > 0 {
            work += self.drain_completions(port, link);
        }
        self.flush(port);
        if work > 0 {
            self.stats.publish_port(port.stats());
        }
        if now_ns.saturating_sub(self.shares_published) >= TENANTS_PUBLISH_NS {
            self.shares_published = now_ns;
            self.stats.publish_tenants(self.shares.accounts());
        }
        bump(&self.stats.polls, 1);
        self.stats
            .at_host
            .store(self.at_host as u64, std::sync::atomic::Ordering::Relaxed);
        self.stats.in_flight.store(
            self.in_flight() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        work
    }

    /// Adds busy time measured by the caller around a poll that found work.
    pub fn add_busy_ns(&self, ns: u64) {
        bump(&self.stats.busy_ns, ns);
    }

    /// Adds time the core spent on other work (the NIC congestion injector).
    pub fn add_background_ns(&self, ns: u64) {
        bump(&self.stats.background_ns, ns);
    }

    /// The link was replaced (or is gone for good): nothing posted on the old one will
    /// complete, so every message in flight is answered: `HostUnavailable` (not executed), or
    /// `OutcomeUnknown` for a mutation that may have reached host memory.
    pub fn link_reset<P: Port>(&mut self, port: &mut P) -> usize {
        let n = self.fail_in_flight(port);
        self.flush(port);
        self.host_ok = true;
        self.host_fresh = true;
        n
    }

    fn refresh(&mut self) {
        if self.pool.sync() {
            self.stats.publish_offloads(self.pool.run_counters());
        }
        if !self.pool.compile_errors.is_empty() {
            for (id, e) in self.pool.compile_errors.drain(..) {
                tracing::warn!(worker = self.cfg.id, offload = id, error = %e, "offload did not compile");
            }
        }
        let epoch = self.shared.regions.epoch();
        if epoch != self.regions_epoch {
            self.regions_epoch = epoch;
            self.regions = self.shared.regions.current();
        }
    }

    // ---- slots -------------------------------------------------------------------------

    pub(super) fn alloc_slot(&mut self, info: &ReqInfo, kind: SlotKind) -> Option<usize> {
        let i = self.free.pop()? as usize;
        let s = &mut self.slots[i];
        s.generation = s.generation.wrapping_add(1);
        // Allocated: `Ops` until the message is posted or forwarded (never `Free` while held).
        s.state = SlotState::Ops;
        s.kind = kind;
        s.peer = info.peer;
        s.request_id = info.request_id;
        s.class = info.class;
        s.exec_hint = false;
        s.read_only = true;
        s.dedup = false;
        s.wrote = false;
        s.steps = 0;
        s.pending = 0;
        s.failed = None;
        s.n_ops = 0;
        s.next_op = 0;
        Some(i)
    }

    /// Returns slot `i` to the free list (once: a free slot is left alone).
    pub(super) fn free_slot(&mut self, i: usize) {
        if self.slots[i].state == SlotState::Host {
            self.at_host -= 1;
        }
        if self.slots[i].state != SlotState::Free {
            self.slots[i].state = SlotState::Free;
            self.free.push(i as u32);
        }
    }

    fn fail_in_flight<P: Port>(&mut self, port: &mut P) -> usize {
        let mut n = 0;
        for i in 0..self.slots.len() {
            if self.slots[i].state != SlotState::Free {
                let code = lost_code(&self.slots[i]);
                let detail = if code == ErrorCode::OutcomeUnknown {
                    "host agent gone while this mutation was in flight: it may have been applied"
                } else {
                    "host agent gone"
                };
                self.finish_error(i, port, code, detail);
                n += 1;
            }
        }
        if n > 0 {
            tracing::warn!(
                worker = self.cfg.id,
                n,
                "answered in-flight messages: host agent gone"
            );
        }
        n
    }

    // ---- replies -----------------------------------------------------------------------

    pub(super) fn flush<P: Port>(&mut self, port: &mut P) {
        if self.tx.is_empty() {
            return;
        }
        let n = port.tx_burst(&self.tx).unwrap_or(0);
        bump(&self.stats.tx, n as u64);
        self.tx.clear();
    }

    /// Emits `msg` to `peer` into the tx batch; with `remember`, also into the reply cache.
    pub(super) fn send<P: Port>(
        &mut self,
        port: &mut P,
        peer: &Peer,
        msg: &Message<'_>,
        remember: bool,
    ) {
        if self.tx.spare() == 0 {
            self.flush(port);
        }
        let Some(p) = self.tx.push() else {
            self.stats.count_drop(Dropped::ReplyFailed);
            return;
        };
        p.set_peer(*peer);
        match msg.emit(&mut p.buffer_mut()[..]) {
            Ok(n) => {
                p.set_len(n);
                if remember {
                    self.cache
                        .complete(peer.remote, msg.request_id, p.payload(), self.now_ns);
                }
            }
            Err(_) => {
                let len = self.tx.len();
                self.tx.truncate(len - 1);
                self.stats.count_drop(Dropped::ReplyFailed);
                if remember {
                    self.cache.forget(peer.remote, msg.request_id);
                }
            }
        }
    }

    /// Sends raw reply bytes (a cached reply or a host reply) to `peer`.
    fn send_bytes<P: Port>(&mut self, port: &mut P, peer: &Peer, bytes: &[u8]) -> bool {
        if self.tx.spare() == 0 {
            self.flush(port);
        }
        let Some(p) = self.tx.push() else {
            return false;
        };
        if p.set_payload(bytes) {
            p.set_peer(*peer);
            return true;
        }
        let len = self.tx.len();
        self.tx.truncate(len - 1);
        self.stats.count_drop(Dropped::ReplyFailed);
        false
    }

    pub(super) fn send_error<P: Port>(
        &mut self,
        port: &mut P,
        info: &ReqInfo,
        code: ErrorCode,
        detail: &str,
        dedup: bool,
    ) {
        // A full slot table or ring drains within a few link round trips: a refused client
        // hears when to come back rather than guessing.
        let retry_after = (code == ErrorCode::Busy).then_some(BUSY_RETRY_AFTER_NS);
        self.send_error_retry_after(port, info, code, detail, dedup, retry_after)
    }

    /// [`Worker::send_error`] with the retry-after hint the reply carries (`busy` only).
    pub(super) fn send_error_retry_after<P: Port>(
        &mut self,
        port: &mut P,
        info: &ReqInfo,
        code: ErrorCode,
        detail: &str,
        dedup: bool,
        retry_after_ns: Option<u64>,
    ) {
        self.stats.error(code);
        match code {
            ErrorCode::Busy => bump(&self.stats.busy, 1),
            ErrorCode::HostUnavailable => bump(&self.stats.host_unavailable, 1),
            _ => {}
        }
        // "Not executed" replies are not remembered, so the retry runs (docs/protocol.md).
        let remember = dedup
            && !matches!(
                code,
                ErrorCode::Busy | ErrorCode::HostUnavailable | ErrorCode::BadVersion
            );
        if dedup && !remember {
            self.cache.forget(info.peer.remote, info.request_id);
        }
        let msg = Message::new(
            info.request_id,
            info.class,
            Body::Error({
                let e = ErrorRepr::new(
                    code,
                    naam_core::wire::clip_utf8(detail, naam_core::wire::DETAIL_MAX),
                );
                match retry_after_ns {
                    Some(ns) => e.retry_after_ns(ns),
                    None => e,
                }
            }),
        );
        self.send(port, &info.peer, &msg, remember);
    }

    fn finish_error<P: Port>(&mut self, i: usize, port: &mut P, code: ErrorCode, detail: &str) {
        let s = &self.slots[i];
        if s.kind == SlotKind::Am && s.steps > 0 {
            // It ran here: an offload's failed run.
            if let Some(e) = self.pool.get(s.offload) {
                bump(&e.runs.runs, 1);
                bump(&e.runs.errors, 1);
            }
        }
        let info = ReqInfo {
            peer: s.peer,
            request_id: s.request_id,
            class: s.class,
            window: 0,
        };
        let dedup = s.dedup;
        self.free_slot(i);
        self.send_error(port, &info, code, detail, dedup);
    }

    fn hint(&self, class: u16, exec_hint: bool, read_only: bool) -> Option<PlacementHint> {
        if !(exec_hint && read_only) {
            return None;
        }
        let lease_ms = self.shared.hints.lease_ms(class, self.now_ns)?;
        Some(PlacementHint {
            class,
            location: Location::Client,
            lease_ms,
        })
    }

    // ---- receive -----------------------------------------------------------------------

    /// Serves a burst in fair order between tenants ([`super::fair`]): the next packet is
    /// always one of the tenant that used the least of this worker this round. When the
    /// worker is `behind`, it spends at most the poll budget on the burst; after that, a
    /// tenant that was already served in it is refused its further messages (`busy`, retry
    /// after a round), so the next burst comes soon.
    fn serve_fair<P: Port, L: Link>(
        &mut self,
        rx: &PacketBatch,
        behind: bool,
        port: &mut P,
        link: &mut L,
    ) {
        self.shares.start_poll(self.now_ns);
        self.queues.clear();
        for (i, p) in rx.iter().enumerate() {
            let account = peek_am_tenant(p.payload()).map(|t| self.shares.account(t));
            self.queues.push(i, account);
        }
        if self.queues.tenants() <= 1 {
            // Nobody else is waiting in this burst.
            for p in rx.iter() {
                self.on_packet(p, port, link);
            }
            return;
        }
        let deadline = behind.then(|| now_ns() + self.cfg.fair.poll_budget_ns);
        while let Some((i, account, served)) = self.queues.pop(&self.shares) {
            let p = &rx.as_slice()[i];
            let over = served && deadline.is_some_and(|d| now_ns() >= d);
            match account {
                Some(a) if over && self.refuse_over_budget(p, a, port) => {}
                _ => self.on_packet(p, port, link),
            }
        }
    }

    /// Refuses an active message over the poll budget; false (nothing done) when it does not
    /// parse, for [`Worker::on_packet`] to answer.
    fn refuse_over_budget<P: Port>(
        &mut self,
        pkt: &Packet,
        account: Account,
        port: &mut P,
    ) -> bool {
        let Ok(msg) = Message::parse(pkt.payload()) else {
            return false;
        };
        bump(&self.stats.rx, 1);
        self.shares.count_refused(account);
        let info = ReqInfo {
            peer: *pkt.peer(),
            request_id: msg.request_id,
            class: msg.class,
            window: msg.window,
        };
        let mut d = Detail::new();
        let _ = write!(
            d,
            "tenant {}: this NIC worker is behind and served its share of the burst",
            self.shares.tenant(account)
        );
        let after = self.cfg.fair.window_ns;
        self.send_error_retry_after(port, &info, ErrorCode::Busy, d.as_str(), false, Some(after));
        true
    }

    fn on_packet<P: Port, L: Link>(&mut self, pkt: &Packet, port: &mut P, link: &mut L) {
        bump(&self.stats.rx, 1);
        if pkt.truncated() {
            return self.on_oversize(pkt, port);
        }
        let data = pkt.payload();
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => return self.on_malformed(pkt, e, port),
        };
        if msg.flags.contains(Flags::RETRANSMIT) {
            bump(&self.stats.retransmits, 1);
        }
        let info = ReqInfo {
            peer: *pkt.peer(),
            request_id: msg.request_id,
            class: msg.class,
            window: msg.window,
        };
        if msg.kind().is_reply() {
            self.stats.count_drop(Dropped::UnexpectedKind);
            return;
        }
        if msg.class != pkt.class() {
            let mut d = Detail::new();
            let _ = write!(
                d,
                "header class {} but sent to the port of class {}",
                msg.class,
                pkt.class()
            );
            return self.send_error(port, &info, ErrorCode::BadRequest, d.as_str(), false);
        }
        match msg.body {
            Body::AmRequest(req) => self.on_am(pkt, &info, &req, port, link),
            Body::OneSided(os) => self.on_one_sided(&info, &os, port, link),
            _ => self.send_error(
                port,
                &info,
                ErrorCode::Unsupported,
                "control messages go to the control port",
                false,
            ),
        }
    }

    /// A datagram longer than the port's packet buffers: answered with the limit (one-sided
    /// WRITEs and REGISTER-sized arguments are the usual cause), never dropped in silence.
    fn on_oversize<P: Port>(&mut self, pkt: &Packet, port: &mut P) {
        let data = pkt.payload();
        let h = HeaderPacket::new_unchecked(data);
        let is_request = Kind::from_u8(h.kind()).is_some_and(|k| !k.is_reply());
        if h.magic() != naam_core::wire::MAGIC || !is_request {
            return self.stats.count_drop(Dropped::Malformed);
        }
        bump(&self.stats.malformed, 1);
        let info = ReqInfo {
            peer: *pkt.peer(),
            request_id: h.request_id(),
            class: h.class(),
            window: 0,
        };
        let mut d = Detail::new();
        let _ = write!(
            d,
            "datagram larger than the {MAX_PAYLOAD} bytes a data port takes; split the request"
        );
        self.send_error(port, &info, ErrorCode::BadRequest, d.as_str(), false);
    }

    fn on_malformed<P: Port>(&mut self, pkt: &Packet, e: WireError, port: &mut P) {
        bump(&self.stats.malformed, 1);
        let data = pkt.payload();
        // Answer only requests whose header is readable: never reply to a reply (no loops).
        if data.len() < HEADER_LEN {
            return self.stats.count_drop(Dropped::Malformed);
        }
        let h = HeaderPacket::new_unchecked(data);
        let is_request = Kind::from_u8(h.kind()).is_some_and(|k| !k.is_reply());
        if h.magic() != naam_core::wire::MAGIC || !is_request {
            return self.stats.count_drop(Dropped::Malformed);
        }
        let code = match e {
            WireError::BadVersion { .. } => ErrorCode::BadVersion,
            _ if h.version() != naam_core::wire::VERSION => ErrorCode::BadVersion,
            _ => ErrorCode::BadRequest,
        };
        let info = ReqInfo {
            peer: *pkt.peer(),
            request_id: h.request_id(),
            class: h.class(),
            window: 0,
        };
        let mut d = Detail::new();
        let _ = write!(d, "{e}");
        self.send_error(port, &info, code, d.as_str(), false);
    }

    /// Remembers a mutation as in progress before it runs, in slot `slot`. False when the
    /// reply cache has no room that would not forget a request still in progress: the slot
    /// is freed and the request refused with `busy` (counted `dedup_full`), never run
    /// unremembered.
    pub(super) fn begin_dedup<P: Port>(
        &mut self,
        port: &mut P,
        info: &ReqInfo,
        slot: usize,
    ) -> bool {
        match self
            .cache
            .begin(info.peer.remote, info.request_id, self.now_ns)
        {
            Begin::Started | Begin::Reused => true,
            Begin::Expired => {
                bump(&self.stats.dedup_evicted, 1);
                true
            }
            Begin::Full { retry_after_ns } => {
                bump(&self.stats.dedup_full, 1);
                self.free_slot(slot);
                let mut d = Detail::new();
                let _ = match retry_after_ns {
                    Some(ns) => write!(
                        d,
                        "reply cache full of requests that may still be retried; one expires in {} ms",
                        ns.div_ceil(1_000_000)
                    ),
                    None => write!(d, "reply cache full of requests in progress"),
                };
                self.send_error_retry_after(
                    port,
                    info,
                    ErrorCode::Busy,
                    d.as_str(),
                    false,
                    Some(retry_after_ns.unwrap_or(BUSY_RETRY_AFTER_NS)),
                );
                false
            }
        }
    }

    /// Checks the reply cache for a request that is de-duplicated; true if it was handled
    /// (replayed or dropped as in progress).
    pub(super) fn replayed<P: Port>(&mut self, port: &mut P, info: &ReqInfo) -> bool {
        match self.cache.lookup(info.peer.remote, info.request_id) {
            Seen::New => false,
            Seen::InProgress => {
                self.stats.count_drop(Dropped::DuplicateInProgress);
                true
            }
            Seen::Done(bytes) => {
                // Copy out of the cache before touching the tx batch (both are ours).
                let mut buf = [0u8; MAX_PAYLOAD];
                let n = bytes.len();
                buf[..n].copy_from_slice(bytes);
                if self.send_bytes(port, &info.peer, &buf[..n]) {
                    bump(&self.stats.dup_replayed, 1);
                }
                true
            }
        }
    }

    fn on_am<P: Port, L: Link>(
        &mut self,
        pkt: &Packet,
        info: &ReqInfo,
        req: &AmRequestRepr<'_>,
        port: &mut P,
        link: &mut L,
    ) {
        self.stats.class_msg(info.class);
        // The registry may have changed since this poll began (the client may send this
        // right after its REGISTER or UNREGISTER was answered): one atomic load tells.
        if self.pool.sync() {
            self.stats.publish_offloads(self.pool.run_counters());
        }
        let Some(entry) = self.pool.get(req.offload) else {
            let mut d = Detail::new();
            let _ = write!(d, "no offload {}", req.offload);
            return self.send_error(port, info, ErrorCode::UnknownOffload, d.as_str(), false);
        };
        let (class, tenant, read_only) = (
            entry.offload.class,
            entry.offload.tenant,
            entry.offload.read_only,
        );
        if class != info.class {
            let mut d = Detail::new();
            let _ = write!(d, "offload {} belongs to class {class}", req.offload);
            return self.send_error(port, info, ErrorCode::BadRequest, d.as_str(), false);
        }
        if tenant != req.tenant {
            return self.send_error(
                port,
                info,
                ErrorCode::WrongTenant,
                "offload of another tenant",
                false,
            );
        }
        // The tenant is named by the sender; the capability proves it (docs/security.md).
        if !self.shared.capabilities.check(req.tenant, req.capability) {
            bump(&self.stats.bad_capability, 1);
            return self.send_error(
                port,
                info,
                ErrorCode::Unauthorized,
                "the capability does not prove the tenant (seal with the tenant's key)",
                false,
            );
        }
        // Proven: what its window says about the client's finished requests counts.
        self.cache
            .retire(info.peer.remote, info.request_id, info.window);
        let target =
            self.shared
                .steering
                .steer(pkt.dst_port(), pkt.payload().len(), self.cfg.id.into());
        if target == Target::Drop {
            return self.stats.count_drop(Dropped::Steered);
        }
        let dedup = !read_only;
        if dedup && self.replayed(port, info) {
            return;
        }
        let exec_hint = req.flags.contains(naam_core::wire::AmFlags::EXEC_HINT);
        match target {
            Target::Host if self.host_fresh => {
                self.forward(pkt.payload(), info, dedup, exec_hint, port, link)
            }
            // At the NIC, or at a host that does not answer now: the handler runs here.
            _ => {
                if !self.host_ok {
                    // Handler ops reach host memory over the link: nothing to run them on.
                    return self.send_error(
                        port,
                        info,
                        ErrorCode::HostUnavailable,
                        "host agent gone",
                        false,
                    );
                }
                let account = self.shares.account(tenant);
                self.shares.count_admitted(account);
                let Some(i) = self.alloc_slot(info, SlotKind::Am) else {
                    return self.send_error(port, info, ErrorCode::Busy, "no free slot", false);
                };
                if dedup && !self.begin_dedup(port, info, i) {
                    return;
                }
                let s = &mut self.slots[i];
                s.offload = req.offload;
                s.tenant = tenant;
                s.account = account;
                s.read_only = read_only;
                s.exec_hint = exec_hint;
                s.dedup = dedup;
                s.state = SlotState::Ops;
                s.ctx.start(req.args);
                self.advance(i, port, link);
            }
        }
    }

    // ---- host forwarding ---------------------------------------------------------------

    fn forward<P: Port, L: Link>(
        &mut self,
        datagram: &[u8],
        info: &ReqInfo,
        dedup: bool,
        exec_hint: bool,
        port: &mut P,
        link: &mut L,
    ) {
        if !self.host_ok {
            return self.send_error(
                port,
                info,
                ErrorCode::HostUnavailable,
                "host agent gone",
                false,
            );
        }
        if TOKEN_LEN + datagram.len() > MSG_MAX {
            return self.send_error(
                port,
                info,
                ErrorCode::BadRequest,
                "too large for the host ring",
                false,
            );
        }
        let Some(i) = self.alloc_slot(info, SlotKind::Am) else {
            return self.send_error(port, info, ErrorCode::Busy, "no free slot", false);
        };
        // Remembered before it leaves: the host may answer before this returns.
        if dedup && !self.begin_dedup(port, info, i) {
            return;
        }
        let tok = token(i, self.slots[i].generation);
        self.ring_buf[..TOKEN_LEN].copy_from_slice(&tok.to_le_bytes());
        self.ring_buf[TOKEN_LEN..TOKEN_LEN + datagram.len()].copy_from_slice(datagram);
        match link.send(&self.ring_buf[..TOKEN_LEN + datagram.len()]) {
            Ok(()) => {
                let s = &mut self.slots[i];
                s.state = SlotState::Host;
                self.at_host += 1;
                s.dedup = dedup;
                s.wrote = dedup;
                // Only mutating offloads are de-duplicated: the others are read-only.
                s.read_only = !dedup;
                s.exec_hint = exec_hint;
                bump(&self.stats.forwarded, 1);
            }
            Err(e) => {
                self.free_slot(i);
                if dedup {
                    // Not sent: not executed (the error below is a "not executed" code).
                    self.cache.forget(info.peer.remote, info.request_id);
                }
                match e {
                    LinkError::Full { .. } => {
                        bump(&self.stats.ring_full, 1);
                        self.send_error(port, info, ErrorCode::Busy, "host ring full", false)
                    }
                    e if e.is_peer_gone() => {
                        self.host_ok = false;
                        self.send_error(
                            port,
                            info,
                            ErrorCode::HostUnavailable,
                            "host agent gone",
                            false,
                        )
                    }
                    _ => self.send_error(
                        port,
                        info,
                        ErrorCode::HostUnavailable,
                        "host ring failed",
                        false,
                    ),
                }
            }
        }
    }

    fn drain_host_ring<P: Port, L: Link>(&mut self, port: &mut P, link: &mut L) -> usize {
        let mut n = 0;
        while n < self.cfg.burst {
            match link.recv(&mut self.ring_buf[..]) {
                Ok(Some(r)) => {
                    n += 1;
                    if r.imm.is_none() {
                        self.on_host_reply(r.len, port);
                    }
                }
                Ok(None) => break,
                Err(LinkError::Corrupt { .. }) => {
                    n += 1;
                    self.stats.count_drop(Dropped::BadRingEntry);
                }
                Err(_) => break,
            }
        }
        n
    }

    fn on_host_reply<P: Port>(&mut self, len: usize, port: &mut P) {
        if len < TOKEN_LEN + HEADER_LEN {
            return self.stats.count_drop(Dropped::BadRingEntry);
        }
        let mut t = [0u8; TOKEN_LEN];
        t.copy_from_slice(&self.ring_buf[..TOKEN_LEN]);
        let tok = u64::from_le_bytes(t);
        let (i, generation) = ((tok & 0xffff_ffff) as usize, (tok >> 32) as u32);
        let valid = self
            .slots
            .get(i)
            .is_some_and(|s| s.state == SlotState::Host && s.generation == generation);
        if !valid {
            return self.stats.count_drop(Dropped::StaleToken);
        }
        let s = &self.slots[i];
        let (peer, request_id, class, dedup, exec_hint, read_only) = (
            s.peer,
            s.request_id,
            s.class,
            s.dedup,
            s.exec_hint,
            s.read_only,
        );
        self.free_slot(i);
        bump(&self.stats.host_replies, 1);
        // Take the reply out of the ring buffer: the parse below borrows it while `send`
        // needs the worker.
        let mut buf = [0u8; MSG_MAX];
        let dlen = len - TOKEN_LEN;
        buf[..dlen].copy_from_slice(&self.ring_buf[TOKEN_LEN..len]);
        let datagram = &buf[..dlen];
        match Message::parse(datagram) {
            Ok(mut m) if m.request_id == request_id => {
                let transient = matches!(m.body, Body::Error(e) if e.code.is_transient());
                if let Body::AmReply(ref mut r) = m.body {
                    // The host does not know the placement: add the hint here.
                    if r.hint.is_none() {
                        r.hint = self.hint(class, exec_hint, read_only);
                        if r.hint.is_some() {
                            bump(&self.stats.hints, 1);
                        }
                    }
                }
                if let Body::Error(e) = m.body {
                    self.stats.error(e.code);
                }
                let remember = dedup && !transient;
                if dedup && transient {
                    self.cache.forget(peer.remote, request_id);
                }
                self.send(port, &peer, &m, remember);
            }
            _ => {
                // Not a reply to this request: the client must not be left waiting forever.
                self.stats.count_drop(Dropped::BadRingEntry);
                let info = ReqInfo {
                    peer,
                    request_id,
                    class,
                    window: 0,
                };
                self.send_error(
                    port,
                    &info,
                    ErrorCode::Internal,
                    "bad reply from the host agent",
                    dedup,
                );
            }
        }
    }

    // ---- execution on the NIC ----------------------------------------------------------

    /// Runs slot `i`'s handler until it finishes or parks on ops it asked for (resumed by
    /// [`Worker::on_completion`]), and charges the time to its tenant: steps, ops on host
    /// memory and the reply are what the message cost this worker.
    fn advance<P: Port, L: Link>(&mut self, i: usize, port: &mut P, link: &mut L) {
        // Two clock reads a message (or a resumption), also under first come, first served:
        // the per-tenant figures are what an operator compares the two by.
        let account = self.slots[i].account;
        let t = now_ns();
        self.run_steps(i, port, link);
        self.shares.charge(account, now_ns().saturating_sub(t));
    }

    /// [`Worker::advance`] without the charge. When the link maps host memory here
    /// ([`Link::direct`]) the ops of each step run at once, in order, straight into the
    /// context, and the next step follows in this call; otherwise they are posted.
    fn run_steps<P: Port, L: Link>(&mut self, i: usize, port: &mut P, link: &mut L) {
        loop {
            let s = &mut self.slots[i];
            let Some(entry) = self.pool.get(s.offload) else {
                return self.finish_error(
                    i,
                    port,
                    ErrorCode::UnknownOffload,
                    "offload unregistered",
                );
            };
            if s.steps >= self.cfg.max_steps {
                return self.finish_error(i, port, ErrorCode::StepBudget, "step budget spent");
            }
            s.ctx.set_step(s.steps);
            s.steps += 1;
            bump(&self.stats.steps, 1);
            bump(&entry.runs.steps, 1);
            let out = if self.cfg.run_time {
                let t = now_ns();
                let out = run_step(&entry.vm, &mut s.ctx);
                bump(&entry.runs.run_ns, now_ns().saturating_sub(t));
                out
            } else {
                run_step(&entry.vm, &mut s.ctx)
            };
            let n = match out {
                Ok(StepOutcome::Done) => return self.finish_am(i, None, port),
                Ok(StepOutcome::Abort(code)) => return self.finish_am(i, Some(code), port),
                Ok(StepOutcome::Ops(n)) => n,
                Err(e) => {
                    let mut d = Detail::new();
                    let _ = write!(d, "{e}");
                    return self.finish_error(i, port, ErrorCode::from(&e), d.as_str());
                }
            };
            let direct = match link.direct() {
                Ok(d) => d,
                Err(e) => {
                    if e.is_peer_gone() {
                        self.host_ok = false;
                    }
                    return self.finish_error(
                        i,
                        port,
                        link_error_code(&e),
                        "host memory unreachable",
                    );
                }
            };
            let table = direct.as_ref().map_or(&*self.regions, |d| d.table);
            if let Err(e) = check_ops(table, s.tenant, &s.ctx, n, &mut s.ops) {
                let mut d = Detail::new();
                let _ = write!(d, "{e}");
                return self.finish_error(i, port, e.code().into(), d.as_str());
            }
            bump(&self.stats.ops, n as u64);
            let Some(direct) = direct else {
                s.n_ops = n as u8;
                s.next_op = 0;
                // Parked when at least one op is outstanding; otherwise the failure is
                // recorded in the slot.
                if !self.post_ops(i, link) {
                    let code = self.slots[i].failed.unwrap_or(ErrorCode::Memory);
                    self.finish_error(i, port, code, "link refused the ops");
                }
                return;
            };
            if let Err(e) = apply_ops(direct.mem, &s.ops[..n], 0, &mut s.ctx) {
                let mut d = Detail::new();
                let _ = write!(d, "{e}");
                return self.finish_error(i, port, ErrorCode::Memory, d.as_str());
            }
        }
    }

    /// Posts the next batch of slot `i`'s checked handler ops (from `next_op`, see
    /// [`ordered_batch_end`]); true if at least one is outstanding.
    fn post_ops<L: Link>(&mut self, i: usize, link: &mut L) -> bool {
        let s = &mut self.slots[i];
        let base = (i * DATA_SIZE) as u64;
        let first = s.next_op as usize;
        let end = ordered_batch_end(&s.ops[..s.n_ops as usize], first);
        s.next_op = end as u8;
        s.pending = 0;
        s.state = SlotState::Ops;
        for k in first..end {
            let op = s.ops[k];
            let Some(desc) = self.regions.get(op.region) else {
                s.failed = Some(ErrorCode::NoSuchRegion);
                break;
            };
            let remote = RemoteAddr {
                region: op.region,
                offset: op.offset,
                key: desc.key,
            };
            let wr = wr_id(i, s.generation, k);
            let local = base + op.data_off as u64;
            let r = match op.kind {
                OpKind::Read => link.post_read(wr, remote, local, op.len),
                OpKind::Write => {
                    let w = op.data_off as usize..op.data_off as usize + op.len as usize;
                    if link.local().write(local, &s.ctx.data()[w]) {
                        link.post_write(wr, remote, local, op.len)
                    } else {
                        Err(LinkError::LocalOutOfRange {
                            offset: local,
                            len: op.len as u64,
                            size: link.local().len() as u64,
                        })
                    }
                }
                OpKind::Cas => link.post_cas(wr, remote, op.arg0, op.arg1),
                OpKind::Faa => link.post_faa(wr, remote, op.arg0),
            };
            match r {
                Ok(()) => {
                    s.pending += 1;
                    s.wrote |= op.kind != OpKind::Read;
                }
                Err(e) => {
                    if e.is_peer_gone() {
                        self.host_ok = false;
                    }
                    s.failed = Some(link_error_code(&e));
                    break;
                }
            }
        }
        s.pending > 0
    }

    fn drain_completions<P: Port, L: Link>(&mut self, port: &mut P, link: &mut L) -> usize {
        let mut done = [Completion::default(); 32];
        let mut total = 0;
        loop {
            let n = link.poll_completions(&mut done);
            for c in &done[..n] {
                self.on_completion(c, port, link);
            }
            total += n;
            // Resumed messages may have posted more ops (completed at once on shm): keep
            // going until the queue is empty; the step budget bounds this.
            if n == 0 {
                return total;
            }
        }
    }

    fn on_completion<P: Port, L: Link>(&mut self, c: &Completion, port: &mut P, link: &mut L) {
        let (i, generation, k) = split_wr_id(c.wr_id);
        let valid = self.slots.get(i).is_some_and(|s| {
            s.state == SlotState::Ops && s.generation & 0x3fff_ffff == generation && s.pending > 0
        });
        if !valid {
            return self.stats.count_drop(Dropped::StaleCompletion);
        }
        let base = (i * DATA_SIZE) as u64;
        let s = &mut self.slots[i];
        s.pending -= 1;
        match c.status {
            CompletionStatus::Success => match s.kind {
                SlotKind::Am => {
                    let op = s.ops[k];
                    if op.kind == OpKind::Read {
                        let w = op.data_off as usize..op.data_off as usize + op.len as usize;
                        if !link
                            .local()
                            .read(base + op.data_off as u64, s.ctx.data_window_mut(w))
                        {
                            s.failed = Some(ErrorCode::Memory);
                        }
                    }
                    s.ctx.set_op_result(k, c.value, 0);
                }
                SlotKind::OneSided => s.os[k].previous = c.value,
            },
            CompletionStatus::PeerGone => {
                self.host_ok = false;
                match s.kind {
                    SlotKind::Am => s.failed = Some(lost_code(s)),
                    // Per op: a lost READ was not executed, a lost write or atomic may have been.
                    SlotKind::OneSided => {
                        s.os[k].error = Some(if s.os[k].kind == OpKind::Read {
                            ErrorCode::HostUnavailable
                        } else {
                            ErrorCode::OutcomeUnknown
                        })
                    }
                }
            }
            CompletionStatus::Failed { .. } => match s.kind {
                SlotKind::Am => s.failed = Some(ErrorCode::Memory),
                SlotKind::OneSided => s.os[k].error = Some(ErrorCode::Memory),
            },
        }
        if s.pending > 0 {
            return;
        }
        match (s.kind, s.failed) {
            (SlotKind::Am, Some(code)) => self.finish_error(i, port, code, "op failed on the link"),
            (SlotKind::Am, None) if s.next_op < s.n_ops => {
                if !self.post_ops(i, link) {
                    let code = self.slots[i].failed.unwrap_or(ErrorCode::Memory);
                    self.finish_error(i, port, code, "link refused the ops");
                }
            }
            (SlotKind::Am, None) => self.advance(i, port, link),
            (SlotKind::OneSided, _) => self.finish_one_sided(i, port, link),
        }
    }

    fn finish_am<P: Port>(&mut self, i: usize, abort: Option<u32>, port: &mut P) {
        let s = &self.slots[i];
        let hint = self.hint(s.class, s.exec_hint, s.read_only);
        let Some(output) = s.ctx.out() else {
            return self.finish_error(i, port, ErrorCode::BadHandler, "output past the reply area");
        };
        let status = match abort {
            None => AmStatus::Done,
            Some(code) => AmStatus::Aborted(code),
        };
        // The reply borrows the slot's context: copy the little the send needs.
        let mut out = [0u8; naam_core::abi::OUT_MAX];
        let out = {
            out[..output.len()].copy_from_slice(output);
            &out[..output.len()]
        };
        let (peer, request_id, class, dedup, steps) =
            (s.peer, s.request_id, s.class, s.dedup, s.steps);
        if let Some(e) = self.pool.get(s.offload) {
            bump(&e.runs.runs, 1);
        }
        self.free_slot(i);
        bump(&self.stats.nic_executed, 1);
        self.stats.class_steps(class, steps as u64);
        if hint.is_some() {
            bump(&self.stats.hints, 1);
        }
        let msg = Message::new(
            request_id,
            class,
            Body::AmReply(AmReplyRepr {
                status,
                executed_at: Location::Nic,
                steps,
                hint,
                output: out,
            }),
        );
        self.send(port, &peer, &msg, dedup);
    }

    pub(super) fn finish_one_sided_results<P: Port>(
        &mut self,
        i: usize,
        port: &mut P,
        results: &[OpResult<'_>],
    ) {
        let s = &self.slots[i];
        let (peer, request_id, class, dedup) = (s.peer, s.request_id, s.class, s.dedup);
        self.free_slot(i);
        let body = match naam_core::wire::OneSidedReplyRepr::new(results) {
            Ok(r) => Body::OneSidedReply(r),
            Err(_) => {
                self.stats.count_drop(Dropped::ReplyFailed);
                return;
            }
        };
        let msg = Message::new(request_id, class, body);
        // Emit into the tx batch directly (the results borrow `os_buf`, not the batch).
        if self.tx.spare() == 0 {
            self.flush(port);
        }
        let Some(p) = self.tx.push() else {
            return self.stats.count_drop(Dropped::ReplyFailed);
        };
        p.set_peer(peer);
        match msg.emit(&mut p.buffer_mut()[..]) {
            Ok(n) => {
                p.set_len(n);
                if dedup {
                    self.cache
                        .complete(peer.remote, request_id, p.payload(), self.now_ns);
                }
            }
            Err(_) => {
                let len = self.tx.len();
                self.tx.truncate(len - 1);
                self.stats.count_drop(Dropped::ReplyFailed);
                if dedup {
                    self.cache.forget(peer.remote, request_id);
                }
            }
        }
    }
}

/// How a message lost with the host is answered: a mutation that may have reached host
/// memory has an unknown outcome (and that answer is remembered, so a retry does not run it
/// again); anything else was not executed and may be retried.
fn lost_code(s: &Slot) -> ErrorCode {
    if s.dedup && s.wrote {
        ErrorCode::OutcomeUnknown
    } else {
        ErrorCode::HostUnavailable
    }
}

/// The error code a failed post maps to.
pub(super) fn link_error_code(e: &LinkError) -> ErrorCode {
    match e {
        LinkError::PeerGone { .. } => ErrorCode::HostUnavailable,
        LinkError::Refused(op) => op.code().into(),
        LinkError::Full { .. } | LinkError::CqFull { .. } => ErrorCode::Busy,
        _ => ErrorCode::Memory,
    }
}
