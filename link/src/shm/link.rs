//! The dataplane's side: the mapped area of one host agent connection and the memory view
//! NIC workers run handler ops on.

use super::{
    area::Area, peer::PeerWatch, ConnectOptions, LoadReport, ShmQp, BUSY_MAGIC, HELLO_LEN,
    HELLO_MAGIC,
};
use crate::error::LinkError;
use crate::layout::{self, hdr, Dir, Layout};
use crate::{sys, DirEntry};
use naam_core::abi::DATA_SIZE;
use naam_core::memory::{LocalMemory, MemError, Memory};
use naam_core::region::{CheckedOp, RegionTable};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

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
    pub fn from_stream(mut s: UnixStream, opts: ConnectOptions) -> Result<ShmLink, LinkError> {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(LinkError::io("socket timeout"))?;
        super::admission::ask(&mut s).map_err(LinkError::io("ask the host agent for its area"))?;
        let mut hello = [0u8; HELLO_LEN];
        let (n, mut fds) = sys::recv_with_fds(&s, &mut hello)
            .map_err(LinkError::io("receive link descriptors"))?;
        let word =
            |i: usize| u64::from_le_bytes(hello[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        if n == HELLO_LEN && word(0) == BUSY_MAGIC {
            return Err(LinkError::PeerTaken { pid: word(1) });
        }
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
        // The caller says whether it uses the link (a dataplane with more workers than
        // queue pairs hands it back at once, and retries).
        tracing::debug!(
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
    pub(super) fn new(area: Arc<Area>, peer: Option<Arc<PeerWatch>>) -> Self {
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
