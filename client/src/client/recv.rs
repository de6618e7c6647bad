//! Receiving: the poll loop, timers, and matching each reply to its request.

use super::*;
use crate::error::{ClientError, Result};
use crate::local::RunStep;
use crate::reply::{
    kv_owned, Completion, OffloadInfo, OpOutcome, Page, ProgramPiece, Reply, Response, Ticket,
};
use naam_core::wire::{Body, Kind, Location, Message, OneSidedRepr};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl Client {
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
    pub(super) fn pump(&mut self, until: Option<Instant>) -> Result<()> {
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

    pub(super) fn wait_readable(&self, timeout: Duration) -> Result<bool> {
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

    pub(super) fn drain(&mut self) -> Result<()> {
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

    pub(super) fn fire_timers(&mut self, now: Instant) -> Result<()> {
        while let Some(&std::cmp::Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let retries = self.cfg.max_retries;
            // A finished request, or one whose deadline moved: a stale timer.
            let Some(p) = self.pending.get_mut(&id).filter(|p| p.deadline == at) else {
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
        self.drop_stale_timers();
        self.next_deadline = self.timers.peek().map(|t| t.0 .0);
        Ok(())
    }

    /// Pops timers of requests that finished or were rescheduled, so that the top is live.
    fn drop_stale_timers(&mut self) {
        while let Some(&std::cmp::Reverse((at, id))) = self.timers.peek() {
            if self.pending.get(&id).is_some_and(|p| p.deadline == at) {
                break;
            }
            self.timers.pop();
        }
    }

    /// Completes a user ticket, or ends a local run with an error.
    pub(super) fn finish(&mut self, ticket: Ticket, purpose: Purpose, result: Result<Response>) {
        if let Purpose::Local(run) = purpose {
            self.local.abandon(run);
        }
        self.ready.push_back(Completion { ticket, result });
    }

    pub(super) fn on_datagram(&mut self, datagram: &[u8], src: SocketAddr) {
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
                let at = p.deadline;
                self.pending.insert(id, p);
                self.schedule(id, at);
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
    pub(super) fn after_local_step(&mut self, step: RunStep) {
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

pub(super) fn kind_name(k: Kind) -> &'static str {
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
