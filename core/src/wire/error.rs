//! Error replies and the stable error codes (also used as per-op statuses of one-sided
//! replies).

use super::{at_most, exact, get_u16, get_u32, set_u16, set_u32, text, WireError, DETAIL_MAX};
use crate::exec::{ErrorKind, ExecError};
use crate::region::OpErrorCode;

/// Why a request failed. The numbers are part of the protocol and never change meaning;
/// a new code needs a new protocol version (receivers reject codes they do not know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The request did not parse or broke a protocol rule (wrong class for its port, …).
    BadRequest = 1,
    /// The request's protocol version is not spoken here.
    BadVersion = 2,
    /// No offload with this id (never registered, or unregistered).
    UnknownOffload = 3,
    /// The message spent its step budget.
    StepBudget = 4,
    /// The handler misbehaved: bad return value, output length past the output area, `NEXT`
    /// without ops.
    BadHandler = 5,
    /// The memory backend (or the link to host memory) failed an op.
    Memory = 6,
    /// The VM failed while running the handler.
    Vm = 7,
    /// Isolation: an op was malformed (unknown kind, too many ops, empty).
    OpMalformed = 16,
    /// Isolation: no such region.
    NoSuchRegion = 17,
    /// Isolation: the region belongs to another tenant.
    WrongTenant = 18,
    /// Isolation: the region does not allow this kind of op.
    PermissionDenied = 19,
    /// Isolation: the bytes are outside the region (or the data window outside the data area).
    OutOfBounds = 20,
    /// Isolation: an atomic op not 8-byte aligned or not 8 bytes long.
    Misaligned = 21,
    /// Isolation: a one-sided op presented the wrong region key.
    BadKey = 22,
    /// Back-pressure: the queues are full; retry later with the same request id.
    Busy = 32,
    /// The host agent is not reachable (the message needed host memory or host cores); the
    /// request was not executed.
    HostUnavailable = 33,
    /// The host agent went away while this mutation was in flight, after it may have taken
    /// effect (forwarded to the host, or a write or atomic posted): it may or may not have
    /// been executed. Not retried: the same request id answers the same; the application
    /// decides (read back, or issue a new request).
    OutcomeUnknown = 34,
    /// Register: the ELF object did not load or did not verify (the detail says why).
    InvalidProgram = 48,
    /// No room: for another offload (register), or on the filesystem of a file the request
    /// must write (the snapshot, the offloads kept for restarts).
    NoSpace = 49,
    /// This endpoint does not handle this kind of message.
    Unsupported = 50,
    /// Describe: no application by that name.
    UnknownApp = 51,
    /// Control: the request is not sealed with a known credential, its MAC is wrong, or it is
    /// expired or replayed (the detail says which).
    Unauthorized = 52,
    /// Control: the credential does not allow this request (an admin verb, another tenant's
    /// offload or application).
    Forbidden = 53,
    /// A bug on the server side.
    Internal = 0xffff,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::BadRequest,
        ErrorCode::BadVersion,
        ErrorCode::UnknownOffload,
        ErrorCode::StepBudget,
        ErrorCode::BadHandler,
        ErrorCode::Memory,
        ErrorCode::Vm,
        ErrorCode::OpMalformed,
        ErrorCode::NoSuchRegion,
        ErrorCode::WrongTenant,
        ErrorCode::PermissionDenied,
        ErrorCode::OutOfBounds,
        ErrorCode::Misaligned,
        ErrorCode::BadKey,
        ErrorCode::Busy,
        ErrorCode::HostUnavailable,
        ErrorCode::OutcomeUnknown,
        ErrorCode::InvalidProgram,
        ErrorCode::NoSpace,
        ErrorCode::Unsupported,
        ErrorCode::UnknownApp,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::Internal,
    ];

    pub fn from_u16(v: u16) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| *c as u16 == v)
    }

    /// A short stable name (for counters and the CLI).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadVersion => "bad_version",
            ErrorCode::UnknownOffload => "unknown_offload",
            ErrorCode::StepBudget => "step_budget",
            ErrorCode::BadHandler => "bad_handler",
            ErrorCode::Memory => "memory",
            ErrorCode::Vm => "vm",
            ErrorCode::OpMalformed => "op_malformed",
            ErrorCode::NoSuchRegion => "no_such_region",
            ErrorCode::WrongTenant => "wrong_tenant",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::OutOfBounds => "out_of_bounds",
            ErrorCode::Misaligned => "misaligned",
            ErrorCode::BadKey => "bad_key",
            ErrorCode::Busy => "busy",
            ErrorCode::HostUnavailable => "host_unavailable",
            ErrorCode::OutcomeUnknown => "outcome_unknown",
            ErrorCode::InvalidProgram => "invalid_program",
            ErrorCode::NoSpace => "no_space",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::UnknownApp => "unknown_app",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether a client may retry the same request (same request id) later: the request was
    /// not executed. (`OutcomeUnknown` is not: it may have been.)
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorCode::Busy | ErrorCode::HostUnavailable)
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<OpErrorCode> for ErrorCode {
    fn from(c: OpErrorCode) -> Self {
        match c {
            OpErrorCode::Malformed => ErrorCode::OpMalformed,
            OpErrorCode::NoSuchRegion => ErrorCode::NoSuchRegion,
            OpErrorCode::WrongTenant => ErrorCode::WrongTenant,
            OpErrorCode::PermissionDenied => ErrorCode::PermissionDenied,
            OpErrorCode::OutOfBounds => ErrorCode::OutOfBounds,
            OpErrorCode::Misaligned => ErrorCode::Misaligned,
            OpErrorCode::BadKey => ErrorCode::BadKey,
        }
    }
}

impl From<ErrorKind> for ErrorCode {
    fn from(k: ErrorKind) -> Self {
        match k {
            ErrorKind::UnknownOffload => ErrorCode::UnknownOffload,
            ErrorKind::StepBudget => ErrorCode::StepBudget,
            ErrorKind::BadHandler => ErrorCode::BadHandler,
            ErrorKind::Op(c) => c.into(),
            ErrorKind::Memory => ErrorCode::Memory,
            ErrorKind::Vm => ErrorCode::Vm,
        }
    }
}

impl From<&ExecError> for ErrorCode {
    fn from(e: &ExecError) -> Self {
        e.kind().into()
    }
}

mod field {
    use crate::wire::Field;

    pub const CODE: Field = 0..2;
    /// The detail length in the low 12 bits; bit 15 says a retry-after hint follows the
    /// detail (bits 12..15 are reserved, 0), so a payload cut by the hint's 4 bytes is
    /// malformed rather than a different valid reply.
    pub const DETAIL_LEN: Field = 2..4;
    pub const DETAIL: usize = 4;
    pub const LEN_MASK: u16 = 0x0fff;
    pub const HAS_RETRY_AFTER: u16 = 0x8000;
    pub const RESERVED: u16 = !(LEN_MASK | HAS_RETRY_AFTER);
    /// Bytes of the optional retry-after hint after the detail.
    pub const RETRY_AFTER_LEN: usize = 4;
}

/// A view of an error reply payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ErrorPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The detail (and the retry-after hint, when the flag says so) fill the payload.
    pub fn check_len(&self) -> Result<(), WireError> {
        let d = self.buffer.as_ref();
        super::need(field::DETAIL, d.len())?;
        if self.len_and_flags() & field::RESERVED != 0 {
            return Err(WireError::NonZeroReserved {
                field: "error.detail_len flags",
            });
        }
        let hint = if self.has_retry_after() {
            field::RETRY_AFTER_LEN
        } else {
            0
        };
        exact(
            field::DETAIL,
            self.detail_len() as usize + hint,
            d.len(),
            "error.detail_len",
            "detail",
        )
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn code(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CODE)
    }

    fn len_and_flags(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DETAIL_LEN)
    }

    pub fn detail_len(&self) -> u16 {
        self.len_and_flags() & field::LEN_MASK
    }

    pub fn has_retry_after(&self) -> bool {
        self.len_and_flags() & field::HAS_RETRY_AFTER != 0
    }

    fn retry_after_field(&self) -> super::Field {
        let at = field::DETAIL + self.detail_len() as usize;
        at..at + field::RETRY_AFTER_LEN
    }

    /// The retry-after hint in microseconds, when the payload has one.
    pub fn retry_after_us(&self) -> Option<u32> {
        self.has_retry_after()
            .then(|| get_u32(self.buffer.as_ref(), self.retry_after_field()))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> ErrorPacket<&'a T> {
    /// The detail bytes (UTF-8 once [`ErrorRepr::parse`] accepted them).
    pub fn detail(&self) -> &'a [u8] {
        let n = self.detail_len() as usize;
        &self.buffer.as_ref()[field::DETAIL..field::DETAIL + n]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ErrorPacket<T> {
    pub fn set_code(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CODE, v);
    }

    /// Sets the detail length (at most [`DETAIL_MAX`]) and whether a retry-after hint
    /// follows.
    pub fn set_detail_len(&mut self, v: u16, retry_after: bool) {
        let flag = if retry_after {
            field::HAS_RETRY_AFTER
        } else {
            0
        };
        set_u16(
            self.buffer.as_mut(),
            field::DETAIL_LEN,
            (v & field::LEN_MASK) | flag,
        );
    }

    pub fn detail_mut(&mut self) -> &mut [u8] {
        let n = self.detail_len() as usize;
        &mut self.buffer.as_mut()[field::DETAIL..field::DETAIL + n]
    }

    /// Sets the retry-after hint, after the detail (its flag set first).
    pub fn set_retry_after_us(&mut self, v: u32) {
        let f = self.retry_after_field();
        set_u32(self.buffer.as_mut(), f, v);
    }
}

/// An error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorRepr<'a> {
    pub code: ErrorCode,
    /// Human-readable detail, at most [`DETAIL_MAX`] bytes; empty when there is none.
    pub detail: &'a str,
    /// For a refusal (`busy`): in how many microseconds a retry may be admitted, when the
    /// server knows (never 0: no hint is `None`). Programs read this, never the detail.
    pub retry_after_us: Option<u32>,
}

impl<'a> ErrorRepr<'a> {
    /// An error without a retry-after hint.
    pub const fn new(code: ErrorCode, detail: &'a str) -> Self {
        Self {
            code,
            detail,
            retry_after_us: None,
        }
    }

    /// With a retry-after hint of `ns` nanoseconds (rounded up to whole microseconds).
    pub fn retry_after_ns(self, ns: u64) -> Self {
        let us = ns.div_ceil(1000).clamp(1, u64::from(u32::MAX)) as u32;
        Self {
            retry_after_us: Some(us),
            ..self
        }
    }

    /// The error as it is when the whole datagram, header included, takes at most
    /// `datagram_max` bytes; else without its detail (a detail cut short reads as a
    /// different one; the code says what happened). A server answers a sender that proved
    /// no key with at most as many bytes as it sent, or an empty-detail error when even that
    /// is more: a forged source address must not make it an amplifier.
    pub fn within(self, datagram_max: usize) -> Self {
        let fixed = super::HEADER_LEN
            + field::DETAIL
            + self.retry_after_us.map_or(0, |_| field::RETRY_AFTER_LEN);
        if fixed + self.detail.len() <= datagram_max {
            return self;
        }
        Self { detail: "", ..self }
    }

    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &ErrorPacket<&'a T>) -> Result<Self, WireError> {
        packet.check_len()?;
        let code = ErrorCode::from_u16(packet.code()).ok_or(WireError::BadValue {
            field: "error.code",
            value: packet.code() as u64,
        })?;
        let detail = text("error.detail", packet.detail(), DETAIL_MAX)?;
        let retry_after_us = packet.retry_after_us();
        if retry_after_us == Some(0) {
            // One encoding per value: no hint is the absent field.
            return Err(WireError::BadValue {
                field: "error.retry_after_us",
                value: 0,
            });
        }
        Ok(Self {
            code,
            detail,
            retry_after_us,
        })
    }

    pub fn check(&self) -> Result<(), WireError> {
        at_most("error.detail", self.detail.len(), DETAIL_MAX)?;
        if self.retry_after_us == Some(0) {
            return Err(WireError::BadValue {
                field: "error.retry_after_us",
                value: 0,
            });
        }
        Ok(())
    }

    pub fn buffer_len(&self) -> usize {
        field::DETAIL
            + self.detail.len()
            + self.retry_after_us.map_or(0, |_| field::RETRY_AFTER_LEN)
    }

    /// Writes the payload; the buffer must be exactly `buffer_len()` bytes and `check()` must
    /// pass.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ErrorPacket<T>) {
        packet.set_code(self.code as u16);
        packet.set_detail_len(self.detail.len() as u16, self.retry_after_us.is_some());
        packet.detail_mut().copy_from_slice(self.detail.as_bytes());
        if let Some(us) = self.retry_after_us {
            packet.set_retry_after_us(us);
        }
    }
}
