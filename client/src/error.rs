//! Why a client call failed.

use naam_core::wire::{ErrorCode, Kind, WireError};
use std::time::Duration;

/// Every way a call, a one-sided op or a control request can fail. Fields are structured so
/// callers (and tests) can act on them; `Display` is one line for people.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No reply after the last retransmission: the outcome is unknown (a mutation may or may
    /// not have executed). `refused` is the last refusal (`busy`, `host_unavailable`, ...)
    /// the server answered to an earlier attempt, if any.
    #[error(
        "request {request_id:#x} to {to} timed out: no {} in {attempts} attempts ({waited:.1?}); {}",
        awaited.name(),
        match (refused, unmatched) {
            (Some(r), _) => format!("earlier attempts were refused: {r}"),
            // A query (STATS, LIST, FETCH) changes nothing: no write to speak of.
            (None, 0) if matches!(awaited, Kind::StatsReply | Kind::ListReply | Kind::FetchReply) => "nothing answered (no server there, or a stalled one)".to_owned(),
            (None, 0) => "nothing answered (no server there, or a stalled one: a write may still be applied)".to_owned(),
            (None, n) => format!("{n} datagrams came from its address meanwhile, none an answer to an open request (malformed, or for other requests)"),
        }
    )]
    Timeout {
        request_id: u64,
        /// Where it was sent (the data port of its class, or the control port).
        to: std::net::SocketAddr,
        /// The reply it waited for.
        awaited: Kind,
        attempts: u32,
        waited: Duration,
        refused: Option<String>,
        /// Datagrams from the server's address meanwhile that answered nothing open here.
        unmatched: u64,
    },
    /// The server answered with an ERROR reply.
    #[error("server error {}{}{detail}", code.name(), if detail.is_empty() { "" } else { ": " })]
    Server {
        request_id: u64,
        code: ErrorCode,
        detail: String,
    },
    /// The handler returned `ABORT(code)` (an application-level outcome).
    #[error("offload {offload} aborted with code {code}")]
    Aborted { offload: u32, code: u32 },
    /// A one-sided op (or an op of a locally executed step) failed at the server.
    #[error("one-sided op {index} failed: {}", code.name())]
    OpFailed { index: usize, code: ErrorCode },
    /// A datagram from the server did not parse, or a request could not be encoded.
    /// The detail is in the message, not a source, so a report of the chain says it once.
    #[error("wire format: {0}")]
    Wire(WireError),
    /// The reply was well formed but not what the request asks for.
    #[error("request {request_id:#x}: expected {expected}, got {}", got.name())]
    UnexpectedReply {
        request_id: u64,
        expected: &'static str,
        got: Kind,
    },
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A call named a class its offload is not on (the server answers `bad_request` to the
    /// same call; a client about to run it itself says so before running it).
    #[error("offload {offload} belongs to class {belongs}, not class {class}")]
    WrongClass {
        offload: u32,
        class: u16,
        belongs: u16,
    },
    /// Local execution was asked for but is not possible.
    #[error("offload {offload} cannot run at the client: {reason}")]
    NotLocal { offload: u32, reason: &'static str },
    /// Local execution of a handler failed in the runtime (not in the handler).
    #[error("local execution of offload {offload} failed")]
    Local {
        offload: u32,
        #[source]
        source: naam_core::exec::ExecError,
    },
    /// A handler object did not load or verify at the client.
    #[error("invalid program: {detail}")]
    InvalidProgram { detail: String },
    /// An object too large for one REGISTER datagram (sealed, with its name and section).
    #[error("{what} is {len} bytes: at most {max} fit in one sealed REGISTER with this name and section")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A server address no message can go to.
    #[error("address {addr}: {reason}")]
    BadAddress {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("no server {server} (the client has {servers})")]
    NoSuchServer { server: usize, servers: usize },
    #[error("{n} ops in one one-sided request; 1 to {max} are allowed", max = naam_core::wire::MAX_REMOTE_OPS)]
    BadOpCount { n: usize },
    /// A bundled application's reply (or the server's description of it) was invalid.
    #[error("{app}: {reason}")]
    App { app: &'static str, reason: String },
    /// Arguments a bundled application refuses before anything is sent (a key too long).
    #[error("{app}: {reason}")]
    Argument { app: &'static str, reason: String },
    /// A paged answer that never ended (its pages did not move on, or went past what any
    /// server holds).
    #[error("the server's {what} did not end: its pages do not move on, or go past any real size")]
    EndlessPages { what: &'static str },
    /// A program fetched from a server kept changing (or did not match its digest).
    #[error("offload {offload}'s program changed while it was fetched, {attempts} times")]
    Fetch { offload: u32, attempts: usize },
    #[error("key file {path}: {reason}")]
    KeyFile {
        path: std::path::PathBuf,
        reason: String,
    },
}

impl ClientError {
    pub(crate) fn io(what: &'static str, source: std::io::Error) -> Self {
        ClientError::Io { what, source }
    }

    /// The protocol error code, for server errors and failed ops.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } | ClientError::OpFailed { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether this is about a server: what it answered (or did not), as opposed to a
    /// request this client refused to send or a local failure.
    pub fn involves_server(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout { .. }
                | ClientError::Server { .. }
                | ClientError::Aborted { .. }
                | ClientError::OpFailed { .. }
                | ClientError::UnexpectedReply { .. }
                | ClientError::Fetch { .. }
                | ClientError::EndlessPages { .. }
                | ClientError::App { .. }
        )
    }

    /// Whether the request may have been executed although the call failed: it timed out
    /// (the reply, not the request, may have been lost) or the server answered
    /// `outcome_unknown` (its host went away with the mutation in flight). A mutation that
    /// failed this way must not be re-issued blindly: read the state back first. Any other
    /// error is a definite answer: refused and not executed (refusals the client retries
    /// itself until its retries run out), or run and failed as the error says.
    pub fn may_have_executed(&self) -> bool {
        matches!(self, ClientError::Timeout { .. })
            || self.code() == Some(ErrorCode::OutcomeUnknown)
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl From<WireError> for ClientError {
    fn from(e: WireError) -> Self {
        ClientError::Wire(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unexpected_reply_is_named_for_people() {
        let e = ClientError::UnexpectedReply {
            request_id: 7,
            expected: "describe reply",
            got: Kind::StatsReply,
        };
        assert_eq!(
            e.to_string(),
            "request 0x7: expected describe reply, got stats reply"
        );
    }
}
