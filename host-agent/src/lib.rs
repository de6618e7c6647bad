//! The NAAM host agent: owns the data and runs the messages the NIC hands it (DESIGN §2, §6;
//! the contract with the dataplane is `docs/runtime.md`).
//!
//! [`HostAgent::start`] creates the shared link area, registers the bundled applications'
//! regions (fixed ids, random keys, tenant 1), builds their data or keeps what a persisted area
//! or a snapshot holds, registers the bundled offloads (fixed ids) and any `--handler`
//! objects through the verifier, starts the host workers ([`workers`]) and opens `link.sock`
//! and `control.sock` in the run directory. [`HostAgent::run`] is the control loop (accepts
//! dataplanes, stamps the heartbeat, serves the control socket) until a stop is asked for;
//! [`HostAgent::shutdown`] stops the workers, writes the snapshot when configured and removes
//! the sockets.
//!
//! The binary, `naam-host-agent`, takes these flags (and a TOML file with the same keys,
//! `--config FILE`): `--run-dir DIR`, `--workers K` (host workers, 1), `--nic-workers N` (queue
//! pairs, 2), `--arena-mb` (what the data need, at least 64), `--mica-keys`, `--value-size`, `--mica-lossless`,
//! `--btree-keys`, `--records`, `--seed`, `--handler FILE.o[:SECTION]` (repeatable),
//! `--snapshot FILE`, `--persist FILE`, `--backoff spin|yield` (yield), `--no-hugetlb`,
//! `--ring-slots` (256). Logs: `RUST_LOG`.
//!
//! ```no_run
//! use naam_host_agent::{Config, HostAgent};
//! use std::sync::atomic::AtomicBool;
//! let mut agent = HostAgent::start(Config::default())?;
//! agent.run(&AtomicBool::new(false))?; // until SIGTERM sets the flag or a shutdown request
//! agent.shutdown()?;
//! # Ok::<(), naam_host_agent::AgentError>(())
//! ```

#![deny(unsafe_code)]

pub mod apps;
pub mod config;
pub mod control;
pub mod credentials;
pub mod offload_store;
mod private_file;
pub mod program;
pub mod seqpacket;
pub mod stats;
#[allow(unsafe_code)]
mod sys;
pub mod workers;

pub use config::{BackoffMode, Config, ConfigError, HandlerSpec};
pub use control::ControlClient;

use apps::{AppRegion, Params, BUNDLED_TENANT};
use naam_core::auth::{wall_clock_ns, Principal};
use naam_core::pool::{OffloadId, OffloadSpec, Registry, RegistryError, MAX_OFFLOADS};
use naam_core::verifier::{verify, VerifierConfig};
use naam_core::vm::{CompiledVm, Engine};
use naam_core::wire::{ErrorCode, Message};
use naam_link::{RegionSpec, ShmConfig, ShmHost};
use stats::Stats;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use workers::{Shared, WorkerSetup};

/// Why the host agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Metrics(#[from] naam_metrics::MetricsError),
    #[error(transparent)]
    Link(#[from] naam_link::LinkError),
    #[error(transparent)]
    App(#[from] apps::AppError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("offload {name:?}: {reason}")]
    Offload { name: String, reason: String },
    /// The run-time offloads kept for restarts could not be restored (the error names the
    /// file).
    #[error(transparent)]
    OffloadStore(#[from] offload_store::StoreError),
    #[error(
        "application {app}: the kept data ({kept}) holds its regions {present:?} but not \
         {missing:?}: damaged, or written by another version; move it away to start afresh"
    )]
    PartialApp {
        app: &'static str,
        /// Where the data came from: the persisted area or the snapshot, named.
        kept: String,
        present: Vec<u32>,
        missing: Vec<u32>,
    },
    #[error("the workers did not park within {ms} ms for the snapshot")]
    NotQuiet { ms: u64 },
    #[error("another host agent is serving {run_dir}")]
    Running { run_dir: PathBuf },
    #[error(
        "snapshot {}: another host agent uses it (it holds {}); give each its own",
        path.display(),
        lock.display()
    )]
    SnapshotInUse { path: PathBuf, lock: PathBuf },
    #[error("no snapshot file is configured (--snapshot)")]
    NoSnapshotFile,
    /// The snapshot file could not be restored (nothing of it is kept).
    #[error("snapshot {path} (move it away to start afresh)")]
    Restore {
        path: PathBuf,
        #[source]
        source: naam_link::LinkError,
    },
    #[error("credentials {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
}

/// The log of dataplanes attaching and leaving. One that leaves within [`QUICK_LEAVE`] of
/// attaching, again and again, is a dataplane that cannot use this host agent (more workers
/// than queue pairs) and retries every 2 s: said once, not three lines each time (probe 12:
/// 61 lines in 10 s).
#[derive(Default)]
struct AttachLog {
    since: Option<Instant>,
    quick_leaves: u32,
}

/// A log line said at most once per period: a condition that repeats every turn of a loop
/// (out of descriptors) gets one line, not thousands a second (probe 22: 4 GB in 10 min).
pub(crate) struct LogEvery {
    every: Duration,
    last: Option<Instant>,
}

impl LogEvery {
    pub(crate) const fn new(every: Duration) -> LogEvery {
        LogEvery { every, last: None }
    }

    /// Whether to log now (and, if so, not again for a period).
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        let due = self
            .last
            .is_none_or(|t| now.duration_since(t) >= self.every);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// A dataplane gone this soon after attaching did not start serving.
const QUICK_LEAVE: Duration = Duration::from_secs(1);

impl AttachLog {
    fn attached(&mut self, generation: u64, now: Instant) {
        self.since = Some(now);
        if self.quick_leaves == 0 {
            tracing::info!(generation, "dataplane attached");
        } else {
            tracing::debug!(generation, "dataplane attached");
        }
    }

    fn gone(&mut self, now: Instant) {
        let quick = self.since.take().is_some_and(|t| now - t < QUICK_LEAVE);
        if !quick {
            self.quick_leaves = 0;
            tracing::warn!("dataplane gone; data kept, waiting for the next one");
            return;
        }
        self.quick_leaves += 1;
        if self.quick_leaves == 1 {
            tracing::warn!(
                "a dataplane left right after attaching (one that cannot use this host agent, \
                 e.g. more workers than --nic-workers, says why in its own log and retries): \
                 its next attempts are not logged"
            );
        } else {
            tracing::debug!(
                n = self.quick_leaves,
                "a dataplane left right after attaching"
            );
        }
    }
}

/// Looks, once a second, whether this host agent's sockets are still where clients and
/// dataplanes find them. Someone who deletes the run directory (a cleanup script, a second
/// deployment's) leaves it running, still serving an attached dataplane, but nobody can
/// reach it any more and a second host agent could start there: said once, loudly.
#[derive(Default)]
struct SocketWatch {
    next: Option<std::time::Instant>,
    said: bool,
}

impl SocketWatch {
    const EVERY: Duration = Duration::from_secs(1);

    fn look(&mut self, cfg: &Config) {
        let now = std::time::Instant::now();
        if self.next.is_some_and(|t| now < t) {
            return;
        }
        self.next = Some(now + Self::EVERY);
        let gone = [cfg.link_socket(), cfg.control_socket()]
            .into_iter()
            .find(|p| std::fs::symlink_metadata(p).is_err());
        match gone {
            Some(p) if !self.said => {
                self.said = true;
                tracing::error!(
                    socket = %p.display(),
                    "this host agent's socket was removed (its run directory deleted?): no dataplane or client can connect any more, and another host agent could start there; an attached dataplane is still served. Stop this one and start it again"
                );
            }
            None => self.said = false,
            _ => {}
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

/// A running host agent.
pub struct HostAgent {
    cfg: Config,
    host: ShmHost,
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Describe parameters of the applications, by name.
    apps: Vec<(&'static str, Params)>,
    /// The applications and their regions, for the counters read at each STATS.
    live_apps: Vec<(Box<dyn apps::App>, Vec<AppRegion>)>,
    /// Taken out while a request is served (the handlers read the rest of the agent).
    control: Option<control::ControlServer>,
    /// The control socket's file as this agent made it: removed at the end only if it is
    /// still that one (not another agent's, started after the run directory was deleted).
    control_file: naam_core::run_dir::FileId,
    started: Instant,
    /// Dataplane connections so far (as of the last poll).
    generation: u64,
    restored: Restored,
    stopped: bool,
    /// Opens sealed control requests (docs/security.md).
    gate: std::sync::Mutex<naam_core::auth::Gate>,
    /// STATS lists being paged through, per principal (the dataplane's counter watch walks
    /// them four times a second).
    stats_lists: std::sync::Mutex<naam_core::counter::Snapshots<naam_core::auth::Principal>>,
    /// Prometheus metrics (`--metrics-addr`), answered by the control loop.
    metrics: Option<naam_metrics::Exporter>,
    /// Where run-time offloads are kept, when the data outlives this process.
    offloads: Option<offload_store::OffloadStore>,
    /// Where the search for the next run-time offload's id starts: ids go up and are reused
    /// only once the id space wraps, so a client still calling a removed offload is told it
    /// is gone instead of running the next registration's program.
    next_offload: std::sync::atomic::AtomicU32,
    /// `RUN_DIR/host-agent.lock`, locked while this agent runs.
    _run_lock: std::fs::File,
    /// `SNAPSHOT.lock` beside `--snapshot`, locked while this agent runs.
    _snapshot_lock: Option<std::fs::File>,
}

/// Where the data came from at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// Built from the configuration.
    Built,
    /// The persisted area (`--persist`) was reopened with its contents.
    Persisted,
    /// Loaded from the snapshot file (`--snapshot`).
    Snapshot,
}

impl HostAgent {
    /// Sets everything up and starts the workers; see the crate docs for the order.
    pub fn start(cfg: Config) -> Result<HostAgent, AgentError> {
        HostAgent::start_unless(cfg, &AtomicBool::new(false))
    }

    /// [`HostAgent::start`], given up with [`apps::AppError::Stopped`] when `stop` is set
    /// while the applications' data is built (what takes long: seconds at millions of keys).
    /// A persisted area left half-built says so in its header and is built afresh next time.
    pub fn start_unless(cfg: Config, stop: &AtomicBool) -> Result<HostAgent, AgentError> {
        cfg.validate()?;
        // Keys and sockets go there: only this user may use it (docs/security.md).
        naam_core::run_dir::prepare(&cfg.run_dir).map_err(|reason| ConfigError::Invalid {
            key: "run-dir",
            reason,
        })?;
        // Two agents in one run directory would steal each other's sockets and write over
        // each other's key files: the one that locks `host-agent.lock` first runs (two
        // started at once both found no control socket answering, and both ran). An agent
        // of a version before the lock is still found by its control socket.
        let lock_path = cfg.run_dir.join(naam_core::run_dir::HOST_AGENT_LOCK);
        let run_lock = private_file::try_lock(&lock_path)
            .map_err(io_err(format!("lock {}", lock_path.display())))?;
        let Some(run_lock) =
            run_lock.filter(|_| seqpacket::SeqConn::connect(&cfg.control_socket()).is_err())
        else {
            return Err(AgentError::Running {
                run_dir: cfg.run_dir.clone(),
            });
        };
        // Two agents given one snapshot file (in two run directories) wrote over each
        // other's at shutdown and restored the other's data and offloads (probe 20), as
        // `--persist` prevents with its own lock. Taking it also writes beside the snapshot
        // at start: a directory where the shutdown could not write it (`/proc`) is found now,
        // not when everything since the start would be lost.
        let snapshot_lock = match &cfg.snapshot {
            Some(path) => {
                let lock = naam_core::run_dir::beside(path, ".lock");
                let taken = private_file::try_lock(&lock).map_err(io_err(format!(
                    "snapshot {}: lock {}",
                    path.display(),
                    lock.display()
                )))?;
                let taken = taken.ok_or_else(|| AgentError::SnapshotInUse {
                    path: path.clone(),
                    lock,
                })?;
                // The shutdown writes `FILE.tmp`, then renames it: tried now (a lock file
                // left by an earlier start in a folder that is no longer writable passed,
                // and the snapshot was lost at shutdown, probe 21).
                let tmp = naam_core::run_dir::beside(path, ".tmp");
                private_file::create(&tmp)
                    .and_then(|_| std::fs::remove_file(&tmp))
                    .map_err(io_err(format!(
                        "snapshot {}: it could not be written at shutdown: create {}",
                        path.display(),
                        tmp.display()
                    )))?;
                Some(taken)
            }
            None => None,
        };
        let key_file = cfg
            .credentials
            .clone()
            .unwrap_or_else(|| credentials::default_path(&cfg.run_dir));
        let keys = credentials::load_or_create(&key_file, &cfg.run_dir)?;

        let mut host = ShmHost::create(&ShmConfig {
            qps: cfg.nic_workers,
            ring_slots: cfg.ring_slots,
            load_slots: cfg.workers,
            arena_bytes: cfg.arena_bytes(),
            hugetlb: cfg.hugetlb,
            // Host workers post no one-sided ops: a small staging buffer each.
            staging_bytes: 4096,
            persist: cfg.persist.clone(),
            ..ShmConfig::default()
        })?;
        let mut restored = if host.is_restored() {
            Restored::Persisted
        } else {
            Restored::Built
        };
        if restored == Restored::Built {
            if let Some(path) = cfg.snapshot.as_ref().filter(|p| p.exists()) {
                let f = std::fs::File::open(path)
                    .map_err(io_err(format!("open snapshot {}", path.display())))?;
                let n = host
                    .restore_snapshot(&mut std::io::BufReader::new(f))
                    .map_err(|source| AgentError::Restore {
                        path: path.clone(),
                        source,
                    })?;
                tracing::info!(path = %path.display(), regions = n, "snapshot loaded");
                restored = Restored::Snapshot;
            }
        } else {
            tracing::info!("persisted area reopened with its data");
        }

        let registry = Registry::for_engine(Engine::native());
        let mut app_params = Vec::new();
        let mut live_apps = Vec::new();
        for app in apps::bundled() {
            let plan = app.regions(&cfg);
            if plan.is_empty() {
                tracing::info!(app = app.name(), "application disabled");
                continue;
            }
            let dir = host.directory();
            let (present, missing): (Vec<_>, Vec<_>) = plan
                .iter()
                .map(|p| p.id)
                .partition(|id| dir.iter().any(|e| e.desc.id == *id));
            if !present.is_empty() && !missing.is_empty() {
                let file = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
                let kept = match restored {
                    Restored::Persisted => {
                        file(&cfg.persist).map(|p| format!("persisted area {p}"))
                    }
                    Restored::Snapshot => file(&cfg.snapshot).map(|p| format!("snapshot {p}")),
                    Restored::Built => None,
                };
                return Err(AgentError::PartialApp {
                    app: app.name(),
                    kept: kept.unwrap_or_else(|| "built at this start".into()),
                    present,
                    missing,
                });
            }
            let fresh = present.is_empty();
            if fresh {
                for p in &plan {
                    host.register_region(RegionSpec {
                        id: p.id,
                        tenant: BUNDLED_TENANT,
                        len: p.len,
                        perms: p.perms,
                        key: rand::random::<u64>(),
                    })?;
                }
            }
            let regions = plan
                .iter()
                .map(|p| {
                    let r = host.region(p.id).ok_or(naam_link::LinkError::Directory {
                        reason: "registered region missing from the directory",
                    })?;
                    Ok(AppRegion {
                        desc: r.entry.desc,
                        mem: r.mem().clone(),
                    })
                })
                .collect::<Result<Vec<_>, naam_link::LinkError>>()?;
            if fresh {
                let t = Instant::now();
                app.build(&cfg, &regions, stop)?;
                tracing::info!(
                    app = app.name(),
                    ms = t.elapsed().as_millis() as u64,
                    "application data built"
                );
            } else {
                tracing::info!(app = app.name(), "application data kept");
                // Kept data was built under the settings of its time: these flags do not
                // resize or refill it, and the operator should hear that they differ.
                for (p, r) in plan.iter().zip(&regions) {
                    if p.len != r.desc.len {
                        tracing::warn!(
                            app = app.name(),
                            region = p.id,
                            kept_bytes = r.desc.len,
                            flags_bytes = p.len,
                            "the kept data was built with other settings than this start's flags (--mica-keys, --value-size, --btree-keys, --records): the flags do not apply to it; start without --persist/--snapshot data, or with the flags it was built with"
                        );
                    }
                }
            }
            app_params.push((app.name(), app.describe(&cfg, &regions)?));
            for o in app.offloads() {
                register_bundled(&registry, &o)?;
            }
            live_apps.push((app, regions));
        }
        // Offloads registered at run time by an earlier host agent with this data, under
        // their ids; this start's --handler objects are registered after them.
        let mut offloads =
            offload_store::OffloadStore::beside(cfg.persist.as_deref(), cfg.snapshot.as_deref());
        let mut kept = offload_store::Loaded::default();
        if let Some(store) = &offloads {
            kept = store.load(&registry, &VerifierConfig::default())?;
            if kept.count > 0 {
                tracing::info!(offloads = kept.count, path = %store.path().display(), "run-time offloads restored");
            }
        }
        // Where ids not given before start: ids of offloads removed before this start are not
        // given again to other programs (runtime.md, "Offloads").
        let fresh_from = || first_free_after(&registry).max(kept.next.unwrap_or(0));

        let mut from_flags = Vec::new();
        for (k, h) in cfg.handler.iter().enumerate() {
            let max = naam_core::elf::OBJECT_FILE_MAX;
            let bytes = naam_core::run_dir::read_regular(&h.path, max, "a handler object")
                .map_err(io_err(format!("read handler {}", h.path.display())))?;
            let name = h.path.display().to_string();
            let register = |from| {
                register_object(
                    &registry,
                    &bytes,
                    h.section.as_deref(),
                    from,
                    |prog_name, id| OffloadSpec {
                        name: prog_name.to_owned(),
                        tenant: BUNDLED_TENANT,
                        class: (id % DEFAULT_CLASSES) as u16,
                        read_only: false,
                    },
                )
                .map_err(|e| AgentError::Offload {
                    name: name.clone(),
                    reason: e.detail,
                })
            };
            // The id the k-th flag's offload had at the last start (kept with the offloads),
            // so a restart with the same flags gives each the same id again, when it is the
            // same program; else an id never given (at the lowest free one, it took a
            // removed offload's id, probe 21: a client still calling that ran this program).
            let (id, prog_name) = match kept.flags.get(k) {
                Some(&(had, digest)) => {
                    let (id, prog_name) = register(had)?;
                    let same = id == had
                        && registry.get(id).is_some_and(|o| {
                            naam_core::wire::program_digest(o.program.insns()) == digest
                        });
                    if same {
                        (id, prog_name)
                    } else {
                        let _ = registry.unregister(id);
                        register(fresh_from())?
                    }
                }
                None => register(fresh_from())?,
            };
            tracing::info!(id, name = prog_name, path = %h.path.display(), "handler registered");
            from_flags.push(id);
        }
        if let Some(store) = &mut offloads {
            store.set_from_flags(from_flags);
            // Now, so that the next start knows these flags' ids and programs even when no
            // offload is registered or removed meanwhile.
            if let Err(e) = store.save(&registry, None, fresh_from()) {
                tracing::warn!(error = %naam_core::with_sources(&e), "run-time offloads not saved at start");
            }
        }

        // Before the sockets: a metrics address in use leaves no socket file behind.
        let metrics = cfg
            .metrics_addr
            .map(naam_metrics::Exporter::bind)
            .transpose()?;
        let stats = Stats::new(cfg.workers as usize);
        let shared = Shared::new(registry.clone(), stats);
        // Built (or kept, or restored) whole: from here a persisted area is data to keep
        // (serving says so in its header).
        host.serve(&cfg.link_socket())?;
        // Before the workers start, so a failure here leaves no thread behind.
        let control = control::ControlServer::bind(&cfg.control_socket())?;
        let control_file = naam_core::run_dir::file_id(&cfg.control_socket())
            .map_err(io_err("stat the control socket".to_string()))?;
        // Whoever connects to the link socket gets all host memory, and the control socket
        // takes unsealed requests as the admin's: both are for this user alone.
        for sock in [cfg.link_socket(), cfg.control_socket()] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(format!("chmod 0600 {}", sock.display())))?;
        }

        let mut workers = Vec::new();
        for k in 0..cfg.workers {
            let qps = (k..cfg.nic_workers)
                .step_by(cfg.workers as usize)
                .map(|q| host.qp(q))
                .collect::<Result<Vec<_>, _>>()?;
            let setup = WorkerSetup {
                index: k,
                qps,
                table: host.region_table(),
                mem: host.memory(),
                publisher: host.load_publisher(),
                backoff: cfg.backoff.doorbells(),
                engine: Engine::native(),
                shared: shared.clone(),
            };
            let h = std::thread::Builder::new()
                .name(format!("host-worker-{k}"))
                .spawn(move || workers::run(setup))
                .map_err(io_err("spawn host worker"))?;
            workers.push(h);
        }

        tracing::info!(
            run_dir = %cfg.run_dir.display(),
            workers = cfg.workers,
            qps = cfg.nic_workers,
            offloads = registry.len(),
            data = ?restored,
            backoff = ?cfg.backoff,
            hugetlb = host.is_hugetlb(),
            "host agent ready"
        );
        let next_offload = fresh_from();
        Ok(HostAgent {
            cfg,
            host,
            registry,
            shared,
            workers,
            apps: app_params,
            live_apps,
            control: Some(control),
            control_file,
            started: Instant::now(),
            generation: 0,
            restored,
            stopped: false,
            gate: std::sync::Mutex::new(
                naam_core::auth::Gate::new(keys, naam_core::auth::GATE_NONCES)
                    .serving_since(naam_core::auth::wall_clock_ns()),
            ),
            stats_lists: Default::default(),
            metrics,
            offloads,
            next_offload: std::sync::atomic::AtomicU32::new(next_offload),
            _run_lock: run_lock,
            _snapshot_lock: snapshot_lock,
        })
    }

    /// Saves the run-time offloads (when the data outlives this process), `without` one
    /// about to be removed. On failure the caller undoes (or does not make) its change and
    /// answers the error: a change that would not survive a restart is not acknowledged.
    pub(crate) fn save_offloads(&self, without: Option<u32>) -> Result<(), (ErrorCode, String)> {
        let Some(store) = &self.offloads else {
            return Ok(());
        };
        let next = self.next_offload.load(std::sync::atomic::Ordering::Relaxed);
        store.save(&self.registry, without, next).map_err(|e| {
            let text = naam_core::with_sources(&e);
            tracing::error!(error = %text, "run-time offloads not saved");
            (control::storage_code(&e), text)
        })
    }

    /// Where Prometheus metrics are served (`--metrics-addr`), if they are.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics
            .as_ref()
            .map(naam_metrics::Exporter::local_addr)
    }

    /// The Prometheus text of the counters STATS reports and of the offloads registered.
    fn metrics_text(&self) -> String {
        naam_metrics::render("naam_host", &self.control_counters(), &self.registry.list())
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Opens a sealed control request: the inner request and the principal it speaks for,
    /// or the error to answer. A repeat is refused (the dataplane answers retransmissions
    /// from its own cache; a repeat here is a replay).
    fn open_sealed<'a>(
        &self,
        msg: &Message<'a>,
    ) -> Result<(Message<'a>, Principal), (ErrorCode, String)> {
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let opened = gate.open(msg, wall_clock_ns()).map_err(|r| {
            tracing::warn!(reason = r.name(), "control request refused");
            (r.code(), r.detail().to_owned())
        })?;
        if !opened.fresh {
            return Err((
                ErrorCode::Unauthorized,
                "replayed: this sealed request was received before".into(),
            ));
        }
        let inner = opened.request().map_err(|d| (ErrorCode::BadRequest, d))?;
        Ok((inner, opened.principal))
    }

    /// What STATS on the control socket answers: the agent's counters and the gate's.
    fn control_counters(&self) -> Vec<(String, u64)> {
        let mut v = self.shared.stats.named();
        for (app, regions) in &self.live_apps {
            v.extend(app.counters(regions));
        }
        v.extend(
            self.gate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .counters(),
        );
        let r = self.host.refused_peers();
        for (why, n) in [
            ("malformed", r.malformed),
            ("silent", r.silent),
            ("foreign", r.foreign),
            ("busy", r.busy),
        ] {
            v.push((format!("link.refused.{why}"), n));
        }
        v
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    pub fn restored(&self) -> Restored {
        self.restored
    }

    /// Describe parameters of application `name`.
    pub fn app_params(&self, name: &str) -> Option<&Params> {
        self.apps.iter().find(|(n, _)| *n == name).map(|(_, p)| p)
    }

    /// The control loop: accepts dataplanes (one at a time; a dead one is replaced by the
    /// next), stamps the heartbeat, serves the control socket. Returns when `stop` is set
    /// (signals) or a shutdown request arrived.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), AgentError> {
        let publisher = self.host.load_publisher();
        let mut sockets = SocketWatch::default();
        let mut attaches = AttachLog::default();
        let mut link_errors = LogEvery::new(Duration::from_secs(10));
        while !stop.load(Ordering::Relaxed) && !self.shared.stop.load(Ordering::Relaxed) {
            sockets.look(&self.cfg);
            match self.host.poll_peer() {
                Ok(naam_link::PeerEvent::Connected { generation }) => {
                    self.generation = generation;
                    attaches.attached(generation, Instant::now());
                }
                Ok(naam_link::PeerEvent::Disconnected) => attaches.gone(Instant::now()),
                Ok(naam_link::PeerEvent::Nothing) => {}
                Err(e) => {
                    stats::bump(&self.shared.stats.control.link_errors, 1);
                    if link_errors.due(Instant::now()) {
                        tracing::warn!(error = %naam_core::with_sources(&e), "link socket (counted in control.link_errors, logged once per 10 s)");
                    }
                }
            }
            publisher.heartbeat(naam_link::now_ns());
            if let Some(mut m) = self.metrics.take() {
                m.poll(|| self.metrics_text());
                self.metrics = Some(m);
            }
            if control::serve_once(self, Duration::from_millis(1))? == control::Action::Shutdown {
                tracing::info!("shutdown requested on the control socket");
                break;
            }
        }
        Ok(())
    }

    /// Runs the congestion injector: every host worker spins, busy and not serving, for
    /// `ms` milliseconds from now.
    pub fn congest(&self, ms: u64) {
        let until = naam_link::now_ns().saturating_add(ms.saturating_mul(1_000_000));
        self.shared.congest_until_ns.store(until, Ordering::Relaxed);
        tracing::info!(ms, "congestion injected");
    }

    /// Writes the snapshot file now, a consistent cut: the host workers parked and the
    /// dataplane's queue pairs holding (`SnapshotWritten::cut` says whether they did
    /// throughout).
    pub fn write_snapshot(&self) -> Result<SnapshotWritten, AgentError> {
        let path = self
            .cfg
            .snapshot
            .as_ref()
            .ok_or(AgentError::NoSnapshotFile)?;
        let tmp = naam_core::run_dir::beside(path, ".tmp");
        private_file::discard_on_error(&tmp, || self.write_snapshot_to(path, &tmp)).inspect_err(
            |e| {
                tracing::error!(path = %path.display(), error = %naam_core::with_sources(e), "snapshot not written (the previous one, if any, is kept)");
            },
        )
    }

    /// [`HostAgent::write_snapshot`] through `tmp`.
    fn write_snapshot_to(
        &self,
        path: &std::path::Path,
        tmp: &std::path::Path,
    ) -> Result<SnapshotWritten, AgentError> {
        let f = private_file::create(tmp).map_err(io_err(format!("create {}", tmp.display())))?;
        let mut w = std::io::BufWriter::new(f);
        let (regions, cut, f) = {
            // The cut: the host workers parked, and the dataplane (whose handlers write host
            // memory themselves) holding between two polls, until the copy is in the file's
            // pages; syncing them to the disk needs neither.
            let _quiet = self.quiesce()?;
            let hold = self.host.hold_dataplane(DATAPLANE_HOLD_WAIT);
            let regions = self.host.write_snapshot(&mut w)?;
            let f = w.into_inner().map_err(|e| AgentError::Io {
                what: "flush snapshot".into(),
                source: e.into_error(),
            })?;
            let cut = hold.kept();
            if !cut {
                tracing::warn!(
                    held_when_asked = hold.complete(),
                    "the dataplane did not hold still for the whole copy (it holds at most 1 s, \
                     and answers within {} ms): its writes meanwhile may be half in this \
                     snapshot",
                    DATAPLANE_HOLD_WAIT.as_millis()
                );
            }
            (regions, cut, f)
        };
        f.sync_all().map_err(io_err("sync snapshot"))?;
        let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
        std::fs::rename(tmp, path).map_err(io_err(format!("rename to {}", path.display())))?;
        tracing::info!(path = %path.display(), regions, bytes, cut, "snapshot written");
        Ok(SnapshotWritten {
            regions,
            bytes,
            cut,
        })
    }

    /// Parks the workers until the guard drops.
    fn quiesce(&self) -> Result<Unpause<'_>, AgentError> {
        let s = &self.shared;
        s.pause.store(true, Ordering::Release);
        let guard = Unpause(s);
        let t = Instant::now();
        let want = self.workers.len() as u32;
        while s.parked.load(Ordering::Acquire) < want {
            if t.elapsed() > QUIESCE_TIMEOUT {
                return Err(AgentError::NotQuiet {
                    ms: QUIESCE_TIMEOUT.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(guard)
    }

    /// Stops the workers, writes the snapshot (when configured) and removes the sockets.
    /// Idempotent.
    pub fn shutdown(&mut self) -> Result<(), AgentError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.shared.stop.store(true, Ordering::Release);
        for h in self.workers.drain(..) {
            if h.join().is_err() {
                tracing::error!("a host worker panicked");
            }
        }
        let snap = if self.cfg.snapshot.is_some() {
            // The dataplane writes host memory itself: it is told the host is gone and given
            // time to notice before the cut, or a write it acknowledged after the snapshot
            // was taken would be lost (probe 9 lost 6 acknowledged PUTs in 4 SIGTERMs).
            if self.host.stop_serving() {
                std::thread::sleep(DETACH_GRACE);
            }
            // Workers are stopped: the cut is consistent (nobody to park).
            self.write_snapshot().map(|_| ())
        } else {
            Ok(())
        };
        naam_core::run_dir::remove_own(&self.cfg.control_socket(), self.control_file);
        self.host.stop_serving();
        tracing::info!(
            uptime_s = self.started.elapsed().as_secs(),
            "host agent stopped"
        );
        snap
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        if !self.stopped {
            self.shared.stop.store(true, Ordering::Release);
            for h in self.workers.drain(..) {
                let _ = h.join();
            }
            naam_core::run_dir::remove_own(&self.cfg.control_socket(), self.control_file);
        }
    }
}

const QUIESCE_TIMEOUT: Duration = Duration::from_secs(2);
/// What [`HostAgent::write_snapshot`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotWritten {
    pub regions: usize,
    pub bytes: u64,
    /// Nothing wrote host memory during the copy (false: the dataplane did not hold
    /// throughout, and its writes meanwhile may be half in the file).
    pub cut: bool,
}

/// How long a snapshot waits for the dataplane's queue pairs to hold (each does between two
/// polls: tens of µs, a few ms when its thread sleeps idle).
const DATAPLANE_HOLD_WAIT: Duration = Duration::from_millis(250);

/// How long a shutdown waits, after closing the dataplane's connection, before its last
/// snapshot: the dataplane looks at the connection every millisecond it polls, and an op it
/// had already begun finishes within its poll (tens of µs); the rest is a margin for its
/// threads being descheduled.
const DETACH_GRACE: Duration = Duration::from_millis(50);

/// Steering classes of a deployment (protocol default), for `--handler` objects' classes.
pub const DEFAULT_CLASSES: u32 = 64;

struct Unpause<'a>(&'a Shared);

impl Drop for Unpause<'_> {
    fn drop(&mut self) {
        self.0.pause.store(false, Ordering::Release);
    }
}

/// A refused registration: the wire error code and a detail for people.
#[derive(Debug, Clone)]
pub struct RegisterError {
    pub code: naam_core::wire::ErrorCode,
    pub detail: String,
}

/// The id after the highest run-time offload registered ([`apps::offload::FIRST_DYNAMIC`]
/// when there is none): where [`register_object`] starts looking.
fn first_free_after(registry: &Registry) -> OffloadId {
    registry
        .list()
        .iter()
        .map(|o| o.id)
        .filter(|&id| id >= apps::offload::FIRST_DYNAMIC)
        .max()
        .map_or(apps::offload::FIRST_DYNAMIC, |id| id + 1)
}

/// Loads, verifies and test-compiles section `section` of `object`, then registers it under
/// the first free id from `from` up (then from [`apps::offload::FIRST_DYNAMIC`], when the id
/// space is used up to its end). `spec` builds the offload's description from the program
/// name and the id. Returns the id and program name.
pub fn register_object(
    registry: &Registry,
    object: &[u8],
    section: Option<&str>,
    from: OffloadId,
    spec: impl Fn(&str, OffloadId) -> OffloadSpec,
) -> Result<(OffloadId, String), RegisterError> {
    use naam_core::wire::ErrorCode;
    let invalid = |detail: String| RegisterError {
        code: ErrorCode::InvalidProgram,
        detail,
    };
    // A copy: the object may sit at any offset of a received datagram, and the ELF parser
    // wants its headers aligned (the allocator's alignment is enough).
    let object = object.to_vec();
    let prog =
        naam_core::elf::load_program(&object, section).map_err(|e| invalid(e.to_string()))?;
    let verified =
        Arc::new(verify(&prog, &VerifierConfig::default()).map_err(|e| invalid(e.to_string()))?);
    // Refuse what no worker could compile rather than registering a dead offload.
    CompiledVm::new(verified.clone(), Engine::native()).map_err(|e| invalid(e.to_string()))?;
    if let (true, Some(insn)) = (
        spec(&prog.name, from).read_only,
        verified.first_mutating_op(),
    ) {
        // Accepted, as before: its VM refuses those steps (`permission_denied`).
        tracing::warn!(
            name = prog.name,
            insn,
            "offload registered read-only, but its program may ask for a WRITE, CAS or FAA; such steps will be refused"
        );
    }
    let first = apps::offload::FIRST_DYNAMIC;
    let from = from.clamp(first, MAX_OFFLOADS as OffloadId);
    for id in (from..MAX_OFFLOADS as OffloadId).chain(first..from) {
        match registry.register_as(id, spec(&prog.name, id), verified.clone()) {
            Ok(_) => return Ok((id, prog.name)),
            Err(RegistryError::Exists { .. }) => continue,
            Err(e @ RegistryError::Compile { .. }) => return Err(invalid(e.to_string())),
            Err(e) => {
                return Err(RegisterError {
                    code: ErrorCode::NoSpace,
                    detail: e.to_string(),
                })
            }
        }
    }
    Err(RegisterError {
        code: ErrorCode::NoSpace,
        detail: RegistryError::Full.to_string(),
    })
}

fn register_bundled(registry: &Registry, o: &apps::BundledOffload) -> Result<(), AgentError> {
    let err = |reason: String| AgentError::Offload {
        name: o.name.to_owned(),
        reason,
    };
    let verified = o
        .load(&VerifierConfig::default())
        .map_err(|e| err(e.to_string()))?;
    registry
        .register_as(
            o.id,
            OffloadSpec {
                name: o.name.to_owned(),
                tenant: BUNDLED_TENANT,
                class: o.class,
                read_only: o.read_only,
            },
            Arc::new(verified),
        )
        .map_err(|e| err(e.to_string()))?;
    Ok(())
}
