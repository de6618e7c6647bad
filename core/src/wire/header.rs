//! The common header every datagram starts with.
//!
//! ```text
//!  0      2   3    4       6       8                16           20          24
//!  | magic |ver|kind| flags | class | request id      | payload len |  window  |  payload …
//! ```

use super::{
    get_u16, get_u32, get_u64, need, set_u16, set_u32, set_u64, WireError, HEADER_LEN, MAGIC,
    MAX_PAYLOAD, VERSION,
};

mod field {
    use crate::wire::Field;

    pub const MAGIC: Field = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const FLAGS: Field = 4..6;
    pub const CLASS: Field = 6..8;
    pub const REQUEST_ID: Field = 8..16;
    pub const PAYLOAD_LEN: Field = 16..20;
    pub const WINDOW: Field = 20..24;
    pub const PAYLOAD: usize = 24;
}

const _: () = assert!(field::PAYLOAD == HEADER_LEN);

/// The message kinds. Requests have odd numbers in each group, their replies follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Run an offload ([`super::AmRequestRepr`]).
    AmRequest = 0x01,
    /// The offload's result ([`super::AmReplyRepr`]).
    AmReply = 0x02,
    /// Any request failed ([`super::ErrorRepr`]).
    Error = 0x03,
    /// One-sided READ / WRITE / CAS / FAA ops ([`super::OneSidedRepr`]).
    OneSided = 0x04,
    /// Their results ([`super::OneSidedReplyRepr`]).
    OneSidedReply = 0x05,
    /// Register an offload ([`super::RegisterRepr`]).
    Register = 0x10,
    /// The id it got ([`super::OffloadIdRepr`]).
    RegisterReply = 0x11,
    /// Unregister an offload ([`super::OffloadIdRepr`]); answered by [`Kind::Ack`].
    Unregister = 0x12,
    /// List offloads, one page ([`super::PageRequestRepr`]).
    List = 0x13,
    /// A page of offloads ([`super::ListReplyRepr`]).
    ListReply = 0x14,
    /// Read counters, one page ([`super::PageRequestRepr`]).
    Stats = 0x15,
    /// A page of counters ([`super::KvListRepr`]).
    StatsReply = 0x16,
    /// Ask for an application's parameters ([`super::DescribeRepr`]).
    Describe = 0x17,
    /// A page of parameters ([`super::KvListRepr`]).
    DescribeReply = 0x18,
    /// A piece of an offload's verified instructions ([`super::FetchRepr`]).
    Fetch = 0x19,
    /// The piece ([`super::FetchReplyRepr`]).
    FetchReply = 0x1a,
    /// A request succeeded and has nothing to say (empty payload).
    Ack = 0x1f,
    /// A control request with a MAC ([`super::SealedRepr`]); answered like its inner request.
    Sealed = 0x20,
}

impl Kind {
    pub const ALL: [Kind; 18] = [
        Kind::AmRequest,
        Kind::AmReply,
        Kind::Error,
        Kind::OneSided,
        Kind::OneSidedReply,
        Kind::Register,
        Kind::RegisterReply,
        Kind::Unregister,
        Kind::List,
        Kind::ListReply,
        Kind::Stats,
        Kind::StatsReply,
        Kind::Describe,
        Kind::DescribeReply,
        Kind::Fetch,
        Kind::FetchReply,
        Kind::Ack,
        Kind::Sealed,
    ];

    pub fn from_u8(v: u8) -> Option<Kind> {
        Self::ALL.iter().copied().find(|k| *k as u8 == v)
    }

    /// The kind a server answers this request with when it succeeds (any request may also
    /// be answered ERROR); `None` for replies, and for SEALED (answered like its inner
    /// request).
    pub fn reply(self) -> Option<Kind> {
        Some(match self {
            Kind::AmRequest => Kind::AmReply,
            Kind::OneSided => Kind::OneSidedReply,
            Kind::Register => Kind::RegisterReply,
            Kind::Unregister => Kind::Ack,
            Kind::List => Kind::ListReply,
            Kind::Stats => Kind::StatsReply,
            Kind::Describe => Kind::DescribeReply,
            Kind::Fetch => Kind::FetchReply,
            _ => return None,
        })
    }

    /// Its name for people: `"describe reply"`, `"one-sided"`, ...
    pub fn name(self) -> &'static str {
        match self {
            Kind::AmRequest => "am request",
            Kind::AmReply => "am reply",
            Kind::Error => "error",
            Kind::OneSided => "one-sided",
            Kind::OneSidedReply => "one-sided reply",
            Kind::Register => "register",
            Kind::RegisterReply => "register reply",
            Kind::Unregister => "unregister",
            Kind::List => "list",
            Kind::ListReply => "list reply",
            Kind::Stats => "stats",
            Kind::StatsReply => "stats reply",
            Kind::Describe => "describe",
            Kind::DescribeReply => "describe reply",
            Kind::Fetch => "fetch",
            Kind::FetchReply => "fetch reply",
            Kind::Ack => "ack",
            Kind::Sealed => "sealed",
        }
    }

    /// Whether a server sends this kind (as opposed to a client).
    pub fn is_reply(self) -> bool {
        matches!(
            self,
            Kind::AmReply
                | Kind::Error
                | Kind::OneSidedReply
                | Kind::RegisterReply
                | Kind::ListReply
                | Kind::StatsReply
                | Kind::DescribeReply
                | Kind::FetchReply
                | Kind::Ack
        )
    }
}

/// Header flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(u16);

impl Flags {
    /// The sender sent a message with this request id before: this is a retransmission.
    /// Informational (counted); the server de-duplicates whether or not it is set.
    pub const RETRANSMIT: Flags = Flags(0x0001);
    /// Every flag this version defines. Receivers reject the others.
    pub const KNOWN: u16 = 0x0001;

    pub const fn empty() -> Flags {
        Flags(0)
    }

    pub const fn bits(self) -> u16 {
        self.0
    }

    /// `None` if a bit this version does not define is set.
    pub const fn from_bits(bits: u16) -> Option<Flags> {
        if bits & !Self::KNOWN == 0 {
            Some(Flags(bits))
        } else {
            None
        }
    }

    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// A view of a datagram's common header (and its payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HeaderPacket<T> {
    /// Wraps a buffer without checking it; call [`check_len`](Self::check_len) before the
    /// accessors.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer and checks its lengths.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the header and exactly `payload_len` more bytes. After
    /// this, no accessor panics.
    pub fn check_len(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        need(HEADER_LEN, data.len())?;
        let len = get_u32(data, field::PAYLOAD_LEN) as usize;
        super::at_most("payload_len", len, MAX_PAYLOAD)?;
        super::exact(HEADER_LEN, len, data.len(), "payload_len", "payload")
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn magic(&self) -> [u8; 2] {
        let d = self.buffer.as_ref();
        [d[field::MAGIC.start], d[field::MAGIC.start + 1]]
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The raw kind byte (see [`Kind::from_u8`]).
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }

    pub fn flags(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLAGS)
    }

    pub fn class(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CLASS)
    }

    pub fn request_id(&self) -> u64 {
        get_u64(self.buffer.as_ref(), field::REQUEST_ID)
    }

    pub fn payload_len(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    pub fn window(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::WINDOW)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> HeaderPacket<&'a T> {
    /// The payload, borrowed for as long as the buffer.
    pub fn payload(&self) -> &'a [u8] {
        let len = self.payload_len() as usize;
        &self.buffer.as_ref()[field::PAYLOAD..field::PAYLOAD + len]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> HeaderPacket<T> {
    pub fn set_magic(&mut self, magic: [u8; 2]) {
        self.buffer.as_mut()[field::MAGIC].copy_from_slice(&magic);
    }

    pub fn set_version(&mut self, version: u8) {
        self.buffer.as_mut()[field::VERSION] = version;
    }

    pub fn set_kind(&mut self, kind: u8) {
        self.buffer.as_mut()[field::KIND] = kind;
    }

    pub fn set_flags(&mut self, flags: u16) {
        set_u16(self.buffer.as_mut(), field::FLAGS, flags);
    }

    pub fn set_class(&mut self, class: u16) {
        set_u16(self.buffer.as_mut(), field::CLASS, class);
    }

    pub fn set_request_id(&mut self, id: u64) {
        set_u64(self.buffer.as_mut(), field::REQUEST_ID, id);
    }

    pub fn set_payload_len(&mut self, len: u32) {
        set_u32(self.buffer.as_mut(), field::PAYLOAD_LEN, len);
    }

    pub fn set_window(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::WINDOW, v);
    }

    /// The payload area, `payload_len` bytes.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.payload_len() as usize;
        &mut self.buffer.as_mut()[field::PAYLOAD..field::PAYLOAD + len]
    }
}

/// The common header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    pub kind: Kind,
    pub flags: Flags,
    /// Steering class; must equal the UDP destination port minus the deployment's base port.
    pub class: u16,
    /// Chosen by the client; a retransmission reuses it; replies echo it.
    pub request_id: u64,
    /// The client's open requests, counting this one (see [`retired_below`]); 0: not said.
    pub window: u32,
    pub payload_len: usize,
}

/// The lowest request id a client may still send, from a request's id and window: every id
/// below it (in serial-number order) is finished and will not be sent again, so the server
/// may forget it. `None` when the window is 0 (not said).
pub fn retired_below(request_id: u64, window: u32) -> Option<u64> {
    (window > 0).then(|| request_id.wrapping_sub(u64::from(window) - 1))
}

/// Whether request id `a` comes before `b`, in serial-number order (ids wrap around).
pub fn id_before(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) < 0
}

impl HeaderRepr {
    /// Decodes and validates the header (magic, version, kind, flags, lengths).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &HeaderPacket<&T>) -> Result<Self, WireError> {
        // Magic and version first: a datagram of another protocol or version should say so,
        // not "truncated".
        let data = packet.buffer.as_ref();
        need(field::VERSION + 1, data.len())?;
        if packet.magic() != MAGIC {
            return Err(WireError::BadMagic {
                found: packet.magic(),
            });
        }
        if packet.version() != VERSION {
            return Err(WireError::BadVersion {
                found: packet.version(),
            });
        }
        packet.check_len()?;
        let kind = Kind::from_u8(packet.kind()).ok_or(WireError::UnknownKind {
            kind: packet.kind(),
        })?;
        let flags = Flags::from_bits(packet.flags()).ok_or(WireError::UnknownFlags {
            field: "header.flags",
            bits: (packet.flags() & !Flags::KNOWN) as u32,
        })?;
        Ok(Self {
            kind,
            flags,
            class: packet.class(),
            request_id: packet.request_id(),
            window: packet.window(),
            payload_len: packet.payload_len() as usize,
        })
    }

    /// Header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header (not the payload). The buffer must be at least `HEADER_LEN` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut HeaderPacket<T>) {
        packet.set_magic(MAGIC);
        packet.set_version(VERSION);
        packet.set_kind(self.kind as u8);
        packet.set_flags(self.flags.bits());
        packet.set_class(self.class);
        packet.set_request_id(self.request_id);
        packet.set_payload_len(self.payload_len as u32);
        packet.set_window(self.window);
    }
}
