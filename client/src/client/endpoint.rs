//! The client's protocol, with no socket and no clock (as quinn's `Endpoint`): requests go in
//! (`submit_*`, with the time), datagrams to send come out ([`Endpoint::poll_transmit`]),
//! datagrams received and the passing of time go in ([`Endpoint::handle`],
//! [`Endpoint::handle_timeout`] when [`Endpoint::poll_timeout`] says), and finished requests
//! come out ([`Endpoint::poll`]). Retransmission, retries after refusals, the congestion
//! windows, de-duplication ids, placement leases and local runs all live here, so whole
//! exchanges are tested with simulated time and no network; [`super::Client`] is the thin loop
//! that gives it a UDP socket and the system clock.

use crate::config::{ClientConfig, ExecMode};
use crate::error::{ClientError, Result};
use crate::local::LocalExec;
use crate::reply::{Completion, Response, Ticket};
use crate::window::Window;
use naam_core::region::{Perms, RegionDesc, RegionId, RegionTable};
use naam_core::wire::{AmFlags, AmRequestRepr, Body, Kind, OneSidedRepr, RemoteOp};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
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

    /// The address messages of steering class `class` go to; `None` past port 65535.
    pub fn class_addr(&self, class: u16) -> Option<SocketAddr> {
        let mut a = self.data;
        a.set_port(self.data.port().checked_add(class)?);
        Some(a)
    }

    /// Why these addresses cannot be a server's, if they cannot: port 0 is nobody's (the
    /// data port 1 without `control` would make it the control port).
    pub fn check(&self) -> Result<()> {
        for (what, a) in [("data", self.data), ("control", self.control)] {
            if a.port() == 0 || a.ip().is_unspecified() {
                // The control port nobody named is the data port's neighbour: say so, or the
                // operator reads of an address they never gave (probe 20).
                let derived = if what == "control" && self.control.port() == 0 {
                    format!(
                        " (the data port {} minus one: give the control port itself)",
                        self.data.port()
                    )
                } else {
                    String::new()
                };
                return Err(ClientError::BadAddress {
                    addr: a,
                    reason: format!("no server's {what} port can be there{derived}"),
                });
            }
        }
        Ok(())
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
    /// Of those, data requests retried under a new id (so the refused one stops holding the
    /// server's de-duplication window open).
    pub renumbered: u64,
    /// Of those, retries scheduled by the server's retry-after hint.
    pub retry_after_hints: u64,
    /// Queries (LIST, STATS, FETCH, DESCRIBE of an application) sealed again with a fresh
    /// nonce after a restarted server refused them as sealed before it started.
    pub resealed: u64,
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

pub(super) struct Pending {
    pub(super) ticket: Ticket,
    pub(super) server: ServerId,
    pub(super) dest: SocketAddr,
    pub(super) datagram: Vec<u8>,
    /// Sends so far.
    pub(super) attempts: u32,
    /// Sends under its current request id (it may be given a new one: `Endpoint::renumber`).
    pub(super) copies: u32,
    pub(super) first_sent: Instant,
    /// When it last went on the wire (for a round-trip sample when it was sent once).
    pub(super) sent_at: Instant,
    /// When the first copy under its current id went on the wire.
    pub(super) id_first_sent: Instant,
    pub(super) deadline: Instant,
    /// The last transient refusal (`busy`, `host_unavailable`) the server answered, named
    /// when the retries run out in silence.
    pub(super) refused: Option<String>,
    pub(super) purpose: Purpose,
    /// The offload of an AM request (for replies and abort errors).
    pub(super) offload: u32,
    pub(super) expect: Kind,
    /// Counted in its server's window (sent and not answered); else waiting for room there
    /// or for the retry after a refusal.
    pub(super) on_wire: bool,
    /// Its server's [`ServerState::unmatched`] when it was submitted.
    pub(super) unmatched_before: u64,
    /// Times a query was sealed again after a restarted server refused it
    /// ([`MAX_RESEALS`]).
    pub(super) reseals: u32,
}

/// The most times one query is sealed again for a server that started after it was sealed:
/// a restart (or two) during a request, not a server whose clock keeps refusing.
pub(super) const MAX_RESEALS: u32 = 3;

impl Pending {
    /// A request not sent yet, made at `now`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
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
            copies: 0,
            first_sent: now,
            sent_at: now,
            id_first_sent: now,
            deadline: now,
            refused: None,
            purpose,
            offload,
            expect,
            on_wire: false,
            unmatched_before: 0,
            reseals: 0,
        }
    }
}

/// The deadline of a request that waits for room in its server's window (it has no timer).
pub(super) const NO_TIMER: Duration = Duration::from_secs(3600);

pub(super) struct ServerState {
    pub(super) addr: ServerAddr,
    /// Regions whose keys this client knows (from `describe` or `set_region_key`), for
    /// one-sided ops and local execution. Lengths are unknown here: the server checks bounds.
    pub(super) regions: RegionTable,
    /// Steering class -> end of a `location = client` lease.
    pub(super) leases: HashMap<u16, Instant>,
    /// How many requests may be on the wire to this server (congestion control).
    pub(super) window: Window,
    /// The round trip to it, for the retransmission timeout.
    pub(super) rtt: crate::rtt::Rtt,
    /// Steering class -> when its current lease began (a lease extended before it ended
    /// keeps its start): fetched programs of the class are checked again after it.
    pub(super) lease_began: HashMap<u16, Instant>,
    /// Datagrams from its address that answered nothing open here (malformed, or for no
    /// request still waiting), so that a timeout can say the server did answer.
    pub(super) unmatched: u64,
}

/// A program this client fetched from a server (FETCH) to run it itself.
pub(super) struct Fetched {
    /// Of the instructions it runs ([`naam_core::wire::program_digest`]).
    pub(super) digest: u64,
    /// When the server last confirmed the digest.
    pub(super) checked: Instant,
}

/// How long a program the client could not fetch (forbidden, does not verify here, not
/// read-only) is not asked for again.
pub(super) const FETCH_RETRY: Duration = Duration::from_secs(1);

/// How a message will run.
pub(super) enum Place {
    Server { exec_hint: bool },
    Local,
}

/// A datagram the endpoint wants sent: request `request_id`'s bytes to `dest`.
#[derive(Debug)]
pub struct Transmit<'a> {
    pub request_id: u64,
    pub dest: SocketAddr,
    pub datagram: &'a [u8],
}

/// The protocol state of one client: its servers, its requests in flight and their timers.
pub struct Endpoint {
    pub(super) servers: Vec<ServerState>,
    pub(super) cfg: ClientConfig,
    pub(super) next_id: u64,
    /// Request ids in the order they were given out, from the oldest that may still be open:
    /// the front is the oldest open request (ids that finished are dropped from the front).
    pub(super) issued: VecDeque<u64>,
    pub(super) next_ticket: u64,
    pub(super) pending: HashMap<u64, Pending>,
    /// Retransmission and retry timers: (deadline, request id), earliest first. An entry is
    /// stale when its request finished or got another deadline since; stale entries are
    /// dropped when they reach the top, so firing timers never scans the pending requests.
    pub(super) timers: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
    /// No pending deadline is earlier than this.
    pub(super) next_deadline: Option<Instant>,
    /// Requests whose datagram is due on the wire, in order ([`Endpoint::poll_transmit`]).
    pub(super) transmits: VecDeque<u64>,
    pub(super) ready: VecDeque<Completion>,
    /// Datagram buffers of finished requests, reused by new ones.
    pub(super) free: Vec<Vec<u8>>,
    pub(super) local: LocalExec,
    /// Programs fetched from servers, by (server, offload), and those that could not be
    /// (until when not to try again).
    pub(super) fetched: HashMap<(ServerId, u32), Fetched>,
    pub(super) unfetchable: HashMap<(ServerId, u32), Instant>,
    /// The data-path capability for (tenant, key id), made once (an HMAC) and reused.
    pub(super) capability: Option<(u32, u32, u64)>,
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

impl Endpoint {
    /// An endpoint for `servers`.
    pub fn new(servers: &[ServerAddr], cfg: ClientConfig) -> Result<Self> {
        for s in servers {
            s.check()?;
        }
        let local = LocalExec::new(cfg.engine, cfg.max_steps)?;
        Ok(Self {
            servers: servers
                .iter()
                .map(|&addr| ServerState {
                    addr,
                    regions: RegionTable::new(),
                    leases: HashMap::new(),
                    lease_began: HashMap::new(),
                    window: Window::new(cfg.max_window),
                    rtt: crate::rtt::Rtt::default(),
                    unmatched: 0,
                })
                .collect(),
            cfg,
            next_id: random_start(),
            issued: VecDeque::new(),
            next_ticket: 1,
            pending: HashMap::new(),
            timers: std::collections::BinaryHeap::new(),
            next_deadline: None,
            transmits: VecDeque::new(),
            ready: VecDeque::new(),
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

    /// Requests submitted and not yet polled (server requests and local runs).
    pub fn outstanding(&self) -> usize {
        self.pending
            .values()
            .filter(|p| matches!(p.purpose, Purpose::User))
            .count()
            + self.local.running()
            + self.ready.len()
    }

    pub(super) fn server(&self, server: ServerId) -> Result<&ServerState> {
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
            .map_err(|_| ClientError::Argument {
                app: "regions",
                reason: format!("region id {region} is too large"),
            })
    }

    pub fn region_key(&self, server: ServerId, region: RegionId) -> Option<u64> {
        self.servers.get(server)?.regions.get(region).map(|d| d.key)
    }

    /// Where a call of `offload` (class `class`) on `server` runs at `now`.
    pub(super) fn place(
        &self,
        now: Instant,
        server: ServerId,
        offload: u32,
        class: u16,
        mode: ExecMode,
    ) -> Result<Place> {
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
                (Some(o), true) if o.class != class => Err(ClientError::WrongClass {
                    offload,
                    class,
                    belongs: o.class,
                }),
                (Some(_), true) => Ok(Place::Local),
            },
            ExecMode::Auto => {
                // (On another class the server answers the call: it refuses it.)
                let capable = keys && local.is_some_and(|o| o.read_only && o.class == class);
                let leased = s.leases.get(&class).is_some_and(|&until| now < until);
                Ok(if capable && leased {
                    Place::Local
                } else {
                    Place::Server { exec_hint: capable }
                })
            }
        }
    }

    pub(super) fn ticket(&mut self) -> Ticket {
        let t = Ticket(self.next_ticket);
        self.next_ticket += 1;
        t
    }

    /// An active message for `offload` (class `class`) to `server`, or run here (`mode`),
    /// submitted at `now`. A program this client would run itself must already be loaded
    /// ([`super::Client`] fetches it first).
    pub fn submit_call_on(
        &mut self,
        now: Instant,
        server: ServerId,
        offload: u32,
        class: u16,
        args: &[u8],
        mode: ExecMode,
    ) -> Result<Ticket> {
        match self.place(now, server, offload, class, mode)? {
            Place::Local => {
                let ticket = self.ticket();
                self.stats.local_runs += 1;
                let tenant = self.cfg.tenant;
                let step = self.local.start(ticket, server, offload, tenant, args);
                self.after_local_step(now, step);
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
                let addr = self.server(server)?.addr;
                let dest = addr.class_addr(class).ok_or(ClientError::BadAddress {
                    addr: addr.data,
                    reason: format!("class {class} is past port 65535"),
                })?;
                self.send_new(
                    now,
                    ticket,
                    server,
                    dest,
                    class,
                    body,
                    Purpose::User,
                    offload,
                )?;
                Ok(ticket)
            }
        }
    }

    /// 1 to 4 one-sided ops to `server` in one request, submitted at `now`.
    pub fn submit_ops(
        &mut self,
        now: Instant,
        server: ServerId,
        ops: &[RemoteOp<'_>],
    ) -> Result<Ticket> {
        let repr = OneSidedRepr::new(ops).map_err(|_| ClientError::BadOpCount { n: ops.len() })?;
        let ticket = self.ticket();
        // One-sided ops use the class reserved for them: 0.
        let dest = self.server(server)?.addr.data;
        self.send_new(
            now,
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

    /// A control request (register, list, describe, ...) to `server`'s control port,
    /// submitted at `now` (sealed with the client's credential, if it has one).
    pub fn submit_control(
        &mut self,
        now: Instant,
        server: ServerId,
        body: Body<'_>,
    ) -> Result<Ticket> {
        let ticket = self.ticket();
        let dest = self.server(server)?.addr.control;
        self.send_new(now, ticket, server, dest, 0, body, Purpose::User, 0)?;
        Ok(ticket)
    }

    /// The next finished request, if any.
    pub fn poll(&mut self) -> Option<Completion> {
        self.ready.pop_front()
    }

    /// The result of `ticket` if it finished (other finished requests stay queued for
    /// [`Endpoint::poll`]).
    pub fn take(&mut self, ticket: Ticket) -> Option<Result<Response>> {
        let i = self.ready.iter().position(|c| c.ticket == ticket)?;
        self.ready.remove(i).map(|c| c.result)
    }

    /// Whether `ticket` is still being worked on (sent, waiting, or running here).
    pub fn in_progress(&self, ticket: Ticket) -> bool {
        self.pending.values().any(|p| p.ticket == ticket) || self.local.has_ticket(ticket)
    }

    /// Whether anything is in progress or finished and not yet polled.
    pub fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.pending.is_empty() && self.local.running() == 0
    }

    /// When [`Endpoint::handle_timeout`] is next due, if anything waits for a timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline
    }

    /// The next datagram to send, if any. Sending it is the caller's job; a datagram that
    /// never arrives is retransmitted when its timer fires.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        while let Some(id) = self.transmits.pop_front() {
            if self.pending.get(&id).is_some_and(|p| p.on_wire) {
                let p = &self.pending[&id];
                return Some(Transmit {
                    request_id: id,
                    dest: p.dest,
                    datagram: &p.datagram,
                });
            }
        }
        None
    }

    /// Request `request_id` could not be sent (an error other than a full buffer or an
    /// earlier ICMP error, which count as losses): it finishes with `error` at `now`. Returns
    /// its ticket.
    pub fn transmit_failed(
        &mut self,
        now: Instant,
        request_id: u64,
        error: ClientError,
    ) -> Option<Ticket> {
        let mut p = self.pending.remove(&request_id)?;
        self.recycle(std::mem::take(&mut p.datagram));
        if p.on_wire {
            self.servers[p.server].window.left();
            self.release(p.server, now);
        }
        self.finish(p.ticket, p.purpose, Err(error));
        Some(p.ticket)
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

    /// Whether a `location = client` lease for `class` on `server` runs at `now`.
    pub fn lease_active(&self, now: Instant, server: ServerId, class: u16) -> bool {
        self.servers
            .get(server)
            .and_then(|s| s.leases.get(&class))
            .is_some_and(|&until| now < until)
    }
}
