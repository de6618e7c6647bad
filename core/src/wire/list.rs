//! Paged lists: the replies to LIST (offloads), STATS (counters) and DESCRIBE (parameters).
//!
//! A page is a count, a MORE flag with the `start` of the next page, and variable-length
//! entries back to back. Parsing validates every entry once and keeps the entry bytes
//! borrowed; [`EntryList::iter`] then decodes them on the fly, so no `Vec` is needed. A sender
//! builds the same list from a slice of entries ([`EntryList::from_slice`]).

use super::{
    at_most, get_u16, get_u32, get_u64, need, set_u16, set_u32, set_u64, text, WireError, NAME_MAX,
};
use core::fmt;

/// An entry type of a paged list.
pub trait ListEntry<'a>: Sized + Copy + PartialEq + fmt::Debug {
    /// Decodes the entry at the front of `bytes`; returns it and its encoded length.
    fn decode(bytes: &'a [u8]) -> Result<(Self, usize), WireError>;
    /// Its encoded length.
    fn encoded_len(&self) -> usize;
    /// Writes it into exactly `encoded_len()` bytes.
    fn encode(&self, out: &mut [u8]);
    /// Checks the per-field maxima.
    fn check(&self) -> Result<(), WireError>;
}

/// Splits `len` bytes off the front of `bytes`, or says which length ran past the end.
fn take<'a>(
    bytes: &'a [u8],
    at: usize,
    len: usize,
    field: &'static str,
) -> Result<&'a [u8], WireError> {
    bytes
        .get(at..)
        .and_then(|rest| rest.get(..len))
        .ok_or(WireError::LengthPastEnd {
            field,
            len,
            available: bytes.len().saturating_sub(at),
        })
}

mod offload {
    use crate::wire::Field;

    pub const ID: Field = 0..4;
    pub const TENANT: Field = 4..8;
    pub const CLASS: Field = 8..10;
    pub const FLAGS: usize = 10;
    pub const NAME_LEN: usize = 11;
    pub const INSNS: Field = 12..16;
    pub const WORST_CASE: Field = 16..20;
    pub const NAME: usize = 20;

    pub const READ_ONLY: u8 = 0x01;
    /// Held by the host agent but not run by the dataplane that answered (its class is past
    /// the dataplane's, or its verifier refused the program).
    pub const NOT_SERVED: u8 = 0x02;
    pub const FLAGS_KNOWN: u8 = READ_ONLY | NOT_SERVED;
}

/// One registered offload, as LIST reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadEntry<'a> {
    pub id: u32,
    pub name: &'a str,
    pub tenant: u32,
    pub class: u16,
    pub read_only: bool,
    /// Instructions in the verified program.
    pub insn_count: u32,
    /// Instructions on the longest path of one step (the verifier's bound).
    pub worst_case: u32,
    /// Whether the server that answered runs it; a dataplane lists the host agent's offloads
    /// it does not serve with `false` (the reason is in its log).
    pub served: bool,
}

/// An [`OffloadEntry`] owned (what a client or a tool keeps after the reply is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffloadInfo {
    pub id: u32,
    pub name: String,
    pub tenant: u32,
    pub class: u16,
    pub read_only: bool,
    pub insn_count: u32,
    /// Instructions on the longest path of one step.
    pub worst_case: u32,
    /// Whether the server that answered runs it.
    pub served: bool,
}

impl OffloadInfo {
    /// What registering it again takes (a dataplane adding the host agent's offloads).
    pub fn spec(&self) -> crate::pool::OffloadSpec {
        crate::pool::OffloadSpec {
            name: self.name.clone(),
            tenant: self.tenant,
            class: self.class,
            read_only: self.read_only,
        }
    }

    /// The LIST entry describing it.
    pub fn entry(&self) -> OffloadEntry<'_> {
        OffloadEntry {
            id: self.id,
            name: &self.name,
            tenant: self.tenant,
            class: self.class,
            read_only: self.read_only,
            insn_count: self.insn_count,
            worst_case: self.worst_case,
            served: self.served,
        }
    }
}

impl From<&OffloadEntry<'_>> for OffloadInfo {
    fn from(e: &OffloadEntry<'_>) -> Self {
        Self {
            id: e.id,
            name: e.name.to_owned(),
            tenant: e.tenant,
            class: e.class,
            read_only: e.read_only,
            insn_count: e.insn_count,
            worst_case: e.worst_case,
            served: e.served,
        }
    }
}

impl<'a> ListEntry<'a> for OffloadEntry<'a> {
    fn decode(bytes: &'a [u8]) -> Result<(Self, usize), WireError> {
        need(offload::NAME, bytes.len())?;
        let flags = bytes[offload::FLAGS];
        if flags & !offload::FLAGS_KNOWN != 0 {
            return Err(WireError::UnknownFlags {
                field: "list.flags",
                bits: (flags & !offload::FLAGS_KNOWN) as u32,
            });
        }
        let name_len = bytes[offload::NAME_LEN] as usize;
        let name = text(
            "list.name",
            take(bytes, offload::NAME, name_len, "list.name_len")?,
            NAME_MAX,
        )?;
        let entry = Self {
            id: get_u32(bytes, offload::ID),
            name,
            tenant: get_u32(bytes, offload::TENANT),
            class: get_u16(bytes, offload::CLASS),
            read_only: flags & offload::READ_ONLY != 0,
            insn_count: get_u32(bytes, offload::INSNS),
            worst_case: get_u32(bytes, offload::WORST_CASE),
            served: flags & offload::NOT_SERVED == 0,
        };
        Ok((entry, offload::NAME + name_len))
    }

    fn encoded_len(&self) -> usize {
        offload::NAME + self.name.len()
    }

    fn encode(&self, out: &mut [u8]) {
        set_u32(out, offload::ID, self.id);
        set_u32(out, offload::TENANT, self.tenant);
        set_u16(out, offload::CLASS, self.class);
        let read_only = if self.read_only {
            offload::READ_ONLY
        } else {
            0
        };
        let not_served = if self.served { 0 } else { offload::NOT_SERVED };
        out[offload::FLAGS] = read_only | not_served;
        out[offload::NAME_LEN] = self.name.len() as u8;
        set_u32(out, offload::INSNS, self.insn_count);
        set_u32(out, offload::WORST_CASE, self.worst_case);
        out[offload::NAME..offload::NAME + self.name.len()].copy_from_slice(self.name.as_bytes());
    }

    fn check(&self) -> Result<(), WireError> {
        at_most("list.name", self.name.len(), NAME_MAX)
    }
}

mod kv {
    use crate::wire::Field;

    pub const VALUE: Field = 0..8;
    pub const NAME_LEN: usize = 8;
    pub const NAME: usize = 9;
}

/// A named value: a counter (STATS) or an application parameter (DESCRIBE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvEntry<'a> {
    pub name: &'a str,
    pub value: u64,
}

impl<'a> ListEntry<'a> for KvEntry<'a> {
    fn decode(bytes: &'a [u8]) -> Result<(Self, usize), WireError> {
        need(kv::NAME, bytes.len())?;
        let name_len = bytes[kv::NAME_LEN] as usize;
        let name = text(
            "kv.name",
            take(bytes, kv::NAME, name_len, "kv.name_len")?,
            NAME_MAX,
        )?;
        Ok((
            Self {
                name,
                value: get_u64(bytes, kv::VALUE),
            },
            kv::NAME + name_len,
        ))
    }

    fn encoded_len(&self) -> usize {
        kv::NAME + self.name.len()
    }

    fn encode(&self, out: &mut [u8]) {
        set_u64(out, kv::VALUE, self.value);
        out[kv::NAME_LEN] = self.name.len() as u8;
        out[kv::NAME..kv::NAME + self.name.len()].copy_from_slice(self.name.as_bytes());
    }

    fn check(&self) -> Result<(), WireError> {
        at_most("kv.name", self.name.len(), NAME_MAX)
    }
}

/// The entries of a page: validated wire bytes, or a slice to send.
#[derive(Clone, Copy)]
pub struct EntryList<'a, E> {
    inner: Inner<'a, E>,
}

#[derive(Clone, Copy)]
enum Inner<'a, E> {
    /// `count` entries that [`PagedRepr::parse`] validated.
    Wire {
        count: u16,
        bytes: &'a [u8],
    },
    Slice(&'a [E]),
}

impl<'a, E: ListEntry<'a>> EntryList<'a, E> {
    pub fn from_slice(entries: &'a [E]) -> Self {
        Self {
            inner: Inner::Slice(entries),
        }
    }

    pub fn len(&self) -> usize {
        match self.inner {
            Inner::Wire { count, .. } => count as usize,
            Inner::Slice(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> EntryIter<'a, E> {
        EntryIter { inner: self.inner }
    }
}

impl<'a, E: ListEntry<'a>> IntoIterator for EntryList<'a, E> {
    type Item = E;
    type IntoIter = EntryIter<'a, E>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, E: ListEntry<'a>> PartialEq for EntryList<'a, E> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a, E: ListEntry<'a>> fmt::Debug for EntryList<'a, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterates over an [`EntryList`].
#[derive(Clone)]
pub struct EntryIter<'a, E> {
    inner: Inner<'a, E>,
}

impl<'a, E: ListEntry<'a>> Iterator for EntryIter<'a, E> {
    type Item = E;

    fn next(&mut self) -> Option<E> {
        match &mut self.inner {
            Inner::Wire { count, bytes } => {
                if *count == 0 {
                    return None;
                }
                // The bytes were validated by `PagedRepr::parse`; should decoding fail anyway,
                // the list ends rather than panics.
                let (entry, used) = E::decode(bytes).ok()?;
                *bytes = bytes.get(used..)?;
                *count -= 1;
                Some(entry)
            }
            Inner::Slice(s) => {
                let (first, rest) = s.split_first()?;
                *s = rest;
                Some(*first)
            }
        }
    }
}

mod page {
    use crate::wire::Field;

    pub const COUNT: Field = 0..2;
    pub const FLAGS: Field = 2..4;
    pub const NEXT: Field = 4..8;
    pub const ENTRIES: usize = 8;

    pub const MORE: u16 = 0x0001;
}

/// A view of a page payload (LIST, STATS and DESCRIBE replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagedPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> PagedPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the fixed part; the entries are checked by [`PagedRepr::parse`].
    pub fn check_len(&self) -> Result<(), WireError> {
        need(page::ENTRIES, self.buffer.as_ref().len())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn count(&self) -> u16 {
        get_u16(self.buffer.as_ref(), page::COUNT)
    }

    pub fn flags(&self) -> u16 {
        get_u16(self.buffer.as_ref(), page::FLAGS)
    }

    pub fn next(&self) -> u32 {
        get_u32(self.buffer.as_ref(), page::NEXT)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> PagedPacket<&'a T> {
    /// The entry bytes.
    pub fn entries(&self) -> &'a [u8] {
        &self.buffer.as_ref()[page::ENTRIES..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> PagedPacket<T> {
    pub fn set_count(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), page::COUNT, v);
    }

    pub fn set_flags(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), page::FLAGS, v);
    }

    pub fn set_next(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), page::NEXT, v);
    }

    pub fn entries_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[page::ENTRIES..]
    }
}

/// One page of a list.
#[derive(Clone, Copy)]
pub struct PagedRepr<'a, E> {
    /// More entries follow: ask again with `start = next`.
    pub more: bool,
    /// The `start` of the next page; 0 when `more` is false.
    pub next: u32,
    pub entries: EntryList<'a, E>,
}

impl<'a, E: ListEntry<'a>> PartialEq for PagedRepr<'a, E> {
    fn eq(&self, other: &Self) -> bool {
        self.more == other.more && self.next == other.next && self.entries == other.entries
    }
}

impl<'a, E: ListEntry<'a>> fmt::Debug for PagedRepr<'a, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagedRepr")
            .field("more", &self.more)
            .field("next", &self.next)
            .field("entries", &self.entries)
            .finish()
    }
}

/// A page of offloads (LIST reply).
pub type ListReplyRepr<'a> = PagedRepr<'a, OffloadEntry<'a>>;
/// A page of named values (STATS and DESCRIBE replies).
pub type KvListRepr<'a> = PagedRepr<'a, KvEntry<'a>>;

impl<'a, E: ListEntry<'a>> PagedRepr<'a, E> {
    /// The last (or only) page of `entries`.
    pub fn last(entries: &'a [E]) -> Self {
        Self {
            more: false,
            next: 0,
            entries: EntryList::from_slice(entries),
        }
    }

    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &PagedPacket<&'a T>) -> Result<Self, WireError> {
        packet.check_len()?;
        let flags = packet.flags();
        if flags & !page::MORE != 0 {
            return Err(WireError::UnknownFlags {
                field: "page.flags",
                bits: (flags & !page::MORE) as u32,
            });
        }
        let more = flags & page::MORE != 0;
        if !more && packet.next() != 0 {
            return Err(WireError::NonZeroReserved { field: "page.next" });
        }
        let all = packet.entries();
        let mut rest = all;
        for _ in 0..packet.count() {
            let (entry, used) = E::decode(rest)?;
            entry.check()?;
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes {
                what: "list entries",
                extra: rest.len(),
            });
        }
        Ok(Self {
            more,
            next: packet.next(),
            entries: EntryList {
                inner: Inner::Wire {
                    count: packet.count(),
                    bytes: all,
                },
            },
        })
    }

    pub fn check(&self) -> Result<(), WireError> {
        at_most("page.count", self.entries.len(), u16::MAX as usize)?;
        if !self.more && self.next != 0 {
            return Err(WireError::NonZeroReserved { field: "page.next" });
        }
        self.entries.iter().try_for_each(|e| e.check())
    }

    pub fn buffer_len(&self) -> usize {
        page::ENTRIES + self.entries.iter().map(|e| e.encoded_len()).sum::<usize>()
    }

    /// Writes the payload; the buffer must be exactly `buffer_len()` bytes and `check()` must
    /// pass.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut PagedPacket<T>) {
        packet.set_count(self.entries.len() as u16);
        packet.set_flags(if self.more { page::MORE } else { 0 });
        packet.set_next(self.next);
        let area = packet.entries_mut();
        let mut at = 0;
        for e in self.entries.iter() {
            let n = e.encoded_len();
            e.encode(&mut area[at..at + n]);
            at += n;
        }
    }
}

/// How many of `entries` fit one page of a reply (at most `max` of them, 0 meaning no limit
/// but the datagram), and whether more remain: the sender's side of paging, shared by every
/// server.
pub fn fit_page<'a, E: ListEntry<'a>>(entries: &[E], max: u16) -> (usize, bool) {
    let max = if max == 0 { usize::MAX } else { max as usize };
    let mut room = super::MAX_PAYLOAD - page::ENTRIES;
    let mut n = 0;
    for e in entries.iter().take(max) {
        let s = e.encoded_len();
        if s > room {
            break;
        }
        room -= s;
        n += 1;
    }
    (n, n < entries.len())
}
