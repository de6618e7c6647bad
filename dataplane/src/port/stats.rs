//! Per-port counters. A port is owned by one worker, so plain integers suffice; the struct is
//! cache-line aligned so ports of different workers never share a line.

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Payload larger than [`super::MAX_PAYLOAD`] (or than a frame can carry on transmit).
    Oversize,
    /// Frame shorter than its headers.
    Truncated,
    /// Not IPv4 (other EtherType, VLAN tag).
    NotIpv4,
    /// Bad IPv4 version, IHL or total length.
    BadIpHeader,
    /// IPv4 header checksum wrong.
    BadIpChecksum,
    /// IPv4 fragment.
    Fragment,
    /// Not UDP.
    NotUdp,
    /// UDP length inconsistent with the packet.
    BadUdpLength,
    /// UDP destination port outside `base .. base + classes`.
    UnknownClass,
    /// Multi-segment mbuf (scatter is not enabled; should not happen).
    MultiSegment,
    /// No buffer to build the frame in (mempool empty).
    NoBuffer,
    /// Transmit queue or socket buffer full.
    TxFull,
    /// The OS refused to send it (other errors).
    TxError,
    /// Source UDP port is not one of this port's class ports.
    BadSource,
    /// A receive call failed (other than "nothing to read").
    RxError,
    /// Dropped on receive by the loss injection of tests (`--drop-rx-every`).
    InjectedRx,
    /// Dropped on transmit by the loss injection of tests (`--drop-tx-every`).
    InjectedTx,
    /// Dropped by the kernel before the worker saw it: the socket's receive buffer was full
    /// (its `SO_MEMINFO` drop counter, read every so often).
    KernelRx,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 18;

    /// Every reason, in counter order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Oversize,
        DropReason::Truncated,
        DropReason::NotIpv4,
        DropReason::BadIpHeader,
        DropReason::BadIpChecksum,
        DropReason::Fragment,
        DropReason::NotUdp,
        DropReason::BadUdpLength,
        DropReason::UnknownClass,
        DropReason::MultiSegment,
        DropReason::NoBuffer,
        DropReason::TxFull,
        DropReason::TxError,
        DropReason::BadSource,
        DropReason::RxError,
        DropReason::InjectedRx,
        DropReason::InjectedTx,
        DropReason::KernelRx,
    ];

    /// A short stable name (for stats output).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Oversize => "oversize",
            DropReason::Truncated => "truncated",
            DropReason::NotIpv4 => "not_ipv4",
            DropReason::BadIpHeader => "bad_ip_header",
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::Fragment => "fragment",
            DropReason::NotUdp => "not_udp",
            DropReason::BadUdpLength => "bad_udp_length",
            DropReason::UnknownClass => "unknown_class",
            DropReason::MultiSegment => "multi_segment",
            DropReason::NoBuffer => "no_buffer",
            DropReason::TxFull => "tx_full",
            DropReason::TxError => "tx_error",
            DropReason::BadSource => "bad_source",
            DropReason::RxError => "rx_error",
            DropReason::InjectedRx => "injected_rx",
            DropReason::InjectedTx => "injected_tx",
            DropReason::KernelRx => "kernel_rx",
        }
    }
}

impl From<super::frame::FrameError> for DropReason {
    fn from(e: super::frame::FrameError) -> Self {
        use super::frame::FrameError as F;
        match e {
            F::Truncated => DropReason::Truncated,
            F::NotIpv4 => DropReason::NotIpv4,
            F::BadIpHeader => DropReason::BadIpHeader,
            F::BadIpChecksum => DropReason::BadIpChecksum,
            F::Fragment => DropReason::Fragment,
            F::NotUdp => DropReason::NotUdp,
            F::BadUdpLength => DropReason::BadUdpLength,
        }
    }
}

/// Counters of one port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[repr(align(64))]
pub struct PortStats {
    /// Datagrams delivered to the worker.
    pub rx_packets: u64,
    /// Payload bytes delivered.
    pub rx_bytes: u64,
    /// Datagrams handed to the OS or device.
    pub tx_packets: u64,
    /// Payload bytes handed on.
    pub tx_bytes: u64,
    drops: [u64; DropReason::COUNT],
}

impl PortStats {
    /// Counts one drop.
    #[inline]
    pub fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// Counts `n` drops.
    #[inline]
    pub fn count_drops(&mut self, reason: DropReason, n: u64) {
        self.drops[reason as usize] += n;
    }

    /// Drops for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Drops for all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// `(reason, count)` for every reason with a non-zero count.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.drops(*r)))
            .filter(|(_, n)| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_own_counter() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut s = PortStats::default();
        s.count_drop(DropReason::TxFull);
        s.count_drops(DropReason::Oversize, 3);
        assert_eq!(s.drops(DropReason::TxFull), 1);
        assert_eq!(s.drops(DropReason::Oversize), 3);
        assert_eq!(s.total_drops(), 4);
        let nz: Vec<_> = s.nonzero_drops().collect();
        assert_eq!(nz, vec![(DropReason::Oversize, 3), (DropReason::TxFull, 1)]);
    }
}
