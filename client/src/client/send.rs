//! Sending: request ids, encoding into a kept datagram buffer, the per-server window and
//! retransmission timers. Nothing is sent here: a request due on the wire is queued for
//! [`Endpoint::poll_transmit`].

use super::endpoint::{Endpoint, Pending, Purpose, ServerId, NO_TIMER};
use crate::error::Result;
use crate::reply::Ticket;
use naam_core::wire::{Body, Flags, HeaderPacket, Kind, Message};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl Endpoint {
    /// A new request id, and the window its request carries: how many of this client's
    /// requests are open, counting the new one, so the server may forget every older one it
    /// remembers for de-duplication (docs/protocol.md). 0 ("not said") if that does not fit.
    pub(super) fn new_request_id(&mut self) -> (u64, u32) {
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
    pub(super) fn encode(
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

    pub(super) fn recycle(&mut self, buf: Vec<u8>) {
        // Enough for a deep pipeline; beyond that, let buffers go.
        if self.free.len() < 4096 && buf.capacity() > 0 {
            self.free.push(buf);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_new(
        &mut self,
        now: Instant,
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
        let p = Pending::new(
            ticket, server, dest, datagram, purpose, offload, expect, now,
        );
        self.enqueue(id, p, now);
        Ok(id)
    }

    /// A new request: on the wire now if its server's window has room, else held until it
    /// has.
    pub(super) fn enqueue(&mut self, id: u64, mut p: Pending, now: Instant) {
        let server = p.server;
        if p.attempts == 0 {
            p.unmatched_before = self.servers[server].unmatched;
        }
        self.pending.insert(id, p);
        if self.servers[server].window.admit() {
            self.send_pending(id, now);
        } else {
            self.hold(id, now);
        }
    }

    /// Sets a timer: request `id` is due at `at` (its `deadline`, set by the caller).
    pub(super) fn schedule(&mut self, id: u64, at: Instant) {
        self.timers.push(std::cmp::Reverse((at, id)));
        self.next_deadline = Some(self.next_deadline.map_or(at, |d| d.min(at)));
    }

    /// Request `id` waits for room in its server's window (no timer meanwhile).
    pub(super) fn hold(&mut self, id: u64, now: Instant) {
        if let Some(p) = self.pending.get_mut(&id) {
            p.on_wire = false;
            p.deadline = now + NO_TIMER;
            self.servers[p.server].window.hold(id);
        }
    }

    /// Puts request `id` (admitted to its window by the caller) on the wire: queues its
    /// datagram, a retransmission after the first send (same id, same bytes, RETRANSMIT set
    /// in header bytes 4..6), and sets its timer.
    pub(super) fn send_pending(&mut self, id: u64, now: Instant) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        // A retransmission is another copy under the same id (a renumbered retry is not).
        let mut h = HeaderPacket::new_unchecked(&mut p.datagram[..]);
        let others = h.flags() & !Flags::RETRANSMIT.bits();
        if p.copies > 0 {
            h.set_flags(others | Flags::RETRANSMIT.bits());
            self.stats.retransmits += 1;
        } else {
            h.set_flags(others);
            self.stats.requests += 1;
        }
        let rto = self.servers[p.server]
            .rtt
            .rto(self.cfg.timeout, self.cfg.max_backoff);
        p.deadline = now + self.cfg.backoff_from(rto, p.attempts);
        p.sent_at = now;
        if p.copies == 0 {
            p.id_first_sent = now;
        }
        p.attempts += 1;
        p.copies += 1;
        p.on_wire = true;
        let deadline = p.deadline;
        self.schedule(id, deadline);
        self.transmits.push_back(id);
    }

    /// Sends the held requests of `server` its window has room for now.
    pub(super) fn release(&mut self, server: ServerId, now: Instant) {
        while let Some(id) = self.servers[server].window.release() {
            let Some(mut p) = self.pending.remove(&id) else {
                self.servers[server].window.left();
                continue;
            };
            // It waited here with the id it got when it was made (or refused): a new one
            // now, or the wait would have held the server's de-duplication window open.
            let id = self.renumber(id, &mut p);
            if self.past_retry_span(&p, now) {
                // Another copy of a kept id, too late to be safe: it ends here.
                self.pending.insert(id, p);
                self.servers[server].window.left();
                self.give_up(id, now);
                continue;
            }
            self.pending.insert(id, p);
            self.send_pending(id, now);
        }
    }

    /// The id a data request goes on the wire under after waiting (for room in the window,
    /// or to retry after a refusal as not executed): a new one when no copy of it under its
    /// current id can still run. The server keeps the reply of every mutation from the
    /// oldest id a client may still retry (the window each request carries), so a request
    /// sent or retried under an old id held every reply after it: the reply cache filled,
    /// refusals led to more, and one client's 1 024 outstanding YCSB-A requests collapsed from
    /// 176 K to 11 K ops/s (the second probe, 2026-12-06).
    ///
    /// Only with at most one copy sent under the id, and that one refused (a held request is
    /// not on the wire: it was never sent, or refused): a refusal says that copy did not run.
    /// With two copies the refusal may answer the second while the first ran (a refusal
    /// before the reply cache is looked at, say the fair scheduler's), so the id is kept and
    /// the retry finds the first's reply. Control requests (sealed, not in the data path's
    /// cache) keep their id.
    pub(super) fn renumber(&mut self, id: u64, p: &mut Pending) -> u64 {
        if !matches!(p.expect, Kind::AmReply | Kind::OneSidedReply) || p.copies > 1 {
            return id;
        }
        p.copies = 0;
        let (new, window) = self.new_request_id();
        let mut h = HeaderPacket::new_unchecked(&mut p.datagram[..]);
        h.set_request_id(new);
        h.set_window(window);
        self.stats.renumbered += 1;
        new
    }

    /// Seals control request `p` again with a fresh nonce when it is a query, which changes
    /// nothing at the server (LIST, STATS, FETCH, DESCRIBE of an application, not of a
    /// command such as `congest:MS`, `snapshot` or `shutdown`); false otherwise. A mutation is
    /// never sealed again: its first copy may have run before the server restarted (a
    /// REGISTER forwarded to a host agent that outlived the dataplane).
    pub(super) fn reseal_query(&mut self, p: &mut Pending) -> bool {
        let Some(cred) = &self.cfg.credential else {
            return false;
        };
        let Ok(Body::Sealed(sealed)) = Message::parse(&p.datagram).map(|m| m.body) else {
            return false;
        };
        let query = match Message::parse(sealed.inner).map(|m| m.body) {
            Ok(Body::List(_) | Body::Stats(_) | Body::Fetch(_)) => true,
            Ok(Body::Describe(d)) => !is_command(d.app),
            _ => false,
        };
        if !query {
            return false;
        }
        let Ok(again) = cred.seal(naam_core::auth::wall_clock_ns(), sealed.inner) else {
            return false;
        };
        p.datagram = again;
        p.copies = 0;
        p.reseals += 1;
        self.stats.resealed += 1;
        true
    }

    /// The gap between two halvings of a window: one burst of refusals is one signal.
    pub(super) fn cut_gap(&self) -> Duration {
        self.cfg.timeout / 2
    }
}

/// Whether a DESCRIBE of `app` is a command that acts (the congestion injectors, a snapshot,
/// a shutdown) rather than a query of an application's parameters.
pub(crate) fn is_command(app: &str) -> bool {
    use naam_core::wire::{CONGEST_HOST, CONGEST_NIC};
    app.starts_with(CONGEST_HOST)
        || app.starts_with(CONGEST_NIC)
        || ["snapshot", "shutdown"].contains(&app)
}
