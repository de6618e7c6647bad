//! State shared by the workers, the load monitor and the control socket: the offload
//! registry, the committed steering table, the placement hints, the region table of the
//! current link, the host-liveness flag, and the host agent's offloads still to be added.
//! Workers read it with relaxed atomic loads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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

/// What a worker may tell a client about an offload it does not hold: the host agent's
/// offloads a dataplane lacks (after its start, or the host agent's restart from a store)
/// are added over a while ([`super::control::ControlPlane::readd`]: seconds for thousands),
/// and an active message for one of them meanwhile is "not executed, retry", not
/// `unknown_offload`, which a client takes as final.
pub struct PendingOffloads {
    /// Whether anything is pending: the only load a worker pays on the way to
    /// `unknown_offload` otherwise.
    any: AtomicBool,
    /// Read by workers (only while `any`), written by the control thread.
    state: RwLock<PendingState>,
}

#[derive(Default)]
struct PendingState {
    /// No host agent has listed its offloads to this process yet: any run-time id may be
    /// one of them.
    unlisted: bool,
    /// Listed, being added (sorted).
    adding: Vec<u32>,
    /// About how long adding them takes.
    retry_after_ns: u64,
}

/// Why an offload a worker does not hold may still come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// The host agent's offloads are not known yet (`host_unavailable`).
    Unlisted,
    /// It is being added; retry in about this long (`busy`).
    Adding { retry_after_ns: u64 },
}

impl PendingOffloads {
    /// Nothing pending (a process that serves its own offloads alone).
    pub fn none() -> Self {
        PendingOffloads {
            any: AtomicBool::new(false),
            state: RwLock::new(PendingState::default()),
        }
    }

    fn update(&self, f: impl FnOnce(&mut PendingState)) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        self.any
            .store(s.unlisted || !s.adding.is_empty(), Ordering::Release);
    }

    /// Until [`PendingOffloads::adding`]: every run-time id may be one of the host agent's
    /// (at start, and when a listing failed; what was listed before stays pending).
    pub fn unlisted(&self) {
        self.update(|s| s.unlisted = true);
    }

    /// The host agent listed its offloads: `ids` are to be added, in about `retry_after_ns`.
    pub fn adding(&self, ids: impl IntoIterator<Item = u32>, retry_after_ns: u64) {
        self.update(|s| {
            s.unlisted = false;
            s.adding.clear();
            s.adding.extend(ids);
            s.adding.sort_unstable();
            s.retry_after_ns = retry_after_ns;
        });
    }

    /// `id` was added (call after the registry has it), refused or unregistered.
    pub fn done(&self, id: u32, retry_after_ns: u64) {
        self.update(|s| {
            if let Ok(i) = s.adding.binary_search(&id) {
                s.adding.remove(i);
            }
            s.retry_after_ns = retry_after_ns;
        });
    }

    /// Whether `id` (not in the registry) may still come.
    pub fn get(&self, id: u32) -> Option<Pending> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        if s.adding.binary_search(&id).is_ok() {
            Some(Pending::Adding {
                retry_after_ns: s.retry_after_ns,
            })
        } else if s.unlisted && id >= super::control::FIRST_DYNAMIC_ID {
            Some(Pending::Unlisted)
        } else {
            None
        }
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
    /// The host agent's offloads not added yet (set by the control thread).
    pub pending: PendingOffloads,
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
            pending: PendingOffloads::none(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::control::FIRST_DYNAMIC_ID;

    #[test]
    fn pending_offloads_follow_the_listing_and_the_re_add() {
        let p = PendingOffloads::none();
        assert_eq!(
            p.get(FIRST_DYNAMIC_ID),
            None,
            "a process of its own offloads"
        );
        p.unlisted();
        assert_eq!(p.get(FIRST_DYNAMIC_ID), Some(Pending::Unlisted));
        assert_eq!(p.get(FIRST_DYNAMIC_ID - 1), None, "bundled ids are known");
        assert_eq!(p.get(u32::MAX), Some(Pending::Unlisted));
        p.adding([50, 20, 30], 7);
        let adding = Some(Pending::Adding { retry_after_ns: 7 });
        assert_eq!((p.get(20), p.get(30), p.get(50)), (adding, adding, adding));
        assert_eq!(p.get(40), None, "listed, and not the host agent's");
        p.done(30, 5);
        assert_eq!(p.get(30), None);
        assert_eq!(p.get(20), Some(Pending::Adding { retry_after_ns: 5 }));
        // A listing that failed: what was listed stays pending, the rest may come.
        p.unlisted();
        assert_eq!(p.get(20), Some(Pending::Adding { retry_after_ns: 5 }));
        assert_eq!(p.get(40), Some(Pending::Unlisted));
        // A new listing replaces all of it.
        p.adding([], 5);
        assert_eq!((p.get(20), p.get(40)), (None, None));
        assert!(!p.any.load(Ordering::Relaxed), "nothing left to look up");
    }
}
