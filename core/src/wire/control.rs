//! Control requests: register / unregister offloads, ask for a page of offloads or counters,
//! describe an application. Their replies are [`super::OffloadIdRepr`] (register),
//! [`super::PagedRepr`] (list, stats, describe) and the empty ACK (unregister).

use super::{
    at_most, exact, get_u16, get_u32, need, set_u16, set_u32, text, zero, WireError, MAX_PAYLOAD,
    NAME_MAX,
};

mod reg {
    use crate::wire::Field;

    pub const TENANT: Field = 0..4;
    pub const CLASS: Field = 4..6;
    pub const FLAGS: usize = 6;
    pub const NAME_LEN: usize = 7;
    pub const SECTION_LEN: usize = 8;
    pub const RESERVED: Field = 9..12;
    pub const OBJECT_LEN: Field = 12..16;
    pub const NAME: usize = 16;

    pub const READ_ONLY: u8 = 0x01;
}

/// DESCRIBE command of the host congestion injector: `congest:<ms>` (docs/protocol.md).
pub const CONGEST_HOST: &str = "congest:";
/// DESCRIBE command of the NIC congestion injector: `congest-nic:<ms>`.
pub const CONGEST_NIC: &str = "congest-nic:";
/// The longest congestion one request injects; `0` cancels a running one.
pub const CONGEST_MAX_MS: u64 = 60_000;

/// The duration of a congestion command, the text after its prefix: `0` (cancel) to
/// [`CONGEST_MAX_MS`] milliseconds, or why not.
pub fn congest_ms(command: &str, arg: &str) -> Result<u64, String> {
    match arg.parse::<u64>() {
        Ok(ms) if ms <= CONGEST_MAX_MS => Ok(ms),
        Ok(ms) => Err(format!(
            "{command}{ms}: at most {CONGEST_MAX_MS} ms per request (0 cancels)"
        )),
        Err(_) => Err(format!(
            "{command}{arg:?}: expected {command}<milliseconds> (0 to {CONGEST_MAX_MS}; 0 cancels)"
        )),
    }
}

/// The largest ELF object a REGISTER datagram carries.
pub const OBJECT_MAX: usize = MAX_PAYLOAD - reg::NAME;

/// The largest object one REGISTER carries through a control port, which takes only sealed
/// requests: [`OBJECT_MAX`] less the SEALED wrapping (an outer header and
/// [`super::SEALED_OVERHEAD`]) and the name and section it carries.
pub fn sealed_object_max(name: &str, section: Option<&str>) -> usize {
    OBJECT_MAX
        .saturating_sub(super::HEADER_LEN + super::SEALED_OVERHEAD)
        .saturating_sub(name.len() + section.map_or(0, str::len))
}

/// A view of a REGISTER payload: fixed fields, then name, section name and ELF object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RegisterPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that name, section name and object exactly fill the payload.
    pub fn check_len(&self) -> Result<(), WireError> {
        let d = self.buffer.as_ref();
        need(reg::NAME, d.len())?;
        let var = (self.name_len() as usize + self.section_len() as usize)
            .saturating_add(self.object_len() as usize);
        exact(reg::NAME, var, d.len(), "register.object_len", "object")
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn tenant(&self) -> u32 {
        get_u32(self.buffer.as_ref(), reg::TENANT)
    }

    pub fn class(&self) -> u16 {
        get_u16(self.buffer.as_ref(), reg::CLASS)
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[reg::FLAGS]
    }

    pub fn name_len(&self) -> u8 {
        self.buffer.as_ref()[reg::NAME_LEN]
    }

    pub fn section_len(&self) -> u8 {
        self.buffer.as_ref()[reg::SECTION_LEN]
    }

    pub fn object_len(&self) -> u32 {
        get_u32(self.buffer.as_ref(), reg::OBJECT_LEN)
    }

    fn section_start(&self) -> usize {
        reg::NAME + self.name_len() as usize
    }

    fn object_start(&self) -> usize {
        self.section_start() + self.section_len() as usize
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> RegisterPacket<&'a T> {
    pub fn name(&self) -> &'a [u8] {
        &self.buffer.as_ref()[reg::NAME..self.section_start()]
    }

    pub fn section(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.section_start()..self.object_start()]
    }

    pub fn object(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.object_start()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RegisterPacket<T> {
    pub fn set_tenant(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), reg::TENANT, v);
    }

    pub fn set_class(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), reg::CLASS, v);
    }

    pub fn set_flags(&mut self, v: u8) {
        let d = self.buffer.as_mut();
        d[reg::FLAGS] = v;
        d[reg::RESERVED].fill(0);
    }

    /// Sets the three lengths at once (they locate each other's bytes).
    pub fn set_lengths(&mut self, name: u8, section: u8, object: u32) {
        let d = self.buffer.as_mut();
        d[reg::NAME_LEN] = name;
        d[reg::SECTION_LEN] = section;
        set_u32(d, reg::OBJECT_LEN, object);
    }

    pub fn name_mut(&mut self) -> &mut [u8] {
        let (s, e) = (reg::NAME, self.section_start());
        &mut self.buffer.as_mut()[s..e]
    }

    pub fn section_mut(&mut self) -> &mut [u8] {
        let (s, e) = (self.section_start(), self.object_start());
        &mut self.buffer.as_mut()[s..e]
    }

    pub fn object_mut(&mut self) -> &mut [u8] {
        let s = self.object_start();
        &mut self.buffer.as_mut()[s..]
    }
}

/// The rules of an offload's name, wherever one comes from (a REGISTER, the host agent's
/// offloads file): non-empty, at most [`NAME_MAX`] bytes, printable.
pub fn check_offload_name(name: &str) -> Result<(), WireError> {
    if name.is_empty() {
        return Err(WireError::Empty {
            field: "register.name",
        });
    }
    at_most("register.name", name.len(), NAME_MAX)?;
    printable("register.name", name)
}

/// Register an offload: load `object` (an eBPF ELF object), verify it, and give it an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterRepr<'a> {
    /// Non-empty, at most [`NAME_MAX`] bytes.
    pub name: &'a str,
    pub tenant: u32,
    /// Steering class of the offload's messages.
    pub class: u16,
    /// The handler only reads, so a client may run it (placement hints).
    pub read_only: bool,
    /// The ELF section of the entry point; `None` picks the first executable one.
    pub section: Option<&'a str>,
    /// Non-empty, at most [`OBJECT_MAX`] bytes.
    pub object: &'a [u8],
}

impl<'a> RegisterRepr<'a> {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &RegisterPacket<&'a T>,
    ) -> Result<Self, WireError> {
        packet.check_len()?;
        let flags = packet.flags();
        if flags & !reg::READ_ONLY != 0 {
            return Err(WireError::UnknownFlags {
                field: "register.flags",
                bits: (flags & !reg::READ_ONLY) as u32,
            });
        }
        zero("register.reserved", &packet.buffer.as_ref()[reg::RESERVED])?;
        let section = match packet.section() {
            [] => None,
            s => Some(text("register.section", s, NAME_MAX)?),
        };
        let repr = Self {
            name: text("register.name", packet.name(), NAME_MAX)?,
            tenant: packet.tenant(),
            class: packet.class(),
            read_only: flags & reg::READ_ONLY != 0,
            section,
            object: packet.object(),
        };
        repr.check()?;
        Ok(repr)
    }

    pub fn check(&self) -> Result<(), WireError> {
        check_offload_name(self.name)?;
        if let Some(s) = self.section {
            if s.is_empty() {
                return Err(WireError::Empty {
                    field: "register.section",
                });
            }
            printable("register.section", s)?;
            at_most("register.section", s.len(), NAME_MAX)?;
        }
        if self.object.is_empty() {
            return Err(WireError::Empty {
                field: "register.object",
            });
        }
        at_most("register.object", self.object.len(), OBJECT_MAX)
    }

    pub fn buffer_len(&self) -> usize {
        reg::NAME + self.name.len() + self.section.map_or(0, str::len) + self.object.len()
    }

    /// Writes the payload; the buffer must be exactly `buffer_len()` bytes and `check()` must
    /// pass.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut RegisterPacket<T>) {
        let section = self.section.unwrap_or("");
        packet.set_tenant(self.tenant);
        packet.set_class(self.class);
        packet.set_flags(if self.read_only { reg::READ_ONLY } else { 0 });
        packet.set_lengths(
            self.name.len() as u8,
            section.len() as u8,
            self.object.len() as u32,
        );
        packet.name_mut().copy_from_slice(self.name.as_bytes());
        packet.section_mut().copy_from_slice(section.as_bytes());
        packet.object_mut().copy_from_slice(self.object);
    }
}

mod id {
    use crate::wire::Field;

    pub const ID: Field = 0..4;
    pub const RESERVED: Field = 4..8;
    pub const LEN: usize = 8;
}

/// A view of a payload that is one offload id (REGISTER reply, UNREGISTER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadIdPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> OffloadIdPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        exact(
            id::LEN,
            0,
            self.buffer.as_ref().len(),
            "offload_id",
            "offload id",
        )
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn id(&self) -> u32 {
        get_u32(self.buffer.as_ref(), id::ID)
    }

    pub fn reserved(&self) -> u32 {
        get_u32(self.buffer.as_ref(), id::RESERVED)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> OffloadIdPacket<T> {
    pub fn set_id(&mut self, v: u32) {
        let d = self.buffer.as_mut();
        set_u32(d, id::ID, v);
        set_u32(d, id::RESERVED, 0);
    }
}

/// An offload id: the REGISTER reply, or the offload to UNREGISTER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadIdRepr {
    pub id: u32,
}

impl OffloadIdRepr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &OffloadIdPacket<&T>) -> Result<Self, WireError> {
        packet.check_len()?;
        if packet.reserved() != 0 {
            return Err(WireError::NonZeroReserved {
                field: "offload_id.reserved",
            });
        }
        Ok(Self { id: packet.id() })
    }

    pub fn check(&self) -> Result<(), WireError> {
        Ok(())
    }

    pub const fn buffer_len(&self) -> usize {
        id::LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut OffloadIdPacket<T>) {
        packet.set_id(self.id);
    }
}

mod pg {
    use crate::wire::Field;

    pub const START: Field = 0..4;
    pub const MAX: Field = 4..6;
    pub const RESERVED: Field = 6..8;
    pub const LEN: usize = 8;
}

/// A view of a page request payload (LIST, STATS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequestPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> PageRequestPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        exact(
            pg::LEN,
            0,
            self.buffer.as_ref().len(),
            "page_request",
            "page request",
        )
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn start(&self) -> u32 {
        get_u32(self.buffer.as_ref(), pg::START)
    }

    pub fn max(&self) -> u16 {
        get_u16(self.buffer.as_ref(), pg::MAX)
    }

    pub fn reserved(&self) -> u16 {
        get_u16(self.buffer.as_ref(), pg::RESERVED)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> PageRequestPacket<T> {
    pub fn set_start(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), pg::START, v);
    }

    pub fn set_max(&mut self, v: u16) {
        let d = self.buffer.as_mut();
        set_u16(d, pg::MAX, v);
        set_u16(d, pg::RESERVED, 0);
    }
}

/// Ask for one page of a list (offloads for LIST, counters for STATS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageRequestRepr {
    /// LIST: the smallest offload id to report. STATS: the index of the first counter.
    /// The first page starts at 0; the next at the reply's `next`.
    pub start: u32,
    /// The most entries to return; 0 = as many as fit one datagram.
    pub max: u16,
}

impl PageRequestRepr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &PageRequestPacket<&T>,
    ) -> Result<Self, WireError> {
        packet.check_len()?;
        if packet.reserved() != 0 {
            return Err(WireError::NonZeroReserved {
                field: "page_request.reserved",
            });
        }
        Ok(Self {
            start: packet.start(),
            max: packet.max(),
        })
    }

    pub fn check(&self) -> Result<(), WireError> {
        Ok(())
    }

    pub const fn buffer_len(&self) -> usize {
        pg::LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut PageRequestPacket<T>) {
        packet.set_start(self.start);
        packet.set_max(self.max);
    }
}

mod desc {
    use crate::wire::Field;

    pub const START: Field = 0..4;
    pub const NAME_LEN: usize = 4;
    pub const RESERVED: Field = 5..8;
    pub const NAME: usize = 8;
}

/// A view of a DESCRIBE payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescribePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DescribePacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        let d = self.buffer.as_ref();
        need(desc::NAME, d.len())?;
        exact(
            desc::NAME,
            self.name_len() as usize,
            d.len(),
            "describe.name_len",
            "name",
        )
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn start(&self) -> u32 {
        get_u32(self.buffer.as_ref(), desc::START)
    }

    pub fn name_len(&self) -> u8 {
        self.buffer.as_ref()[desc::NAME_LEN]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> DescribePacket<&'a T> {
    pub fn name(&self) -> &'a [u8] {
        &self.buffer.as_ref()[desc::NAME..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DescribePacket<T> {
    pub fn set_start(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), desc::START, v);
    }

    pub fn set_name_len(&mut self, v: u8) {
        let d = self.buffer.as_mut();
        d[desc::NAME_LEN] = v;
        d[desc::RESERVED].fill(0);
    }

    pub fn name_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[desc::NAME..]
    }
}

/// Ask for the parameters of an application (say `"mica"`: its region ids and table
/// geometry), one page at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescribeRepr<'a> {
    /// Non-empty, at most [`NAME_MAX`] bytes.
    pub app: &'a str,
    /// Index of the first parameter.
    pub start: u32,
}

impl<'a> DescribeRepr<'a> {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &DescribePacket<&'a T>,
    ) -> Result<Self, WireError> {
        packet.check_len()?;
        zero("describe.reserved", &packet.buffer.as_ref()[desc::RESERVED])?;
        let repr = Self {
            app: text("describe.name", packet.name(), NAME_MAX)?,
            start: packet.start(),
        };
        repr.check()?;
        Ok(repr)
    }

    pub fn check(&self) -> Result<(), WireError> {
        if self.app.is_empty() {
            return Err(WireError::Empty {
                field: "describe.name",
            });
        }
        at_most("describe.name", self.app.len(), NAME_MAX)
    }

    pub fn buffer_len(&self) -> usize {
        desc::NAME + self.app.len()
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut DescribePacket<T>) {
        packet.set_start(self.start);
        packet.set_name_len(self.app.len() as u8);
        packet.name_mut().copy_from_slice(self.app.as_bytes());
    }
}

/// Names shown in listings are one line of visible text, in order.
fn printable(field: &'static str, s: &str) -> Result<(), WireError> {
    match s.chars().any(super::hides_text) {
        true => Err(WireError::ControlChar { field }),
        false => Ok(()),
    }
}
