//! Ports: where messages enter and leave the dataplane. One narrow trait for the hot path,
//! two implementations:
//!
//! - [`UdpPort`] (`udp:ADDR`, the default): kernel UDP sockets, `recvmmsg`/`sendmmsg`;
//! - `DpdkPort` (`dpdk:<EAL args>`, feature `dpdk`): any DPDK poll-mode driver; the port parses
//!   and builds the Ethernet/IPv4/UDP headers itself ([`frame`]).
//!
//! Either way the worker sees the same thing: a [`PacketBatch`] of [`Packet`]s, each with the
//! UDP payload (the NAAM message), the [`Peer`] to reply to, and the steering class carried in
//! the UDP destination port (`class = dst_port - base`). Buffers are allocated once, when the
//! batch is made; receiving and sending never allocate. Drops are counted per
//! [`DropReason`] in the port's [`PortStats`], never asserted.

#[cfg(feature = "dpdk")]
mod dpdk;
pub mod frame;
mod mem;
mod spec;
mod stats;
#[allow(unsafe_code)]
mod udp;

use std::net::{Ipv4Addr, SocketAddrV4};

#[cfg(feature = "dpdk")]
pub use dpdk::{DpdkPort, DpdkPortConfig};
pub use mem::MemPort;
pub use spec::{open, parse as parse_spec, unservable, AnyPort, PortOptions, PortSpec};
pub use stats::{DropReason, PortStats};
pub use udp::{kernel_drops, LossInjection, UdpPort};

/// Payload capacity of one packet buffer (bytes of UDP payload).
pub const MAX_PAYLOAD: usize = 2048;

/// Default number of steering classes (UDP ports `base .. base + CLASSES`).
pub const DEFAULT_CLASSES: u16 = 64;

/// Errors that stop a port (not per-packet problems: those are counted drops).
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The port spec string could not be understood.
    #[error("bad port spec {spec:?}: {reason}")]
    Spec {
        /// The spec given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A socket call failed.
    #[error("{op} failed")]
    Io {
        /// The call.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The UDP ports of a range could not be bound (in use, say).
    #[error("bind {addr} (the {classes} ports of its classes, up to :{})", addr.port().saturating_add(classes.saturating_sub(1)))]
    Bind {
        addr: std::net::SocketAddrV4,
        classes: u16,
        #[source]
        source: std::io::Error,
    },
    /// A DPDK call failed.
    #[cfg(feature = "dpdk")]
    #[error(transparent)]
    Dpdk(#[from] naam_dpdk::DpdkError),
    /// The spec names a port type this build does not include.
    #[error("port type {0:?} not built in (enable the `{0}` feature)")]
    NotBuilt(&'static str),
}

/// Both ends of a datagram, from the port's point of view: where it came from (`remote`,
/// where the reply goes) and where it was sent to (`local`, where the reply comes from). The
/// MACs are set by ports that see Ethernet (DPDK), zero otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The other side's IPv4 address and UDP port.
    pub remote: SocketAddrV4,
    /// This side's IPv4 address and UDP port (the UDP port carries the steering class).
    pub local: SocketAddrV4,
    /// The other side's MAC (zero if unknown: DPDK ports then broadcast).
    pub remote_mac: [u8; 6],
    /// This side's MAC as the request addressed it.
    pub local_mac: [u8; 6],
}

impl Peer {
    /// A peer for sending to `remote` without a request to answer: the port picks its own
    /// address and the base UDP port (class 0) as the source.
    pub fn to(remote: SocketAddrV4) -> Peer {
        Peer {
            remote,
            local: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            remote_mac: [0; 6],
            local_mac: [0; 6],
        }
    }

    /// The same peer with the source UDP port chosen: `base + class` sends as that class.
    pub fn from_port(mut self, local_port: u16) -> Peer {
        self.local.set_port(local_port);
        self
    }
}

impl Default for Peer {
    fn default() -> Self {
        Peer::to(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
    }
}

/// One datagram: payload bytes, peer and steering class. Received packets are answered by
/// rewriting the payload in place and sending the packet back: the port swaps the addresses.
#[derive(Clone)]
pub struct Packet {
    peer: Peer,
    class: u16,
    len: u16,
    /// The datagram was longer than [`MAX_PAYLOAD`]: only its first bytes are here. Kept (and
    /// counted as `port_drop.oversize`) so the worker can answer with the limit.
    truncated: bool,
    data: [u8; MAX_PAYLOAD],
}

impl Packet {
    fn empty() -> Packet {
        Packet {
            peer: Peer::default(),
            class: 0,
            len: 0,
            truncated: false,
            data: [0; MAX_PAYLOAD],
        }
    }

    /// The payload.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }

    /// The payload, writable (its current length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.data[..usize::from(self.len)]
    }

    /// The whole buffer, for writing a new payload of up to [`MAX_PAYLOAD`] bytes; follow with
    /// [`Packet::set_len`].
    #[inline]
    pub fn buffer_mut(&mut self) -> &mut [u8; MAX_PAYLOAD] {
        &mut self.data
    }

    /// Sets the payload length; false (unchanged) past [`MAX_PAYLOAD`].
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        match u16::try_from(len) {
            Ok(l) if len <= MAX_PAYLOAD => {
                self.len = l;
                true
            }
            _ => false,
        }
    }

    /// Replaces the payload; false (unchanged) if it does not fit.
    pub fn set_payload(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > MAX_PAYLOAD {
            return false;
        }
        self.data[..bytes.len()].copy_from_slice(bytes);
        self.len = bytes.len() as u16;
        true
    }

    /// Whether the datagram was cut to [`MAX_PAYLOAD`] bytes on receipt.
    #[inline]
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Who sent it / where the reply goes.
    #[inline]
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Sets the peer (for packets that are not replies).
    #[inline]
    pub fn set_peer(&mut self, peer: Peer) {
        self.peer = peer;
    }

    /// The steering class: UDP destination port minus the port's base.
    #[inline]
    pub fn class(&self) -> u16 {
        self.class
    }

    /// The UDP destination port the packet arrived on.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.peer.local.port()
    }

    /// Fills the packet as received (used by ports that copy the payload in).
    #[inline]
    fn fill(&mut self, peer: Peer, class: u16, payload: &[u8]) {
        let n = payload.len().min(MAX_PAYLOAD);
        self.data[..n].copy_from_slice(&payload[..n]);
        self.len = n as u16;
        self.truncated = payload.len() > MAX_PAYLOAD;
        self.peer = peer;
        self.class = class;
    }
}

/// A fixed-capacity batch of packet buffers, allocated once and reused for every burst.
pub struct PacketBatch {
    packets: Box<[Packet]>,
    len: usize,
    /// Packets the batch takes (at most its capacity): a receive burst can be kept shorter
    /// than the buffers allow ([`PacketBatch::set_limit`]).
    limit: usize,
}

impl PacketBatch {
    /// A batch of `capacity` packet buffers (each [`MAX_PAYLOAD`] bytes), empty.
    pub fn with_capacity(capacity: usize) -> PacketBatch {
        PacketBatch {
            packets: vec![Packet::empty(); capacity].into_boxed_slice(),
            len: 0,
            limit: capacity,
        }
    }

    /// Packets held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no packet is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Buffers in total.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.packets.len()
    }

    /// Packets it may still take: up to its limit.
    #[inline]
    pub fn spare(&self) -> usize {
        self.limit.saturating_sub(self.len)
    }

    /// Takes at most `n` packets (1 ..= capacity) from now on; the packets held stay.
    #[inline]
    pub fn set_limit(&mut self, n: usize) {
        self.limit = n.max(1).min(self.packets.len());
    }

    /// Packets it takes at most (its capacity unless [`PacketBatch::set_limit`] said less).
    #[inline]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Empties the batch (the buffers stay).
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps the first `len` packets.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Appends an empty packet (payload length 0, default peer) and returns it to fill, or
    /// `None` if the batch is full.
    #[inline]
    pub fn push(&mut self) -> Option<&mut Packet> {
        if self.len >= self.limit {
            return None;
        }
        let p = self.packets.get_mut(self.len)?;
        self.len += 1;
        p.len = 0;
        p.class = 0;
        p.truncated = false;
        p.peer = Peer::default();
        Some(p)
    }

    /// Removes packet `index`, moving the last one into its place (order not kept).
    #[inline]
    pub fn swap_remove(&mut self, index: usize) {
        if index < self.len {
            self.packets.swap(index, self.len - 1);
            self.len -= 1;
        }
    }

    /// The packets held.
    #[inline]
    pub fn as_slice(&self) -> &[Packet] {
        &self.packets[..self.len]
    }

    /// The packets held, writable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Packet] {
        &mut self.packets[..self.len]
    }

    /// Iterates the packets held.
    pub fn iter(&self) -> std::slice::Iter<'_, Packet> {
        self.as_slice().iter()
    }

    /// Iterates the packets held, writable.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Packet> {
        self.as_mut_slice().iter_mut()
    }

    /// The next free buffer, for a port filling the batch; commit it with `commit_one`.
    #[inline]
    fn next_free(&mut self) -> Option<&mut Packet> {
        if self.len >= self.limit {
            return None;
        }
        self.packets.get_mut(self.len)
    }

    #[inline]
    fn commit_one(&mut self) {
        debug_assert!(self.len < self.limit);
        self.len = (self.len + 1).min(self.limit);
    }

    /// All buffers, held and free (for ports that receive into several at once).
    #[inline]
    fn all_mut(&mut self) -> &mut [Packet] {
        &mut self.packets
    }
}

/// The hot-path interface of a port. One port is owned and polled by one worker thread.
pub trait Port {
    /// Receives up to `batch.spare()` datagrams, appending them to `batch`; returns how many.
    /// Never blocks. Malformed or oversize datagrams are dropped and counted, not returned.
    fn rx_burst(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError>;

    /// Sends every packet in `batch` to its peer (a reply: from `peer.local` to
    /// `peer.remote`); returns how many were handed on. Packets that cannot be sent now
    /// (queue full, no buffer) are dropped and counted, or held for [`Port::flush`] where the
    /// port keeps a small pending queue (DPDK). The batch itself is left as it is.
    fn tx_burst(&mut self, batch: &PacketBatch) -> Result<usize, PortError>;

    /// Pushes out anything the port still holds from earlier `tx_burst` calls.
    fn flush(&mut self) -> Result<(), PortError>;

    /// Counters of this port.
    fn stats(&self) -> &PortStats;

    /// The address (IPv4 and base UDP port) the port serves.
    fn local_addr(&self) -> SocketAddrV4;

    /// Number of steering classes; class `c` arrives on UDP port `local_addr().port() + c`.
    fn classes(&self) -> u16;
}
