//! The client: the protocol ([`Endpoint`], no socket, no clock) and the thin loop around it
//! ([`Client`]: one UDP socket, the system clock, blocking calls).
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
//! machine in `local.rs`, driven from the same receive path: a one-sided reply that
//! belongs to a local run feeds the run's next step instead of completing a ticket.
//!
//! `endpoint.rs` holds the protocol's state and its request API, `send.rs` encoding, windows
//! and retransmission, `recv.rs` timers and reply matching; this file the socket loop and the
//! blocking calls, `control.rs` the control requests, `placement.rs` loading and fetching
//! programs to run here.

mod control;
pub mod endpoint;
mod placement;
mod recv;
mod send;
pub(crate) use send::is_command;

use control::unexpected;
pub use endpoint::{ClientStats, Endpoint, ServerAddr, ServerId, Transmit};

use crate::config::{ClientConfig, ExecMode};
use crate::error::{ClientError, Result};
use crate::reply::{Completion, OpOutcome, Reply, Response, Ticket};
use naam_core::region::RegionId;
use naam_core::wire::{OpBody, RemoteOp, MAX_DATAGRAM};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

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
    ep: Endpoint,
    sock: UdpSocket,
    recv_buf: Box<[u8]>,
}

/// The receive buffer a client asks for its socket (bytes).
const RECV_BUFFER: usize = 2 << 20;

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
        // Replies to thousands of outstanding requests arrive in bursts: the default receive
        // buffer (~270 datagrams) dropped them, and each drop cost a retransmission timeout.
        // Capped by the kernel at net.core.rmem_max.
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(RECV_BUFFER);
        Ok(Self {
            ep: Endpoint::new(servers, cfg)?,
            sock,
            recv_buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
        })
    }

    /// The protocol state (counters, windows, what runs here).
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// The protocol state, to change it: load programs to run here
    /// ([`Endpoint::load_local`]), set region keys.
    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.ep
    }

    pub fn stats(&self) -> &ClientStats {
        &self.ep.stats
    }

    pub fn config(&self) -> &ClientConfig {
        self.ep.config()
    }

    pub fn config_mut(&mut self) -> &mut ClientConfig {
        self.ep.config_mut()
    }

    pub fn servers(&self) -> usize {
        self.ep.servers()
    }

    pub fn server_addr(&self, server: ServerId) -> Option<ServerAddr> {
        self.ep.server_addr(server)
    }

    /// The local address of the socket (what servers see as this client).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.sock
            .local_addr()
            .map_err(|e| ClientError::io("reading the socket address", e))
    }

    /// Requests submitted and not yet polled (server requests and local runs).
    pub fn outstanding(&self) -> usize {
        self.ep.outstanding()
    }

    /// Remembers the key of `region` on `server` (for one-sided ops and local execution).
    pub fn set_region_key(&mut self, server: ServerId, region: RegionId, key: u64) -> Result<()> {
        self.ep.set_region_key(server, region, key)
    }

    pub fn region_key(&self, server: ServerId, region: RegionId) -> Option<u64> {
        self.ep.region_key(server, region)
    }

    /// `server`'s congestion window: its size, requests on the wire, requests waiting for
    /// room, and how many times it was halved.
    pub fn window(&self, server: ServerId) -> Option<(usize, usize, usize, u64)> {
        self.ep.window(server)
    }

    /// Whether offload `id` can run here.
    pub fn has_local(&self, id: u32) -> bool {
        self.ep.has_local(id)
    }

    /// Whether a `location = client` lease for `class` on `server` is running.
    pub fn lease_active(&self, server: ServerId, class: u16) -> bool {
        self.ep.lease_active(Instant::now(), server, class)
    }

    /// Sends an active message for `offload` (class `class`) to server 0 in the client's
    /// execution mode; the reply comes from [`Self::poll`].
    pub fn submit_call(&mut self, offload: u32, class: u16, args: &[u8]) -> Result<Ticket> {
        let mode = self.ep.config().exec_mode;
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
        let t = self
            .ep
            .submit_call_on(Instant::now(), server, offload, class, args, mode)?;
        self.sent(t)
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
        let t = self.ep.submit_ops(Instant::now(), server, ops)?;
        self.sent(t)
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
        let key = self.ep.region_key(server, region).unwrap_or(0);
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

    /// The next finished request, waiting up to `timeout` (`None`: until one finishes). Returns
    /// `Ok(None)` when the time is up, or at once when nothing is outstanding.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<Option<Completion>> {
        let until = timeout.map(|t| Instant::now() + t);
        // Even a zero timeout looks at the socket once, so a caller that polls without
        // waiting (an open-loop sender behind schedule) still receives its replies.
        let mut looked = false;
        loop {
            if let Some(c) = self.ep.poll() {
                return Ok(Some(c));
            }
            if self.ep.is_idle() {
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
            if let Some(result) = self.ep.take(ticket) {
                return result;
            }
            if !self.ep.in_progress(ticket) {
                return Err(ClientError::Argument {
                    app: "client",
                    reason: format!("ticket {} is not outstanding", ticket.0),
                });
            }
            self.pump(None)?;
        }
    }

    /// One round: fires due timers, sends what is due, waits for the socket (up to the next
    /// timer or `until`), and handles every datagram that is there.
    fn pump(&mut self, until: Option<Instant>) -> Result<()> {
        let now = Instant::now();
        if self.ep.poll_timeout().is_some_and(|d| now >= d) {
            self.ep.handle_timeout(now);
        }
        self.flush(None);
        if !self.ep.ready.is_empty() {
            return Ok(());
        }
        let wake = match (self.ep.poll_timeout(), until) {
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
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        // Round up so a sub-millisecond wait does not become a busy loop of zero-timeouts.
        let ms = timeout.as_micros().div_ceil(1000).min(i64::MAX as u128) as i64;
        let t = Timespec {
            tv_sec: ms / 1000,
            tv_nsec: (ms % 1000) * 1_000_000,
        };
        let mut pfd = [PollFd::new(&self.sock, PollFlags::IN)];
        match poll(&mut pfd, Some(&t)) {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(ClientError::io("waiting for replies", e.into())),
        }
    }

    /// Hands every datagram waiting at the socket to the endpoint, then sends what that made
    /// due.
    fn drain(&mut self) -> Result<()> {
        let result = loop {
            match self.sock.recv_from(&mut self.recv_buf) {
                Ok((n, src)) => self.ep.handle(Instant::now(), src, &self.recv_buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => break Err(ClientError::io("receiving a reply", e)),
            }
        };
        self.flush(None);
        result
    }

    /// Sends every datagram the endpoint has due. A full socket buffer or an ICMP error from
    /// an earlier datagram is a loss (the retransmission timer recovers it); another error
    /// finishes that request with it. Returns whether that happened to `watch`'s request.
    fn flush(&mut self, watch: Option<Ticket>) -> bool {
        let mut watched_failed = false;
        while let Some(t) = self.ep.poll_transmit() {
            let (id, sent) = (t.request_id, self.sock.send_to(t.datagram, t.dest));
            match sent {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    let err = ClientError::io("sending a datagram", e);
                    let failed = self.ep.transmit_failed(Instant::now(), id, err);
                    watched_failed |= failed.is_some() && failed == watch;
                }
            }
        }
        watched_failed
    }

    /// After a submission: sends it; a request whose first send fails is an error at once.
    fn sent(&mut self, ticket: Ticket) -> Result<Ticket> {
        if self.flush(Some(ticket)) {
            if let Some(Err(e)) = self.ep.take(ticket) {
                return Err(e);
            }
        }
        Ok(ticket)
    }
}
