//! The worker: one poll-mode, run-to-completion loop per NIC core (the data path).
//!
//! One [`Worker::poll`] does, without blocking and without allocating:
//!
//! 1. completions of link ops → resume the messages parked on them;
//! 2. replies from the host ring → matched by token to the parked request → tx;
//! 3. an rx burst → parse → by kind: active message (steering, then execute here or forward
//!    to the host), one-sided ops (the one-sided engine, [`onesided`]), anything else
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
//!
//! This file is the poll loop and the receive path; the rest, one concept per file:
//! [`slots`] (the slot table and the ids naming a slot), [`execute`] (steps, ops,
//! completions), [`forward`] (the host ring), [`onesided`] (one-sided ops) and [`reply`]
//! (every reply: emit, remember for de-duplication, transmit).

use std::fmt::Write as _;
use std::sync::Arc;

use naam_core::abi::{DATA_SIZE, MAX_OPS};
use naam_core::exec::DEFAULT_MAX_STEPS;
use naam_core::pool::VmPool;
use naam_core::rate::TokenBucket;
use naam_core::region::RegionTable;
use naam_core::vm::Engine;
use naam_core::wire::{
    peek_am_tenant, AmRequestRepr, Body, ErrorCode, Flags, HeaderPacket, Kind, Message, WireError,
    HEADER_LEN,
};
use naam_link::{now_ns, Link, MSG_MAX};

mod execute;
mod forward;
mod onesided;
mod reply;
mod slots;

use reply::{link_error_code, Detail, Duplicate, Replies};
pub use reply::{UNPROVEN_BURST, UNPROVEN_REPLIES_PER_S};
use slots::{lost_code, Lost, NoSlot, ReqInfo, SlotKind, SlotRef, SlotState, SlotTable, OS_EMPTY};

use super::dedup::{Begin, ReplyCache};
use super::fair::{Account, BurstQueues, BurstSize, FairConfig, TenantShares};
use super::shared::{Pending, Shared};
use super::stats::{bump, Dropped, WorkerStats};
use crate::port::{Packet, PacketBatch, Port, MAX_PAYLOAD};
use crate::steering::Target;

/// Settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker index (also its link queue pair).
    pub id: u16,
    /// Workers of the dataplane: which clients' flows reach this one depends on it, so the
    /// reply cache's file is kept for a dataplane with as many.
    pub workers: u16,
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
    /// Keep the reply cache in this file, so that a restarted dataplane still answers
    /// retransmissions of what it executed before (`None`: in memory only).
    pub reply_cache_file: Option<std::path::PathBuf>,
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
            workers: 1,
            classes: crate::port::DEFAULT_CLASSES,
            burst: 32,
            slots: 64,
            dedup_entries: super::dedup::DEFAULT_ENTRIES,
            dedup_retain_ns: super::dedup::DEFAULT_RETAIN_NS,
            reply_cache_file: None,
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

/// The retry-after hint of a `busy` for a full slot table or host ring: both drain as link
/// work completes, in tens of microseconds; a millisecond lets a backlog clear before the
/// retries arrive (the client's window, cut by the refusal, lowers its rate meanwhile).
pub(super) const BUSY_RETRY_AFTER_NS: u64 = 1_000_000;

/// How often the tenants' and the port's counters are copied to the shared stats (the port's
/// also after every poll that found work).
const TENANTS_PUBLISH_NS: u64 = 10_000_000;

/// One NIC worker's state. Cache-line aligned; everything it uses on the data path is
/// allocated in [`Worker::new`].
#[repr(align(64))]
pub struct Worker {
    cfg: WorkerConfig,
    shared: Arc<Shared>,
    stats: Arc<WorkerStats>,
    pool: VmPool,
    regions: Arc<RegionTable>,
    regions_epoch: u64,
    slots: SlotTable,
    rx: Option<PacketBatch>,
    out: Replies,
    /// The handler time each tenant used, and a burst's packets queued per tenant.
    shares: TenantShares,
    queues: BurstQueues,
    /// Packets a poll takes under the shares, by what they have lately cost.
    burst_size: BurstSize,
    /// When the tenants' counters were last published.
    shares_published: u64,
    /// A ring entry being built or received.
    ring_buf: Box<[u8; MSG_MAX]>,
    /// Whether host memory is reachable over the link (its peer is not gone), as of the last
    /// poll: NIC execution and one-sided ops need it.
    host_ok: bool,
    /// Whether the host agent's workers answer (connected and heartbeat fresh): forwarding
    /// needs it. A suspect host's classes run on the NIC meanwhile.
    host_fresh: bool,
    now_ns: u64,
    /// The cycle counter (TSC) scaled to nanoseconds, for what is timed per message: a read
    /// costs a few ns where `clock_gettime` costs ~20 (it falls back to the monotonic clock
    /// where the counter is not invariant).
    clock: quanta::Clock,
}

impl Worker {
    pub fn new(cfg: WorkerConfig, shared: Arc<Shared>, stats: Arc<WorkerStats>) -> Worker {
        let pool = VmPool::new(shared.registry.clone(), cfg.engine);
        stats.publish_offloads(pool.run_counters());
        Worker {
            regions: shared.regions.current(),
            regions_epoch: shared.regions.epoch(),
            pool,
            slots: SlotTable::new(cfg.slots),
            rx: Some(PacketBatch::with_capacity(cfg.burst.max(1))),
            out: Replies {
                tx: PacketBatch::with_capacity(cfg.burst.max(1) * 2),
                cache: reply_cache(&cfg),
                unproven: TokenBucket::new(UNPROVEN_REPLIES_PER_S, UNPROVEN_BURST, 0),
            },
            ring_buf: Box::new([0; MSG_MAX]),
            shares: TenantShares::new(cfg.fair.clone()),
            queues: BurstQueues::new(cfg.burst.max(1)),
            burst_size: BurstSize::new(cfg.burst.max(1), cfg.fair.poll_budget_ns),
            shares_published: 0,
            host_ok: true,
            host_fresh: true,
            now_ns: 0,
            clock: quanta::Clock::new(),
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
        self.slots.in_flight()
    }

    /// Of those, the ones forwarded to the host and waiting for its reply.
    pub fn at_host(&self) -> usize {
        self.slots.at_host()
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
            work += self.fail_in_flight(port, Lost::HostGone);
        }

        // The batch is taken out while its packets are handled (they borrow it, the handlers
        // borrow the worker); it is always put back.
        let mut got = 0;
        let fair = self.cfg.fair.enabled;
        // What this poll costs from here on is what its packets cost (under the shares).
        let started = fair.then(|| self.clock.raw());
        if let Some(mut rx) = self.rx.take() {
            rx.clear();
            if fair {
                rx.set_limit(self.burst_size.limit());
            }
            got = port.rx_burst(&mut rx).unwrap_or(0);
            if fair && got > 1 {
                // A burst that took all it could: more is waiting at the port.
                let behind = got == rx.limit();
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
        if let Some(t) = started.filter(|_| got > 0) {
            let ns = self.clock.delta_as_nanos(t, self.clock.raw());
            self.burst_size.observe(got, ns);
        }
        if work > 0 {
            self.stats.publish_port(port.stats());
        }
        if now_ns.saturating_sub(self.shares_published) >= TENANTS_PUBLISH_NS {
            self.shares_published = now_ns;
            self.stats.publish_tenants(self.shares.accounts());
            // Also when no packet got through: a port that drops everything it receives
            // (all malformed, `--drop-rx-every 1`) showed none of it.
            self.stats.publish_port(port.stats());
        }
        bump(&self.stats.polls, 1);
        self.stats.at_host.store(
            self.slots.at_host() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.stats.in_flight.store(
            self.in_flight() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        work
    }

    /// One turn of a stopping worker: no message is taken from the port, those in flight go
    /// on (their ops complete, the host answers those forwarded to it, replies go out).
    /// Returns how much work it found; `None` once the host is gone (nothing more will
    /// complete: [`Worker::answer_unfinished`] answers the rest).
    pub fn finish_turn<P: Port, L: Link>(
        &mut self,
        now_ns: u64,
        port: &mut P,
        link: &mut L,
    ) -> Option<usize> {
        self.now_ns = now_ns;
        let mut work = self.drain_completions(port, link);
        work += self.drain_host_ring(port, link);
        self.flush(port);
        match link.check_peer(now_ns) {
            Err(e) if !e.is_peer_suspect() => None,
            _ => Some(work),
        }
    }

    /// The end of a stop: what [`Worker::finish_turn`] did not finish is answered (not
    /// executed, or outcome unknown) and the replies go out.
    pub fn answer_unfinished<P: Port>(&mut self, port: &mut P) -> usize {
        let n = self.fail_in_flight(port, Lost::Stopping);
        self.flush(port);
        n
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
        let n = self.fail_in_flight(port, Lost::HostGone);
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

    /// Serves a burst in fair order between tenants ([`super::fair`]): the next packet is
    /// always one of the tenant that used the least of this worker this round, and the
    /// replies of one tenant's run of packets are sent before the next tenant's run starts
    /// (the light tenant's reply does not wait for the heavy tenant's handlers). When the
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
            // Only a tenant its capability proves opens an account: the accounts are few,
            // and invented tenant ids would take them from the real ones.
            let account = peek_am_tenant(p.payload())
                .filter(|&(t, cap)| self.shared.capabilities.check(t, cap))
                .map(|(t, _)| self.shares.account(t));
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
        let mut previous = None;
        while let Some((i, account, served)) = self.queues.pop(&self.shares) {
            if previous.is_some_and(|a| a != account) {
                self.flush(port);
            }
            previous = Some(account);
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
            // Only a tenant its capability proved has an account.
            reply_max: ReqInfo::PROVEN,
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
            reply_max: pkt.payload().len(),
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
            reply_max: data.len(),
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
            reply_max: data.len(),
        };
        let mut d = Detail::new();
        let _ = write!(d, "{e}");
        self.send_error(port, &info, code, d.as_str(), false);
    }

    /// A slot for the message `info` of `account` (`None`: a tenant unknown here, not held
    /// to a share), or `None` after answering `busy`, counted by reason: every slot held
    /// (`slots_full`), or the tenant holds its share while another tenant uses the worker
    /// (`slots_over_share`, and refused in its account).
    fn take_slot<P: Port>(
        &mut self,
        port: &mut P,
        info: &ReqInfo,
        kind: SlotKind,
        account: Option<Account>,
    ) -> Option<usize> {
        let shared = account.is_some() && self.shares.accounts().len() > 1;
        let refusal = match self
            .slots
            .alloc(info, kind, account.unwrap_or_default(), shared)
        {
            Ok(i) => return Some(i),
            Err(r) => r,
        };
        // Counted for the refused tenant whoever holds the slots (probe 11: refusals another
        // tenant caused showed in no counter of the refused one).
        if let Some(a) = account {
            self.shares.count_refused(a);
        }
        let mut d = Detail::new();
        match (refusal, account) {
            (NoSlot::OverShare, Some(a)) => {
                bump(&self.stats.slots_over_share, 1);
                let _ = write!(
                    d,
                    "tenant {} holds its share of this NIC worker's slots",
                    self.shares.tenant(a)
                );
            }
            _ => {
                bump(&self.stats.slots_full, 1);
                let _ = write!(d, "no free slot");
            }
        }
        self.send_error(port, info, ErrorCode::Busy, d.as_str(), false);
        None
    }

    /// Remembers a mutation (a request of `kind`) of `tenant` as in progress before it runs,
    /// in slot `slot`. False when the reply cache has no room that would not forget a request
    /// still in progress, or the tenant holds its share of it: the slot is freed and the
    /// request refused with `busy` (counted `dedup_full`, `dedup_over_share`), never run
    /// unremembered.
    fn begin_dedup<P: Port>(
        &mut self,
        port: &mut P,
        info: &ReqInfo,
        slot: usize,
        (tenant, kind): (u32, Kind),
    ) -> bool {
        let (client, id) = (info.peer.remote, info.request_id);
        match self
            .out
            .cache
            .begin(client, id, tenant, kind as u8, self.now_ns)
        {
            Begin::Started | Begin::Reused => true,
            Begin::Expired => {
                bump(&self.stats.dedup_evicted, 1);
                true
            }
            Begin::Full { retry_after_ns } => {
                bump(&self.stats.dedup_full, 1);
                let mut d = Detail::new();
                let _ = match retry_after_ns {
                    Some(ns) => write!(
                        d,
                        "reply cache full of requests (of any tenant) that may still be retried; one expires in {} ms",
                        ns.div_ceil(1_000_000)
                    ),
                    None => write!(d, "reply cache full of requests in progress"),
                };
                self.refuse_undeduplicated(port, info, (slot, tenant), &d, retry_after_ns)
            }
            Begin::OverShare { retry_after_ns } => {
                bump(&self.stats.dedup_over_share, 1);
                let mut d = Detail::new();
                let _ = write!(
                    d,
                    "tenant {tenant} holds its share of the reply cache (requests it may still \
                     retry); say your window to free it sooner"
                );
                self.refuse_undeduplicated(port, info, (slot, tenant), &d, retry_after_ns)
            }
        }
    }

    /// Frees slot `slot` and answers `busy` with `detail`, to retry once an entry may go:
    /// a mutation the reply cache could not remember is never run. The refusal is counted
    /// for `tenant`, whoever filled the cache. Returns false.
    fn refuse_undeduplicated<P: Port>(
        &mut self,
        port: &mut P,
        info: &ReqInfo,
        (slot, tenant): (usize, u32),
        detail: &Detail,
        retry_after_ns: Option<u64>,
    ) -> bool {
        let a = self.shares.account(tenant);
        self.shares.count_refused(a);
        self.slots.release(slot);
        self.send_error_retry_after(
            port,
            info,
            ErrorCode::Busy,
            detail.as_str(),
            false,
            Some(retry_after_ns.unwrap_or(BUSY_RETRY_AFTER_NS)),
        );
        false
    }

    /// Checks the reply cache for a request (of `kind`, by `tenant`, proven) that is
    /// de-duplicated; true if it was handled (replayed, dropped as in progress, or refused
    /// since its id is remembered for another request).
    fn replayed<P: Port>(&mut self, port: &mut P, info: &ReqInfo, owner: (u32, Kind)) -> bool {
        match self
            .out
            .duplicate(port, &self.stats, (&info.peer, info.request_id), owner)
        {
            Duplicate::New => false,
            Duplicate::InProgress => {
                self.stats.count_drop(Dropped::DuplicateInProgress);
                true
            }
            Duplicate::Replayed { sent } => {
                if sent {
                    bump(&self.stats.dup_replayed, 1);
                }
                true
            }
            Duplicate::Other => {
                // Only one that proved its tenant gets this far: a client that reused an id
                // within the retention, or a tenant forging another client's address. The
                // remembered reply is not this request's, and running it could undo the
                // first request's at-most-once promise.
                bump(&self.stats.dup_other, 1);
                let mut d = Detail::new();
                let _ = write!(
                    d,
                    "request id {} of this client is remembered for another request (of another \
                     tenant or kind): not run; use a new id",
                    info.request_id
                );
                self.send_error(port, info, ErrorCode::BadRequest, d.as_str(), false);
                true
            }
            Duplicate::Lost => {
                bump(&self.stats.dup_lost, 1);
                self.send_error(
                    port,
                    info,
                    ErrorCode::OutcomeUnknown,
                    "the dataplane restarted while this request was in flight: it may have been applied",
                    false,
                );
                true
            }
        }
    }

    /// For an active message naming an offload this worker does not hold: whether it has
    /// come since the poll began (true: look again). Otherwise the client is answered: the
    /// host agent's offloads not added yet (a dataplane restarted beside thousands adds them
    /// over seconds) are "not executed, retry", anything else `unknown_offload`, final.
    #[cold]
    fn offload_came<P: Port>(&mut self, port: &mut P, info: &ReqInfo, id: u32) -> bool {
        let mut d = Detail::new();
        match self.shared.pending.get(id) {
            Some(Pending::Adding { retry_after_ns }) => {
                bump(&self.stats.not_yet_added, 1);
                let _ = write!(
                    d,
                    "offload {id} is being added (the host agent's, after a reconnection)"
                );
                let after = Some(retry_after_ns);
                self.send_error_retry_after(port, info, ErrorCode::Busy, d.as_str(), false, after);
            }
            Some(Pending::Unlisted) => {
                bump(&self.stats.not_yet_added, 1);
                let _ = write!(
                    d,
                    "offload {id} not known yet: no host agent has listed its offloads here"
                );
                self.send_error(port, info, ErrorCode::HostUnavailable, d.as_str(), false);
            }
            // The control thread takes an id out of the pending ones after the registry has
            // it: when it is no longer pending, a registry changed since the poll began has it.
            None if self.pool.sync() && self.pool.get(id).is_some() => {
                self.stats.publish_offloads(self.pool.run_counters());
                return true;
            }
            None => {
                let _ = write!(d, "no offload {id}");
                self.send_error(port, info, ErrorCode::UnknownOffload, d.as_str(), false);
            }
        }
        false
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
        // The tenant is named by the sender; the capability proves it (docs/security.md).
        // Checked first: a sender that proves nothing learns nothing of the offloads.
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
        let info = &info.proven();
        let owner = |e: &naam_core::pool::PoolEntry| {
            (e.offload.class, e.offload.tenant, e.offload.read_only)
        };
        let (class, tenant, read_only) = match self.pool.get(req.offload).map(owner) {
            Some(o) => o,
            None if self.offload_came(port, info, req.offload) => {
                match self.pool.get(req.offload).map(owner) {
                    Some(o) => o,
                    None => return,
                }
            }
            None => return,
        };
        if tenant != req.tenant {
            return self.send_error(
                port,
                info,
                ErrorCode::WrongTenant,
                "offload of another tenant",
                false,
            );
        }
        if class != info.class {
            let mut d = Detail::new();
            let _ = write!(d, "offload {} belongs to class {class}", req.offload);
            return self.send_error(port, info, ErrorCode::BadRequest, d.as_str(), false);
        }
        // Proven: what its window says about the client's finished requests counts.
        self.out
            .cache
            .retire(info.peer.remote, info.request_id, info.window);
        let target =
            self.shared
                .steering
                .steer(pkt.dst_port(), pkt.payload().len(), self.cfg.id.into());
        if target == Target::Drop {
            return self.stats.count_drop(Dropped::Steered);
        }
        let dedup = !read_only;
        if dedup && self.replayed(port, info, (tenant, Kind::AmRequest)) {
            return;
        }
        let exec_hint = req.flags.contains(naam_core::wire::AmFlags::EXEC_HINT);
        match target {
            Target::Host if self.host_fresh => {
                let account = self.shares.account(tenant);
                self.forward(pkt.payload(), info, account, dedup, exec_hint, port, link)
            }
            // At the NIC, or at a host that does not answer now: the handler runs here.
            _ => {
                if !self.host_ok {
                    // Handler ops reach host memory over the link: nothing to run them on.
                    return self.host_gone(port, info);
                }
                let account = self.shares.account(tenant);
                let Some(i) = self.take_slot(port, info, SlotKind::Am, Some(account)) else {
                    return;
                };
                if dedup && !self.begin_dedup(port, info, i, (tenant, Kind::AmRequest)) {
                    return;
                }
                // Admitted: it runs (a refusal above is no admission).
                self.shares.count_admitted(account);
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
}

/// The worker's reply cache: in its file when it has one (taking over what a previous
/// dataplane left there), else, or if the file cannot be used, in memory.
fn reply_cache(cfg: &WorkerConfig) -> ReplyCache {
    let Some(path) = &cfg.reply_cache_file else {
        return ReplyCache::new(cfg.dedup_entries, cfg.dedup_retain_ns);
    };
    let layout = (cfg.dedup_entries, usize::from(cfg.workers));
    match ReplyCache::open(path, layout, cfg.dedup_retain_ns, now_ns()) {
        Ok((cache, restored)) => {
            if restored.done + restored.lost > 0 {
                tracing::info!(
                    worker = cfg.id,
                    path = %path.display(),
                    replies = restored.done,
                    lost = restored.lost,
                    "reply cache taken over from the previous dataplane"
                );
            }
            cache
        }
        Err(e) => {
            tracing::warn!(
                worker = cfg.id,
                path = %path.display(),
                error = %naam_core::with_sources(&e),
                "reply cache kept in memory only: after a restart, retransmissions of earlier mutations would run again"
            );
            ReplyCache::new(cfg.dedup_entries, cfg.dedup_retain_ns)
        }
    }
}
