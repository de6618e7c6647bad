//! The safe DPDK layer over `dpdk-sys` (the dataplane's feature `dpdk`): EAL, mempools, mbufs
//! and bursts, ethdev ports and queues, and `rte_flow`. `dpdk-sys` holds only the bindings and
//! the C shim; this crate owns every `unsafe` call into them, each with a `// SAFETY:` comment
//! saying why it holds, so that its users (the dataplane's DPDK port and rte_flow steering)
//! need none.
//!
//! Lifetimes are carried by types: [`Eal`] is a shared handle and EAL is cleaned up when the
//! last handle (held by every pool, port and queue) goes; a [`Mempool`] outlives the ports whose
//! receive rings it fills; an [`EthPort`] is closed only when its [`RxQueue`]s and
//! [`TxQueue`]s are gone; each queue handle is unique, so one queue is polled by one thread.
//! Setup lives in `eal`, `mempool` and `ethdev`; the data path in `mbuf` and the queue
//! handles.

mod eal;
mod error;
mod ethdev;
pub mod flow;
mod mbuf;
mod mempool;

pub use eal::{Eal, LcoreId};
pub use error::DpdkError;
pub use ethdev::{
    ring_pair, DevInfo, EthPort, EthStats, PortConfig, PortId, QueueId, RxQueue, TxQueue,
};
pub use mbuf::{Mbuf, MbufBurst};
pub use mempool::Mempool;

/// The default mbuf data room (2048 bytes of data plus `RTE_PKTMBUF_HEADROOM`).
pub const MBUF_DATA_ROOM: u16 = dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;

/// What a received mbuf's offload flags ([`Mbuf::ol_flags`]) say of its IPv4 header checksum.
pub mod rx_ip_checksum {
    /// The bits that carry it.
    pub const MASK: u64 = dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_MASK as u64;
    /// The device checked it: wrong.
    pub const BAD: u64 = dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_BAD as u64;
    /// The device checked it: right.
    pub const GOOD: u64 = dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_GOOD as u64;
}
