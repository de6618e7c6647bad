//! The reply cache that makes mutations happen at most once per request id
//! (docs/protocol.md, "De-duplication"). Keyed by (client address, request id). Fixed size,
//! allocated once: `sets × WAYS` entries, each with room for one reply packet; a new key
//! evicts the oldest *completed* entry of its set (so "oldest" is per set, which bounds the
//! work per lookup to `WAYS` compares). An entry in progress is never evicted (its
//! retransmission would run the mutation again): when a set holds only those, the new
//! request is refused ([`Begin::Full`]; the worker answers `busy`).

use std::net::SocketAddrV4;

use crate::port::MAX_PAYLOAD;

/// Entries per set.
pub const WAYS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    InProgress,
    Done,
}

#[derive(Clone, Copy)]
struct Entry {
    client: u64,
    request_id: u64,
    state: State,
    seq: u64,
    len: u16,
}

const EMPTY: Entry = Entry {
    client: 0,
    request_id: 0,
    state: State::Empty,
    seq: 0,
    len: 0,
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
}

/// What [`ReplyCache::begin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Remembered in a free entry (or the request's own).
    Started,
    /// Remembered in place of the oldest completed entry of its set: a retransmission of
    /// that one would now run again (counted, `dedup_evicted`).
    Evicted,
    /// Every entry of its set is in progress: not remembered; do not run the request.
    Full,
}

/// A fixed-size reply cache.
pub struct ReplyCache {
    entries: Box<[Entry]>,
    replies: Box<[u8]>,
    sets: usize,
    seq: u64,
}

fn client_key(c: SocketAddrV4) -> u64 {
    (u64::from(u32::from(*c.ip())) << 16) | u64::from(c.port())
}

impl ReplyCache {
    /// Room for at least `capacity` remembered requests (rounded up to whole sets; 0 keeps
    /// nothing).
    pub fn new(capacity: usize) -> ReplyCache {
        let sets = capacity.div_ceil(WAYS);
        ReplyCache {
            entries: vec![EMPTY; sets * WAYS].into_boxed_slice(),
            replies: vec![0; sets * WAYS * MAX_PAYLOAD].into_boxed_slice(),
            sets,
            seq: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
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
            let e = &self.entries[i];
            e.state != State::Empty && e.client == client && e.request_id == id
        })
    }

    pub fn lookup(&self, client: SocketAddrV4, request_id: u64) -> Seen<'_> {
        match self.find(client_key(client), request_id) {
            None => Seen::New,
            Some(i) => match self.entries[i].state {
                State::Done => {
                    let start = i * MAX_PAYLOAD;
                    Seen::Done(&self.replies[start..start + self.entries[i].len as usize])
                }
                _ => Seen::InProgress,
            },
        }
    }

    /// Remembers that the request is being executed, in a free entry, else in place of the
    /// oldest completed one of its set; never in place of one in progress.
    #[must_use]
    pub fn begin(&mut self, client: SocketAddrV4, request_id: u64) -> Begin {
        if self.sets == 0 {
            return Begin::Started;
        }
        let c = client_key(client);
        let (i, outcome) = match self.find(c, request_id) {
            Some(i) => (i, Begin::Started),
            None => {
                let victim = self
                    .set_of(c, request_id)
                    .filter(|&i| self.entries[i].state != State::InProgress)
                    .min_by_key(|&i| match self.entries[i].state {
                        State::Empty => 0,
                        _ => self.entries[i].seq,
                    });
                match victim {
                    None => return Begin::Full,
                    Some(i) if self.entries[i].state == State::Empty => (i, Begin::Started),
                    Some(i) => (i, Begin::Evicted),
                }
            }
        };
        self.seq += 1;
        self.entries[i] = Entry {
            client: c,
            request_id,
            state: State::InProgress,
            seq: self.seq,
            len: 0,
        };
        outcome
    }

    /// Stores the reply of a request begun earlier (ignored if it was evicted meanwhile, or
    /// the reply does not fit a packet).
    pub fn complete(&mut self, client: SocketAddrV4, request_id: u64, reply: &[u8]) {
        let Some(i) = self.find(client_key(client), request_id) else {
            return;
        };
        if reply.len() > MAX_PAYLOAD {
            self.entries[i] = EMPTY;
            return;
        }
        let start = i * MAX_PAYLOAD;
        self.replies[start..start + reply.len()].copy_from_slice(reply);
        self.entries[i].len = reply.len() as u16;
        self.entries[i].state = State::Done;
    }

    /// Forgets a request (its reply meant "not executed": the retry must run).
    pub fn forget(&mut self, client: SocketAddrV4, request_id: u64) {
        if let Some(i) = self.find(client_key(client), request_id) {
            self.entries[i] = EMPTY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new([127, 0, 0, 1].into(), port)
    }

    #[test]
    fn remembers_in_progress_then_done_then_forgets() {
        let mut c = ReplyCache::new(64);
        assert_eq!(c.lookup(addr(1), 7), Seen::New);
        assert_eq!(c.begin(addr(1), 7), Begin::Started);
        assert_eq!(c.lookup(addr(1), 7), Seen::InProgress);
        assert_eq!(c.lookup(addr(2), 7), Seen::New, "other client, same id");
        c.complete(addr(1), 7, b"reply");
        assert_eq!(c.lookup(addr(1), 7), Seen::Done(b"reply"));
        c.forget(addr(1), 7);
        assert_eq!(c.lookup(addr(1), 7), Seen::New);
    }

    #[test]
    fn evicts_oldest_when_full_and_stays_bounded() {
        let mut c = ReplyCache::new(16);
        for id in 0..1000u64 {
            assert_ne!(c.begin(addr(1), id), Begin::Full);
            c.complete(addr(1), id, &id.to_le_bytes());
        }
        let kept = (0..1000u64)
            .filter(|id| c.lookup(addr(1), *id) != Seen::New)
            .count();
        assert!(kept <= c.capacity() && kept > 0, "kept {kept}");
        // The newest is always kept.
        assert_eq!(
            c.lookup(addr(1), 999),
            Seen::Done(&999u64.to_le_bytes()[..])
        );
    }

    #[test]
    fn entries_in_progress_are_never_evicted() {
        let mut c = ReplyCache::new(WAYS); // one set
        for id in 0..WAYS as u64 {
            assert_eq!(c.begin(addr(1), id), Begin::Started);
        }
        // The set is full of requests in progress: the next one is refused, and every
        // in-progress entry is still there to catch its retransmission.
        assert_eq!(c.begin(addr(1), 100), Begin::Full);
        for id in 0..WAYS as u64 {
            assert_eq!(c.lookup(addr(1), id), Seen::InProgress);
        }
        // One completes: it is the one the next request replaces, and that is reported.
        c.complete(addr(1), 3, b"three");
        assert_eq!(c.begin(addr(1), 100), Begin::Evicted);
        assert_eq!(c.lookup(addr(1), 3), Seen::New);
        assert_eq!(c.lookup(addr(1), 100), Seen::InProgress);
        assert_eq!(c.lookup(addr(1), 0), Seen::InProgress);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut c = ReplyCache::new(0);
        assert_eq!(c.begin(addr(1), 1), Begin::Started);
        c.complete(addr(1), 1, b"x");
        assert_eq!(c.lookup(addr(1), 1), Seen::New);
    }
}
