//! The host agent's side: creates the area, registers regions, serves dataplanes on a Unix
//! socket and hands out queue pairs.

use super::admission::{Admission, PeerRefusals};
use super::{
    area::{directory_coherent, Area, HostDir},
    ConnectOptions, LoadPublisher, ShmConfig, ShmLink, ShmMemory, ShmQp, HELLO_LEN, HELLO_MAGIC,
};
use crate::error::LinkError;
use crate::layout::{self, dir, hdr, Dir, Layout};
use crate::{sys, DirEntry, RegionSpec};
use naam_core::memory::RegionMem;
use naam_core::region::{RegionId, RegionTable};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A hold on the dataplane's use of host memory ([`ShmHost::hold_dataplane`]), lifted on
/// drop.
pub struct DataplaneHold<'a> {
    area: Option<&'a Arc<Area>>,
    n: u64,
    complete: bool,
}

impl DataplaneHold<'_> {
    /// Whether every queue pair of the dataplane in use held when asked (or none is
    /// connected).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Whether every queue pair in use still holds: one that held longer than it may (1 s)
    /// has gone on, and what was copied since is no cut.
    pub fn kept(&self) -> bool {
        let Some(a) = self.area else {
            return true;
        };
        self.complete
            && (0..a.layout.qps)
                .map(|qp| a.get(hdr::held(qp)))
                .all(|v| v == 0 || v == self.n)
    }
}

impl Drop for DataplaneHold<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.area {
            a.hdr.store_u64(hdr::HOLD, 0);
        }
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
    pub(super) area: Arc<Area>,
    hugetlb: bool,
    restored: bool,
    staging_bytes: usize,
    cq_depth: usize,
    /// The link socket, where it is and the file it made there.
    listener: Option<(UnixListener, PathBuf, naam_core::run_dir::FileId)>,
    /// Connections that have not said they are a dataplane yet.
    admission: Admission,
    /// The connected dataplane and its pid.
    peer: Option<(UnixStream, u64)>,
    /// With a persisted area, `FILE.lock`, locked while this host serves the file: a second
    /// host agent on the same file would serve the same memory to another dataplane.
    _persist_lock: Option<std::fs::File>,
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
        let lock = cfg
            .persist
            .as_deref()
            .map(|p| naam_core::run_dir::beside(p, ".lock"));
        let lock_was_there = lock.as_deref().is_some_and(Path::exists);
        let persist_lock = cfg
            .persist
            .as_deref()
            .zip(lock.as_deref())
            .map(|(path, lock)| Self::lock_file(path, lock))
            .transpose()?;
        let (fd, map, hugetlb, restored) = match &cfg.persist {
            Some(path) => {
                let (fd, map, restored) = Self::open_file(path, &layout).inspect_err(|_| {
                    // A file that is not an area (a mistyped path): no lock left beside it.
                    if let Some(lock) = lock.as_deref().filter(|_| !lock_was_there) {
                        let _ = std::fs::remove_file(lock);
                    }
                })?;
                tracing::warn!(
                    path = %path.display(),
                    "a persisted area is a plain file, which cannot be sealed as a memfd is: a dataplane could shrink it (keep it on a tmpfs such as /dev/shm, writable only by the host agent)"
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
            // write it too, and the file can be damaged: take it only if it is what the host
            // agent wrote and coherent, as the private directory. An entry skipped here
            // (damaged) would have its application built afresh over its kept data, and the
            // next snapshot overwritten with that (probe 20).
            let sum = area.get(hdr::DIR_SUM);
            if let (true, Some(path)) = (sum != 0 && sum != area.directory_sum(), &cfg.persist) {
                return Err(LinkError::Persist {
                    path: path.clone(),
                    reason: "its region directory is not what its host agent wrote \
                             (checksum): damaged, or edited"
                        .into(),
                });
            }
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
            // An area of a version before the checksum gets one now, taken as it was found.
            area.seal_directory();
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
            area.hdr.store_u64(hdr::DATA_STATE, hdr::DATA_BUILDING);
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
            admission: Admission::default(),
            peer: None,
            _persist_lock: persist_lock,
        })
    }

    /// Takes `FILE.lock` beside a persisted area (its own file: the area's descriptor is
    /// handed to the dataplane, whose copy would keep a lock on the area itself after this
    /// process is gone, and refuse the restarted host agent).
    fn lock_file(path: &Path, lock: &Path) -> Result<std::fs::File, LinkError> {
        let refuse = |reason: String| LinkError::Persist {
            path: path.to_owned(),
            reason,
        };
        // Nothing to move away when the folder is missing: said as such, before the lock's
        // "No such file or directory" names a file the operator never made.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            return Err(LinkError::PersistDir {
                path: path.to_owned(),
                dir: dir.to_owned(),
            });
        }
        let file = sys::open_private(lock, libc::O_NOFOLLOW)
            .map_err(|e| refuse(format!("open {}: {e}", lock.display())))?;
        match sys::try_lock_exclusive(file.as_fd()) {
            Ok(true) => Ok(file),
            Ok(false) => Err(LinkError::PersistInUse {
                path: path.to_owned(),
                lock: lock.to_owned(),
            }),
            Err(e) => Err(refuse(format!("lock {}: {e}", lock.display()))),
        }
    }

    /// Opens (or creates) a file-backed area. Returns whether existing contents were kept.
    fn open_file(
        path: &Path,
        layout: &Layout,
    ) -> Result<(OwnedFd, Arc<sys::Mapping>, bool), LinkError> {
        // Every failure names the file.
        let io = |what: &'static str| {
            move |e: std::io::Error| LinkError::Persist {
                path: path.to_owned(),
                reason: format!("{what}: {e}"),
            }
        };
        let file = sys::open_private(path, 0).map_err(io("open"))?;
        let meta = file.metadata().map_err(io("stat"))?;
        if !meta.is_file() {
            return Err(LinkError::Persist {
                path: path.to_owned(),
                reason: "not a regular file".into(),
            });
        }
        // The mode of `open` applies only to a file it creates: one made beforehand (`touch`)
        // keeps its own, and would show every tenant's data and the regions' keys to others.
        // Changed once the file is taken as an area (a mistyped path's file is left as it is).
        let mode = meta.permissions().mode() & 0o777;
        let restrict = |fd: OwnedFd| -> Result<OwnedFd, LinkError> {
            if mode & 0o077 == 0 {
                return Ok(fd);
            }
            let file = std::fs::File::from(fd);
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io("chmod 0600"))?;
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the persistent link area was open to other users: its mode is now 0600");
            Ok(OwnedFd::from(file))
        };
        let len = meta.len();
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
            // Its pages are written in place: all of them backed now, or a clear refusal
            // (not a SIGBUS at the first write to a hole once the filesystem is full).
            sys::allocate(fd.as_fd(), len)
                .map_err(|e| refuse(format!("no room for all of it ({e})")))?;
            let map = sys::Mapping::map(fd.as_fd(), len as usize, false).map_err(io("mmap"))?;
            let hdr_view = map.view(0, layout::PAGE).ok_or(LinkError::Layout {
                reason: "no header page",
            })?;
            match Layout::parse(&hdr_view, len) {
                Ok(old) if old == *layout => {
                    if hdr_view.load_u64(hdr::DATA_STATE) != Some(hdr::DATA_BUILDING) {
                        return Ok((restrict(fd)?, map, true));
                    }
                    // Its host stopped while building the data, before it served it: half a
                    // table kept as data would be served as if whole.
                    tracing::warn!(path = %path.display(), "the persisted area was never completely built (its host agent stopped while building it): built afresh");
                }
                Ok(_) => {
                    return Err(refuse(
                        "it has another geometry than this configuration".into(),
                    ))
                }
                Err(e) => return Err(refuse(format!("not a valid link area: {e}"))),
            }
        }
        let file = std::fs::File::from(restrict(fd)?);
        file.set_len(0)
            .and_then(|_| file.set_len(layout.total_len))
            .map_err(io("size"))?;
        sys::allocate(file.as_fd(), layout.total_len)
            .map_err(|e| refuse(format!("no room for it ({e})")))?;
        let fd = OwnedFd::from(file);
        let map =
            sys::Mapping::map(fd.as_fd(), layout.total_len as usize, false).map_err(io("mmap"))?;
        tracing::info!(path = %path.display(), bytes = layout.total_len, "persistent link area created");
        Ok((fd, map, false))
    }

    fn alloc(
        layout: &Layout,
        try_huge: bool,
    ) -> Result<(OwnedFd, Arc<sys::Mapping>, bool), LinkError> {
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

    /// Says that the data of the area is built ([`hdr::DATA_STATE`]); serving it
    /// ([`ShmHost::serve`], [`ShmHost::connect_local`]) says so too. Until then a persisted
    /// area reopened is built afresh: its host stopped while building it.
    pub fn data_ready(&self) {
        self.area.hdr.store_u64(hdr::DATA_STATE, hdr::DATA_READY);
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
        // Checked: a length near 2^64 (a damaged snapshot's) would round up past it.
        let len = spec.len.div_ceil(layout::PAGE).checked_mul(layout::PAGE);
        let Some(len) =
            len.filter(|len| used.checked_add(*len).is_some_and(|end| end <= l.arena_len))
        else {
            return Err(LinkError::Directory {
                reason: "arena exhausted",
            });
        };
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
        a.seal_directory();
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
                a.seal_directory();
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
        self.data_ready();
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).map_err(LinkError::io("bind link socket"))?;
        l.set_nonblocking(true)
            .map_err(LinkError::io("set link socket non-blocking"))?;
        tracing::info!(path = %path.display(), "link socket listening");
        let id = naam_core::run_dir::file_id(path).map_err(LinkError::io("stat link socket"))?;
        self.listener = Some((l, path.to_owned(), id));
        Ok(())
    }

    /// Non-blocking: notices a dataplane that went away, and accepts a new one when none is
    /// connected (one dataplane at a time: one that asks while another is connected is told
    /// so, with that one's pid). A connection becomes the dataplane only once it has asked
    /// (`admission`): a silent or foreign one is closed within
    /// [`super::admission::ASK_WITHIN`]. Call it
    /// regularly (every few ms) from the host agent's control loop. Replies queued for a
    /// dead dataplane stay in the rings and reach its successor, which should drop replies
    /// to requests it does not know.
    pub fn poll_peer(&mut self) -> Result<PeerEvent, LinkError> {
        if let Some((s, _)) = &self.peer {
            if sys::peer_hung_up(s.as_fd()) {
                self.peer = None;
                // The host agent says it (once, not for every quick retry of a dataplane
                // that cannot use it).
                tracing::debug!("dataplane disconnected; waiting for the next one");
                return Ok(PeerEvent::Disconnected);
            }
        }
        let Some((l, _, _)) = &self.listener else {
            return Ok(PeerEvent::Nothing);
        };
        let now = std::time::Instant::now();
        while let Some(asked) = self
            .admission
            .poll(l, now)
            .map_err(LinkError::io("accept dataplane"))?
        {
            if let Some((_, peer_pid)) = self.peer {
                self.admission.turn_away(asked, peer_pid);
                continue;
            }
            let generation = self.hand_over(&asked.sock)?;
            // The host agent says it (once per dataplane that stays).
            tracing::debug!(generation, pid = asked.pid, "dataplane connected");
            self.peer = Some((asked.sock, asked.pid));
            return Ok(PeerEvent::Connected { generation });
        }
        Ok(PeerEvent::Nothing)
    }

    /// Stops serving dataplanes: no new one is accepted (the listening socket is closed and its
    /// file removed) and the connected one's connection is closed, which it notices within
    /// about a millisecond of polling (its workers then stop reaching host memory and answer
    /// "host agent gone"). True when a dataplane was connected. A shutdown calls it before its
    /// last snapshot, so that no write acknowledged by the dataplane lands after the cut.
    pub fn stop_serving(&mut self) -> bool {
        if let Some((_, path, id)) = self.listener.take() {
            naam_core::run_dir::remove_own(&path, id);
        }
        match self.peer.take() {
            Some((s, _)) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
                true
            }
            None => false,
        }
    }

    /// Asks the connected dataplane to execute nothing on host memory until the returned
    /// hold is dropped (a snapshot's consistent cut: its handlers write host memory
    /// themselves, without the host's workers). Each of its queue pairs in use answers
    /// between two of its polls, within a poll's time; [`DataplaneHold::complete`] says
    /// whether all did within `wait`. A dataplane holds at most 1 s, and not at all without
    /// this request: a hostile one gains nothing from it.
    pub fn hold_dataplane(&self, wait: std::time::Duration) -> DataplaneHold<'_> {
        let a = &self.area;
        if self.peer.is_none() {
            return DataplaneHold {
                area: None,
                n: 0,
                complete: true,
            };
        }
        // Unique per hold, never 0 or HELD_NONE.
        let n = sys::monotonic_ns().clamp(1, hdr::HELD_NONE - 1);
        a.hdr.store_u64(hdr::HOLD, n);
        let start = std::time::Instant::now();
        let complete = loop {
            let waiting = (0..a.layout.qps)
                .map(|qp| a.get(hdr::held(qp)))
                .any(|v| v != 0 && v != n);
            if !waiting {
                break true;
            }
            if start.elapsed() > wait {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_micros(20));
        };
        DataplaneHold {
            area: Some(a),
            n,
            complete,
        }
    }

    /// Connections to the link socket closed without becoming the dataplane, by reason.
    pub fn refused_peers(&self) -> PeerRefusals {
        self.admission.refused
    }

    /// True while a dataplane is connected (as of the last [`ShmHost::poll_peer`]).
    pub fn has_peer(&self) -> bool {
        self.peer.is_some()
    }

    /// Connects a dataplane in this process through a socket pair (tests, single-process runs).
    /// It replaces any connected dataplane.
    pub fn connect_local(&mut self, opts: ConnectOptions) -> Result<ShmLink, LinkError> {
        self.data_ready();
        let (a, b) = UnixStream::pair().map_err(LinkError::io("socketpair"))?;
        self.hand_over(&a)?;
        self.peer = Some((a, u64::from(sys::pid())));
        ShmLink::from_stream(b, opts)
    }

    /// Sends the area to a connected dataplane: a hello and the memfd plus doorbells.
    fn hand_over(&self, s: &UnixStream) -> Result<u64, LinkError> {
        let a = &self.area;
        // The last dataplane's queue pairs answer no more.
        a.hdr.store_u64(hdr::HOLD, 0);
        for qp in 0..a.layout.qps {
            a.hdr.store_u64(hdr::held(qp), 0);
        }
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
        if let Some((_, path, id)) = &self.listener {
            naam_core::run_dir::remove_own(path, *id);
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
