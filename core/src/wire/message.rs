//! Whole datagrams: the common header plus the payload of its kind.

use super::{
    AmReplyPacket, AmReplyRepr, AmRequestPacket, AmRequestRepr, DescribePacket, DescribeRepr,
    ErrorPacket, ErrorRepr, Flags, HeaderPacket, HeaderRepr, Kind, KvListRepr, ListReplyRepr,
    OffloadIdPacket, OffloadIdRepr, OneSidedPacket, OneSidedReplyPacket, OneSidedReplyRepr,
    OneSidedRepr, PageRequestPacket, PageRequestRepr, PagedPacket, RegisterPacket, RegisterRepr,
    SealedPacket, SealedRepr, WireError, HEADER_LEN, MAX_DATAGRAM,
};
use super::{FetchReplyRepr, FetchRepr};

/// The payload of a message, by kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Body<'a> {
    AmRequest(AmRequestRepr<'a>),
    AmReply(AmReplyRepr<'a>),
    Error(ErrorRepr<'a>),
    OneSided(OneSidedRepr<'a>),
    OneSidedReply(OneSidedReplyRepr<'a>),
    Register(RegisterRepr<'a>),
    RegisterReply(OffloadIdRepr),
    Unregister(OffloadIdRepr),
    List(PageRequestRepr),
    ListReply(ListReplyRepr<'a>),
    Stats(PageRequestRepr),
    StatsReply(KvListRepr<'a>),
    Describe(DescribeRepr<'a>),
    DescribeReply(KvListRepr<'a>),
    Fetch(FetchRepr),
    FetchReply(FetchReplyRepr<'a>),
    Ack,
    Sealed(SealedRepr<'a>),
}

impl<'a> Body<'a> {
    pub fn kind(&self) -> Kind {
        match self {
            Body::AmRequest(_) => Kind::AmRequest,
            Body::AmReply(_) => Kind::AmReply,
            Body::Error(_) => Kind::Error,
            Body::OneSided(_) => Kind::OneSided,
            Body::OneSidedReply(_) => Kind::OneSidedReply,
            Body::Register(_) => Kind::Register,
            Body::RegisterReply(_) => Kind::RegisterReply,
            Body::Unregister(_) => Kind::Unregister,
            Body::List(_) => Kind::List,
            Body::ListReply(_) => Kind::ListReply,
            Body::Stats(_) => Kind::Stats,
            Body::StatsReply(_) => Kind::StatsReply,
            Body::Describe(_) => Kind::Describe,
            Body::DescribeReply(_) => Kind::DescribeReply,
            Body::Fetch(_) => Kind::Fetch,
            Body::FetchReply(_) => Kind::FetchReply,
            Body::Ack => Kind::Ack,
            Body::Sealed(_) => Kind::Sealed,
        }
    }

    /// Parses `payload` as a message of `kind`.
    pub fn parse(kind: Kind, payload: &'a [u8]) -> Result<Self, WireError> {
        Ok(match kind {
            Kind::AmRequest => Body::AmRequest(AmRequestRepr::parse(
                &AmRequestPacket::new_unchecked(payload),
            )?),
            Kind::AmReply => {
                Body::AmReply(AmReplyRepr::parse(&AmReplyPacket::new_unchecked(payload))?)
            }
            Kind::Error => Body::Error(ErrorRepr::parse(&ErrorPacket::new_unchecked(payload))?),
            Kind::OneSided => Body::OneSided(OneSidedRepr::parse(&OneSidedPacket::new_unchecked(
                payload,
            ))?),
            Kind::OneSidedReply => Body::OneSidedReply(OneSidedReplyRepr::parse(
                &OneSidedReplyPacket::new_unchecked(payload),
            )?),
            Kind::Register => Body::Register(RegisterRepr::parse(&RegisterPacket::new_unchecked(
                payload,
            ))?),
            Kind::RegisterReply => Body::RegisterReply(OffloadIdRepr::parse(
                &OffloadIdPacket::new_unchecked(payload),
            )?),
            Kind::Unregister => Body::Unregister(OffloadIdRepr::parse(
                &OffloadIdPacket::new_unchecked(payload),
            )?),
            Kind::List => Body::List(PageRequestRepr::parse(&PageRequestPacket::new_unchecked(
                payload,
            ))?),
            Kind::ListReply => {
                Body::ListReply(ListReplyRepr::parse(&PagedPacket::new_unchecked(payload))?)
            }
            Kind::Stats => Body::Stats(PageRequestRepr::parse(&PageRequestPacket::new_unchecked(
                payload,
            ))?),
            Kind::StatsReply => {
                Body::StatsReply(KvListRepr::parse(&PagedPacket::new_unchecked(payload))?)
            }
            Kind::Describe => Body::Describe(DescribeRepr::parse(&DescribePacket::new_unchecked(
                payload,
            ))?),
            Kind::DescribeReply => {
                Body::DescribeReply(KvListRepr::parse(&PagedPacket::new_unchecked(payload))?)
            }
            Kind::Fetch => Body::Fetch(FetchRepr::parse(payload)?),
            Kind::FetchReply => Body::FetchReply(FetchReplyRepr::parse(payload)?),
            Kind::Ack => {
                if !payload.is_empty() {
                    return Err(WireError::TrailingBytes {
                        what: "ack",
                        extra: payload.len(),
                    });
                }
                Body::Ack
            }
            Kind::Sealed => Body::Sealed(SealedRepr::parse(&SealedPacket::new_unchecked(payload))?),
        })
    }

    /// Checks the per-field maxima, so that what [`emit`](Self::emit) writes parses.
    pub fn check(&self) -> Result<(), WireError> {
        match self {
            Body::AmRequest(r) => r.check(),
            Body::AmReply(r) => r.check(),
            Body::Error(r) => r.check(),
            Body::OneSided(r) => r.check(),
            Body::OneSidedReply(r) => r.check(),
            Body::Register(r) => r.check(),
            Body::RegisterReply(r) | Body::Unregister(r) => r.check(),
            Body::List(r) | Body::Stats(r) => r.check(),
            Body::ListReply(r) => r.check(),
            Body::StatsReply(r) | Body::DescribeReply(r) => r.check(),
            Body::Describe(r) => r.check(),
            Body::Fetch(r) => r.check(),
            Body::FetchReply(r) => r.check(),
            Body::Ack => Ok(()),
            Body::Sealed(r) => r.check(),
        }
    }

    /// The payload length.
    pub fn buffer_len(&self) -> usize {
        match self {
            Body::AmRequest(r) => r.buffer_len(),
            Body::AmReply(r) => r.buffer_len(),
            Body::Error(r) => r.buffer_len(),
            Body::OneSided(r) => r.buffer_len(),
            Body::OneSidedReply(r) => r.buffer_len(),
            Body::Register(r) => r.buffer_len(),
            Body::RegisterReply(r) | Body::Unregister(r) => r.buffer_len(),
            Body::List(r) | Body::Stats(r) => r.buffer_len(),
            Body::ListReply(r) => r.buffer_len(),
            Body::StatsReply(r) | Body::DescribeReply(r) => r.buffer_len(),
            Body::Describe(r) => r.buffer_len(),
            Body::Fetch(r) => r.buffer_len(),
            Body::FetchReply(r) => r.buffer_len(),
            Body::Ack => 0,
            Body::Sealed(r) => r.buffer_len(),
        }
    }

    /// Writes the payload into exactly `buffer_len()` bytes. Call [`check`](Self::check)
    /// first; [`Message::emit`] does both.
    pub fn emit(&self, payload: &mut [u8]) {
        match self {
            Body::AmRequest(r) => r.emit(&mut AmRequestPacket::new_unchecked(payload)),
            Body::AmReply(r) => r.emit(&mut AmReplyPacket::new_unchecked(payload)),
            Body::Error(r) => r.emit(&mut ErrorPacket::new_unchecked(payload)),
            Body::OneSided(r) => r.emit(&mut OneSidedPacket::new_unchecked(payload)),
            Body::OneSidedReply(r) => r.emit(&mut OneSidedReplyPacket::new_unchecked(payload)),
            Body::Register(r) => r.emit(&mut RegisterPacket::new_unchecked(payload)),
            Body::RegisterReply(r) | Body::Unregister(r) => {
                r.emit(&mut OffloadIdPacket::new_unchecked(payload))
            }
            Body::List(r) | Body::Stats(r) => {
                r.emit(&mut PageRequestPacket::new_unchecked(payload))
            }
            Body::ListReply(r) => r.emit(&mut PagedPacket::new_unchecked(payload)),
            Body::StatsReply(r) | Body::DescribeReply(r) => {
                r.emit(&mut PagedPacket::new_unchecked(payload))
            }
            Body::Describe(r) => r.emit(&mut DescribePacket::new_unchecked(payload)),
            Body::Fetch(r) => r.emit(payload),
            Body::FetchReply(r) => r.emit(payload),
            Body::Ack => {}
            Body::Sealed(r) => r.emit(&mut SealedPacket::new_unchecked(payload)),
        }
    }
}

/// A whole datagram, decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Message<'a> {
    /// Chosen by the client, echoed by the reply; retransmissions reuse it.
    pub request_id: u64,
    /// Steering class: the UDP destination port is `base + class`.
    pub class: u16,
    pub flags: Flags,
    /// Requests: how many of the client's requests are open, counting this one, so that every
    /// id below `request_id + 1 - window` is finished ([`super::retired_below`]); the server
    /// forgets those in its reply cache. 0: not said (replies, and clients that keep none).
    pub window: u32,
    pub body: Body<'a>,
}

impl<'a> Message<'a> {
    /// A message with no flags.
    pub fn new(request_id: u64, class: u16, body: Body<'a>) -> Self {
        Self {
            request_id,
            class,
            flags: Flags::empty(),
            window: 0,
            body,
        }
    }

    pub fn kind(&self) -> Kind {
        self.body.kind()
    }

    /// The reply to this request: same request id and class, no flags.
    pub fn reply<'b>(&self, body: Body<'b>) -> Message<'b> {
        Message::new(self.request_id, self.class, body)
    }

    /// Parses a datagram. Never panics; any malformation is an error.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, WireError> {
        let packet = HeaderPacket::new_unchecked(datagram);
        let header = HeaderRepr::parse(&packet)?;
        let body = Body::parse(header.kind, packet.payload())?;
        Ok(Self {
            request_id: header.request_id,
            class: header.class,
            flags: header.flags,
            window: header.window,
            body,
        })
    }

    /// The datagram length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body.buffer_len()
    }

    /// Writes a reply to the front of `buf` like [`Message::emit`]; a reply that cannot be
    /// emitted (too long for its fields or `buf`) is logged and replaced by an `Internal`
    /// error with the same request id and class. Returns the length, 0 when even that does
    /// not fit.
    pub fn emit_or_internal_error(&self, buf: &mut [u8]) -> usize {
        self.emit(buf).unwrap_or_else(|e| {
            tracing::error!(error = %e, kind = ?self.kind(), "reply did not emit");
            let err = super::ErrorRepr::new(super::ErrorCode::Internal, "");
            Message::new(self.request_id, self.class, Body::Error(err))
                .emit(buf)
                .unwrap_or(0)
        })
    }

    /// Checks the message and writes it to the front of `buf`; returns its length. Never
    /// allocates.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        self.body.check()?;
        let len = self.buffer_len();
        super::at_most("datagram", len, MAX_DATAGRAM)?;
        if buf.len() < len {
            return Err(WireError::BufferTooSmall {
                needed: len,
                got: buf.len(),
            });
        }
        let header = HeaderRepr {
            kind: self.kind(),
            flags: self.flags,
            class: self.class,
            request_id: self.request_id,
            window: self.window,
            payload_len: len - HEADER_LEN,
        };
        let mut packet = HeaderPacket::new_unchecked(&mut buf[..len]);
        header.emit(&mut packet);
        self.body.emit(packet.payload_mut());
        Ok(len)
    }
}
