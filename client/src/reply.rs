//! What a finished request gives back (owned, so it outlives the receive buffer).

use crate::error::{ClientError, Result};
use naam_core::abi::OpKind;
use naam_core::wire::{AmStatus, ErrorCode, KvEntry, Location, PlacementHint};

/// Names a submitted request until its [`Completion`] is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// The reply of an active message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: AmStatus,
    /// Where the handler ran (`Client` for local execution).
    pub executed_at: Location,
    pub steps: u32,
    pub hint: Option<PlacementHint>,
    pub output: Vec<u8>,
    /// The offload that ran.
    pub offload: u32,
}

impl Reply {
    /// The output of a handler that returned `DONE`; an abort becomes an error.
    pub fn into_output(self) -> Result<Vec<u8>> {
        match self.status {
            AmStatus::Done => Ok(self.output),
            AmStatus::Aborted(code) => Err(ClientError::Aborted {
                offload: self.offload,
                code,
            }),
        }
    }
}

/// The result of one one-sided op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpOutcome {
    pub kind: OpKind,
    /// `None` if the op succeeded.
    pub error: Option<ErrorCode>,
    /// CAS and FAA: the word's value before the op.
    pub previous: u64,
    /// READ: the bytes read.
    pub data: Vec<u8>,
}

pub use naam_core::wire::OffloadInfo;

/// One page of a paged reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub entries: Vec<T>,
    /// `Some(start)` of the next page when more entries follow.
    pub next: Option<u32>,
}

pub(crate) fn kv_owned(e: &KvEntry<'_>) -> (String, u64) {
    (e.name.to_owned(), e.value)
}

/// What a request got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Am(Reply),
    OneSided(Vec<OpOutcome>),
    Registered(u32),
    Ack,
    List(Page<OffloadInfo>),
    Stats(Page<(String, u64)>),
    Describe(Page<(String, u64)>),
    Fetched(ProgramPiece),
}

/// A piece of an offload's verified instructions (FETCH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramPiece {
    pub total: u32,
    pub start: u32,
    pub digest: u64,
    pub bytes: Vec<u8>,
}

impl Response {
    /// The kind of reply it came in.
    pub(crate) fn kind(&self) -> naam_core::wire::Kind {
        use naam_core::wire::Kind;
        match self {
            Response::Am(_) => Kind::AmReply,
            Response::OneSided(_) => Kind::OneSidedReply,
            Response::Registered(_) => Kind::RegisterReply,
            Response::Ack => Kind::Ack,
            Response::List(_) => Kind::ListReply,
            Response::Stats(_) => Kind::StatsReply,
            Response::Describe(_) => Kind::DescribeReply,
            Response::Fetched(_) => Kind::FetchReply,
        }
    }
}

/// A finished request: its ticket and how it ended.
#[derive(Debug)]
pub struct Completion {
    pub ticket: Ticket,
    pub result: Result<Response>,
}
