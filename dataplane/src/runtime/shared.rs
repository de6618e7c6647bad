//! State shared by the workers, the load monitor and the control socket: the offload
//! registry, the committed steering table, the placement hints, the region table of the
//! current link, and the host-liveness flag. Workers read it with relaxed atomic loads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use naam_core::auth::Capabilities;
use naam_core::pool::Registry;
use naam_core::region::RegionTable;

use crate::steering::soft::SoftTable;

/// Per class: until when clients are told to run it themselves (0 = no hint).
pub struct HintTable {
    lease_until_ns: Box<[AtomicU64]>,
}

impl HintTable {
    pub fn new(classes: u16) -> HintTable {
        HintTable {
            lease_until_ns: (0..classes).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Clients may run `class` until `until_ns` (monotonic ns).
    pub fn set(&self, class: u16, until_ns: u64) {
        if let Some(a) = self.lease_until_ns.get(class as usize) {
            a.store(until_ns, Ordering::Relaxed);
        }
    }

    pub fn clear(&self, class: u16) {
        self.set(class, 0);
    }

    /// The remaining lease of `class` in milliseconds, if clients should run it now.
    #[inline]
    pub fn lease_ms(&self, class: u16, now_ns: u64) -> Option<u32> {
        let until = self
            .lease_until_ns
            .get(class as usize)?
            .load(Ordering::Relaxed);
        (until > now_ns).then(|| ((until - now_ns) / 1_000_000).clamp(1, u32::MAX as u64) as u32)
    }
}

/// The region table of the current link, republished when the host's directory changes or
/// the link is replaced. Workers check the epoch (one atomic load) each poll.
#[derive(Default)]
pub struct RegionsCell {
    epoch: AtomicU64,
    table: Mutex<Arc<RegionTable>>,
}

impl RegionsCell {
    pub fn publish(&self, table: RegionTable) {
        *self.table.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.epoch.fetch_add(1, Ordering::Release);
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<RegionTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Everything the workers share.
pub struct Shared {
    pub registry: Arc<Registry>,
    pub steering: Arc<SoftTable>,
    pub hints: HintTable,
    pub regions: RegionsCell,
    /// False while the host agent is gone (set by the monitor; workers also notice on their
    /// own link).
    pub host_up: AtomicBool,
    /// True while the host agent's heartbeat is late (stalled, not gone: DESIGN §10). Its
    /// memory stays in use; host-bound messages run on the NIC, control requests that need
    /// the host agent are refused at once. Set by the control thread.
    pub host_suspect: AtomicBool,
    /// The capabilities active messages must carry (from the host agent's key file).
    pub capabilities: Capabilities,
    /// Bumped when the monitor has connected a new link; worker threads then take their queue
    /// pair from it.
    pub link_generation: AtomicU64,
    /// Connection attempts that found a host agent this dataplane cannot use (it serves
    /// another dataplane, or has too few queue pairs).
    pub link_refused: AtomicU64,
    /// Whether the last connection attempt found such a host agent (a host agent serves the
    /// run directory: it is not gone, this dataplane cannot use it).
    pub host_refused: AtomicBool,
    /// Set to stop every thread.
    pub stop: AtomicBool,
    /// The NIC congestion injector (`DESCRIBE("congest-nic:<ms>")` on the control port):
    /// until this instant (monotonic ns) the workers' cores are taken by other work.
    pub nic_congest_until_ns: AtomicU64,
}

impl Shared {
    pub fn new(
        registry: Arc<Registry>,
        steering: Arc<SoftTable>,
        classes: u16,
        capabilities: Capabilities,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            registry,
            steering,
            hints: HintTable::new(classes),
            regions: RegionsCell::default(),
            host_up: AtomicBool::new(true),
            host_suspect: AtomicBool::new(false),
            capabilities,
            link_generation: AtomicU64::new(0),
            link_refused: AtomicU64::new(0),
            host_refused: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            nic_congest_until_ns: AtomicU64::new(0),
        })
    }

    pub fn host_up(&self) -> bool {
        self.host_up.load(Ordering::Relaxed)
    }

    pub fn host_suspect(&self) -> bool {
        self.host_suspect.load(Ordering::Relaxed)
    }

    /// Whether the NIC congestion injector holds the workers at `now_ns`.
    #[inline]
    pub fn nic_congested(&self, now_ns: u64) -> bool {
        now_ns < self.nic_congest_until_ns.load(Ordering::Relaxed)
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}
