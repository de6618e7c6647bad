//! The NAAM wire protocol: every datagram a client, a dataplane or a host agent exchanges.
//!
//! A datagram is a 24-byte common [`header`] followed by a payload whose layout depends on the
//! message kind ([`Kind`]). All integers are **little-endian** (the byte order of every machine
//! NAAM runs on: x86_64 hosts and BlueField's Arm cores), so both ends read them with plain
//! loads. `docs/protocol.md` is the specification; this module is its implementation.
//!
//! The code follows smoltcp: per message family a zero-copy `…Packet<T: AsRef<[u8]>>` view
//! whose private `mod field` names the byte ranges, a `check_len` that validates every length
//! once so the accessors cannot panic afterwards, setters when `T: AsMut<[u8]>`; and a `…Repr`
//! that borrows its variable-length parts from the buffer (`parse`), knows its size
//! (`buffer_len`) and writes itself back (`emit`) without allocating.
//!
//! Most callers use [`Message`]: [`Message::parse`] on a received datagram and
//! [`Message::emit`] into a send buffer. Parsing never panics on any input; the bounded
//! property test `core/tests/wire_props.rs` and the `wire_parse` fuzz target check it.

pub mod am;
pub mod control;
pub mod error;
pub mod fetch;
pub mod header;
pub mod list;
pub mod message;
pub mod onesided;
pub mod sealed;

pub use am::{
    peek_am_tenant, AmFlags, AmReplyPacket, AmReplyRepr, AmRequestPacket, AmRequestRepr, AmStatus,
    Location, PlacementHint,
};
pub use control::{
    check_offload_name, congest_ms, sealed_object_max, DescribePacket, DescribeRepr,
    OffloadIdPacket, OffloadIdRepr, PageRequestPacket, PageRequestRepr, RegisterPacket,
    RegisterRepr, CONGEST_HOST, CONGEST_MAX_MS, CONGEST_NIC, OBJECT_MAX,
};
pub use error::{ErrorCode, ErrorPacket, ErrorRepr};
pub use fetch::{program_digest, FetchReplyRepr, FetchRepr, FETCH_CHUNK};
pub use header::{id_before, retired_below, Flags, HeaderPacket, HeaderRepr, Kind};
pub use list::{
    fit_page, EntryIter, EntryList, KvEntry, KvListRepr, ListEntry, ListReplyRepr, OffloadEntry,
    OffloadInfo, PagedPacket, PagedRepr,
};
pub use message::{Body, Message};
pub use onesided::{
    OneSidedPacket, OneSidedReplyPacket, OneSidedReplyRepr, OneSidedRepr, OpBody, OpResult,
    RemoteOp,
};
pub use sealed::{SealedPacket, SealedRepr, MAC_LEN, SEALED_OVERHEAD};

/// The two bytes every NAAM datagram starts with: ASCII `"NA"`.
pub const MAGIC: [u8; 2] = *b"NA";
/// The protocol version this code speaks. A receiver rejects every other version.
pub const VERSION: u8 = 1;
/// Length of the common header.
pub const HEADER_LEN: usize = 24;
/// The largest UDP payload over IPv4 (65535 − 20 − 8): no datagram is longer.
pub const MAX_DATAGRAM: usize = 65507;
/// The longest time a client sends copies of one request id by default (the client
/// library's `max_retry_span`): a server that forgets a mutation's reply sooner may run a
/// late retransmission of it again (docs/protocol.md).
pub const DEFAULT_RETRY_SPAN_MS: u64 = 2500;
/// The largest payload after the common header.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - HEADER_LEN;
/// The longest name (offload, ELF section, counter, parameter, application), in bytes.
pub const NAME_MAX: usize = 64;
/// The longest detail text of an error reply, in bytes.
pub const DETAIL_MAX: usize = 200;

/// Whether `c` may not appear in a name shown in listings: a control character (a tab or a
/// newline would forge rows), or one that is invisible or reorders the text around it
/// (zero-width spaces and joiners, bidirectional overrides and isolates, line and paragraph
/// separators, the soft hyphen), with which one tenant's offload could show as another's
/// (probe 22).
pub fn hides_text(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary: how a
/// name or an error detail is cut to fit its field.
pub fn clip_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
/// The most bytes one one-sided READ or WRITE moves. Four of them still fit one datagram.
pub const ONE_SIDED_MAX_LEN: usize = 8192;
/// The most ops in one one-sided request: one handler step's worth.
pub const MAX_REMOTE_OPS: usize = crate::abi::MAX_OPS;

/// Why bytes are not a valid message (or a representation cannot be emitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated: needed {needed} bytes, got {got}")]
    Truncated { needed: usize, got: usize },
    #[error("bad magic {found:02x?} (expected {MAGIC:02x?})")]
    BadMagic { found: [u8; 2] },
    #[error("unsupported protocol version {found} (this side speaks {VERSION})")]
    BadVersion { found: u8 },
    #[error("unknown message kind {kind:#04x}")]
    UnknownKind { kind: u8 },
    #[error("{field} says {len} bytes but only {available} remain")]
    LengthPastEnd {
        field: &'static str,
        len: usize,
        available: usize,
    },
    #[error("{extra} bytes left over after the {what}")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("op count {count} is not in 1..={max}")]
    BadOpCount { count: usize, max: usize },
    #[error("{field} is {len} bytes, more than the maximum of {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("unknown flag bits {bits:#x} in {field}")]
    UnknownFlags { field: &'static str, bits: u32 },
    #[error("reserved field {field} is not zero")]
    NonZeroReserved { field: &'static str },
    #[error("{field} has the invalid value {value}")]
    BadValue { field: &'static str, value: u64 },
    #[error("{field} is not valid UTF-8")]
    BadUtf8 { field: &'static str },
    /// A name holds a character that [`hides_text`]: a control character (a tab or a newline
    /// would forge rows of a listing), or an invisible or reordering one.
    #[error("{field} holds a control character, or an invisible or text-reordering one")]
    ControlChar { field: &'static str },
    #[error("buffer of {got} bytes is too small for a {needed}-byte message")]
    BufferTooSmall { needed: usize, got: usize },
}

/// A byte range inside a message.
pub(crate) type Field = core::ops::Range<usize>;

// Little-endian accessors. Callers index only ranges that `check_len` has validated.

pub(crate) fn get_u16(b: &[u8], f: Field) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[f]);
    u16::from_le_bytes(a)
}

pub(crate) fn get_u32(b: &[u8], f: Field) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[f]);
    u32::from_le_bytes(a)
}

pub(crate) fn get_u64(b: &[u8], f: Field) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[f]);
    u64::from_le_bytes(a)
}

pub(crate) fn set_u16(b: &mut [u8], f: Field, v: u16) {
    b[f].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn set_u32(b: &mut [u8], f: Field, v: u32) {
    b[f].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn set_u64(b: &mut [u8], f: Field, v: u64) {
    b[f].copy_from_slice(&v.to_le_bytes());
}

/// `Truncated` unless `got >= needed`.
pub(crate) fn need(needed: usize, got: usize) -> Result<(), WireError> {
    if got < needed {
        Err(WireError::Truncated { needed, got })
    } else {
        Ok(())
    }
}

/// Checks that a fixed part of `fixed` bytes plus variable parts of `var` bytes (named by
/// `field`) exactly fill `got` bytes.
pub(crate) fn exact(
    fixed: usize,
    var: usize,
    got: usize,
    field: &'static str,
    what: &'static str,
) -> Result<(), WireError> {
    need(fixed, got)?;
    let available = got - fixed;
    if var > available {
        Err(WireError::LengthPastEnd {
            field,
            len: var,
            available,
        })
    } else if var < available {
        Err(WireError::TrailingBytes {
            what,
            extra: available - var,
        })
    } else {
        Ok(())
    }
}

/// `TooLong` if `len > max`.
pub(crate) fn at_most(field: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        Err(WireError::TooLong { field, len, max })
    } else {
        Ok(())
    }
}

/// `NonZeroReserved` unless every byte is zero.
pub(crate) fn zero(field: &'static str, bytes: &[u8]) -> Result<(), WireError> {
    if bytes.iter().all(|&b| b == 0) {
        Ok(())
    } else {
        Err(WireError::NonZeroReserved { field })
    }
}

/// Validates a name: UTF-8, at most `max` bytes.
pub(crate) fn text<'a>(
    field: &'static str,
    bytes: &'a [u8],
    max: usize,
) -> Result<&'a str, WireError> {
    at_most(field, bytes.len(), max)?;
    core::str::from_utf8(bytes).map_err(|_| WireError::BadUtf8 { field })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod clip_tests {
    #[test]
    fn clip_cuts_on_a_character_boundary() {
        assert_eq!(super::clip_utf8("hello", 10), "hello");
        assert_eq!(super::clip_utf8("hello", 3), "hel");
        // "é" is two bytes: a cut inside it backs off to before it.
        assert_eq!(super::clip_utf8("aé", 2), "a");
        assert_eq!(super::clip_utf8("aé", 3), "aé");
        assert_eq!(super::clip_utf8("", 0), "");
    }
}
