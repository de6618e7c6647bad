//! Host load and heartbeat: written by host workers, read by the dataplane's placement policy.

use super::area::Area;
use crate::layout::{hdr, load};
use std::sync::Arc;

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
    pub(super) area: Arc<Area>,
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
