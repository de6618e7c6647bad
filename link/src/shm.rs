//! `ShmLink`: the link over a memfd shared by the host agent and the dataplane (DESIGN §6) —
//! true one-sided access to host memory, the same-machine stand-in for BlueField's DMA.
//!
//! The host agent creates the area ([`ShmHost::create`]), registers regions in it, and serves
//! it on a Unix socket ([`ShmHost::serve`], [`ShmHost::poll_peer`]): the memfd and one eventfd
//! per ring go to the dataplane with SCM_RIGHTS. The dataplane maps it ([`ShmLink::connect`])
//! and builds its region table and memory from the directory. The socket stays open: when it
//! closes, the dataplane reports [`LinkError::PeerGone`] (for good: reconnect); while the
//! host's heartbeat is late it reports [`LinkError::PeerSuspect`] (until the heartbeat returns;
//! the mapped memory stays usable). When a dataplane dies, the host accepts the next one and
//! its data stays in the memfd.
//!
//! Each side takes queue pairs ([`ShmQp`], one per worker): queue pair `i` is the ring pair
//! of host worker `i` (NIC → host requests, host → NIC replies) plus a staging buffer and a
//! completion queue for one-sided ops.

use crate::error::{GoneReason, LinkError};
use crate::layout::{self, dir, hdr, load, Dir, Layout};
use crate::ring::{Backoff, Consumer, Producer, RingMem};
use crate::{
    sys, Completion, CompletionStatus, DirEntry, Direct, Link, LinkCounters, OpKind, Received,
    RegionSpec, RemoteAddr, WrId,
};
use naam_core::abi::{RawOp, DATA_SIZE};
use naam_core::memory::{LocalMemory, MemError, Memory, OwnedRegion, RegionMem};
use naam_core::region::{CheckedOp, OpError, Perms, RegionDesc, RegionId, RegionTable};
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The geometry and options of a shared area (set by the host agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmConfig {
    /// Queue pairs (ring pairs): one per host worker.
    pub qps: u32,
    /// Slots per ring; a power of two.
    pub ring_slots: u32,
    /// Directory entries.
    pub max_regions: u32,
    /// Host-load entries (one per host worker).
    pub load_slots: u32,
    /// Bytes of region memory.
    pub arena_bytes: u64,
    /// Try `MFD_HUGETLB` first (falls back to normal pages, logged).
    pub hugetlb: bool,
    /// Bytes of each queue pair's local staging buffer.
    pub staging_bytes: usize,
    /// Keep the area in this file (on a tmpfs such as /dev/shm) instead of an anonymous memfd,
    /// so it survives the host agent; reopened when it exists with the same geometry.
    pub persist: Option<PathBuf>,
    /// Unpolled completions a queue pair holds before posting returns `CqFull`.
    pub cq_depth: usize,
}

impl Default for ShmConfig {
    fn default() -> Self {
        ShmConfig {
            qps: 2,
            ring_slots: 256,
            max_regions: 64,
            load_slots: 2,
            arena_bytes: 64 << 20,
            hugetlb: true,
            staging_bytes: 64 << 10,
            cq_depth: 64,
            persist: None,
        }
    }
}

/// Options of the dataplane side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The host's heartbeat is late (peer suspect) after this long; zero disables the check.
    pub stale_after: Duration,
    pub staging_bytes: usize,
    pub cq_depth: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            stale_after: Duration::from_millis(100),
            staging_bytes: 64 << 10,
            cq_depth: 64,
        }
    }
}

/// The setup message that travels with the descriptors.
const HELLO_MAGIC: u64 = u64::from_le_bytes(*b"NAAMHELO");
const HELLO_LEN: usize = 24;
/// Snapshot format 2: magic, region count, per region a header and its bytes, then the
/// CRC-32 of everything before it (as a u64).
const SNAPSHOT_MAGIC: u64 = u64::from_le_bytes(*b"NAAMSNP2");
/// Format 1 had no checksum: refused with a message saying so.
const SNAPSHOT_MAGIC_V1: u64 = u64::from_le_bytes(*b"NAAMSNP1");

/// A writer or reader that checksums what passes through it.
struct Crc<T> {
    inner: T,
    crc: crc32fast::Hasher,
}

impl<T> Crc<T> {
    fn new(inner: T) -> Self {
        Crc {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }

    fn sum(&self) -> u64 {
        self.crc.clone().finalize() as u64
    }
}

impl<W: std::io::Write> std::io::Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: std::io::Read> std::io::Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// The host agent's own record of its regions and of how much of the arena it used. The
/// shared copy (directory, `ARENA_USED`) is for the dataplane, which can write it: the host
/// agent never takes bounds from there (DESIGN §10).
#[derive(Debug, Default)]
struct HostDir {
    entries: Vec<DirEntry>,
    arena_used: u64,
}

/// Whether a directory read back from a persisted area can be trusted: entries inside the
/// arena's used part, ids unique, no two regions overlapping.
fn directory_coherent(entries: &[DirEntry], l: &Layout, used: u64) -> Result<(), String> {
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
struct Area {
    map: sys::Mapping,
    layout: Layout,
    hdr: RegionMem,
    memfd: OwnedFd,
    /// One eventfd per ring, indexed `qp * 2 + dir`.
    doorbells: Vec<Arc<OwnedFd>>,
    /// Queue pairs taken in this process.
    taken: Vec<AtomicBool>,
    /// In the host agent's process: its private directory (`None` in the dataplane's).
    host_dir: Option<std::sync::RwLock<HostDir>>,
}

impl Area {
    fn new(
        map: sys::Mapping,
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
    fn host_dir(&self) -> Option<std::sync::RwLockReadGuard<'_, HostDir>> {
        self.host_dir
            .as_ref()
            .map(|d| d.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn host_dir_mut(&self) -> Option<std::sync::RwLockWriteGuard<'_, HostDir>> {
        self.host_dir
            .as_ref()
            .map(|d| d.write().unwrap_or_else(|e| e.into_inner()))
    }

    fn get(&self, off: u64) -> u64 {
        self.hdr.load_u64(off).unwrap_or(0)
    }

    fn view(&self, off: u64, len: u64) -> Result<RegionMem, LinkError> {
        self.map.view(off, len).ok_or(LinkError::Layout {
            reason: "view outside the mapping",
        })
    }

    fn ring(&self, qp: u32, d: Dir) -> Result<RingMem, LinkError> {
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
    fn directory(&self) -> Vec<DirEntry> {
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

    fn read_directory(&self) -> Vec<DirEntry> {
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
    fn table_and_memory(&self) -> (RegionTable, LocalMemory) {
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

    fn take_qp(&self, qp: u32) -> Result<(), LinkError> {
        let t = self.taken.get(qp as usize).ok_or(LinkError::NoSuchQp {
            qp,
            qps: self.layout.qps,
        })?;
        if t.swap(true, Ordering::AcqRel) {
            return Err(LinkError::QpInUse { qp });
        }
        Ok(())
    }

    fn read_load(&self, worker: u32) -> Option<LoadReport> {
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

/// One host worker's published load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Busy fraction in parts per million.
    pub busy_ppm: u32,
    /// Messages waiting for the worker.
    pub queue_depth: u32,
    /// Publications so far (a counter that stops moving means a stuck worker).
    pub beats: u64,
    /// When it was last published (CLOCK_MONOTONIC ns).
    pub ts_ns: u64,
}

impl LoadReport {
    pub fn age_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.ts_ns)
    }
}

/// Writes host load and the host heartbeat; cheap to clone into every host worker.
#[derive(Clone)]
pub struct LoadPublisher {
    area: Arc<Area>,
}

impl LoadPublisher {
    /// Publishes worker `worker`'s load and stamps the heartbeat. Unknown workers are ignored
    /// (returns false).
    pub fn publish(&self, worker: u32, busy_ppm: u32, queue_depth: u32, now_ns: u64) -> bool {
        let a = &self.area;
        if worker >= a.layout.load_slots {
            return false;
        }
        let Ok(v) = a.view(a.layout.load_entry_off(worker), load::SIZE) else {
            return false;
        };
        v.store_u64(load::BUSY_PPM, busy_ppm as u64);
        v.store_u64(load::QUEUE_DEPTH, queue_depth as u64);
        v.faa(load::BEATS, 1);
        v.store_u64(load::TS_NS, now_ns);
        self.heartbeat(now_ns);
        true
    }

    /// Stamps the host heartbeat alone.
    pub fn heartbeat(&self, now_ns: u64) {
        self.area.hdr.store_u64(hdr::HEARTBEAT_NS, now_ns);
    }
}

/// What [`ShmHost::poll_peer`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    Nothing,
    /// A dataplane connected (the `generation`-th one).
    Connected {
        generation: u64,
    },
    /// The connected dataplane went away; the next one will be accepted.
    Disconnected,
}

/// The host agent's side: owns the area, registers regions, serves dataplanes.
pub struct ShmHost {
    area: Arc<Area>,
    hugetlb: bool,
    restored: bool,
    staging_bytes: usize,
    cq_depth: usize,
    listener: Option<(UnixListener, PathBuf)>,
    peer: Option<UnixStream>,
}

impl ShmHost {
    /// Creates the shared area: a memfd (hugetlb first when asked), its header, and one eventfd
    /// per ring. With `cfg.persist`, the area is that file instead, and an existing file with
    /// a valid header and the same geometry is reopened with its contents (regions, data, ring
    /// positions): a restarted host agent finds its data where it left it.
    pub fn create(cfg: &ShmConfig) -> Result<ShmHost, LinkError> {
        let layout = Layout::new(
            cfg.qps,
            cfg.ring_slots,
            cfg.max_regions,
            cfg.load_slots,
            cfg.arena_bytes,
        )?;
        let (fd, map, hugetlb, restored) = match &cfg.persist {
            Some(path) => {
                let (fd, map, restored) = Self::open_file(path, &layout)?;
                tracing::warn!(
                    path = %path.display(),
                    "a persistent area is a tmpfs file, which cannot be sealed: a dataplane could shrink it"
                );
                (fd, map, false, restored)
            }
            None => {
                let (fd, map, huge) = Self::alloc(&layout, cfg.hugetlb)?;
                (fd, map, huge, false)
            }
        };
        let doorbells = (0..cfg.qps * 2)
            .map(|_| sys::eventfd().map_err(LinkError::io("eventfd")))
            .collect::<Result<Vec<_>, _>>()?;
        let area = Area::new(map, layout, fd, doorbells, true)?;
        if restored {
            // The file's directory was last written by a host agent, but a dataplane could
            // write it too: take it only if it is coherent, as the private directory.
            let entries = area.read_directory();
            let used = area.get(hdr::ARENA_USED);
            let coherent = directory_coherent(&entries, &layout, used);
            if let (Err(reason), Some(path)) = (coherent, &cfg.persist) {
                return Err(LinkError::Persist {
                    path: path.clone(),
                    reason: format!("its region directory is not coherent: {reason}"),
                });
            }
            if let Some(mut d) = area.host_dir_mut() {
                *d = HostDir {
                    entries,
                    arena_used: used,
                };
            }
            // Sleepers of the previous host are gone; their flags would only cost wake-ups.
            for qp in 0..layout.qps {
                for d in [Dir::ToHost, Dir::ToNic] {
                    area.view(layout.ring_off(qp, d), layout::ring::CTL_SIZE)?
                        .store_u64(layout::ring::WAITING, 0);
                }
            }
            tracing::info!(
                regions = area.directory().len(),
                "link area reopened with its contents"
            );
        } else {
            layout.write_header(&area.hdr);
        }
        area.hdr.store_u64(hdr::HOST_PID, sys::pid() as u64);
        area.hdr.store_u64(hdr::HEARTBEAT_NS, sys::monotonic_ns());
        Ok(ShmHost {
            area,
            hugetlb,
            restored,
            staging_bytes: cfg.staging_bytes,
            cq_depth: cfg.cq_depth,
            listener: None,
            peer: None,
        })
    }

    /// Opens (or creates) a file-backed area. Returns whether existing contents were kept.
    fn open_file(path: &Path, layout: &Layout) -> Result<(OwnedFd, sys::Mapping, bool), LinkError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(LinkError::io("open the persistent link area"))?;
        let len = file
            .metadata()
            .map_err(LinkError::io("stat the persistent link area"))?
            .len();
        let fd = OwnedFd::from(file);
        let refuse = |reason: String| LinkError::Persist {
            path: path.to_owned(),
            reason,
        };
        if len > 0 {
            // A file with contents is someone's data: reopen it with its geometry or refuse
            // it, never recreate it (a torn or foreign file says so; it is not wiped).
            if len < layout::PAGE {
                return Err(refuse(format!(
                    "{len} bytes, shorter than its header page: truncated"
                )));
            }
            let map = sys::Mapping::map(fd.as_fd(), len as usize, false)
                .map_err(LinkError::io("mmap the persistent link area"))?;
            let hdr_view = map.view(0, layout::PAGE).ok_or(LinkError::Layout {
                reason: "no header page",
            })?;
            return match Layout::parse(&hdr_view, len) {
                Ok(old) if old == *layout => Ok((fd, map, true)),
                Ok(_) => Err(refuse(
                    "it has another geometry than this configuration".into(),
                )),
                Err(e) => Err(refuse(format!("not a valid link area: {e}"))),
            };
        }
        let file = std::fs::File::from(fd);
        file.set_len(0)
            .and_then(|_| file.set_len(layout.total_len))
            .map_err(LinkError::io("size the persistent link area"))?;
        let fd = OwnedFd::from(file);
        let map = sys::Mapping::map(fd.as_fd(), layout.total_len as usize, false)
            .map_err(LinkError::io("mmap the persistent link area"))?;
        tracing::info!(path = %path.display(), bytes = layout.total_len, "persistent link area created");
        Ok((fd, map, false))
    }

    fn alloc(layout: &Layout, try_huge: bool) -> Result<(OwnedFd, sys::Mapping, bool), LinkError> {
        const HUGE: u64 = 2 << 20;
        if try_huge {
            let len = layout.total_len.div_ceil(HUGE) * HUGE;
            let huge = sys::memfd("naam-link", len, true)
                .and_then(|fd| sys::Mapping::map(fd.as_fd(), len as usize, true).map(|m| (fd, m)));
            match huge {
                Ok((fd, m)) => {
                    tracing::info!(bytes = len, "link area in huge pages (MFD_HUGETLB)");
                    return Ok((fd, m, true));
                }
                Err(e) => {
                    tracing::info!(error = %e, "MFD_HUGETLB unavailable; link area in normal pages")
                }
            }
        }
        let fd = sys::memfd("naam-link", layout.total_len, false)
            .map_err(LinkError::io("memfd_create"))?;
        let map = sys::Mapping::map(fd.as_fd(), layout.total_len as usize, false)
            .map_err(LinkError::io("mmap memfd"))?;
        tracing::info!(bytes = layout.total_len, "link area in normal pages");
        Ok((fd, map, false))
    }

    pub fn is_hugetlb(&self) -> bool {
        self.hugetlb
    }

    /// True when the area was reopened from `ShmConfig::persist` with its previous contents.
    pub fn is_restored(&self) -> bool {
        self.restored
    }

    pub fn layout(&self) -> &Layout {
        &self.area.layout
    }

    /// Registers a region: carves `spec.len` bytes (page-aligned) out of the arena and publishes
    /// the directory entry. Ids must be unique; memory of removed regions is not reused.
    pub fn register_region(&mut self, spec: RegionSpec) -> Result<DirEntry, LinkError> {
        let a = &self.area;
        let l = &a.layout;
        if spec.len == 0 {
            return Err(LinkError::Directory {
                reason: "zero-length region",
            });
        }
        if spec.id > naam_core::region::MAX_REGION_ID {
            return Err(LinkError::Directory {
                reason: "region id too large",
            });
        }
        if a.directory().iter().any(|e| e.desc.id == spec.id) {
            return Err(LinkError::Directory {
                reason: "region id already registered",
            });
        }
        let d = a.view(l.dir_off, l.max_regions as u64 * dir::SIZE)?;
        let slot = (0..l.max_regions as u64)
            .find(|i| d.load_u64(i * dir::SIZE + dir::STATE) != Some(dir::VALID))
            .ok_or(LinkError::Directory {
                reason: "directory full",
            })?;
        let used = a.host_dir().map_or(0, |d| d.arena_used);
        let len = spec.len.div_ceil(layout::PAGE) * layout::PAGE;
        if used.checked_add(len).is_none_or(|end| end > l.arena_len) {
            return Err(LinkError::Directory {
                reason: "arena exhausted",
            });
        }
        let offset = l.arena_off + used;
        a.hdr.store_u64(hdr::ARENA_USED, used + len);
        let e = slot * dir::SIZE;
        d.store_u64(e + dir::ID, spec.id as u64);
        d.store_u64(e + dir::TENANT, spec.tenant as u64);
        d.store_u64(e + dir::PERMS, spec.perms.bits() as u64);
        d.store_u64(e + dir::KEY, spec.key);
        d.store_u64(e + dir::OFFSET, offset);
        d.store_u64(e + dir::LEN, spec.len);
        d.store_u64(e + dir::STATE, dir::VALID);
        let entry = DirEntry {
            desc: spec.desc(),
            offset,
            rkey: 0,
        };
        if let Some(mut h) = a.host_dir_mut() {
            h.entries.push(entry);
            h.arena_used = used + len;
        }
        a.hdr.faa(hdr::DIR_EPOCH, 1);
        tracing::info!(region = spec.id, tenant = spec.tenant, len = spec.len, perms = %spec.perms, "region registered");
        Ok(entry)
    }

    /// Removes a region from the directory (its bytes stay allocated).
    pub fn unregister_region(&mut self, id: RegionId) -> Result<(), LinkError> {
        let a = &self.area;
        let l = &a.layout;
        let d = a.view(l.dir_off, l.max_regions as u64 * dir::SIZE)?;
        for i in 0..l.max_regions as u64 {
            let e = i * dir::SIZE;
            if d.load_u64(e + dir::STATE) == Some(dir::VALID)
                && d.load_u64(e + dir::ID) == Some(id as u64)
            {
                d.store_u64(e + dir::STATE, 0);
                if let Some(mut h) = a.host_dir_mut() {
                    h.entries.retain(|e| e.desc.id != id);
                }
                a.hdr.faa(hdr::DIR_EPOCH, 1);
                return Ok(());
            }
        }
        Err(LinkError::Directory {
            reason: "no such region",
        })
    }

    pub fn directory(&self) -> Vec<DirEntry> {
        self.area.directory()
    }

    pub fn region_table(&self) -> RegionTable {
        self.area.table_and_memory().0
    }

    /// The host's [`Memory`] over every registered region (refreshes itself when the
    /// directory changes).
    pub fn memory(&self) -> ShmMemory {
        ShmMemory::new(self.area.clone(), None)
    }

    /// Region `id`'s bytes, for building application data.
    pub fn region(&self, id: RegionId) -> Option<ShmRegion> {
        let e = self
            .area
            .directory()
            .into_iter()
            .find(|e| e.desc.id == id)?;
        let mem = self.area.view(e.offset, e.desc.len).ok()?;
        Some(ShmRegion {
            _area: self.area.clone(),
            entry: e,
            mem,
        })
    }

    /// Writes every registered region (description and bytes) to `w`; returns how many. Each
    /// word is read atomically, but the whole is a consistent cut only if writers are quiet.
    pub fn write_snapshot(&self, w: &mut dyn std::io::Write) -> Result<usize, LinkError> {
        let mut w = Crc::new(w);
        let err = LinkError::io("write snapshot");
        let dir = self.area.directory();
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&SNAPSHOT_MAGIC.to_le_bytes());
        out.extend_from_slice(&(dir.len() as u64).to_le_bytes());
        w.write_all(&out).map_err(err)?;
        let mut chunk = vec![0u8; 1 << 16];
        for e in &dir {
            let d = e.desc;
            let mut h = Vec::with_capacity(40);
            for v in [
                d.id as u64,
                d.tenant as u64,
                d.perms.bits() as u64,
                d.key,
                d.len,
            ] {
                h.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&h).map_err(LinkError::io("write snapshot"))?;
            let mem = self.area.view(e.offset, d.len)?;
            let mut at = 0u64;
            while at < d.len {
                let n = (d.len - at).min(chunk.len() as u64) as usize;
                mem.read(at, &mut chunk[..n]);
                w.write_all(&chunk[..n])
                    .map_err(LinkError::io("write snapshot"))?;
                at += n as u64;
            }
        }
        let sum = w.sum();
        w.inner
            .write_all(&sum.to_le_bytes())
            .map_err(LinkError::io("write snapshot"))?;
        Ok(dir.len())
    }

    /// Registers the regions saved by [`ShmHost::write_snapshot`] and fills them; returns how
    /// many. Ids already registered are refused. A snapshot that is cut short, corrupt (its
    /// checksum) or of another format is refused whole: the regions it had registered are
    /// removed again.
    pub fn restore_snapshot(&mut self, r: &mut dyn std::io::Read) -> Result<usize, LinkError> {
        let mut added = Vec::new();
        let result = self.restore_regions(&mut Crc::new(r), &mut added);
        if result.is_err() {
            for id in added {
                let _ = self.unregister_region(id);
            }
        }
        result
    }

    fn restore_regions(
        &mut self,
        r: &mut Crc<&mut dyn std::io::Read>,
        added: &mut Vec<RegionId>,
    ) -> Result<usize, LinkError> {
        fn word(r: &mut dyn std::io::Read) -> Result<u64, LinkError> {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).map_err(|e| LinkError::Snapshot {
                reason: format!("cut short ({e})"),
            })?;
            Ok(u64::from_le_bytes(b))
        }
        let refuse = |reason: &str| LinkError::Snapshot {
            reason: reason.to_owned(),
        };
        match word(r)? {
            SNAPSHOT_MAGIC => {}
            SNAPSHOT_MAGIC_V1 => {
                return Err(refuse(
                    "format 1 has no checksum; write a new snapshot with this version",
                ))
            }
            _ => return Err(refuse("not a link snapshot (wrong magic)")),
        }
        let n = word(r)?;
        if n > self.area.layout.max_regions as u64 {
            return Err(refuse("snapshot has more regions than the directory holds"));
        }
        let mut chunk = vec![0u8; 1 << 16];
        for _ in 0..n {
            let (id, tenant, perms, key, len) = (word(r)?, word(r)?, word(r)?, word(r)?, word(r)?);
            let (Ok(id), Ok(tenant)) = (u32::try_from(id), u32::try_from(tenant)) else {
                return Err(refuse("snapshot region id or tenant out of range"));
            };
            let spec = RegionSpec {
                id,
                tenant,
                len,
                perms: Perms::from_bits(perms as u8),
                key,
            };
            // The bytes follow each header: register and fill before reading the next header.
            let e = self.register_region(spec)?;
            added.push(id);
            let mem = self.area.view(e.offset, len)?;
            let mut at = 0u64;
            while at < len {
                let k = (len - at).min(chunk.len() as u64) as usize;
                r.read_exact(&mut chunk[..k])
                    .map_err(|e| LinkError::Snapshot {
                        reason: format!("cut short in region {id} ({e})"),
                    })?;
                mem.write(at, &chunk[..k]);
                at += k as u64;
            }
        }
        let sum = r.sum();
        if word(&mut r.inner)? != sum {
            return Err(refuse("checksum mismatch: the file is corrupt"));
        }
        Ok(added.len())
    }

    /// Host worker `qp`'s end of its queue pair (consumes requests, produces replies).
    pub fn qp(&self, qp: u32) -> Result<ShmQp, LinkError> {
        ShmQp::new(
            self.area.clone(),
            qp,
            Dir::ToNic,
            Dir::ToHost,
            None,
            self.staging_bytes,
            self.cq_depth,
        )
    }

    pub fn load_publisher(&self) -> LoadPublisher {
        LoadPublisher {
            area: self.area.clone(),
        }
    }

    /// Listens for dataplanes on a Unix socket at `path` (a stale socket file is replaced).
    pub fn serve(&mut self, path: &Path) -> Result<(), LinkError> {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).map_err(LinkError::io("bind link socket"))?;
        l.set_nonblocking(true)
            .map_err(LinkError::io("set link socket non-blocking"))?;
        tracing::info!(path = %path.display(), "link socket listening");
        self.listener = Some((l, path.to_owned()));
        Ok(())
    }

    /// Non-blocking: notices a dataplane that went away, and accepts a new one when none is
    /// connected (one dataplane at a time: a second one waits in the listen backlog until the
    /// first disconnects). Call it regularly (every few ms) from the host agent's control loop.
    /// Replies queued for a dead dataplane stay in the rings and reach its successor, which
    /// should drop replies to requests it does not know.
    pub fn poll_peer(&mut self) -> Result<PeerEvent, LinkError> {
        if let Some(s) = &self.peer {
            if sys::peer_hung_up(s.as_fd()) {
                self.peer = None;
                tracing::warn!("dataplane disconnected; waiting for the next one");
                return Ok(PeerEvent::Disconnected);
            }
            return Ok(PeerEvent::Nothing);
        }
        let Some((l, _)) = &self.listener else {
            return Ok(PeerEvent::Nothing);
        };
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)
                    .map_err(LinkError::io("link socket blocking mode"))?;
                let generation = self.hand_over(&s)?;
                self.peer = Some(s);
                tracing::info!(generation, "dataplane connected");
                Ok(PeerEvent::Connected { generation })
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(PeerEvent::Nothing),
            Err(e) => Err(LinkError::Io {
                what: "accept dataplane",
                source: e,
            }),
        }
    }

    /// True while a dataplane is connected (as of the last [`ShmHost::poll_peer`]).
    pub fn has_peer(&self) -> bool {
        self.peer.is_some()
    }

    /// Connects a dataplane in this process through a socket pair (tests, single-process runs).
    /// It replaces any connected dataplane.
    pub fn connect_local(&mut self, opts: ConnectOptions) -> Result<ShmLink, LinkError> {
        let (a, b) = UnixStream::pair().map_err(LinkError::io("socketpair"))?;
        self.hand_over(&a)?;
        self.peer = Some(a);
        ShmLink::from_stream(b, opts)
    }

    /// Sends the area to a connected dataplane: a hello and the memfd plus doorbells.
    fn hand_over(&self, s: &UnixStream) -> Result<u64, LinkError> {
        let a = &self.area;
        let generation = a.hdr.faa(hdr::GENERATION, 1).unwrap_or(0) + 1;
        a.hdr.store_u64(hdr::HEARTBEAT_NS, sys::monotonic_ns());
        let mut hello = [0u8; HELLO_LEN];
        hello[..8].copy_from_slice(&HELLO_MAGIC.to_le_bytes());
        hello[8..16].copy_from_slice(&a.layout.total_len.to_le_bytes());
        hello[16..24].copy_from_slice(&generation.to_le_bytes());
        let mut fds = vec![a.memfd.as_raw_fd()];
        fds.extend(a.doorbells.iter().map(|d| d.as_raw_fd()));
        sys::send_with_fds(s, &hello, &fds).map_err(LinkError::io("send link descriptors"))?;
        Ok(generation)
    }

    /// The whole shared area, for snapshots and fault-injection tests.
    pub fn raw(&self) -> RegionMem {
        // The mapping is at least the layout's size by construction.
        self.area
            .map
            .view(0, self.area.layout.total_len)
            .expect("whole mapping")
    }
}

impl crate::LinkHost for ShmHost {
    fn register_region(&mut self, spec: RegionSpec) -> Result<DirEntry, LinkError> {
        ShmHost::register_region(self, spec)
    }

    fn directory(&self) -> Vec<DirEntry> {
        ShmHost::directory(self)
    }
}

impl Drop for ShmHost {
    fn drop(&mut self) {
        if let Some((_, path)) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A registered region's bytes (keeps the area mapped while held).
pub struct ShmRegion {
    _area: Arc<Area>,
    pub entry: DirEntry,
    mem: RegionMem,
}

impl ShmRegion {
    pub fn mem(&self) -> &RegionMem {
        &self.mem
    }
}

/// Liveness of the host as seen by the dataplane.
struct PeerWatch {
    sock: UnixStream,
    area: Arc<Area>,
    stale_ns: u64,
    /// 0 alive; otherwise an encoded [`GoneReason`].
    gone: AtomicU64,
    last_poll_ns: AtomicU64,
}

const POLL_EVERY_NS: u64 = 1_000_000;

impl PeerWatch {
    fn encode(r: GoneReason) -> u64 {
        match r {
            GoneReason::SocketClosed => 1,
            GoneReason::Transport => 2,
        }
    }

    fn decode(v: u64) -> GoneReason {
        match v {
            1 => GoneReason::SocketClosed,
            _ => GoneReason::Transport,
        }
    }

    /// The cheap check: has anyone seen the peer gone?
    fn gone(&self) -> Option<GoneReason> {
        match self.gone.load(Ordering::Acquire) {
            0 => None,
            v => Some(Self::decode(v)),
        }
    }

    /// Gone (sticky: the socket closed) or suspect (not sticky: the heartbeat is late now).
    fn check(&self, now_ns: u64) -> Result<(), LinkError> {
        if let Some(reason) = self.gone() {
            return Err(LinkError::PeerGone { reason });
        }
        let last = self.last_poll_ns.load(Ordering::Relaxed);
        if now_ns.wrapping_sub(last) >= POLL_EVERY_NS {
            self.last_poll_ns.store(now_ns, Ordering::Relaxed);
            if sys::peer_hung_up(self.sock.as_fd()) {
                let reason = GoneReason::SocketClosed;
                if self
                    .gone
                    .compare_exchange(0, Self::encode(reason), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    tracing::warn!(%reason, "host agent gone");
                }
                return Err(LinkError::PeerGone {
                    reason: self.gone().unwrap_or(reason),
                });
            }
        }
        let age = now_ns.saturating_sub(self.area.get(hdr::HEARTBEAT_NS));
        if self.stale_ns > 0 && age > self.stale_ns {
            return Err(LinkError::PeerSuspect {
                age_ms: age / 1_000_000,
            });
        }
        Ok(())
    }
}

/// The dataplane's side: the mapped area of one host agent connection.
pub struct ShmLink {
    area: Arc<Area>,
    peer: Arc<PeerWatch>,
    generation: u64,
    opts: ConnectOptions,
}

impl ShmLink {
    /// Connects to a host agent's link socket and maps its area.
    pub fn connect(path: &Path, opts: ConnectOptions) -> Result<ShmLink, LinkError> {
        let s = UnixStream::connect(path)
            .map_err(LinkError::io("connect to the host agent's link socket"))?;
        Self::from_stream(s, opts)
    }

    /// Completes the setup on an already connected socket.
    pub fn from_stream(s: UnixStream, opts: ConnectOptions) -> Result<ShmLink, LinkError> {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(LinkError::io("socket timeout"))?;
        let mut hello = [0u8; HELLO_LEN];
        let (n, mut fds) = sys::recv_with_fds(&s, &mut hello)
            .map_err(LinkError::io("receive link descriptors"))?;
        let word =
            |i: usize| u64::from_le_bytes(hello[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        if n != HELLO_LEN || word(0) != HELLO_MAGIC || fds.is_empty() {
            return Err(LinkError::Layout {
                reason: "bad hello from the host agent",
            });
        }
        let (total_len, generation) = (word(1), word(2));
        let memfd = fds.remove(0);
        if !sys::cannot_shrink(memfd.as_fd()) {
            tracing::warn!(
                "the host agent's area is not sealed against shrinking (a persistent area?)"
            );
        }
        let file_len = sys::file_len(memfd.as_fd()).map_err(LinkError::io("fstat memfd"))?;
        if total_len > file_len || total_len < layout::PAGE {
            return Err(LinkError::Layout {
                reason: "announced size does not fit the memfd",
            });
        }
        // Map the whole file: a hugetlb memfd is a whole number of huge pages.
        let map_len = usize::try_from(file_len).map_err(|_| LinkError::Layout {
            reason: "area too large",
        })?;
        let map = sys::Mapping::map(memfd.as_fd(), map_len, false)
            .map_err(LinkError::io("mmap memfd"))?;
        let hdr_view = map.view(0, layout::PAGE).ok_or(LinkError::Layout {
            reason: "no header page",
        })?;
        let layout = Layout::parse(&hdr_view, total_len)?;
        if fds.len() != layout.qps as usize * 2 {
            return Err(LinkError::Layout {
                reason: "doorbell count does not match the queue pairs",
            });
        }
        let area = Area::new(map, layout, memfd, fds, false)?;
        let peer = Arc::new(PeerWatch {
            sock: s,
            area: area.clone(),
            stale_ns: opts.stale_after.as_nanos() as u64,
            gone: AtomicU64::new(0),
            last_poll_ns: AtomicU64::new(0),
        });
        tracing::info!(
            generation,
            qps = layout.qps,
            bytes = total_len,
            "connected to the host agent"
        );
        Ok(ShmLink {
            area,
            peer,
            generation,
            opts,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.area.layout
    }

    /// Which dataplane connection this is for the host agent (1 for the first).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn directory(&self) -> Vec<DirEntry> {
        self.area.directory()
    }

    /// Changes whenever the host registers or removes a region.
    pub fn directory_epoch(&self) -> u64 {
        self.area.get(hdr::DIR_EPOCH)
    }

    /// The region table for checking handler ops (rebuild it when the epoch changes).
    pub fn region_table(&self) -> RegionTable {
        self.area.table_and_memory().0
    }

    /// The NIC's direct path to host memory: a [`Memory`] that executes checked ops on the
    /// mapped regions and fails with `MemError::Unavailable` once the host is gone.
    pub fn memory(&self) -> ShmMemory {
        ShmMemory::new(self.area.clone(), Some(self.peer.clone()))
    }

    /// The dataplane's end of queue pair `qp` (produces requests, consumes replies).
    pub fn qp(&self, qp: u32) -> Result<ShmQp, LinkError> {
        ShmQp::new(
            self.area.clone(),
            qp,
            Dir::ToHost,
            Dir::ToNic,
            Some(self.peer.clone()),
            self.opts.staging_bytes,
            self.opts.cq_depth,
        )
    }

    /// Host worker `worker`'s last published load; `None` for an unknown worker.
    pub fn read_load(&self, worker: u32) -> Option<LoadReport> {
        self.area.read_load(worker)
    }

    /// The host heartbeat (CLOCK_MONOTONIC ns).
    pub fn heartbeat_ns(&self) -> u64 {
        self.area.get(hdr::HEARTBEAT_NS)
    }

    /// Non-blocking liveness check. Gone (the socket closed) is for good: every queue pair and
    /// memory of this link reports it; reconnect with [`ShmLink::connect`]. Suspect (the
    /// heartbeat is older than `stale_after`; the host agent stamps it with
    /// [`LoadPublisher::publish`] or `heartbeat` every few milliseconds) lasts only while the
    /// heartbeat is late: queue pairs and memory keep working meanwhile, since a stalled host
    /// agent's memory is still mapped.
    pub fn check_peer(&self, now_ns: u64) -> Result<(), LinkError> {
        self.peer.check(now_ns)
    }
}

/// [`Memory`] over the shared regions: the synchronous path a NIC worker uses to run handler
/// ops on host memory. Ops were checked against a region table; the views are re-checked
/// against the mapping, so a stale table can never reach outside it.
pub struct ShmMemory {
    area: Arc<Area>,
    peer: Option<Arc<PeerWatch>>,
    epoch: u64,
    mem: LocalMemory,
}

impl ShmMemory {
    fn new(area: Arc<Area>, peer: Option<Arc<PeerWatch>>) -> Self {
        let epoch = area.get(hdr::DIR_EPOCH);
        let (_, mem) = area.table_and_memory();
        ShmMemory {
            area,
            peer,
            epoch,
            mem,
        }
    }

    /// Re-reads the directory if it changed (allocates then; call outside the hot loop, or
    /// let `execute` do it on the first op after a change).
    pub fn refresh(&mut self) {
        let epoch = self.area.get(hdr::DIR_EPOCH);
        if epoch != self.epoch {
            self.epoch = epoch;
            self.mem = self.area.table_and_memory().1;
        }
    }

    /// Views of the mapped regions.
    pub fn local(&self) -> &LocalMemory {
        &self.mem
    }
}

impl Memory for ShmMemory {
    fn execute(&mut self, op: &CheckedOp, data: &mut [u8; DATA_SIZE]) -> Result<u64, MemError> {
        if let Some(p) = &self.peer {
            if p.gone().is_some() {
                return Err(MemError::Unavailable {
                    reason: "host agent gone",
                });
            }
        }
        self.refresh();
        self.mem.execute(op, data)
    }
}

/// One queue pair over shared memory. Completions are immediate but still go through the
/// completion queue, so code written against [`Link`] works unchanged over verbs.
pub struct ShmQp {
    area: Arc<Area>,
    qp: u32,
    peer: Option<Arc<PeerWatch>>,
    tx: Producer,
    rx: Consumer,
    /// Backs `local`; lives as long as the queue pair.
    _staging: OwnedRegion,
    local: RegionMem,
    epoch: u64,
    table: RegionTable,
    mem: LocalMemory,
    cq: Box<[Completion]>,
    cq_head: usize,
    cq_len: usize,
    counters: LinkCounters,
}

impl ShmQp {
    fn new(
        area: Arc<Area>,
        qp: u32,
        tx: Dir,
        rx: Dir,
        peer: Option<Arc<PeerWatch>>,
        staging_bytes: usize,
        cq_depth: usize,
    ) -> Result<ShmQp, LinkError> {
        area.take_qp(qp)?;
        let rings = area.ring(qp, tx).and_then(|t| Ok((t, area.ring(qp, rx)?)));
        let (t, r) = match rings {
            Ok(v) => v,
            Err(e) => {
                area.taken[qp as usize].store(false, Ordering::Release);
                return Err(e);
            }
        };
        let staging = OwnedRegion::zeroed(staging_bytes);
        let local = staging.mem();
        let epoch = area.get(hdr::DIR_EPOCH);
        let (table, mem) = area.table_and_memory();
        Ok(ShmQp {
            qp,
            peer,
            tx: Producer::new(t),
            rx: Consumer::new(r),
            _staging: staging,
            local,
            epoch,
            table,
            mem,
            cq: vec![Completion::default(); cq_depth.max(1)].into_boxed_slice(),
            cq_head: 0,
            cq_len: 0,
            counters: LinkCounters::default(),
            area,
        })
    }

    pub fn index(&self) -> u32 {
        self.qp
    }

    /// The receive ring's doorbell, for a worker that sleeps on several queue pairs at once
    /// (epoll): call [`ShmQp::arm_rx_doorbell`] first, sleep only if it returned true, and
    /// [`ShmQp::disarm_rx_doorbell`] after waking.
    pub fn rx_doorbell(&self) -> BorrowedFd<'_> {
        self.rx.doorbell()
    }

    /// Asks the peer to ring the receive doorbell on its next send; false when something is
    /// already waiting (then do not sleep).
    pub fn arm_rx_doorbell(&mut self) -> bool {
        self.rx.arm()
    }

    pub fn disarm_rx_doorbell(&mut self) {
        self.rx.disarm()
    }

    /// Requests waiting on this queue pair's receive ring (the host worker's queue depth).
    pub fn rx_pending(&mut self) -> u64 {
        self.rx.pending()
    }

    fn peer_ok(&mut self) -> Result<(), LinkError> {
        match self.peer.as_ref().and_then(|p| p.gone()) {
            None => Ok(()),
            Some(reason) => {
                self.counters.peer_gone += 1;
                Err(LinkError::PeerGone { reason })
            }
        }
    }

    fn refresh_directory(&mut self) {
        let epoch = self.area.get(hdr::DIR_EPOCH);
        if epoch != self.epoch {
            self.epoch = epoch;
            (self.table, self.mem) = self.area.table_and_memory();
        }
    }

    fn complete(&mut self, c: Completion) {
        let i = (self.cq_head + self.cq_len) % self.cq.len();
        self.cq[i] = c;
        self.cq_len += 1;
    }

    /// Checks everything a post needs and returns the region view and the checked op.
    fn prepare(
        &mut self,
        kind: naam_core::abi::OpKind,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
        arg0: u64,
        arg1: u64,
    ) -> Result<(RegionMem, CheckedOp), LinkError> {
        self.peer_ok()?;
        if self.cq_len == self.cq.len() {
            self.counters.cq_full += 1;
            return Err(LinkError::CqFull {
                depth: self.cq.len(),
            });
        }
        if matches!(
            kind,
            naam_core::abi::OpKind::Read | naam_core::abi::OpKind::Write
        ) {
            let size = self.local.len() as u64;
            if local_off
                .checked_add(len as u64)
                .is_none_or(|end| end > size)
            {
                self.counters.refused += 1;
                return Err(LinkError::LocalOutOfRange {
                    offset: local_off,
                    len: len as u64,
                    size,
                });
            }
        }
        self.refresh_directory();
        let raw = RawOp {
            kind: kind as u8,
            region: remote.region,
            offset: remote.offset,
            len,
            data_off: 0,
            arg0,
            arg1,
        };
        let checked = self.table.check_keyed(remote.key, &raw).map_err(|e| {
            if matches!(e, OpError::BadKey { .. }) {
                self.counters.bad_key += 1;
            } else {
                self.counters.refused += 1;
            }
            LinkError::Refused(e)
        })?;
        let mem = *self.mem.get(remote.region).ok_or(LinkError::Unmapped {
            region: remote.region,
        })?;
        Ok((mem, checked))
    }

    fn copy(
        &mut self,
        kind: OpKind,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
    ) -> Result<(), LinkError> {
        let core_kind = if kind == OpKind::Read {
            naam_core::abi::OpKind::Read
        } else {
            naam_core::abi::OpKind::Write
        };
        let (mem, op) = self.prepare(core_kind, remote, local_off, len, 0, 0)?;
        if kind == OpKind::WriteDoorbell && !self.tx.has_space() {
            self.counters.ring_full += 1;
            return Err(LinkError::Full {
                slots: self.tx.slots(),
            });
        }
        // check_keyed bounds len by DATA_SIZE, so one stack buffer carries any op.
        let mut buf = [0u8; DATA_SIZE];
        let buf = &mut buf[..len as usize];
        let ok = if kind == OpKind::Read {
            mem.read(op.offset, buf) && self.local.write(local_off, buf)
        } else {
            self.local.read(local_off, buf) && mem.write(op.offset, buf)
        };
        if !ok {
            return Err(LinkError::Unmapped {
                region: remote.region,
            });
        }
        self.counters.posted += 1;
        self.complete(Completion {
            wr_id,
            kind,
            status: CompletionStatus::Success,
            value: 0,
            len,
        });
        Ok(())
    }
}

impl Drop for ShmQp {
    fn drop(&mut self) {
        self.area.taken[self.qp as usize].store(false, Ordering::Release);
    }
}

impl Link for ShmQp {
    fn local(&self) -> &RegionMem {
        &self.local
    }

    fn direct(&mut self) -> Result<Option<Direct<'_>>, LinkError> {
        self.peer_ok()?;
        self.refresh_directory();
        Ok(Some(Direct {
            table: &self.table,
            mem: &mut self.mem,
        }))
    }

    fn post_read(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
    ) -> Result<(), LinkError> {
        self.copy(OpKind::Read, wr_id, remote, local_off, len)
    }

    fn post_write(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
    ) -> Result<(), LinkError> {
        self.copy(OpKind::Write, wr_id, remote, local_off, len)
    }

    fn post_write_doorbell(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
        imm: u32,
    ) -> Result<(), LinkError> {
        self.copy(OpKind::WriteDoorbell, wr_id, remote, local_off, len)?;
        // Space was checked before the write and only this queue pair produces on the ring.
        self.tx.push(&[], Some(imm))?;
        self.counters.doorbells_rung += 1;
        Ok(())
    }

    fn post_cas(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        expected: u64,
        desired: u64,
    ) -> Result<(), LinkError> {
        let (mem, op) =
            self.prepare(naam_core::abi::OpKind::Cas, remote, 0, 8, expected, desired)?;
        let value = mem
            .cas(op.offset, expected, desired)
            .ok_or(LinkError::Unmapped {
                region: remote.region,
            })?;
        self.counters.posted += 1;
        self.complete(Completion {
            wr_id,
            kind: OpKind::Cas,
            status: CompletionStatus::Success,
            value,
            len: 8,
        });
        Ok(())
    }

    fn post_faa(&mut self, wr_id: WrId, remote: RemoteAddr, add: u64) -> Result<(), LinkError> {
        let (mem, op) = self.prepare(naam_core::abi::OpKind::Faa, remote, 0, 8, add, 0)?;
        let value = mem.faa(op.offset, add).ok_or(LinkError::Unmapped {
            region: remote.region,
        })?;
        self.counters.posted += 1;
        self.complete(Completion {
            wr_id,
            kind: OpKind::Faa,
            status: CompletionStatus::Success,
            value,
            len: 8,
        });
        Ok(())
    }

    fn poll_completions(&mut self, out: &mut [Completion]) -> usize {
        let n = out.len().min(self.cq_len);
        for slot in out.iter_mut().take(n) {
            *slot = self.cq[self.cq_head];
            self.cq_head = (self.cq_head + 1) % self.cq.len();
        }
        self.cq_len -= n;
        self.counters.completed += n as u64;
        n
    }

    fn send(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        self.peer_ok()?;
        match self.tx.push(msg, None) {
            Ok(()) => {
                self.counters.sent += 1;
                Ok(())
            }
            Err(e) => {
                if matches!(e, LinkError::Full { .. }) {
                    self.counters.ring_full += 1;
                }
                Err(e)
            }
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<Received>, LinkError> {
        match self.rx.pop(buf) {
            Ok(Some(r)) => {
                self.counters.received += 1;
                Ok(Some(r))
            }
            Ok(None) => {
                // Entries already in the ring are still delivered after the peer died; only
                // an empty ring reports it.
                self.peer_ok()?;
                Ok(None)
            }
            Err(e) => {
                if matches!(e, LinkError::Corrupt { .. }) {
                    self.counters.corrupt += 1;
                    tracing::warn!(qp = self.qp, error = %e, "corrupt ring entry skipped");
                }
                Err(e)
            }
        }
    }

    fn wait_recv(&mut self, backoff: &Backoff) {
        self.rx.wait(backoff);
    }

    fn check_peer(&mut self, now_ns: u64) -> Result<(), LinkError> {
        match &self.peer {
            None => Ok(()),
            Some(p) => p.check(now_ns).inspect_err(|e| {
                if e.is_peer_gone() {
                    self.counters.peer_gone += 1;
                }
            }),
        }
    }

    fn counters(&self) -> LinkCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn handles_move_to_worker_threads() {
        // Queue pairs and memories are per worker (Send); links and publishers are shared.
        send::<ShmQp>();
        send::<ShmMemory>();
        send::<ShmHost>();
        send_sync::<ShmLink>();
        send_sync::<LoadPublisher>();
        send_sync::<ShmRegion>();
    }

    #[test]
    fn gone_reasons_round_trip_through_the_flag_word() {
        for r in [GoneReason::SocketClosed, GoneReason::Transport] {
            assert_eq!(PeerWatch::decode(PeerWatch::encode(r)), r);
        }
    }
}
