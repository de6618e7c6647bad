//! The reply cache that makes mutations happen at most once per request id
//! (docs/protocol.md, "De-duplication"). Keyed by (client address, request id). Fixed size,
//! allocated once: `sets × WAYS` entries, each with room for one reply packet.
//!
//! An entry may be forgotten only when no retransmission of its request can come any more:
//! - its client said so: every request carries the client's *window*, from which the lowest id
//!   it may still send follows ([`naam_core::wire::retired_below`]); the cache keeps that floor
//!   per client ([`Floors`]) and reuses entries below it first (`Begin::Reused`);
//! - or it completed longer ago than `retain_ns`, the longest time a client retries (the
//!   default client gives up after about 2.6 s): clients that do not say, or went away
//!   (`Begin::Expired`, counted `dedup_evicted`).
//!
//! An entry in progress, or completed within `retain_ns` and not retired, is never replaced:
//! when a new request's set holds only those, it is refused ([`Begin::Full`], the worker
//! answers `busy` with how long until an entry expires) rather than remembered in place of one
//! that could still be retried.
//!
//! The cache is shared by every tenant of a worker, so no tenant may hold more than
//! [`TENANT_WAYS`] of a set's entries that could still be retried: past that its new requests
//! are refused ([`Begin::OverShare`]) and every other tenant always finds room. Without it one
//! client that never says its window filled all of a worker's entries within a second and kept
//! every other tenant's mutations refused.
//!
//! The entries and replies live in one block of memory: the heap, or a file the dataplane maps
//! (`RUN_DIR/reply-cache.W`, [`ReplyCache::open`]) so that they survive a restart of the
//! dataplane: a retransmission that reaches the new process gets the reply the old one sent.
//! A request the old process had begun and not finished is [`Seen::Lost`]: it may have run,
//! so it is answered `outcome_unknown`, never run again. Times are CLOCK_MONOTONIC, the same
//! in both processes. Which client's requests a worker sees depends on the worker count (the
//! kernel spreads flows over the workers' sockets), so a file is taken over only by a
//! dataplane with the same workers and capacity; otherwise the new one waits until nothing
//! in the old files can be retransmitted any more before it serves ([`restart`]).

use std::net::SocketAddrV4;
use std::path::Path;

use naam_core::memory::{OwnedRegion, RegionMem};
use naam_core::wire::{id_before, retired_below};
use naam_link::{LinkError, MappedFile, Opened};

use crate::port::MAX_PAYLOAD;

pub mod restart;

/// Entries per set.
pub const WAYS: usize = 8;

/// Entries of a set one tenant may hold while they could still be retried: all but one.
pub const TENANT_WAYS: usize = WAYS - 1;

/// How long a completed request is remembered by default when its client does not say it is
/// finished with it: longer than the default client retries (50 ms doubling to 1 s, five
/// retransmissions: 2.55 s).
pub const DEFAULT_RETAIN_NS: u64 = 3_000_000_000;

/// Requests a worker remembers by default (16.3 MiB with their replies). An entry is needed for
/// every mutation its client may still send again, which under overload includes those that
/// clients hold back or retry after a refusal: with 1 024, two clients keeping 1 024 requests
/// each outstanding (`naam-bench overload`, 5 % PUTs) filled the cache and were refused
/// `busy` (`dedup_full`) in a loop, at 25–29 % of the peak goodput; with 4 096, 76 %; with
/// 8 192, 89 % (2026-12-06, 2-second points).
pub const DEFAULT_ENTRIES: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    InProgress,
    Done,
    /// Begun by a previous process that stopped before it finished: may have run.
    Lost,
}

impl State {
    fn code(self) -> u64 {
        match self {
            State::Empty => 0,
            State::InProgress => 1,
            State::Done => 2,
            State::Lost => 3,
        }
    }

    fn from_code(c: u64) -> State {
        match c {
            1 => State::InProgress,
            2 => State::Done,
            3 => State::Lost,
            // Anything else (a torn or foreign file) is nothing remembered.
            _ => State::Empty,
        }
    }
}

/// Layout of the cache's memory: a header line, then `ENTRY` bytes per entry (client,
/// request id, state | reply length << 8 | tenant << 32, done time), then `MAX_PAYLOAD` bytes
/// of reply per entry. (Files written before the tenant was kept have 0 there.)
/// The header's words: [`MAGIC`], sets, [`WAYS`], [`MAX_PAYLOAD`], workers of the dataplane.
/// (`NAAMRPC1`, before the worker count was written, had the first four.)
const MAGIC: u64 = u64::from_le_bytes(*b"NAAMRPC2");
const HEADER: u64 = 64;
const ENTRY: u64 = 32;

#[derive(Clone, Copy)]
struct Entry {
    client: u64,
    request_id: u64,
    state: State,
    /// When the reply was stored (the worker's clock), for `Done` entries.
    done_ns: u64,
    len: u16,
    /// Whose request it is (the share of [`TENANT_WAYS`]).
    tenant: u32,
    /// The request's kind (`Kind as u8`; 0 in files of earlier versions: any).
    kind: u8,
}

impl Entry {
    /// An entry from its `ENTRY` bytes as four little-endian words (the memory layout above).
    fn from_words(w: [u64; 4]) -> Entry {
        Entry {
            client: w[0],
            request_id: w[1],
            state: State::from_code(w[2] & 0xff),
            len: ((w[2] >> 8) as u16).min(MAX_PAYLOAD as u16),
            tenant: (w[2] >> 32) as u32,
            kind: (w[2] >> 24) as u8,
            done_ns: w[3],
        }
    }
}

const EMPTY: Entry = Entry {
    client: 0,
    request_id: 0,
    state: State::Empty,
    done_ns: 0,
    len: 0,
    tenant: 0,
    kind: 0,
};

/// What the cache knows about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen<'a> {
    /// Not seen (or forgotten): execute it.
    New,
    /// Being executed: drop the duplicate, the reply will come.
    InProgress,
    /// Completed: send this reply again.
    Done(&'a [u8]),
    /// Begun by the dataplane before a restart and never finished: it may have run.
    Lost,
    /// Remembered for another tenant or another kind of request under the same client and
    /// id: not a retransmission of this one, and not its reply (a client reusing an id, or
    /// a peer forging its address). Neither run nor answered from the cache.
    Other,
}

/// What [`ReplyCache::begin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Remembered in a free entry (or the request's own).
    Started,
    /// Remembered in place of a completed request its client has finished with.
    Reused,
    /// Remembered in place of one completed more than `retain_ns` ago, whose client did not
    /// say it was finished (counted `dedup_evicted`).
    Expired,
    /// Every entry of its set may still be retried: not remembered; do not run the request.
    /// The earliest an entry of the set expires, in ns from now (`None`: all in progress).
    Full { retry_after_ns: Option<u64> },
    /// Its tenant already holds [`TENANT_WAYS`] entries of the set that may still be retried:
    /// not remembered, the rest is for other tenants. When the earliest of them expires.
    OverShare { retry_after_ns: Option<u64> },
}

/// A fixed-size reply cache.
pub struct ReplyCache {
    /// The cache's memory (the view holds it).
    mem: RegionMem,
    /// The file it lives in, if any: holds the file's lock, so a second dataplane cannot use
    /// the same file.
    _file: Option<MappedFile>,
    sets: usize,
    retain_ns: u64,
    /// Workers of the dataplane whose file this is (0 in memory): part of the file's layout.
    workers: u64,
    floors: Floors,
    /// A reply copied out of `mem` for [`ReplyCache::lookup`].
    scratch: Box<[u8; MAX_PAYLOAD]>,
}

/// What [`ReplyCache::open`] found in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    /// Requests a previous process remembered (their replies are sent again on retries).
    pub done: usize,
    /// Requests it had begun and not finished ([`Seen::Lost`]).
    pub lost: usize,
}

fn client_key(c: SocketAddrV4) -> u64 {
    (u64::from(u32::from(*c.ip())) << 16) | u64::from(c.port())
}

fn bytes_for(sets: usize) -> u64 {
    HEADER + (sets * WAYS) as u64 * (ENTRY + MAX_PAYLOAD as u64)
}

impl ReplyCache {
    /// Room for at least `capacity` remembered requests (rounded up to whole sets; 0 keeps
    /// nothing), each kept at least `retain_ns` after it completed unless its client has
    /// finished with it. In this process's memory: forgotten when it exits.
    pub fn new(capacity: usize, retain_ns: u64) -> ReplyCache {
        let sets = capacity.div_ceil(WAYS);
        let mem = OwnedRegion::zeroed(bytes_for(sets) as usize).mem();
        let c = Self::with_memory(mem, None, sets, retain_ns);
        c.format();
        c
    }

    /// The same in the file `path`, kept across restarts of the dataplane, for one of its
    /// `workers` workers: what a previous process left there with the same capacity and
    /// workers is taken over (its unfinished requests become [`Seen::Lost`], as of
    /// `now_ns`); a file of another layout starts empty (see [`restart`] for when that is
    /// safe).
    pub fn open(
        path: &Path,
        (capacity, workers): (usize, usize),
        retain_ns: u64,
        now_ns: u64,
    ) -> Result<(ReplyCache, Restored), LinkError> {
        let sets = capacity.div_ceil(WAYS);
        let (file, opened) = MappedFile::open(path, bytes_for(sets))?;
        let mem = file.mem().clone();
        let mut c = Self::with_memory(mem, Some(file), sets, retain_ns);
        c.workers = workers as u64;
        if opened != Opened::Reopened || !c.header_matches() {
            c.format();
            return Ok((c, Restored::default()));
        }
        let mut restored = Restored::default();
        for i in 0..sets * WAYS {
            let e = c.entry(i);
            match e.state {
                State::InProgress => {
                    restored.lost += 1;
                    c.set_entry(
                        i,
                        Entry {
                            state: State::Lost,
                            done_ns: now_ns,
                            len: 0,
                            ..e
                        },
                    );
                }
                State::Done => restored.done += 1,
                State::Lost => restored.lost += 1,
                State::Empty => {}
            }
            // A time ahead of this process's clock was taken by another boot's (a run
            // directory kept across a reboot): counted from now instead, so the entry expires
            // one retention from now, not days later.
            if matches!(e.state, State::Done | State::Lost) && e.done_ns > now_ns {
                c.set_entry(
                    i,
                    Entry {
                        done_ns: now_ns,
                        ..e
                    },
                );
            }
        }
        Ok((c, restored))
    }

    fn with_memory(mem: RegionMem, file: Option<MappedFile>, sets: usize, retain_ns: u64) -> Self {
        ReplyCache {
            mem,
            _file: file,
            sets,
            retain_ns,
            workers: 0,
            // Clients whose floor is kept: as many as entries (each remembered request has
            // a client), at least one set of them.
            floors: Floors::new((sets * WAYS).max(Floors::PROBE)),
            scratch: Box::new([0; MAX_PAYLOAD]),
        }
    }

    fn header(&self) -> [u64; 5] {
        [
            MAGIC,
            self.sets as u64,
            WAYS as u64,
            MAX_PAYLOAD as u64,
            self.workers,
        ]
    }

    fn header_matches(&self) -> bool {
        self.header()
            .iter()
            .enumerate()
            .all(|(k, &w)| self.mem.load_u64(8 * k as u64) == Some(w))
    }

    /// Empties every entry and writes the header.
    fn format(&self) {
        for i in 0..self.sets * WAYS {
            self.set_entry(i, EMPTY);
        }
        for (k, w) in self.header().into_iter().enumerate() {
            self.mem.store_u64(8 * k as u64, w);
        }
    }

    fn entry(&self, i: usize) -> Entry {
        let at = HEADER + i as u64 * ENTRY;
        Entry::from_words(std::array::from_fn(|k| {
            self.mem.load_u64(at + 8 * k as u64).unwrap_or(0)
        }))
    }

    fn set_entry(&self, i: usize, e: Entry) {
        let at = HEADER + i as u64 * ENTRY;
        let meta = e.state.code()
            | u64::from(e.len) << 8
            | u64::from(e.kind) << 24
            | u64::from(e.tenant) << 32;
        for (k, w) in [e.client, e.request_id, meta, e.done_ns]
            .into_iter()
            .enumerate()
        {
            self.mem.store_u64(at + 8 * k as u64, w);
        }
    }

    fn reply_at(&self, i: usize) -> u64 {
        HEADER + (self.sets * WAYS) as u64 * ENTRY + (i * MAX_PAYLOAD) as u64
    }

    pub fn capacity(&self) -> usize {
        self.sets * WAYS
    }

    fn set_of(&self, client: u64, id: u64) -> std::ops::Range<usize> {
        let h = naam_core::helpers::hash64(client, id) as usize % self.sets.max(1);
        h * WAYS..(h + 1) * WAYS
    }

    fn find(&self, client: u64, id: u64) -> Option<usize> {
        if self.sets == 0 {
            return None;
        }
        self.set_of(client, id).find(|&i| {
            let e = self.entry(i);
            e.state != State::Empty && e.client == client && e.request_id == id
        })
    }

    /// What the cache holds for request `request_id` of `client`, a request of `kind`
    /// (`Kind as u8`) by `tenant`.
    pub fn lookup(
        &mut self,
        client: SocketAddrV4,
        request_id: u64,
        tenant: u32,
        kind: u8,
    ) -> Seen<'_> {
        match self.find(client_key(client), request_id) {
            None => Seen::New,
            Some(i) => {
                let e = self.entry(i);
                if e.tenant != tenant || (e.kind != 0 && e.kind != kind) {
                    return Seen::Other;
                }
                match e.state {
                    State::Done => {
                        let n = e.len as usize;
                        self.mem.read(self.reply_at(i), &mut self.scratch[..n]);
                        Seen::Done(&self.scratch[..n])
                    }
                    State::Lost => Seen::Lost,
                    _ => Seen::InProgress,
                }
            }
        }
    }

    /// Notes what a request's window says: its client will not send ids below the floor
    /// again. Call it only for requests that proved they may act (a capability, a region
    /// key): a forged window would let a retransmission of the real client run again.
    pub fn retire(&mut self, client: SocketAddrV4, request_id: u64, window: u32) {
        if let Some(floor) = retired_below(request_id, window) {
            self.floors.raise(client_key(client), floor);
        }
    }

    /// Remembers that the request is being executed: in a free entry, else in place of a
    /// completed one whose client is finished with it, else of one completed more than
    /// `retain_ns` before `now_ns`; never in place of one that may still be retried. `tenant`
    /// and `kind` (`Kind as u8`) are whose and what the request is ([`ReplyCache::lookup`]).
    #[must_use]
    pub fn begin(
        &mut self,
        client: SocketAddrV4,
        request_id: u64,
        tenant: u32,
        kind: u8,
        now_ns: u64,
    ) -> Begin {
        if self.sets == 0 {
            return Begin::Started;
        }
        let c = client_key(client);
        if let Some(i) = self.find(c, request_id) {
            let e = self.entry(i);
            self.set_entry(
                i,
                Entry {
                    state: State::InProgress,
                    ..e
                },
            );
            return Begin::Started;
        }
        // The best victim of the set: empty, then retired, then the oldest expired; and how
        // many of the set's entries that may still be retried are this tenant's.
        let mut best: Option<(usize, Begin)> = None;
        let mut oldest_done: Option<u64> = None;
        let (mut held, mut own_oldest): (usize, Option<u64>) = (0, None);
        for i in self.set_of(c, request_id) {
            let e = self.entry(i);
            let own = e.tenant == tenant;
            let outcome = match e.state {
                State::Empty => Begin::Started,
                State::InProgress => {
                    held += usize::from(own);
                    continue;
                }
                State::Done | State::Lost if self.floors.retired(e.client, e.request_id) => {
                    Begin::Reused
                }
                State::Done | State::Lost => {
                    oldest_done = Some(oldest_done.map_or(e.done_ns, |t| t.min(e.done_ns)));
                    if now_ns.saturating_sub(e.done_ns) < self.retain_ns {
                        if own {
                            held += 1;
                            own_oldest = Some(own_oldest.map_or(e.done_ns, |t| t.min(e.done_ns)));
                        }
                        continue;
                    }
                    Begin::Expired
                }
            };
            let rank = |b: &Begin| match b {
                Begin::Started => 0,
                Begin::Reused => 1,
                _ => 2,
            };
            let better = match &best {
                None => true,
                Some((j, b)) => {
                    rank(&outcome) < rank(b)
                        || (rank(&outcome) == rank(b)
                            && outcome == Begin::Expired
                            && e.done_ns < self.entry(*j).done_ns)
                }
            };
            if better {
                best = Some((i, outcome));
            }
        }
        let after = |t: u64| (t + self.retain_ns).saturating_sub(now_ns).max(1);
        if held >= TENANT_WAYS {
            return Begin::OverShare {
                retry_after_ns: own_oldest.map(after),
            };
        }
        let Some((i, outcome)) = best else {
            return Begin::Full {
                retry_after_ns: oldest_done.map(after),
            };
        };
        self.set_entry(
            i,
            Entry {
                client: c,
                request_id,
                state: State::InProgress,
                done_ns: 0,
                len: 0,
                tenant,
                kind,
            },
        );
        outcome
    }

    /// Stores the reply of a request begun earlier (ignored if it was forgotten meanwhile,
    /// or the reply does not fit a packet).
    pub fn complete(&mut self, client: SocketAddrV4, request_id: u64, reply: &[u8], now_ns: u64) {
        let Some(i) = self.find(client_key(client), request_id) else {
            return;
        };
        if reply.len() > MAX_PAYLOAD {
            self.set_entry(i, EMPTY);
            return;
        }
        // The reply first, then the entry that says it is there (a restart in between finds
        // the request in progress: lost, never a torn reply).
        self.mem.write(self.reply_at(i), reply);
        let e = self.entry(i);
        self.set_entry(
            i,
            Entry {
                len: reply.len() as u16,
                state: State::Done,
                done_ns: now_ns,
                ..e
            },
        );
    }

    /// Forgets a request (its reply meant "not executed": the retry must run).
    pub fn forget(&mut self, client: SocketAddrV4, request_id: u64) {
        if let Some(i) = self.find(client_key(client), request_id) {
            self.set_entry(i, EMPTY);
        }
    }
}

/// The lowest request id each client may still send, for as many clients as fit: a fixed
/// open-addressed table; a client that finds no room takes the place of the least recently
/// raised floor in its probe window. A forgotten floor only means that client's entries wait
/// for `retain_ns` (safe, just slower to free).
struct Floors {
    slots: Box<[FloorSlot]>,
    clock: u64,
}

#[derive(Clone, Copy)]
struct FloorSlot {
    client: u64,
    floor: u64,
    /// When it was last raised (`Floors::clock`); 0: empty.
    stamp: u64,
}

impl Floors {
    const PROBE: usize = 8;

    fn new(n: usize) -> Floors {
        let empty = FloorSlot {
            client: 0,
            floor: 0,
            stamp: 0,
        };
        Floors {
            slots: vec![empty; n].into_boxed_slice(),
            clock: 0,
        }
    }

    fn probe(&self, client: u64) -> impl Iterator<Item = usize> {
        let n = self.slots.len();
        let h = naam_core::helpers::hash64(client, 0x466c_6f6f_7273) as usize % n;
        (0..Self::PROBE.min(n)).map(move |k| (h + k) % n)
    }

    /// The client's floor, when known.
    fn get(&self, client: u64) -> Option<u64> {
        self.probe(client)
            .map(|i| self.slots[i])
            .find(|s| s.stamp != 0 && s.client == client)
            .map(|s| s.floor)
    }

    /// Whether `client` said it will not send `request_id` again.
    fn retired(&self, client: u64, request_id: u64) -> bool {
        self.get(client).is_some_and(|f| id_before(request_id, f))
    }

    fn raise(&mut self, client: u64, floor: u64) {
        self.clock += 1;
        let mut victim = None;
        for i in self.probe(client) {
            let s = self.slots[i];
            if s.stamp != 0 && s.client == client {
                if id_before(s.floor, floor) {
                    self.slots[i].floor = floor;
                }
                self.slots[i].stamp = self.clock;
                return;
            }
            if victim.is_none_or(|v: usize| s.stamp < self.slots[v].stamp) {
                victim = Some(i);
            }
        }
        if let Some(i) = victim {
            self.slots[i] = FloorSlot {
                client,
                floor,
                stamp: self.clock,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const RETAIN: u64 = 3_000 * MS;

    fn addr(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new([127, 0, 0, 1].into(), port)
    }

    /// `begin` for a request of a tenant of its own (the id), so that no share applies: the
    /// tests of the share name their tenants.
    fn begin(c: &mut ReplyCache, client: SocketAddrV4, id: u64, now: u64) -> Begin {
        c.begin(client, id, id as u32, AM, now)
    }

    /// `lookup` of a request as [`begin`] remembers it.
    fn lookup(c: &mut ReplyCache, client: SocketAddrV4, id: u64) -> Seen<'_> {
        c.lookup(client, id, id as u32, AM)
    }

    /// The kind of the requests of these tests.
    const AM: u8 = naam_core::wire::Kind::AmRequest as u8;

    #[test]
    fn one_tenant_that_never_says_its_window_cannot_take_the_whole_cache() {
        // Tenant 1's client keeps sending mutations and never says it is finished with any:
        // it holds at most TENANT_WAYS of each set, and tenant 2's requests always find room.
        let mut c = ReplyCache::new(64, RETAIN);
        let (mut kept, mut over) = (0, 0);
        for id in 0..10_000u64 {
            match c.begin(addr(1), id, 1, AM, id) {
                Begin::Started => {
                    kept += 1;
                    c.complete(addr(1), id, b"ok", id);
                }
                Begin::OverShare { retry_after_ns } => {
                    over += 1;
                    assert!(retry_after_ns.is_some_and(|r| r > 0 && r <= RETAIN));
                }
                b => panic!("request {id}: {b:?}"),
            }
        }
        assert_eq!(kept, c.capacity() / WAYS * TENANT_WAYS, "{over} refused");
        for id in 0..1_000u64 {
            let b = c.begin(addr(2), id, 2, AM, 20_000);
            assert_eq!(b, Begin::Started, "tenant 2, request {id}");
            c.forget(addr(2), id);
        }
        // Past the retention time its oldest entries go, and it gets room again.
        let b = c.begin(addr(1), 20_000, 1, AM, RETAIN + 10_000);
        assert!(matches!(b, Begin::Started | Begin::Expired), "{b:?}");
    }

    #[test]
    fn remembers_in_progress_then_done_then_forgets() {
        let mut c = ReplyCache::new(64, RETAIN);
        assert_eq!(lookup(&mut c, addr(1), 7), Seen::New);
        assert_eq!(begin(&mut c, addr(1), 7, 0), Begin::Started);
        assert_eq!(lookup(&mut c, addr(1), 7), Seen::InProgress);
        assert_eq!(
            lookup(&mut c, addr(2), 7),
            Seen::New,
            "other client, same id"
        );
        c.complete(addr(1), 7, b"reply", 1);
        assert_eq!(lookup(&mut c, addr(1), 7), Seen::Done(b"reply"));
        c.forget(addr(1), 7);
        assert_eq!(lookup(&mut c, addr(1), 7), Seen::New);
    }

    #[test]
    fn an_entry_answers_only_its_own_tenant_and_kind() {
        let mut c = ReplyCache::new(64, RETAIN);
        let one_sided = naam_core::wire::Kind::OneSided as u8;
        assert_eq!(c.begin(addr(1), 7, 1, one_sided, 0), Begin::Started);
        c.complete(addr(1), 7, b"reply", 1);
        assert_eq!(c.lookup(addr(1), 7, 1, one_sided), Seen::Done(b"reply"));
        assert_eq!(
            c.lookup(addr(1), 7, 2, one_sided),
            Seen::Other,
            "another tenant"
        );
        assert_eq!(c.lookup(addr(1), 7, 1, AM), Seen::Other, "another kind");
        assert_eq!(c.lookup(addr(2), 7, 2, AM), Seen::New, "another client");
    }

    #[test]
    fn nothing_that_may_be_retried_is_forgotten_however_many_requests_follow() {
        // The finding of issue 14: one FAA applied twice after ~3 000 other mutations.
        let mut c = ReplyCache::new(16, RETAIN);
        let (mut started, mut refused) = (0, 0);
        for id in 0..3000u64 {
            match begin(&mut c, addr(1), id, id * 10) {
                Begin::Full { retry_after_ns } => {
                    refused += 1;
                    let r = retry_after_ns.expect("some entry completed");
                    assert!(r > 0 && r <= RETAIN, "{r}");
                }
                b => {
                    assert_eq!(b, Begin::Started, "never in place of a young one");
                    started += 1;
                    c.complete(addr(1), id, &id.to_le_bytes(), id * 10);
                }
            }
        }
        assert!(
            started <= c.capacity() && refused > 0,
            "{started} {refused}"
        );
        // Every request that ran is still remembered, its reply ready for a retransmission.
        let kept = (0..3000u64)
            .filter(|id| lookup(&mut c, addr(1), *id) != Seen::New)
            .count();
        assert_eq!(kept, started);
        // Once past the retention time the oldest may go (counted by the worker).
        assert_eq!(
            begin(&mut c, addr(1), 5000, RETAIN + 30_000),
            Begin::Expired
        );
    }

    #[test]
    fn a_clients_window_frees_what_it_finished_with_at_once() {
        let mut c = ReplyCache::new(16, RETAIN);
        // A client with a few requests open at a time, saying so: it never runs out.
        for id in 0..10_000u64 {
            c.retire(addr(1), id, 4);
            let b = begin(&mut c, addr(1), id, id);
            assert!(
                matches!(b, Begin::Started | Begin::Reused),
                "id {id}: {b:?}"
            );
            c.complete(addr(1), id, b"ok", id);
        }
        // The open ones are all still remembered.
        for id in 9_997..10_000u64 {
            assert_eq!(lookup(&mut c, addr(1), id), Seen::Done(b"ok"));
        }
        // Another client's floor frees nothing of this one's.
        let mut c = ReplyCache::new(8, RETAIN);
        for id in 0..8u64 {
            assert_eq!(begin(&mut c, addr(1), id, 0), Begin::Started);
            c.complete(addr(1), id, b"x", 0);
        }
        c.retire(addr(2), 1_000, 1);
        assert!(matches!(
            begin(&mut c, addr(2), 1_000, 1),
            Begin::Full { .. }
        ));
        c.retire(addr(1), 100, 1);
        assert_eq!(begin(&mut c, addr(2), 1_000, 1), Begin::Reused);
    }

    #[test]
    fn windows_across_the_wrap_of_request_ids() {
        let mut c = ReplyCache::new(8, RETAIN);
        let start = u64::MAX - 3;
        for k in 0..8u64 {
            let id = start.wrapping_add(k);
            c.retire(addr(1), id, 2);
            assert!(matches!(
                begin(&mut c, addr(1), id, 0),
                Begin::Started | Begin::Reused
            ));
            c.complete(addr(1), id, b"w", 0);
        }
        // ids MAX-3 ..= 3 fill the one set; the last window (2 at id 3) puts the floor at 2.
        // A window at id 4 puts it at 3: every older entry is reused, 3 is kept.
        c.retire(addr(1), 4, 2);
        for k in 0..7u64 {
            assert_eq!(begin(&mut c, addr(1), 100 + k, 0), Begin::Reused, "{k}");
        }
        assert!(matches!(begin(&mut c, addr(1), 200, 0), Begin::Full { .. }));
        assert_eq!(
            lookup(&mut c, addr(1), 3),
            Seen::Done(b"w"),
            "not before the floor"
        );
        assert_eq!(
            lookup(&mut c, addr(1), u64::MAX),
            Seen::New,
            "before it, across the wrap"
        );
    }

    #[test]
    fn entries_in_progress_are_never_evicted() {
        let mut c = ReplyCache::new(WAYS, RETAIN); // one set
        for id in 0..WAYS as u64 {
            assert_eq!(begin(&mut c, addr(1), id, 0), Begin::Started);
        }
        // The set is full of requests in progress: the next one is refused (no entry will
        // expire by itself), and every one in progress is still there.
        assert_eq!(
            begin(&mut c, addr(1), 100, RETAIN * 10),
            Begin::Full {
                retry_after_ns: None
            }
        );
        c.retire(addr(1), 1_000, 1);
        assert!(matches!(begin(&mut c, addr(1), 100, 0), Begin::Full { .. }));
        for id in 0..WAYS as u64 {
            assert_eq!(lookup(&mut c, addr(1), id), Seen::InProgress);
        }
        // One completes: it is the one the next request replaces (retired by the window).
        c.complete(addr(1), 3, b"three", 0);
        assert_eq!(begin(&mut c, addr(1), 100, 0), Begin::Reused);
        assert_eq!(lookup(&mut c, addr(1), 3), Seen::New);
        assert_eq!(lookup(&mut c, addr(1), 100), Seen::InProgress);
        assert_eq!(lookup(&mut c, addr(1), 0), Seen::InProgress);
    }

    #[test]
    fn a_reopened_file_replays_what_was_done_and_calls_the_unfinished_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reply-cache.0");
        {
            let (mut c, r) = ReplyCache::open(&path, (64, 1), RETAIN, 0).unwrap();
            assert_eq!(r, Restored::default());
            assert_eq!(begin(&mut c, addr(1), 1, 0), Begin::Started);
            c.complete(addr(1), 1, b"first reply", 10);
            assert_eq!(begin(&mut c, addr(1), 2, 0), Begin::Started); // the process dies here
            assert_eq!(begin(&mut c, addr(2), 3, 0), Begin::Started);
            c.complete(addr(2), 3, b"third", 20);
            c.forget(addr(2), 3); // "not executed": nothing to keep
        }
        let (mut c, r) = ReplyCache::open(&path, (64, 1), RETAIN, 1_000).unwrap();
        assert_eq!(r, Restored { done: 1, lost: 1 });
        assert_eq!(lookup(&mut c, addr(1), 1), Seen::Done(b"first reply"));
        assert_eq!(lookup(&mut c, addr(1), 2), Seen::Lost);
        assert_eq!(lookup(&mut c, addr(2), 3), Seen::New);
        // A lost entry is kept like a completed one: until its client is finished with it or
        // the retention time has passed since the restart.
        let started = (100..100 + 10 * WAYS as u64)
            .filter(|&id| begin(&mut c, addr(1), id, 1_000) == Begin::Started)
            .count();
        assert!(started > 0);
        assert_eq!(
            lookup(&mut c, addr(1), 2),
            Seen::Lost,
            "not replaced by younger requests"
        );
        drop(c);
        // Another capacity: the file starts empty (the old entries do not fit its sets).
        let (mut c, r) = ReplyCache::open(&path, (128, 1), RETAIN, 2_000).unwrap();
        assert_eq!(r, Restored::default());
        assert_eq!(lookup(&mut c, addr(1), 1), Seen::New);
    }

    #[test]
    fn a_foreign_or_torn_file_is_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reply-cache.0");
        std::fs::write(&path, vec![0xa5u8; bytes_for(1) as usize]).unwrap();
        let (mut c, r) = ReplyCache::open(&path, (WAYS, 1), RETAIN, 0).unwrap();
        assert_eq!(r, Restored::default());
        assert_eq!(lookup(&mut c, addr(1), 1), Seen::New);
        assert_eq!(begin(&mut c, addr(1), 1, 0), Begin::Started);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever a reply-cache file holds (it is an input: a torn, foreign or tampered
        /// file), taking it over never panics, and the cache works afterwards.
        #[test]
        fn any_file_is_taken_over_without_panicking(
            words in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..64),
            header_ok in proptest::prelude::any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("reply-cache.0");
            let len = bytes_for(1) as usize;
            let mut bytes = vec![0u8; len];
            // Random words sprinkled over the entries (and the header, unless it is kept).
            for (k, w) in words.iter().enumerate() {
                let at = (w.rotate_left(17) as usize % (len / 8)) * 8;
                bytes[at..at + 8].copy_from_slice(&w.to_le_bytes());
                if k == 0 && header_ok {
                    for (j, h) in [MAGIC, 1, WAYS as u64, MAX_PAYLOAD as u64].iter().enumerate() {
                        bytes[8 * j..8 * j + 8].copy_from_slice(&h.to_le_bytes());
                    }
                }
            }
            std::fs::write(&path, &bytes).unwrap();
            let (mut c, r) = ReplyCache::open(&path, (WAYS, 1), RETAIN, 5).unwrap();
            proptest::prop_assert!(r.done + r.lost <= WAYS);
            for id in 0..3u64 {
                let _ = lookup(&mut c, addr(1), id);
            }
            let b = begin(&mut c, addr(9), 1_000, RETAIN * 100);
            if !matches!(b, Begin::Full { .. }) {
                c.complete(addr(9), 1_000, b"fresh", RETAIN * 100);
                proptest::prop_assert_eq!(lookup(&mut c, addr(9), 1_000), Seen::Done(b"fresh"));
            }
        }
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut c = ReplyCache::new(0, RETAIN);
        assert_eq!(begin(&mut c, addr(1), 1, 0), Begin::Started);
        c.complete(addr(1), 1, b"x", 0);
        assert_eq!(lookup(&mut c, addr(1), 1), Seen::New);
    }
}
