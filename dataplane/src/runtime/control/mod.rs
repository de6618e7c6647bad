//! The control plane of the dataplane process: the UDP control port (`--control`, default
//! `BASE - 1`) and the load monitor, served by one thread (setup side: it may allocate).
//!
//! - REGISTER: load and verify the object here (`InvalidProgram` with the reason if it fails),
//!   forward the request to the host agent, which picks the id (the first free after the last it gave, from 16 up,
//!   docs/runtime.md) and registers it too; the dataplane adopts that id
//!   (`Registry::register_as`) and answers `REGISTER_REPLY`. Without a host agent:
//!   `HostUnavailable` (both registries must hold the same offloads).
//! - UNREGISTER: forwarded likewise, then removed here; `ACK` or `UnknownOffload`.
//! - LIST: this registry, paged. STATS: worker counters (per worker and totals), steering
//!   counters, per-class placement and leases, the recent policy decisions.
//! - DESCRIBE: forwarded to the host agent, its reply relayed unchanged; while the host agent
//!   does not answer, a bundled application's description is answered from the host agent's
//!   last answer to the same principal (`described`: the NIC serves that application's
//!   messages meanwhile, so new clients must be able to start); except
//!   `congest-nic:<ms>`, the NIC congestion injector (the shift experiment's counterpart of
//!   the host agent's `congest:<ms>`): for `<ms>` milliseconds every worker's core is taken by
//!   other work; a worker then serves one poll per slice (so steering, the eSwitch's job on
//!   real hardware, still moves traffic away) and counts the rest as busy, so the load monitor
//!   sees a saturated NIC. Answered with `congest_ms`, `workers`.
//!
//! Every request must be SEALED with a credential (docs/security.md): the [`Gate`] checks key,
//! MAC and time window and gives the principal; unsealed, forged, expired requests are
//! answered `unauthorized` and counted (`auth.refused.REASON`). A repeated (key, nonce) is a
//! retransmission or a replay: it gets the reply remembered for it, never a second execution.
//! `congest-nic:` is the admin's; the host agent, which holds the tenants, authorizes what is
//! forwarded to it (the sealed datagram goes verbatim); UNREGISTER and REGISTER are also
//! checked here against the offload's tenant.
//!
//! Requests are served per principal in turn, not in the order they arrived ([`Intake`]):
//! one principal's burst delays another's request by at most one of its own.

mod counters;
mod described;
mod host;
mod intake;

pub use counters::watch_host_counters;
use host::READD_EACH_NS;
use intake::Intake;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use naam_core::auth::{wall_clock_ns, Gate, Principal};
use naam_core::elf::load_program;
use naam_core::pool::OffloadSpec;
use naam_core::rate::TokenBucket;
use naam_core::verifier::{verify, VerifierConfig};
use naam_core::vm::{CompiledVm, Engine};
use naam_core::wire::{clip_utf8, congest_ms, fit_page, CONGEST_NIC};
use naam_core::wire::{
    Body, EntryList, ErrorCode, ErrorRepr, FetchReplyRepr, HeaderPacket, KvEntry, KvListRepr,
    ListReplyRepr, Message, OffloadEntry, OffloadIdRepr, OffloadInfo, PageRequestRepr,
    RegisterRepr, WireError, HEADER_LEN, MAGIC,
};

use super::hostctl::HostControl;
use super::monitor::Monitor;
use super::shared::Shared;
use super::stats::WorkerStats;
use super::worker::{UNPROVEN_BURST, UNPROVEN_REPLIES_PER_S};
use crate::steering::SoftSwitch;

/// The first id the host agent gives offloads registered at run time (docs/runtime.md); the
/// bundled offloads have fixed ids below it.
pub const FIRST_DYNAMIC_ID: u32 = 16;

/// Control requests remembered for de-duplication.
const DEDUP: usize = 256;

/// Times one remembered reply is sent again: as many as a client's retransmissions of one
/// request at the library's default (`ClientConfig::max_retries`). Past that, a copy of the
/// sealed request is more likely a capture replayed from its sender's forged address than a
/// retransmission, and each answer would be a page of counters for 100 bytes sent.
const RESENDS: u32 = 5;

/// REGISTERs one principal may have verified and compiled per second, and at once. Each
/// costs this thread milliseconds (the verifier, the JIT), and the thread also runs the
/// monitor, the policy and every other principal's requests: a tenant's flood of them held
/// another's DESCRIBE ~100 ms (probe 11). Past it: `busy` with the wait.
const REGISTERS_PER_S: u64 = 20;

/// A token bucket per principal for [`REGISTERS_PER_S`] (a key file holds few principals).
#[derive(Default)]
struct RegisterBudget {
    buckets: Vec<(Principal, TokenBucket)>,
}

impl RegisterBudget {
    /// Takes one REGISTER for `who` at `now_ns`; `Err(µs)` until one is available.
    fn take(&mut self, who: Principal, now_ns: u64) -> Result<(), u32> {
        let i = match self.buckets.iter().position(|b| b.0 == who) {
            Some(i) => i,
            None => {
                let full = TokenBucket::new(REGISTERS_PER_S, REGISTERS_PER_S, now_ns);
                self.buckets.push((who, full));
                self.buckets.len() - 1
            }
        };
        self.buckets[i]
            .1
            .take(now_ns)
            .map_err(|ns| (ns / 1000).clamp(1, u64::from(u32::MAX)) as u32)
    }
}

/// A reply to a sealed request, kept for its retransmissions.
struct Answered {
    /// (key id, nonce) of the request.
    key: (u32, u64),
    /// The address it came from: only that address gets the reply again (a captured
    /// request replayed from another address would have it sent to someone else).
    by: SocketAddr,
    reply: Vec<u8>,
    /// Times it was sent again, at most [`RESENDS`].
    resent: u32,
}

/// Everything the control port answers from.
pub struct ControlPlane {
    pub shared: Arc<Shared>,
    pub workers: Vec<Arc<WorkerStats>>,
    pub switch: SoftSwitch,
    pub monitor: Monitor,
    pub host: HostControl,
    pub verifier: VerifierConfig,
    pub engine: Engine,
    pub classes: u16,
    gate: Gate,
    /// Replies to sealed requests, for their retransmissions.
    done: VecDeque<Answered>,
    /// (key id, nonce) of requests answered "not executed, retry", and the address each came
    /// from, the only one its retry may come from.
    retry_from: VecDeque<((u32, u64), SocketAddr)>,
    /// Requests that failed inside this process (a bug): answered `Internal`, counted, and the
    /// control thread goes on (it also runs the monitor, the policy and the reconnect).
    failed: u64,
    /// Requests answered, and error replies by code (indexed like `ErrorCode::ALL`): a
    /// REGISTER the verifier rejects counts as `invalid_program`.
    answered: u64,
    errors: [u64; ErrorCode::ALL.len()],
    /// Datagrams left unanswered because they were no request (junk, a reply, a foreign
    /// protocol): an answer would make this port an amplifier, so they are only counted.
    ignored: u64,
    /// Requests the kernel dropped on the control socket (its receive buffer was full).
    pub kernel_drops: u64,
    /// Refusals to senders that proved no key (malformed, unsealed, unknown key, wrong MAC),
    /// at most [`UNPROVEN_REPLIES_PER_S`] a second, as at the workers: each costs the
    /// control thread a send, and a flood of them from two threads left it a quarter of
    /// what it received (the kernel dropped the rest, the operators' requests among them).
    unproven: TokenBucket,
    /// Of those, the ones past that rate: counted (also under `ctl.error.CODE`), not sent.
    unproven_unanswered: u64,
    /// Requests waiting to be served, per principal (`admit`, `serve_next`).
    intake: Intake,
    /// Requests waiting for the re-add of the host agent's offloads to end
    /// ([`ControlPlane::waits_for_readd`]), per principal.
    held: Intake,
    /// Requests answered `busy` as they arrived, their principal having
    /// [`intake::QUEUED_MAX`] waiting (`ctl.queue_full`).
    queue_full: u64,
    /// REGISTERs verified per principal, at most [`REGISTERS_PER_S`].
    registers: RegisterBudget,
    /// Principals of this dataplane's keyring whose key the host agent refused at the last
    /// connection (`--credentials` not the host agent's: their requests are all refused).
    keys_refused_by_host: u64,
    /// The host agent's descriptions of the bundled applications, for when it is unavailable.
    described: described::Described,
    /// The host agent's offloads this dataplane does not run since the last reconciliation
    /// (class past `--classes`, refused by its verifier, or not fetched): LIST shows them,
    /// marked.
    unserved: Vec<OffloadInfo>,
    /// The host agent's offloads this dataplane lacked at the last reconciliation, still
    /// to be added (`readd`): LIST and their FETCH wait until they are
    /// ([`ControlPlane::waits_for_readd`]; their active messages, at the workers, are told
    /// to retry: `Shared::pending`).
    readding: VecDeque<OffloadInfo>,
    /// Times in a row the host agent did not answer a FETCH of the re-add.
    readd_failures: u32,
    /// About how long adding one of them takes here (a moving average), for the wait the
    /// workers tell clients.
    readd_each_ns: u64,
    /// STATS lists being paged through, per principal and client address (one walk each).
    stats_lists: naam_core::counter::Snapshots<(Principal, SocketAddr)>,
    /// How many of them were built (`ctl.stats_lists_built`), kept here because
    /// `stats_lists` is out of `self` while a list is built from the counters.
    stats_lists_built: u64,
    /// Whether the host agent answers now (its heartbeat is fresh): a forwarded request, and
    /// this thread's own at a (re)connection (the listing, fetches, the descriptions), stop
    /// waiting for their reply as soon as it does not. Those own requests waited out the
    /// whole timeout (2 s) when the host agent stalled right then, and the control port
    /// answered nothing meanwhile (a CI run: `naam get` timed out during a stall). Always
    /// true until the runtime sets it.
    pub host_live: Box<dyn Fn() -> bool + Send>,
    /// The host agent's per-offload counters (`offload.ID.host_*`), as last read by
    /// [`watch_host_counters`] on its own thread (a stalled host never blocks this one).
    pub host_counters: Arc<Mutex<Vec<(String, u64)>>>,
}

/// Writes a control reply (an `Internal` error when it cannot be emitted).
fn emit(m: &Message<'_>, out: &mut [u8]) -> usize {
    m.emit_or_internal_error(out)
}

/// An error reply's body, its detail cut to what the wire carries.
fn error_repr(code: ErrorCode, detail: &str) -> ErrorRepr<'_> {
    ErrorRepr::new(code, clip_utf8(detail, naam_core::wire::DETAIL_MAX))
}

fn error<'a>(code: ErrorCode, detail: &'a str) -> Body<'a> {
    Body::Error(error_repr(code, detail))
}

/// Answers a request (id, class) of a sender that proved no key with an error no larger than
/// `req`, what it sent, so a forged source address does not make this port an amplifier:
/// without the detail when that does not fit, not at all (0) when even a bare error does not.
fn refuse((id, class): (u64, u16), e: ErrorRepr<'_>, req: &[u8], out: &mut [u8]) -> usize {
    let e = e.within(req.len());
    let reply = Message::new(id, class, Body::Error(e));
    if reply.buffer_len() > req.len() {
        return 0;
    }
    emit(&reply, out)
}

impl ControlPlane {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Arc<Shared>,
        workers: Vec<Arc<WorkerStats>>,
        switch: SoftSwitch,
        monitor: Monitor,
        host: HostControl,
        verifier: VerifierConfig,
        engine: Engine,
        classes: u16,
        gate: Gate,
    ) -> ControlPlane {
        ControlPlane {
            shared,
            workers,
            switch,
            monitor,
            host,
            verifier,
            engine,
            classes,
            gate,
            done: VecDeque::new(),
            retry_from: VecDeque::new(),
            failed: 0,
            answered: 0,
            errors: [0; ErrorCode::ALL.len()],
            ignored: 0,
            kernel_drops: 0,
            unproven: TokenBucket::new(UNPROVEN_REPLIES_PER_S, UNPROVEN_BURST, 0),
            unproven_unanswered: 0,
            intake: Intake::default(),
            held: Intake::default(),
            queue_full: 0,
            keys_refused_by_host: 0,
            registers: RegisterBudget::default(),
            described: described::Described::default(),
            unserved: Vec::new(),
            readding: VecDeque::new(),
            readd_failures: 0,
            readd_each_ns: READD_EACH_NS,
            stats_lists: Default::default(),
            stats_lists_built: 0,
            host_live: Box::new(|| true),
            host_counters: Arc::default(),
        }
    }

    /// Answers one control datagram from `from` into `out` (at least `MAX_DATAGRAM` bytes);
    /// returns the reply length (0: no reply, the datagram was not a request). Every answer
    /// is counted (`ctl.answered`, `ctl.error.CODE`).
    pub fn handle(&mut self, from: SocketAddr, req: &[u8], out: &mut [u8]) -> usize {
        let n = self.answer(from, req, out);
        self.count_answer(&out[..n]);
        n
    }

    /// Takes a datagram the control socket received from `from` at `now_ns`. A request that
    /// would open (`Gate::peek`: a known key's MAC, in its time window, a nonce not seen) is
    /// queued under its principal: returns 0, [`ControlPlane::serve_next`] answers it later
    /// (a copy of one already waiting is left to that one). The rest is answered now into
    /// `out` (returns the reply's length, 0 for none): what would not open, a repeat (its
    /// remembered reply or the replay refusal), and a request of a principal with
    /// [`intake::QUEUED_MAX`] waiting (`busy`, with the wait).
    pub fn admit(&mut self, from: SocketAddr, req: &[u8], now_ns: u64, out: &mut [u8]) -> usize {
        let msg = match Message::parse(req) {
            Ok(m) if !m.kind().is_reply() => m,
            _ => return self.handle(from, req, out), // malformed, or no request
        };
        // What is not queued is answered from this look (one MAC computed, not two: a flood
        // of forged or replayed datagrams is what the control thread spends most on).
        let peeked = self.gate.peek(&msg, wall_clock_ns());
        let o = match peeked {
            Ok(o) if o.fresh => o,
            other => {
                self.gate.count(&other);
                let n = self.answer_opened(from, req, &msg, other, out);
                self.count_answer(&out[..n]);
                return n;
            }
        };
        let (who, tag) = (o.principal, (o.key_id, o.nonce));
        let inner = Message::parse(o.inner);
        let queue = if inner.is_ok_and(|m| self.waits_for_readd(&m.body)) {
            &mut self.held
        } else {
            &mut self.intake
        };
        let Err(us) = queue.admit(who, tag, from, req, now_ns) else {
            return 0;
        };
        self.queue_full += 1;
        let d = format!(
            "{who} has {} control requests waiting; retry in {us} us",
            intake::QUEUED_MAX
        );
        let mut e = error_repr(ErrorCode::Busy, &d);
        e.retry_after_us = Some(us);
        // No larger than the request: the MAC proves the key, not the source address.
        let n = refuse((msg.request_id, msg.class), e, req, out);
        self.count_answer(&out[..n]);
        n
    }

    /// Serves the next waiting request, principals in turn, into `out` and gives its reply
    /// (empty for none) to `send`; false when none waits. Those held for the end of a re-add
    /// come first once it ended: they waited longest.
    pub fn serve_next(&mut self, out: &mut [u8], send: impl FnOnce(&[u8], SocketAddr)) -> bool {
        let t0 = naam_link::now_ns();
        let released = self.readding.is_empty();
        let (from, req, held) = match released.then(|| self.held.next(t0)).flatten() {
            Some((from, req)) => (from, req, true),
            None => match self.intake.next(t0) {
                Some((from, req)) => (from, req, false),
                None => return false,
            },
        };
        let n = self.handle(from, &req, out);
        send(&out[..n], from);
        let queue = if held {
            &mut self.held
        } else {
            &mut self.intake
        };
        queue.recycle(req);
        queue.served_in(naam_link::now_ns() - t0);
        true
    }

    /// Requests that can be served now (not those held for the end of a re-add).
    pub fn waiting(&self) -> usize {
        let held = if self.readding.is_empty() {
            self.held.waiting()
        } else {
            0
        };
        self.intake.waiting() + held
    }

    /// Whether a request waits for the re-add of the host agent's offloads: a LIST (a list
    /// without them would tell a client they are gone), or the FETCH of one of them. From
    /// the socket it is held, as the control port held every request before the re-add was
    /// done between them, and answered once the re-add ends while its client still waits
    /// (its retransmissions are copies of it); served otherwise, it is answered `busy`.
    fn waits_for_readd(&self, body: &Body<'_>) -> bool {
        match body {
            Body::List(_) => !self.readding.is_empty(),
            Body::Fetch(f) => self.readding.iter().any(|o| o.id == f.id),
            _ => false,
        }
    }

    /// Counts a reply sent (`ctl.answered`, `ctl.error.CODE`); an empty one is no reply.
    fn count_answer(&mut self, reply: &[u8]) {
        if reply.is_empty() {
            return;
        }
        self.answered += 1;
        if let Ok(Body::Error(e)) = Message::parse(reply).map(|m| m.body) {
            self.count_error(e.code);
        }
    }

    /// Counts a refusal with `code` (`ctl.error.CODE`), sent or not.
    fn count_error(&mut self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i] += 1;
        }
    }

    fn answer(&mut self, from: SocketAddr, req: &[u8], out: &mut [u8]) -> usize {
        let msg = match Message::parse(req) {
            Ok(m) => m,
            Err(e) => return self.malformed(req, e, out),
        };
        if msg.kind().is_reply() {
            self.ignored += 1;
            return 0;
        }
        let opened = self.gate.open(&msg, wall_clock_ns());
        self.answer_opened(from, req, &msg, opened, out)
    }

    /// [`ControlPlane::answer`] once the gate has looked at the request.
    fn answer_opened(
        &mut self,
        from: SocketAddr,
        req: &[u8],
        msg: &Message<'_>,
        opened: Result<naam_core::auth::Opened<'_>, naam_core::auth::Refusal>,
        out: &mut [u8],
    ) -> usize {
        let opened = match opened {
            Ok(o) => o,
            Err(r) if r.proves_nothing() && !self.may_answer_unproven(r.code()) => return 0,
            Err(r) => {
                tracing::debug!(%from, reason = r.name(), "control request refused");
                // Even after a valid MAC (a capture replayed to a restarted server) no larger
                // than the request: the details a client reads (sealed before this start)
                // fit in any sealed request, and are only cut for shorter datagrams.
                let e = error_repr(r.code(), r.detail());
                return refuse((msg.request_id, msg.class), e, req, out);
            }
        };
        let key = (opened.key_id, opened.nonce);
        if !opened.fresh {
            let first = self.done.iter_mut().find(|a| a.key == key && a.by == from);
            if let Some(a) = first.filter(|a| a.resent < RESENDS) {
                a.resent += 1;
                out[..a.reply.len()].copy_from_slice(&a.reply);
                return a.reply.len();
            }
            let d = "replayed: this sealed request was received before";
            let e = error_repr(ErrorCode::Unauthorized, d);
            return refuse((msg.request_id, msg.class), e, req, out);
        }
        // A retry of a request answered "not executed, retry" runs from its sender's
        // address only: a capture of it replayed from another would run it there (a full
        // LIST page sent to a forged address for a 100-byte datagram).
        if let Some(i) = self.retry_from.iter().position(|r| r.0 == key) {
            if self.retry_from[i].1 != from {
                self.gate.forget(key.0, key.1);
                let d = "replayed: this sealed request came from another address";
                let e = error_repr(ErrorCode::Unauthorized, d);
                return refuse((msg.request_id, msg.class), e, req, out);
            }
            self.retry_from.remove(i);
        }
        let inner = match opened.request() {
            Ok(m) => m,
            Err(d) => return emit(&msg.reply(error(ErrorCode::BadRequest, &d)), out),
        };
        let who = opened.principal;
        let n = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.dispatch(&inner, who, from, req, out)
        }))
        .unwrap_or_else(|_| {
            self.failed += 1;
            tracing::error!(
                request = msg.request_id,
                "control request failed inside the dataplane"
            );
            let d = "the request failed inside the dataplane (a bug: see its log)";
            emit(&msg.reply(error(ErrorCode::Internal, d)), out)
        });
        // Remember the reply for retransmissions, unless it means "not executed, retry".
        let transient = matches!(
            Message::parse(&out[..n]).map(|m| m.body),
            Ok(Body::Error(e)) if e.code.is_transient()
        );
        if n > 0 && !transient {
            if self.done.len() == DEDUP {
                self.done.pop_front();
            }
            self.done.push_back(Answered {
                key,
                by: from,
                reply: out[..n].to_vec(),
                resent: 0,
            });
        } else if transient {
            // Not executed: the retransmission (same nonce) must run, not be a "replay".
            self.gate.forget(key.0, key.1);
            if self.retry_from.len() == DEDUP {
                self.retry_from.pop_front();
            }
            self.retry_from.push_back((key, from));
        }
        n
    }

    /// Serves an opened request for `who` from `from`; `sealed` is the whole datagram as
    /// received, which requests for the host agent carry verbatim (it checks the seal itself).
    fn dispatch(
        &mut self,
        msg: &Message<'_>,
        who: Principal,
        from: SocketAddr,
        sealed: &[u8],
        out: &mut [u8],
    ) -> usize {
        match msg.body {
            Body::Register(r) if !who.may_act_for(r.tenant) => {
                let d = format!("{who} may not register offloads for tenant {}", r.tenant);
                self.forbidden(msg, &d, out)
            }
            Body::Register(r) => match self.registers.take(who, naam_link::now_ns()) {
                Ok(()) => self.register(msg, &r, sealed, out),
                Err(us) => {
                    let d = format!(
                        "{who}: more than {REGISTERS_PER_S} registrations a second; retry in \
                         {us} us"
                    );
                    let mut e = error_repr(ErrorCode::Busy, &d);
                    e.retry_after_us = Some(us);
                    emit(&msg.reply(Body::Error(e)), out)
                }
            },
            Body::Unregister(u) => match self.shared.registry.get(u.id) {
                Some(o) if !who.may_act_for(o.tenant) => {
                    let d = format!(
                        "{who} may not unregister offload {} of tenant {}",
                        u.id, o.tenant
                    );
                    self.forbidden(msg, &d, out)
                }
                _ => self.unregister(msg, u.id, sealed, out),
            },
            ref b if self.waits_for_readd(b) => self.readding_busy(msg, out),
            Body::List(p) => self.list(msg, p, out),
            Body::Stats(p) => self.stats((who, from), msg, p, out),
            Body::Fetch(f) => match self.shared.registry.get(f.id) {
                None => {
                    let d = format!("no offload with id {}", f.id);
                    emit(&msg.reply(error(ErrorCode::UnknownOffload, &d)), out)
                }
                Some(o) if !who.may_act_for(o.tenant) => {
                    let d = format!(
                        "{who} may not fetch offload {} of tenant {}",
                        f.id, o.tenant
                    );
                    self.forbidden(msg, &d, out)
                }
                Some(o) => {
                    let insns = o.program.insns();
                    let digest = naam_core::wire::program_digest(insns);
                    let piece = FetchReplyRepr::piece(f, insns, digest);
                    emit(&msg.reply(Body::FetchReply(piece)), out)
                }
            },
            Body::Describe(d) if d.app.starts_with(CONGEST_NIC) && !who.is_admin() => {
                self.forbidden(msg, "congest-nic is an admin command", out)
            }
            Body::Describe(d) if d.app.starts_with(CONGEST_NIC) => {
                self.congest_nic(msg, d.app, out)
            }
            Body::Describe(d) => self.describe(msg, d.app, d.start, who, sealed, out),
            _ => emit(
                &msg.reply(error(
                    ErrorCode::Unsupported,
                    "data messages go to the data port",
                )),
                out,
            ),
        }
    }

    /// LIST while the host agent's offloads are being added, and FETCH of one of them: a
    /// list without them would tell a client they are gone (`busy`, with about the time
    /// left).
    fn readding_busy(&self, msg: &Message<'_>, out: &mut [u8]) -> usize {
        let n = self.readding.len();
        let d = format!("adding {n} offloads of the host agent after a (re)connection");
        let mut e = error_repr(ErrorCode::Busy, &d);
        // Each takes a few milliseconds (FETCH, the verifier, the JIT); told at most 1 s.
        e.retry_after_us = Some((n as u32).saturating_mul(2_000).clamp(1_000, 1_000_000));
        emit(&msg.reply(Body::Error(e)), out)
    }

    fn forbidden(&mut self, msg: &Message<'_>, detail: &str, out: &mut [u8]) -> usize {
        self.gate.count_forbidden();
        tracing::warn!(detail, "control request forbidden");
        emit(&msg.reply(error(ErrorCode::Forbidden, detail)), out)
    }

    /// `congest-nic:<ms>`: the workers are congested for `<ms>` ms from now.
    fn congest_nic(&mut self, msg: &Message<'_>, app: &str, out: &mut [u8]) -> usize {
        let ms = match congest_ms(CONGEST_NIC, &app[CONGEST_NIC.len()..]) {
            Ok(ms) => ms,
            Err(d) => return emit(&msg.reply(error(ErrorCode::BadRequest, &d)), out),
        };
        let until = naam_link::now_ns().saturating_add(ms.saturating_mul(1_000_000));
        self.shared
            .nic_congest_until_ns
            .store(until, Ordering::Relaxed);
        tracing::info!(ms, "NIC congestion injected");
        let entries = [
            KvEntry {
                name: "congest_ms",
                value: ms,
            },
            KvEntry {
                name: "workers",
                value: self.workers.len() as u64,
            },
        ];
        emit(
            &msg.reply(Body::DescribeReply(KvListRepr {
                more: false,
                next: 0,
                entries: EntryList::from_slice(&entries),
            })),
            out,
        )
    }

    /// Whether a refusal with `code` to a sender that proved nothing may be sent now; if not
    /// it is counted, as refused and as unanswered.
    fn may_answer_unproven(&mut self, code: ErrorCode) -> bool {
        if self.unproven.take(naam_link::now_ns()).is_ok() {
            return true;
        }
        self.unproven_unanswered += 1;
        self.count_error(code);
        false
    }

    fn malformed(&mut self, req: &[u8], e: WireError, out: &mut [u8]) -> usize {
        if req.len() < HEADER_LEN {
            self.ignored += 1;
            return 0;
        }
        let h = HeaderPacket::new_unchecked(req);
        let is_request = naam_core::wire::Kind::from_u8(h.kind()).is_some_and(|k| !k.is_reply());
        if h.magic() != MAGIC || !is_request {
            self.ignored += 1;
            return 0;
        }
        let code = if matches!(e, WireError::BadVersion { .. }) {
            ErrorCode::BadVersion
        } else {
            ErrorCode::BadRequest
        };
        if !self.may_answer_unproven(code) {
            return 0;
        }
        let detail = e.to_string();
        let n = refuse(
            (h.request_id(), h.class()),
            error_repr(code, &detail),
            req,
            out,
        );
        self.ignored += u64::from(n == 0);
        n
    }

    fn register(
        &mut self,
        msg: &Message<'_>,
        r: &RegisterRepr<'_>,
        raw: &[u8],
        out: &mut [u8],
    ) -> usize {
        if r.class >= self.classes {
            // `naam offload add` without --class, for a tenant that holds no class, picks
            // the first class no other tenant holds: past the last, every class was
            // another's.
            let all_taken =
                (0..self.classes).all(|c| self.shared.registry.class_taken(c, r.tenant).is_some());
            let d = format!(
                "class {} is not below the {} classes this dataplane serves{}",
                r.class,
                self.classes,
                if all_taken {
                    " (and every one of them holds another tenant's offload)"
                } else {
                    ""
                }
            );
            return emit(&msg.reply(error(ErrorCode::BadRequest, &d)), out);
        }
        // Before the costly part (the host agent checks it too).
        if let Some(o) = self.shared.registry.class_taken(r.class, r.tenant) {
            let d = naam_core::pool::class_taken_detail(r.class, &o);
            return emit(&msg.reply(error(ErrorCode::Forbidden, &d)), out);
        }
        // A copy: the object sits at any offset of the datagram, and the ELF parser wants its
        // headers aligned. Loaded and verified exactly as the host agent does.
        let object = r.object.to_vec();
        let prog = load_program(&object, r.section)
            .map_err(|e| e.to_string())
            .and_then(|p| verify(&p, &self.verifier).map_err(|e| e.to_string()));
        let prog = match prog {
            Ok(p) => Arc::new(p),
            Err(d) => return emit(&msg.reply(error(ErrorCode::InvalidProgram, &d)), out),
        };
        if let Err(e) = CompiledVm::new(prog.clone(), self.engine) {
            let d = format!(
                "does not compile for the {} engine: {e}",
                self.engine.name()
            );
            return emit(&msg.reply(error(ErrorCode::InvalidProgram, &d)), out);
        }
        let reply = match self.ask_host(raw) {
            Ok(r) => r.to_vec(),
            Err(e) => {
                let d = crate::runtime::with_sources(&e);
                tracing::warn!(error = d, "register: host agent unreachable");
                return emit(&msg.reply(error(ErrorCode::HostUnavailable, &d)), out);
            }
        };
        let id = match Message::parse(&reply).map(|m| m.body) {
            Ok(Body::RegisterReply(OffloadIdRepr { id })) => id,
            Ok(Body::Error(e)) => return emit(&msg.reply(Body::Error(e)), out),
            _ => {
                return emit(
                    &msg.reply(error(ErrorCode::Internal, "bad reply from the host agent")),
                    out,
                )
            }
        };
        let spec = OffloadSpec {
            name: r.name.to_owned(),
            tenant: r.tenant,
            class: r.class,
            read_only: r.read_only,
        };
        // The host agent is the source of truth: an offload this registry still holds under
        // the id it chose is one the host agent no longer has (it restarted); it goes.
        if let Ok(stale) = self.shared.registry.unregister(id) {
            tracing::warn!(
                id,
                name = stale.name,
                "offload the host agent no longer had replaced"
            );
        }
        let registered = self.shared.registry.register_as(id, spec, prog);
        // After the registry has it, so that a worker finds it in one or the other.
        self.settled(id);
        match registered {
            Ok(o) => {
                tracing::info!(id, name = o.name, class = o.class, "offload registered");
                emit(&msg.reply(Body::RegisterReply(OffloadIdRepr { id })), out)
            }
            Err(e) => {
                let d = format!("host agent chose id {id}: {e}");
                tracing::error!(detail = d, "registries disagree");
                emit(&msg.reply(error(ErrorCode::Internal, &d)), out)
            }
        }
    }

    /// Offload `id` was registered or removed here by a client's request: whatever the last
    /// reconciliation said of it (not served, still to be added, pending at the workers) no
    /// longer holds.
    fn settled(&mut self, id: u32) {
        self.unserved.retain(|o| o.id != id);
        self.readding.retain(|o| o.id != id);
        self.shared.pending.done(id, self.readd_wait_ns());
    }

    /// Forwarded first: the host agent (the source of truth) must agree before the offload
    /// leaves this registry; its refusal is relayed and nothing changes here.
    fn unregister(&mut self, msg: &Message<'_>, id: u32, raw: &[u8], out: &mut [u8]) -> usize {
        let reply = match self.ask_host(raw) {
            Ok(r) => r.to_vec(),
            Err(e) => {
                let d = crate::runtime::with_sources(&e);
                return emit(&msg.reply(error(ErrorCode::HostUnavailable, &d)), out);
            }
        };
        let host_has_it = match Message::parse(&reply).map(|m| m.body) {
            Ok(Body::Ack) => true,
            // The host agent forgot it (a restart): it still leaves this registry.
            Ok(Body::Error(e)) if e.code == ErrorCode::UnknownOffload => false,
            Ok(Body::Error(e)) => return emit(&msg.reply(Body::Error(e)), out),
            _ => {
                let d = "bad reply from the host agent";
                return emit(&msg.reply(error(ErrorCode::Internal, d)), out);
            }
        };
        self.settled(id);
        match self.shared.registry.unregister(id) {
            Ok(o) => {
                tracing::info!(id, name = o.name, "offload unregistered");
                emit(&msg.reply(Body::Ack), out)
            }
            Err(_) if host_has_it => emit(&msg.reply(Body::Ack), out),
            Err(e) => {
                let d = e.to_string();
                emit(&msg.reply(error(ErrorCode::UnknownOffload, &d)), out)
            }
        }
    }

    fn list(&self, msg: &Message<'_>, p: PageRequestRepr, out: &mut [u8]) -> usize {
        let all: Vec<_> = self
            .shared
            .registry
            .list()
            .into_iter()
            .filter(|o| o.id >= p.start)
            .collect();
        let mut entries: Vec<OffloadEntry<'_>> = all.iter().map(|o| o.list_entry()).collect();
        let unserved = self.unserved.iter().filter(|o| o.id >= p.start);
        entries.extend(unserved.map(OffloadInfo::entry));
        entries.sort_by_key(|e| e.id);
        let (n, more) = fit_page(&entries, p.max);
        let next = if more { entries[n].id } else { 0 };
        emit(
            &msg.reply(Body::ListReply(ListReplyRepr {
                more,
                next,
                entries: EntryList::from_slice(&entries[..n]),
            })),
            out,
        )
    }
}

#[cfg(test)]
mod tests;
