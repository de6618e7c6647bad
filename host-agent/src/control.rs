//! The control socket (`control.sock`, Unix `SOCK_SEQPACKET`): the datagrams of
//! docs/protocol.md, one request per datagram, answered in kind (docs/runtime.md).
//!
//! - `REGISTER`: load, verify, test-compile; the host agent picks the id (the first free one
//!   after the last it gave, from 16 up; docs/runtime.md) and answers `REGISTER_REPLY`; the dataplane adopts that id
//!   (`Registry::register_as`).
//! - `UNREGISTER` → `ACK` or `unknown_offload`; `bad_request` for a bundled offload (ids
//!   below 16), which its application's commands call by id; `LIST`, `STATS` → pages.
//! - `DESCRIBE(app)`: `mica`, `btree`, `record` (application parameters, region keys
//!   included), `host` (workers, queue pairs, dataplane generation, data origin), and three
//!   commands: `congest:<ms>` (the congestion injector), `snapshot` (write the snapshot now),
//!   `shutdown` (answer, then stop). Each is answered by a `DESCRIBE_REPLY` page.
//!
//! [`ControlClient`] is the other end, for tools, tests and the dataplane.

use crate::apps::BUNDLED_TENANT;
use crate::seqpacket::{poll_readable, SeqConn, SeqListener};
use crate::stats::bump;
use crate::{AgentError, HostAgent, LogEvery};
use naam_core::auth::Principal;
use naam_core::wire::{clip_utf8, congest_ms, CONGEST_HOST};
use naam_core::wire::{
    Body, DescribeRepr, ErrorCode, ErrorRepr, KvEntry, KvListRepr, ListReplyRepr, Message,
    OffloadEntry, OffloadIdRepr, OffloadInfo, PageRequestRepr, RegisterRepr, MAX_DATAGRAM,
};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What the control loop does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Shutdown,
}

/// Describe names of the commands (docs/runtime.md).
pub const SNAPSHOT: &str = "snapshot";
pub const SHUTDOWN: &str = "shutdown";
pub const HOST: &str = "host";

/// Connections the control socket keeps open: the dataplane holds one, each tool one while
/// it runs. Past this, the one idle the longest is closed for the new one (a dataplane whose
/// connection was closed makes a new one for its next request).
pub const MAX_CONNS: usize = 64;
/// How long the socket stops accepting after an accept failed (out of descriptors): the
/// connection stays in the backlog, so polling the socket again at once would spin (probe 22:
/// 100 % of a core and 400 MB of log a minute).
const ACCEPT_PAUSE: Duration = Duration::from_millis(20);
/// At most one log line per this about failed accepts (the rest are counted).
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The listening control socket and its connections.
pub struct ControlServer {
    listener: SeqListener,
    /// Open connections, each with when it last sent a request.
    conns: Vec<(SeqConn, Instant)>,
    buf: Vec<u8>,
    out: Vec<u8>,
    ready: Vec<usize>,
    /// Until when the listener is left out of the poll (after a failed accept).
    accept_paused: Option<Instant>,
    accept_errors: LogEvery,
}

impl ControlServer {
    pub fn bind(path: &Path) -> Result<ControlServer, AgentError> {
        let listener = SeqListener::bind(path).map_err(|source| AgentError::Io {
            what: format!("bind control socket {}", path.display()),
            source,
        })?;
        tracing::info!(path = %path.display(), "control socket listening");
        Ok(ControlServer {
            listener,
            conns: Vec::new(),
            buf: vec![0u8; MAX_DATAGRAM + 1],
            out: vec![0u8; MAX_DATAGRAM],
            ready: Vec::new(),
            accept_paused: None,
            accept_errors: LogEvery::new(ACCEPT_LOG_EVERY),
        })
    }

    /// Takes the connections waiting in the backlog (see [`MAX_CONNS`], [`ACCEPT_PAUSE`]).
    fn accept(&mut self, agent: &HostAgent) {
        let counters = &agent.shared.stats.control;
        loop {
            match self.listener.accept() {
                Ok(Some(c)) => {
                    if self.conns.len() >= MAX_CONNS {
                        let idlest = (0..self.conns.len()).min_by_key(|&i| self.conns[i].1);
                        if let Some(i) = idlest {
                            self.conns.swap_remove(i);
                            bump(&counters.connections_closed_idle, 1);
                        }
                    }
                    self.conns.push((c, Instant::now()));
                }
                Ok(None) => break,
                Err(e) => {
                    bump(&counters.accept_errors, 1);
                    let now = Instant::now();
                    self.accept_paused = Some(now + ACCEPT_PAUSE);
                    if self.accept_errors.due(now) {
                        tracing::warn!(
                            error = %e,
                            open = self.conns.len(),
                            "control socket cannot accept a connection (accepting again in 20 ms; \
                             failures counted in control.accept_errors, logged once per 10 s)"
                        );
                    }
                    break;
                }
            }
        }
    }
}

/// Waits up to `timeout` for control traffic and serves what arrived.
pub(crate) fn serve_once(agent: &mut HostAgent, timeout: Duration) -> Result<Action, AgentError> {
    let Some(mut server) = agent.control.take() else {
        return Ok(Action::Continue);
    };
    let r = serve_with(agent, &mut server, timeout);
    agent.control = Some(server);
    r
}

fn serve_with(
    agent: &mut HostAgent,
    s: &mut ControlServer,
    timeout: Duration,
) -> Result<Action, AgentError> {
    let mut ready = std::mem::take(&mut s.ready);
    let listening = s.accept_paused.is_none_or(|t| Instant::now() >= t);
    if listening {
        s.accept_paused = None;
    }
    {
        // The listener is entry 0; the connections follow it.
        let mut fds = vec![s.listener.as_fd()];
        fds.extend(s.conns.iter().map(|c| c.0.as_fd()));
        let fds = if listening { &fds[..] } else { &fds[1..] };
        poll_readable(fds, timeout, &mut ready).map_err(|source| AgentError::Io {
            what: "poll control socket".into(),
            source,
        })?;
        if !listening {
            ready.iter_mut().for_each(|i| *i += 1);
        }
    }
    let mut action = Action::Continue;
    let mut closed = Vec::new();
    let accepting = ready.first() == Some(&0);
    for &i in &ready {
        if i == 0 {
            continue;
        }
        let (conn, active) = &mut s.conns[i - 1];
        match conn.recv(&mut s.buf) {
            Ok(Some(n)) => {
                *active = Instant::now();
                bump(&agent.shared.stats.control.requests, 1);
                let (len, a) = handle(agent, &s.buf[..n], &mut s.out);
                if let Err(e) = conn.send(&s.out[..len]) {
                    // Its buffer is full of replies it did not read (or it is gone): close it,
                    // once, rather than log a line for each further request.
                    bump(&agent.shared.stats.control.replies_unsent, 1);
                    tracing::warn!(error = %e, "control reply not sent; connection closed");
                    closed.push(i - 1);
                }
                if a == Action::Shutdown {
                    action = Action::Shutdown;
                }
            }
            Ok(None) => closed.push(i - 1),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::warn!(error = %e, "control receive");
                closed.push(i - 1);
            }
        }
    }
    for i in closed.into_iter().rev() {
        s.conns.swap_remove(i);
    }
    // After the requests: accepting may close an idle connection, which moves the others.
    if accepting {
        s.accept(agent);
    }
    s.ready = ready;
    Ok(action)
}

/// The code of a refusal because a file could not be written: `no_space` when its filesystem
/// is full (the operator's to fix, not a bug of the server: `internal` says that), else
/// `internal`.
pub(crate) fn storage_code(e: &(dyn std::error::Error + 'static)) -> ErrorCode {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) {
                return ErrorCode::NoSpace;
            }
        }
        cause = c.source();
    }
    ErrorCode::Internal
}

/// Answers one control datagram into `out`; returns the reply length.
pub(crate) fn handle(agent: &HostAgent, req: &[u8], out: &mut [u8]) -> (usize, Action) {
    let msg = match Message::parse(req) {
        Ok(m) => m,
        Err(e) => {
            let code = match e {
                naam_core::wire::WireError::BadVersion { .. } => ErrorCode::BadVersion,
                _ => ErrorCode::BadRequest,
            };
            let (id, class) = header_echo(req);
            let text = e.to_string();
            let m = Message::new(id, class, error_body(code, &text));
            return (emit(&m, out), Action::Continue);
        }
    };
    // Unsealed requests come from this machine through a socket only this user can open
    // (mode 0600): they are the admin's. Sealed ones (forwarded by the dataplane) speak for
    // their key's principal.
    let (msg, principal) = match msg.body {
        Body::Sealed(_) => match agent.open_sealed(&msg) {
            Ok(opened) => opened,
            Err((code, detail)) => {
                return (
                    emit(&msg.reply(error_body(code, &detail)), out),
                    Action::Continue,
                )
            }
        },
        _ => (msg, Principal::Admin),
    };
    if let Err(detail) = authorize(agent, principal, &msg.body) {
        tracing::warn!(%principal, kind = ?msg.kind(), detail, "control request forbidden");
        agent
            .gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .count_forbidden();
        return (
            emit(&msg.reply(error_body(ErrorCode::Forbidden, &detail)), out),
            Action::Continue,
        );
    }
    let mut action = Action::Continue;
    // Replies borrow from these.
    let kv_owned: Vec<(String, u64)>;
    let stats: std::sync::Arc<naam_core::counter::Named>;
    let kv: Vec<KvEntry<'_>>;
    let names: Vec<(
        naam_core::pool::OffloadId,
        std::sync::Arc<naam_core::pool::Offload>,
    )>;
    let list: Vec<OffloadEntry<'_>>;
    let fetched: Option<std::sync::Arc<naam_core::pool::Offload>>;
    let detail: String;
    let body = match msg.body {
        Body::Register(r) => match register(agent, &r) {
            Ok(id) => match agent.save_offloads(None) {
                Ok(()) => Body::RegisterReply(OffloadIdRepr { id }),
                Err((code, e)) => {
                    let _ = agent.registry.unregister(id);
                    agent.shared.stats.remove_offload(id);
                    detail = format!("not registered: it could not be kept for restarts ({e})");
                    error_body(code, &detail)
                }
            },
            Err(e) => {
                detail = e.detail;
                error_body(e.code, &detail)
            }
        },
        Body::Unregister(r) if r.id < crate::apps::offload::FIRST_DYNAMIC => {
            detail = if agent.registry.get(r.id).is_some() {
                format!(
                    "offload {} is bundled with its application, whose commands call it by this \
                     id: it cannot be removed",
                    r.id
                )
            } else {
                format!(
                    "no offload {} (ids below {} are the bundled applications')",
                    r.id,
                    crate::apps::offload::FIRST_DYNAMIC
                )
            };
            error_body(ErrorCode::BadRequest, &detail)
        }
        Body::Unregister(r) => {
            // Saved without it first: if that fails, it stays registered and kept.
            let saved = match agent.registry.get(r.id) {
                Some(_) => agent.save_offloads(Some(r.id)),
                None => Ok(()),
            };
            match saved.map(|()| agent.registry.unregister(r.id)) {
                Ok(Ok(o)) => {
                    agent.shared.stats.remove_offload(r.id);
                    tracing::info!(id = r.id, name = o.name, "offload unregistered");
                    Body::Ack
                }
                Ok(Err(e)) => {
                    detail = e.to_string();
                    error_body(ErrorCode::UnknownOffload, &detail)
                }
                Err((code, e)) => {
                    detail = format!(
                        "offload {} not removed: the offloads kept for restarts could not be \
                         rewritten ({e})",
                        r.id
                    );
                    error_body(code, &detail)
                }
            }
        }
        Body::Fetch(f) => {
            fetched = agent.registry.get(f.id);
            match &fetched {
                Some(o) => {
                    let insns = o.program.insns();
                    let digest = naam_core::wire::program_digest(insns);
                    Body::FetchReply(naam_core::wire::FetchReplyRepr::piece(f, insns, digest))
                }
                None => {
                    detail = format!("no offload with id {}", f.id);
                    error_body(ErrorCode::UnknownOffload, &detail)
                }
            }
        }
        Body::List(p) => {
            names = agent
                .registry
                .list()
                .into_iter()
                .filter(|o| o.id >= p.start)
                .map(|o| (o.id, o))
                .collect();
            list = names
                .iter()
                .map(|(id, o)| OffloadEntry {
                    id: *id,
                    ..o.list_entry()
                })
                .collect();
            let (n, more) = naam_core::wire::fit_page(&list, p.max);
            let next = if more { list[n].id } else { 0 };
            Body::ListReply(ListReplyRepr {
                more,
                next,
                entries: naam_core::wire::EntryList::from_slice(&list[..n]),
            })
        }
        Body::Stats(p) => {
            // Built once per walk through the pages (`Snapshots`), not once per page.
            stats = agent
                .stats_lists
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(principal, p.start, naam_link::now_ns(), || {
                    agent.control_counters()
                });
            kv = kv_entries(&stats, p.start as usize);
            Body::StatsReply(page(&kv, p))
        }
        Body::Describe(d) => match describe(agent, &d) {
            Ok((params, a)) => {
                action = a;
                kv_owned = params;
                kv = kv_entries(&kv_owned, d.start as usize);
                Body::DescribeReply(page(
                    &kv,
                    PageRequestRepr {
                        start: d.start,
                        max: 0,
                    },
                ))
            }
            Err((code, text)) => {
                detail = text;
                error_body(code, &detail)
            }
        },
        other => {
            detail = format!("{:?} is not a control request", other.kind());
            error_body(ErrorCode::Unsupported, &detail)
        }
    };
    (emit(&msg.reply(body), out), action)
}

/// What `principal` may not do with this request, if anything (docs/security.md): admin verbs
/// (`congest:`, `snapshot`, `shutdown`) are the admin's; another tenant's offloads and
/// applications (and so their region keys) are theirs; LIST, STATS and `host` are anyone's.
fn authorize(agent: &HostAgent, principal: Principal, body: &Body<'_>) -> Result<(), String> {
    let owner_ok = |tenant: u32, what: &str| {
        if principal.may_act_for(tenant) {
            Ok(())
        } else {
            Err(format!(
                "{principal} may not act on {what} of tenant {tenant}"
            ))
        }
    };
    match body {
        Body::Register(r) => owner_ok(r.tenant, "offloads"),
        Body::Unregister(u) => match agent.registry.get(u.id) {
            Some(o) => owner_ok(o.tenant, "offload"),
            None => Ok(()),
        },
        Body::Fetch(f) => match agent.registry.get(f.id) {
            Some(o) => owner_ok(o.tenant, "offload"),
            None => Ok(()),
        },
        Body::Describe(d) => {
            let admin_verb =
                d.app.starts_with(CONGEST_HOST) || [SNAPSHOT, SHUTDOWN].contains(&d.app);
            if admin_verb && !principal.is_admin() {
                Err(format!("{:?} is an admin command", d.app))
            } else if agent.app_params(d.app).is_some() {
                owner_ok(BUNDLED_TENANT, "application")
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

fn kv_entries(all: &[(String, u64)], start: usize) -> Vec<KvEntry<'_>> {
    all.iter()
        .skip(start)
        .map(|(n, v)| KvEntry {
            name: clip_utf8(n, naam_core::wire::NAME_MAX),
            value: *v,
        })
        .collect()
}

/// A page of `entries` (which begin at index `p.start`).
fn page<'a>(entries: &'a [KvEntry<'a>], p: PageRequestRepr) -> KvListRepr<'a> {
    let (n, more) = naam_core::wire::fit_page(entries, p.max);
    KvListRepr {
        more,
        next: if more { p.start + n as u32 } else { 0 },
        entries: naam_core::wire::EntryList::from_slice(&entries[..n]),
    }
}

fn error_body<'a>(code: ErrorCode, detail: &'a str) -> Body<'a> {
    Body::Error(ErrorRepr::new(
        code,
        clip_utf8(detail, naam_core::wire::DETAIL_MAX),
    ))
}

/// Writes a control reply (an `Internal` error when it cannot be emitted).
fn emit(m: &Message<'_>, out: &mut [u8]) -> usize {
    m.emit_or_internal_error(out)
}

fn header_echo(d: &[u8]) -> (u64, u16) {
    if d.len() < naam_core::wire::HEADER_LEN {
        return (0, 0);
    }
    let h = naam_core::wire::HeaderPacket::new_unchecked(d);
    if h.magic() != naam_core::wire::MAGIC {
        return (0, 0);
    }
    (h.request_id(), h.class())
}

fn register(agent: &HostAgent, r: &RegisterRepr<'_>) -> Result<u32, crate::RegisterError> {
    let refuse = |code, detail: String| Err(crate::RegisterError { code, detail });
    if r.tenant == naam_core::auth::ANY_TENANT {
        // What the admin's key stands for on the data path: no offload may belong to it.
        return refuse(
            ErrorCode::BadRequest,
            format!("tenant {} is reserved (the admin's 'any tenant')", r.tenant),
        );
    }
    if let Some(o) = agent.registry.class_taken(r.class, r.tenant) {
        return refuse(
            ErrorCode::Forbidden,
            naam_core::pool::class_taken_detail(r.class, &o),
        );
    }
    // The bundled applications' offloads are the deployment's, which the tenant cannot
    // remove: counted, a limit below their number left it unable to register anything.
    let own: Vec<_> = agent
        .registry
        .list()
        .into_iter()
        .filter(|o| o.tenant == r.tenant && o.id >= crate::apps::offload::FIRST_DYNAMIC)
        .collect();
    let held = own.len();
    let mut classes: Vec<u16> = own.iter().map(|o| o.class).collect();
    classes.sort_unstable();
    classes.dedup();
    let max_classes = agent.cfg.max_classes_per_tenant;
    if !classes.contains(&r.class) && classes.len() >= max_classes as usize {
        return refuse(
            ErrorCode::NoSpace,
            format!(
                "tenant {} has offloads on {} classes ({classes:?}), its limit \
                 (--max-classes-per-tenant {max_classes}): register on one of them, or \
                 remove some first",
                r.tenant,
                classes.len()
            ),
        );
    }
    let max = agent.cfg.max_offloads_per_tenant;
    if held >= max as usize {
        return refuse(
            ErrorCode::NoSpace,
            format!(
                "tenant {} has {held} offloads registered besides the bundled ones, its \
                 limit (--max-offloads-per-tenant {max}): remove some first",
                r.tenant
            ),
        );
    }
    let from = agent
        .next_offload
        .load(std::sync::atomic::Ordering::Relaxed);
    let (id, _) = crate::register_object(&agent.registry, r.object, r.section, from, |_, _| {
        naam_core::pool::OffloadSpec {
            name: r.name.to_owned(),
            tenant: r.tenant,
            class: r.class,
            read_only: r.read_only,
        }
    })?;
    agent
        .next_offload
        .store(id + 1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        id,
        name = r.name,
        tenant = r.tenant,
        class = r.class,
        "offload registered"
    );
    Ok(id)
}

type Described = Result<(Vec<(String, u64)>, Action), (ErrorCode, String)>;

fn describe(agent: &HostAgent, d: &DescribeRepr<'_>) -> Described {
    let app = d.app;
    if let Some(arg) = app.strip_prefix(CONGEST_HOST) {
        let ms = congest_ms(CONGEST_HOST, arg).map_err(|d| (ErrorCode::BadRequest, d))?;
        agent.congest(ms);
        return Ok((
            vec![
                ("congest_ms".into(), ms),
                ("workers".into(), agent.cfg.workers as u64),
            ],
            Action::Continue,
        ));
    }
    match app {
        SNAPSHOT => match agent.write_snapshot() {
            Ok(w) => Ok((
                vec![
                    ("regions".into(), w.regions as u64),
                    ("bytes".into(), w.bytes),
                    ("cut".into(), w.cut as u64),
                ],
                Action::Continue,
            )),
            Err(e @ AgentError::NoSnapshotFile) => Err((ErrorCode::Unsupported, e.to_string())),
            // With its causes: "create S.tmp" alone did not say the folder was gone.
            Err(e) => Err((storage_code(&e), naam_core::with_sources(&e))),
        },
        SHUTDOWN => {
            agent.shared.stop.store(true, Ordering::Release);
            Ok((vec![("shutdown".into(), 1)], Action::Shutdown))
        }
        HOST => Ok((
            vec![
                ("workers".into(), agent.cfg.workers as u64),
                ("qps".into(), agent.cfg.nic_workers as u64),
                ("generation".into(), agent.generation),
                ("offloads".into(), agent.registry.len() as u64),
                ("regions".into(), agent.host.directory().len() as u64),
                ("restored".into(), agent.restored as u64),
                (
                    "uptime_ms".into(),
                    agent.started.elapsed().as_millis() as u64,
                ),
                ("pid".into(), std::process::id() as u64),
            ],
            Action::Continue,
        )),
        name => match agent.app_params(name) {
            Some(p) => Ok((p.clone(), Action::Continue)),
            None => Err((ErrorCode::UnknownApp, format!("no application {name:?}"))),
        },
    }
}

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket")]
    Io(#[from] std::io::Error),
    #[error("malformed reply")]
    Wire(#[from] naam_core::wire::WireError),
    #[error("the host agent answered {code:?}: {detail}")]
    Remote { code: ErrorCode, detail: String },
    #[error("unexpected reply kind {0:?}")]
    Unexpected(naam_core::wire::Kind),
    #[error("the host agent closed the connection")]
    Closed,
}

/// A connection to a host agent's control socket.
pub struct ControlClient {
    conn: SeqConn,
    next_id: u64,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl ControlClient {
    /// Connects; every call waits at most `timeout` for its reply.
    pub fn connect(path: &Path, timeout: Duration) -> Result<ControlClient, ControlError> {
        let conn = SeqConn::connect(path)?;
        conn.set_read_timeout(Some(timeout))?;
        Ok(ControlClient {
            conn,
            next_id: 1,
            buf: vec![0u8; MAX_DATAGRAM + 1],
            out: vec![0u8; MAX_DATAGRAM],
        })
    }

    /// Sends raw bytes and returns the raw reply datagram.
    pub fn call_raw(&mut self, datagram: &[u8]) -> Result<Vec<u8>, ControlError> {
        self.conn.send(datagram)?;
        match self.conn.recv(&mut self.buf)? {
            Some(n) => Ok(self.buf[..n].to_vec()),
            None => Err(ControlError::Closed),
        }
    }

    /// Sends `body` and returns the reply datagram (error replies become `Remote`).
    pub fn call(&mut self, body: Body<'_>) -> Result<Vec<u8>, ControlError> {
        let m = Message::new(self.next_id, 0, body);
        self.next_id += 1;
        let n = m.emit(&mut self.out)?;
        let out = std::mem::take(&mut self.out);
        let r = self.call_raw(&out[..n]);
        self.out = out;
        let reply = r?;
        let parsed = Message::parse(&reply)?;
        if let Body::Error(e) = parsed.body {
            return Err(ControlError::Remote {
                code: e.code,
                detail: e.detail.to_owned(),
            });
        }
        Ok(reply)
    }

    fn kv_pages<'a>(
        &mut self,
        mut req: impl FnMut(u32) -> Body<'a>,
    ) -> Result<Vec<(String, u64)>, ControlError> {
        let mut all = Vec::new();
        let mut start = 0;
        loop {
            let reply = self.call(req(start))?;
            let m = Message::parse(&reply)?;
            let p = match m.body {
                Body::StatsReply(p) | Body::DescribeReply(p) => p,
                other => return Err(ControlError::Unexpected(other.kind())),
            };
            all.extend(p.entries.iter().map(|e| (e.name.to_owned(), e.value)));
            if !p.more {
                return Ok(all);
            }
            start = p.next;
        }
    }

    /// `DESCRIBE(app)`, every page.
    pub fn describe(&mut self, app: &str) -> Result<Vec<(String, u64)>, ControlError> {
        self.kv_pages(|start| Body::Describe(DescribeRepr { app, start }))
    }

    /// Every counter.
    pub fn stats(&mut self) -> Result<Vec<(String, u64)>, ControlError> {
        self.kv_pages(|start| Body::Stats(PageRequestRepr { start, max: 0 }))
    }

    /// Every offload.
    pub fn list(&mut self) -> Result<Vec<OffloadInfo>, ControlError> {
        let mut all = Vec::new();
        let mut start = 0;
        loop {
            let reply = self.call(Body::List(PageRequestRepr { start, max: 0 }))?;
            let m = Message::parse(&reply)?;
            let Body::ListReply(p) = m.body else {
                return Err(ControlError::Unexpected(m.kind()));
            };
            all.extend(p.entries.iter().map(|e| OffloadInfo::from(&e)));
            if !p.more {
                return Ok(all);
            }
            start = p.next;
        }
    }

    /// Registers an object; returns the id the host agent chose.
    pub fn register(&mut self, r: RegisterRepr<'_>) -> Result<u32, ControlError> {
        let reply = self.call(Body::Register(r))?;
        match Message::parse(&reply)?.body {
            Body::RegisterReply(r) => Ok(r.id),
            other => Err(ControlError::Unexpected(other.kind())),
        }
    }

    pub fn unregister(&mut self, id: u32) -> Result<(), ControlError> {
        let reply = self.call(Body::Unregister(OffloadIdRepr { id }))?;
        match Message::parse(&reply)?.body {
            Body::Ack => Ok(()),
            other => Err(ControlError::Unexpected(other.kind())),
        }
    }

    /// The congestion injector: host workers spin for `ms` milliseconds.
    pub fn congest(&mut self, ms: u64) -> Result<(), ControlError> {
        self.describe(&format!("{CONGEST_HOST}{ms}")).map(|_| ())
    }

    /// Writes the snapshot now; returns `(regions, bytes)`.
    pub fn snapshot(&mut self) -> Result<(u64, u64), ControlError> {
        let p = self.describe(SNAPSHOT)?;
        let get = |n: &str| p.iter().find(|(k, _)| k == n).map_or(0, |(_, v)| *v);
        Ok((get("regions"), get("bytes")))
    }

    /// Asks the host agent to stop (it answers first).
    pub fn shutdown(&mut self) -> Result<(), ControlError> {
        self.describe(SHUTDOWN).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_respect_the_maximum_and_chain_with_next() {
        let all: Vec<(String, u64)> = (0..10).map(|i| (format!("c{i}"), i)).collect();
        let mut start = 0u32;
        let mut seen = Vec::new();
        loop {
            let kv = kv_entries(&all, start as usize);
            let p = page(&kv, PageRequestRepr { start, max: 3 });
            assert!(p.entries.len() <= 3);
            seen.extend(p.entries.iter().map(|e| e.value));
            if !p.more {
                assert_eq!(p.next, 0);
                break;
            }
            start = p.next;
        }
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_page_never_exceeds_one_datagram() {
        let long = "x".repeat(naam_core::wire::NAME_MAX);
        let all: Vec<(String, u64)> = (0..2000).map(|i| (long.clone(), i)).collect();
        let kv = kv_entries(&all, 0);
        let p = page(&kv, PageRequestRepr { start: 0, max: 0 });
        assert!(p.more && (p.next as usize) == p.entries.len());
        let m = Message::new(1, 0, Body::StatsReply(p));
        let mut buf = vec![0u8; MAX_DATAGRAM];
        assert!(m.emit(&mut buf).is_ok());
    }

    #[test]
    fn names_are_clipped_at_character_boundaries() {
        let s = "é".repeat(40);
        let c = clip_utf8(&s, naam_core::wire::NAME_MAX);
        assert!(c.len() <= naam_core::wire::NAME_MAX && s.starts_with(c));
    }
}
