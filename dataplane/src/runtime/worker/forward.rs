//! Host forwarding: an active message placed at the host goes on the ring behind its slot's
//! token; the host worker's reply comes back on the reply ring and is relayed, and the time
//! the host worker says it spent is charged to the message's tenant, as the NIC's own time is.

/// The most host time one reply may charge: the host agent's memory is another process's,
/// so a wild value must not push a tenant's account to overflow.
const MAX_HOST_CHARGE_NS: u64 = 1_000_000_000;

use naam_core::wire::{Body, ErrorCode, Message, HEADER_LEN};
use naam_link::{Link, LinkError, MSG_MAX, REPLY_PREFIX, TOKEN_LEN};

use super::*;
use crate::port::Port;
use crate::runtime::stats::{bump, Dropped};

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward<P: Port, L: Link>(
        &mut self,
        datagram: &[u8],
        info: &ReqInfo,
        account: Account,
        dedup: bool,
        exec_hint: bool,
        port: &mut P,
        link: &mut L,
    ) {
        if !self.host_ok {
            return self.host_gone(port, info);
        }
        if TOKEN_LEN + datagram.len() > MSG_MAX {
            return self.send_error(
                port,
                info,
                ErrorCode::BadRequest,
                "too large for the host ring",
                false,
            );
        }
        let Some(i) = self.take_slot(port, info, SlotKind::Am, Some(account)) else {
            return;
        };
        // Remembered before it leaves: the host may answer before this returns.
        let tenant = self.shares.tenant(account);
        if dedup && !self.begin_dedup(port, info, i, (tenant, Kind::AmRequest)) {
            return;
        }
        let tok = self.slots.slot_ref(i).token();
        self.ring_buf[..TOKEN_LEN].copy_from_slice(&tok.to_le_bytes());
        self.ring_buf[TOKEN_LEN..TOKEN_LEN + datagram.len()].copy_from_slice(datagram);
        match link.send(&self.ring_buf[..TOKEN_LEN + datagram.len()]) {
            Ok(()) => {
                self.slots.mark_at_host(i);
                self.shares.count_admitted(account);
                let s = &mut self.slots[i];
                s.account = account;
                s.dedup = dedup;
                s.wrote = dedup;
                // Only mutating offloads are de-duplicated: the others are read-only.
                s.read_only = !dedup;
                s.exec_hint = exec_hint;
                bump(&self.stats.forwarded, 1);
            }
            Err(e) => {
                self.slots.release(i);
                if dedup {
                    // Not sent: not executed (the error below is a "not executed" code).
                    self.out.cache.forget(info.peer.remote, info.request_id);
                }
                match e {
                    LinkError::Full { .. } => {
                        bump(&self.stats.ring_full, 1);
                        self.send_error(port, info, ErrorCode::Busy, "host ring full", false)
                    }
                    e if e.is_peer_gone() => {
                        self.host_ok = false;
                        self.host_gone(port, info)
                    }
                    _ => self.send_error(
                        port,
                        info,
                        ErrorCode::HostUnavailable,
                        "host ring failed",
                        false,
                    ),
                }
            }
        }
    }

    pub(super) fn drain_host_ring<P: Port, L: Link>(
        &mut self,
        port: &mut P,
        link: &mut L,
    ) -> usize {
        let mut n = 0;
        while n < self.cfg.burst {
            match link.recv(&mut self.ring_buf[..]) {
                Ok(Some(r)) => {
                    n += 1;
                    if r.imm.is_none() {
                        self.on_host_reply(r.len, port);
                    }
                }
                Ok(None) => break,
                Err(LinkError::Corrupt { .. }) => {
                    n += 1;
                    self.stats.count_drop(Dropped::BadRingEntry);
                }
                Err(_) => break,
            }
        }
        n
    }

    pub(super) fn on_host_reply<P: Port>(&mut self, len: usize, port: &mut P) {
        if len < REPLY_PREFIX + HEADER_LEN {
            return self.stats.count_drop(Dropped::BadRingEntry);
        }
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        let tok = word(&self.ring_buf[..TOKEN_LEN]);
        let host_ns = word(&self.ring_buf[TOKEN_LEN..REPLY_PREFIX]).min(MAX_HOST_CHARGE_NS);
        let Some(i) = self
            .slots
            .resolve(SlotRef::from_token(tok), SlotState::Host)
        else {
            return self.stats.count_drop(Dropped::StaleToken);
        };
        let s = &self.slots[i];
        let (peer, request_id, class, dedup, exec_hint, read_only) = (
            s.peer,
            s.request_id,
            s.class,
            s.dedup,
            s.exec_hint,
            s.read_only,
        );
        self.shares.charge(s.account, host_ns);
        self.slots.release(i);
        bump(&self.stats.host_replies, 1);
        // Parsed in place: the reply borrows the ring buffer, the send only the way out.
        let datagram = &self.ring_buf[REPLY_PREFIX..len];
        match Message::parse(datagram) {
            Ok(mut m) if m.request_id == request_id => {
                let transient = matches!(m.body, Body::Error(e) if e.code.is_transient());
                if let Body::AmReply(ref mut r) = m.body {
                    // The host does not know the placement: add the hint here.
                    if r.hint.is_none() {
                        r.hint = self.hint(class, exec_hint, read_only);
                        if r.hint.is_some() {
                            bump(&self.stats.hints, 1);
                        }
                    }
                }
                if let Body::Error(e) = m.body {
                    self.stats.error(e.code);
                }
                let remember = dedup && !transient;
                if dedup && transient {
                    self.out.cache.forget(peer.remote, request_id);
                }
                self.out
                    .send(port, &self.stats, self.now_ns, (&peer, &m), remember);
            }
            _ => {
                // Not a reply to this request: the client must not be left waiting forever.
                self.stats.count_drop(Dropped::BadRingEntry);
                let info = ReqInfo {
                    peer,
                    request_id,
                    class,
                    window: 0,
                    reply_max: ReqInfo::PROVEN,
                };
                self.send_error(
                    port,
                    &info,
                    ErrorCode::Internal,
                    "bad reply from the host agent",
                    dedup,
                );
            }
        }
    }
}
