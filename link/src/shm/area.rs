//! The shared area as both processes map it: header, directory, rings, load slots and arena,
//! and the host agent's private copy of its directory.

use super::LoadReport;
use crate::error::LinkError;
use crate::layout::{self, dir, hdr, load, Dir, Layout};
use crate::ring::RingMem;
use crate::{sys, DirEntry};
use naam_core::memory::{LocalMemory, RegionMem};
use naam_core::region::{Perms, RegionDesc, RegionId, RegionTable};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The host agent's own record of its regions and of how much of the arena it used. The
/// shared copy (directory, `ARENA_USED`) is for the dataplane, which can write it: the host
/// agent never takes bounds from there (DESIGN §10).
#[derive(Debug, Default)]
pub(super) struct HostDir {
    pub(super) entries: Vec<DirEntry>,
    pub(super) arena_used: u64,
}

/// Whether a directory read back from a persisted area can be trusted: entries inside the
/// arena's used part, ids unique, no two regions overlapping.
pub(super) fn directory_coherent(
    entries: &[DirEntry],
    l: &Layout,
    used: u64,
) -> Result<(), String> {
    if used > l.arena_len {
        return Err(format!("{used} bytes used of a {}-byte arena", l.arena_len));
    }
    let mut spans: Vec<(u64, u64, RegionId)> = Vec::with_capacity(entries.len());
    for e in entries {
        let end = e.offset.saturating_add(e.desc.len);
        if e.offset < l.arena_off || end > l.arena_off + used {
            return Err(format!("region {} lies outside the used arena", e.desc.id));
        }
        if spans.iter().any(|s| s.2 == e.desc.id) {
            return Err(format!("region {} appears twice", e.desc.id));
        }
        spans.push((e.offset, end, e.desc.id));
    }
    spans.sort_unstable();
    if let Some(w) = spans.windows(2).find(|w| w[1].0 < w[0].1) {
        return Err(format!("regions {} and {} overlap", w[0].2, w[1].2));
    }
    Ok(())
}

/// The shared mapping and its doorbells, kept alive by everything that holds views into it.
pub(super) struct Area {
    pub(super) map: Arc<sys::Mapping>,
    pub(super) layout: Layout,
    pub(super) hdr: RegionMem,
    pub(super) memfd: OwnedFd,
    /// One eventfd per ring, indexed `qp * 2 + dir`.
    pub(super) doorbells: Vec<Arc<OwnedFd>>,
    /// Queue pairs taken in this process.
    pub(super) taken: Vec<AtomicBool>,
    /// In the host agent's process: its private directory (`None` in the dataplane's).
    host_dir: Option<std::sync::RwLock<HostDir>>,
}

impl Area {
    pub(super) fn new(
        map: Arc<sys::Mapping>,
        layout: Layout,
        memfd: OwnedFd,
        doorbells: Vec<OwnedFd>,
        host: bool,
    ) -> Result<Arc<Area>, LinkError> {
        let hdr = map.view(0, layout::PAGE).ok_or(LinkError::Layout {
            reason: "no header page",
        })?;
        let taken = (0..layout.qps).map(|_| AtomicBool::new(false)).collect();
        let doorbells = doorbells.into_iter().map(Arc::new).collect();
        Ok(Arc::new(Area {
            map,
            layout,
            hdr,
            memfd,
            doorbells,
            taken,
            host_dir: host.then(|| std::sync::RwLock::new(HostDir::default())),
        }))
    }

    /// The host agent's private directory (poisoning cannot leave it half-updated: every
    /// writer replaces whole entries).
    pub(super) fn host_dir(&self) -> Option<std::sync::RwLockReadGuard<'_, HostDir>> {
        self.host_dir
            .as_ref()
            .map(|d| d.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(super) fn host_dir_mut(&self) -> Option<std::sync::RwLockWriteGuard<'_, HostDir>> {
        self.host_dir
            .as_ref()
            .map(|d| d.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes [`hdr::DIR_SUM`] of the directory as the host leaves it (after every change).
    pub(super) fn seal_directory(&self) {
        self.hdr.store_u64(hdr::DIR_SUM, self.directory_sum());
    }

    /// [`hdr::DIR_SUM`] of the directory as it is now.
    pub(super) fn directory_sum(&self) -> u64 {
        let l = &self.layout;
        let mut crc = crc32fast::Hasher::new();
        if let Ok(d) = self.view(l.dir_off, l.max_regions as u64 * dir::SIZE) {
            for off in (0..l.max_regions as u64 * dir::SIZE).step_by(8) {
                crc.update(&d.load_u64(off).unwrap_or(0).to_le_bytes());
            }
        }
        crc.update(&self.get(hdr::ARENA_USED).to_le_bytes());
        u64::from(crc.finalize()) | 1 << 32
    }

    pub(super) fn get(&self, off: u64) -> u64 {
        self.hdr.load_u64(off).unwrap_or(0)
    }

    pub(super) fn view(&self, off: u64, len: u64) -> Result<RegionMem, LinkError> {
        self.map.view(off, len).ok_or(LinkError::Layout {
            reason: "view outside the mapping",
        })
    }

    pub(super) fn ring(&self, qp: u32, d: Dir) -> Result<RingMem, LinkError> {
        let l = &self.layout;
        let off = l.ring_off(qp, d);
        Ok(RingMem {
            ctl: self.view(off, layout::ring::CTL_SIZE)?,
            slots: self.view(
                off + layout::ring::CTL_SIZE,
                l.ring_bytes() - layout::ring::CTL_SIZE,
            )?,
            n: l.ring_slots as u64,
            doorbell: self.doorbells[(qp * 2 + d as u32) as usize].clone(),
        })
    }

    /// The directory: the host agent's private one in its process; in the dataplane's, the
    /// shared entries that are valid and lie inside the arena, read again while the host
    /// changes them underneath (the epoch moved), so an entry is never torn.
    pub(super) fn directory(&self) -> Vec<DirEntry> {
        if let Some(d) = self.host_dir() {
            return d.entries.clone();
        }
        let mut out = Vec::new();
        for _ in 0..100 {
            let epoch = self.get(hdr::DIR_EPOCH);
            out = self.read_directory();
            if self.get(hdr::DIR_EPOCH) == epoch {
                break;
            }
        }
        out
    }

    pub(super) fn read_directory(&self) -> Vec<DirEntry> {
        let l = &self.layout;
        let Ok(d) = self.view(l.dir_off, l.max_regions as u64 * dir::SIZE) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for i in 0..l.max_regions as u64 {
            let e = i * dir::SIZE;
            let get = |f| d.load_u64(e + f).unwrap_or(0);
            if get(dir::STATE) != dir::VALID {
                continue;
            }
            let (Ok(id), Ok(tenant)) =
                (u32::try_from(get(dir::ID)), u32::try_from(get(dir::TENANT)))
            else {
                tracing::warn!(
                    entry = i,
                    "directory entry with an out-of-range id or tenant skipped"
                );
                continue;
            };
            let (offset, len) = (get(dir::OFFSET), get(dir::LEN));
            let inside = offset % 8 == 0
                && offset >= l.arena_off
                && offset
                    .checked_add(len)
                    .is_some_and(|end| end <= l.arena_off + l.arena_len);
            if !inside {
                tracing::warn!(
                    entry = i,
                    region = id,
                    offset,
                    len,
                    "directory entry outside the arena skipped"
                );
                continue;
            }
            let desc = RegionDesc {
                id,
                tenant,
                len,
                perms: Perms::from_bits(get(dir::PERMS) as u8),
                key: get(dir::KEY),
            };
            out.push(DirEntry {
                desc,
                offset,
                rkey: 0,
            });
        }
        out
    }

    /// The region table and memory views the directory describes.
    pub(super) fn table_and_memory(&self) -> (RegionTable, LocalMemory) {
        let mut table = RegionTable::new();
        let mut mem = LocalMemory::new();
        for e in self.directory() {
            let Ok(view) = self.view(e.offset, e.desc.len) else {
                continue;
            };
            if table.insert(e.desc).is_ok() {
                mem.map(e.desc.id, view);
            }
        }
        (table, mem)
    }

    pub(super) fn take_qp(&self, qp: u32) -> Result<(), LinkError> {
        let t = self.taken.get(qp as usize).ok_or(LinkError::NoSuchQp {
            qp,
            qps: self.layout.qps,
        })?;
        if t.swap(true, Ordering::AcqRel) {
            return Err(LinkError::QpInUse { qp });
        }
        Ok(())
    }

    pub(super) fn read_load(&self, worker: u32) -> Option<LoadReport> {
        if worker >= self.layout.load_slots {
            return None;
        }
        let v = self
            .view(self.layout.load_entry_off(worker), load::SIZE)
            .ok()?;
        let get = |f| v.load_u64(f).unwrap_or(0);
        Some(LoadReport {
            busy_ppm: get(load::BUSY_PPM) as u32,
            queue_depth: get(load::QUEUE_DEPTH) as u32,
            beats: get(load::BEATS),
            ts_ns: get(load::TS_NS),
        })
    }
}
