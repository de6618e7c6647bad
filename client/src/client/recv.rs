//! Receiving: timers, and matching each reply to its request.

use super::endpoint::{Endpoint, Pending, Purpose};
use crate::error::{ClientError, Result};
use crate::local::RunStep;
use crate::reply::{
    kv_owned, Completion, OffloadInfo, OpOutcome, Page, ProgramPiece, Reply, Response, Ticket,
};
use naam_core::auth::Refusal;
use naam_core::wire::{Body, ErrorCode, Kind, Location, Message, OneSidedRepr};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl Endpoint {
    /// Fires the timers due at `now`: retransmits what got no reply in time, retries what
    /// was refused, and fails what ran out of retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&std::cmp::Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let retries = self.cfg.max_retries;
            // A finished request, or one whose deadline moved: a stale timer.
            let Some(p) = self.pending.get(&id).filter(|p| p.deadline == at) else {
                continue;
            };
            if p.attempts > retries || self.past_retry_span(p, now) {
                self.give_up(id, now);
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
            self.send_pending(id, now);
        }
        self.drop_stale_timers();
        self.next_deadline = self.timers.peek().map(|t| t.0 .0);
    }

    /// Whether sending request `p` again now would put another copy of its id on the wire
    /// later than [`ClientConfig::max_retry_span`] after the first: past the servers'
    /// retention of a reply, where a retransmission of a mutation whose reply was lost could
    /// run it again. (A request renumbered since has no copy under its new id yet.)
    ///
    /// [`ClientConfig::max_retry_span`]: crate::ClientConfig::max_retry_span
    pub(super) fn past_retry_span(&self, p: &Pending, now: Instant) -> bool {
        p.copies > 0 && now.saturating_duration_since(p.id_first_sent) >= self.cfg.max_retry_span
    }

    /// Ends request `id` with a timeout: no reply came, its outcome is unknown.
    pub(super) fn give_up(&mut self, id: u64, now: Instant) {
        let Some(mut p) = self.pending.remove(&id) else {
            return;
        };
        self.recycle(std::mem::take(&mut p.datagram));
        if p.on_wire {
            self.servers[p.server].window.left();
            self.release(p.server, now);
        }
        self.stats.timeouts += 1;
        let err = ClientError::Timeout {
            request_id: id,
            to: p.dest,
            awaited: p.expect,
            attempts: p.attempts,
            waited: now - p.first_sent,
            refused: p.refused.take(),
            unmatched: self.servers[p.server].unmatched - p.unmatched_before,
        };
        self.finish(p.ticket, p.purpose, Err(err));
    }

    /// A datagram from `src` that answered nothing open, counted for the server at that
    /// address (a timeout then says that it did answer).
    fn count_unmatched(&mut self, src: SocketAddr) {
        let from = |a: &SocketAddr| a.ip() == src.ip();
        if let Some(s) = self
            .servers
            .iter_mut()
            .find(|s| from(&s.addr.data) || from(&s.addr.control))
        {
            s.unmatched += 1;
        }
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

    /// A datagram from `src`, received at `now`: the reply it is matched to (by request id
    /// and source address) finishes, is retried later, or feeds a local run; anything else
    /// is counted and dropped.
    pub fn handle(&mut self, now: Instant, src: SocketAddr, datagram: &[u8]) {
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed_replies += 1;
                self.count_unmatched(src);
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
                self.count_unmatched(src);
                return;
            }
        }
        let mut p = self.pending.remove(&id).expect("checked above");
        // Any reply takes the request off the wire; a refusal is a congestion signal, any
        // other reply grows the window.
        if p.on_wire {
            p.on_wire = false;
            // Karn: only a reply to the one copy under its id times a round trip.
            if p.copies == 1 {
                self.servers[p.server].rtt.sample(now - p.sent_at);
            }
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
                    // The host agent is away (restarting, or gone for good): that lasts about
                    // a second, not a queue's moment; retried on the retransmission schedule
                    // (~1.5 s in all at the defaults), so a client rides out a restart. Quick
                    // retries gave up after 50 ms.
                    None if e.code == ErrorCode::HostUnavailable => {
                        self.cfg.backoff(p.attempts - 1)
                    }
                    None => (self.cfg.timeout / 32).saturating_mul(1 << (p.attempts - 1).min(5)),
                };
                p.deadline = now + soon.min(self.cfg.backoff(p.attempts - 1));
                let at = p.deadline;
                let id = self.renumber(id, &mut p);
                self.pending.insert(id, p);
                self.schedule(id, at);
                return;
            }
            Body::Error(e)
                if e.code == ErrorCode::Unauthorized
                    && e.detail == Refusal::BeforeStart.detail()
                    && p.reseals < super::endpoint::MAX_RESEALS
                    && self.reseal_query(&mut p) =>
            {
                // A restarted server refuses what was sealed before it started; a query
                // changes nothing, so it is sealed again and sent at once: also when the
                // restarted server first saw its last retransmission (probe 12: `naam stats`
                // across a restart failed then, "unauthorized").
                return self.enqueue(id, p, now);
            }
            Body::Error(e) => Err(ClientError::Server {
                request_id: id,
                code: e.code,
                detail: e.detail.to_owned(),
            }),
            _ if msg.kind() != p.expect => Err(ClientError::UnexpectedReply {
                request_id: id,
                expected: p.expect.name(),
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
                        self.after_local_step(now, step);
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
                expected: p.expect.name(),
                got: msg.kind(),
            }),
        };
        self.recycle(std::mem::take(&mut p.datagram));
        self.finish(p.ticket, p.purpose, result);
    }

    /// Acts on what a local run asked for after a step.
    pub(super) fn after_local_step(&mut self, now: Instant, step: RunStep) {
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
                let dest = self.servers[server].addr.data;
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
                        self.enqueue(id, p, now);
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
