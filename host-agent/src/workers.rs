//! Host workers: run-to-completion, one thread each, poll-mode with back-off (DESIGN §3, §9).
//!
//! Worker `k` of `K` serves queue pairs `k, k + K, ...` (docs/runtime.md). Each ring entry is
//! `token: u64 LE` + an `AmRequest` datagram; the worker runs the message on the host's local
//! memory and pushes `token` + an `AmReply` (`executed_at = host`) or an `Error` datagram onto
//! the reply ring of the same queue pair. Every buffer is set up before the loop: handling a
//! message never allocates. Bad input is answered when a token is readable and counted
//! always. A full reply ring keeps the reply in the queue pair's buffer and retries it before
//! reading more from that ring (order is kept, nothing is dropped).
//!
//! Each worker publishes its load (busy fraction over the last millisecond, queue depth =
//! requests pending on its rings) every millisecond, which also stamps the host heartbeat.

use crate::stats::{add, bump, OffloadCounters, Stats, WorkerCounters};
use crate::sys::PollSet;
use naam_core::abi::Ctx;
use naam_core::exec::{Executor, Outcome};
use naam_core::pool::{Registry, VmPool};
use naam_core::region::RegionTable;
use naam_core::vm::Engine;
use naam_core::wire::{
    AmReplyRepr, AmRequestRepr, AmStatus, Body, ErrorCode, ErrorRepr, HeaderPacket, Location,
    Message, WireError, DETAIL_MAX, HEADER_LEN, MAGIC,
};
use naam_link::{
    Backoff, Link, LinkError, LoadPublisher, ShmMemory, ShmQp, MSG_MAX, REPLY_PREFIX, TOKEN_LEN,
};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Ring entries taken from one queue pair before looking at the next.
const BURST: usize = 32;
/// Load publication period.
const PUBLISH_NS: u64 = 1_000_000;
/// How often a worker holding a reply re-checks the reply ring once it stopped spinning.
const HELD_REPLY_POLL: Duration = Duration::from_micros(100);

/// What the control thread and the workers share.
pub struct Shared {
    pub stop: AtomicBool,
    /// Asks the workers to park (a quiet moment for a consistent snapshot).
    pub pause: AtomicBool,
    /// Workers currently parked.
    pub parked: AtomicU32,
    /// The congestion injector: workers spin, busy and not serving, until this instant
    /// (CLOCK_MONOTONIC ns).
    pub congest_until_ns: AtomicU64,
    pub registry: Arc<Registry>,
    pub stats: Arc<Stats>,
}

impl Shared {
    pub fn new(registry: Arc<Registry>, stats: Arc<Stats>) -> Arc<Shared> {
        Arc::new(Shared {
            stop: AtomicBool::new(false),
            pause: AtomicBool::new(false),
            parked: AtomicU32::new(0),
            congest_until_ns: AtomicU64::new(0),
            registry,
            stats,
        })
    }
}

/// What a worker thread is built from (everything `Send`; the VMs are made in the thread).
pub struct WorkerSetup {
    pub index: u32,
    pub qps: Vec<ShmQp>,
    pub table: RegionTable,
    pub mem: ShmMemory,
    pub publisher: LoadPublisher,
    pub backoff: Backoff,
    pub engine: Engine,
    pub shared: Arc<Shared>,
}

/// The per-message machinery of one worker.
struct Runner {
    pool: VmPool,
    exec: Executor,
    table: RegionTable,
    mem: ShmMemory,
    ctx: Box<Ctx>,
    /// Counters of the registered offloads, by id (rebuilt when the pool changes).
    offloads: Vec<Option<Arc<OffloadCounters>>>,
    /// This worker's index (for its log lines).
    index: u32,
}

/// One queue pair and the reply it may be holding back.
struct Port {
    qp: ShmQp,
    tx: Box<[u8; MSG_MAX]>,
    /// Length of a reply in `tx` that found the ring full.
    held: Option<usize>,
}

/// Runs a worker until `shared.stop`.
pub fn run(setup: WorkerSetup) {
    let WorkerSetup {
        index,
        qps,
        table,
        mem,
        publisher,
        backoff,
        engine,
        shared,
    } = setup;
    let counters = shared.stats.worker(index as usize);
    let mut runner = Runner {
        pool: VmPool::new(shared.registry.clone(), engine),
        exec: Executor::default(),
        table,
        mem,
        ctx: Ctx::boxed(),
        offloads: Vec::new(),
        index,
    };
    runner.refresh_offloads(&shared.stats);
    let mut ports: Vec<Port> = qps
        .into_iter()
        .map(|qp| Port {
            qp,
            tx: Box::new([0u8; MSG_MAX]),
            held: None,
        })
        .collect();
    let mut rx = Box::new([0u8; MSG_MAX]);
    // The doorbells of all rings, for sleeping on several at once (fds never change).
    let mut pollfds = PollSet::new(ports.iter().map(|p| p.qp.rx_doorbell()));
    let mut load = LoadWindow::new(naam_link::now_ns());
    let mut idle = 0u32;
    tracing::info!(
        worker = index,
        qps = ?ports.iter().map(|p| p.qp.index()).collect::<Vec<_>>(),
        engine = engine.name(),
        "host worker started"
    );

    while !shared.stop.load(Ordering::Relaxed) {
        if shared.pause.load(Ordering::Acquire) {
            park(&shared, &publisher, index);
            continue;
        }
        let now = naam_link::now_ns();
        let until = shared.congest_until_ns.load(Ordering::Relaxed);
        if now < until {
            congest(&shared, &publisher, counters, &mut ports, index, until);
            load = LoadWindow::new(naam_link::now_ns());
            continue;
        }
        runner.sync(&shared.stats);

        let mut work = 0usize;
        let mut holding = false;
        for port in ports.iter_mut() {
            work += serve(
                port,
                &mut runner,
                &shared.stats,
                counters,
                &mut rx[..],
                &mut load,
            );
            holding |= port.held.is_some();
        }

        let now = naam_link::now_ns();
        if now.saturating_sub(load.start) >= PUBLISH_NS {
            let depth: u64 = ports.iter_mut().map(|p| p.qp.rx_pending()).sum();
            publisher.publish(index, load.ppm(now), depth.min(u32::MAX as u64) as u32, now);
            bump(&counters.publishes, 1);
            load = LoadWindow::new(now);
        }

        if work > 0 {
            idle = 0;
        } else if holding {
            // Waiting for reply-ring space: the consumer rings no doorbell for that, so poll,
            // and with back-off on do it gently (a dead dataplane may never read again).
            idle = idle.saturating_add(1);
            if backoff.enabled && idle > backoff.spins {
                bump(&counters.sleeps, 1);
                std::thread::sleep(HELD_REPLY_POLL);
            } else {
                std::hint::spin_loop();
            }
        } else {
            idle = idle.saturating_add(1);
            if backoff.enabled && idle > backoff.spins {
                bump(&counters.sleeps, 1);
                wait_doorbells(&mut ports, &mut pollfds, backoff.sleep);
            } else {
                std::hint::spin_loop();
            }
        }
    }
    tracing::info!(worker = index, "host worker stopped");
}

/// Busy time within the current publication window.
struct LoadWindow {
    start: u64,
    busy: u64,
}

impl LoadWindow {
    fn new(now: u64) -> Self {
        LoadWindow {
            start: now,
            busy: 0,
        }
    }

    fn ppm(&self, now: u64) -> u32 {
        let span = now.saturating_sub(self.start).max(1);
        (self.busy.saturating_mul(1_000_000) / span).min(1_000_000) as u32
    }
}

impl Runner {
    /// Catches up with the registry: one atomic load when nothing changed. Called again for
    /// each message received: a REGISTER or UNREGISTER answered after this poll began must
    /// hold for the messages sent once the answer was read.
    fn sync(&mut self, stats: &Stats) {
        if self.pool.sync() {
            self.refresh_offloads(stats);
            for (id, e) in self.pool.compile_errors.drain(..) {
                tracing::error!(worker = self.index, offload = id, error = %e, "offload failed to compile");
            }
        }
    }

    fn refresh_offloads(&mut self, stats: &Stats) {
        let ids: Vec<u32> = stats_ids(&self.pool);
        let max = ids.iter().map(|&i| i as usize + 1).max().unwrap_or(0);
        self.offloads = vec![None; max];
        for id in ids {
            self.offloads[id as usize] = Some(stats.offload(id));
        }
    }
}

fn stats_ids(pool: &VmPool) -> Vec<u32> {
    pool.registry()
        .list()
        .iter()
        .map(|o| o.id)
        .filter(|&id| pool.get(id).is_some())
        .collect()
}

/// Sends a held reply, then handles up to [`BURST`] entries; returns the entries handled.
fn serve(
    port: &mut Port,
    runner: &mut Runner,
    stats: &Stats,
    counters: &WorkerCounters,
    rx: &mut [u8],
    load: &mut LoadWindow,
) -> usize {
    if let Some(len) = port.held {
        match port.qp.send(&port.tx[..len]) {
            Ok(()) => {
                port.held = None;
                bump(&counters.replies, 1);
            }
            Err(LinkError::Full { .. }) => {
                bump(&counters.reply_ring_full, 1);
                return 0;
            }
            Err(e) => {
                bump(&counters.link_errors, 1);
                tracing::warn!(qp = port.qp.index(), error = %naam_core::with_sources(&e), "reply send failed; kept");
                return 0;
            }
        }
    }
    let mut n = 0;
    while n < BURST {
        let got = match port.qp.recv(rx) {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(LinkError::Corrupt { .. }) => {
                // The link skipped it (and logged): no token to answer.
                bump(&counters.corrupt_entries, 1);
                n += 1;
                continue;
            }
            Err(e) => {
                bump(&counters.link_errors, 1);
                tracing::warn!(qp = port.qp.index(), error = %naam_core::with_sources(&e), "ring receive failed");
                break;
            }
        };
        n += 1;
        if got.imm.is_some() {
            bump(&counters.doorbells, 1);
            continue;
        }
        runner.sync(stats);
        let t0 = naam_link::now_ns();
        let reply = handle(runner, counters, &rx[..got.len], &mut port.tx[..]);
        let spent = naam_link::now_ns().saturating_sub(t0);
        load.busy += spent;
        bump(&counters.busy_ns, spent);
        if let Some(len) = reply {
            // What this message cost here, for the NIC worker to charge to its tenant.
            port.tx[TOKEN_LEN..REPLY_PREFIX].copy_from_slice(&spent.to_le_bytes());
            match port.qp.send(&port.tx[..len]) {
                Ok(()) => bump(&counters.replies, 1),
                Err(e) => {
                    if matches!(e, LinkError::Full { .. }) {
                        bump(&counters.reply_ring_full, 1);
                    } else {
                        bump(&counters.link_errors, 1);
                        tracing::warn!(qp = port.qp.index(), error = %naam_core::with_sources(&e), "reply send failed; kept");
                    }
                    port.held = Some(len);
                    break;
                }
            }
        }
    }
    n
}

/// Handles one ring entry; writes the reply entry into `out` (the token, room for the cost,
/// the reply datagram: [`REPLY_PREFIX`]) and returns its length, or `None` when there is
/// nobody to answer (no token).
fn handle(
    runner: &mut Runner,
    counters: &WorkerCounters,
    entry: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    if entry.len() < TOKEN_LEN {
        bump(&counters.short_entries, 1);
        return None;
    }
    out[..TOKEN_LEN].copy_from_slice(&entry[..TOKEN_LEN]);
    let datagram = &entry[TOKEN_LEN..];
    let msg = match Message::parse(datagram) {
        Ok(m) => m,
        Err(e) => {
            bump(&counters.bad_datagrams, 1);
            let (request_id, class) = header_echo(datagram);
            let code = match e {
                WireError::BadVersion { .. } => ErrorCode::BadVersion,
                _ => ErrorCode::BadRequest,
            };
            let mut detail = DetailBuf::new();
            detail.write(format_args!("{e}"));
            return emit_error(out, request_id, class, code, detail.as_str());
        }
    };
    let Body::AmRequest(req) = msg.body else {
        bump(&counters.wrong_kind, 1);
        return emit_error(
            out,
            msg.request_id,
            msg.class,
            ErrorCode::Unsupported,
            "host workers run AM_REQUEST datagrams only",
        );
    };
    run_request(runner, counters, &msg, &req, out)
}

fn run_request(
    runner: &mut Runner,
    counters: &WorkerCounters,
    msg: &Message<'_>,
    req: &AmRequestRepr<'_>,
    out: &mut [u8],
) -> Option<usize> {
    let Runner {
        pool,
        exec,
        table,
        mem,
        ctx,
        offloads,
        ..
    } = runner;
    let Some(entry) = pool.get(req.offload) else {
        bump(&counters.unknown_offload, 1);
        bump(&counters.messages, 1);
        bump(&counters.errors, 1);
        exec.unknown_offload(req.offload);
        return emit_error(
            out,
            msg.request_id,
            msg.class,
            ErrorCode::UnknownOffload,
            "",
        );
    };
    if entry.offload.tenant != req.tenant {
        bump(&counters.refused, 1);
        return emit_error(
            out,
            msg.request_id,
            msg.class,
            ErrorCode::WrongTenant,
            "the offload belongs to another tenant",
        );
    }
    if entry.offload.class != msg.class {
        bump(&counters.refused, 1);
        return emit_error(
            out,
            msg.request_id,
            msg.class,
            ErrorCode::BadRequest,
            "the header class is not the offload's class",
        );
    }
    let t0 = naam_link::now_ns();
    ctx.start(req.args);
    let outcome = exec.run(&entry.vm, entry.offload.tenant, table, mem, ctx);
    let spent = naam_link::now_ns().saturating_sub(t0);
    let oc = offloads.get(req.offload as usize).and_then(Option::as_ref);
    let steps = match &outcome {
        Outcome::Done { steps }
        | Outcome::Aborted { steps, .. }
        | Outcome::Failed { steps, .. } => *steps,
    };
    bump(&counters.messages, 1);
    bump(&counters.steps, steps as u64);
    if let Some(oc) = oc {
        add(&oc.runs, 1);
        add(&oc.steps, steps as u64);
        add(&oc.run_ns, spent);
    }
    let reply = |status, output| {
        Body::AmReply(AmReplyRepr {
            status,
            executed_at: Location::Host,
            steps,
            hint: None,
            output,
        })
    };
    match outcome {
        Outcome::Done { .. } => {
            let output = ctx.out().unwrap_or(&[]);
            emit(out, &msg.reply(reply(AmStatus::Done, output)))
        }
        Outcome::Aborted { code, .. } => {
            bump(&counters.aborted, 1);
            if let Some(oc) = oc {
                add(&oc.aborted, 1);
            }
            emit(out, &msg.reply(reply(AmStatus::Aborted(code), &[])))
        }
        Outcome::Failed { error, .. } => {
            bump(&counters.errors, 1);
            if let Some(oc) = oc {
                add(&oc.errors, 1);
            }
            let mut detail = DetailBuf::new();
            detail.write(format_args!("{error}"));
            emit_error(
                out,
                msg.request_id,
                msg.class,
                ErrorCode::from(&error),
                detail.as_str(),
            )
        }
    }
}

/// The request id and class of a datagram whose header is readable (magic right), else 0.
fn header_echo(datagram: &[u8]) -> (u64, u16) {
    if datagram.len() < HEADER_LEN {
        return (0, 0);
    }
    let h = HeaderPacket::new_unchecked(datagram);
    if h.magic() != MAGIC {
        return (0, 0);
    }
    (h.request_id(), h.class())
}

fn emit_error(
    out: &mut [u8],
    request_id: u64,
    class: u16,
    code: ErrorCode,
    detail: &str,
) -> Option<usize> {
    let m = Message::new(request_id, class, Body::Error(ErrorRepr::new(code, detail)));
    emit(out, &m)
}

/// Writes `m` after the token already in `out[..8]` and the room for the cost.
fn emit(out: &mut [u8], m: &Message<'_>) -> Option<usize> {
    match m.emit(&mut out[REPLY_PREFIX..]) {
        Ok(n) => Some(REPLY_PREFIX + n),
        Err(e) => {
            // Our own reply did not fit or check: a bug, answered as such rather than lost.
            tracing::error!(error = %e, "reply did not emit");
            let fallback = Message::new(
                m.request_id,
                m.class,
                Body::Error(ErrorRepr::new(ErrorCode::Internal, "")),
            );
            fallback
                .emit(&mut out[REPLY_PREFIX..])
                .ok()
                .map(|n| REPLY_PREFIX + n)
        }
    }
}

/// Error detail text formatted on the stack (at most `DETAIL_MAX` bytes, cut at a character
/// boundary).
struct DetailBuf {
    buf: [u8; DETAIL_MAX],
    len: usize,
}

impl DetailBuf {
    fn new() -> Self {
        DetailBuf {
            buf: [0; DETAIL_MAX],
            len: 0,
        }
    }

    fn write(&mut self, args: std::fmt::Arguments<'_>) {
        use std::fmt::Write;
        let _ = self.write_fmt(args);
    }

    fn as_str(&self) -> &str {
        match std::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            // A cut inside a character: keep the valid prefix.
            Err(e) => std::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl std::fmt::Write for DetailBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = DETAIL_MAX - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Parks until the pause is lifted, keeping the load and heartbeat fresh.
fn park(shared: &Shared, publisher: &LoadPublisher, index: u32) {
    shared.parked.fetch_add(1, Ordering::AcqRel);
    while shared.pause.load(Ordering::Acquire) && !shared.stop.load(Ordering::Relaxed) {
        publisher.publish(index, 0, 0, naam_link::now_ns());
        std::thread::sleep(Duration::from_micros(200));
    }
    shared.parked.fetch_sub(1, Ordering::AcqRel);
}

/// The congestion injector: spin (busy, not serving) until `until`, publishing full load.
/// The end is read again on every turn, so a new request (`congest:0`) shortens or cancels it.
fn congest(
    shared: &Shared,
    publisher: &LoadPublisher,
    counters: &WorkerCounters,
    ports: &mut [Port],
    index: u32,
    until: u64,
) {
    let start = naam_link::now_ns();
    let mut last = start;
    let mut until = until;
    loop {
        let now = naam_link::now_ns();
        until = until.min(shared.congest_until_ns.load(Ordering::Relaxed));
        if now >= until
            || shared.stop.load(Ordering::Relaxed)
            || shared.pause.load(Ordering::Relaxed)
        {
            break;
        }
        if now - last >= PUBLISH_NS {
            let depth: u64 = ports.iter_mut().map(|p| p.qp.rx_pending()).sum();
            publisher.publish(index, 1_000_000, depth.min(u32::MAX as u64) as u32, now);
            bump(&counters.publishes, 1);
            last = now;
        }
        std::hint::spin_loop();
    }
    let spent = naam_link::now_ns().saturating_sub(start);
    bump(&counters.busy_ns, spent);
    bump(&counters.congested_ms, spent / 1_000_000);
}

/// Sleeps until a request ring of `ports` rings its doorbell, for at most `max`.
fn wait_doorbells(ports: &mut [Port], fds: &mut PollSet, max: Duration) {
    if let [one] = ports {
        let b = Backoff {
            spins: 0,
            sleep: max,
            ..Backoff::DOORBELLS
        };
        one.qp.wait_recv(&b);
        return;
    }
    let mut armed = 0;
    let mut ready = false;
    for p in ports.iter_mut() {
        armed += 1;
        if !p.qp.arm_rx_doorbell() {
            ready = true;
            break;
        }
    }
    if !ready {
        fds.wait(armed, max);
    }
    for p in ports.iter_mut().take(armed) {
        p.qp.disarm_rx_doorbell();
    }
}
