//! Replies: emitted into the tx batch, remembered in the reply cache when the request is
//! de-duplicated, and transmitted in one burst per poll.

use naam_core::rate::TokenBucket;
use naam_core::wire::{
    AmReplyRepr, AmStatus, Body, ErrorCode, ErrorRepr, Location, Message, OpResult, PlacementHint,
};
use naam_link::LinkError;

use super::*;
use crate::port::{Peer, Port};
use crate::runtime::dedup::Seen;
use crate::runtime::stats::{bump, Dropped};

/// A fixed buffer implementing `fmt::Write`, for error details without allocating.
pub(super) struct Detail {
    buf: [u8; 200],
    len: usize,
}

impl Detail {
    pub fn new() -> Detail {
        Detail {
            buf: [0; 200],
            len: 0,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only whole `&str`s are appended, cut at a char boundary below.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for Detail {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = naam_core::wire::clip_utf8(s, room).len();
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The worker's one way out: a reply is emitted into the tx batch, remembered in the reply
/// cache when its request is de-duplicated, and transmitted with the others in one burst per
/// poll. Its own struct, beside the slots and the ring buffer, so that a reply can be emitted
/// straight from the slot's context or the ring entry it is built from.
pub(super) struct Replies {
    pub tx: PacketBatch,
    pub cache: ReplyCache,
    /// Refusals to senders that proved nothing, at most [`UNPROVEN_REPLIES_PER_S`].
    pub unproven: TokenBucket,
}

/// Refusals a worker sends per second (and at once, [`UNPROVEN_BURST`]) to senders that
/// proved nothing (no capability, no region key, malformed). Each is no larger than its
/// request (no amplification), but each costs a send: a flood of 40 000 such datagrams a
/// second cut a legitimate client from 2 000 to 811 operations a second (probe 14). Past
/// this rate they go unanswered, counted (`drop.unproven_unanswered`); a client with a wrong
/// key still hears why, unless it sends during such a flood.
pub const UNPROVEN_REPLIES_PER_S: u64 = 2_000;
pub const UNPROVEN_BURST: u64 = 256;

impl Replies {
    pub fn flush<P: Port>(&mut self, port: &mut P, stats: &WorkerStats) {
        if self.tx.is_empty() {
            return;
        }
        let n = port.tx_burst(&self.tx).unwrap_or(0);
        bump(&stats.tx, n as u64);
        self.tx.clear();
    }

    /// Emits `msg` to `peer` into the tx batch; with `remember`, also into the reply cache.
    pub fn send<P: Port>(
        &mut self,
        port: &mut P,
        stats: &WorkerStats,
        now_ns: u64,
        (peer, msg): (&Peer, &Message<'_>),
        remember: bool,
    ) {
        if self.tx.spare() == 0 {
            self.flush(port, stats);
        }
        let Some(p) = self.tx.push() else {
            stats.count_drop(Dropped::ReplyFailed);
            return;
        };
        p.set_peer(*peer);
        match msg.emit(&mut p.buffer_mut()[..]) {
            Ok(n) => {
                p.set_len(n);
                if remember {
                    self.cache
                        .complete(peer.remote, msg.request_id, p.payload(), now_ns);
                }
            }
            Err(_) => {
                let len = self.tx.len();
                self.tx.truncate(len - 1);
                stats.count_drop(Dropped::ReplyFailed);
                if remember {
                    self.cache.forget(peer.remote, msg.request_id);
                }
            }
        }
    }

    /// Looks a de-duplicated request (of `kind`, by `tenant`) up in the reply cache; a
    /// completed one has its remembered reply sent again.
    pub fn duplicate<P: Port>(
        &mut self,
        port: &mut P,
        stats: &WorkerStats,
        (peer, request_id): (&Peer, u64),
        (tenant, kind): (u32, Kind),
    ) -> Duplicate {
        if self.tx.spare() == 0 {
            self.flush(port, stats);
        }
        let bytes = match self
            .cache
            .lookup(peer.remote, request_id, tenant, kind as u8)
        {
            Seen::New => return Duplicate::New,
            Seen::InProgress => return Duplicate::InProgress,
            Seen::Lost => return Duplicate::Lost,
            Seen::Other => return Duplicate::Other,
            Seen::Done(bytes) => bytes,
        };
        let Some(p) = self.tx.push() else {
            return Duplicate::Replayed { sent: false };
        };
        if p.set_payload(bytes) {
            p.set_peer(*peer);
            return Duplicate::Replayed { sent: true };
        }
        let len = self.tx.len();
        self.tx.truncate(len - 1);
        stats.count_drop(Dropped::ReplyFailed);
        Duplicate::Replayed { sent: false }
    }
}

/// What [`Replies::duplicate`] found for a request.
pub(super) enum Duplicate {
    /// Not seen (or forgotten): execute it.
    New,
    /// Being executed: the reply will come.
    InProgress,
    /// Completed: its reply was sent again (unless the tx batch had no room).
    Replayed { sent: bool },
    /// Begun before a dataplane restart and never finished: it may have run.
    Lost,
    /// The id is remembered for another tenant's or another kind of request.
    Other,
}

impl Worker {
    pub(super) fn flush<P: Port>(&mut self, port: &mut P) {
        self.out.flush(port, &self.stats);
    }

    /// Emits `msg` to `peer` into the tx batch; with `remember`, also into the reply cache.
    pub(super) fn send<P: Port>(
        &mut self,
        port: &mut P,
        peer: &Peer,
        msg: &Message<'_>,
        remember: bool,
    ) {
        self.out
            .send(port, &self.stats, self.now_ns, (peer, msg), remember);
    }

    pub(super) fn send_error<P: Port>(
        &mut self,
        port: &mut P,
        info: &ReqInfo,
        code: ErrorCode,
        detail: &str,
        dedup: bool,
    ) {
        // A full slot table or ring drains within a few link round trips: a refused client
        // hears when to come back rather than guessing.
        let retry_after = (code == ErrorCode::Busy).then_some(BUSY_RETRY_AFTER_NS);
        self.send_error_retry_after(port, info, code, detail, dedup, retry_after)
    }

    /// Answers a request that needs host memory or the host agent while they are gone
    /// (`host_unavailable`: not executed, retry).
    pub(super) fn host_gone<P: Port>(&mut self, port: &mut P, info: &ReqInfo) {
        self.send_error(
            port,
            info,
            ErrorCode::HostUnavailable,
            "host agent gone",
            false,
        )
    }

    /// [`Worker::send_error`] with the retry-after hint the reply carries (`busy` only).
    pub(super) fn send_error_retry_after<P: Port>(
        &mut self,
        port: &mut P,
        info: &ReqInfo,
        code: ErrorCode,
        detail: &str,
        dedup: bool,
        retry_after_ns: Option<u64>,
    ) {
        self.stats.error(code);
        match code {
            ErrorCode::Busy => bump(&self.stats.busy, 1),
            ErrorCode::HostUnavailable => bump(&self.stats.host_unavailable, 1),
            _ => {}
        }
        // "Not executed" replies are not remembered, so the retry runs (docs/protocol.md).
        let remember = dedup
            && !matches!(
                code,
                ErrorCode::Busy | ErrorCode::HostUnavailable | ErrorCode::BadVersion
            );
        if dedup && !remember {
            self.out.cache.forget(info.peer.remote, info.request_id);
        }
        let msg = Message::new(
            info.request_id,
            info.class,
            Body::Error({
                let e = ErrorRepr::new(
                    code,
                    naam_core::wire::clip_utf8(detail, naam_core::wire::DETAIL_MAX),
                );
                match retry_after_ns {
                    Some(ns) => e.retry_after_ns(ns),
                    None => e,
                }
                .within(info.reply_max)
            }),
        );
        if msg.buffer_len() > info.reply_max {
            // Shorter than even a bare error (no request is): answering would send more
            // than a sender that proved nothing sent.
            return self.stats.count_drop(Dropped::Malformed);
        }
        if info.reply_max != ReqInfo::PROVEN && !self.may_answer_unproven() {
            return;
        }
        self.send(port, &info.peer, &msg, remember);
    }

    /// Whether a refusal to a sender that proved nothing may go out now
    /// ([`UNPROVEN_REPLIES_PER_S`]); if not, it is counted as unanswered.
    pub(super) fn may_answer_unproven(&mut self) -> bool {
        let ok = self.out.unproven.take(self.now_ns).is_ok();
        if !ok {
            self.stats.count_drop(Dropped::UnprovenUnanswered);
        }
        ok
    }

    pub(super) fn finish_error<P: Port>(
        &mut self,
        i: usize,
        port: &mut P,
        code: ErrorCode,
        detail: &str,
    ) {
        let s = &self.slots[i];
        if s.kind == SlotKind::Am && s.run.steps() > 0 {
            // It ran here: an offload's failed run.
            if let Some(e) = self.pool.get(s.offload) {
                bump(&e.runs.runs, 1);
                bump(&e.runs.errors, 1);
            }
        }
        let info = ReqInfo {
            peer: s.peer,
            request_id: s.request_id,
            class: s.class,
            window: 0,
            reply_max: ReqInfo::PROVEN,
        };
        let dedup = s.dedup;
        self.slots.release(i);
        self.send_error(port, &info, code, detail, dedup);
    }

    pub(super) fn hint(
        &self,
        class: u16,
        exec_hint: bool,
        read_only: bool,
    ) -> Option<PlacementHint> {
        if !(exec_hint && read_only) {
            return None;
        }
        let lease_ms = self.shared.hints.lease_ms(class, self.now_ns)?;
        Some(PlacementHint {
            class,
            location: Location::Client,
            lease_ms,
        })
    }

    pub(super) fn finish_am<P: Port>(&mut self, i: usize, abort: Option<u32>, port: &mut P) {
        let s = &self.slots[i];
        let hint = self.hint(s.class, s.exec_hint, s.read_only);
        let Some(output) = s.ctx.out() else {
            return self.finish_error(i, port, ErrorCode::BadHandler, "output past the reply area");
        };
        let status = match abort {
            None => AmStatus::Done,
            Some(code) => AmStatus::Aborted(code),
        };
        if let Some(e) = self.pool.get(s.offload) {
            bump(&e.runs.runs, 1);
        }
        bump(&self.stats.nic_executed, 1);
        self.stats.class_steps(s.class, u64::from(s.run.steps()));
        if hint.is_some() {
            bump(&self.stats.hints, 1);
        }
        // Emitted straight from the slot's context, then the slot is free.
        let msg = Message::new(
            s.request_id,
            s.class,
            Body::AmReply(AmReplyRepr {
                status,
                executed_at: Location::Nic,
                steps: s.run.steps(),
                hint,
                output,
            }),
        );
        self.out
            .send(port, &self.stats, self.now_ns, (&s.peer, &msg), s.dedup);
        self.slots.release(i);
    }

    pub(super) fn finish_one_sided_results<P: Port>(
        &mut self,
        i: usize,
        port: &mut P,
        results: &[OpResult<'_>],
    ) {
        let s = &self.slots[i];
        let (peer, request_id, class, dedup) = (s.peer, s.request_id, s.class, s.dedup);
        self.slots.release(i);
        self.send_one_sided_reply(port, (&peer, request_id, class), results, dedup);
    }

    /// Sends the `ONE_SIDED_REPLY` of `results` for request `request_id` of `peer`, and
    /// counts the ops' errors.
    pub(super) fn send_one_sided_reply<P: Port>(
        &mut self,
        port: &mut P,
        (peer, request_id, class): (&Peer, u64, u16),
        results: &[OpResult<'_>],
        remember: bool,
    ) {
        for code in results.iter().filter_map(|r| r.error) {
            self.stats.op_error(code);
        }
        let body = match naam_core::wire::OneSidedReplyRepr::new(results) {
            Ok(r) => Body::OneSidedReply(r),
            Err(_) => {
                self.stats.count_drop(Dropped::ReplyFailed);
                return;
            }
        };
        let msg = Message::new(request_id, class, body);
        self.send(port, peer, &msg, remember);
    }
}

/// The error code a failed post maps to.
pub(super) fn link_error_code(e: &LinkError) -> ErrorCode {
    match e {
        LinkError::PeerGone { .. } => ErrorCode::HostUnavailable,
        LinkError::Refused(op) => op.code().into(),
        LinkError::Full { .. } | LinkError::CqFull { .. } => ErrorCode::Busy,
        _ => ErrorCode::Memory,
    }
}
