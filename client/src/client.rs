//! The client endpoint: one UDP socket, any number of servers, many requests in flight.
//!
//! Every request is encoded once into its own datagram buffer and kept until its reply
//! arrives, so a retransmission is the same bytes with the `RETRANSMIT` header flag set and the
//! same request id (the server de-duplicates by (client address, request id)). Replies are
//! matched by request id and source IP address; anything else is counted and dropped. Nothing
//! here spawns a thread: [`Client::submit_call`] and friends return a [`Ticket`] at once and
//! [`Client::poll`] hands back [`Completion`]s as replies arrive, so one thread keeps as many
//! requests in flight as it likes. The blocking calls are `submit` + wait.
//!
//! Local execution (handlers run here, their ops sent as one-sided requests) is a state
//! machine in [`crate::local`], driven from the same receive path: a one-sided reply that
//! belongs to a local run feeds the run's next step instead of completing a ticket.

use crate::config::{ClientConfig, ExecMode};
use crate::error::{ClientError, Result};
use crate::local::{LocalExec, RunStep};
use crate::reply::{
    kv_owned, Completion, OffloadInfo, OpOutcome, Page, ProgramPiece, Reply, Response, Ticket,
};
use crate::window::Window;
use naam_core::elf;
use naam_core::pool::OffloadSpec;
use naam_core::region::{Perms, RegionDesc, RegionId, RegionTable};
use naam_core::verifier::{self, VerifierConfig};
use naam_core::wire::{
    AmFlags, AmRequestRepr, Body, DescribeRepr, FetchRepr, Flags, Kind, Location, Message,
    OffloadIdRepr, OneSidedRepr, OpBody, PageRequestRepr, RegisterRepr, RemoteOp, MAX_DATAGRAM,
};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Index of a server in a client's server list.
pub type ServerId = usize;

/// The addresses of one server (one dataplane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAddr {
    /// The data base port: class `c` is served on `base + c`.
    pub data: SocketAddr,
    /// The control port (default `base - 1`).
    pub control: SocketAddr,
}

impl ServerAddr {
    /// `control` defaults to the data base port minus one.
    pub fn new(data: SocketAddr, control: Option<SocketAddr>) -> Self {
        let control = control.unwrap_or_else(|| {
            let mut c = data;
            c.set_port(data.port().wrapping_sub(1));
            c
        });
        Self { data, control }
    }

    /// The address messages of steering class `class` go to.
    pub fn class_addr(&self, class: u16) -> SocketAddr {
        let mut a = self.data;
        a.set_port(self.data.port().wrapping_add(class));
        a
    }
}

/// Counters of one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub requests: u64,
    pub retransmits: u64,
    pub timeouts: u64,
    /// Replies to no outstanding request (late duplicates), or from the wrong address.
    pub stray_replies: u64,
    pub malformed_replies: u64,
    /// Retries after a `busy` / `host_unavailable` error.
    pub busy_retries: u64,
    /// Of those, retries scheduled by the server's retry-after hint.
    pub retry_after_hints: u64,
    pub local_runs: u64,
    pub local_steps: u64,
    /// Messages sent with `EXEC_HINT` whose reply carried a hint.
    pub hints: u64,
    /// Programs fetched from servers to run here (FETCH).
    pub fetched: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    User,
    /// A step of local run `run`.
    Local(u64),
}

struct Pending {
    ticket: Ticket,
    server: ServerId,
    dest: SocketAddr,
    datagram: Vec<u8>,
    /// Sends so far.
    attempts: u32,
    first_sent: Instant,
    deadline: Instant,
    /// The last transient refusal (`busy`, `host_unavailable`) the server answered, named
    /// when the retries run out in silence.
    refused: Option<String>,
    purpose: Purpose,
    /// The offload of an AM request (for replies and abort errors).
    offload: u32,
    expect: Kind,
    /// Counted in its server's window (sent and not answered); else waiting for room there
    /// or for the retry after a refusal.
    on_wire: bool,
}

impl Pending {
    /// A request not sent yet, made at `now`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        ticket: Ticket,
        server: ServerId,
        dest: SocketAddr,
        datagram: Vec<u8>,
        purpose: Purpose,
        offload: u32,
        expect: Kind,
        now: Instant,
    ) -> Pending {
        Pending {
            ticket,
            server,
            dest,
            datagram,
            attempts: 0,
            first_sent: now,
            deadline: now,
            refused: None,
            purpose,
            offload,
            expect,
            on_wire: false,
        }
    }
}

/// The deadline of a request that waits for room in its server's window (it has no timer).
const NO_TIMER: Duration = Duration::from_secs(3600);

struct ServerState {
    addr: ServerAddr,
    /// Regions whose keys this client knows (from `describe` or `set_region_key`), for
    /// one-sided ops and local execution. Lengths are unknown here: the server checks bounds.
    regions: RegionTable,
    /// Steering class -> end of a `location = client` lease.
    leases: HashMap<u16, Instant>,
    /// How many requests may be on the wire to this server (congestion control).
    window: Window,
    /// Steering class -> when its current lease began (a lease extended before it ended
    /// keeps its start): fetched programs of the class are checked again after it.
    lease_began: HashMap<u16, Instant>,
}

/// A program this client fetched from a server (FETCH) to run it itself.
struct Fetched {
    /// Of the instructions it runs ([`naam_core::wire::program_digest`]).
    digest: u64,
    /// When the server last confirmed the digest.
    checked: Instant,
}

/// How long a program the client could not fetch (forbidden, does not verify here, not
/// read-only) is not asked for again.
const FETCH_RETRY: Duration = Duration::from_secs(1);

/// How a message will run.
enum Place {
    Server { exec_hint: bool },
    Local,
}

/// What [`Client::register`] needs besides the object.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    pub name: String,
    /// The ELF section of the entry point; `None` picks the first executable one.
    pub section: Option<String>,
    pub class: u16,
    pub read_only: bool,
}

/// A NAAM client: one UDP socket (use one client per thread), one or more servers.
pub struct Client {
    sock: UdpSocket,
    servers: Vec<ServerState>,
    cfg: ClientConfig,
    next_id: u64,
    /// Request ids in the order they were given out, from the oldest that may still be open:
    /// the front is the oldest open request (ids that finished are dropped from the front).
    issued: VecDeque<u64>,
    next_ticket: u64,
    pending: HashMap<u64, Pending>,
    /// No pending deadline is earlier than this.
    next_deadline: Option<Instant>,
    ready: VecDeque<Completion>,
    recv_buf: Box<[u8]>,
    /// Datagram buffers of finished requests, reused by new ones.
    free: Vec<Vec<u8>>,
    local: LocalExec,
    /// Programs fetched from servers, by (server, offload), and those that could not be
    /// (until when not to try again).
    fetched: HashMap<(ServerId, u32), Fetched>,
    unfetchable: HashMap<(ServerId, u32), Instant>,
    /// The data-path capability for (tenant, key id), made once (an HMAC) and reused.
    capability: Option<(u32, u32, u64)>,
    pub stats: ClientStats,
}

/// A start for the request-id counter that differs between runs, so a restarted client on
/// the same port does not reuse its former ids within the server's de-duplication window.
fn random_start() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    // Keep the top bit clear so the counter never wraps in practice.
    h.finish() >> 1
}

impl Client {
    /// A client of one server with default settings.
    pub fn connect(data: SocketAddr, control: Option<SocketAddr>) -> Result<Self> {
        Self::with_servers(&[ServerAddr::new(data, control)], ClientConfig::default())
    }

    /// A client of several servers sharing one socket.
    pub fn with_servers(servers: &[ServerAddr], cfg: ClientConfig) -> Result<Self> {
        let any_v6 = servers.iter().any(|s| s.data.is_ipv6());
        let bind: SocketAddr = if any_v6 {
            "[::]:0".parse().expect("literal")
        } else {
            "0.0.0.0:0".parse().expect("literal")
        };
        let sock = UdpSocket::bind(bind).map_err(|e| ClientError::io("binding a UDP socket", e))?;
        sock.set_nonblocking(true)
            .map_err(|e| ClientError::io("making the socket non-blocking", e))?;
        let local = LocalExec::new(cfg.engine, cfg.max_steps)?;
        Ok(Self {
            sock,
            servers: servers
                .iter()
                .map(|&addr| ServerState {
                    addr,
                    regions: RegionTable::new(),
                    leases: HashMap::new(),
                    lease_began: HashMap::new(),
                    window: Window::new(cfg.max_window),
                })
                .collect(),
            cfg,
            next_id: random_start(),
            issued: VecDeque::new(),
            next_ticket: 1,
            pending: HashMap::new(),
            next_deadline: None,
            ready: VecDeque::new(),
            recv_buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
            free: Vec::new(),
            local,
            fetched: HashMap::new(),
            unfetchable: HashMap::new(),
            capability: None,
            stats: ClientStats::default(),
        })
    }

    /// The capability active messages carry for the configured tenant (0 without a
    /// credential: servers then refuse them).
    fn capability(&mut self) -> u64 {
        let tenant = self.cfg.tenant;
        let Some(cred) = &self.cfg.credential else {
            return 0;
        };
        match self.capability {
            Some((t, k, c)) if t == tenant && k == cred.key_id => c,
            _ => {
                let c = cred.capability(tenant);
                self.capability = Some((tenant, cred.key_id, c));
                c
            }
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    pub fn config_mut(&mut self) -> &mut ClientConfig {
        &mut self.cfg
    }

    pub fn servers(&self) -> usize {
        self.servers.len()
    }

    pub fn server_addr(&self, server: ServerId) -> Option<ServerAddr> {
        self.servers.get(server).map(|s| s.addr)
    }

    /// The local address of the socket (what servers see as this client).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.sock
            .local_addr()
            .map_err(|e| ClientError::io("reading the socket address", e))
    }

    /// Requests submitted and not yet polled (server requests and local runs).
    pub fn outstanding(&self) -> usize {
        self.pending
            .values()
            .filter(|p| matches!(p.purpose, Purpose::User))
            .count()
            + self.local.running()
            + self.ready.len()
    }

    fn server(&self, server: ServerId) -> Result<&ServerState> {
        self.servers.get(server).ok_or(ClientError::NoSuchServer {
            server,
            servers: self.servers.len(),
        })
    }

    // ---- regions and keys ----

    /// Remembers the key of `region` on `server` (for one-sided ops and local execution).
    pub fn set_region_key(&mut self, server: ServerId, region: RegionId, key: u64) -> Result<()> {
        self.server(server)?;
        let tenant = self.cfg.tenant;
        self.servers[server]
            .regions
            .insert(RegionDesc {
                id: region,
                tenant,
                // The server knows the length and checks bounds; the client only checks the
                // op's shape (kind, data window, atomic alignment).
                len: u64::MAX,
                perms: Perms::ALL,
                key,
            })
            .map_err(|_| ClientError::App {
                app: "regions",
                reason: format!("region id {region} is too large"),
            })
    }

    pub fn region_key(&self, server: ServerId, region: RegionId) -> Option<u64> {
        self.servers.get(server)?.regions.get(region).map(|d| d.key)
    }

    // ---- local offloads ----

    /// Makes offload `id` runnable here: loads `object` (section `section`), verifies it and
    /// compiles it in the local VM pool. The server must know the same offload by the same id.
    pub fn load_local(
        &mut self,
        id: u32,
        object: &[u8],
        section: Option<&str>,
        class: u16,
        read_only: bool,
    ) -> Result<()> {
        let program =
            elf::load_program(object, section).map_err(|e| ClientError::InvalidProgram {
                detail: e.to_string(),
            })?;
        self.load_local_program(id, program, class, read_only)
    }

    /// As [`Self::load_local`], for a program already extracted (and possibly rewritten).
    pub fn load_local_program(
        &mut self,
        id: u32,
        program: elf::Program,
        class: u16,
        read_only: bool,
    ) -> Result<()> {
        let verified = verifier::verify(&program, &VerifierConfig::default()).map_err(|e| {
            ClientError::InvalidProgram {
                detail: e.to_string(),
            }
        })?;
        let spec = OffloadSpec {
            name: program.name.clone(),
            tenant: self.cfg.tenant,
            class,
            read_only,
        };
        self.local.load(id, spec, Arc::new(verified))
    }

    /// As [`Self::load_local`], for a program already verified (say, a bundled handler that
    /// its crate rewrites before verifying).
    pub fn load_local_verified(
        &mut self,
        id: u32,
        program: Arc<naam_core::verifier::VerifiedProgram>,
        class: u16,
        read_only: bool,
    ) -> Result<()> {
        let spec = OffloadSpec {
            name: program.name().to_owned(),
            tenant: self.cfg.tenant,
            class,
            read_only,
        };
        self.local.load(id, spec, program)
    }

    /// Makes sure a program this client would run itself is the server's current one:
    /// fetches a program it lacks (FETCH, verified here; in `Auto` mode only read-only ones,
    /// the only ones a lease moves), and checks a fetched one's digest again when it is
    /// about to run after the start of its class's lease (`Auto`) or on every call
    /// (`Local`). A replaced program is fetched again, a removed one unloaded; programs
    /// loaded by the application ([`Self::load_local`], the bundled ones) are its own and
    /// left alone. Failures other than in `Local` mode only mean "run at the server".
    fn ensure_program(&mut self, server: ServerId, offload: u32, mode: ExecMode) -> Result<()> {
        let now = Instant::now();
        let key = (server, offload);
        if let Some(f) = self.fetched.get(&key) {
            let class = self.local.offload(offload).map(|o| o.class);
            let s = self.server(server)?;
            let lease = class.and_then(|c| s.lease_began.get(&c));
            let due = mode == ExecMode::Local || lease.is_some_and(|&began| f.checked < began);
            if !due {
                return Ok(());
            }
            let (digest, checked) = (f.digest, self.remote_digest(server, offload));
            match checked {
                Ok(d) if d == digest => {
                    if let Some(f) = self.fetched.get_mut(&key) {
                        f.checked = now;
                    }
                    return Ok(());
                }
                // Replaced (fetched again below), or gone or unreachable: not run here.
                Ok(_) | Err(_) => {
                    self.fetched.remove(&key);
                    self.local.unload(offload);
                }
            }
        } else if self.local.offload(offload).is_some() {
            return Ok(());
        }
        if self.unfetchable.get(&key).is_some_and(|&until| now < until) {
            return Ok(());
        }
        match self.fetch_local(server, offload, mode) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.unfetchable.insert(key, now + FETCH_RETRY);
                if mode == ExecMode::Local {
                    Err(ClientError::NotLocal {
                        offload,
                        reason: "the client has no program for it and could not fetch one",
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Fetches offload `id`'s program from `server`, verifies it and loads it for local runs.
    fn fetch_local(&mut self, server: ServerId, id: u32, mode: ExecMode) -> Result<()> {
        let info =
            self.list(server)?
                .into_iter()
                .find(|o| o.id == id)
                .ok_or(ClientError::NotLocal {
                    offload: id,
                    reason: "the server has no such offload",
                })?;
        if mode == ExecMode::Auto && !info.read_only {
            return Err(ClientError::NotLocal {
                offload: id,
                reason: "only read-only offloads move to clients",
            });
        }
        let (insns, digest) = self.fetch_program(server, id)?;
        let program = elf::Program::from_insns(info.name.clone(), insns);
        self.load_local_program(id, program, info.class, info.read_only)?;
        self.fetched.insert(
            (server, id),
            Fetched {
                digest,
                checked: Instant::now(),
            },
        );
        self.stats.fetched += 1;
        Ok(())
    }

    /// The digest of offload `id`'s program at `server` (a FETCH past its end: no bytes).
    fn remote_digest(&mut self, server: ServerId, id: u32) -> Result<u64> {
        let body = Body::Fetch(FetchRepr {
            id,
            start: u32::MAX,
        });
        match self.control(server, body)? {
            Response::Fetched(p) => Ok(p.digest),
            other => Err(unexpected(0, "fetch reply", &other)),
        }
    }

    /// `server`'s congestion window: its size, requests on the wire, requests waiting for
    /// room, and how many times it was halved.
    pub fn window(&self, server: ServerId) -> Option<(usize, usize, usize, u64)> {
        let w = &self.servers.get(server)?.window;
        let (on_wire, held) = w.load();
        Some((w.size(), on_wire, held, w.cuts))
    }

    /// Whether offload `id` can run here.
    pub fn has_local(&self, id: u32) -> bool {
        self.local.offload(id).is_some()
    }

    /// Whether a `location = client` lease for `class` on `server` is running.
    pub fn lease_active(&self, server: ServerId, class: u16) -> bool {
        self.servers
            .get(server)
            .and_then(|s| s.leases.get(&class))
            .is_some_and(|&until| Instant::now() < until)
    }

    // ---- active messages ----

    fn place(&self, server: ServerId, offload: u32, class: u16, mode: ExecMode) -> Result<Place> {
        let s = self.server(server)?;
        let local = self.local.offload(offload);
        let keys = s.regions.iter().next().is_some();
        match mode {
            ExecMode::Server => Ok(Place::Server { exec_hint: false }),
            ExecMode::Local => match (local, keys) {
                (None, _) => Err(ClientError::NotLocal {
                    offload,
                    reason: "the client has no program for it",
                }),
                (Some(_), false) => Err(ClientError::NotLocal {
                    offload,
                    reason:
                        "the client knows no region keys of this server (describe the app first)",
                }),
                (Some(_), true) => Ok(Place::Local),
            },
            ExecMode::Auto => {
                let capable = keys && local.is_some_and(|o| o.read_only);
                let leased = s
                    .leases
                    .get(&class)
                    .is_some_and(|&until| Instant::now() < until);
                Ok(if capable && leased {
                    Place::Local
                } else {
                    Place::Server { exec_hint: capable }
                })
            }
        }
    }

    fn ticket(&mut self) -> Ticket {
        let t = Ticket(self.next_ticket);
        self.next_ticket += 1;
        t
    }

    /// Sends an active message for `offload` (class `class`) to server 0 in the client's
    /// execution mode; the reply comes from [`Self::poll`].
    pub fn submit_call(&mut self, offload: u32, class: u16, args: &[u8]) -> Result<Ticket> {
        let mode = self.cfg.exec_mode;
        self.submit_call_on(0, offload, class, args, mode)
    }

    /// Sends an active message to `server`, or runs it here (`mode`).
    pub fn submit_call_on(
        &mut self,
        server: ServerId,
        offload: u32,
        class: u16,
        args: &[u8],
        mode: ExecMode,
    ) -> Result<Ticket> {
        if mode != ExecMode::Server {
            self.ensure_program(server, offload, mode)?;
        }
        match self.place(server, offload, class, mode)? {
            Place::Local => {
                let ticket = self.ticket();
                self.stats.local_runs += 1;
                let tenant = self.cfg.tenant;
                let step = self.local.start(ticket, server, offload, tenant, args);
                self.after_local_step(step);
                Ok(ticket)
            }
            Place::Server { exec_hint } => {
                let ticket = self.ticket();
                let flags = if exec_hint {
                    AmFlags::EXEC_HINT
                } else {
                    AmFlags::empty()
                };
                let capability = self.capability();
                let body = Body::AmRequest(AmRequestRepr {
                    offload,
                    tenant: self.cfg.tenant,
                    capability,
                    flags,
                    args,
                });
                let dest = self.server(server)?.addr.class_addr(class);
                self.send_new(ticket, server, dest, class, body, Purpose::User, offload)?;
                Ok(ticket)
            }
        }
    }

    /// Calls `offload` on server 0 and waits for the reply.
    pub fn call(&mut self, offload: u32, class: u16, args: &[u8]) -> Result<Reply> {
        let t = self.submit_call(offload, class, args)?;
        self.wait_am(t)
    }

    /// Calls `offload` on `server` in `mode` and waits for the reply.
    pub fn call_on(
        &mut self,
        server: ServerId,
        offload: u32,
        class: u16,
        args: &[u8],
        mode: ExecMode,
    ) -> Result<Reply> {
        let t = self.submit_call_on(server, offload, class, args, mode)?;
        self.wait_am(t)
    }

    fn wait_am(&mut self, t: Ticket) -> Result<Reply> {
        match self.wait(t)? {
            Response::Am(r) => Ok(r),
            other => Err(unexpected(0, "am reply", &other)),
        }
    }

    // ---- one-sided ops ----

    /// Sends 1 to 4 one-sided ops to `server` in one request.
    pub fn submit_ops(&mut self, server: ServerId, ops: &[RemoteOp<'_>]) -> Result<Ticket> {
        let repr = OneSidedRepr::new(ops).map_err(|_| ClientError::BadOpCount { n: ops.len() })?;
        let ticket = self.ticket();
        // One-sided ops use the class reserved for them: 0.
        let dest = self.server(server)?.addr.class_addr(0);
        self.send_new(
            ticket,
            server,
            dest,
            0,
            Body::OneSided(repr),
            Purpose::User,
            0,
        )?;
        Ok(ticket)
    }

    /// Runs 1 to 4 one-sided ops on `server` and waits for their results. A failed op is
    /// reported in its [`OpOutcome::error`], not as an error of the call.
    pub fn ops(&mut self, server: ServerId, ops: &[RemoteOp<'_>]) -> Result<Vec<OpOutcome>> {
        let t = self.submit_ops(server, ops)?;
        match self.wait(t)? {
            Response::OneSided(r) => Ok(r),
            other => Err(unexpected(0, "one-sided reply", &other)),
        }
    }

    fn remote_op<'a>(
        &self,
        server: ServerId,
        region: RegionId,
        offset: u64,
        body: OpBody<'a>,
    ) -> Result<RemoteOp<'a>> {
        let key = self.region_key(server, region).unwrap_or(0);
        Ok(RemoteOp {
            region,
            key,
            offset,
            body,
        })
    }

    fn one_op(&mut self, server: ServerId, op: RemoteOp<'_>) -> Result<OpOutcome> {
        let mut r = self.ops(server, &[op])?;
        let out = r.pop().ok_or(ClientError::BadOpCount { n: 0 })?;
        match out.error {
            Some(code) => Err(ClientError::OpFailed { index: 0, code }),
            None => Ok(out),
        }
    }

    /// One-sided READ of `len` bytes (the region key comes from [`Self::set_region_key`] or
    /// `describe`).
    pub fn read(
        &mut self,
        server: ServerId,
        region: RegionId,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>> {
        let op = self.remote_op(server, region, offset, OpBody::Read { len })?;
        Ok(self.one_op(server, op)?.data)
    }

    /// One-sided WRITE.
    pub fn write(
        &mut self,
        server: ServerId,
        region: RegionId,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        let op = self.remote_op(server, region, offset, OpBody::Write { data })?;
        self.one_op(server, op).map(|_| ())
    }

    /// One-sided compare-and-swap; returns the previous value (it succeeded iff that equals
    /// `expected`).
    pub fn cas(
        &mut self,
        server: ServerId,
        region: RegionId,
        offset: u64,
        expected: u64,
        desired: u64,
    ) -> Result<u64> {
        let op = self.remote_op(server, region, offset, OpBody::Cas { expected, desired })?;
        Ok(self.one_op(server, op)?.previous)
    }

    /// One-sided fetch-and-add; returns the previous value.
    pub fn faa(
        &mut self,
        server: ServerId,
        region: RegionId,
        offset: u64,
        addend: u64,
    ) -> Result<u64> {
        let op = self.remote_op(server, region, offset, OpBody::Faa { addend })?;
        Ok(self.one_op(server, op)?.previous)
    }

    // ---- control ----

    fn control(&mut self, server: ServerId, body: Body<'_>) -> Result<Response> {
        let ticket = self.ticket();
        let dest = self.server(server)?.addr.control;
        self.send_new(ticket, server, dest, 0, body, Purpose::User, 0)?;
        self.wait(ticket)
    }

    /// Registers an ELF object on `server`; returns the offload id it got. When the program
    /// also loads here, it becomes runnable locally under the same id.
    pub fn register(
        &mut self,
        server: ServerId,
        object: &[u8],
        opts: &RegisterOptions,
    ) -> Result<u32> {
        let body = Body::Register(RegisterRepr {
            name: &opts.name,
            tenant: self.cfg.tenant,
            class: opts.class,
            read_only: opts.read_only,
            section: opts.section.as_deref(),
            object,
        });
        let id = match self.control(server, body)? {
            Response::Registered(id) => id,
            other => return Err(unexpected(0, "register reply", &other)),
        };
        // Local execution is an optimisation: a program the local engine cannot take simply
        // always runs at the server.
        let _ = self.load_local(
            id,
            object,
            opts.section.as_deref(),
            opts.class,
            opts.read_only,
        );
        Ok(id)
    }

    /// Registers one of the bundled handlers on `server` (under a new id: the fixed ids
    /// are taken by the server's own registration of the bundled applications).
    pub fn register_bundled(
        &mut self,
        server: ServerId,
        o: crate::bundled::BundledOffload,
        name: &str,
    ) -> Result<u32> {
        let object = crate::bundled::object(o).ok_or(ClientError::NotLocal {
            offload: o.id,
            reason: "this build does not bundle its object",
        })?;
        let opts = RegisterOptions {
            name: name.to_owned(),
            section: Some(o.section.to_owned()),
            class: o.class,
            read_only: o.read_only,
        };
        self.register(server, object, &opts)
    }

    /// Unregisters offload `id` on `server` (and forgets it locally).
    pub fn unregister(&mut self, server: ServerId, id: u32) -> Result<()> {
        match self.control(server, Body::Unregister(OffloadIdRepr { id }))? {
            Response::Ack => {
                self.local.unload(id);
                Ok(())
            }
            other => Err(unexpected(0, "ack", &other)),
        }
    }

    /// Every offload registered on `server` (all pages).
    pub fn list(&mut self, server: ServerId) -> Result<Vec<OffloadInfo>> {
        let mut all = Vec::new();
        let mut start = 0;
        loop {
            let body = Body::List(PageRequestRepr { start, max: 0 });
            match self.control(server, body)? {
                Response::List(page) => {
                    all.extend(page.entries);
                    match page.next {
                        Some(n) if n > start || all.is_empty() => start = n,
                        Some(_) | None => return Ok(all),
                    }
                }
                other => return Err(unexpected(0, "list reply", &other)),
            }
        }
    }

    /// Offload `id`'s verified instructions, as `server` holds them, and their digest
    /// ([`naam_core::wire::program_digest`]). Pages through the program; starts again when
    /// the digest changes on the way (the offload was replaced).
    pub fn fetch_program(&mut self, server: ServerId, id: u32) -> Result<(Vec<u8>, u64)> {
        const ATTEMPTS: usize = 4;
        for _ in 0..ATTEMPTS {
            let mut insns: Vec<u8> = Vec::new();
            let mut digest = None;
            loop {
                let body = Body::Fetch(FetchRepr {
                    id,
                    start: insns.len() as u32,
                });
                let piece = match self.control(server, body)? {
                    Response::Fetched(p) => p,
                    other => return Err(unexpected(0, "fetch reply", &other)),
                };
                if *digest.get_or_insert(piece.digest) != piece.digest
                    || piece.start as usize != insns.len()
                {
                    break;
                }
                insns.extend_from_slice(&piece.bytes);
                if insns.len() >= piece.total as usize || piece.bytes.is_empty() {
                    let d = digest.unwrap_or_default();
                    if insns.len() == piece.total as usize
                        && naam_core::wire::program_digest(&insns) == d
                    {
                        return Ok((insns, d));
                    }
                    break;
                }
            }
        }
        Err(ClientError::Fetch {
            offload: id,
            attempts: ATTEMPTS,
        })
    }

    /// Every counter of `server` (all pages).
    pub fn server_stats(&mut self, server: ServerId) -> Result<Vec<(String, u64)>> {
        self.kv_pages(server, |start| {
            Body::Stats(PageRequestRepr { start, max: 0 })
        })
    }

    /// The parameters of application `app` on `server` (all pages). Parameters named
    /// `*_region` with a matching `*_key` (and `region`/`key`) are remembered as region keys.
    pub fn describe(&mut self, server: ServerId, app: &str) -> Result<Vec<(String, u64)>> {
        let params = self.kv_pages(server, |start| Body::Describe(DescribeRepr { start, app }))?;
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|&(_, v)| v);
        for (name, region) in &params {
            let key_name = match name.strip_suffix("region") {
                Some(prefix) => format!("{prefix}key"),
                None => continue,
            };
            if let (Ok(region), Some(key)) = (u32::try_from(*region), get(&key_name)) {
                self.set_region_key(server, region, key)?;
            }
        }
        Ok(params)
    }

    fn kv_pages<'a>(
        &mut self,
        server: ServerId,
        body: impl Fn(u32) -> Body<'a>,
    ) -> Result<Vec<(String, u64)>> {
        let mut all = Vec::new();
        let mut start = 0;
        loop {
            match self.control(server, body(start))? {
                Response::Stats(page) | Response::Describe(page) => {
                    all.extend(page.entries);
                    match page.next {
                        Some(n) if n > start => start = n,
                        Some(_) | None => return Ok(all),
                    }
                }
                other => return Err(unexpected(0, "paged reply", &other)),
            }
        }
    }

    // ---- sending ----

    /// A new request id, and the window its request carries: how many of this client's
    /// requests are open, counting the new one, so the server may forget every older one it
    /// remembers for de-duplication (docs/protocol.md). 0 ("not said") if that does not fit.
    fn new_request_id(&mut self) -> (u64, u32) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        while let Some(&oldest) = self.issued.front() {
            if self.pending.contains_key(&oldest) {
                break;
            }
            self.issued.pop_front();
        }
        let oldest = self.issued.front().copied().unwrap_or(id);
        self.issued.push_back(id);
        let window = u32::try_from(id.wrapping_sub(oldest).wrapping_add(1)).unwrap_or(0);
        (id, window)
    }

    /// Encodes into `buf` (a recycled buffer, or a new one).
    fn encode(
        mut buf: Vec<u8>,
        (id, window): (u64, u32),
        class: u16,
        body: Body<'_>,
    ) -> Result<Vec<u8>> {
        let msg = Message {
            window,
            ..Message::new(id, class, body)
        };
        buf.clear();
        buf.resize(msg.buffer_len(), 0);
        msg.emit(&mut buf)?;
        Ok(buf)
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        // Enough for a deep pipeline; beyond that, let buffers go.
        if self.free.len() < 4096 && buf.capacity() > 0 {
            self.free.push(buf);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send_new(
        &mut self,
        ticket: Ticket,
        server: ServerId,
        dest: SocketAddr,
        class: u16,
        body: Body<'_>,
        purpose: Purpose,
        offload: u32,
    ) -> Result<u64> {
        let expect = body.kind().reply().unwrap_or(Kind::Ack);
        let (id, window) = self.new_request_id();
        let mut datagram = Self::encode(
            self.free.pop().unwrap_or_default(),
            (id, window),
            class,
            body,
        )?;
        let control = !matches!(expect, Kind::AmReply | Kind::OneSidedReply);
        if let (true, Some(cred)) = (control, &self.cfg.credential) {
            // Retransmissions resend these bytes: the same nonce, recognised as a repeat.
            let sealed = cred.seal(naam_core::auth::wall_clock_ns(), &datagram)?;
            self.recycle(std::mem::replace(&mut datagram, sealed));
        }
        let now = Instant::now();
        let p = Pending::new(
            ticket, server, dest, datagram, purpose, offload, expect, now,
        );
        self.enqueue(id, p, now)?;
        Ok(id)
    }

    /// A new request: sent now if its server's window has room, else held until it has.
    /// A first send the socket refuses is an error (and the request is gone).
    fn enqueue(&mut self, id: u64, p: Pending, now: Instant) -> Result<()> {
        let server = p.server;
        self.pending.insert(id, p);
        if !self.servers[server].window.admit() {
            self.hold(id, now);
            return Ok(());
        }
        if let Err(e) = self.send_pending(id, now) {
            if let Some(mut p) = self.pending.remove(&id) {
                self.recycle(std::mem::take(&mut p.datagram));
            }
            self.servers[server].window.left();
            return Err(e);
        }
        Ok(())
    }

    /// Request `id` waits for room in its server's window (no timer meanwhile).
    fn hold(&mut self, id: u64, now: Instant) {
        if let Some(p) = self.pending.get_mut(&id) {
            p.on_wire = false;
            p.deadline = now + NO_TIMER;
            self.servers[p.server].window.hold(id);
        }
    }

    /// Sends request `id` (admitted to its window by the caller): a retransmission after
    /// the first send (same id, same bytes, RETRANSMIT set in header bytes 4..6).
    fn send_pending(&mut self, id: u64, now: Instant) -> Result<()> {
        let Some(p) = self.pending.get_mut(&id) else {
            return Ok(());
        };
        if p.attempts > 0 {
            let flags =
                u16::from_le_bytes([p.datagram[4], p.datagram[5]]) | Flags::RETRANSMIT.bits();
            p.datagram[4..6].copy_from_slice(&flags.to_le_bytes());
            self.stats.retransmits += 1;
        } else {
            self.stats.requests += 1;
        }
        p.deadline = now + self.cfg.backoff(p.attempts);
        p.attempts += 1;
        p.on_wire = true;
        let deadline = p.deadline;
        self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
        let (dg, dest) = (std::mem::take(&mut p.datagram), p.dest);
        let sent = self.transmit(&dg, dest);
        if let Some(p) = self.pending.get_mut(&id) {
            p.datagram = dg;
        }
        sent
    }

    /// Sends the held requests of `server` its window has room for now.
    fn release(&mut self, server: ServerId, now: Instant) {
        while let Some(id) = self.servers[server].window.release() {
            if !self.pending.contains_key(&id) {
                self.servers[server].window.left();
                continue;
            }
            // A refused send is as good as lost: the retransmission timer recovers it.
            let _ = self.send_pending(id, now);
        }
    }

    /// The gap between two halvings of a window: one burst of refusals is one signal.
    fn cut_gap(&self) -> Duration {
        self.cfg.timeout / 2
    }

    fn transmit(&self, datagram: &[u8], dest: SocketAddr) -> Result<()> {
        match self.sock.send_to(datagram, dest) {
            Ok(_) => Ok(()),
            // A full socket buffer or an ICMP error from an earlier datagram: the request is
            // as good as lost, and the retransmission timer recovers it.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(ClientError::io("sending a datagram", e)),
        }
    }

    // ---- receiving ----

    /// The next finished request, waiting up to `timeout` (`None`: until one finishes). Returns
    /// `Ok(None)` when the time is up, or at once when nothing is outstanding.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<Option<Completion>> {
        let until = timeout.map(|t| Instant::now() + t);
        // Even a zero timeout looks at the socket once, so a caller that polls without
        // waiting (an open-loop sender behind schedule) still receives its replies.
        let mut looked = false;
        loop {
            if let Some(c) = self.ready.pop_front() {
                return Ok(Some(c));
            }
            if self.pending.is_empty() && self.local.running() == 0 {
                return Ok(None);
            }
            if looked && until.is_some_and(|u| Instant::now() >= u) {
                return Ok(None);
            }
            looked = true;
            self.pump(until)?;
        }
    }

    /// Waits for `ticket` (other completions that arrive meanwhile stay queued for
    /// [`Self::poll`]).
    pub fn wait(&mut self, ticket: Ticket) -> Result<Response> {
        loop {
            if let Some(i) = self.ready.iter().position(|c| c.ticket == ticket) {
                let c = self.ready.remove(i).expect("index from position");
                return c.result;
            }
            let known =
                self.pending.values().any(|p| p.ticket == ticket) || self.local.has_ticket(ticket);
            if !known {
                return Err(ClientError::App {
                    app: "client",
                    reason: format!("ticket {} is not outstanding", ticket.0),
                });
            }
            self.pump(None)?;
        }
    }

    /// One round: fires due timers, waits for the socket (up to the next timer or `until`),
    /// and handles every datagram that is there.
    fn pump(&mut self, until: Option<Instant>) -> Result<()> {
        let now = Instant::now();
        if self.next_deadline.is_some_and(|d| now >= d) {
            self.fire_timers(now)?;
        }
        if !self.ready.is_empty() {
            return Ok(());
        }
        let wake = match (self.next_deadline, until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wait = wake.map_or(Duration::from_millis(100), |w| {
            w.saturating_duration_since(Instant::now())
        });
        if self.wait_readable(wait)? {
            self.drain()?;
        }
        Ok(())
    }

    fn wait_readable(&self, timeout: Duration) -> Result<bool> {
        // Round up so a sub-millisecond wait does not become a busy loop of zero-timeouts.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid, exclusively borrowed pollfd for the whole call and nfds is
        // 1; the fd belongs to `self.sock`, which outlives the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(ClientError::io("waiting for replies", e));
        }
        Ok(r > 0)
    }

    fn drain(&mut self) -> Result<()> {
        let mut buf = std::mem::take(&mut self.recv_buf);
        let result = loop {
            match self.sock.recv_from(&mut buf) {
                Ok((n, src)) => self.on_datagram(&buf[..n], src),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => break Err(ClientError::io("receiving a reply", e)),
            }
        };
        self.recv_buf = buf;
        result
    }

    fn fire_timers(&mut self, now: Instant) -> Result<()> {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let retries = self.cfg.max_retries;
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            if p.attempts > retries {
                let mut p = self.pending.remove(&id).expect("due id is pending");
                self.recycle(std::mem::take(&mut p.datagram));
                if p.on_wire {
                    self.servers[p.server].window.left();
                    self.release(p.server, now);
                }
                self.stats.timeouts += 1;
                let err = ClientError::Timeout {
                    request_id: id,
                    attempts: p.attempts,
                    waited: now - p.first_sent,
                    refused: p.refused.take(),
                };
                self.finish(p.ticket, p.purpose, Err(err));
                continue;
            }
            let (server, on_wire) = (p.server, p.on_wire);
            let gap = self.cut_gap();
            let w = &mut self.servers[server].window;
            if on_wire {
                // No reply in time: lost, or the server is slow. A congestion signal; the
                // request keeps its place on the wire.
                w.congested(now, gap);
            } else if !w.admit() {
                // Its retry after a refusal is due, but the window is full: it waits.
                self.hold(id, now);
                continue;
            }
            self.send_pending(id, now)?;
        }
        self.next_deadline = self.pending.values().map(|p| p.deadline).min();
        Ok(())
    }

    /// Completes a user ticket, or ends a local run with an error.
    fn finish(&mut self, ticket: Ticket, purpose: Purpose, result: Result<Response>) {
        if let Purpose::Local(run) = purpose {
            self.local.abandon(run);
        }
        self.ready.push_back(Completion { ticket, result });
    }

    fn on_datagram(&mut self, datagram: &[u8], src: SocketAddr) {
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed_replies += 1;
                return;
            }
        };
        let id = msg.request_id;
        // The protocol has replies come from the port the request went to; a server whose
        // workers share ports (SO_REUSEPORT) may answer from a sibling port, so only the
        // address is checked.
        match self.pending.get(&id) {
            Some(p) if p.dest.ip() == src.ip() => {}
            _ => {
                self.stats.stray_replies += 1;
                return;
            }
        }
        let mut p = self.pending.remove(&id).expect("checked above");
        let now = Instant::now();
        // Any reply takes the request off the wire; a refusal is a congestion signal, any
        // other reply grows the window.
        if p.on_wire {
            p.on_wire = false;
            let gap = self.cut_gap();
            let w = &mut self.servers[p.server].window;
            w.left();
            if matches!(msg.body, Body::Error(e) if e.code.is_transient()) {
                w.congested(now, gap);
            } else {
                w.acked();
            }
            self.release(p.server, now);
        }
        let result = match msg.body {
            Body::Error(e) if e.code.is_transient() && p.attempts <= self.cfg.max_retries => {
                // Not executed: try again later with the same id.
                self.stats.busy_retries += 1;
                p.refused = Some(match e.detail {
                    "" => e.code.name().to_owned(),
                    d => format!("{}: {d}", e.code.name()),
                });
                // When the server says when to come back, that is when (bounded by the
                // back-off, so a long hint does not outlast the call). Otherwise: it answered
                // at once, so it is reachable and quick: retry well before a retransmission
                // timeout would (a thirty-second of it, doubling per refusal), while the
                // window, cut by the refusal, lowers the load.
                let soon = match e.retry_after_us {
                    Some(us) => {
                        self.stats.retry_after_hints += 1;
                        Duration::from_micros(u64::from(us))
                    }
                    None => (self.cfg.timeout / 32).saturating_mul(1 << (p.attempts - 1).min(5)),
                };
                p.deadline = now + soon.min(self.cfg.backoff(p.attempts - 1));
                self.next_deadline =
                    Some(self.next_deadline.map_or(p.deadline, |d| d.min(p.deadline)));
                self.pending.insert(id, p);
                return;
            }
            Body::Error(e) => Err(ClientError::Server {
                request_id: id,
                code: e.code,
                detail: e.detail.to_owned(),
            }),
            _ if msg.kind() != p.expect => Err(ClientError::UnexpectedReply {
                request_id: id,
                expected: kind_name(p.expect),
                got: msg.kind(),
            }),
            Body::AmReply(r) => {
                if let Some(h) = r.hint {
                    self.stats.hints += 1;
                    let leases = &mut self.servers[p.server].leases;
                    if h.location == Location::Client {
                        let until = now + Duration::from_millis(h.lease_ms as u64);
                        if leases.insert(h.class, until).is_none_or(|end| end <= now) {
                            self.servers[p.server].lease_began.insert(h.class, now);
                        }
                    } else {
                        leases.remove(&h.class);
                    }
                }
                Ok(Response::Am(Reply {
                    status: r.status,
                    executed_at: r.executed_at,
                    steps: r.steps,
                    hint: r.hint,
                    output: r.output.to_vec(),
                    offload: p.offload,
                }))
            }
            Body::OneSidedReply(r) => {
                if let Purpose::Local(run) = p.purpose {
                    self.recycle(std::mem::take(&mut p.datagram));
                    if let Some(step) = self.local.resume(run, r.results()) {
                        self.after_local_step(step);
                    }
                    return;
                }
                Ok(Response::OneSided(
                    r.results()
                        .iter()
                        .map(|o| OpOutcome {
                            kind: o.kind,
                            error: o.error,
                            previous: o.previous,
                            data: o.data.to_vec(),
                        })
                        .collect(),
                ))
            }
            Body::RegisterReply(r) => Ok(Response::Registered(r.id)),
            Body::Ack => Ok(Response::Ack),
            Body::ListReply(page) => Ok(Response::List(Page {
                entries: page.entries.iter().map(|e| OffloadInfo::from(&e)).collect(),
                next: page.more.then_some(page.next),
            })),
            Body::StatsReply(page) => Ok(Response::Stats(Page {
                entries: page.entries.iter().map(|e| kv_owned(&e)).collect(),
                next: page.more.then_some(page.next),
            })),
            Body::DescribeReply(page) => Ok(Response::Describe(Page {
                entries: page.entries.iter().map(|e| kv_owned(&e)).collect(),
                next: page.more.then_some(page.next),
            })),
            Body::FetchReply(f) => Ok(Response::Fetched(ProgramPiece {
                total: f.total,
                start: f.start,
                digest: f.digest,
                bytes: f.bytes.to_vec(),
            })),
            _ => Err(ClientError::UnexpectedReply {
                request_id: id,
                expected: kind_name(p.expect),
                got: msg.kind(),
            }),
        };
        self.recycle(std::mem::take(&mut p.datagram));
        self.finish(p.ticket, p.purpose, result);
    }

    /// Acts on what a local run asked for after a step.
    fn after_local_step(&mut self, step: RunStep) {
        match step {
            RunStep::Finished { ticket, result } => {
                self.ready.push_back(Completion { ticket, result })
            }
            RunStep::Ops {
                run,
                ticket,
                server,
            } => {
                self.stats.local_steps += 1;
                // Taken first: encoding below borrows the run's data area, not `self`.
                let (id, window) = self.new_request_id();
                let sent = {
                    let regions = &self.servers[server].regions;
                    self.local.ops_request(run, regions)
                };
                let dest = self.servers[server].addr.class_addr(0);
                let res = sent.and_then(|(ops, n)| {
                    let repr =
                        OneSidedRepr::new(&ops[..n]).map_err(|_| ClientError::BadOpCount { n })?;
                    let buf = self.free.pop().unwrap_or_default();
                    Ok((
                        id,
                        Self::encode(buf, (id, window), 0, Body::OneSided(repr))?,
                    ))
                });
                match res {
                    Ok((id, datagram)) => {
                        let now = Instant::now();
                        let p = Pending::new(
                            ticket,
                            server,
                            dest,
                            datagram,
                            Purpose::Local(run),
                            0,
                            Kind::OneSidedReply,
                            now,
                        );
                        if let Err(e) = self.enqueue(id, p, now) {
                            self.local.abandon(run);
                            self.ready.push_back(Completion {
                                ticket,
                                result: Err(e),
                            });
                        }
                    }
                    Err(e) => {
                        self.local.abandon(run);
                        self.ready.push_back(Completion {
                            ticket,
                            result: Err(e),
                        });
                    }
                }
            }
        }
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::AmReply => "am reply",
        Kind::OneSidedReply => "one-sided reply",
        Kind::RegisterReply => "register reply",
        Kind::ListReply => "list reply",
        Kind::StatsReply => "stats reply",
        Kind::DescribeReply => "describe reply",
        _ => "ack",
    }
}

fn unexpected(request_id: u64, expected: &'static str, got: &Response) -> ClientError {
    let _ = got.name();
    ClientError::UnexpectedReply {
        request_id,
        expected,
        got: match got {
            Response::Am(_) => Kind::AmReply,
            Response::OneSided(_) => Kind::OneSidedReply,
            Response::Registered(_) => Kind::RegisterReply,
            Response::Ack => Kind::Ack,
            Response::List(_) => Kind::ListReply,
            Response::Stats(_) => Kind::StatsReply,
            Response::Describe(_) => Kind::DescribeReply,
            Response::Fetched(_) => Kind::FetchReply,
        },
    }
}
