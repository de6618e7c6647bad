//! Where ops touch memory: the [`Memory`] trait and its in-process backend.
//!
//! Regions are shared with other threads and processes (host workers, the dataplane through
//! the link, one-sided client ops), so all access goes through atomics: word-sized relaxed
//! loads and stores for READ and WRITE, with an acquire fence after a read and a release fence
//! before a write, and sequentially consistent CAS/FAA. Readers that need a consistent
//! multi-word view (MICA, the B-tree) re-check a version word, as they would over RDMA.

use crate::abi::{OpKind, DATA_SIZE};
use crate::region::{CheckedOp, RegionId};
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};

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

/// A view of one region's bytes: a base pointer and a length, shared by any number of threads
/// and processes. Every access is atomic, so concurrent use is sound (values may tear across
/// words, which is what version checks are for).
#[derive(Debug, Clone, Copy)]
pub struct RegionMem {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: RegionMem only hands out atomic accesses to memory that the creator promised stays
// mapped for the view's lifetime (see `RegionMem::from_raw`).
#[allow(unsafe_code)]
unsafe impl Send for RegionMem {}
// SAFETY: as for Send: all access through a shared RegionMem is atomic.
#[allow(unsafe_code)]
unsafe impl Sync for RegionMem {}

impl RegionMem {
    /// # Safety
    /// `base` must be 8-byte aligned and valid for reads and writes of `len` bytes for as long
    /// as this view (or any copy of it) is used, and only ever accessed atomically by others.
    #[allow(unsafe_code)]
    pub unsafe fn from_raw(base: NonNull<u8>, len: usize) -> Self {
        debug_assert_eq!(base.as_ptr() as usize % 8, 0);
        Self { base, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    fn in_bounds(&self, offset: u64, len: usize) -> Option<usize> {
        let off = usize::try_from(offset).ok()?;
        (off.checked_add(len)? <= self.len).then_some(off)
    }

    #[allow(unsafe_code)]
    fn byte(&self, off: usize) -> &AtomicU8 {
        debug_assert!(off < self.len);
        // SAFETY: off < len, the memory is valid for the view's lifetime (from_raw contract),
        // and AtomicU8 has the size and alignment of u8.
        unsafe { AtomicU8::from_ptr(self.base.as_ptr().add(off)) }
    }

    #[allow(unsafe_code)]
    fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= self.len);
        // SAFETY: off is 8-aligned inside the region and base is 8-aligned (from_raw contract),
        // so the pointer is valid and aligned for an AtomicU64.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off).cast::<u64>()) }
    }

    /// Splits `[off, off + len)` into unaligned head bytes, whole aligned words, and tail
    /// bytes: (head, words).
    fn split(off: usize, len: usize) -> (usize, usize) {
        let head = ((8 - off % 8) % 8).min(len);
        (head, (len - head) / 8)
    }

    /// Copies `dst.len()` bytes at `offset` into `dst`; false when out of bounds.
    pub fn read(&self, offset: u64, dst: &mut [u8]) -> bool {
        let Some(off) = self.in_bounds(offset, dst.len()) else {
            return false;
        };
        let (head, words) = Self::split(off, dst.len());
        for (i, d) in dst[..head].iter_mut().enumerate() {
            *d = self.byte(off + i).load(Ordering::Relaxed);
        }
        let body = &mut dst[head..head + words * 8];
        for (k, chunk) in body.chunks_exact_mut(8).enumerate() {
            let w = self.word(off + head + k * 8).load(Ordering::Relaxed);
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let tail = head + words * 8;
        for (i, d) in dst[tail..].iter_mut().enumerate() {
            *d = self.byte(off + tail + i).load(Ordering::Relaxed);
        }
        fence(Ordering::Acquire);
        true
    }

    /// Copies `src` to `offset`; false when out of bounds.
    pub fn write(&self, offset: u64, src: &[u8]) -> bool {
        let Some(off) = self.in_bounds(offset, src.len()) else {
            return false;
        };
        fence(Ordering::Release);
        let (head, words) = Self::split(off, src.len());
        for (i, b) in src[..head].iter().enumerate() {
            self.byte(off + i).store(*b, Ordering::Relaxed);
        }
        for (k, chunk) in src[head..head + words * 8].chunks_exact(8).enumerate() {
            let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.word(off + head + k * 8).store(w, Ordering::Relaxed);
        }
        let tail = head + words * 8;
        for (i, b) in src[tail..].iter().enumerate() {
            self.byte(off + tail + i).store(*b, Ordering::Relaxed);
        }
        true
    }

    fn aligned_word(&self, offset: u64) -> Option<&AtomicU64> {
        let off = self.in_bounds(offset, 8)?;
        (off % 8 == 0).then(|| self.word(off))
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

/// Region memory owned by this process (tests, benchmarks, the client's local copy).
pub struct OwnedRegion {
    words: Box<[AtomicU64]>,
    len: usize,
}

impl OwnedRegion {
    /// `len` zeroed bytes (rounded up to whole words internally).
    pub fn zeroed(len: usize) -> Self {
        let words = (0..len.div_ceil(8)).map(|_| AtomicU64::new(0)).collect();
        Self { words, len }
    }

    pub fn mem(&self) -> RegionMem {
        let base = NonNull::from(&self.words[..]).cast::<u8>();
        #[allow(unsafe_code)]
        // SAFETY: the boxed words are 8-aligned, hold at least `len` bytes, live as long as
        // self, and are only accessed atomically. Callers keep `self` alive while using views.
        unsafe {
            RegionMem::from_raw(
                if self.words.is_empty() {
                    NonNull::<u64>::dangling().cast()
                } else {
                    base
                },
                self.len,
            )
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
}
