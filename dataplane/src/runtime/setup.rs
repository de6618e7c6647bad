//! Process setup: connects the link, registers the bundled offloads, opens one port per
//! worker, and starts the worker threads and the control thread (control port, load monitor,
//! host liveness and reconnection). The data path itself is in [`super::worker`].

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use naam_core::auth::{Capabilities, Gate, Keyring};
use naam_core::exec::DEFAULT_MAX_STEPS;
use naam_core::pool::{OffloadSpec, Registry};
use naam_core::run_dir;
use naam_core::verifier::VerifierConfig;
use naam_core::vm::Engine;
use naam_core::wire::MAX_DATAGRAM;
use naam_link::{now_ns, BackoffMode};

use super::control::{watch_host_counters, ControlPlane};
use super::fair::FairConfig;
use super::host_watch::{connect_opts, connect_with_wait, host_load, HostWatch, LinkSlot};
use super::hostctl::HostControl;
use super::monitor::{HostLoad, Monitor, MonitorConfig};
use super::shared::Shared;
use super::stats::WorkerStats;
use super::worker::{Worker, WorkerConfig};
use crate::port::{AnyPort, LossInjection, Port, PortOptions, PortSpec, UdpPort};
use crate::steering::{SoftSwitch, Target};

/// The NIC congestion injector's slice: a congested worker is taken for this long, then
/// serves one poll.
const CONGEST_SLICE_NS: u64 = 250_000;

/// Settings of the whole dataplane process.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// `udp:IP:PORT` or `dpdk:EAL-ARGS`.
    pub port: String,
    pub workers: usize,
    pub classes: u16,
    /// The control port; default the data base port minus one, on loopback.
    pub control: Option<SocketAddrV4>,
    /// Where `link.sock` and `control.sock` are.
    pub run_dir: PathBuf,
    pub idle: BackoffMode,
    pub engine: Engine,
    /// Messages in flight per worker.
    pub slots: usize,
    pub burst: usize,
    pub dedup_entries: usize,
    /// How long a completed mutation is remembered when its client does not say it is done.
    pub dedup_retain: Duration,
    pub max_steps: u32,
    pub monitor: MonitorConfig,
    pub verifier: VerifierConfig,
    /// Host heartbeat age after which the host agent counts as gone.
    pub stale_after: Duration,
    /// How often to try reconnecting to a host agent that went away.
    pub reconnect_every: Duration,
    /// How long `start` waits for the host agent's link socket.
    pub connect_wait: Duration,
    /// Timeout of requests forwarded to the host agent's control socket.
    pub host_control_timeout: Duration,
    /// Packet loss injected in UDP ports, for tests (`--drop-rx-every`, `--drop-tx-every`).
    pub loss: LossInjection,
    /// The key file the host agent holds (docs/security.md), read once the host agent is
    /// connected. Default: `RUN_DIR/credentials`.
    pub credentials: Option<PathBuf>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (off when `None`). Also turns on the
    /// measurement of each offload's run time on the NIC.
    pub metrics: Option<SocketAddr>,
    /// Per-tenant admission on every worker.
    pub fair: FairConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            port: "udp:127.0.0.1:7000".into(),
            workers: 1,
            classes: crate::port::DEFAULT_CLASSES,
            control: None,
            run_dir: run_dir::default_run_dir(),
            idle: BackoffMode::Yield,
            engine: Engine::native(),
            slots: 64,
            burst: 32,
            dedup_entries: super::dedup::DEFAULT_ENTRIES,
            dedup_retain: Duration::from_nanos(super::dedup::DEFAULT_RETAIN_NS),
            max_steps: DEFAULT_MAX_STEPS,
            monitor: MonitorConfig::default(),
            verifier: VerifierConfig::default(),
            stale_after: Duration::from_millis(100),
            reconnect_every: Duration::from_millis(100),
            connect_wait: Duration::from_secs(10),
            host_control_timeout: Duration::from_secs(2),
            loss: LossInjection::default(),
            credentials: None,
            metrics: None,
            fair: FairConfig::default(),
        }
    }
}

/// Why the dataplane did not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Asked to stop (a signal, the starter gone) before it served.
    #[error("stopped before serving")]
    Stopped,
    #[error("host agent link socket {path}")]
    Link {
        path: PathBuf,
        #[source]
        source: naam_link::LinkError,
    },
    #[error("the host agent offers {qps} queue pairs, fewer than the {workers} workers (start it with --nic-workers {workers})")]
    TooFewQps { qps: u32, workers: usize },
    #[error("port: {0}")]
    Port(String),
    #[error("{0}")]
    Config(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("steering")]
    Steering(#[from] crate::steering::SteeringError),
    #[error(transparent)]
    Metrics(#[from] naam_metrics::MetricsError),
    #[error("credentials {path}: {reason} (the host agent creates them in its run directory; or pass --credentials)")]
    Credentials { path: PathBuf, reason: String },
}

/// Before the workers take their reply-cache files over: when an earlier dataplane left files
/// of another layout (workers, capacity) with requests that may still be retransmitted, waits
/// until none may (at most the retention), so that no retransmission runs twice; then removes
/// the files no worker of this one opens (dedup/restart.rs). Gives up at once when `stop` is
/// set: the wait can be as long as `--dedup-retain-ms` (up to an hour).
fn settle_reply_caches(
    cfg: &RuntimeConfig,
    workers: usize,
    stop: &AtomicBool,
) -> Result<(), SetupError> {
    use super::dedup::restart;
    let io = |what: &str| {
        let what = format!("{what} {}", cfg.run_dir.display());
        move |source| SetupError::Io { what, source }
    };
    let retain_ns = cfg.dedup_retain.as_nanos() as u64;
    let layout = (cfg.dedup_entries, workers);
    let files = restart::files(&cfg.run_dir).map_err(io("list the reply caches in"))?;
    let wait = restart::wait_before_serving(&files, layout, retain_ns, now_ns())
        .map_err(io("read the reply caches in"))?;
    if let Some(w) = wait {
        tracing::warn!(
            file = %w.file.display(),
            wait_ms = w.duration.as_millis() as u64,
            "waiting before serving: {}",
            w.reason
        );
        let until = std::time::Instant::now() + w.duration;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            if stop.load(Ordering::Acquire) {
                return Err(SetupError::Stopped);
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
    for (w, path) in files {
        if w >= workers {
            std::fs::remove_file(&path).map_err(io("remove a stale reply cache from"))?;
        }
    }
    Ok(())
}

/// The host agent's key file: the control port's gate opens with it, and active messages'
/// capabilities are checked against it.
fn load_keys(cfg: &RuntimeConfig) -> Result<Keyring, SetupError> {
    let path = cfg
        .credentials
        .clone()
        .unwrap_or_else(|| cfg.run_dir.join(run_dir::CREDENTIALS));
    let fail = |reason: String| SetupError::Credentials {
        path: path.clone(),
        reason,
    };
    let text = run_dir::read_key_file(&path).map_err(|e| fail(e.to_string()))?;
    run_dir::check_key_file(&path).map_err(fail)?;
    if let Some(warning) = run_dir::exposed(&path) {
        tracing::warn!("{warning}");
    }
    let keys = Keyring::parse(&text).map_err(|e| fail(e.to_string()))?;
    if keys.len() == 1 {
        // A client's key file (`admin.key`, `tenant-N.key`) given for the host agent's.
        tracing::warn!(
            path = %path.display(),
            "the key file holds one key: every other principal's requests will be refused \
             (give the host agent's key file, RUN_DIR/credentials)"
        );
    }
    Ok(keys)
}

/// Registers the bundled offloads (`naam_handlers::bundled`) under their fixed ids; classes
/// the deployment does not serve are skipped, with a warning.
pub fn register_bundled(registry: &Registry, classes: u16, verifier: &VerifierConfig) {
    for o in naam_handlers::bundled::ALL {
        let (id, name, class) = (o.id, o.name, o.class);
        if class >= classes {
            tracing::warn!(
                id,
                name,
                class,
                classes,
                "bundled offload's class not served"
            );
            continue;
        }
        match o.load(verifier) {
            Ok(p) => {
                let spec = OffloadSpec {
                    name: name.into(),
                    tenant: naam_handlers::bundled::TENANT,
                    class,
                    read_only: o.read_only,
                };
                if let Err(e) = registry.register_as(id, spec, Arc::new(p)) {
                    tracing::warn!(id, name, error = %e, "bundled offload not registered");
                }
            }
            Err(e) => tracing::error!(id, name, error = %e, "bundled offload rejected"),
        }
    }
}

/// A running dataplane.
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    data_addr: SocketAddrV4,
    control_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stats: Vec<Arc<WorkerStats>>,
}

fn open_port(
    spec: &str,
    worker: usize,
    workers: usize,
    base: Option<SocketAddrV4>,
    classes: u16,
    loss: LossInjection,
) -> Result<AnyPort, String> {
    let parsed = crate::port::parse_spec(spec).map_err(|e| super::with_sources(&e))?;
    if let PortSpec::Udp(addr) = parsed {
        let addr = base.unwrap_or(addr);
        let p = if workers == 1 {
            UdpPort::bind(addr, classes)
        } else if base.is_none() {
            UdpPort::bind_shared(addr, classes)
        } else {
            UdpPort::join_shared(addr, classes)
        };
        return p
            .map(|mut p| {
                p.set_loss(loss);
                AnyPort::Udp(p)
            })
            .map_err(|e| format!("worker {worker}: {}", super::with_sources(&e)));
    }
    if loss != LossInjection::default() {
        return Err(format!(
            "loss injection is implemented by udp: ports only, not {spec:?}"
        ));
    }
    crate::port::open(spec, &PortOptions { classes }).map_err(|e| super::with_sources(&e))
}

impl Runtime {
    /// Starts everything; returns when the workers serve.
    pub fn start(cfg: RuntimeConfig) -> Result<Runtime, SetupError> {
        Self::start_unless(cfg, &AtomicBool::new(false))
    }

    /// [`Runtime::start`], giving up ([`SetupError::Stopped`]) as soon as `stop` is set while
    /// it waits for the host agent.
    pub fn start_unless(cfg: RuntimeConfig, stop: &AtomicBool) -> Result<Runtime, SetupError> {
        let workers = cfg.workers.max(1);
        if cfg.port.starts_with("dpdk:") && workers > 1 {
            return Err(SetupError::Config(
                "a dpdk: port serves one worker (one queue pair) in this build; use --workers 1"
                    .into(),
            ));
        }
        run_dir::check_socket_room(&cfg.run_dir).map_err(SetupError::Config)?;
        let link_path = cfg.run_dir.join(run_dir::LINK_SOCKET);
        let link = Arc::new(connect_with_wait(
            &link_path,
            connect_opts(&cfg),
            cfg.connect_wait,
            stop,
        )?);
        if (link.layout().qps as usize) < workers {
            return Err(SetupError::TooFewQps {
                qps: link.layout().qps,
                workers,
            });
        }
        tracing::info!(
            generation = link.generation(),
            qps = link.layout().qps,
            "connected to the host agent"
        );
        settle_reply_caches(&cfg, workers, stop)?;
        // The host agent wrote its key file before it served the link.
        let keys = load_keys(&cfg)?;
        let registry = Registry::for_engine(cfg.engine);
        register_bundled(&registry, cfg.classes, &cfg.verifier);

        // Worker 0 binds first (it may pick the port); the others share its address.
        let stats: Vec<Arc<WorkerStats>> = (0..workers)
            .map(|_| Arc::new(WorkerStats::new(cfg.classes)))
            .collect();
        let links = Arc::new(LinkSlot::default());
        links.set(link.clone());
        // The steering table needs the base port, known once worker 0 bound: the worker
        // threads get the shared state through a channel.
        let mut threads = Vec::new();
        let mut shared_txs = Vec::new();
        let mut base: Option<SocketAddrV4> = None;
        for (w, st) in stats.iter().enumerate() {
            let (addr_tx, addr_rx) = mpsc::channel::<Result<SocketAddrV4, String>>();
            let (shared_tx, shared_rx) = mpsc::channel::<Arc<Shared>>();
            let wcfg = WorkerConfig {
                id: w as u16,
                workers: workers as u16,
                classes: cfg.classes,
                burst: cfg.burst,
                slots: cfg.slots,
                dedup_entries: cfg.dedup_entries,
                dedup_retain_ns: cfg.dedup_retain.as_nanos() as u64,
                reply_cache_file: Some(cfg.run_dir.join(format!("reply-cache.{w}"))),
                max_steps: cfg.max_steps,
                engine: cfg.engine,
                run_time: cfg.metrics.is_some(),
                fair: cfg.fair.clone(),
            };
            let spec = cfg.port.clone();
            let classes = cfg.classes;
            let st = st.clone();
            let links = links.clone();
            let idle = cfg.idle;
            let loss = cfg.loss;
            let t = std::thread::Builder::new()
                .name(format!("naam-w{w}"))
                .spawn(move || {
                    let mut port = match open_port(&spec, w, workers, base, classes, loss) {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = addr_tx.send(Ok(port.local_addr()));
                    let Ok(shared) = shared_rx.recv() else {
                        return;
                    };
                    run_worker(wcfg, shared, st, links, &mut port, idle);
                })
                .map_err(|source| SetupError::Io {
                    what: "spawn worker".into(),
                    source,
                })?;
            threads.push(t);
            shared_txs.push(shared_tx);
            match addr_rx.recv() {
                Ok(Ok(a)) => {
                    base.get_or_insert(a);
                }
                Ok(Err(e)) => return Err(SetupError::Port(e)),
                Err(_) => return Err(SetupError::Port(format!("worker {w} did not start"))),
            }
        }
        let data_addr = base.ok_or_else(|| SetupError::Port("no worker".into()))?;
        let mut switch =
            SoftSwitch::new(data_addr.port(), cfg.classes, workers, Target::NicQueue(0));
        let shared = Shared::new(
            registry,
            switch.table(),
            cfg.classes,
            Capabilities::from_keyring(&keys),
        );
        shared.regions.publish(link.region_table());
        shared.link_generation.store(1, Ordering::Release);
        // The host agent's offloads are known once it has listed them to the control thread.
        shared.pending.unlisted();
        let monitor = Monitor::new(cfg.monitor, data_addr.port(), cfg.classes, &mut switch)?;
        // Loopback unless told otherwise: the control plane is for operators on this machine
        // (docs/security.md), even when the data port faces the network.
        let control_addr = cfg.control.unwrap_or_else(|| {
            SocketAddrV4::new(
                std::net::Ipv4Addr::LOCALHOST,
                data_addr.port().wrapping_sub(1),
            )
        });
        let sock = match UdpSocket::bind(control_addr) {
            Ok(s) => s,
            // The data ports were picked free (port 0) but the one below them is taken: any
            // free port will do, the serving line says which.
            Err(_) if cfg.control.is_none() && port_was_picked(&cfg.port) => {
                { UdpSocket::bind(SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0)) }.map_err(
                    |source| SetupError::Io {
                        what: "bind a control port".into(),
                        source,
                    },
                )?
            }
            Err(source) => {
                return Err(SetupError::Io {
                    what: format!("bind control port {control_addr}"),
                    source,
                })
            }
        };
        let control_addr = sock.local_addr().map_err(|source| SetupError::Io {
            what: "control port address".into(),
            source,
        })?;
        // Non-blocking, waited on with `wait_readable` until the next load sample is due: a
        // receive timeout would be counted in scheduler ticks and stretch the sampling period
        // (docs/placement.md).
        sock.set_nonblocking(true)
            .map_err(|source| SetupError::Io {
                what: "control port non-blocking".into(),
                source,
            })?;
        // Room for a burst while the thread serves one request (the default ~200 KB held a
        // few hundred datagrams: a flood of them dropped other principals' requests in the
        // kernel, before the per-principal queues could help; probe 19). As asked of the
        // data sockets; the kernel caps it at `net.core.rmem_max`.
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(CONTROL_RECV_BUFFER);
        for tx in shared_txs {
            let _ = tx.send(shared.clone());
        }
        let mut plane = ControlPlane::new(
            shared.clone(),
            stats.clone(),
            switch,
            monitor,
            HostControl::new(
                &cfg.run_dir.join(run_dir::CONTROL_SOCKET),
                cfg.host_control_timeout,
            ),
            cfg.verifier,
            cfg.engine,
            cfg.classes,
            Gate::new(keys, naam_core::auth::GATE_NONCES)
                .serving_since(naam_core::auth::wall_clock_ns()),
        );
        // The control thread's forwards stop waiting once the heartbeat is late (it is also
        // the thread that notices the stall).
        plane.host_live = Box::new({
            let links = links.clone();
            move || links.get().is_some_and(|l| l.check_peer(now_ns()).is_ok())
        });
        let watcher = HostControl::new(
            &cfg.run_dir.join(run_dir::CONTROL_SOCKET),
            cfg.host_control_timeout,
        );
        let (w_shared, w_into) = (shared.clone(), plane.host_counters.clone());
        let t = std::thread::Builder::new()
            .name("naam-host-stats".into())
            .spawn(move || watch_host_counters(watcher, w_shared, w_into, HOST_COUNTERS_EVERY))
            .map_err(|source| SetupError::Io {
                what: "spawn host counters thread".into(),
                source,
            })?;
        threads.push(t);
        let metrics = cfg.metrics.map(naam_metrics::Exporter::bind).transpose()?;
        let metrics_addr = metrics.as_ref().map(naam_metrics::Exporter::local_addr);
        let ctl_shared = shared.clone();
        let ctl_cfg = cfg.clone();
        let t = std::thread::Builder::new()
            .name("naam-control".into())
            .spawn(move || run_control(plane, sock, metrics, ctl_shared, links, link_path, ctl_cfg))
            .map_err(|source| SetupError::Io {
                what: "spawn control thread".into(),
                source,
            })?;
        threads.push(t);
        tracing::info!(%data_addr, %control_addr, workers, classes = cfg.classes, "dataplane serving");
        Ok(Runtime {
            shared,
            threads,
            data_addr,
            control_addr,
            metrics_addr,
            stats,
        })
    }

    /// The data port's address (class 0's UDP port).
    pub fn data_addr(&self) -> SocketAddrV4 {
        self.data_addr
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// Where Prometheus metrics are served (`--metrics-addr`), if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn worker_stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// Stops every thread and waits for them.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in self.threads {
            let _ = t.join();
        }
        tracing::info!("dataplane stopped");
    }
}

/// Longest sleep of the control thread between two looks at the host and the stop flag.
const CONTROL_WAIT_MAX: Duration = Duration::from_millis(1);
/// The receive buffer asked for the control socket (bytes).
const CONTROL_RECV_BUFFER: usize = 4 << 20;
/// Control datagrams taken from the socket in a row (queued, or answered at once).
const CONTROL_READ_MAX: usize = 256;
/// Control requests served in a row before the thread looks at the monitor again.
const CONTROL_BATCH: usize = 64;

/// How often the dataplane reads the host agent's per-offload counters for its STATS.
const HOST_COUNTERS_EVERY: Duration = Duration::from_millis(250);

/// Whether the data port spec asked for any free ports (`udp:IP:0`).
fn port_was_picked(spec: &str) -> bool {
    matches!(crate::port::parse_spec(spec), Ok(PortSpec::Udp(a)) if a.port() == 0)
}

fn run_worker(
    cfg: WorkerConfig,
    shared: Arc<Shared>,
    stats: Arc<WorkerStats>,
    links: Arc<LinkSlot>,
    port: &mut AnyPort,
    idle: BackoffMode,
) {
    let w = cfg.id as u32;
    let mut generation = shared.link_generation.load(Ordering::Acquire);
    // The queue pair holds what it needs of its link; the link itself is not kept here, so
    // that a replaced one (a restarted host agent's) is unmapped and closed once every
    // worker is on the new one. Kept, the first link's area (the whole of the host agent's
    // data, and its eventfds) stayed mapped for the dataplane's life (probe 18).
    let first = links.get().map(|link| link.qp(w));
    let mut qp = match first {
        Some(Ok(q)) => q,
        Some(Err(e)) => {
            tracing::error!(worker = w, error = %naam_core::with_sources(&e), "no link queue pair");
            return;
        }
        None => return,
    };
    let mut worker = Worker::new(cfg, shared.clone(), stats);
    let mut idle_polls = 0u32;
    while !shared.stopping() {
        let g = shared.link_generation.load(Ordering::Acquire);
        if g != generation {
            if let Some(l) = links.get() {
                match l.qp(w) {
                    Ok(q) => {
                        worker.link_reset(port);
                        qp = q;
                        generation = g;
                        tracing::info!(worker = w, generation = g, "worker on the new link");
                    }
                    Err(e) => {
                        tracing::warn!(worker = w, error = %naam_core::with_sources(&e), "new link: no queue pair")
                    }
                }
            }
        }
        let t0 = now_ns();
        if shared.nic_congested(t0) {
            congested_slice(&shared, idle, t0);
            let t1 = now_ns();
            // The slice counts as background (busy, but no class's cost) and the poll as busy:
            // the monitor sees a saturated NIC without inflating the classes' costs.
            worker.add_background_ns(t1.saturating_sub(t0));
            worker.poll(t1, port, &mut qp);
            worker.add_busy_ns(now_ns().saturating_sub(t1));
            idle_polls = 0;
            continue;
        }
        let n = worker.poll(t0, port, &mut qp);
        if n > 0 {
            worker.add_busy_ns(now_ns().saturating_sub(t0));
            idle_polls = 0;
            continue;
        }
        idle.polling().idle(&mut idle_polls);
    }
    // A clean stop answers what it took: the messages in flight finish (bounded), and what
    // is left is answered as on a lost link (`outcome_unknown` for a mutation that may have
    // run). It abandoned them, those at the host included, whose clients heard nothing
    // although they had run (probe 12).
    let deadline = now_ns() + FINISH_NS;
    while worker.in_flight() > 0 {
        let now = now_ns();
        if now >= deadline {
            break;
        }
        match worker.finish_turn(now, port, &mut qp) {
            None => break,
            Some(0) => idle.polling().idle(&mut idle_polls),
            Some(_) => idle_polls = 0,
        }
    }
    worker.answer_unfinished(port);
    let _ = port.flush();
}

/// How long a stopping worker lets its messages in flight finish.
const FINISH_NS: u64 = 500_000_000;

/// One slice of the NIC congestion injector: the core is taken by other work until the
/// slice (or the congestion) ends. With dedicated cores (`spin`) the worker spins; with the
/// local deployment's back-off it sleeps, so the emulated load does not take a core the host
/// agent or the client of this small machine needs (DESIGN §9).
fn congested_slice(shared: &Shared, idle: BackoffMode, t0: u64) {
    let until = shared
        .nic_congest_until_ns
        .load(Ordering::Relaxed)
        .min(t0 + CONGEST_SLICE_NS);
    match idle {
        BackoffMode::Spin => {
            while now_ns() < until && !shared.stopping() {
                std::hint::spin_loop();
            }
        }
        BackoffMode::Yield => std::thread::sleep(Duration::from_nanos(until.saturating_sub(t0))),
    }
}

/// How long after a failed reconciliation with the host agent (it did not answer its LIST)
/// the next is tried.
const RECONCILE_RETRY_NS: u64 = 1_000_000_000;

fn run_control(
    mut plane: ControlPlane,
    sock: UdpSocket,
    mut metrics: Option<naam_metrics::Exporter>,
    shared: Arc<Shared>,
    links: Arc<LinkSlot>,
    link_path: PathBuf,
    cfg: RuntimeConfig,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut host = HostWatch::new(links.get().map_or(0, |l| l.directory_epoch()));
    // Requests the kernel dropped on this socket are counted, read at every monitor tick.
    let drops_at_start = crate::port::kernel_drops(&sock).unwrap_or(0);
    let send = |reply: &[u8], to: SocketAddr| {
        if !reply.is_empty() {
            if let Err(e) = sock.send_to(reply, to) {
                tracing::warn!(error = %e, %to, "control reply not sent");
            }
        }
    };
    // Whether offloads of the host agent are being added (not while it does not answer).
    let mut readding = false;
    while !shared.stopping() {
        // Sleep until a request arrives or the next sample is due (at most a millisecond, so
        // stopping and the host watch stay prompt; not at all while there is work).
        let wait = if plane.waiting() > 0 || readding {
            Duration::ZERO
        } else {
            Duration::from_nanos(plane.monitor.until_due(now_ns())).min(CONTROL_WAIT_MAX)
        };
        if let Err(e) = naam_link::wait_readable(sock.as_fd(), wait) {
            tracing::warn!(error = %e, "control port wait");
            std::thread::sleep(wait);
        }
        // The host agent first: a LIST served before the reconciliation of a new link would
        // leave out the offloads still to be added.
        let now = now_ns();
        let link = links.get();
        let alive = host.watch(now, link.as_deref(), &shared, &links, &link_path, &cfg);
        if plane.monitor.due(now) {
            if let Some(d) = crate::port::kernel_drops(&sock) {
                plane.kernel_drops = u64::from(d.wrapping_sub(drops_at_start));
            }
            let host = link
                .as_ref()
                .map_or(HostLoad::GONE, |l| host_load(l, alive));
            let ControlPlane {
                monitor,
                workers,
                shared,
                switch,
                ..
            } = &mut plane;
            monitor.tick(now, workers, host, &shared.registry, switch, &shared.hints);
        }
        if alive && !host.reconciled && now >= host.reconcile_after_ns {
            // Once per (re)connection. A host agent that did not answer its LIST (it stalled
            // right then) is asked again a second later: left as it was, none of its
            // offloads was ever added (probe 21).
            host.reconciled = plane.reconcile_with_host().is_some();
            if !host.reconciled {
                tracing::warn!(
                    "could not list the host agent's offloads to reconcile with; trying again in a second"
                );
                host.reconcile_after_ns = now_ns() + RECONCILE_RETRY_NS;
            }
        }
        // Offloads to add: until the monitor's next sample is due, at least one each time.
        readding = alive && plane.readding();
        if readding {
            let t = now_ns();
            plane.readd(t + plane.monitor.until_due(t));
        }
        // Take what the socket holds into the principals' queues, then serve them in turn,
        // a bounded batch (the monitor's samples are due every few milliseconds).
        for _ in 0..CONTROL_READ_MAX {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let len = plane.admit(from, &buf[..n], now_ns(), &mut out);
                    send(&out[..len], from);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(error = %e, "control port receive");
                    break;
                }
            }
        }
        for _ in 0..CONTROL_BATCH {
            if !plane.serve_next(&mut out, send) {
                break;
            }
        }
        if let Some(m) = &mut metrics {
            m.poll(|| plane.metrics_text());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An earlier dataplane of two workers left a live request in worker 1's cache, kept an
    /// hour: a one-worker dataplane waits before it serves, and a stop ends that wait at once.
    #[test]
    fn a_stop_ends_the_wait_for_an_earlier_dataplanes_reply_caches() {
        use super::super::dedup::{Begin, ReplyCache};
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let client: SocketAddrV4 = "10.0.0.1:5000".parse().unwrap();
        let (mut cache, _) = ReplyCache::open(
            &dir.path().join("reply-cache.1"),
            (64, 2),
            hour.as_nanos() as u64,
            now_ns(),
        )
        .unwrap();
        let am = naam_core::wire::Kind::AmRequest as u8;
        assert_eq!(cache.begin(client, 1, 1, am, now_ns()), Begin::Started);
        drop(cache);
        let cfg = RuntimeConfig {
            run_dir: dir.path().to_owned(),
            dedup_entries: 64,
            dedup_retain: hour,
            ..RuntimeConfig::default()
        };
        let stop = AtomicBool::new(false);
        let start = std::time::Instant::now();
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                stop.store(true, Ordering::Release);
            });
            settle_reply_caches(&cfg, 1, &stop)
        });
        assert!(matches!(r, Err(SetupError::Stopped)), "{r:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn bundled_offloads_register_under_their_fixed_ids() {
        let r = Registry::new();
        register_bundled(&r, 64, &VerifierConfig::default());
        let ids: Vec<(u32, u16, bool)> = r
            .list()
            .iter()
            .map(|o| (o.id, o.class, o.read_only))
            .collect();
        assert_eq!(
            ids,
            vec![
                (0, 0, true),
                (1, 1, false),
                (2, 2, false),
                (3, 3, true),
                (4, 4, true),
                (5, 5, true)
            ]
        );
        // Classes the deployment does not serve are skipped.
        let r = Registry::new();
        register_bundled(&r, 4, &VerifierConfig::default());
        assert_eq!(
            r.list().iter().map(|o| o.id).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
    }
}
