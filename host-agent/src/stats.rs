//! Counters of the host agent: per host worker and per offload (issue 5 item 5).
//!
//! Each worker owns its [`WorkerCounters`] (one writer, relaxed atomics on its own cache
//! lines) and increments the shared [`OffloadCounters`] of the offloads it runs. The control
//! thread reads everything into named values for STATS replies (`worker.K.NAME`,
//! `offload.ID.host_NAME`, `host.NAME`).

use naam_core::pool::OffloadId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        #[repr(align(64))]
        pub struct $name {
            $($(#[$fm])* pub $field: AtomicU64,)*
        }

        impl $name {
            /// (name, value) of every counter.
            pub fn read(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters!(
    /// One host worker's counters.
    WorkerCounters {
        /// Active messages executed (whatever their outcome).
        messages,
        /// Handler steps run.
        steps,
        /// Messages that ended in an error reply from the executor (isolation, budget, VM, ...).
        errors,
        /// Messages whose handler aborted.
        aborted,
        /// Nanoseconds spent handling ring entries (busy time).
        busy_ns,
        /// Replies pushed onto the reply rings.
        replies,
        /// Ring entries the link found corrupt (skipped; no token to answer).
        corrupt_entries,
        /// Entries too short to carry a token (dropped: nobody to answer).
        short_entries,
        /// Datagrams that did not parse (answered with bad_request / bad_version).
        bad_datagrams,
        /// Datagrams of a kind host workers do not run (answered with unsupported).
        wrong_kind,
        /// Requests for an offload this host does not have.
        unknown_offload,
        /// Requests whose tenant does not own the offload, or whose class is not the offload's.
        refused,
        /// Doorbell entries on a request ring (ignored).
        doorbells,
        /// Reply pushes that found the ring full (the reply is kept and retried).
        reply_ring_full,
        /// Link errors other than the above.
        link_errors,
        /// Times the worker went to sleep on its doorbells.
        sleeps,
        /// Milliseconds spent congested by the injector (busy, not serving).
        congested_ms,
        /// Load publications.
        publishes,
    }
);

counters!(
    /// One offload's counters, summed over the workers; reported as `offload.ID.host_NAME`
    /// (the dataplane reports its own as `offload.ID.nic_NAME`).
    OffloadCounters {
        /// Messages that ended here (whatever their outcome).
        runs,
        steps,
        errors,
        aborted,
        /// Nanoseconds spent on the offload's messages (VM and ops).
        run_ns,
    }
);

counters!(
    /// The control socket's counters, reported as `control.NAME`.
    ControlCounters {
        /// Datagrams received on control connections.
        requests,
        /// Replies that could not be sent: the client does not read them (its connection is
        /// closed then, one log line, rather than a line per request).
        replies_unsent,
        /// Connections closed, the one idle the longest, to take a new one past
        /// `control::MAX_CONNS`.
        connections_closed_idle,
        /// Connections that could not be accepted (out of descriptors, say).
        accept_errors,
        /// Errors of the link socket (where dataplanes attach): accepting one, or its
        /// handshake.
        link_errors,
    }
);

/// All counters of a host agent.
#[derive(Debug)]
pub struct Stats {
    /// The control socket's (its loop is the only writer).
    pub control: ControlCounters,
    workers: Box<[WorkerCounters]>,
    offloads: Mutex<BTreeMap<OffloadId, Arc<OffloadCounters>>>,
}

impl Stats {
    pub fn new(workers: usize) -> Arc<Stats> {
        Arc::new(Stats {
            control: ControlCounters::default(),
            workers: (0..workers).map(|_| WorkerCounters::default()).collect(),
            offloads: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn worker(&self, k: usize) -> &WorkerCounters {
        &self.workers[k]
    }

    pub fn workers(&self) -> &[WorkerCounters] {
        &self.workers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<OffloadId, Arc<OffloadCounters>>> {
        // Every change is one map operation, so a poisoned map is still consistent.
        self.offloads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters of offload `id`, created on first use (workers call it when their VM
    /// pool changes, never per message).
    pub fn offload(&self, id: OffloadId) -> Arc<OffloadCounters> {
        self.lock().entry(id).or_default().clone()
    }

    /// Forgets an unregistered offload's counters (a later offload with the same id starts
    /// from zero).
    pub fn remove_offload(&self, id: OffloadId) {
        self.lock().remove(&id);
    }

    /// Every counter as `(name, value)`: `worker.K.*`, then `offload.ID.*`, then the totals
    /// `host.*` over the workers.
    pub fn named(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (k, w) in self.workers.iter().enumerate() {
            for (name, v) in w.read() {
                out.push((format!("worker.{k}.{name}"), v));
                *totals.entry(name).or_default() += v;
            }
        }
        let offloads: Vec<_> = self.lock().iter().map(|(id, c)| (*id, c.clone())).collect();
        for (id, c) in offloads {
            let values = c.read();
            // An offload that never ran here says nothing: thousands of idle offloads made
            // every STATS (the dataplane asks four times a second) rebuild tens of thousands
            // of names (the probe of 2026-12-06: 83 % of a core with no traffic).
            if values.iter().all(|(_, v)| *v == 0) {
                continue;
            }
            for (name, v) in values {
                out.push((format!("offload.{id}.host_{name}"), v));
            }
        }
        for (name, v) in totals {
            out.push((format!("host.{name}"), v));
        }
        for (name, v) in self.control.read() {
            out.push((format!("control.{name}"), v));
        }
        out
    }
}

pub use naam_core::counter::bump;

/// Adds to a counter shared by several writers.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_counters_cover_workers_offloads_and_totals() {
        let s = Stats::new(2);
        bump(&s.worker(0).messages, 3);
        bump(&s.worker(1).messages, 4);
        add(&s.offload(5).steps, 7);
        let named = s.named();
        let get = |n: &str| named.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("worker.0.messages"), Some(3));
        assert_eq!(get("worker.1.messages"), Some(4));
        assert_eq!(get("host.messages"), Some(7));
        assert_eq!(get("offload.5.host_steps"), Some(7));
        s.remove_offload(5);
        assert_eq!(s.offload(5).steps.load(Ordering::Relaxed), 0);
        assert!(named
            .iter()
            .all(|(k, _)| k.len() <= naam_core::wire::NAME_MAX));
    }
}
