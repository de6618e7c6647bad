//! Link errors. Each names what went wrong with the values involved.

use naam_core::region::{OpError, RegionId};
use std::io;

/// Why the peer is considered gone. A late heartbeat is not among them: a stalled peer is
/// only suspect ([`LinkError::PeerSuspect`]) and comes back when its heartbeat does (DESIGN §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneReason {
    /// The connection socket closed: the peer process exited or crashed.
    SocketClosed,
    /// The transport reported a fatal error (a verbs work completion error, a dead QP).
    Transport,
}

impl core::fmt::Display for GoneReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GoneReason::SocketClosed => write!(f, "connection socket closed"),
            GoneReason::Transport => write!(f, "transport error"),
        }
    }
}

/// What was wrong with a corrupt ring entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptKind {
    /// The entry's sequence number is not the ring position it sits at.
    Sequence { expected: u64, found: u64 },
    /// The entry claims more bytes than a slot holds.
    Length { len: u32 },
    /// The checksum over header and payload does not match.
    Checksum,
    /// The producer's tail moved backwards or further than the ring holds.
    Tail { head: u64, tail: u64 },
}

impl core::fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CorruptKind::Sequence { expected, found } => {
                write!(f, "sequence {found}, expected {expected}")
            }
            CorruptKind::Length { len } => write!(f, "length {len} larger than a slot"),
            CorruptKind::Checksum => write!(f, "checksum mismatch"),
            CorruptKind::Tail { head, tail } => {
                write!(f, "tail {tail} impossible with head {head}")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The ring towards the peer has no free slot: back-pressure, nothing was written.
    #[error("ring full ({slots} slots): back-pressure")]
    Full { slots: u32 },
    /// The local completion queue holds `depth` unpolled completions: poll before posting more.
    #[error("completion queue full ({depth} entries): poll completions first")]
    CqFull { depth: usize },
    #[error("message of {len} bytes is larger than the {max}-byte slot payload")]
    TooLong { len: usize, max: usize },
    #[error("receive buffer of {len} bytes is smaller than the {needed}-byte message")]
    BufferTooSmall { len: usize, needed: usize },
    /// A ring entry failed its checks; it was skipped and counted.
    #[error("corrupt ring entry at position {pos}: {kind}")]
    Corrupt { pos: u64, kind: CorruptKind },
    /// A one-sided op was refused by the region checks (wrong key, out of range, permission).
    #[error(transparent)]
    Refused(#[from] OpError),
    #[error("local buffer range {offset}..+{len} is outside the {size}-byte local buffer")]
    LocalOutOfRange { offset: u64, len: u64, size: u64 },
    #[error("region {region} is in the directory but outside the mapped memory")]
    Unmapped { region: RegionId },
    /// The host agent serves another dataplane (process `pid`); one at a time.
    #[error("the host agent serves another dataplane (pid {pid}); stop it first")]
    PeerTaken { pid: u64 },
    #[error("peer gone: {reason}")]
    PeerGone { reason: GoneReason },
    /// The peer's heartbeat is older than the staleness limit: it may be stalled (stopped,
    /// descheduled) rather than dead. Not sticky: the next check after a fresh heartbeat passes.
    #[error("peer suspect: heartbeat {age_ms} ms old")]
    PeerSuspect { age_ms: u64 },
    #[error("queue pair {qp} does not exist (there are {qps})")]
    NoSuchQp { qp: u32, qps: u32 },
    #[error("queue pair {qp} is already in use in this process")]
    QpInUse { qp: u32 },
    #[error("region table: {reason}")]
    Directory { reason: &'static str },
    #[error("shared area layout invalid: {reason}")]
    Layout { reason: &'static str },
    /// A snapshot that cannot be restored (nothing of it is kept).
    #[error("snapshot refused: {reason}")]
    Snapshot { reason: String },
    /// A persistent area file that is not a link area this host agent can reopen: refused,
    /// never recreated over (it may be someone's data).
    #[error("persistent link area {}: {reason} (move it away to start afresh)", path.display())]
    Persist {
        path: std::path::PathBuf,
        reason: String,
    },
    /// A persistent area whose folder does not exist (or is not a folder).
    #[error("persistent link area {}: {} is not a directory (make it first, on a tmpfs such as /dev/shm)", path.display(), dir.display())]
    PersistDir {
        path: std::path::PathBuf,
        dir: std::path::PathBuf,
    },
    /// A persistent area another host agent serves (its lock file is held).
    #[error("persistent link area {}: in use by another host agent ({} is locked); stop that one first", path.display(), lock.display())]
    PersistInUse {
        path: std::path::PathBuf,
        lock: std::path::PathBuf,
    },
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The RDMA device or verbs library failed (verbs backend).
    #[error("rdma: {what}: {detail}")]
    Rdma { what: &'static str, detail: String },
}

impl LinkError {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> LinkError {
        move |source| LinkError::Io { what, source }
    }

    /// True for [`LinkError::PeerGone`].
    pub fn is_peer_gone(&self) -> bool {
        matches!(self, LinkError::PeerGone { .. })
    }

    /// True for [`LinkError::PeerSuspect`].
    pub fn is_peer_suspect(&self) -> bool {
        matches!(self, LinkError::PeerSuspect { .. })
    }

    /// Whether connecting again later can succeed: the host agent is not there yet (no
    /// socket, nobody listening) or serves another dataplane, as opposed to a path that can
    /// never hold its socket (not a directory, no permission, too long).
    pub fn may_pass(&self) -> bool {
        match self {
            LinkError::PeerTaken { .. } => true,
            LinkError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::Interrupted
            ),
            _ => true,
        }
    }
}
