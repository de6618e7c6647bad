//! The link between the NIC dataplane and the host agent (DESIGN §6): registered regions,
//! one-sided READ / WRITE / WRITE-with-doorbell / CAS / FAA, send/receive rings of fixed-size
//! messages and completion polling.
//!
//! The API is shaped like RDMA verbs, narrowed to what NAAM needs:
//!
//! - the memory owner (the host agent) registers regions; each becomes a directory entry
//!   (`RegionDesc` plus where it lives) that the other side turns into its region table;
//! - each worker owns one **queue pair** ([`Link`]): one-sided ops are *posted* with a work
//!   request id and finish through [`Link::poll_completions`]; a ring pair carries fixed-size
//!   messages both ways ([`Link::send`] / [`Link::recv`]);
//! - a local staging buffer per queue pair is what READ fills and WRITE sends, so posting never
//!   allocates and never borrows caller memory across an asynchronous operation.
//!
//! Backends: [`shm`] (memfd shared between processes; the default) and `verbs` (RC queue pairs
//! through the `sideway` crate, feature `verbs`).
//!
//! ```
//! use naam_link::{Completion, Link, Perms, RegionSpec, RemoteAddr, ShmConfig, ShmHost};
//! use naam_link::shm::ConnectOptions;
//!
//! // Host agent: the area, a region, a socket (here a socket pair in one process).
//! let mut host = ShmHost::create(&ShmConfig { arena_bytes: 1 << 20, ..Default::default() })?;
//! let key = 0x1234_5678_9abc_def0;
//! host.register_region(RegionSpec { id: 1, tenant: 7, len: 4096, perms: Perms::ALL, key })?;
//! let mut worker = host.qp(0)?; // host worker 0's end of queue pair 0
//! host.load_publisher().publish(0, 100_000, 0, naam_link::now_ns());
//!
//! // Dataplane: map the area (ShmLink::connect(path, ..) across processes).
//! let link = host.connect_local(ConnectOptions::default())?;
//! let table = link.region_table(); // check handler ops against this,
//! let _mem = link.memory();        // and execute them with this (naam_core::memory::Memory)
//! assert!(table.get(1).is_some());
//! let mut nic = link.qp(0)?;
//!
//! // One-sided: FAA, completed through the queue.
//! nic.post_faa(42, RemoteAddr { region: 1, offset: 0, key }, 5)?;
//! let mut done = [Completion::default(); 4];
//! assert_eq!(nic.poll_completions(&mut done), 1);
//! assert_eq!((done[0].wr_id, done[0].value), (42, 0));
//!
//! // Rings: a request to host worker 0 and its reply.
//! nic.send(b"request")?;
//! let mut buf = [0u8; naam_link::MSG_MAX];
//! let got = worker.recv(&mut buf)?.expect("queued");
//! worker.send(&buf[..got.len])?;
//! assert_eq!(nic.recv(&mut buf)?.map(|r| r.len), Some(7));
//! link.check_peer(naam_link::now_ns())?;
//! # Ok::<(), naam_link::LinkError>(())
//! ```

#![deny(unsafe_code)]

mod cq;
pub mod error;
pub mod layout;
pub mod log;
pub mod mapped_file;
pub mod parent;
pub mod ring;
pub mod shm;
#[allow(unsafe_code)]
mod sys;
#[cfg(feature = "verbs")]
pub mod verbs;

pub use error::{CorruptKind, GoneReason, LinkError};
pub use mapped_file::{MappedFile, Opened};
pub use naam_core::memory::{LocalMemory, RegionMem};
pub use naam_core::region::{Perms, RegionDesc, RegionId, RegionTable, TenantId};
pub use ring::{Backoff, BackoffMode, MSG_MAX, REPLY_PREFIX, SLOT_SIZE, TOKEN_LEN};
pub use shm::{
    ConnectOptions, LoadPublisher, LoadReport, PeerEvent, PeerRefusals, ShmConfig, ShmHost,
    ShmLink, ShmMemory, ShmQp, ShmRegion,
};
pub use sys::wait_readable;

/// The most bytes one READ or WRITE moves (a handler op's data window, `DATA_SIZE`); larger
/// transfers are split by the caller.
pub const MAX_OP_LEN: u32 = naam_core::abi::DATA_SIZE as u32;

/// A work request id: chosen by the poster, returned in its completion.
pub type WrId = u64;

/// CLOCK_MONOTONIC in nanoseconds, comparable across processes of this machine. Pass it as
/// `now_ns` to the calls that take one.
pub fn now_ns() -> u64 {
    sys::monotonic_ns()
}

/// Where a one-sided op lands on the peer: a registered region, an offset in it, and the
/// region's key (checked before the op runs; a wrong key is refused and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr {
    pub region: RegionId,
    pub offset: u64,
    pub key: u64,
}

/// A region to register: the link allocates its memory (in the shared memfd, or as a
/// verbs memory region) and returns where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionSpec {
    pub id: RegionId,
    pub tenant: TenantId,
    pub len: u64,
    pub perms: Perms,
    pub key: u64,
}

impl RegionSpec {
    pub fn desc(&self) -> RegionDesc {
        RegionDesc {
            id: self.id,
            tenant: self.tenant,
            len: self.len,
            perms: self.perms,
            key: self.key,
        }
    }
}

/// One entry of the region directory: the region's description and where its bytes are
/// (an offset in the shared memfd for shm; a virtual address and rkey for verbs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry {
    pub desc: RegionDesc,
    pub offset: u64,
    /// The transport's own key (a verbs rkey); 0 for shm.
    pub rkey: u32,
}

/// Which posted op a completion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpKind {
    #[default]
    Read,
    Write,
    WriteDoorbell,
    Cas,
    Faa,
}

/// How a posted op ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompletionStatus {
    #[default]
    Success,
    /// The transport failed the op (a verbs work-completion error; `code` is its status).
    Failed { code: u32 },
    /// The peer went away before the op completed.
    PeerGone,
}

/// A finished work request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Completion {
    pub wr_id: WrId,
    pub kind: OpKind,
    pub status: CompletionStatus,
    /// The previous word for CAS and FAA; 0 otherwise.
    pub value: u64,
    /// Bytes moved (READ / WRITE), 8 for atomics.
    pub len: u32,
}

/// What [`Link::recv`] delivered: a message of `len` bytes (copied into the caller's buffer),
/// or a doorbell from [`Link::post_write_doorbell`] (`len == 0`, `imm` set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub imm: Option<u32>,
}

/// Counters kept by each queue pair (nothing on the data path is dropped without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkCounters {
    pub posted: u64,
    pub completed: u64,
    pub sent: u64,
    pub received: u64,
    pub doorbells_rung: u64,
    /// Sends refused because the ring was full (back-pressure).
    pub ring_full: u64,
    /// Posts refused because the completion queue was full.
    pub cq_full: u64,
    /// Ring entries skipped as corrupt.
    pub corrupt: u64,
    /// One-sided ops refused for a wrong region key.
    pub bad_key: u64,
    /// One-sided ops refused for any other check (bounds, permission, no such region, ...).
    pub refused: u64,
    /// Times the peer was found gone.
    pub peer_gone: u64,
}

impl LinkCounters {
    /// Checks a posted one-sided op against the queue pair's region table (key, bounds,
    /// permissions), counting a refusal (`bad_key` or `refused`). Both backends check here,
    /// before anything is posted.
    pub(crate) fn check_posted(
        &mut self,
        table: &naam_core::region::RegionTable,
        key: u64,
        raw: &naam_core::abi::RawOp,
    ) -> Result<naam_core::region::CheckedOp, LinkError> {
        table.check_keyed(key, raw).map_err(|e| {
            if matches!(e, naam_core::region::OpError::BadKey { .. }) {
                self.bad_key += 1;
            } else {
                self.refused += 1;
            }
            LinkError::Refused(e)
        })
    }
}

/// The memory owner's side of a link (the host agent): registers regions and publishes them in
/// the directory its peers build their region tables from.
pub trait LinkHost {
    /// Allocates `spec.len` bytes of registered memory for region `spec.id` and publishes it.
    fn register_region(&mut self, spec: RegionSpec) -> Result<DirEntry, LinkError>;
    fn directory(&self) -> Vec<DirEntry>;
}

/// The peer's memory, mapped in this process: ops run at once, in the caller's thread, in
/// order, straight into and out of the caller's buffers. `table` is the link's current region
/// directory (check every op against it: the views in `mem` are the ones it describes).
pub struct Direct<'a> {
    pub table: &'a RegionTable,
    pub mem: &'a mut LocalMemory,
}

/// One queue pair of the link, owned by one worker thread. Generic code takes `L: Link` so the
/// hot path is monomorphised; no method allocates.
pub trait Link {
    /// The local staging buffer: READ lands in it, WRITE and WRITE-with-doorbell send from it.
    fn local(&self) -> &RegionMem;

    /// The peer's memory, when this backend maps it here (shm): a caller that checked its ops
    /// against `table` may execute them on it instead of posting them, which saves the staging
    /// copies, the completion queue and the second check of every post. `None` for backends
    /// whose ops complete later (verbs); `PeerGone` once the peer is gone, as a post would say.
    fn direct(&mut self) -> Result<Option<Direct<'_>>, LinkError> {
        Ok(None)
    }

    /// Posts a READ of `len` (1..=[`MAX_OP_LEN`]) bytes at `remote` into `local()[local_off..]`.
    /// Every post is checked first (region key, bounds, permission, local range, queue space);
    /// a refused op returns the error at once, is counted, and never completes.
    fn post_read(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
    ) -> Result<(), LinkError>;

    /// Posts a WRITE of `local()[local_off..+len]` to `remote`.
    fn post_write(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
    ) -> Result<(), LinkError>;

    /// Posts a WRITE, then rings the peer: its [`Link::recv`] returns a doorbell carrying `imm`
    /// after the written bytes are visible (RDMA WRITE with immediate).
    fn post_write_doorbell(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
        imm: u32,
    ) -> Result<(), LinkError>;

    /// Posts a compare-and-swap of the aligned word at `remote`; the completion's `value` is
    /// the previous word.
    fn post_cas(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        expected: u64,
        desired: u64,
    ) -> Result<(), LinkError>;

    /// Posts a fetch-and-add on the aligned word at `remote`; the completion's `value` is the
    /// previous word.
    fn post_faa(&mut self, wr_id: WrId, remote: RemoteAddr, add: u64) -> Result<(), LinkError>;

    /// Moves up to `out.len()` finished work requests into `out`, oldest first; returns how many.
    fn poll_completions(&mut self, out: &mut [Completion]) -> usize;

    /// Sends one message (at most [`MSG_MAX`] bytes) on the ring towards the peer.
    /// A full ring returns [`LinkError::Full`] and writes nothing.
    fn send(&mut self, msg: &[u8]) -> Result<(), LinkError>;

    /// Takes the next message or doorbell from the peer, if any. A corrupt entry is skipped,
    /// counted and returned as [`LinkError::Corrupt`]; the next call continues after it.
    /// Pass a buffer of [`MSG_MAX`] bytes (shm accepts smaller ones when the message fits and
    /// leaves the message queued otherwise; verbs requires the full size). Messages still in
    /// the ring are delivered after the peer died; an empty ring then reports `PeerGone`.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<Received>, LinkError>;

    /// Blocks the calling worker until something may be receivable, after `backoff.spins`
    /// empty checks, for at most `backoff.sleep`. Returns at once when disabled.
    fn wait_recv(&mut self, backoff: &Backoff);

    /// Checks that the peer is alive (cheap: a flag and a heartbeat load; the socket is polled
    /// at most once per millisecond). Once gone, stays gone: reconnect with a new link. Call
    /// it between polls, with no op under way: over shared memory it is also where a
    /// dataplane queue pair holds still while the host takes a snapshot (up to 1 s).
    fn check_peer(&mut self, now_ns: u64) -> Result<(), LinkError>;

    fn counters(&self) -> LinkCounters;
}
