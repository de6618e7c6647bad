//! `dpdk:<EAL args>`: a port on one DPDK ethdev queue pair. The port parses the
//! Ethernet/IPv4/UDP headers of every received frame itself ([`super::frame`]), copies the
//! payload into the caller's batch and frees the mbufs at once; on transmit it builds the
//! headers of the reply (every source/destination pair of the request swapped) in a fresh mbuf
//! in front of the payload. The IPv4 header checksum is checked and set by the NIC where it
//! offers that offload, in software otherwise; the UDP checksum is neither checked nor set (0,
//! allowed over IPv4).

use std::net::{Ipv4Addr, SocketAddrV4};

use super::frame::{self, UdpHeaders, ETH_HDR_LEN, HEADERS_LEN, IPV4_HDR_LEN};
use super::{DropReason, PacketBatch, Port, PortError, PortOptions, PortStats, MAX_PAYLOAD};
use naam_dpdk::{
    rx_ip_checksum, Eal, EthPort, Mbuf, MbufBurst, Mempool, PortConfig, PortId, RxQueue, TxQueue,
};

/// Mbufs taken from the device per receive call.
const RX_BURST: usize = 32;
/// Mbufs built per transmit call.
const TX_BURST: usize = 32;
/// Frames kept for [`Port::flush`] when the device's transmit ring is full.
const PENDING: usize = 64;
/// Broadcast MAC, used when the peer's MAC is not known.
const BROADCAST: [u8; 6] = [0xff; 6];

/// Addressing of a DPDK port.
#[derive(Debug, Clone, Copy)]
pub struct DpdkPortConfig {
    /// This side's IPv4 address and base UDP port (class `c` is port `base + c`). Replies use
    /// the request's own destination address; this is the source of unsolicited packets.
    pub addr: SocketAddrV4,
    /// Number of steering classes.
    pub classes: u16,
    /// Source MAC of sent frames; `None`: the device's own (some virtual devices have none).
    pub mac: Option<[u8; 6]>,
}

/// A port on one DPDK receive/transmit queue pair.
///
/// Fields drop in declaration order, which is the teardown order: pending mbufs go back to the
/// pool first, then the queues and the port close (returning their ring's mbufs), then the pool,
/// then EAL.
pub struct DpdkPort {
    pending: MbufBurst<PENDING>,
    rxq: RxQueue,
    txq: TxQueue,
    port: EthPort,
    pool: Mempool,
    mac: [u8; 6],
    config: DpdkPortConfig,
    tx_checksum_offload: bool,
    rx_checksum_offload: bool,
    /// Largest payload a frame may carry: the MTU less the IPv4 and UDP headers.
    max_payload: usize,
    stats: PortStats,
    /// Present when the port initialised EAL itself (`dpdk:` spec): keeps it up.
    _eal: Option<Eal>,
}

impl DpdkPort {
    /// A port on a queue pair of a configured (and started) `port`; transmit mbufs come from
    /// `pool`.
    pub fn new(
        port: EthPort,
        rxq: RxQueue,
        txq: TxQueue,
        pool: Mempool,
        config: DpdkPortConfig,
    ) -> Result<DpdkPort, PortError> {
        let mac = match config.mac {
            Some(mac) => mac,
            None => port.mac_addr()?,
        };
        let mtu = usize::from(port.mtu()?);
        let max_payload = mtu
            .saturating_sub(IPV4_HDR_LEN + frame::UDP_HDR_LEN)
            .min(MAX_PAYLOAD);
        Ok(DpdkPort {
            max_payload,
            tx_checksum_offload: port.tx_ipv4_checksum_offload(),
            rx_checksum_offload: port.rx_ipv4_checksum_offload(),
            rxq,
            txq,
            pool,
            port,
            mac,
            config: DpdkPortConfig {
                classes: config.classes.max(1),
                ..config
            },
            pending: MbufBurst::new(),
            stats: PortStats::default(),
            _eal: None,
        })
    }

    /// Initialises EAL from `args` (whitespace-separated EAL arguments, plus these of ours:
    /// `--naam-addr=IP:PORT` — address and base port, default `10.0.0.1:7000`;
    /// `--naam-port-id=N` — which ethdev, default the first), then configures and starts one
    /// queue pair on the port. EAL initialises once per process: open one such port per
    /// process, or use [`DpdkPort::new`] for more.
    pub fn open(args: &str, options: &PortOptions) -> Result<DpdkPort, PortError> {
        let spec_err = |reason: String| PortError::Spec {
            spec: format!("dpdk:{args}"),
            reason,
        };
        let mut addr = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7000);
        let mut port_id = None;
        let mut eal_args = Vec::new();
        for tok in args.split_whitespace() {
            if let Some(v) = tok.strip_prefix("--naam-addr=") {
                addr = v
                    .parse()
                    .map_err(|e| spec_err(format!("--naam-addr {v:?}: {e}")))?;
            } else if let Some(v) = tok.strip_prefix("--naam-port-id=") {
                port_id =
                    Some(PortId(v.parse().map_err(|e| {
                        spec_err(format!("--naam-port-id {v:?}: {e}"))
                    })?));
            } else {
                eal_args.push(tok);
            }
        }
        let eal = Eal::init(&eal_args)?;
        let id = match port_id {
            Some(id) => id,
            None => *EthPort::available(&eal)
                .first()
                .ok_or_else(|| spec_err("EAL found no ethdev port (add a --vdev or -a)".into()))?,
        };
        let pool = Mempool::pktmbuf(
            &eal,
            &format!("naam_port{}", id.0),
            8191,
            256,
            naam_dpdk::MBUF_DATA_ROOM,
        )?;
        let (port, mut rxq, mut txq) = EthPort::configure(&eal, id, &PortConfig::default(), &pool)?;
        port.start()?;
        let (Some(rx), Some(tx)) = (rxq.pop(), txq.pop()) else {
            return Err(spec_err("port configured without queues".into()));
        };
        let mut p = DpdkPort::new(
            port,
            rx,
            tx,
            pool,
            DpdkPortConfig {
                addr,
                classes: options.classes,
                mac: None,
            },
        )?;
        p._eal = Some(eal);
        Ok(p)
    }

    /// The ethdev underneath (for device stats, rte_flow).
    pub fn eth_port(&self) -> &EthPort {
        &self.port
    }

    /// The largest payload this port sends (MTU less the IPv4 and UDP headers); larger ones
    /// are dropped as `oversize`.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Parses one received mbuf into the next free buffer of `batch`, or counts why not.
    fn deliver(&mut self, m: &Mbuf, batch: &mut PacketBatch) {
        if m.nb_segs() != 1 {
            self.stats.count_drop(DropReason::MultiSegment);
            return;
        }
        let flags = m.ol_flags();
        let ck = flags & rx_ip_checksum::MASK;
        if self.rx_checksum_offload && ck == rx_ip_checksum::BAD {
            self.stats.count_drop(DropReason::BadIpChecksum);
            return;
        }
        let verify = !(self.rx_checksum_offload && ck == rx_ip_checksum::GOOD);
        let data = m.data();
        let (h, range) = match frame::parse(data, verify) {
            Ok(v) => v,
            Err(e) => {
                self.stats.count_drop(e.into());
                return;
            }
        };
        let class = h.dst_port.wrapping_sub(self.config.addr.port());
        if class >= self.config.classes {
            self.stats.count_drop(DropReason::UnknownClass);
            return;
        }
        let payload = &data[range];
        if payload.len() > MAX_PAYLOAD {
            self.stats.count_drop(DropReason::Oversize);
            return;
        }
        let Some(p) = batch.next_free() else { return };
        p.fill(
            super::Peer {
                remote: SocketAddrV4::new(h.src_ip, h.src_port),
                local: SocketAddrV4::new(h.dst_ip, h.dst_port),
                remote_mac: h.src_mac,
                local_mac: h.dst_mac,
            },
            class,
            payload,
        );
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += payload.len() as u64;
        batch.commit_one();
    }

    /// The headers for sending `peer`'s packet.
    fn headers_for(&self, peer: &super::Peer) -> UdpHeaders {
        let src_ip = if peer.local.ip().is_unspecified() {
            *self.config.addr.ip()
        } else {
            *peer.local.ip()
        };
        let src_port = if peer.local.port() == 0 {
            self.config.addr.port()
        } else {
            peer.local.port()
        };
        let dst_mac = if peer.remote_mac == [0; 6] {
            BROADCAST
        } else {
            peer.remote_mac
        };
        UdpHeaders {
            src_mac: self.mac,
            dst_mac,
            src_ip,
            dst_ip: *peer.remote.ip(),
            src_port,
            dst_port: peer.remote.port(),
        }
    }

    /// Hands pending frames to the device; returns how many went.
    fn push_pending(&mut self) -> usize {
        transmit(&mut self.txq, &mut self.stats, &mut self.pending)
    }
}

/// Hands the front of `burst` to the device and counts what it took.
fn transmit<const N: usize>(
    txq: &mut TxQueue,
    stats: &mut PortStats,
    burst: &mut MbufBurst<N>,
) -> usize {
    let mut lens = [0usize; N];
    for (l, m) in lens.iter_mut().zip(burst.as_slice()) {
        *l = m.data_len().saturating_sub(HEADERS_LEN);
    }
    let n = txq.tx_burst(burst);
    stats.tx_packets += n as u64;
    stats.tx_bytes += lens[..n].iter().sum::<usize>() as u64;
    n
}

impl Port for DpdkPort {
    fn rx_burst(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        let mut delivered = 0;
        while batch.spare() > 0 {
            let mut burst = MbufBurst::<RX_BURST>::new();
            // Take no more frames than there are buffers: the rest wait in the device ring.
            let want = batch.spare().min(RX_BURST);
            let n = self.rxq.rx_burst_max(&mut burst, want);
            let before = batch.len();
            for m in burst.as_slice() {
                self.deliver(m, batch);
            }
            delivered += batch.len() - before;
            drop(burst); // frees the mbufs in one bulk call
            if n < want {
                break;
            }
        }
        Ok(delivered)
    }

    /// Returns the frames the device took during this call, including frames pending from
    /// earlier calls (they go out first).
    fn tx_burst(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        let mut sent = 0;
        for chunk in batch.as_slice().chunks(TX_BURST) {
            let mut burst = MbufBurst::<TX_BURST>::new();
            if !self.pool.alloc_into(&mut burst, chunk.len()) {
                self.stats
                    .count_drops(DropReason::NoBuffer, chunk.len() as u64);
                continue;
            }
            let mut built = MbufBurst::<TX_BURST>::new();
            for p in chunk {
                let Some(mut m) = burst.pop() else { break };
                let payload = p.payload();
                if payload.len() > self.max_payload {
                    self.stats.count_drop(DropReason::Oversize);
                    continue; // `m` goes back to the pool
                }
                let frame_len = HEADERS_LEN + payload.len();
                let Ok(frame_len16) = u16::try_from(frame_len) else {
                    self.stats.count_drop(DropReason::Oversize);
                    continue;
                };
                let h = self.headers_for(p.peer());
                let Some(buf) = m.append(frame_len16) else {
                    self.stats.count_drop(DropReason::Oversize);
                    continue; // `m` goes back to the pool
                };
                if !frame::emit(buf, &h, payload.len(), self.tx_checksum_offload) {
                    self.stats.count_drop(DropReason::Oversize);
                    continue;
                }
                buf[HEADERS_LEN..].copy_from_slice(payload);
                if self.tx_checksum_offload {
                    m.request_ipv4_checksum(ETH_HDR_LEN as u16, IPV4_HDR_LEN as u16);
                }
                // `built` has room for the whole chunk, so this never gives the mbuf back.
                let _ = built.push(m);
            }
            // Frames still pending go first, so the order of frames on the wire is kept.
            if !self.pending.is_empty() {
                sent += self.push_pending();
            }
            if self.pending.is_empty() {
                sent += transmit(&mut self.txq, &mut self.stats, &mut built);
            }
            // What the device did not take waits for `flush`, as far as there is room.
            self.pending.append_from(&mut built);
            self.stats
                .count_drops(DropReason::TxFull, built.len() as u64);
            built.clear();
        }
        Ok(sent)
    }

    fn flush(&mut self) -> Result<(), PortError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.push_pending();
        Ok(())
    }

    fn stats(&self) -> &PortStats {
        &self.stats
    }

    fn local_addr(&self) -> SocketAddrV4 {
        self.config.addr
    }

    fn classes(&self) -> u16 {
        self.config.classes
    }
}
