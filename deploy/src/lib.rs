//! A local deployment: a host agent and a dataplane started as separate processes on this
//! machine with the embedded defaults (UDP port, shared-memory link, software eSwitch), for
//! the demo, the experiments and the integration tests.
//!
//! The processes are found as [`Binaries`]: the two program files (next to the running test
//! or program, or named by `NAAM_BIN_DIR`), or one program that runs both as subcommands (the
//! `naam-rs` binary of the repository root). Dropping a [`Deployment`] stops both (SIGTERM,
//! then SIGKILL after a grace period) and removes its run directory.

use naam_client::{Client, ClientConfig, ServerAddr};
use naam_core::run_dir;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a deployment could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("cannot find the {what} program (looked in {looked}); build the workspace or set NAAM_BIN_DIR")]
    NotFound { what: &'static str, looked: String },
    #[error("starting {what}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not become ready within {waited:?}: {detail}{}", tail_suffix(.log_tail))]
    NotReady {
        what: &'static str,
        waited: Duration,
        detail: String,
        log_tail: String,
    },
    #[error("{what} exited early ({status}){}", tail_suffix(.log_tail))]
    Exited {
        what: &'static str,
        status: std::process::ExitStatus,
        /// The last lines it logged, when there is a log.
        log_tail: String,
    },
    #[error("log folder {path}")]
    LogDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stopped while starting {what}")]
    Cancelled { what: &'static str },
    #[error("run directory {path}")]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How to start the two processes.
#[derive(Debug, Clone)]
pub struct Binaries {
    host_agent: (PathBuf, Vec<String>),
    dataplane: (PathBuf, Vec<String>),
}

impl Binaries {
    /// `naam-host-agent` and `naam-dataplane` next to the running executable (or its parent,
    /// for test executables in `target/*/deps`), or in `NAAM_BIN_DIR`.
    pub fn locate() -> Result<Self, DeployError> {
        let mut dirs = Vec::new();
        if let Some(d) = std::env::var_os("NAAM_BIN_DIR") {
            dirs.push(PathBuf::from(d));
        }
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                dirs.push(dir.to_path_buf());
                if let Some(up) = dir.parent() {
                    dirs.push(up.to_path_buf());
                }
            }
        }
        let find = |name: &'static str| {
            dirs.iter()
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| DeployError::NotFound {
                    what: name,
                    looked: dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        };
        Ok(Self {
            host_agent: (find("naam-host-agent")?, Vec::new()),
            dataplane: (find("naam-dataplane")?, Vec::new()),
        })
    }

    /// [`Binaries::locate`], building the two programs first (`cargo build -p ...`, the same
    /// profile as the running executable) when they are not there yet: a test run of only
    /// one package does not build the other packages' programs.
    ///
    /// Under cargo (tests: `CARGO` is set) the build runs once per process even when the
    /// programs exist, so a test of one package never drives stale programs of another; it is
    /// a no-op when they are up to date.
    pub fn locate_or_build() -> Result<Self, DeployError> {
        static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        let under_cargo = std::env::var_os("CARGO").is_some();
        if !under_cargo {
            if let Ok(b) = Self::locate() {
                return Ok(b);
            }
            Self::build()?;
            return Self::locate();
        }
        BUILT
            .get_or_init(|| Self::build().map_err(|e| e.to_string()))
            .clone()
            .map_err(|e| DeployError::NotReady {
                what: "cargo build",
                waited: Duration::ZERO,
                detail: e,
                log_tail: String::new(),
            })?;
        Self::locate()
    }

    fn build() -> Result<(), DeployError> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let release = std::env::current_exe()
            .is_ok_and(|p| p.components().any(|c| c.as_os_str() == "release"));
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "naam-host-agent",
            "-p",
            "naam-dataplane",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().map_err(|source| DeployError::Spawn {
            what: "cargo build",
            source,
        })?;
        if !status.success() {
            return Err(DeployError::Exited {
                what: "cargo build",
                status,
                log_tail: String::new(),
            });
        }
        Ok(())
    }

    /// One program running both roles as subcommands (`PROGRAM host-agent ...`,
    /// `PROGRAM dataplane ...`).
    pub fn subcommands(program: PathBuf) -> Self {
        Self {
            host_agent: (program.clone(), vec!["host-agent".into()]),
            dataplane: (program, vec!["dataplane".into()]),
        }
    }

    fn command(which: &(PathBuf, Vec<String>)) -> Command {
        let mut c = Command::new(&which.0);
        c.args(&which.1);
        // A starter killed with SIGKILL cannot stop its deployment: the processes stop
        // themselves once it is gone.
        c.args(["--parent-pid", &std::process::id().to_string()]);
        // An error's backtrace would push the error itself out of the log tail a failed start
        // reports (panics keep theirs: that is RUST_BACKTRACE).
        c.env("RUST_LIB_BACKTRACE", "0");
        c
    }
}

/// What to deploy.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    pub host_workers: u32,
    pub nic_workers: u32,
    pub mica_keys: u64,
    pub value_size: u32,
    pub btree_keys: u64,
    /// Where the classes run when nothing is congested (`nic` or `host`).
    pub home: String,
    /// Extra dataplane flags (policy knobs, engine, ...).
    pub dataplane_args: Vec<String>,
    /// Extra host agent flags.
    pub host_args: Vec<String>,
    /// A key file both processes use (`--credentials`), as an operator provisions one for a
    /// cluster; `None`: the host agent creates one in the run directory.
    pub credentials: Option<PathBuf>,
    /// Where logs go (`host-agent.log`, `dataplane.log`): `None` keeps them in the run
    /// directory, removed with the deployment (a start that fails quotes their last lines).
    pub log_dir: Option<PathBuf>,
    /// `RUST_LOG` for both processes.
    pub log_filter: String,
    /// Keep the host agent's shared area in a file (`--persist`, on `/dev/shm` when it
    /// exists) so that a restarted host agent reopens the same regions, keys and data.
    pub persist: bool,
    /// Give the host agent a snapshot file (`--snapshot`), loaded at start when it exists and
    /// written on request (`DESCRIBE("snapshot")`) and on a clean shutdown.
    pub snapshot: bool,
    /// Both processes serve Prometheus metrics on loopback ([`Deployment::metrics_addrs`]).
    pub metrics: bool,
    /// The run directory (created if missing; its contents removed with the deployment):
    /// `None` makes a fresh one under the temporary directory.
    pub run_dir: Option<PathBuf>,
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            host_workers: 1,
            nic_workers: 1,
            mica_keys: 65_536,
            value_size: 64,
            btree_keys: 65_536,
            home: "nic".into(),
            dataplane_args: Vec::new(),
            host_args: Vec::new(),
            credentials: None,
            log_dir: None,
            log_filter: "info".into(),
            persist: false,
            snapshot: false,
            metrics: false,
            run_dir: None,
        }
    }
}

/// A running host agent and dataplane.
pub struct Deployment {
    host: Option<Child>,
    dataplane: Option<Child>,
    bins: Binaries,
    cfg: DeployConfig,
    run_dir: PathBuf,
    data: SocketAddr,
    control: SocketAddr,
    /// Where the host agent and the dataplane serve metrics, with [`DeployConfig::metrics`].
    host_metrics: Option<SocketAddr>,
    dataplane_metrics: Option<SocketAddr>,
    /// Set by whoever started the deployment to give up waiting for a process to become
    /// ready ([`Deployment::start_until`]).
    cancel: Arc<AtomicBool>,
}

const READY_WAIT: Duration = Duration::from_secs(30);

impl Deployment {
    /// Starts the host agent, waits for its sockets, then the dataplane, and waits for it to
    /// print where it serves.
    pub fn start(bins: Binaries, cfg: DeployConfig) -> Result<Self, DeployError> {
        Self::start_until(bins, cfg, Arc::new(AtomicBool::new(false)))
    }

    /// [`Deployment::start`], giving up with [`DeployError::Cancelled`] as soon as `cancel`
    /// is set (a Ctrl-C while the host agent builds its data), here and in later restarts.
    pub fn start_until(
        bins: Binaries,
        cfg: DeployConfig,
        cancel: Arc<AtomicBool>,
    ) -> Result<Self, DeployError> {
        if let Some(dir) = &cfg.log_dir {
            // An unusable folder is an error here or when a log is opened in it, not logs
            // silently lost.
            std::fs::create_dir_all(dir).map_err(|source| DeployError::LogDir {
                path: dir.clone(),
                source,
            })?;
        }
        sweep_abandoned(&std::env::temp_dir());
        sweep_abandoned(Path::new("/dev/shm"));
        let run_dir = cfg.run_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "{RUN_DIR_PREFIX}{}-{}",
                std::process::id(),
                unique()
            ))
        });
        std::fs::create_dir_all(&run_dir).map_err(|source| DeployError::RunDir {
            path: run_dir.clone(),
            source,
        })?;
        let mut d = Deployment {
            host: None,
            dataplane: None,
            bins,
            cfg,
            run_dir,
            data: ([0, 0, 0, 0], 0).into(),
            control: ([0, 0, 0, 0], 0).into(),
            host_metrics: None,
            dataplane_metrics: None,
            cancel,
        };
        d.start_host()?;
        d.start_dataplane()?;
        Ok(d)
    }

    /// The file holding the host agent's shared area with [`DeployConfig::persist`]: on
    /// `/dev/shm` (tmpfs, as docs/runtime.md asks) when it exists, else in the run directory.
    pub fn persist_path(&self) -> PathBuf {
        let name = self
            .run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "naam-deploy".into());
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.join(format!("{name}.area"))
        } else {
            self.run_dir.join("area")
        }
    }

    /// The host agent's snapshot file with [`DeployConfig::snapshot`].
    pub fn snapshot_path(&self) -> PathBuf {
        self.run_dir.join("snapshot")
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.cfg
            .log_dir
            .as_deref()
            .unwrap_or(&self.run_dir)
            .join(format!("{name}.log"))
    }

    fn log(&self, name: &str) -> Result<Stdio, DeployError> {
        let path = self.log_path(name);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map(Stdio::from)
            .map_err(|source| DeployError::LogDir { path, source })
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Why `child` (`what`) exited before it was ready: stopped on purpose when the starter
    /// is cancelling (a terminal's Ctrl-C reaches the whole process group, and the handler
    /// that sets the flag may run just after the child has gone), else early.
    fn exited_early(
        &self,
        what: &'static str,
        log: &str,
        status: std::process::ExitStatus,
    ) -> DeployError {
        let deadline = Instant::now() + Duration::from_millis(200);
        while !self.cancelled() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.cancelled() {
            DeployError::Cancelled { what }
        } else {
            DeployError::Exited {
                what,
                status,
                log_tail: self.log_tail(log),
            }
        }
    }

    /// The last lines of a process's log, for an error that says why it did not start.
    fn log_tail(&self, name: &str) -> String {
        const LINES: usize = 12;
        let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LINES)..].join("\n")
    }

    /// Starts (or restarts) the host agent and waits until it serves its sockets.
    pub fn start_host(&mut self) -> Result<(), DeployError> {
        let c = &self.cfg;
        let mut cmd = Binaries::command(&self.bins.host_agent);
        cmd.arg("--run-dir")
            .arg(&self.run_dir)
            .args(["--workers", &c.host_workers.to_string()])
            .args(["--nic-workers", &c.nic_workers.to_string()])
            .args(["--mica-keys", &c.mica_keys.to_string()])
            .args(["--value-size", &c.value_size.to_string()])
            .args(["--btree-keys", &c.btree_keys.to_string()])
            .args(&c.host_args);
        if let Some(k) = &c.credentials {
            cmd.arg("--credentials").arg(k);
        }
        if c.persist {
            cmd.arg("--persist").arg(self.persist_path());
        }
        if c.snapshot {
            cmd.arg("--snapshot").arg(self.snapshot_path());
        }
        if c.metrics {
            // The host agent prints nothing to read back: give it a port free now (kept
            // across restarts).
            let addr = match self.host_metrics {
                Some(a) => a,
                None => free_tcp_port().map_err(|source| DeployError::Spawn {
                    what: "the host agent (no free port for metrics)",
                    source,
                })?,
            };
            self.host_metrics = Some(addr);
            cmd.arg("--metrics-addr").arg(addr.to_string());
        }
        let c = &self.cfg;
        cmd.env("RUST_LOG", &c.log_filter)
            .stdin(Stdio::null())
            .stdout(self.log("host-agent")?)
            .stderr(self.log("host-agent")?);
        let _ = std::fs::remove_file(self.run_dir.join(run_dir::CONTROL_SOCKET));
        let _ = std::fs::remove_file(self.run_dir.join(run_dir::LINK_SOCKET));
        let mut child = cmd.spawn().map_err(|source| DeployError::Spawn {
            what: "the host agent",
            source,
        })?;
        let start = Instant::now();
        while !(self.run_dir.join(run_dir::CONTROL_SOCKET).exists()
            && self.run_dir.join(run_dir::LINK_SOCKET).exists())
        {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(self.exited_early("the host agent", "host-agent", status));
            }
            if self.cancelled() {
                let _ = terminate(child, Duration::from_secs(3));
                return Err(DeployError::Cancelled {
                    what: "the host agent",
                });
            }
            if start.elapsed() > READY_WAIT {
                let _ = child.kill();
                return Err(DeployError::NotReady {
                    what: "the host agent",
                    waited: READY_WAIT,
                    detail: "no control.sock and link.sock".into(),
                    log_tail: self.log_tail("host-agent"),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.host = Some(child);
        Ok(())
    }

    /// Starts (or restarts) the dataplane and waits until it prints where it serves. A
    /// restarted dataplane binds the ports of the previous one, so clients keep their
    /// addresses.
    pub fn start_dataplane(&mut self) -> Result<(), DeployError> {
        let c = &self.cfg;
        let mut cmd = Binaries::command(&self.bins.dataplane);
        cmd.arg("--port")
            .arg(format!("udp:127.0.0.1:{}", self.data.port()))
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(["--workers", &c.nic_workers.to_string()])
            .args(["--home", &c.home])
            .args(&c.dataplane_args)
            .args(if c.metrics {
                &["--metrics-addr", "127.0.0.1:0"][..]
            } else {
                &[]
            })
            .args(
                c.credentials
                    .iter()
                    .flat_map(|k| [std::ffi::OsStr::new("--credentials"), k.as_os_str()]),
            )
            .env("RUST_LOG", &c.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.log("dataplane")?);
        let mut child = cmd.spawn().map_err(|source| DeployError::Spawn {
            what: "the dataplane",
            source,
        })?;
        let stdout = child.stdout.take().expect("piped");
        // The dataplane prints one line, "naam-dataplane serving data A control B", when ready.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let start = Instant::now();
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(l) => break l,
                Err(RecvTimeoutError::Timeout) if self.cancelled() => {
                    let _ = terminate(child, Duration::from_secs(3));
                    return Err(DeployError::Cancelled {
                        what: "the dataplane",
                    });
                }
                Err(RecvTimeoutError::Timeout) if start.elapsed() < READY_WAIT => {}
                Err(_) => {
                    let _ = child.kill();
                    return Err(DeployError::NotReady {
                        what: "the dataplane",
                        waited: READY_WAIT,
                        detail: "no serving line".into(),
                        log_tail: self.log_tail("dataplane"),
                    });
                }
            }
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let addr = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .and_then(|a| a.parse::<SocketAddr>().ok())
        };
        match (addr("data"), addr("control")) {
            (Some(data), Some(control)) => {
                self.data = data;
                self.control = control;
                self.dataplane_metrics = addr("metrics");
                self.dataplane = Some(child);
                Ok(())
            }
            _ => {
                // Most likely it closed its output on the way out: give it a moment to exit,
                // so the error says how, with what it logged.
                let deadline = Instant::now() + Duration::from_secs(2);
                let status = loop {
                    match child.try_wait() {
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        r => break r.ok().flatten(),
                    }
                };
                let _ = child.kill();
                match status {
                    Some(status) => Err(self.exited_early("the dataplane", "dataplane", status)),
                    None => Err(DeployError::NotReady {
                        what: "the dataplane",
                        waited: READY_WAIT,
                        detail: format!("unexpected line {line:?}"),
                        log_tail: self.log_tail("dataplane"),
                    }),
                }
            }
        }
    }

    /// Where the host agent and the dataplane serve `/metrics` (with
    /// [`DeployConfig::metrics`]).
    pub fn metrics_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (self.host_metrics, self.dataplane_metrics)
    }

    /// The dataplane's data base port.
    pub fn data_addr(&self) -> SocketAddr {
        self.data
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.control
    }

    pub fn server(&self) -> ServerAddr {
        ServerAddr::new(self.data, Some(self.control))
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// A new client of this deployment; without a credential of its own it takes the
    /// deployment's admin key (`RUN_DIR/admin.key`).
    pub fn client(&self, mut cfg: ClientConfig) -> naam_client::Result<Client> {
        if cfg.credential.is_none() {
            cfg.credential = Some(self.admin_key()?);
        }
        Client::with_servers(&[self.server()], cfg)
    }

    /// The admin credential the host agent wrote (`RUN_DIR/admin.key`, mode 0600).
    pub fn admin_key(&self) -> naam_client::Result<naam_core::auth::Credential> {
        naam_client::keys::load(&self.admin_key_file())
    }

    pub fn admin_key_file(&self) -> PathBuf {
        self.run_dir.join(run_dir::ADMIN_KEY)
    }

    /// The key file of `tenant` the host agent wrote (`RUN_DIR/tenant-N.key`).
    pub fn tenant_key_file(&self, tenant: u32) -> PathBuf {
        self.run_dir.join(run_dir::tenant_key(tenant))
    }

    pub fn host_pid(&self) -> Option<u32> {
        self.host.as_ref().map(Child::id)
    }

    pub fn dataplane_pid(&self) -> Option<u32> {
        self.dataplane.as_ref().map(Child::id)
    }

    /// Kills the host agent at once (SIGKILL), as a crash would.
    pub fn kill_host(&mut self) {
        if let Some(mut c) = self.host.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Extra flags of the dataplane for its next start (`start_dataplane`).
    pub fn set_dataplane_args(&mut self, args: Vec<String>) {
        self.cfg.dataplane_args = args;
    }

    /// The dataplane's workers at its next start (at most the host agent's queue pairs, the
    /// `nic_workers` it was started with).
    pub fn set_nic_workers(&mut self, n: u32) {
        self.cfg.nic_workers = n;
    }

    /// Kills the dataplane at once (SIGKILL), as a crash would.
    pub fn kill_dataplane(&mut self) {
        if let Some(mut c) = self.dataplane.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the host agent cleanly (SIGTERM; SIGKILL after `grace`), which writes its
    /// snapshot when it has one. Returns whether it exited with status 0.
    pub fn stop_host(&mut self, grace: Duration) -> bool {
        self.host.take().is_some_and(|c| terminate(c, grace))
    }

    /// Stops the dataplane cleanly (SIGTERM; SIGKILL after `grace`). Returns whether it
    /// exited with status 0.
    pub fn stop_dataplane(&mut self, grace: Duration) -> bool {
        self.dataplane.take().is_some_and(|c| terminate(c, grace))
    }

    /// Whether each process is still running: `(host agent, dataplane)`.
    pub fn running(&mut self) -> (bool, bool) {
        let alive =
            |c: &mut Option<Child>| c.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        (alive(&mut self.host), alive(&mut self.dataplane))
    }

    /// A client for control requests (stats, describe), with a generous timeout: the control
    /// thread of a loaded machine may be slow.
    pub fn control_client(&self) -> naam_client::Result<Client> {
        self.client(ClientConfig {
            timeout: Duration::from_millis(200),
            max_retries: 5,
            ..ClientConfig::default()
        })
    }

    /// The dataplane's counters (`naam stats`) by name.
    pub fn stats(&self) -> naam_client::Result<HashMap<String, u64>> {
        Ok(self
            .control_client()?
            .server_stats(0)?
            .into_iter()
            .collect())
    }

    /// `DESCRIBE(app)` through the dataplane's control port, by name.
    pub fn describe(&self, app: &str) -> naam_client::Result<HashMap<String, u64>> {
        Ok(self
            .control_client()?
            .describe(0, app)?
            .into_iter()
            .collect())
    }

    /// Congests every host worker for `ms` milliseconds from now (`DESCRIBE("congest:MS")`,
    /// forwarded by the dataplane to the host agent).
    pub fn congest_host(&self, ms: u64) -> naam_client::Result<()> {
        self.describe(&format!("congest:{ms}")).map(drop)
    }

    /// Stops both processes: SIGTERM, then SIGKILL after `grace`. Returns whether both exited
    /// on their own with status 0.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let mut clean = true;
        for child in [self.dataplane.take(), self.host.take()]
            .into_iter()
            .flatten()
        {
            clean &= terminate(child, grace);
        }
        clean
    }
}

fn terminate(mut child: Child, grace: Duration) -> bool {
    // SIGTERM through the kill command: std has no signal API and this keeps the crate free of
    // unsafe code.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
        if self.cfg.persist {
            // The area, and the run-time offloads and the lock the host agent keeps beside it.
            let area = self.persist_path();
            for beside in [".offloads", ".lock"] {
                let _ = std::fs::remove_file(naam_core::run_dir::beside(&area, beside));
            }
            let _ = std::fs::remove_file(area);
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its log ends:\n{tail}")
    }
}

/// Run folders are `naam-deploy-<pid of the starting program>-<n>`, and a persisted area
/// beside them on /dev/shm `naam-deploy-<pid>-<n>.area`.
const RUN_DIR_PREFIX: &str = "naam-deploy-";

/// Removes, from `dir`, the run folders and persisted areas of deployments whose starting
/// program is gone: killed outright (SIGKILL, an interrupted benchmark), it could not remove
/// them, and a persisted area holds the whole shared memory (tens of MB). Their processes
/// stop by themselves (`--parent-pid`). A pid that runs again (reused) keeps its entries.
/// Returns how many entries were removed.
pub fn sweep_abandoned(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUN_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = e.path();
        let gone = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(err) => Err(err),
        };
        removed += usize::from(gone.is_ok());
    }
    removed
}

/// A tmpfs of a few bytes, mounted at a fresh directory under the temporary directory, to
/// run a deployment on a filesystem that fills up (what an operator's small run-directory
/// partition does); unmounted and removed on drop.
pub struct SmallTmpfs {
    dir: PathBuf,
}

impl SmallTmpfs {
    /// Mounts one of `bytes`. `Err` says why when this process may not mount (it takes root
    /// or `CAP_SYS_ADMIN`), for a test to print as its reason to skip.
    pub fn mount(bytes: u64) -> Result<SmallTmpfs, String> {
        let dir =
            std::env::temp_dir().join(format!("naam-tmpfs-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700")])
            .arg("tmpfs")
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(SmallTmpfs { dir }),
            other => {
                let _ = std::fs::remove_dir(&dir);
                Err(match other {
                    Ok(o) => format!(
                        "mount -t tmpfs: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    Err(e) => format!("mount: {e}"),
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        // Lazily: a process of the test may still hold a file there.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A loopback TCP port nobody listens on now.
fn free_tcp_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_folders_of_programs_gone_are_swept_and_no_other() {
        let base = tempfile::tempdir().unwrap();
        let mut child = Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap(); // reaped: the pid runs nothing now
        let me = std::process::id();
        let dir = |n: String| {
            let p = base.path().join(n);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("link.sock"), b"").unwrap();
            p
        };
        let abandoned = dir(format!("{RUN_DIR_PREFIX}{dead}-0"));
        let area = base.path().join(format!("{RUN_DIR_PREFIX}{dead}-0.area"));
        std::fs::write(&area, [0u8; 64]).unwrap();
        let mine = dir(format!("{RUN_DIR_PREFIX}{me}-3"));
        let running = dir(format!("{RUN_DIR_PREFIX}1-0")); // init runs
        let other = dir(format!("naam-other-{dead}-0"));
        let odd = dir(format!("{RUN_DIR_PREFIX}x{dead}-0"));
        assert_eq!(sweep_abandoned(base.path()), 2);
        assert!(!abandoned.exists() && !area.exists());
        for kept in [&mine, &running, &other, &odd] {
            assert!(kept.exists(), "{} removed", kept.display());
        }
        assert_eq!(sweep_abandoned(&base.path().join("missing")), 0);
    }
}
