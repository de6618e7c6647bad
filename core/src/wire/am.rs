//! Active messages: a request that names an offload and carries its arguments, and the reply
//! with its output, where it ran, and possibly a placement hint.

use super::{
    at_most, exact, get_u16, get_u32, get_u64, set_u16, set_u32, set_u64, zero, WireError,
};
use crate::abi::{ARGS_MAX, OUT_MAX};

/// Where a message executed, or where a placement hint sends a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Location {
    /// In the client's own VM pool, with one-sided ops.
    Client = 0,
    /// On the SmartNIC's cores (the dataplane).
    Nic = 1,
    /// On host cores (the host agent).
    Host = 2,
}

impl Location {
    pub fn name(self) -> &'static str {
        match self {
            Location::Nic => "nic",
            Location::Host => "host",
            Location::Client => "client",
        }
    }

    pub fn from_u8(v: u8) -> Option<Location> {
        match v {
            0 => Some(Location::Client),
            1 => Some(Location::Nic),
            2 => Some(Location::Host),
            _ => None,
        }
    }
}

/// Tells the client where to run a steering class for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlacementHint {
    pub class: u16,
    /// [`Location::Client`]: run read-only offloads of this class locally until the lease
    /// ends. Otherwise informational (where the server currently runs the class).
    pub location: Location,
    /// How long the hint holds, in milliseconds from the reply's arrival.
    pub lease_ms: u32,
}

/// Flags of an active-message request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct AmFlags(u16);

impl AmFlags {
    /// The client can run this offload itself, so the server may answer with a placement
    /// hint. Clients without the handler loaded leave it clear.
    pub const EXEC_HINT: AmFlags = AmFlags(0x0001);
    pub const KNOWN: u16 = 0x0001;

    pub const fn empty() -> AmFlags {
        AmFlags(0)
    }

    pub const fn bits(self) -> u16 {
        self.0
    }

    pub const fn from_bits(bits: u16) -> Option<AmFlags> {
        if bits & !Self::KNOWN == 0 {
            Some(AmFlags(bits))
        } else {
            None
        }
    }

    pub const fn contains(self, other: AmFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

mod req {
    use crate::wire::Field;

    pub const OFFLOAD: Field = 0..4;
    pub const TENANT: Field = 4..8;
    pub const CAPABILITY: Field = 8..16;
    pub const FLAGS: Field = 16..18;
    pub const ARGS_LEN: Field = 18..20;
    pub const ARGS: usize = 20;
}

/// A view of an active-message request payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmRequestPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AmRequestPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that `args_len` bytes of arguments exactly fill the payload.
    pub fn check_len(&self) -> Result<(), WireError> {
        let d = self.buffer.as_ref();
        super::need(req::ARGS, d.len())?;
        exact(
            req::ARGS,
            self.args_len() as usize,
            d.len(),
            "am.args_len",
            "arguments",
        )
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn offload(&self) -> u32 {
        get_u32(self.buffer.as_ref(), req::OFFLOAD)
    }

    pub fn tenant(&self) -> u32 {
        get_u32(self.buffer.as_ref(), req::TENANT)
    }

    pub fn capability(&self) -> u64 {
        get_u64(self.buffer.as_ref(), req::CAPABILITY)
    }

    pub fn flags(&self) -> u16 {
        get_u16(self.buffer.as_ref(), req::FLAGS)
    }

    pub fn args_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), req::ARGS_LEN)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> AmRequestPacket<&'a T> {
    pub fn args(&self) -> &'a [u8] {
        let n = self.args_len() as usize;
        &self.buffer.as_ref()[req::ARGS..req::ARGS + n]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AmRequestPacket<T> {
    pub fn set_offload(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), req::OFFLOAD, v);
    }

    pub fn set_tenant(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), req::TENANT, v);
    }

    pub fn set_capability(&mut self, v: u64) {
        set_u64(self.buffer.as_mut(), req::CAPABILITY, v);
    }

    pub fn set_flags(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), req::FLAGS, v);
    }

    pub fn set_args_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), req::ARGS_LEN, v);
    }

    pub fn args_mut(&mut self) -> &mut [u8] {
        let n = self.args_len() as usize;
        &mut self.buffer.as_mut()[req::ARGS..req::ARGS + n]
    }
}

/// The tenant an active-message request names and the capability meant to prove it, read
/// from a whole datagram without parsing the rest (a worker orders a burst by tenant before it
/// handles it); `None` for any other kind, or a datagram whose lengths do not check.
/// Self-declared: check the capability before the tenant counts for anything.
pub fn peek_am_tenant(datagram: &[u8]) -> Option<(u32, u64)> {
    let h = super::HeaderPacket::new_checked(datagram).ok()?;
    if h.kind() != super::Kind::AmRequest as u8 {
        return None;
    }
    let body = datagram.get(super::HEADER_LEN..)?;
    AmRequestPacket::new_checked(body)
        .ok()
        .map(|p| (p.tenant(), p.capability()))
}

/// An active-message request: run `offload` with `args`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmRequestRepr<'a> {
    pub offload: u32,
    /// The tenant the client acts for; the server rejects it unless it owns the offload.
    pub tenant: u32,
    /// Proves the sender may act for `tenant`: the capability the server derives from the
    /// tenant's (or the admin's) key (`auth::Credential::capability`, docs/security.md).
    pub capability: u64,
    pub flags: AmFlags,
    /// At most [`ARGS_MAX`] bytes, copied into the handler's context.
    pub args: &'a [u8],
}

impl<'a> AmRequestRepr<'a> {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &AmRequestPacket<&'a T>,
    ) -> Result<Self, WireError> {
        packet.check_len()?;
        let flags = AmFlags::from_bits(packet.flags()).ok_or(WireError::UnknownFlags {
            field: "am.flags",
            bits: (packet.flags() & !AmFlags::KNOWN) as u32,
        })?;
        let repr = Self {
            offload: packet.offload(),
            tenant: packet.tenant(),
            capability: packet.capability(),
            flags,
            args: packet.args(),
        };
        repr.check()?;
        Ok(repr)
    }

    /// Checks the per-field maxima.
    pub fn check(&self) -> Result<(), WireError> {
        at_most("am.args", self.args.len(), ARGS_MAX)
    }

    pub fn buffer_len(&self) -> usize {
        req::ARGS + self.args.len()
    }

    /// Writes the payload; the buffer must be exactly `buffer_len()` bytes and `check()` must
    /// pass.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut AmRequestPacket<T>) {
        packet.set_offload(self.offload);
        packet.set_tenant(self.tenant);
        packet.set_capability(self.capability);
        packet.set_flags(self.flags.bits());
        packet.set_args_len(self.args.len() as u16);
        packet.args_mut().copy_from_slice(self.args);
    }
}

mod rep {
    use crate::wire::Field;

    pub const STATUS: usize = 0;
    pub const EXECUTED_AT: usize = 1;
    pub const FLAGS: Field = 2..4;
    pub const ABORT_CODE: Field = 4..8;
    pub const STEPS: Field = 8..12;
    pub const OUT_LEN: Field = 12..14;
    pub const HINT_CLASS: Field = 14..16;
    pub const HINT_LOCATION: usize = 16;
    pub const RESERVED: Field = 17..20;
    pub const HINT_LEASE_MS: Field = 20..24;
    pub const OUT: usize = 24;

    /// The hint fields, which must be zero when there is no hint.
    pub const HINT: Field = 14..24;
}

/// Reply flag: the hint fields hold a placement hint.
const HAS_HINT: u16 = 0x0001;
const STATUS_DONE: u8 = 0;
const STATUS_ABORTED: u8 = 1;

/// A view of an active-message reply payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmReplyPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AmReplyPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that `out_len` bytes of output exactly fill the payload.
    pub fn check_len(&self) -> Result<(), WireError> {
        let d = self.buffer.as_ref();
        super::need(rep::OUT, d.len())?;
        exact(
            rep::OUT,
            self.out_len() as usize,
            d.len(),
            "reply.out_len",
            "output",
        )
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn status(&self) -> u8 {
        self.buffer.as_ref()[rep::STATUS]
    }

    pub fn executed_at(&self) -> u8 {
        self.buffer.as_ref()[rep::EXECUTED_AT]
    }

    pub fn flags(&self) -> u16 {
        get_u16(self.buffer.as_ref(), rep::FLAGS)
    }

    pub fn abort_code(&self) -> u32 {
        get_u32(self.buffer.as_ref(), rep::ABORT_CODE)
    }

    pub fn steps(&self) -> u32 {
        get_u32(self.buffer.as_ref(), rep::STEPS)
    }

    pub fn out_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), rep::OUT_LEN)
    }

    pub fn hint_class(&self) -> u16 {
        get_u16(self.buffer.as_ref(), rep::HINT_CLASS)
    }

    pub fn hint_location(&self) -> u8 {
        self.buffer.as_ref()[rep::HINT_LOCATION]
    }

    pub fn hint_lease_ms(&self) -> u32 {
        get_u32(self.buffer.as_ref(), rep::HINT_LEASE_MS)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> AmReplyPacket<&'a T> {
    pub fn output(&self) -> &'a [u8] {
        let n = self.out_len() as usize;
        &self.buffer.as_ref()[rep::OUT..rep::OUT + n]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AmReplyPacket<T> {
    pub fn set_status(&mut self, v: u8) {
        self.buffer.as_mut()[rep::STATUS] = v;
    }

    pub fn set_executed_at(&mut self, v: u8) {
        self.buffer.as_mut()[rep::EXECUTED_AT] = v;
    }

    pub fn set_flags(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), rep::FLAGS, v);
    }

    pub fn set_abort_code(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), rep::ABORT_CODE, v);
    }

    pub fn set_steps(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), rep::STEPS, v);
    }

    pub fn set_out_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), rep::OUT_LEN, v);
    }

    /// Writes the hint fields, or zeroes them.
    pub fn set_hint(&mut self, hint: Option<PlacementHint>) {
        let d = self.buffer.as_mut();
        d[rep::HINT].fill(0);
        if let Some(h) = hint {
            set_u16(d, rep::HINT_CLASS, h.class);
            d[rep::HINT_LOCATION] = h.location as u8;
            set_u32(d, rep::HINT_LEASE_MS, h.lease_ms);
        }
    }

    pub fn output_mut(&mut self) -> &mut [u8] {
        let n = self.out_len() as usize;
        &mut self.buffer.as_mut()[rep::OUT..rep::OUT + n]
    }
}

/// How the handler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmStatus {
    /// It returned `DONE`.
    Done,
    /// It returned `ABORT(code)`: an application-level outcome (say, "key not found"), not a
    /// runtime error (those are [`super::ErrorRepr`] replies).
    Aborted(u32),
}

/// An active-message reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmReplyRepr<'a> {
    pub status: AmStatus,
    pub executed_at: Location,
    /// Steps the handler ran.
    pub steps: u32,
    pub hint: Option<PlacementHint>,
    /// The handler's output area, at most [`OUT_MAX`] bytes.
    pub output: &'a [u8],
}

impl<'a> AmReplyRepr<'a> {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &AmReplyPacket<&'a T>,
    ) -> Result<Self, WireError> {
        packet.check_len()?;
        let data = packet.buffer.as_ref();
        let status = match (packet.status(), packet.abort_code()) {
            (STATUS_DONE, 0) => AmStatus::Done,
            (STATUS_DONE, _) => {
                return Err(WireError::NonZeroReserved {
                    field: "reply.abort_code",
                })
            }
            (STATUS_ABORTED, code) => AmStatus::Aborted(code),
            (other, _) => {
                return Err(WireError::BadValue {
                    field: "reply.status",
                    value: other as u64,
                })
            }
        };
        let executed_at = Location::from_u8(packet.executed_at()).ok_or(WireError::BadValue {
            field: "reply.executed_at",
            value: packet.executed_at() as u64,
        })?;
        let flags = packet.flags();
        if flags & !HAS_HINT != 0 {
            return Err(WireError::UnknownFlags {
                field: "reply.flags",
                bits: (flags & !HAS_HINT) as u32,
            });
        }
        zero("reply.reserved", &data[rep::RESERVED])?;
        let hint = if flags & HAS_HINT != 0 {
            let location =
                Location::from_u8(packet.hint_location()).ok_or(WireError::BadValue {
                    field: "reply.hint_location",
                    value: packet.hint_location() as u64,
                })?;
            Some(PlacementHint {
                class: packet.hint_class(),
                location,
                lease_ms: packet.hint_lease_ms(),
            })
        } else {
            zero("reply.hint", &data[rep::HINT])?;
            None
        };
        let repr = Self {
            status,
            executed_at,
            steps: packet.steps(),
            hint,
            output: packet.output(),
        };
        repr.check()?;
        Ok(repr)
    }

    pub fn check(&self) -> Result<(), WireError> {
        at_most("reply.output", self.output.len(), OUT_MAX)
    }

    pub fn buffer_len(&self) -> usize {
        rep::OUT + self.output.len()
    }

    /// Writes the payload; the buffer must be exactly `buffer_len()` bytes and `check()` must
    /// pass.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut AmReplyPacket<T>) {
        let (status, code) = match self.status {
            AmStatus::Done => (STATUS_DONE, 0),
            AmStatus::Aborted(code) => (STATUS_ABORTED, code),
        };
        packet.set_status(status);
        packet.set_executed_at(self.executed_at as u8);
        packet.set_flags(if self.hint.is_some() { HAS_HINT } else { 0 });
        packet.set_abort_code(code);
        packet.set_steps(self.steps);
        packet.set_out_len(self.output.len() as u16);
        packet.set_hint(self.hint);
        packet.buffer.as_mut()[rep::RESERVED].fill(0);
        packet.output_mut().copy_from_slice(self.output);
    }
}
