//! The native MICA implementation: the same operations as the handlers on the same layout,
//! through [`RegionMem`] atomics. It is the reference the handlers are tested against, the
//! native baseline of the benchmarks, and the builder that fills tables.

use super::layout::*;
use super::MicaError;
use naam_core::helpers::hash64;
use naam_core::memory::RegionMem;

/// A MICA table in two regions (index and log) of this address space.
#[derive(Debug, Clone)]
pub struct MicaTable {
    geom: MicaGeometry,
    index: RegionMem,
    log: RegionMem,
}

/// Where a key was found: the slot's index offset and value.
#[derive(Debug, Clone, Copy)]
struct Found {
    at: u64,
    slot: u64,
}

impl MicaTable {
    /// Attaches to a table already formatted in `index` and `log`.
    pub fn attach(geom: MicaGeometry, index: RegionMem, log: RegionMem) -> Result<Self, MicaError> {
        geom.validate()?;
        for (which, mem, need) in [
            ("index", &index, geom.index_len()),
            ("log", &log, geom.log_len()),
        ] {
            if (mem.len() as u64) < need {
                return Err(MicaError::RegionTooSmall {
                    which,
                    need,
                    have: mem.len() as u64,
                });
            }
        }
        Ok(Self { geom, index, log })
    }

    /// Formats an empty table: zeroes the buckets (O(size)) and writes both headers.
    pub fn format(geom: MicaGeometry, index: RegionMem, log: RegionMem) -> Result<Self, MicaError> {
        let t = Self::attach(geom, index, log)?;
        let mut off = 0;
        while off < geom.index_len() {
            t.index.store_u64(off, 0).expect("inside the index");
            off += 8;
        }
        t.index
            .store_u64(INDEX_BUCKETS, geom.bucket_count)
            .expect("header");
        t.index
            .store_u64(INDEX_OVERFLOW, geom.overflow_count)
            .expect("header");
        t.index.store_u64(INDEX_OVF_NEXT, 0).expect("header");
        t.index.store_u64(INDEX_MAGIC, MAGIC).expect("header");
        t.log.store_u64(LOG_TAIL, 0).expect("header");
        t.log.store_u64(LOG_SIZE, geom.log_size).expect("header");
        let flags = if geom.lossless { FLAG_LOSSLESS } else { 0 };
        t.log.store_u64(LOG_FLAGS, flags as u64).expect("header");
        Ok(t)
    }

    pub fn geometry(&self) -> &MicaGeometry {
        &self.geom
    }

    fn tail(&self) -> u64 {
        self.log.load_u64(LOG_TAIL).expect("log header")
    }

    /// The log tail: bytes ever allocated in the log (it wraps modulo the log size).
    pub fn log_tail(&self) -> u64 {
        self.tail()
    }

    /// Bytes of items the log has overwritten since the table was formatted (0 in lossless
    /// mode): how much acknowledged data a lossy table may have evicted.
    pub fn evicted_bytes(&self) -> u64 {
        if self.geom.lossless {
            0
        } else {
            self.tail().saturating_sub(self.geom.log_size)
        }
    }

    fn slot_stale(&self, tail: u64, slot: u64) -> bool {
        !self.geom.lossless
            && (tail.wrapping_sub(slot & OFFSET_MASK) as i64) > self.geom.log_size as i64
    }

    fn bucket(&self, at: u64) -> [u64; 8] {
        let mut b = [0u8; LINE as usize];
        self.index.read(at, &mut b);
        core::array::from_fn(|i| {
            u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        })
    }

    /// Checks the item a slot points at against the key; on a match copies up to `out.len()`
    /// value bytes into `out` and returns the value length. Reads the item, then the tail: a
    /// stale or overwritten item never matches.
    fn check_item(
        &self,
        slot: u64,
        hash: u64,
        klen: usize,
        k: (u64, u64),
        out: &mut [u8],
    ) -> Option<usize> {
        let o = slot & OFFSET_MASK;
        let at = self.geom.log_at(o);
        let mut h = [0u8; ITEM_HDR];
        self.log.read(at, &mut h);
        let w = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let ivlen = u16::from_le_bytes([h[10], h[11]]) as usize;
        let lap = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
        let matches = w(0) == hash
            && u16::from_le_bytes([h[8], h[9]]) as usize == klen
            && lap == o as u32
            && (w(16), w(24)) == k
            && ivlen <= VALUE_MAX;
        if !matches {
            return None;
        }
        let n = ivlen.min(out.len());
        self.log.read(at + ITEM_HDR as u64, &mut out[..n]);
        (!self.slot_stale(self.tail(), slot)).then_some(ivlen)
    }

    /// Finds `key`'s slot. `free` (PUT) collects the first empty or stale slot seen.
    fn find(
        &self,
        hash: u64,
        klen: usize,
        k: (u64, u64),
        free: Option<(&mut Option<Found>, u64)>,
    ) -> (Option<Found>, u64) {
        let tag = tag_of(hash);
        let mut at = self.geom.home(hash);
        let mut free = free;
        let mut hops = 0u64;
        loop {
            let b = self.bucket(at);
            for (i, &s) in b[1..=SLOTS].iter().enumerate() {
                let slot_at = at + 8 + 8 * i as u64;
                if s >> 48 == tag && self.check_item(s, hash, klen, k, &mut []).is_some() {
                    return (
                        Some(Found {
                            at: slot_at,
                            slot: s,
                        }),
                        at,
                    );
                }
                if let Some((f, alloc)) = free.as_mut() {
                    if f.is_none() && (s == 0 || self.slot_stale(*alloc, s)) {
                        **f = Some(Found {
                            at: slot_at,
                            slot: s,
                        });
                    }
                }
            }
            let link = b[1 + LINK_SLOT];
            hops += 1;
            if link == 0 || hops > self.geom.overflow_count + 1 {
                return (None, at);
            }
            at = self.geom.linked(link);
        }
    }

    /// GET: copies the value into `out` (which must hold it: up to [`VALUE_MAX`] bytes) and
    /// returns its length, or `None` for a miss (absent, deleted or evicted from the log).
    pub fn get(&self, key: &[u8], out: &mut [u8]) -> Result<Option<usize>, MicaError> {
        let k = key_words(key)?;
        let hash = hash64(k.0, k.1);
        let tag = tag_of(hash);
        let mut at = self.geom.home(hash);
        for _ in 0..=self.geom.overflow_count {
            let b = self.bucket(at);
            for &s in &b[1..=SLOTS] {
                if s >> 48 == tag {
                    if let Some(n) = self.check_item(s, hash, key.len(), k, out) {
                        if n > out.len() {
                            return Err(MicaError::BufferTooSmall {
                                len: n,
                                have: out.len(),
                            });
                        }
                        return Ok(Some(n));
                    }
                }
            }
            match b[1 + LINK_SLOT] {
                0 => return Ok(None),
                link => at = self.geom.linked(link),
            }
        }
        Ok(None)
    }

    /// PUT: insert or update. Allocates log space with FAA, writes the item, CASes the slot.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), MicaError> {
        check_value(value.len())?;
        let k = key_words(key)?;
        let hash = hash64(k.0, k.1);
        let size = item_size(value.len());
        let alloc = self.log.faa(LOG_TAIL, size as u64).expect("log header");
        if self.geom.lossless && alloc + size as u64 > self.geom.log_size {
            return Err(MicaError::LogFull);
        }
        let mut item = [0u8; ITEM_MAX];
        item[..8].copy_from_slice(&hash.to_le_bytes());
        item[8..10].copy_from_slice(&(key.len() as u16).to_le_bytes());
        item[10..12].copy_from_slice(&(value.len() as u16).to_le_bytes());
        item[12..16].copy_from_slice(&(alloc as u32).to_le_bytes());
        item[16..16 + key.len()].copy_from_slice(key);
        item[ITEM_HDR..ITEM_HDR + value.len()].copy_from_slice(value);
        self.log.write(self.geom.log_at(alloc), &item[..size]);
        let new = tag_of(hash) << 48 | (alloc & OFFSET_MASK);
        let mut retries = 0;
        loop {
            let mut free = None;
            let (found, last) = self.find(hash, key.len(), k, Some((&mut free, alloc)));
            let target = match (found, free) {
                (Some(f), _) | (None, Some(f)) => f,
                (None, None) => {
                    let j = self.index.faa(INDEX_OVF_NEXT, 1).expect("index header");
                    if j >= self.geom.overflow_count {
                        return Err(MicaError::TableFull);
                    }
                    // A lost race leaks the bucket; the winner's link is followed instead.
                    self.index
                        .cas(last + 8 + 8 * LINK_SLOT as u64, 0, j + 1)
                        .expect("link slot");
                    continue;
                }
            };
            if self.index.cas(target.at, target.slot, new).expect("slot") == target.slot {
                self.index
                    .faa(target.at & !(LINE - 1), 2)
                    .expect("bucket version");
                return Ok(());
            }
            retries += 1;
            if retries > MAX_RETRIES {
                return Err(MicaError::Contended);
            }
        }
    }

    /// DELETE: CASes the key's slot to empty. Returns whether the key was there.
    pub fn delete(&self, key: &[u8]) -> Result<bool, MicaError> {
        let k = key_words(key)?;
        let hash = hash64(k.0, k.1);
        for _ in 0..=MAX_RETRIES {
            let Some(f) = self.find(hash, key.len(), k, None).0 else {
                return Ok(false);
            };
            if self.index.cas(f.at, f.slot, 0).expect("slot") == f.slot {
                self.index
                    .faa(f.at & !(LINE - 1), 2)
                    .expect("bucket version");
                return Ok(true);
            }
        }
        Err(MicaError::Contended)
    }

    /// Puts the keys `key_for(seed, i)` with values `value_for(seed, i, len)` for each `i` of
    /// `keys`; O(keys). A table is filled with `0..n`, in one call or in pieces.
    pub fn fill(
        &self,
        keys: std::ops::Range<u64>,
        seed: u64,
        value_len: usize,
    ) -> Result<(), MicaError> {
        let mut v = [0u8; VALUE_MAX];
        for i in keys {
            value_for(seed, i, &mut v[..value_len]);
            self.put(&key_for(seed, i), &v[..value_len])?;
        }
        Ok(())
    }
}

/// The `i`-th key of a seeded key set: 16 bytes, distinct for distinct `i`.
pub fn key_for(seed: u64, i: u64) -> [u8; KEY_MAX] {
    let mut k = [0u8; KEY_MAX];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..].copy_from_slice(&hash64(seed, i).to_le_bytes());
    k
}

/// Fills `out` with the seeded value of key `i`.
pub fn value_for(seed: u64, i: u64, out: &mut [u8]) {
    for (j, c) in out.chunks_mut(8).enumerate() {
        let w = hash64(seed ^ i, j as u64).to_le_bytes();
        c.copy_from_slice(&w[..c.len()]);
    }
}
