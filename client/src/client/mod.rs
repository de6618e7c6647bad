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
//!
//! This file holds the endpoint's state and the request API (active messages, one-sided
//! ops); [`placement`] decides where a call runs and loads or fetches programs run here,
//! [`control`] the control requests, [`send`] encoding, windows and retransmission, [`recv`]
//! the poll loop and reply matching.

mod control;
mod placement;
mod recv;
mod send;

use control::unexpected;

use crate::config::{ClientConfig, ExecMode};
use crate::error::{ClientError, Result};
use crate::local::LocalExec;
use crate::reply::{Completion, OpOutcome, Reply, Response, Ticket};
use crate::window::Window;
use naam_core::region::{Perms, RegionDesc, RegionId, RegionTable};
use naam_core::wire::{
    AmFlags, AmRequestRepr, Body, Kind, OneSidedRepr, OpBody, RemoteOp, MAX_DATAGRAM,
};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
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
    /// Retransmission and retry timers: (deadline, request id), earliest first. An entry is
    /// stale when its request finished or got another deadline since; stale entries are
    /// dropped when they reach the top, so firing timers never scans the pending requests.
    timers: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
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
            timers: std::collections::BinaryHeap::new(),
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
}
