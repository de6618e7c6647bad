//! Ethernet devices: configuration, queue setup, start/stop, and the per-queue handles the data
//! path polls.

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::error::{check, Convention, DpdkError};
use super::mbuf::MbufBurst;
use super::{Eal, Mempool};

/// An ethdev port id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

/// A receive or transmit queue index on one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u16);

/// How to configure a port.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// Receive queues (one per worker core).
    pub rx_queues: u16,
    /// Transmit queues.
    pub tx_queues: u16,
    /// Descriptors per receive queue.
    pub rx_desc: u16,
    /// Descriptors per transmit queue.
    pub tx_desc: u16,
    /// Accept frames for any destination MAC.
    pub promiscuous: bool,
    /// Enable IPv4 header checksum offload on transmit if the device offers it.
    pub tx_ipv4_checksum: bool,
    /// Enable IPv4 header checksum validation on receive if the device offers it.
    pub rx_ipv4_checksum: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 512,
            tx_desc: 512,
            promiscuous: true,
            tx_ipv4_checksum: true,
            rx_ipv4_checksum: true,
        }
    }
}

/// What a device says about itself (`rte_eth_dev_info_get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevInfo {
    /// The PMD, e.g. `net_ring`, `net_memif`, `mlx5_pci`.
    pub driver_name: String,
    /// Kernel interface index, 0 if none.
    pub if_index: u32,
    /// Receive queues the device supports.
    pub max_rx_queues: u16,
    /// Transmit queues the device supports.
    pub max_tx_queues: u16,
    /// `RTE_ETH_RX_OFFLOAD_*` the device offers.
    pub rx_offload_capa: u64,
    /// `RTE_ETH_TX_OFFLOAD_*` the device offers.
    pub tx_offload_capa: u64,
    /// Smallest MTU.
    pub min_mtu: u16,
    /// Largest MTU.
    pub max_mtu: u16,
}

/// Basic device counters (`rte_eth_stats_get`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EthStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Packets the device dropped for lack of receive descriptors.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// Receive mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// A configured port. Dropping the last handle (including those inside its queues) stops and
/// closes it.
#[derive(Clone)]
pub struct EthPort {
    inner: Arc<PortInner>,
}

struct PortInner {
    id: PortId,
    info: DevInfo,
    tx_ipv4_checksum: bool,
    rx_ipv4_checksum: bool,
    started: AtomicBool,
    /// Keeps the pool filling the receive rings alive while the port exists.
    _pool: Mempool,
    _eal: Eal,
}

/// The port ids EAL found (probed devices, `--vdev`s, ports made by [`ring_pair`]).
pub fn available_ports(_eal: &Eal) -> Vec<PortId> {
    let mut out = Vec::new();
    let mut next = 0u16;
    loop {
        // SAFETY: EAL is initialised; `next` is any port id (DPDK checks the range).
        let id = unsafe { dpdk_sys::rte_eth_find_next_owned_by(next, 0) };
        if id >= u64::from(dpdk_sys::RTE_MAX_ETHPORTS) {
            break;
        }
        out.push(PortId(id as u16));
        next = id as u16 + 1;
    }
    out
}

impl EthPort {
    /// The ports EAL found.
    pub fn available(eal: &Eal) -> Vec<PortId> {
        available_ports(eal)
    }

    /// Reads a device's info without configuring it.
    pub fn info_of(_eal: &Eal, id: PortId) -> Result<DevInfo, DpdkError> {
        let mut raw = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: EAL is initialised; `raw` is a writable rte_eth_dev_info.
        let rc = unsafe { dpdk_sys::rte_eth_dev_info_get(id.0, &mut raw) };
        check("rte_eth_dev_info_get", rc, Convention::NegErrno)?;
        let driver_name = if raw.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: a non-NULL driver_name is the PMD's static NUL-terminated name.
            unsafe { CStr::from_ptr(raw.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(DevInfo {
            driver_name,
            if_index: raw.if_index,
            max_rx_queues: raw.max_rx_queues,
            max_tx_queues: raw.max_tx_queues,
            rx_offload_capa: raw.rx_offload_capa,
            tx_offload_capa: raw.tx_offload_capa,
            min_mtu: raw.min_mtu,
            max_mtu: raw.max_mtu,
        })
    }

    /// Configures port `id` and sets up its queues (receive queues filled from `pool`); the
    /// port is not started. Returns the port and one unique handle per queue.
    pub fn configure(
        eal: &Eal,
        id: PortId,
        config: &PortConfig,
        pool: &Mempool,
    ) -> Result<(EthPort, Vec<RxQueue>, Vec<TxQueue>), DpdkError> {
        let info = Self::info_of(eal, id)?;
        let tx_ck = u64::from(dpdk_sys::RTE_ETH_TX_OFFLOAD_IPV4_CKSUM);
        let rx_ck = u64::from(dpdk_sys::RTE_ETH_RX_OFFLOAD_IPV4_CKSUM);
        let tx_ipv4_checksum = config.tx_ipv4_checksum && info.tx_offload_capa & tx_ck != 0;
        let rx_ipv4_checksum = config.rx_ipv4_checksum && info.rx_offload_capa & rx_ck != 0;

        let mut conf = dpdk_sys::rte_eth_conf::default();
        if tx_ipv4_checksum {
            conf.txmode.offloads |= tx_ck;
        }
        if rx_ipv4_checksum {
            conf.rxmode.offloads |= rx_ck;
        }
        // SAFETY: EAL is initialised; `conf` is a valid configuration DPDK copies.
        let rc = unsafe {
            dpdk_sys::rte_eth_dev_configure(id.0, config.rx_queues, config.tx_queues, &conf)
        };
        check("rte_eth_dev_configure", rc, Convention::NegErrno)?;

        // SAFETY: the port id is valid (configure succeeded).
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id.0) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        // From here on the port is configured: the `PortInner` closes it on any error below.
        let inner = Arc::new(PortInner {
            id,
            info,
            tx_ipv4_checksum,
            rx_ipv4_checksum,
            started: AtomicBool::new(false),
            _pool: pool.clone(),
            _eal: eal.clone(),
        });
        let mut rxq = Vec::with_capacity(usize::from(config.rx_queues));
        for q in 0..config.rx_queues {
            // SAFETY: the port is configured with `rx_queues` queues and stopped; NULL rxconf
            // means the driver's defaults; `pool` is a live packet pool that outlives the port
            // (the port holds a clone).
            let rc = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    id.0,
                    q,
                    config.rx_desc,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            check("rte_eth_rx_queue_setup", rc, Convention::NegErrno)?;
            rxq.push(RxQueue {
                port: inner.clone(),
                id: QueueId(q),
            });
        }
        let mut txq = Vec::with_capacity(usize::from(config.tx_queues));
        for q in 0..config.tx_queues {
            // SAFETY: as above, for transmit queues (NULL txconf: the driver's defaults).
            let rc = unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(id.0, q, config.tx_desc, socket, std::ptr::null())
            };
            check("rte_eth_tx_queue_setup", rc, Convention::NegErrno)?;
            txq.push(TxQueue {
                port: inner.clone(),
                id: QueueId(q),
            });
        }
        let port = EthPort { inner };
        if config.promiscuous {
            // Some PMDs (net_ring, net_null) do not implement it; a failure is not fatal.
            if let Err(e) = port.set_promiscuous(true) {
                tracing::debug!(port = id.0, error = %e, "promiscuous mode not available");
            }
        }
        Ok((port, rxq, txq))
    }

    /// The port id.
    pub fn id(&self) -> PortId {
        self.inner.id
    }

    /// The device info read at configuration.
    pub fn info(&self) -> &DevInfo {
        &self.inner.info
    }

    /// Whether transmit IPv4 checksum offload was enabled.
    pub fn tx_ipv4_checksum_offload(&self) -> bool {
        self.inner.tx_ipv4_checksum
    }

    /// Whether receive IPv4 checksum validation was enabled.
    pub fn rx_ipv4_checksum_offload(&self) -> bool {
        self.inner.rx_ipv4_checksum
    }

    /// Starts the port.
    pub fn start(&self) -> Result<(), DpdkError> {
        // SAFETY: the port is configured with its queues set up.
        let rc = unsafe { dpdk_sys::rte_eth_dev_start(self.inner.id.0) };
        check("rte_eth_dev_start", rc, Convention::NegErrno)?;
        self.inner.started.store(true, Ordering::Release);
        Ok(())
    }

    /// Stops the port (queues stop delivering; bursts return 0).
    pub fn stop(&self) -> Result<(), DpdkError> {
        self.inner.stop()
    }

    /// The port's MAC address.
    pub fn mac_addr(&self) -> Result<[u8; 6], DpdkError> {
        let mut mac = dpdk_sys::rte_ether_addr::default();
        // SAFETY: the port is valid; `mac` is writable.
        let rc = unsafe { dpdk_sys::rte_eth_macaddr_get(self.inner.id.0, &mut mac) };
        check("rte_eth_macaddr_get", rc, Convention::NegErrno)?;
        Ok(mac.addr_bytes)
    }

    /// The MTU (IP packet size, without the Ethernet header).
    pub fn mtu(&self) -> Result<u16, DpdkError> {
        let mut mtu = 0u16;
        // SAFETY: the port is valid; `mtu` is writable.
        let rc = unsafe { dpdk_sys::rte_eth_dev_get_mtu(self.inner.id.0, &mut mtu) };
        check("rte_eth_dev_get_mtu", rc, Convention::NegErrno)?;
        Ok(mtu)
    }

    /// Sets the MTU (before or after start, as the driver allows).
    pub fn set_mtu(&self, mtu: u16) -> Result<(), DpdkError> {
        // SAFETY: the port is valid.
        let rc = unsafe { dpdk_sys::rte_eth_dev_set_mtu(self.inner.id.0, mtu) };
        check("rte_eth_dev_set_mtu", rc, Convention::NegErrno).map(drop)
    }

    /// Whether the link is up (without waiting; memif links come up when the peer connects).
    pub fn link_up(&self) -> Result<bool, DpdkError> {
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: the port is valid; `link` is writable.
        let rc = unsafe { dpdk_sys::rte_eth_link_get_nowait(self.inner.id.0, &mut link) };
        check("rte_eth_link_get_nowait", rc, Convention::NegErrno)?;
        Ok(link.link_status() != 0)
    }

    /// Enables or disables promiscuous mode.
    pub fn set_promiscuous(&self, on: bool) -> Result<(), DpdkError> {
        // SAFETY: the port is valid.
        let rc = unsafe {
            if on {
                dpdk_sys::rte_eth_promiscuous_enable(self.inner.id.0)
            } else {
                dpdk_sys::rte_eth_promiscuous_disable(self.inner.id.0)
            }
        };
        check("rte_eth_promiscuous_enable", rc, Convention::NegErrno).map(drop)
    }

    /// The device counters.
    pub fn stats(&self) -> Result<EthStats, DpdkError> {
        let mut raw = dpdk_sys::rte_eth_stats::default();
        // SAFETY: the port is valid; `raw` is writable.
        let rc = unsafe { dpdk_sys::rte_eth_stats_get(self.inner.id.0, &mut raw) };
        check("rte_eth_stats_get", rc, Convention::NegErrno)?;
        Ok(EthStats {
            ipackets: raw.ipackets,
            opackets: raw.opackets,
            ibytes: raw.ibytes,
            obytes: raw.obytes,
            imissed: raw.imissed,
            ierrors: raw.ierrors,
            oerrors: raw.oerrors,
            rx_nombuf: raw.rx_nombuf,
        })
    }
}

impl PortInner {
    fn stop(&self) -> Result<(), DpdkError> {
        if !self.started.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        // SAFETY: the port is valid and started.
        let rc = unsafe { dpdk_sys::rte_eth_dev_stop(self.id.0) };
        check("rte_eth_dev_stop", rc, Convention::NegErrno).map(drop)
    }
}

impl Drop for PortInner {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(port = self.id.0, error = %e, "stopping port");
        }
        // SAFETY: no handle on the port or its queues remains, so nothing polls it; closing
        // returns the mbufs in its rings to the pool, which is still alive (`_pool` drops
        // after this).
        let rc = unsafe { dpdk_sys::rte_eth_dev_close(self.id.0) };
        if rc < 0 {
            tracing::warn!(port = self.id.0, rc, "rte_eth_dev_close failed");
        }
    }
}

/// The unique handle on one receive queue: poll it from one thread.
pub struct RxQueue {
    port: Arc<PortInner>,
    id: QueueId,
}

impl RxQueue {
    /// The port.
    pub fn port_id(&self) -> PortId {
        self.port.id
    }

    /// The queue.
    pub fn queue_id(&self) -> QueueId {
        self.id
    }

    /// Receives up to `burst.spare()` packets, appending them to `burst`; returns how many.
    #[inline]
    pub fn rx_burst<const N: usize>(&mut self, burst: &mut MbufBurst<N>) -> usize {
        self.rx_burst_max(burst, usize::MAX)
    }

    /// Receives up to `max` packets (and at most `burst.spare()`) into `burst`.
    #[inline]
    pub fn rx_burst_max<const N: usize>(&mut self, burst: &mut MbufBurst<N>, max: usize) -> usize {
        let room = burst.spare().min(max).min(usize::from(u16::MAX)) as u16;
        if room == 0 {
            return 0;
        }
        let tail = burst.spare_ptr();
        // SAFETY: this handle is the only user of (port, queue) (`&mut self`, not Clone);
        // `tail` has `room` writable slots; DPDK writes `n <= room` owned mbuf pointers there.
        let n = unsafe { dpdk_sys::naam_eth_rx_burst(self.port.id.0, self.id.0, tail, room) };
        // SAFETY: the `n` slots after the live range now hold owned mbufs.
        unsafe { burst.assume_filled(usize::from(n)) };
        usize::from(n)
    }
}

/// The unique handle on one transmit queue: use it from one thread.
pub struct TxQueue {
    port: Arc<PortInner>,
    id: QueueId,
}

impl TxQueue {
    /// The port.
    pub fn port_id(&self) -> PortId {
        self.port.id
    }

    /// The queue.
    pub fn queue_id(&self) -> QueueId {
        self.id
    }

    /// Hands the mbufs at the front of `burst` to the device; those it did not take (ring
    /// full) stay in `burst`, moved to the front. Returns how many were sent.
    #[inline]
    pub fn tx_burst<const N: usize>(&mut self, burst: &mut MbufBurst<N>) -> usize {
        let count = burst.len().min(usize::from(u16::MAX)) as u16;
        if count == 0 {
            return 0;
        }
        // SAFETY: this handle is the only user of (port, queue); the first `count` slots
        // hold owned mbufs; DPDK takes ownership of the first `n` returned.
        let n = unsafe {
            dpdk_sys::naam_eth_tx_burst(self.port.id.0, self.id.0, burst.raw_ptr(), count)
        };
        // SAFETY: the device now owns the first `n` mbufs.
        unsafe { burst.forget_front(usize::from(n)) };
        usize::from(n)
    }
}

/// Creates two ethdev ports joined back to back through a pair of rings (`rte_eth_from_rings`):
/// what one transmits, the other receives. For tests and in-process generators. The rings
/// live as long as the process.
pub fn ring_pair(_eal: &Eal, name: &str) -> Result<(PortId, PortId), DpdkError> {
    let mk = |suffix: &str| -> Result<*mut dpdk_sys::rte_ring, DpdkError> {
        let n = CString::new(format!("{name}_{suffix}")).map_err(|_| DpdkError {
            op: "rte_ring_create",
            errno: libc::EINVAL,
            message: format!("ring name {name:?} contains a NUL byte"),
        })?;
        // SAFETY: EAL is initialised; `n` is a valid C string DPDK copies; flags 0 is a
        // multi-producer/multi-consumer ring.
        let r = unsafe { dpdk_sys::rte_ring_create(n.as_ptr(), 1024, 0, 0) };
        if r.is_null() {
            Err(DpdkError::from_rte_errno("rte_ring_create"))
        } else {
            Ok(r)
        }
    };
    let a_to_b = mk("ab")?;
    let b_to_a = mk("ba")?;
    let mk_port = |suffix: &str, rx: *mut dpdk_sys::rte_ring, tx: *mut dpdk_sys::rte_ring| {
        let n = CString::new(format!("{name}_{suffix}")).expect("checked above");
        // SAFETY: `rx` and `tx` are live rings (never freed); the arrays hold one each.
        let rc = unsafe { dpdk_sys::rte_eth_from_rings(n.as_ptr(), &rx, 1, &tx, 1, 0) };
        check("rte_eth_from_rings", rc, Convention::RteErrno).map(|p| PortId(p as u16))
    };
    let a = mk_port("a", b_to_a, a_to_b)?;
    let b = mk_port("b", a_to_b, b_to_a)?;
    Ok((a, b))
}
