//! The control plane of the dataplane process: the UDP control port (`--control`, default
//! `BASE - 1`) and the load monitor, served by one thread (setup side: it may allocate).
//!
//! - REGISTER: load and verify the object here (`InvalidProgram` with the reason if it fails),
//!   forward the request to the host agent, which picks the id (lowest free from 16 up,
//!   docs/runtime.md) and registers it too; the dataplane adopts that id
//!   (`Registry::register_as`) and answers `REGISTER_REPLY`. Without a host agent:
//!   `HostUnavailable` (both registries must hold the same offloads).
//! - UNREGISTER: forwarded likewise, then removed here; `ACK` or `UnknownOffload`.
//! - LIST: this registry, paged. STATS: worker counters (per worker and totals), steering
//!   counters, per-class placement and leases, the recent policy decisions.
//! - DESCRIBE: forwarded to the host agent, its reply relayed unchanged, except
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

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use naam_core::auth::{wall_clock_ns, Gate, Principal};
use naam_core::elf::load_program;
use naam_core::pool::{OffloadId, OffloadSpec};
use naam_core::verifier::{verify, VerifierConfig};
use naam_core::vm::{CompiledVm, Engine};
use naam_core::wire::{clip_utf8, congest_ms, fit_page, CONGEST_NIC};
use naam_core::wire::{
    Body, EntryList, ErrorCode, ErrorRepr, FetchReplyRepr, FetchRepr, HeaderPacket, KvEntry,
    KvListRepr, ListReplyRepr, Message, OffloadEntry, OffloadIdRepr, PageRequestRepr, RegisterRepr,
    WireError, HEADER_LEN, MAGIC, NAME_MAX,
};

use super::hostctl::{HostControl, HostCtlError};
use super::monitor::Monitor;
use super::shared::Shared;
use super::stats::WorkerStats;
use crate::steering::{SoftSwitch, Steering};

/// The first id the host agent gives offloads registered at run time (docs/runtime.md); the
/// bundled offloads have fixed ids below it.
pub const FIRST_DYNAMIC_ID: u32 = 16;

/// Control requests remembered for de-duplication.
const DEDUP: usize = 256;

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
    /// Replies to sealed requests by (key id, nonce), for their retransmissions.
    done: VecDeque<((u32, u64), Vec<u8>)>,
    /// Requests that failed inside this process (a bug): answered `Internal`, counted, and the
    /// control thread goes on (it also runs the monitor, the policy and the reconnect).
    failed: u64,
    /// Requests answered, and error replies by code (indexed like `ErrorCode::ALL`): a
    /// REGISTER the verifier rejects counts as `invalid_program`.
    answered: u64,
    errors: [u64; ErrorCode::ALL.len()],
    /// Requests the kernel dropped on the control socket (its receive buffer was full).
    pub kernel_drops: u64,
    /// The host agent's per-offload counters (`offload.ID.host_*`), as last read by
    /// [`watch_host_counters`] on its own thread (a stalled host never blocks this one).
    pub host_counters: Arc<Mutex<Vec<(String, u64)>>>,
}

/// Reads the host agent's per-offload counters every `every` into `into`, while the host
/// agent is up and not suspect, until the dataplane stops. Runs on a thread of its own with
/// its own connection: a host agent that stalls mid-request blocks only this thread.
pub fn watch_host_counters(
    mut host: HostControl,
    shared: Arc<Shared>,
    into: Arc<Mutex<Vec<(String, u64)>>>,
    every: std::time::Duration,
) {
    let mut last = std::time::Instant::now();
    while !shared.stopping() {
        std::thread::sleep(std::time::Duration::from_millis(20));
        if last.elapsed() < every || !shared.host_up() || shared.host_suspect() {
            continue;
        }
        last = std::time::Instant::now();
        if let Some(v) = host_offload_counters(&mut host) {
            *into.lock().unwrap_or_else(|e| e.into_inner()) = v;
        }
    }
}

/// The host agent's `offload.*` counters (all STATS pages), or `None` if it did not answer.
fn host_offload_counters(host: &mut HostControl) -> Option<Vec<(String, u64)>> {
    let mut v = Vec::new();
    let mut start = 0;
    loop {
        let req = Message::new(0, 0, Body::Stats(PageRequestRepr { start, max: 0 }));
        let mut buf = [0u8; 64];
        let n = req.emit(&mut buf).ok()?;
        // Unsealed: on the host agent's own socket this process speaks as the admin.
        let reply = host.request(&buf[..n]).ok()?;
        let Ok(Body::StatsReply(page)) = Message::parse(reply).map(|m| m.body) else {
            return None;
        };
        v.extend(
            page.entries
                .iter()
                .filter(|e| e.name.starts_with("offload."))
                .map(|e| (e.name.to_owned(), e.value)),
        );
        if !page.more {
            return Some(v);
        }
        start = page.next;
    }
}

/// An offload the host agent lists: its id and description.
struct OffloadSpecAt {
    id: u32,
    spec: OffloadSpec,
}

/// Writes a control reply (an `Internal` error when it cannot be emitted).
fn emit(m: &Message<'_>, out: &mut [u8]) -> usize {
    m.emit_or_internal_error(out)
}

fn error<'a>(code: ErrorCode, detail: &'a str) -> Body<'a> {
    Body::Error(ErrorRepr::new(
        code,
        clip_utf8(detail, naam_core::wire::DETAIL_MAX),
    ))
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
            failed: 0,
            answered: 0,
            errors: [0; ErrorCode::ALL.len()],
            kernel_drops: 0,
            host_counters: Arc::default(),
        }
    }

    /// Answers one control datagram from `from` into `out` (at least `MAX_DATAGRAM` bytes);
    /// returns the reply length (0: no reply, the datagram was not a request). Every answer
    /// is counted (`ctl.answered`, `ctl.error.CODE`).
    pub fn handle(&mut self, from: SocketAddr, req: &[u8], out: &mut [u8]) -> usize {
        let n = self.answer(from, req, out);
        if n > 0 {
            self.answered += 1;
            if let Ok(Body::Error(e)) = Message::parse(&out[..n]).map(|m| m.body) {
                if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == e.code) {
                    self.errors[i] += 1;
                }
            }
        }
        n
    }

    fn answer(&mut self, from: SocketAddr, req: &[u8], out: &mut [u8]) -> usize {
        let msg = match Message::parse(req) {
            Ok(m) => m,
            Err(e) => return self.malformed(req, e, out),
        };
        if msg.kind().is_reply() {
            return 0;
        }
        let opened = match self.gate.open(&msg, wall_clock_ns()) {
            Ok(o) => o,
            Err(r) => {
                tracing::debug!(%from, reason = r.name(), "control request refused");
                return emit(&msg.reply(error(r.code(), r.detail())), out);
            }
        };
        let key = (opened.key_id, opened.nonce);
        if !opened.fresh {
            if let Some((_, reply)) = self.done.iter().find(|(k, _)| *k == key) {
                out[..reply.len()].copy_from_slice(reply);
                return reply.len();
            }
            let d = "replayed: this sealed request was received before";
            return emit(&msg.reply(error(ErrorCode::Unauthorized, d)), out);
        }
        let inner = match opened.request() {
            Ok(m) => m,
            Err(d) => return emit(&msg.reply(error(ErrorCode::BadRequest, &d)), out),
        };
        let who = opened.principal;
        let n = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.dispatch(&inner, who, req, out)
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
            self.done.push_back((key, out[..n].to_vec()));
        } else if transient {
            // Not executed: the retransmission (same nonce) must run, not be a "replay".
            self.gate.forget(key.0, key.1);
        }
        n
    }

    /// Serves an opened request for `who`; `sealed` is the whole datagram as received, which
    /// requests for the host agent carry verbatim (it checks the seal itself).
    fn dispatch(
        &mut self,
        msg: &Message<'_>,
        who: Principal,
        sealed: &[u8],
        out: &mut [u8],
    ) -> usize {
        match msg.body {
            Body::Register(r) if !who.may_act_for(r.tenant) => {
                let d = format!("{who} may not register offloads for tenant {}", r.tenant);
                self.forbidden(msg, &d, out)
            }
            Body::Register(r) => self.register(msg, &r, sealed, out),
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
            Body::List(p) => self.list(msg, p, out),
            Body::Stats(p) => self.stats(msg, p, out),
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
            Body::Describe(_) => self.forward_verbatim(msg, sealed, out),
            _ => emit(
                &msg.reply(error(
                    ErrorCode::Unsupported,
                    "data messages go to the data port",
                )),
                out,
            ),
        }
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

    fn malformed(&self, req: &[u8], e: WireError, out: &mut [u8]) -> usize {
        if req.len() < HEADER_LEN {
            return 0;
        }
        let h = HeaderPacket::new_unchecked(req);
        let is_request = naam_core::wire::Kind::from_u8(h.kind()).is_some_and(|k| !k.is_reply());
        if h.magic() != MAGIC || !is_request {
            return 0;
        }
        let code = if matches!(e, WireError::BadVersion { .. }) {
            ErrorCode::BadVersion
        } else {
            ErrorCode::BadRequest
        };
        let detail = e.to_string();
        emit(
            &Message::new(h.request_id(), h.class(), error(code, &detail)),
            out,
        )
    }

    fn register(
        &mut self,
        msg: &Message<'_>,
        r: &RegisterRepr<'_>,
        raw: &[u8],
        out: &mut [u8],
    ) -> usize {
        if r.class >= self.classes {
            let d = format!(
                "class {} is not below the {} classes",
                r.class, self.classes
            );
            return emit(&msg.reply(error(ErrorCode::BadRequest, &d)), out);
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
                tracing::warn!(error = %e, "register: host agent unreachable");
                let d = e.to_string();
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
        match self.shared.registry.register_as(id, spec, prog) {
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

    /// Forwarded first: the host agent (the source of truth) must agree before the offload
    /// leaves this registry; its refusal is relayed and nothing changes here.
    fn unregister(&mut self, msg: &Message<'_>, id: u32, raw: &[u8], out: &mut [u8]) -> usize {
        let reply = match self.ask_host(raw) {
            Ok(r) => r.to_vec(),
            Err(e) => {
                let d = e.to_string();
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
        let entries: Vec<OffloadEntry<'_>> = all
            .iter()
            .map(|o| OffloadEntry {
                id: o.id,
                name: clip_utf8(&o.name, NAME_MAX),
                tenant: o.tenant,
                class: o.class,
                read_only: o.read_only,
                insn_count: o.program.insn_count() as u32,
                worst_case: o.program.worst_case_insns() as u32,
            })
            .collect();
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

    /// Every counter STATS reports, in a stable order.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut v = Vec::new();
        let m = &self.monitor;
        v.push(("dp.workers".into(), self.workers.len() as u64));
        v.push(("dp.host_up".into(), self.shared.host_up() as u64));
        v.push(("dp.host_suspect".into(), self.shared.host_suspect() as u64));
        v.push(("dp.control_failed".into(), self.failed));
        v.push(("ctl.answered".into(), self.answered));
        v.push(("ctl.kernel_drops".into(), self.kernel_drops));
        for (c, n) in ErrorCode::ALL.iter().zip(self.errors) {
            if n > 0 {
                v.push((format!("ctl.error.{}", c.name()), n));
            }
        }
        v.extend(self.gate.counters());
        v.push((
            "dp.link_generation".into(),
            self.shared.link_generation.load(Ordering::Relaxed),
        ));
        v.push(("dp.nic_busy_ppm".into(), (m.last_nic_busy * 1e6) as u64));
        v.push(("dp.nic_queue".into(), m.last_nic_queue as u64));
        v.push(("dp.host_busy_ppm".into(), (m.last_host.busy * 1e6) as u64));
        v.push(("dp.host_queue".into(), m.last_host.queue as u64));
        let left = self
            .shared
            .nic_congest_until_ns
            .load(Ordering::Relaxed)
            .saturating_sub(naam_link::now_ns());
        v.push(("dp.nic_congest_left_ms".into(), left / 1_000_000));
        let mut totals: Vec<(String, u64)> = Vec::new();
        for (i, w) in self.workers.iter().enumerate() {
            for (name, value) in w.counters() {
                match totals.iter_mut().find(|(n, _)| *n == name) {
                    Some(t) => t.1 += value,
                    None => totals.push((name.clone(), value)),
                }
                v.push((format!("w{i}.{name}"), value));
            }
        }
        v.extend(totals.into_iter().map(|(n, x)| (format!("total.{n}"), x)));
        v.extend(self.offload_counters());
        v.extend(
            self.host_counters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        let table = self.switch.table();
        v.push(("steer.misses".into(), table.misses()));
        let now = naam_link::now_ns();
        let classes_in_use: Vec<u16> = {
            let mut c: Vec<u16> = self
                .shared
                .registry
                .list()
                .iter()
                .map(|o| o.class)
                .collect();
            c.sort_unstable();
            c.dedup();
            c
        };
        for c in 0..self.classes {
            let placed = m.placement(c);
            if !classes_in_use.contains(&c) && placed == m.home() {
                continue;
            }
            v.push((format!("class.{c}.placement"), placed as u64));
            if let Some(ms) = self.shared.hints.lease_ms(c, now) {
                v.push((format!("class.{c}.lease_ms"), ms as u64));
            }
        }
        for (i, rule) in (0..self.classes).filter_map(|c| {
            let id = m.rule(c)?;
            self.switch.counters(id).map(|r| (c, r))
        }) {
            if rule.packets > 0 {
                v.push((format!("steer.class.{i}.packets"), rule.packets));
            }
        }
        for (k, d) in m.recent().enumerate() {
            let name = format!(
                "decision.{k}.c{}.{}-{}.{:?}",
                d.class,
                d.from.name(),
                d.to.name(),
                d.reason
            );
            v.push((clip_utf8(&name, NAME_MAX).to_owned(), d.at));
        }
        v
    }

    /// The Prometheus text of [`ControlPlane::counters`] and the offloads registered.
    pub fn metrics_text(&self) -> String {
        naam_metrics::render("naam_dp", &self.counters(), &self.shared.registry.list())
    }

    /// Per offload, summed over the NIC workers: `offload.ID.nic_runs`, `nic_steps`,
    /// `nic_errors`, `nic_run_ns` (the last stays 0 unless run time is measured).
    fn offload_counters(&self) -> Vec<(String, u64)> {
        let mut sums: std::collections::BTreeMap<OffloadId, [u64; 4]> = Default::default();
        for w in &self.workers {
            for (id, c) in w.offload_runs() {
                let s = sums.entry(id).or_default();
                for (a, b) in s.iter_mut().zip(c) {
                    *a += b;
                }
            }
        }
        let mut v = Vec::new();
        for (id, c) in sums {
            for (name, x) in ["nic_runs", "nic_steps", "nic_errors", "nic_run_ns"]
                .iter()
                .zip(c)
            {
                v.push((format!("offload.{id}.{name}"), x));
            }
        }
        v
    }

    fn stats(&self, msg: &Message<'_>, p: PageRequestRepr, out: &mut [u8]) -> usize {
        let all = self.counters();
        let entries: Vec<KvEntry<'_>> = all
            .iter()
            .skip(p.start as usize)
            .map(|(n, v)| KvEntry {
                name: clip_utf8(n, NAME_MAX),
                value: *v,
            })
            .collect();
        let (n, more) = fit_page(&entries, p.max);
        emit(
            &msg.reply(Body::StatsReply(KvListRepr {
                more,
                next: if more { p.start + n as u32 } else { 0 },
                entries: EntryList::from_slice(&entries[..n]),
            })),
            out,
        )
    }

    /// After a (re)connection to the host agent, makes the registries agree; the host agent
    /// is the source of truth. Removes the run-time offloads (ids from `FIRST_DYNAMIC_ID`)
    /// the host agent does not hold under the same id and name (a restarted one without
    /// `--persist` or `--snapshot` forgot them), and adds those it holds and this dataplane
    /// lacks (a restarted dataplane, or a host agent that restored its offloads), fetching
    /// their verified instructions (FETCH) and verifying them here. Returns (removed,
    /// added); `None` when the host agent did not answer.
    pub fn reconcile_with_host(&mut self) -> Option<(usize, usize)> {
        let mut host: Vec<OffloadSpecAt> = Vec::new();
        let mut start = 0;
        loop {
            let req = Message::new(0, 0, Body::List(PageRequestRepr { start, max: 0 }));
            let mut buf = [0u8; 64];
            let n = req.emit(&mut buf).ok()?;
            // Unsealed: on the host agent's own socket this process speaks as the admin.
            let reply = self.host.request(&buf[..n]).ok()?;
            let Ok(Body::ListReply(page)) = Message::parse(reply).map(|m| m.body) else {
                return None;
            };
            host.extend(page.entries.iter().map(|e| OffloadSpecAt {
                id: e.id,
                spec: OffloadSpec {
                    name: e.name.to_owned(),
                    tenant: e.tenant,
                    class: e.class,
                    read_only: e.read_only,
                },
            }));
            if !page.more {
                break;
            }
            start = page.next;
        }
        let mut removed = 0;
        for o in self.shared.registry.list() {
            let known = host.iter().any(|h| h.id == o.id && h.spec.name == o.name);
            if o.id >= FIRST_DYNAMIC_ID && !known && self.shared.registry.unregister(o.id).is_ok() {
                tracing::warn!(
                    id = o.id,
                    name = o.name,
                    "offload the host agent does not hold removed"
                );
                removed += 1;
            }
        }
        let mut added = 0;
        for h in host {
            if h.id < FIRST_DYNAMIC_ID || self.shared.registry.get(h.id).is_some() {
                continue;
            }
            match self.fetch_from_host(h.id) {
                Ok(insns) => {
                    let prog = naam_core::elf::Program::from_insns(h.spec.name.clone(), insns);
                    let verified = verify(&prog, &self.verifier).map_err(|e| e.to_string());
                    let registered = verified.and_then(|v| {
                        self.shared
                            .registry
                            .register_as(h.id, h.spec.clone(), Arc::new(v))
                            .map_err(|e| e.to_string())
                    });
                    match registered {
                        Ok(_) => {
                            tracing::info!(
                                id = h.id,
                                name = h.spec.name,
                                "offload of the host agent added"
                            );
                            added += 1;
                        }
                        Err(e) => {
                            tracing::error!(id = h.id, name = h.spec.name, error = %e, "the host agent's offload refused here")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(id = h.id, error = %e, "could not fetch the host agent's offload")
                }
            }
        }
        Some((removed, added))
    }

    /// Offload `id`'s verified instructions from the host agent (all FETCH pieces, the digest
    /// checked).
    fn fetch_from_host(&mut self, id: u32) -> Result<Vec<u8>, String> {
        let mut insns = Vec::new();
        loop {
            let start = insns.len() as u32;
            let req = Message::new(0, 0, Body::Fetch(FetchRepr { id, start }));
            let mut buf = [0u8; 64];
            let n = req.emit(&mut buf).map_err(|e| e.to_string())?;
            let reply = self.host.request(&buf[..n]).map_err(|e| e.to_string())?;
            let piece = match Message::parse(reply).map(|m| m.body) {
                Ok(Body::FetchReply(p)) if p.start == start => p,
                Ok(Body::Error(e)) => return Err(format!("{}: {}", e.code.name(), e.detail)),
                _ => return Err("unexpected reply to FETCH".into()),
            };
            insns.extend_from_slice(piece.bytes);
            if insns.len() >= piece.total as usize || piece.bytes.is_empty() {
                if naam_core::wire::program_digest(&insns) != piece.digest {
                    return Err("the program changed while it was fetched".into());
                }
                return Ok(insns);
            }
        }
    }

    /// Forwards one request to the host agent's control socket, unless the host agent is
    /// suspect: then the request is refused at once rather than blocking this thread (which
    /// also runs the monitor, the policy and the reconnect) for the socket's timeout.
    fn ask_host(&mut self, raw: &[u8]) -> Result<&[u8], HostCtlError> {
        if self.shared.host_suspect() {
            return Err(HostCtlError::Unresponsive);
        }
        self.host.request(raw)
    }

    fn forward_verbatim(&mut self, msg: &Message<'_>, raw: &[u8], out: &mut [u8]) -> usize {
        match self.ask_host(raw) {
            Ok(r) if r.len() <= out.len() => {
                out[..r.len()].copy_from_slice(r);
                r.len()
            }
            Ok(_) => emit(
                &msg.reply(error(ErrorCode::Internal, "host reply too large")),
                out,
            ),
            Err(e) => {
                let d = e.to_string();
                emit(&msg.reply(error(ErrorCode::HostUnavailable, &d)), out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::monitor::MonitorConfig;
    use crate::steering::Target;
    use naam_core::auth::{Credential, Keyring};
    use naam_core::pool::Registry;
    use naam_core::wire::DescribeRepr;

    fn admin() -> Credential {
        Credential::new(0, Principal::Admin, [7; 32])
    }

    fn tenant() -> Credential {
        Credential::new(1, Principal::Tenant(1), [9; 32])
    }

    fn plane() -> ControlPlane {
        let mut switch = SoftSwitch::new(7000, 8, 1, Target::NicQueue(0));
        let shared = Shared::new(
            Registry::new(),
            switch.table(),
            8,
            naam_core::auth::Capabilities::default(),
        );
        let monitor = Monitor::new(MonitorConfig::default(), 7000, 8, &mut switch).unwrap();
        let workers = vec![Arc::new(WorkerStats::new(8)), Arc::new(WorkerStats::new(8))];
        let host = HostControl::new(
            std::path::Path::new("/nonexistent/naam/control.sock"),
            std::time::Duration::from_millis(10),
        );
        ControlPlane::new(
            shared,
            workers,
            switch,
            monitor,
            host,
            VerifierConfig::default(),
            Engine::Interpreter,
            8,
            Gate::new(Keyring::new(vec![admin(), tenant()]).unwrap(), 64),
        )
    }

    fn describe_as(p: &mut ControlPlane, key: Option<&Credential>, app: &str) -> Vec<u8> {
        let mut req = vec![0u8; 256];
        let n = Message::new(7, 0, Body::Describe(DescribeRepr { app, start: 0 }))
            .emit(&mut req)
            .unwrap();
        req.truncate(n);
        if let Some(k) = key {
            req = k.seal(wall_clock_ns(), &req).unwrap();
        }
        send(p, &req)
    }

    fn send(p: &mut ControlPlane, req: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; naam_core::wire::MAX_DATAGRAM];
        let from: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let len = p.handle(from, req, &mut out);
        out.truncate(len);
        out
    }

    fn describe(p: &mut ControlPlane, app: &str) -> Vec<u8> {
        describe_as(p, Some(&admin()), app)
    }

    fn error_code(reply: &[u8]) -> Option<ErrorCode> {
        match Message::parse(reply).unwrap().body {
            Body::Error(e) => Some(e.code),
            _ => None,
        }
    }

    #[test]
    fn unsealed_forged_and_non_admin_requests_are_refused_and_counted() {
        let mut p = plane();
        let r = describe_as(&mut p, None, "congest-nic:1000");
        assert_eq!(error_code(&r), Some(ErrorCode::Unauthorized));
        let forged = Credential::new(0, Principal::Admin, [1; 32]);
        let r = describe_as(&mut p, Some(&forged), "congest-nic:1000");
        assert_eq!(error_code(&r), Some(ErrorCode::Unauthorized));
        let r = describe_as(&mut p, Some(&tenant()), "congest-nic:1000");
        assert_eq!(error_code(&r), Some(ErrorCode::Forbidden));
        assert!(
            !p.shared.nic_congested(naam_link::now_ns()),
            "nothing injected"
        );
        let c: std::collections::HashMap<_, _> = p.counters().into_iter().collect();
        assert_eq!(c["auth.refused.unsealed"], 1);
        assert_eq!(c["auth.refused.bad_mac"], 1);
        assert_eq!(c["auth.forbidden"], 1);
        assert_eq!(c["ctl.error.unauthorized"], 2);
        assert_eq!(c["ctl.error.forbidden"], 1);
        assert_eq!(c["ctl.answered"], 3);
        // The admin may, and the tenant may read counters.
        assert_eq!(error_code(&describe(&mut p, "congest-nic:0")), None);
    }

    #[test]
    fn a_retransmission_after_a_transient_refusal_runs_again() {
        // The host agent is unreachable: `host_unavailable`, "not executed". The client's
        // retransmission carries the same nonce and must be tried again, not called a replay.
        let mut p = plane();
        let mut req = vec![0u8; 256];
        let n = Message::new(
            11,
            0,
            Body::Describe(DescribeRepr {
                app: "mica",
                start: 0,
            }),
        )
        .emit(&mut req)
        .unwrap();
        let sealed = admin().seal(wall_clock_ns(), &req[..n]).unwrap();
        for _ in 0..3 {
            let r = send(&mut p, &sealed);
            assert_eq!(error_code(&r), Some(ErrorCode::HostUnavailable));
        }
    }

    #[test]
    fn a_repeated_sealed_request_gets_its_first_reply_and_runs_once() {
        let mut p = plane();
        let mut req = vec![0u8; 256];
        let n = Message::new(
            9,
            0,
            Body::Describe(DescribeRepr {
                app: "congest-nic:50",
                start: 0,
            }),
        )
        .emit(&mut req)
        .unwrap();
        let sealed = admin().seal(wall_clock_ns(), &req[..n]).unwrap();
        let first = send(&mut p, &sealed);
        assert_eq!(error_code(&first), None);
        describe(&mut p, "congest-nic:0");
        assert!(!p.shared.nic_congested(naam_link::now_ns()));
        // The replay (or a retransmission) is answered from the cache and injects nothing.
        assert_eq!(send(&mut p, &sealed), first);
        assert!(
            !p.shared.nic_congested(naam_link::now_ns()),
            "not run again"
        );
    }

    #[test]
    fn congest_nic_holds_the_workers_for_the_given_time() {
        let mut p = plane();
        let before = naam_link::now_ns();
        assert!(!p.shared.nic_congested(before));
        let reply = describe(&mut p, "congest-nic:40");
        let m = Message::parse(&reply).unwrap();
        assert_eq!(m.request_id, 7);
        let Body::DescribeReply(kv) = m.body else {
            panic!("expected a describe reply, got {:?}", m.body);
        };
        let kv: Vec<(String, u64)> = kv
            .entries
            .iter()
            .map(|e| (e.name.to_owned(), e.value))
            .collect();
        assert_eq!(
            kv,
            vec![("congest_ms".to_owned(), 40), ("workers".to_owned(), 2)]
        );
        let after = naam_link::now_ns();
        let until = p.shared.nic_congest_until_ns.load(Ordering::Relaxed);
        assert!(until >= before + 40_000_000 && until <= after + 40_000_000);
        assert!(p.shared.nic_congested(after));
        assert!(!p.shared.nic_congested(until));
        let left = p
            .counters()
            .into_iter()
            .find(|(n, _)| n == "dp.nic_congest_left_ms")
            .map(|(_, v)| v);
        assert!(left.is_some_and(|ms| ms <= 40), "{left:?}");
        // Zero ends it at once.
        describe(&mut p, "congest-nic:0");
        assert!(!p.shared.nic_congested(naam_link::now_ns()));
    }

    #[test]
    fn congest_nic_without_a_number_is_a_bad_request_and_other_describes_are_forwarded() {
        let mut p = plane();
        for app in [
            "congest-nic:soon",
            "congest-nic:18446744073709551615",
            "congest-nic:60001",
        ] {
            let m = describe(&mut p, app);
            match Message::parse(&m).unwrap().body {
                Body::Error(e) => assert_eq!(e.code, ErrorCode::BadRequest, "{app}"),
                other => panic!("{app}: expected bad_request, got {other:?}"),
            }
            assert!(!p.shared.nic_congested(naam_link::now_ns()), "{app}");
        }
        // Anything else goes to the host agent, which is not there.
        let m = describe(&mut p, "mica");
        match Message::parse(&m).unwrap().body {
            Body::Error(e) => assert_eq!(e.code, ErrorCode::HostUnavailable),
            other => panic!("expected host_unavailable, got {other:?}"),
        }
    }
}
