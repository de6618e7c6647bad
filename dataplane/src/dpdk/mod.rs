//! The safe DPDK layer (feature `dpdk`): EAL, mempools, mbufs and bursts, ethdev ports and
//! queues, and `rte_flow`. This module (with the ports that talk to the OS) is the only place in
//! the crate allowed `unsafe`; every `unsafe` block says why it holds in a `// SAFETY:` comment.
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
