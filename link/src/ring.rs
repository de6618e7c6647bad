//! Single-producer / single-consumer rings of fixed-size slots in shared memory.
//!
//! The producer owns `tail`, the consumer owns `head`; each lives on its own cache line and
//! is published with a release store after the slot (or the slot's consumption) is complete.
//! Each entry carries its ring position, its length, flags, an immediate and a checksum, so a
//! corrupt or stale entry is detected, counted and skipped rather than trusted.
//!
//! Sleeping consumers: the consumer raises `waiting`, re-checks the ring and sleeps on the
//! ring's eventfd; a producer that publishes an entry while `waiting` is raised rings the
//! eventfd. Both sides put a sequentially consistent fence between their store and their load
//! (the Dekker pattern), so a wake-up is never lost.

use crate::error::{CorruptKind, LinkError};
use crate::layout::ring as ctl;
use crate::sys;
use naam_core::abi::{ARGS_MAX, OUT_MAX};
use naam_core::memory::RegionMem;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bytes per ring slot (entry header included).
pub const SLOT_SIZE: usize = 1280;
/// Entry header: seq u64, len u32, flags u32, imm u32, checksum u32.
pub const ENTRY_HDR: usize = 24;
/// The largest message a slot carries: room for an active-message request with `ARGS_MAX`
/// argument bytes (or a reply with `OUT_MAX` output bytes) plus a header of up to 168 bytes.
pub const MSG_MAX: usize = SLOT_SIZE - ENTRY_HDR;
/// A message forwarded on the rings starts with this many bytes of the sender's token (the
/// dataplane's slot and generation), which the host agent copies in front of its reply.
pub const TOKEN_LEN: usize = 8;
/// A host worker's reply starts with the token, then the nanoseconds the host worker spent on
/// the message (u64, little-endian), which the NIC worker charges to the message's tenant
/// (its share of the pool counts host time too); the reply datagram follows.
pub const REPLY_PREFIX: usize = TOKEN_LEN + 8;
const _: () = assert!(MSG_MAX >= ARGS_MAX + 128 && MSG_MAX >= REPLY_PREFIX + OUT_MAX + 120);

/// Entry flag: the entry is a doorbell carrying `imm`, not a message.
const FLAG_IMM: u32 = 1;

mod entry {
    pub const SEQ: u64 = 0;
    /// len in the low 32 bits, flags in the high 32 bits.
    pub const LEN_FLAGS: u64 = 8;
    /// imm in the low 32 bits, checksum in the high 32 bits.
    pub const IMM_SUM: u64 = 16;
    pub const PAYLOAD: u64 = 24;
}

/// What every poll loop of the project does when it finds nothing to do (DESIGN §9): NIC
/// workers, host workers and the load generators. It spins `spins` rounds, then yields the
/// core for `yields` rounds, then sleeps: on a doorbell for at most `sleep` when the loop has
/// one ([`Consumer::wait`]), else for `sleep` ([`Backoff::idle`]). Off (`enabled: false`) for
/// loops on dedicated cores, which spin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub enabled: bool,
    /// Idle rounds (with a spin hint) before yielding.
    pub spins: u32,
    /// Idle rounds that yield the core before sleeping.
    pub yields: u32,
    /// The longest sleep (the caller re-checks its other duties after it).
    pub sleep: Duration,
}

impl Backoff {
    /// Pure polling, for dedicated cores (`spin`).
    pub const DEDICATED: Backoff = Backoff {
        enabled: false,
        spins: 0,
        yields: 0,
        sleep: Duration::ZERO,
    };
    /// `yield` for a loop that sleeps on doorbells (host workers on their rings): spin a
    /// little, then sleep until a doorbell rings, at most 1 ms.
    pub const DOORBELLS: Backoff = Backoff {
        enabled: true,
        spins: 2000,
        yields: 0,
        sleep: Duration::from_millis(1),
    };
    /// `yield` for a loop without a doorbell (NIC workers polling a port, load generators):
    /// spin a little, yield the core for a long idle stretch, then sleep 50 µs at a time. A
    /// loop that never sleeps is, to the scheduler of an oversubscribed machine, a CPU hog
    /// that waits milliseconds for its next turn.
    pub const POLLING: Backoff = Backoff {
        enabled: true,
        spins: 256,
        yields: 16_384 - 256,
        sleep: Duration::from_micros(50),
    };

    /// Sleeping rounds after which an idle loop sleeps [`Backoff::DEEP_SLEEP`] at a time
    /// (with `POLLING`, about a second of 50 µs sleeps).
    pub const DEEP_AFTER: u32 = 20_000;
    /// The sleep of a loop idle that long: an idle NIC worker woke 20 000 times a second
    /// (9 % of a core each, with nothing to do); the first message after a long idle stretch
    /// waits at most this long.
    pub const DEEP_SLEEP: Duration = Duration::from_millis(1);

    /// One idle round of a loop without a doorbell; `rounds` counts the idle rounds in a row
    /// (the caller resets it to 0 when it finds work).
    #[inline]
    pub fn idle(&self, rounds: &mut u32) {
        *rounds = rounds.saturating_add(1);
        let sleeping = self.spins.saturating_add(self.yields);
        if !self.enabled || *rounds <= self.spins {
            std::hint::spin_loop();
        } else if *rounds <= sleeping {
            std::thread::yield_now();
        } else if *rounds <= sleeping.saturating_add(Self::DEEP_AFTER) {
            std::thread::sleep(self.sleep);
        } else {
            std::thread::sleep(self.sleep.max(Self::DEEP_SLEEP));
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DOORBELLS
    }
}

/// `--backoff spin|yield`, the same word for every process: which [`Backoff`] its loops use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackoffMode {
    /// Pure polling: for loops on dedicated cores.
    Spin,
    /// Spin a little, then give the core away: for shared cores, the local deployment's
    /// default.
    #[default]
    Yield,
}

impl BackoffMode {
    /// The back-off of a loop that can sleep on doorbells.
    pub fn doorbells(self) -> Backoff {
        match self {
            BackoffMode::Spin => Backoff::DEDICATED,
            BackoffMode::Yield => Backoff::DOORBELLS,
        }
    }

    /// The back-off of a loop that polls without a doorbell.
    pub fn polling(self) -> Backoff {
        match self {
            BackoffMode::Spin => Backoff::DEDICATED,
            BackoffMode::Yield => Backoff::POLLING,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackoffMode::Spin => "spin",
            BackoffMode::Yield => "yield",
        }
    }
}

impl std::str::FromStr for BackoffMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spin" => Ok(BackoffMode::Spin),
            "yield" => Ok(BackoffMode::Yield),
            _ => Err(format!("unknown back-off {s:?} (spin or yield)")),
        }
    }
}

/// A checksum over an entry's header fields and payload: one multiply per word, enough to catch
/// torn, stale and scribbled entries (it is not a defence against a malicious peer, which the
/// bounds checks are).
pub fn checksum(seq: u64, len: u32, flags: u32, imm: u32, payload: &[u8]) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (seq ^ K).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h = (h ^ ((len as u64) | (flags as u64) << 32)).wrapping_mul(K);
    h = (h ^ imm as u64).wrapping_mul(K);
    let mut words = payload.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = (h ^ v).wrapping_mul(K).rotate_left(29);
    }
    let mut last = [0u8; 8];
    let rest = words.remainder();
    last[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(last)).wrapping_mul(K);
    (h ^ (h >> 32)) as u32
}

/// One ring in a shared mapping: its control block, its slots and its doorbell.
#[derive(Clone)]
pub(crate) struct RingMem {
    pub ctl: RegionMem,
    pub slots: RegionMem,
    pub n: u64,
    pub doorbell: Arc<OwnedFd>,
}

impl RingMem {
    fn slot(&self, pos: u64) -> u64 {
        (pos & (self.n - 1)) * SLOT_SIZE as u64
    }

    fn load(&self, off: u64) -> u64 {
        self.ctl.load_u64(off).unwrap_or(0)
    }

    fn store(&self, off: u64, v: u64) {
        self.ctl.store_u64(off, v);
    }
}

/// The producing end of a ring.
pub(crate) struct Producer {
    ring: RingMem,
    tail: u64,
    head_cache: u64,
}

impl Producer {
    /// Takes over the producer side, continuing from the tail in shared memory (a reconnecting
    /// peer continues the ring where its predecessor stopped).
    pub fn new(ring: RingMem) -> Self {
        let tail = ring.load(ctl::TAIL);
        let head_cache = ring.load(ctl::HEAD);
        Self {
            ring,
            tail,
            head_cache,
        }
    }

    pub fn slots(&self) -> u32 {
        self.ring.n as u32
    }

    /// True when one more entry fits.
    pub fn has_space(&mut self) -> bool {
        if self.tail.wrapping_sub(self.head_cache) >= self.ring.n {
            self.head_cache = self.ring.load(ctl::HEAD);
        }
        self.tail.wrapping_sub(self.head_cache) < self.ring.n
    }

    /// Appends a message (or, with `imm`, a doorbell entry). Never overwrites: a full ring is
    /// [`LinkError::Full`].
    pub fn push(&mut self, msg: &[u8], imm: Option<u32>) -> Result<(), LinkError> {
        if msg.len() > MSG_MAX {
            return Err(LinkError::TooLong {
                len: msg.len(),
                max: MSG_MAX,
            });
        }
        if self.tail.wrapping_sub(self.head_cache) >= self.ring.n {
            self.head_cache = self.ring.load(ctl::HEAD);
            if self.tail.wrapping_sub(self.head_cache) >= self.ring.n {
                return Err(LinkError::Full {
                    slots: self.ring.n as u32,
                });
            }
        }
        let slot = self.ring.slot(self.tail);
        let (flags, imm) = match imm {
            Some(v) => (FLAG_IMM, v),
            None => (0, 0),
        };
        let len = msg.len() as u32;
        let sum = checksum(self.tail, len, flags, imm, msg);
        let s = &self.ring.slots;
        s.write(slot + entry::PAYLOAD, msg);
        s.store_u64(slot + entry::SEQ, self.tail);
        s.store_u64(slot + entry::LEN_FLAGS, len as u64 | (flags as u64) << 32);
        s.store_u64(slot + entry::IMM_SUM, imm as u64 | (sum as u64) << 32);
        self.tail = self.tail.wrapping_add(1);
        // Release: the entry is complete before the consumer can see the new tail.
        self.ring.store(ctl::TAIL, self.tail);
        fence(Ordering::SeqCst);
        if self.ring.load(ctl::WAITING) != 0 {
            sys::eventfd_signal(self.ring.doorbell.as_fd());
        }
        Ok(())
    }
}

/// The consuming end of a ring.
pub(crate) struct Consumer {
    ring: RingMem,
    head: u64,
    tail_cache: u64,
}

impl Consumer {
    pub fn new(ring: RingMem) -> Self {
        let head = ring.load(ctl::HEAD);
        Self {
            ring,
            head,
            tail_cache: head,
        }
    }

    fn refresh(&mut self) -> bool {
        if self.head == self.tail_cache {
            self.tail_cache = self.ring.load(ctl::TAIL);
        }
        self.head != self.tail_cache
    }

    fn advance(&mut self) {
        self.head = self.head.wrapping_add(1);
        self.ring.store(ctl::HEAD, self.head);
    }

    /// Takes the next entry into `buf`. Corrupt entries are skipped (the head moves past them)
    /// and reported once each.
    pub fn pop(&mut self, buf: &mut [u8]) -> Result<Option<crate::Received>, LinkError> {
        if !self.refresh() {
            return Ok(None);
        }
        let pending = self.tail_cache.wrapping_sub(self.head);
        if pending > self.ring.n {
            // The producer's tail is impossible: resynchronise to it and report.
            let (head, tail) = (self.head, self.tail_cache);
            self.head = tail;
            self.ring.store(ctl::HEAD, tail);
            return Err(LinkError::Corrupt {
                pos: head,
                kind: CorruptKind::Tail { head, tail },
            });
        }
        let pos = self.head;
        let slot = self.ring.slot(pos);
        let s = &self.ring.slots;
        let seq = s.load_u64(slot + entry::SEQ).unwrap_or(0);
        let len_flags = s.load_u64(slot + entry::LEN_FLAGS).unwrap_or(0);
        let imm_sum = s.load_u64(slot + entry::IMM_SUM).unwrap_or(0);
        let (len, flags) = (len_flags as u32, (len_flags >> 32) as u32);
        let (imm, sum) = (imm_sum as u32, (imm_sum >> 32) as u32);
        if seq != pos {
            self.advance();
            return Err(LinkError::Corrupt {
                pos,
                kind: CorruptKind::Sequence {
                    expected: pos,
                    found: seq,
                },
            });
        }
        if len as usize > MSG_MAX {
            self.advance();
            return Err(LinkError::Corrupt {
                pos,
                kind: CorruptKind::Length { len },
            });
        }
        let len = len as usize;
        if buf.len() < len {
            // Not consumed: the caller may retry with a larger buffer.
            return Err(LinkError::BufferTooSmall {
                len: buf.len(),
                needed: len,
            });
        }
        s.read(slot + entry::PAYLOAD, &mut buf[..len]);
        // The checksum is computed over our copy, so what we return is what was checked.
        if checksum(seq, len as u32, flags, imm, &buf[..len]) != sum {
            self.advance();
            return Err(LinkError::Corrupt {
                pos,
                kind: CorruptKind::Checksum,
            });
        }
        self.advance();
        Ok(Some(if flags & FLAG_IMM != 0 {
            crate::Received {
                len: 0,
                imm: Some(imm),
            }
        } else {
            crate::Received { len, imm: None }
        }))
    }

    /// Entries waiting (as last seen).
    pub fn pending(&mut self) -> u64 {
        self.tail_cache = self.ring.load(ctl::TAIL);
        self.tail_cache.wrapping_sub(self.head).min(self.ring.n)
    }

    pub fn doorbell(&self) -> std::os::fd::BorrowedFd<'_> {
        self.ring.doorbell.as_fd()
    }

    /// Raises the waiting flag; false (flag lowered again) when an entry is already present.
    pub fn arm(&mut self) -> bool {
        self.ring.store(ctl::WAITING, 1);
        fence(Ordering::SeqCst);
        if self.refresh() {
            self.ring.store(ctl::WAITING, 0);
            return false;
        }
        true
    }

    /// Lowers the waiting flag and clears the doorbell.
    pub fn disarm(&mut self) {
        self.ring.store(ctl::WAITING, 0);
        sys::eventfd_drain(self.ring.doorbell.as_fd());
    }

    /// Spins, then sleeps on the doorbell until an entry may be present (see the module docs).
    pub fn wait(&mut self, backoff: &Backoff) {
        if !backoff.enabled {
            return;
        }
        for _ in 0..backoff.spins {
            if self.refresh() {
                return;
            }
            std::hint::spin_loop();
        }
        if self.arm() {
            // An error here (EINTR aside) only shortens the sleep; the caller polls again.
            // (At least 50 µs: a zero sleep would make this a busy loop.)
            let sleep = backoff.sleep.max(std::time::Duration::from_micros(50));
            let _ = sys::wait_readable(self.ring.doorbell.as_fd(), sleep);
            self.disarm();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Received;
    use naam_core::memory::OwnedRegion;

    fn ring(n: u64) -> (OwnedRegion, OwnedRegion, RingMem) {
        let c = OwnedRegion::zeroed(ctl::CTL_SIZE as usize);
        let s = OwnedRegion::zeroed(n as usize * SLOT_SIZE);
        let r = RingMem {
            ctl: c.mem(),
            slots: s.mem(),
            n,
            doorbell: Arc::new(sys::eventfd().unwrap()),
        };
        (c, s, r)
    }

    #[test]
    fn fifo_full_and_wraparound() {
        let (_c, _s, r) = ring(4);
        let mut p = Producer::new(r.clone());
        let mut c = Consumer::new(r);
        let mut buf = [0u8; MSG_MAX];
        for round in 0..3u8 {
            for i in 0..4u8 {
                p.push(&[round, i], None).unwrap();
            }
            assert!(matches!(
                p.push(&[9], None),
                Err(LinkError::Full { slots: 4 })
            ));
            for i in 0..4u8 {
                assert_eq!(
                    c.pop(&mut buf).unwrap(),
                    Some(Received { len: 2, imm: None })
                );
                assert_eq!(&buf[..2], &[round, i]);
            }
            assert_eq!(c.pop(&mut buf).unwrap(), None);
        }
        p.push(&[], Some(7)).unwrap();
        assert_eq!(
            c.pop(&mut buf).unwrap(),
            Some(Received {
                len: 0,
                imm: Some(7)
            })
        );
        assert!(matches!(
            p.push(&[0; MSG_MAX + 1], None),
            Err(LinkError::TooLong { .. })
        ));
    }

    #[test]
    fn corrupt_entries_are_skipped() {
        let (_c, s, r) = ring(8);
        let mut p = Producer::new(r.clone());
        let mut c = Consumer::new(r);
        let mut buf = [0u8; MSG_MAX];
        p.push(b"first", None).unwrap();
        p.push(b"second", None).unwrap();
        p.push(b"third", None).unwrap();
        p.push(b"fourth", None).unwrap();
        let m = s.mem();
        m.write(entry::PAYLOAD + 1, b"X"); // payload flip in slot 0
        m.store_u64(SLOT_SIZE as u64 + entry::SEQ, 99); // wrong sequence in slot 1
        m.store_u64(2 * SLOT_SIZE as u64 + entry::LEN_FLAGS, 5000); // impossible length
        assert!(matches!(
            c.pop(&mut buf),
            Err(LinkError::Corrupt {
                pos: 0,
                kind: CorruptKind::Checksum
            })
        ));
        assert!(matches!(
            c.pop(&mut buf),
            Err(LinkError::Corrupt {
                pos: 1,
                kind: CorruptKind::Sequence { .. }
            })
        ));
        assert!(matches!(
            c.pop(&mut buf),
            Err(LinkError::Corrupt {
                pos: 2,
                kind: CorruptKind::Length { .. }
            })
        ));
        assert_eq!(
            c.pop(&mut buf).unwrap(),
            Some(Received { len: 6, imm: None })
        );
        assert_eq!(&buf[..6], b"fourth");
    }

    #[test]
    fn armed_doorbell_rings_once_armed() {
        let (_c, _s, r) = ring(4);
        let mut p = Producer::new(r.clone());
        let mut c = Consumer::new(r);
        p.push(b"unarmed", None).unwrap();
        assert!(
            !sys::wait_readable(c.doorbell(), std::time::Duration::ZERO).unwrap(),
            "no ring while nobody sleeps"
        );
        assert!(!c.arm(), "something is already waiting");
        let mut buf = [0u8; MSG_MAX];
        c.pop(&mut buf).unwrap();
        assert!(c.arm());
        p.push(b"armed", None).unwrap();
        assert!(
            sys::wait_readable(c.doorbell(), std::time::Duration::ZERO).unwrap(),
            "rung for the sleeper"
        );
        c.disarm();
        assert!(
            !sys::wait_readable(c.doorbell(), std::time::Duration::ZERO).unwrap(),
            "cleared"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any interleaving of sends and receives behaves like a bounded FIFO queue.
        #[test]
        fn behaves_like_a_bounded_queue(ops in proptest::collection::vec((proptest::bool::ANY, 0usize..300), 1..200)) {
            let (_c, _s, r) = ring(8);
            let mut p = Producer::new(r.clone());
            let mut c = Consumer::new(r);
            let mut model = std::collections::VecDeque::new();
            let mut buf = [0u8; MSG_MAX];
            for (i, (push, len)) in ops.into_iter().enumerate() {
                if push {
                    let msg: Vec<u8> = (0..len).map(|k| (k + i) as u8).collect();
                    match p.push(&msg, None) {
                        Ok(()) => model.push_back(msg),
                        Err(LinkError::Full { .. }) => proptest::prop_assert_eq!(model.len(), 8),
                        Err(e) => proptest::prop_assert!(false, "unexpected {}", e),
                    }
                } else {
                    let got = c.pop(&mut buf).unwrap();
                    match model.pop_front() {
                        Some(m) => {
                            proptest::prop_assert_eq!(got.map(|g| g.len), Some(m.len()));
                            proptest::prop_assert_eq!(&buf[..m.len()], &m[..]);
                        }
                        None => proptest::prop_assert_eq!(got, None),
                    }
                }
            }
        }
    }

    #[test]
    fn idle_rounds_spin_then_yield_then_sleep() {
        let b = Backoff {
            enabled: true,
            spins: 2,
            yields: 2,
            sleep: Duration::from_millis(20),
        };
        let mut rounds = 0;
        let t = std::time::Instant::now();
        for _ in 0..4 {
            b.idle(&mut rounds);
        }
        assert!(
            t.elapsed() < Duration::from_millis(20),
            "no sleep in the first rounds"
        );
        b.idle(&mut rounds);
        assert!(t.elapsed() >= Duration::from_millis(20), "then it sleeps");
        assert_eq!(rounds, 5);
        // Idle for long: a 1 ms sleep instead of a 50 µs one.
        let short = Backoff {
            sleep: Duration::from_micros(50),
            ..b
        };
        let mut long = 4 + Backoff::DEEP_AFTER;
        let t = std::time::Instant::now();
        for _ in 0..5 {
            short.idle(&mut long);
        }
        assert!(t.elapsed() >= 5 * Backoff::DEEP_SLEEP, "{:?}", t.elapsed());
        let t = std::time::Instant::now();
        for _ in 0..100 {
            Backoff::DEDICATED.idle(&mut rounds);
        }
        assert!(
            t.elapsed() < Duration::from_millis(20),
            "dedicated cores never sleep"
        );
        assert_eq!("spin".parse::<BackoffMode>(), Ok(BackoffMode::Spin));
        assert_eq!(BackoffMode::Yield.polling(), Backoff::POLLING);
        assert_eq!(BackoffMode::Spin.doorbells(), Backoff::DEDICATED);
        assert!("nap".parse::<BackoffMode>().is_err());
    }

    #[test]
    fn sleeping_consumer_is_woken() {
        let (_c, _s, r) = ring(8);
        let mut p = Producer::new(r.clone());
        let mut c = Consumer::new(r);
        let t = std::thread::spawn(move || {
            let backoff = Backoff {
                spins: 10,
                sleep: Duration::from_secs(10),
                ..Backoff::DOORBELLS
            };
            let start = std::time::Instant::now();
            let mut buf = [0u8; 16];
            loop {
                if let Some(got) = c.pop(&mut buf).unwrap() {
                    return (got, start.elapsed());
                }
                c.wait(&backoff);
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        p.push(b"wake", None).unwrap();
        let (got, waited) = t.join().unwrap();
        assert_eq!(got.len, 4);
        assert!(
            waited < Duration::from_secs(5),
            "woken by the doorbell, not the timeout"
        );
    }
}
