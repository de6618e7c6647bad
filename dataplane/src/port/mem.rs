//! `MemPort`: an in-memory port for tests and in-process load generators. Datagrams pushed
//! with [`MemPort::inject`] come out of `rx_burst`; whatever the worker sends is kept for
//! [`MemPort::take_sent`]. It allocates (it is a test double, not a data path), though a
//! received datagram's buffer is kept for the next injection, so a steady exchange does not.

use std::collections::VecDeque;
use std::net::SocketAddrV4;

use super::{DropReason, PacketBatch, Peer, Port, PortError, PortStats, MAX_PAYLOAD};

/// An in-memory port serving `classes` classes above `base`.
pub struct MemPort {
    base: SocketAddrV4,
    classes: u16,
    inbox: VecDeque<(Peer, u16, Vec<u8>)>,
    /// Buffers of received datagrams, for the next injections.
    spare: Vec<Vec<u8>>,
    sent: Vec<(Peer, Vec<u8>)>,
    /// How many of `sent` each `tx_burst` call handed on.
    bursts: Vec<usize>,
    /// Count what is sent without keeping it (no allocation per packet: for measuring the
    /// worker's own allocations).
    discard_sent: bool,
    stats: PortStats,
}

impl MemPort {
    pub fn new(base: SocketAddrV4, classes: u16) -> MemPort {
        MemPort {
            base,
            classes,
            inbox: VecDeque::new(),
            spare: Vec::new(),
            sent: Vec::new(),
            bursts: Vec::new(),
            discard_sent: false,
            stats: PortStats::default(),
        }
    }

    /// Queues a datagram from `from` to UDP port `base + class`. Oversize payloads are dropped
    /// and counted like a real port does.
    pub fn inject(&mut self, from: SocketAddrV4, class: u16, payload: &[u8]) {
        if payload.len() > MAX_PAYLOAD {
            self.stats.count_drop(DropReason::Oversize);
            return;
        }
        if class >= self.classes {
            self.stats.count_drop(DropReason::UnknownClass);
            return;
        }
        let local = SocketAddrV4::new(*self.base.ip(), self.base.port().wrapping_add(class));
        let peer = Peer {
            remote: from,
            local,
            remote_mac: [0; 6],
            local_mac: [0; 6],
        };
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        self.inbox.push_back((peer, class, buf));
    }

    /// Whether to count sent datagrams without keeping them (then `take_sent` stays empty).
    pub fn discard_sent(&mut self, on: bool) {
        self.discard_sent = on;
    }

    /// Room for `n` more injected datagrams without growing the queue (nor the list their
    /// buffers return to once received).
    pub fn reserve(&mut self, n: usize) {
        self.inbox.reserve(n);
        self.spare.reserve(n);
    }

    /// Datagrams not yet received by the worker.
    pub fn pending(&self) -> usize {
        self.inbox.len()
    }

    /// Everything sent since the last call: `(peer, payload)`.
    pub fn take_sent(&mut self) -> Vec<(Peer, Vec<u8>)> {
        std::mem::take(&mut self.sent)
    }

    /// The sizes of the `tx_burst` calls since the last call (when sent datagrams are kept):
    /// which replies left together.
    pub fn take_burst_sizes(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.bursts)
    }
}

impl Port for MemPort {
    fn rx_burst(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        let mut n = 0;
        while batch.spare() > 0 {
            let Some((peer, class, data)) = self.inbox.pop_front() else {
                break;
            };
            if let Some(p) = batch.next_free() {
                p.fill(peer, class, &data);
                batch.commit_one();
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += data.len() as u64;
                n += 1;
            }
            self.spare.push(data);
        }
        Ok(n)
    }

    fn tx_burst(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        for p in batch.iter() {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += p.payload().len() as u64;
            if !self.discard_sent {
                self.sent.push((*p.peer(), p.payload().to_vec()));
            }
        }
        if !self.discard_sent {
            self.bursts.push(batch.len());
        }
        Ok(batch.len())
    }

    fn flush(&mut self) -> Result<(), PortError> {
        Ok(())
    }

    fn stats(&self) -> &PortStats {
        &self.stats
    }

    fn local_addr(&self) -> SocketAddrV4 {
        self.base
    }

    fn classes(&self) -> u16 {
        self.classes
    }
}
