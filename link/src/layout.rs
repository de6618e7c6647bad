//! The layout of the shared memory file: a header page, the region directory, the host-load
//! area, the rings, then region memory. Every field is a little-endian u64 accessed
//! atomically; the peer may be buggy or hostile, so [`Layout::parse`] checks every number
//! before anything is mapped through it.
//!
//! ```text
//! 0          header (one page): magic, version, geometry, directory epoch, heartbeat
//! dir_off    max_regions × 64-byte entries {state, id, tenant, perms, key, offset, len}
//! load_off   load_slots × 64-byte entries {busy_ppm, queue_depth, beats, ts_ns}
//! rings_off  qps × 2 rings, each: 3 control cache lines {tail}{head}{waiting} + slots
//! arena_off  region memory (page-aligned regions, bump allocated)
//! ```

use crate::error::LinkError;
use crate::ring::SLOT_SIZE;
use naam_core::memory::RegionMem;

pub const MAGIC: u64 = u64::from_le_bytes(*b"NAAMLNK1");
pub const VERSION: u64 = 1;
pub const CACHE_LINE: u64 = 64;
pub const PAGE: u64 = 4096;

/// Header fields (byte offsets in the header page).
pub mod hdr {
    pub const MAGIC: u64 = 0;
    pub const VERSION: u64 = 8;
    pub const QPS: u64 = 16;
    pub const RING_SLOTS: u64 = 24;
    pub const SLOT_SIZE: u64 = 32;
    pub const MAX_REGIONS: u64 = 40;
    pub const LOAD_SLOTS: u64 = 48;
    pub const DIR_OFF: u64 = 56;
    pub const LOAD_OFF: u64 = 64;
    pub const RINGS_OFF: u64 = 72;
    pub const ARENA_OFF: u64 = 80;
    pub const ARENA_LEN: u64 = 88;
    pub const TOTAL_LEN: u64 = 96;
    /// CRC-32 of the geometry words `VERSION ..= TOTAL_LEN` (a persisted file whose header
    /// was damaged is refused, not trusted).
    pub const GEOMETRY_SUM: u64 = 104;
    /// Whether the host agent finished building the data of a new area: [`DATA_BUILDING`]
    /// from its creation until the host serves it, then [`DATA_READY`] (0 in areas of
    /// versions before it, taken as ready). A persisted area still building was never
    /// served (its host stopped while building it) and is built afresh when reopened.
    pub const DATA_STATE: u64 = 112;
    pub const DATA_BUILDING: u64 = u64::from_le_bytes(*b"BUILDING");
    pub const DATA_READY: u64 = u64::from_le_bytes(*b"READY\0\0\0");
    /// What the host last wrote in the region directory: the CRC-32 of its entries and of
    /// [`ARENA_USED`], with bit 32 set (0 in areas of versions before it: not checked). A
    /// persisted area whose directory was changed otherwise is refused when reopened.
    pub const DIR_SUM: u64 = 120;
    /// Bumped by the host after every directory change.
    pub const DIR_EPOCH: u64 = 128;
    /// Bytes of the arena handed out so far.
    pub const ARENA_USED: u64 = 136;
    pub const HOST_PID: u64 = 144;
    /// Bumped each time a dataplane connects.
    pub const GENERATION: u64 = 152;
    /// A snapshot's cut (the host's [`crate::shm::ShmHost::hold_dataplane`]): while nonzero,
    /// the dataplane's queue pairs execute nothing on host memory, each once it has answered
    /// with this number in [`held`]. 0: no hold.
    pub const HOLD: u64 = 160;
    /// A dataplane queue pair's answer to [`HOLD`], one word per queue pair: 0 unused,
    /// [`HELD_NONE`] in use and not holding, else the `HOLD` number it held for.
    pub const fn held(qp: u32) -> u64 {
        1024 + 8 * qp as u64
    }
    pub const HELD_NONE: u64 = u64::MAX;
    /// The host's last heartbeat (CLOCK_MONOTONIC ns), on its own cache line.
    pub const HEARTBEAT_NS: u64 = 192;
}

/// Directory entry fields.
pub mod dir {
    pub const SIZE: u64 = 64;
    /// 0 free, [`VALID`] registered. Written last when registering, first when removing.
    pub const STATE: u64 = 0;
    pub const ID: u64 = 8;
    pub const TENANT: u64 = 16;
    pub const PERMS: u64 = 24;
    pub const KEY: u64 = 32;
    pub const OFFSET: u64 = 40;
    pub const LEN: u64 = 48;
    pub const VALID: u64 = 1;
}

/// Host-load entry fields (one cache line per host worker).
pub mod load {
    pub const SIZE: u64 = 64;
    pub const BUSY_PPM: u64 = 0;
    pub const QUEUE_DEPTH: u64 = 8;
    pub const BEATS: u64 = 16;
    pub const TS_NS: u64 = 24;
}

/// Ring control block: producer, consumer and sleep flag each on their own cache line.
pub mod ring {
    pub const TAIL: u64 = 0;
    pub const HEAD: u64 = 64;
    pub const WAITING: u64 = 128;
    pub const CTL_SIZE: u64 = 192;
}

/// Ring direction within a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// NIC → host: requests, overflow messages.
    ToHost = 0,
    /// Host → NIC: replies.
    ToNic = 1,
}

/// The geometry of a shared area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub qps: u32,
    pub ring_slots: u32,
    pub max_regions: u32,
    pub load_slots: u32,
    pub dir_off: u64,
    pub load_off: u64,
    pub rings_off: u64,
    pub arena_off: u64,
    pub arena_len: u64,
    pub total_len: u64,
}

const fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Limits that keep a parsed layout's arithmetic far from overflow.
/// The most queue pairs of an area (the header page holds each one's answer to a snapshot hold).
pub const MAX_QPS: u32 = 120;
// Every queue pair's answer to a hold fits the header page.
const _: () = assert!(hdr::held(MAX_QPS) <= PAGE - 8);
const MAX_SLOTS: u32 = 1 << 16;
const MAX_REGIONS: u32 = 1 << 16;
const MAX_LOAD_SLOTS: u32 = 1 << 12;

impl Layout {
    /// Computes a layout; `ring_slots` must be a power of two.
    pub fn new(
        qps: u32,
        ring_slots: u32,
        max_regions: u32,
        load_slots: u32,
        arena_len: u64,
    ) -> Result<Layout, LinkError> {
        let bad = |reason| Err(LinkError::Layout { reason });
        if qps == 0 || qps > MAX_QPS {
            return bad("queue pairs must be 1..=120");
        }
        if !ring_slots.is_power_of_two() || !(2..=MAX_SLOTS).contains(&ring_slots) {
            return bad("ring slots must be a power of two in 2..=65536");
        }
        if max_regions == 0 || max_regions > MAX_REGIONS {
            return bad("max regions must be 1..=65536");
        }
        if load_slots == 0 || load_slots > MAX_LOAD_SLOTS {
            return bad("load slots must be 1..=4096");
        }
        if arena_len > 1 << 40 {
            return bad("arena larger than 1 TiB");
        }
        let dir_off = PAGE;
        let load_off = align_up(dir_off + max_regions as u64 * dir::SIZE, PAGE);
        let rings_off = align_up(load_off + load_slots as u64 * load::SIZE, PAGE);
        let ring_bytes = ring::CTL_SIZE + ring_slots as u64 * SLOT_SIZE as u64;
        let arena_off = align_up(rings_off + 2 * qps as u64 * ring_bytes, PAGE);
        let arena_len = align_up(arena_len, PAGE);
        let total_len = arena_off + arena_len;
        Ok(Layout {
            qps,
            ring_slots,
            max_regions,
            load_slots,
            dir_off,
            load_off,
            rings_off,
            arena_off,
            arena_len,
            total_len,
        })
    }

    pub fn ring_bytes(&self) -> u64 {
        ring::CTL_SIZE + self.ring_slots as u64 * SLOT_SIZE as u64
    }

    /// Offset of the control block of `qp`'s ring in direction `dir`.
    pub fn ring_off(&self, qp: u32, dir: Dir) -> u64 {
        self.rings_off + (qp as u64 * 2 + dir as u64) * self.ring_bytes()
    }

    /// Offset of the slot that ring position `pos` uses.
    pub fn slot_off(&self, qp: u32, dir: Dir, pos: u64) -> u64 {
        self.ring_off(qp, dir)
            + ring::CTL_SIZE
            + (pos & (self.ring_slots as u64 - 1)) * SLOT_SIZE as u64
    }

    pub fn dir_entry_off(&self, index: u32) -> u64 {
        self.dir_off + index as u64 * dir::SIZE
    }

    pub fn load_entry_off(&self, worker: u32) -> u64 {
        self.load_off + worker as u64 * load::SIZE
    }

    /// Writes the header fields describing this layout.
    pub fn write_header(&self, h: &RegionMem) {
        let put = |off, v| {
            h.store_u64(off, v);
        };
        put(hdr::VERSION, VERSION);
        put(hdr::QPS, self.qps as u64);
        put(hdr::RING_SLOTS, self.ring_slots as u64);
        put(hdr::SLOT_SIZE, SLOT_SIZE as u64);
        put(hdr::MAX_REGIONS, self.max_regions as u64);
        put(hdr::LOAD_SLOTS, self.load_slots as u64);
        put(hdr::DIR_OFF, self.dir_off);
        put(hdr::LOAD_OFF, self.load_off);
        put(hdr::RINGS_OFF, self.rings_off);
        put(hdr::ARENA_OFF, self.arena_off);
        put(hdr::ARENA_LEN, self.arena_len);
        put(hdr::TOTAL_LEN, self.total_len);
        put(hdr::GEOMETRY_SUM, geometry_sum(h));
        // Magic last: a reader that sees it sees the rest.
        put(hdr::MAGIC, MAGIC);
    }

    /// Reads and checks a header written by [`Layout::write_header`] in a file of `file_len`
    /// bytes: the geometry must recompute to the same offsets and fit the file.
    pub fn parse(h: &RegionMem, file_len: u64) -> Result<Layout, LinkError> {
        let get = |off| h.load_u64(off).unwrap_or(0);
        let bad = |reason| Err(LinkError::Layout { reason });
        if get(hdr::MAGIC) != MAGIC {
            return bad("bad magic");
        }
        if get(hdr::VERSION) != VERSION {
            return bad("unsupported version");
        }
        if get(hdr::GEOMETRY_SUM) != geometry_sum(h) {
            return bad("header checksum mismatch");
        }
        if get(hdr::SLOT_SIZE) != SLOT_SIZE as u64 {
            return bad("slot size differs from this build");
        }
        let small = |off| u32::try_from(get(off)).ok();
        let (Some(qps), Some(slots), Some(regions), Some(loads)) = (
            small(hdr::QPS),
            small(hdr::RING_SLOTS),
            small(hdr::MAX_REGIONS),
            small(hdr::LOAD_SLOTS),
        ) else {
            return bad("geometry field out of range");
        };
        let l = Layout::new(qps, slots, regions, loads, get(hdr::ARENA_LEN))?;
        let same = l.dir_off == get(hdr::DIR_OFF)
            && l.load_off == get(hdr::LOAD_OFF)
            && l.rings_off == get(hdr::RINGS_OFF)
            && l.arena_off == get(hdr::ARENA_OFF)
            && l.total_len == get(hdr::TOTAL_LEN);
        if !same {
            return bad("offsets do not match the geometry");
        }
        if l.total_len > file_len {
            return bad("layout larger than the shared file");
        }
        Ok(l)
    }
}

/// The CRC-32 of the header's geometry words.
fn geometry_sum(h: &RegionMem) -> u64 {
    let mut crc = crc32fast::Hasher::new();
    for off in (hdr::VERSION..=hdr::TOTAL_LEN).step_by(8) {
        crc.update(&h.load_u64(off).unwrap_or(0).to_le_bytes());
    }
    u64::from(crc.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use naam_core::memory::OwnedRegion;

    #[test]
    fn header_round_trips_and_garbage_is_refused() {
        let l = Layout::new(4, 64, 32, 4, 1 << 20).unwrap();
        assert_eq!(l.arena_off % PAGE, 0);
        assert!(l.slot_off(3, Dir::ToNic, 63) + SLOT_SIZE as u64 <= l.arena_off);
        let page = OwnedRegion::zeroed(PAGE as usize);
        let h = page.mem();
        assert!(Layout::parse(&h, l.total_len).is_err(), "no magic");
        l.write_header(&h);
        assert_eq!(Layout::parse(&h, l.total_len).unwrap(), l);
        assert!(
            Layout::parse(&h, l.total_len - 1).is_err(),
            "file too small"
        );
        // A damaged geometry word: the checksum catches it.
        h.store_u64(hdr::ARENA_LEN, 1 << 21).unwrap();
        assert!(matches!(
            Layout::parse(&h, l.total_len),
            Err(LinkError::Layout {
                reason: "header checksum mismatch"
            })
        ));
        // Wrong values with a matching checksum: the field checks catch them.
        l.write_header(&h);
        h.store_u64(hdr::RINGS_OFF, 12345).unwrap();
        h.store_u64(hdr::GEOMETRY_SUM, geometry_sum(&h)).unwrap();
        assert!(
            Layout::parse(&h, l.total_len).is_err(),
            "inconsistent offsets"
        );
        l.write_header(&h);
        h.store_u64(hdr::RING_SLOTS, 100).unwrap();
        h.store_u64(hdr::GEOMETRY_SUM, geometry_sum(&h)).unwrap();
        assert!(
            Layout::parse(&h, l.total_len).is_err(),
            "not a power of two"
        );
        assert!(Layout::new(0, 64, 1, 1, 0).is_err());
    }
}
