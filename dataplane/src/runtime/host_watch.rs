//! The control thread's watch on the host agent: the current link, (re)connecting to it
//! off the control thread, its liveness and its published load.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use naam_core::abi::DATA_SIZE;
use naam_link::shm::ConnectOptions;
use naam_link::ShmLink;

use crate::runtime::monitor::HostLoad;
use crate::runtime::setup::{RuntimeConfig, SetupError};
use crate::runtime::shared::Shared;

/// The longest wait between two attempts that found the host agent unusable (another
/// dataplane attached, too few queue pairs): how late this dataplane notices that an operator
/// fixed it.
const REFUSED_EVERY_MAX: Duration = Duration::from_secs(2);

/// The current link, replaced on reconnection.
#[derive(Default)]
pub(super) struct LinkSlot {
    link: Mutex<Option<Arc<ShmLink>>>,
}

impl LinkSlot {
    pub(super) fn get(&self) -> Option<Arc<ShmLink>> {
        self.link.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn set(&self, l: Arc<ShmLink>) {
        *self.link.lock().unwrap_or_else(|e| e.into_inner()) = Some(l);
    }
}

pub(super) fn connect_opts(cfg: &RuntimeConfig) -> ConnectOptions {
    ConnectOptions {
        stale_after: cfg.stale_after,
        staging_bytes: cfg.slots.max(1) * DATA_SIZE,
        cq_depth: cfg.slots.max(1) * naam_core::abi::MAX_OPS,
    }
}

/// Connects to the host agent's link socket, trying again for up to `wait` while it is not
/// there; gives up at once when `stop` is set (a signal, or the starter gone), since a
/// dataplane waiting for a host agent must stop as promptly as one serving.
pub(super) fn connect_with_wait(
    path: &Path,
    opts: ConnectOptions,
    wait: Duration,
    stop: &AtomicBool,
) -> Result<ShmLink, SetupError> {
    let start = std::time::Instant::now();
    let mut logged = false;
    loop {
        if stop.load(Ordering::Acquire) {
            return Err(SetupError::Stopped);
        }
        match ShmLink::connect(path, opts) {
            Ok(l) => return Ok(l),
            // Not a path that a host agent starting later would fix (not a directory, no
            // permission): said now rather than after the whole wait.
            Err(e) if start.elapsed() < wait && e.may_pass() => {
                if !logged {
                    // Another dataplane attached is not a host agent starting: said louder,
                    // it lasts until that one stops.
                    if matches!(e, naam_link::LinkError::PeerTaken { .. }) {
                        tracing::warn!(path = %path.display(), error = %naam_core::with_sources(&e), wait_ms = wait.as_millis() as u64, "waiting for the other dataplane to stop");
                    } else {
                        tracing::info!(path = %path.display(), error = %naam_core::with_sources(&e), "waiting for the host agent");
                    }
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(SetupError::Link {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
}

/// The host's load from the link's load area.
pub(super) fn host_load(link: &ShmLink, alive: bool) -> HostLoad {
    if !alive {
        return HostLoad::GONE;
    }
    let slots = link.layout().load_slots;
    let (mut busy, mut queue, mut n, mut published_ns) = (0.0, 0u32, 0u32, 0u64);
    for k in 0..slots {
        if let Some(r) = link.read_load(k) {
            if r.beats == 0 {
                continue; // a slot no host worker publishes in
            }
            busy += r.busy_ppm as f64 / 1e6;
            queue = queue.saturating_add(r.queue_depth);
            published_ns = published_ns.max(r.ts_ns);
            n += 1;
        }
    }
    HostLoad {
        alive,
        busy: if n > 0 { busy / n as f64 } else { 0.0 },
        queue,
        workers: n.max(1),
        published_ns,
    }
}

/// The control thread's view of the host agent (DESIGN §10): alive, suspect (heartbeat late:
/// `Shared::host_suspect`, cleared when it returns) or gone (the link socket closed:
/// `Shared::host_up` false until a new link is installed). Reconnecting runs on a thread of
/// its own, since `ShmLink::connect` waits for the host agent's hand-over, so the control
/// port keeps answering throughout.
pub(super) struct HostWatch {
    dir_epoch: u64,
    last_attempt_ns: u64,
    reconnect: Option<mpsc::Receiver<Result<ShmLink, naam_link::LinkError>>>,
    /// Why the last attempts found a host agent this dataplane cannot use (another dataplane
    /// holds its link; too few queue pairs), said once when it starts, and how many attempts
    /// in a row did: they are spaced out, since only an operator ends them.
    refused: Option<String>,
    refused_in_a_row: u32,
    /// Whether the offload registry was reconciled with the host agent since the last
    /// (re)connection.
    pub(super) reconciled: bool,
    /// Not before this instant (a failed reconciliation is tried again, spaced out: each try
    /// can wait the host agent's control timeout).
    pub(super) reconcile_after_ns: u64,
    /// The last failure of a reconnection logged, and when.
    failure_said: Option<(String, u64)>,
}

/// How often the same failure to reconnect is logged again.
const FAILURE_SAID_EVERY_NS: u64 = 30_000_000_000;

impl HostWatch {
    pub(super) fn new(dir_epoch: u64) -> HostWatch {
        HostWatch {
            dir_epoch,
            last_attempt_ns: 0,
            reconnect: None,
            refused: None,
            refused_in_a_row: 0,
            reconciled: false,
            reconcile_after_ns: 0,
            failure_said: None,
        }
    }

    /// Checks the link, updates the shared flags, follows directory changes and drives the
    /// reconnect; returns whether the host agent is alive and answering.
    pub(super) fn watch(
        &mut self,
        now: u64,
        link: Option<&ShmLink>,
        shared: &Shared,
        links: &LinkSlot,
        link_path: &Path,
        cfg: &RuntimeConfig,
    ) -> bool {
        let state = link.map(|l| l.check_peer(now));
        let gone = match &state {
            None => true,
            Some(r) => r.as_ref().is_err_and(|e| e.is_peer_gone()),
        };
        let suspect = match &state {
            Some(Err(e)) if e.is_peer_suspect() => Some(e.to_string()),
            _ => None,
        };
        if gone && shared.host_up() {
            shared.host_up.store(false, Ordering::Release);
            tracing::warn!("host agent gone: host-bound messages get HostUnavailable");
        }
        if suspect.is_some() != shared.host_suspect() {
            shared
                .host_suspect
                .store(suspect.is_some(), Ordering::Release);
            match &suspect {
                Some(why) => tracing::warn!(
                    reason = %why,
                    "host agent suspect: host-bound messages run on the NIC until its heartbeat returns"
                ),
                None => tracing::info!("host agent's heartbeat is back"),
            }
        }
        match link {
            Some(l) if !gone => {
                let e = l.directory_epoch();
                if e != self.dir_epoch {
                    self.dir_epoch = e;
                    shared.regions.publish(l.region_table());
                }
            }
            _ => self.reconnect(now, shared, links, link_path, cfg),
        }
        !gone && suspect.is_none()
    }

    /// An attempt found a host agent this dataplane cannot use: counted, said once per
    /// reason, and the next attempts spaced out.
    fn refuse(&mut self, why: String, shared: &Shared) {
        shared.link_refused.fetch_add(1, Ordering::Relaxed);
        shared.host_refused.store(true, Ordering::Relaxed);
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        if self.refused.as_deref() != Some(why.as_str()) {
            tracing::error!("cannot use the host agent: {why}");
            self.refused = Some(why);
        }
    }

    /// The last attempt did not find an unusable host agent: the next refusal is said again
    /// and attempts are no longer spaced out.
    fn not_refused(&mut self, shared: &Shared) {
        self.refused = None;
        self.refused_in_a_row = 0;
        shared.host_refused.store(false, Ordering::Relaxed);
    }

    /// Starts a connection attempt every `reconnect_every`, and installs the one that succeeds.
    pub(super) fn reconnect(
        &mut self,
        now: u64,
        shared: &Shared,
        links: &LinkSlot,
        link_path: &Path,
        cfg: &RuntimeConfig,
    ) {
        use mpsc::TryRecvError;
        if let Some(rx) = &self.reconnect {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => self.reconnect = None,
                Ok(Err(naam_link::LinkError::PeerTaken { pid })) => {
                    self.reconnect = None;
                    self.refuse(
                        format!(
                            "the host agent serves another dataplane (pid {pid}): this one \
                             answers host-bound messages host_unavailable until that one stops"
                        ),
                        shared,
                    );
                }
                Ok(Err(e)) => {
                    // No host agent there yet is the usual case, not worth a line; anything
                    // else (out of descriptors, no permission) is what keeps this dataplane
                    // detached, said once per failure and again every half minute (probe 22:
                    // it was never said).
                    let text = e.to_string();
                    let said = self.failure_said.as_ref().is_some_and(|(t, at)| {
                        *t == text && now.saturating_sub(*at) < FAILURE_SAID_EVERY_NS
                    });
                    let usual = matches!(e, naam_link::LinkError::Io { .. }) && e.may_pass();
                    if usual || said {
                        tracing::debug!(error = %naam_core::with_sources(&e), "reconnect attempt failed");
                    } else {
                        tracing::warn!(error = %naam_core::with_sources(&e), "cannot reconnect to the host agent (tried again every few ms; the same failure is logged once per 30 s)");
                        self.failure_said = Some((text, now));
                    }
                    self.reconnect = None;
                    self.not_refused(shared);
                }
                Ok(Ok(l)) => {
                    self.reconnect = None;
                    let qps = l.layout().qps;
                    if (qps as usize) < cfg.workers.max(1) {
                        // Dropping `l` hands the link back.
                        self.refuse(
                            format!(
                                "the host agent has {qps} queue pairs for this dataplane's {} \
                                 workers: restart it with --nic-workers {} or more, or this \
                                 dataplane with --workers {qps}",
                                cfg.workers, cfg.workers
                            ),
                            shared,
                        );
                        return;
                    }
                    self.not_refused(shared);
                    self.dir_epoch = l.directory_epoch();
                    shared.regions.publish(l.region_table());
                    let generation = l.generation();
                    links.set(Arc::new(l));
                    shared.link_generation.fetch_add(1, Ordering::AcqRel);
                    shared.host_suspect.store(false, Ordering::Release);
                    shared.host_up.store(true, Ordering::Release);
                    tracing::info!(generation, qps, "reconnected to the host agent");
                    self.failure_said = None;
                    self.reconciled = false;
                    self.reconcile_after_ns = 0;
                    return;
                }
            }
        }
        // Attempts refused in a row are spaced out, doubling up to REFUSED_EVERY_MAX.
        let every = cfg
            .reconnect_every
            .saturating_mul(1 << self.refused_in_a_row.min(5))
            .min(REFUSED_EVERY_MAX.max(cfg.reconnect_every));
        if now.saturating_sub(self.last_attempt_ns) < every.as_nanos() as u64 {
            return;
        }
        self.last_attempt_ns = now;
        let (tx, rx) = mpsc::channel();
        let (path, opts) = (link_path.to_owned(), connect_opts(cfg));
        let spawned = std::thread::Builder::new()
            .name("naam-reconnect".into())
            .spawn(move || {
                let _ = tx.send(ShmLink::connect(&path, opts));
            });
        match spawned {
            Ok(_) => self.reconnect = Some(rx),
            Err(e) => tracing::warn!(error = %e, "cannot start a reconnect attempt"),
        }
    }
}
