//! The MICA table layout and the handler arguments: the Rust mirror of `include/mica.h`
//! (a test compiles static assertions generated from these constants against the header).

use super::MicaError;
use naam_core::abi::{ARGS_MAX, OUT_MAX};
use naam_core::region::RegionId;

/// Written at offset 0 of the index region.
pub const MAGIC: u64 = 0x3141_4349_4349_4d4e;
/// A bucket, and the header line of each region.
pub const LINE: u64 = 64;
pub const HDR: u64 = 64;
/// Item slots per bucket; slot [`LINK_SLOT`] links to an overflow bucket.
pub const SLOTS: usize = 6;
pub const LINK_SLOT: usize = 6;
/// Offsets in the index header line.
pub const INDEX_MAGIC: u64 = 0;
pub const INDEX_BUCKETS: u64 = 8;
pub const INDEX_OVERFLOW: u64 = 16;
pub const INDEX_OVF_NEXT: u64 = 24;
/// `[32, 64)` of the index header: what the table was filled with (keys, value size, seed,
/// then a tag saying they are there), written by whoever fills it; no handler reads them.
pub const INDEX_FILLED_WITH: u64 = 32;
/// Offsets in the log header line.
pub const LOG_TAIL: u64 = 0;
pub const LOG_SIZE: u64 = 8;
/// The table's flags ([`FLAG_LOSSLESS`]), which clients copy into their arguments.
pub const LOG_FLAGS: u64 = 16;
/// Lossless mode: the log never wraps; a PUT that would evict answers [`E_LOG_FULL`].
pub const FLAG_LOSSLESS: u32 = 1;

pub const KEY_MAX: usize = 16;
pub const VALUE_MIN: usize = 1;
pub const VALUE_MAX: usize = 1024;
/// Item header: u64 hash, u16 key_len, u16 value_len, u32 lap, key[16].
pub const ITEM_HDR: usize = 32;
pub const ITEM_MAX: usize = ITEM_HDR + VALUE_MAX;
pub const OFFSET_MASK: u64 = (1 << 48) - 1;

/// Fixed part of the arguments; PUT appends the value.
pub const ARGS_FIXED: usize = 56;
/// Reply header: u32 status, u32 value_len.
pub const REPLY_HDR: usize = 8;
pub const STATUS_OK: u32 = 0;
pub const STATUS_NOT_FOUND: u32 = 1;

/// Abort codes of the handlers.
pub const E_ARGS: u32 = 1;
pub const E_VALUE: u32 = 2;
pub const E_FULL: u32 = 3;
pub const E_CONTENDED: u32 = 4;
pub const E_STATE: u32 = 5;
/// Lossless mode: the log is used up (the PUT evicted nothing and stored nothing).
pub const E_LOG_FULL: u32 = 6;
/// Failed slot CASes a message survives before it aborts with [`E_CONTENDED`].
pub const MAX_RETRIES: u32 = 4;

/// Largest log: logical offsets live in 48 bits and are compared in 48-bit arithmetic.
pub const LOG_SIZE_MAX: u64 = 1 << 40;

/// Byte offsets of `struct mica_args` fields.
pub mod args {
    pub const INDEX_REGION: usize = 0;
    pub const LOG_REGION: usize = 4;
    pub const BUCKET_MASK: usize = 8;
    pub const OVERFLOW_COUNT: usize = 16;
    pub const LOG_MASK: usize = 24;
    pub const KEY_LEN: usize = 32;
    pub const VALUE_LEN: usize = 34;
    pub const FLAGS: usize = 36;
    pub const KEY: usize = 40;
    pub const VALUE: usize = 56;
}

const _: () = assert!(args::VALUE == ARGS_FIXED && ARGS_FIXED + VALUE_MAX <= ARGS_MAX);
const _: () = assert!(REPLY_HDR + VALUE_MAX <= OUT_MAX);

/// Bytes an item with a `value_len`-byte value takes in the log (8-aligned).
pub const fn item_size(value_len: usize) -> usize {
    ITEM_HDR + value_len.div_ceil(8) * 8
}

/// The 16-bit tag of a key hash: never 0 (0 marks links and empty slots).
pub const fn tag_of(hash: u64) -> u64 {
    match hash >> 48 {
        0 => 1,
        t => t,
    }
}

/// The two words of a zero-padded key and its hash (`naam_hash64(k0, k1)`, as the handlers).
pub fn key_words(key: &[u8]) -> Result<(u64, u64), MicaError> {
    if key.is_empty() || key.len() > KEY_MAX {
        return Err(MicaError::KeyLength { len: key.len() });
    }
    let mut k = [0u8; KEY_MAX];
    k[..key.len()].copy_from_slice(key);
    let k0 = u64::from_le_bytes(k[..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(k[8..].try_into().expect("8 bytes"));
    Ok((k0, k1))
}

/// Where a table lives and how big it is. Both counts and the log size are powers of two
/// (the handlers mask instead of dividing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicaGeometry {
    pub index_region: RegionId,
    pub log_region: RegionId,
    /// Home buckets (a power of two).
    pub bucket_count: u64,
    /// Overflow buckets after the home buckets.
    pub overflow_count: u64,
    /// Bytes of circular log (a power of two, at least `2 * ITEM_MAX`).
    pub log_size: u64,
    /// Lossless mode: PUT answers [`E_LOG_FULL`] rather than wrap the log over acknowledged
    /// items (MICA's store mode, without compaction); otherwise the log is lossy (MICA's cache
    /// mode: the oldest items are evicted once it wraps).
    pub lossless: bool,
}

impl MicaGeometry {
    /// A geometry for about `keys` keys of `value_len`-byte values in regions 0 (index) and 1
    /// (log): an average of at most 3 keys per 6-slot bucket, one overflow bucket per 8 home
    /// buckets, and a log twice the live data so updates do not evict live keys soon.
    pub fn for_keys(keys: u64, value_len: usize) -> Self {
        let bucket_count = keys.div_ceil(3).max(1).next_power_of_two();
        let live = keys.max(1) * item_size(value_len.clamp(VALUE_MIN, VALUE_MAX)) as u64;
        let log_size = (2 * live)
            .max(4 * ITEM_MAX as u64)
            .next_power_of_two()
            .min(LOG_SIZE_MAX);
        Self {
            index_region: 0,
            log_region: 1,
            bucket_count,
            overflow_count: bucket_count / 8 + 16,
            log_size,
            lossless: false,
        }
    }

    /// The same table in lossless mode (or not).
    pub fn lossless(mut self, on: bool) -> Self {
        self.lossless = on;
        self
    }

    pub fn with_regions(mut self, index_region: RegionId, log_region: RegionId) -> Self {
        self.index_region = index_region;
        self.log_region = log_region;
        self
    }

    /// Bytes of the index region.
    pub fn index_len(&self) -> u64 {
        HDR + LINE * (self.bucket_count + self.overflow_count)
    }

    /// Bytes of the log region (header, log, slack for an item that runs past the end).
    pub fn log_len(&self) -> u64 {
        HDR + self.log_size + ITEM_MAX as u64
    }

    pub fn validate(&self) -> Result<(), MicaError> {
        let bad = |reason| Err(MicaError::BadGeometry { reason });
        if !self.bucket_count.is_power_of_two() {
            return bad("bucket_count must be a power of two");
        }
        if !self.log_size.is_power_of_two() || self.log_size < 2 * ITEM_MAX as u64 {
            return bad("log_size must be a power of two of at least two maximal items");
        }
        if self.log_size > LOG_SIZE_MAX {
            return bad("log_size above 2^40");
        }
        if self
            .bucket_count
            .checked_add(self.overflow_count)
            .and_then(|b| b.checked_mul(LINE))
            .is_none()
        {
            return bad("index size overflows");
        }
        Ok(())
    }

    /// Index offset of home bucket `hash & (bucket_count - 1)`.
    pub fn home(&self, hash: u64) -> u64 {
        HDR + (hash & (self.bucket_count - 1)) * LINE
    }

    /// Index offset of the bucket a link slot value points at.
    pub fn linked(&self, link: u64) -> u64 {
        HDR + (self.bucket_count - 1 + link) * LINE
    }

    /// Log-region offset of logical log offset `o`.
    pub fn log_at(&self, o: u64) -> u64 {
        HDR + (o & (self.log_size - 1))
    }
}

/// Encoded handler arguments, on the stack (no allocation).
#[derive(Clone)]
pub struct MicaArgs {
    buf: [u8; ARGS_MAX],
    len: usize,
}

impl core::fmt::Debug for MicaArgs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MicaArgs")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for MicaArgs {
    fn default() -> Self {
        Self::new()
    }
}

impl MicaArgs {
    /// Empty arguments, to be filled in place by the `set_*` methods (no 1 KiB copies).
    pub fn new() -> Self {
        Self {
            buf: [0u8; ARGS_MAX],
            len: 0,
        }
    }

    fn fixed(geom: &MicaGeometry, key: &[u8], value_len: u16) -> Result<Self, MicaError> {
        let mut a = Self::new();
        a.set_fixed(geom, key, value_len)?;
        Ok(a)
    }

    /// Rewrites the fixed part only: bytes past the new length are never sent.
    fn set_fixed(
        &mut self,
        geom: &MicaGeometry,
        key: &[u8],
        value_len: u16,
    ) -> Result<(), MicaError> {
        key_words(key)?;
        let buf = &mut self.buf;
        buf[args::INDEX_REGION..][..4].copy_from_slice(&geom.index_region.to_le_bytes());
        buf[args::LOG_REGION..][..4].copy_from_slice(&geom.log_region.to_le_bytes());
        buf[args::BUCKET_MASK..][..8].copy_from_slice(&(geom.bucket_count - 1).to_le_bytes());
        buf[args::OVERFLOW_COUNT..][..8].copy_from_slice(&geom.overflow_count.to_le_bytes());
        buf[args::LOG_MASK..][..8].copy_from_slice(&(geom.log_size - 1).to_le_bytes());
        buf[args::KEY_LEN..][..2].copy_from_slice(&(key.len() as u16).to_le_bytes());
        buf[args::VALUE_LEN..][..2].copy_from_slice(&value_len.to_le_bytes());
        let flags = if geom.lossless { FLAG_LOSSLESS } else { 0 };
        buf[args::FLAGS..][..4].copy_from_slice(&flags.to_le_bytes());
        buf[args::KEY..][..KEY_MAX].fill(0);
        buf[args::KEY..][..key.len()].copy_from_slice(key);
        self.len = ARGS_FIXED;
        Ok(())
    }

    /// In place: GET `key`, reading `expect` value bytes at first (see [`Self::get_expecting`]).
    pub fn set_get(
        &mut self,
        geom: &MicaGeometry,
        key: &[u8],
        expect: usize,
    ) -> Result<(), MicaError> {
        self.set_fixed(geom, key, expect.clamp(VALUE_MIN, VALUE_MAX) as u16)
    }

    /// In place: PUT `key` = `value`.
    pub fn set_put(
        &mut self,
        geom: &MicaGeometry,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), MicaError> {
        check_value(value.len())?;
        self.set_fixed(geom, key, value.len() as u16)?;
        self.buf[args::VALUE..][..value.len()].copy_from_slice(value);
        // Zero the padding up to the next word: the handler copies whole words.
        let end = (ARGS_FIXED + value.len()).next_multiple_of(8);
        self.buf[ARGS_FIXED + value.len()..end].fill(0);
        self.len = ARGS_FIXED + value.len();
        Ok(())
    }

    /// In place: DELETE `key`.
    pub fn set_delete(&mut self, geom: &MicaGeometry, key: &[u8]) -> Result<(), MicaError> {
        self.set_fixed(geom, key, 0)
    }

    /// GET `key`; the handler first reads values up to [`VALUE_MAX`] bytes.
    pub fn get(geom: &MicaGeometry, key: &[u8]) -> Result<Self, MicaError> {
        Self::fixed(geom, key, 0)
    }

    /// GET `key`, reading `expect` value bytes with the item at first (a longer value costs
    /// one more step). Small hints make small GETs cheap.
    pub fn get_expecting(
        geom: &MicaGeometry,
        key: &[u8],
        expect: usize,
    ) -> Result<Self, MicaError> {
        Self::fixed(geom, key, expect.clamp(VALUE_MIN, VALUE_MAX) as u16)
    }

    /// PUT `key` = `value` (insert or update).
    pub fn put(geom: &MicaGeometry, key: &[u8], value: &[u8]) -> Result<Self, MicaError> {
        let mut a = Self::new();
        a.set_put(geom, key, value)?;
        Ok(a)
    }

    pub fn delete(geom: &MicaGeometry, key: &[u8]) -> Result<Self, MicaError> {
        Self::fixed(geom, key, 0)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

pub(crate) fn check_value(len: usize) -> Result<(), MicaError> {
    match len {
        0 => Err(MicaError::EmptyValue),
        n if n > VALUE_MAX => Err(MicaError::ValueTooLarge {
            len: n,
            max: VALUE_MAX,
        }),
        _ => Ok(()),
    }
}

/// A decoded handler reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MicaReply<'a> {
    /// GET found the key.
    Value(&'a [u8]),
    /// PUT stored, DELETE removed.
    Done,
    /// GET or DELETE: no such key.
    NotFound,
}

impl<'a> MicaReply<'a> {
    /// Decodes the reply bytes of a message that ended with DONE.
    pub fn parse(out: &'a [u8]) -> Result<Self, MicaError> {
        if out.len() < REPLY_HDR {
            return Err(MicaError::BadReply { len: out.len() });
        }
        let status = u32::from_le_bytes(out[..4].try_into().expect("4 bytes"));
        let vlen = u32::from_le_bytes(out[4..8].try_into().expect("4 bytes")) as usize;
        match status {
            STATUS_NOT_FOUND => Ok(MicaReply::NotFound),
            STATUS_OK if out.len() == REPLY_HDR + vlen && vlen == 0 => Ok(MicaReply::Done),
            STATUS_OK if out.len() == REPLY_HDR + vlen => Ok(MicaReply::Value(&out[REPLY_HDR..])),
            _ => Err(MicaError::BadReply { len: out.len() }),
        }
    }
}
