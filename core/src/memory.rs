//! Where ops touch memory: the [`Memory`] trait and its in-process backend.
//!
//! Regions are shared with other threads and processes (host workers, the dataplane through
//! the link, one-sided client ops), so all access goes through 8-byte atomics: relaxed loads,
//! stores and (for a partial word) compare-and-swap for READ and WRITE, with an acquire fence after a read and a release fence
//! before a write, and sequentially consistent CAS/FAA. Readers that need a consistent
//! multi-word view (MICA, the B-tree) re-check a version word, as they would over RDMA.

use crate::abi::{OpKind, DATA_SIZE};
use crate::region::{CheckedOp, RegionId};
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

/// Why a backend could not execute a checked op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    #[error("region {region} is registered but not mapped here")]
    NotMapped { region: RegionId },
    #[error("the path to region memory is down: {reason}")]
    Unavailable { reason: &'static str },
}

/// Executes checked ops. `data` is the context's data area: READ fills `data[data_off..]`,
/// WRITE sends it. Returns the previous word for CAS/FAA, 0 otherwise.
pub trait Memory {
    fn execute(&mut self, op: &CheckedOp, data: &mut [u8; DATA_SIZE]) -> Result<u64, MemError>;
}

impl<M: Memory + ?Sized> Memory for &mut M {
    fn execute(&mut self, op: &CheckedOp, data: &mut [u8; DATA_SIZE]) -> Result<u64, MemError> {
        (**self).execute(op, data)
    }
}

/// What keeps a view's bytes alive: the owner of the memory (an [`OwnedRegion`]'s words, a
/// mapping). Every view holds one, so no view can outlive the memory it points at.
pub type Owner = Arc<dyn Send + Sync>;

/// A view of one region's bytes: a base pointer, a length and the owner of the memory, shared
/// by any number of threads and processes.
///
/// Every access is a word-sized atomic on the aligned 8-byte words the bytes lie in (a partial
/// word is read whole and written by compare-and-swap), so concurrent use from any thread or
/// process is sound and no two accesses of different sizes ever overlap (Rust does not define
/// racing mixed-size atomics). Values may tear across words, which is what version checks are
/// for.
#[derive(Clone)]
pub struct RegionMem {
    base: NonNull<u8>,
    len: usize,
    owner: Owner,
}

impl core::fmt::Debug for RegionMem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegionMem")
            .field("base", &self.base)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

// SAFETY: RegionMem only hands out atomic accesses to memory that its owner keeps valid (see
// `RegionMem::from_raw`); the owner itself is Send + Sync.
#[allow(unsafe_code)]
unsafe impl Send for RegionMem {}
// SAFETY: as for Send: all access through a shared RegionMem is atomic.
#[allow(unsafe_code)]
unsafe impl Sync for RegionMem {}

const WORD: usize = 8;

impl RegionMem {
    /// A view of `len` bytes at `base`, kept alive by `owner`.
    ///
    /// # Safety
    /// `base` must be 8-byte aligned and valid for reads and writes of `len` bytes rounded up
    /// to a whole number of 8-byte words for as long as `owner` lives, and every other user of
    /// those bytes (in this process or another) must access them only through 8-byte atomics.
    #[allow(unsafe_code)]
    pub unsafe fn from_raw(base: NonNull<u8>, len: usize, owner: Owner) -> Self {
        debug_assert_eq!(base.as_ptr() as usize % WORD, 0);
        Self { base, len, owner }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the first byte (to register the memory with a device, or as a salt):
    /// the view stays the only way to reach the bytes.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The `len` bytes at `offset` as a view of their own, sharing this view's owner; `None`
    /// when out of bounds or `offset` is not 8-byte aligned.
    pub fn slice(&self, offset: u64, len: u64) -> Option<RegionMem> {
        let off = usize::try_from(offset).ok()?;
        let len = usize::try_from(len).ok()?;
        if off % WORD != 0 || off.checked_add(len)? > self.len {
            return None;
        }
        Some(Self {
            // `off <= self.len`, so this stays inside (or one past) the owner's memory.
            base: NonNull::new(self.base.as_ptr().wrapping_add(off))?,
            len,
            owner: self.owner.clone(),
        })
    }

    fn in_bounds(&self, offset: u64, len: usize) -> Option<usize> {
        let off = usize::try_from(offset).ok()?;
        (off.checked_add(len)? <= self.len).then_some(off)
    }

    /// The aligned word at byte offset `off` (a multiple of 8, below `len`).
    #[allow(unsafe_code)]
    fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % WORD == 0 && off < self.len);
        // SAFETY: off is 8-aligned and below len, so the word lies inside len rounded up to
        // whole words, which the owner keeps valid (from_raw contract); base is 8-aligned, so
        // the pointer is aligned for an AtomicU64, and all access to it is atomic.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off).cast::<u64>()) }
    }

    /// Splits `[off, off + len)` into the bytes before the first whole word, the whole words,
    /// and the bytes after them: (head, words, tail) in bytes, words, bytes.
    fn split(off: usize, len: usize) -> (usize, usize, usize) {
        let head = ((WORD - off % WORD) % WORD).min(len);
        let words = (len - head) / WORD;
        (head, words, len - head - words * WORD)
    }

    /// Copies `dst.len()` bytes at `offset` into `dst`; false when out of bounds.
    pub fn read(&self, offset: u64, dst: &mut [u8]) -> bool {
        let Some(off) = self.in_bounds(offset, dst.len()) else {
            return false;
        };
        let (head, words, tail) = Self::split(off, dst.len());
        let (head_dst, rest) = dst.split_at_mut(head);
        let (body, tail_dst) = rest.split_at_mut(words * WORD);
        if head > 0 {
            self.read_partial(off, head_dst);
        }
        let body_off = off + head;
        for (k, chunk) in body.chunks_exact_mut(WORD).enumerate() {
            let w = self.word(body_off + k * WORD).load(Ordering::Relaxed);
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        if tail > 0 {
            self.read_partial(body_off + words * WORD, tail_dst);
        }
        fence(Ordering::Acquire);
        true
    }

    /// Copies `src` to `offset`; false when out of bounds. Whole words are stored; the bytes of
    /// a partial word are merged into it by compare-and-swap, so a concurrent write to its
    /// other bytes is never undone.
    pub fn write(&self, offset: u64, src: &[u8]) -> bool {
        let Some(off) = self.in_bounds(offset, src.len()) else {
            return false;
        };
        fence(Ordering::Release);
        let (head, words, tail) = Self::split(off, src.len());
        let (head_src, rest) = src.split_at(head);
        let (body, tail_src) = rest.split_at(words * WORD);
        if head > 0 {
            self.write_partial(off, head_src);
        }
        let body_off = off + head;
        for (k, chunk) in body.chunks_exact(WORD).enumerate() {
            let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.word(body_off + k * WORD).store(w, Ordering::Relaxed);
        }
        if tail > 0 {
            self.write_partial(body_off + words * WORD, tail_src);
        }
        true
    }

    /// Reads the 1 to 7 bytes at `off` (all in one word) from a load of that word.
    fn read_partial(&self, off: usize, dst: &mut [u8]) {
        let skip = off % WORD;
        let w = self.word(off - skip).load(Ordering::Relaxed).to_le_bytes();
        dst.copy_from_slice(&w[skip..skip + dst.len()]);
    }

    /// Writes the 1 to 7 bytes at `off` (all in one word) into that word, keeping its other
    /// bytes as they are at that moment.
    fn write_partial(&self, off: usize, src: &[u8]) {
        let skip = off % WORD;
        let mut bytes = [0u8; WORD];
        bytes[skip..skip + src.len()].copy_from_slice(src);
        let value = u64::from_le_bytes(bytes);
        let mask = (u64::MAX >> (64 - 8 * src.len() as u32)) << (8 * skip as u32);
        let _ = self
            .word(off - skip)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some((w & !mask) | value)
            });
    }

    fn aligned_word(&self, offset: u64) -> Option<&AtomicU64> {
        let off = self.in_bounds(offset, WORD)?;
        (off % WORD == 0).then(|| self.word(off))
    }

    /// Compare-and-swap of the aligned word at `offset`; returns the previous value.
    pub fn cas(&self, offset: u64, expected: u64, desired: u64) -> Option<u64> {
        let w = self.aligned_word(offset)?;
        Some(
            match w.compare_exchange(expected, desired, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(v) | Err(v) => v,
            },
        )
    }

    /// Fetch-and-add on the aligned word at `offset`; returns the previous value.
    pub fn faa(&self, offset: u64, add: u64) -> Option<u64> {
        Some(self.aligned_word(offset)?.fetch_add(add, Ordering::SeqCst))
    }

    pub fn load_u64(&self, offset: u64) -> Option<u64> {
        Some(self.aligned_word(offset)?.load(Ordering::Acquire))
    }

    pub fn store_u64(&self, offset: u64, v: u64) -> Option<()> {
        self.aligned_word(offset)?.store(v, Ordering::Release);
        Some(())
    }

    /// Executes a checked op against this region. Bounds were checked against the region's
    /// description; they are checked again against the mapping, which costs little and keeps
    /// a stale description from ever reaching past the memory.
    pub fn execute(&self, op: &CheckedOp, data: &mut [u8; DATA_SIZE]) -> Result<u64, MemError> {
        let out_of_map = MemError::Unavailable {
            reason: "op outside the mapped region",
        };
        let window = op.data_off as usize..op.data_off as usize + op.len as usize;
        match op.kind {
            OpKind::Read => self
                .read(op.offset, &mut data[window])
                .then_some(0)
                .ok_or(out_of_map),
            OpKind::Write => self
                .write(op.offset, &data[window])
                .then_some(0)
                .ok_or(out_of_map),
            OpKind::Cas => self.cas(op.offset, op.arg0, op.arg1).ok_or(out_of_map),
            OpKind::Faa => self.faa(op.offset, op.arg0).ok_or(out_of_map),
        }
    }
}

/// Region memory owned by this process (tests, benchmarks, the client's local copy). Its views
/// share the words, so they stay valid after the `OwnedRegion` itself is dropped.
pub struct OwnedRegion {
    // Boxed so the Arc is sized and can become a view's `Owner`.
    words: Arc<Box<[AtomicU64]>>,
    len: usize,
}

impl OwnedRegion {
    /// `len` zeroed bytes (rounded up to whole words internally).
    pub fn zeroed(len: usize) -> Self {
        let words: Box<[AtomicU64]> = (0..len.div_ceil(WORD)).map(|_| AtomicU64::new(0)).collect();
        Self {
            words: Arc::new(words),
            len,
        }
    }

    /// A view of the whole region, holding the words.
    pub fn mem(&self) -> RegionMem {
        let base = if self.words.is_empty() {
            NonNull::<u64>::dangling().cast()
        } else {
            NonNull::from(&self.words[..]).cast::<u8>()
        };
        #[allow(unsafe_code)]
        // SAFETY: the words are 8-aligned and hold `len` bytes rounded up to whole words (an
        // empty region's dangling base is aligned and never dereferenced: every access is
        // bounds-checked against len 0); the view's owner is the words' Arc, so they live as
        // long as any view; they are AtomicU64s, only ever accessed atomically.
        unsafe {
            RegionMem::from_raw(base, self.len, self.words.clone())
        }
    }
}

/// The host's view of memory: regions in this address space, executed with loads, stores and
/// atomics.
#[derive(Default, Clone)]
pub struct LocalMemory {
    regions: Vec<Option<RegionMem>>,
}

impl LocalMemory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps region `id` to `mem`.
    pub fn map(&mut self, id: RegionId, mem: RegionMem) {
        let i = id as usize;
        if self.regions.len() <= i {
            self.regions.resize(i + 1, None);
        }
        self.regions[i] = Some(mem);
    }

    pub fn unmap(&mut self, id: RegionId) {
        if let Some(slot) = self.regions.get_mut(id as usize) {
            *slot = None;
        }
    }

    pub fn get(&self, id: RegionId) -> Option<&RegionMem> {
        self.regions.get(id as usize).and_then(Option::as_ref)
    }
}

impl Memory for LocalMemory {
    fn execute(&mut self, op: &CheckedOp, data: &mut [u8; DATA_SIZE]) -> Result<u64, MemError> {
        self.get(op.region)
            .ok_or(MemError::NotMapped { region: op.region })?
            .execute(op, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_reads_and_writes_round_trip() {
        let r = OwnedRegion::zeroed(100);
        let m = r.mem();
        let src: Vec<u8> = (0..37).collect();
        assert!(m.write(3, &src));
        let mut dst = [0u8; 37];
        assert!(m.read(3, &mut dst));
        assert_eq!(&dst[..], &src[..]);
        assert!(!m.read(64, &mut [0u8; 37]), "past the end");
        assert!(!m.write(u64::MAX, &[1]), "offset overflow");
    }

    #[test]
    fn every_alignment_and_length_round_trips() {
        let r = OwnedRegion::zeroed(64);
        let m = r.mem();
        for off in 0..24u64 {
            for len in 0..33usize {
                let src: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(7).wrapping_add(off as u8))
                    .collect();
                assert!(m.write(off, &src));
                let mut dst = vec![0u8; len];
                assert!(m.read(off, &mut dst));
                assert_eq!(dst, src, "offset {off} length {len}");
            }
        }
    }

    #[test]
    fn atomics_return_previous_values() {
        let r = OwnedRegion::zeroed(64);
        let m = r.mem();
        assert_eq!(m.faa(8, 5), Some(0));
        assert_eq!(m.faa(8, 5), Some(5));
        assert_eq!(m.cas(8, 10, 42), Some(10));
        assert_eq!(
            m.cas(8, 10, 43),
            Some(42),
            "failed CAS reports the current value"
        );
        assert_eq!(m.load_u64(8), Some(42));
        assert_eq!(m.cas(4, 0, 1), None, "misaligned");
        assert_eq!(m.faa(64, 1), None, "out of bounds");
    }

    #[test]
    fn a_view_keeps_its_memory_alive_after_the_owner_is_dropped() {
        let r = OwnedRegion::zeroed(40);
        let m = r.mem();
        let part = m.slice(8, 24).expect("inside and aligned");
        drop(r);
        assert!(m.write(9, b"still here"));
        let mut back = [0u8; 10];
        assert!(part.read(1, &mut back));
        assert_eq!(&back, b"still here");
        drop(m);
        assert_eq!(
            part.faa(16, 1),
            Some(0),
            "the slice alone holds the words too"
        );
        assert_eq!(part.load_u64(16), Some(1));
        assert!(part.slice(4, 4).is_none(), "misaligned");
        assert!(part.slice(8, 17).is_none(), "past the end");
        assert!(part.slice(u64::MAX - 7, 1).is_none(), "offset overflow");
    }

    #[test]
    fn partial_word_writes_from_two_threads_keep_each_others_bytes() {
        // Two writers own alternate bytes of the same words: every write is a partial word, so
        // each must merge into the word (not store a stale copy of its neighbours' bytes). A
        // reader loads the same words whole meanwhile: under Miri, accesses of two sizes to the
        // same bytes racing would be reported.
        let r = OwnedRegion::zeroed(64);
        let m = r.mem();
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        std::thread::scope(|s| {
            let reader = m.clone();
            s.spawn(move || {
                let mut words = [0u8; 64];
                for _ in 0..rounds {
                    assert!(reader.read(0, &mut words));
                }
            });
            for parity in 0..2u8 {
                let m = m.clone();
                s.spawn(move || {
                    for round in 0..rounds {
                        for off in (parity as u64..64).step_by(2) {
                            assert!(m.write(off, &[(round % 250) as u8 + 1 + parity]));
                        }
                    }
                });
            }
        });
        let mut all = [0u8; 64];
        assert!(m.read(0, &mut all));
        for (i, b) in all.iter().enumerate() {
            let want = ((rounds - 1) % 250) as u8 + 1 + (i % 2) as u8;
            assert_eq!(*b, want, "byte {i} lost its writer's last value");
        }
    }
}
