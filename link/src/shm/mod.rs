//! `ShmLink`: the link over a memfd shared by the host agent and the dataplane (DESIGN §6) —
//! true one-sided access to host memory, the same-machine stand-in for BlueField's DMA.
//!
//! The host agent creates the area ([`ShmHost::create`]), registers regions in it, and serves
//! it on a Unix socket ([`ShmHost::serve`], [`ShmHost::poll_peer`]): the memfd and one eventfd
//! per ring go to the dataplane with SCM_RIGHTS. The dataplane maps it ([`ShmLink::connect`])
//! and builds its region table and memory from the directory. The dataplane speaks first (a
//! short ask with its pid): a connection that does not, within a second, is closed without
//! being handed anything, so a stray client of the socket cannot hold the dataplane's place;
//! a dataplane that asks while another is connected is told so at once (its pid) instead of
//! waiting. The socket stays open: when it
//! closes, the dataplane reports [`LinkError::PeerGone`] (for good: reconnect); while the
//! host's heartbeat is late it reports [`LinkError::PeerSuspect`] (until the heartbeat returns;
//! the mapped memory stays usable). When a dataplane dies, the host accepts the next one and
//! its data stays in the memfd.
//!
//! Each side takes queue pairs ([`ShmQp`], one per worker): queue pair `i` is the ring pair
//! of host worker `i` (NIC → host requests, host → NIC replies) plus a staging buffer and a
//! completion queue for one-sided ops.

use std::path::PathBuf;
use std::time::Duration;

/// The geometry and options of a shared area (set by the host agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmConfig {
    /// Queue pairs (ring pairs): one per host worker.
    pub qps: u32,
    /// Slots per ring; a power of two.
    pub ring_slots: u32,
    /// Directory entries.
    pub max_regions: u32,
    /// Host-load entries (one per host worker).
    pub load_slots: u32,
    /// Bytes of region memory.
    pub arena_bytes: u64,
    /// Try `MFD_HUGETLB` first (falls back to normal pages, logged).
    pub hugetlb: bool,
    /// Bytes of each queue pair's local staging buffer.
    pub staging_bytes: usize,
    /// Keep the area in this file (on a tmpfs such as /dev/shm) instead of an anonymous memfd,
    /// so it survives the host agent; reopened when it exists with the same geometry.
    pub persist: Option<PathBuf>,
    /// Unpolled completions a queue pair holds before posting returns `CqFull`.
    pub cq_depth: usize,
}

impl Default for ShmConfig {
    fn default() -> Self {
        ShmConfig {
            qps: 2,
            ring_slots: 256,
            max_regions: 64,
            load_slots: 2,
            arena_bytes: 64 << 20,
            hugetlb: true,
            staging_bytes: 64 << 10,
            cq_depth: 64,
            persist: None,
        }
    }
}

/// Options of the dataplane side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The host's heartbeat is late (peer suspect) after this long; zero disables the check.
    pub stale_after: Duration,
    pub staging_bytes: usize,
    pub cq_depth: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            stale_after: Duration::from_millis(100),
            staging_bytes: 64 << 10,
            cq_depth: 64,
        }
    }
}

/// The setup message that travels with the descriptors.
const HELLO_MAGIC: u64 = u64::from_le_bytes(*b"NAAMHELO");
const HELLO_LEN: usize = 24;
/// What a dataplane says first, before the host agent hands it anything: this magic and its
/// pid (two little-endian u64). A connection that does not say it in time is closed.
const ASK_MAGIC: u64 = u64::from_le_bytes(*b"NAAMASK1");
const ASK_LEN: usize = 16;
/// The host agent's answer, instead of the hello, while it serves another dataplane: this
/// magic, that dataplane's pid, and 0 (`HELLO_LEN` bytes, no descriptors).
const BUSY_MAGIC: u64 = u64::from_le_bytes(*b"NAAMBUSY");

mod admission;
mod area;
mod host;
mod link;
mod load;
mod peer;
mod qp;
mod snapshot;
#[cfg(test)]
mod tests;

pub use admission::PeerRefusals;
pub use host::{DataplaneHold, PeerEvent, ShmHost, ShmRegion};
pub use link::{ShmLink, ShmMemory};
pub use load::{LoadPublisher, LoadReport};
pub use qp::ShmQp;
