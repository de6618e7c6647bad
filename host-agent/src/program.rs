//! `naam-host-agent`: the host side of NAAM (docs/runtime.md).
//!
//! Settings come from defaults, then an optional TOML file (`--config FILE`, keys are the long
//! flag names), then the flags. Logs go to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! The host agent's program body (arguments, start-up, exit status), in the library so that its
//! own binary (`src/main.rs`, a one-line `main`) and the `naam-rs` program of the repository
//! root run the same code; errors end here, as `anyhow` reports or an exit code.

use crate::apps::AppError;
use crate::{AgentError, BackoffMode, Config, HandlerSpec, HostAgent};
use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "naam-host-agent",
    version,
    about = "The NAAM host agent: regions, application data, host workers, control socket"
)]
struct Args {
    /// TOML file whose keys mirror the flags (`nic-workers = 2`; `hugetlb = false` for
    /// `--no-hugetlb`); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Stop (as on SIGTERM) once process PID is no longer this one's parent: for a host agent
    /// started by another program (the local deployment passes its own), which may be killed
    /// without a chance to stop it.
    #[arg(long, value_name = "PID")]
    parent_pid: Option<u32>,
    /// Run directory for link.sock and control.sock [default: $XDG_RUNTIME_DIR/naam or /tmp/naam-$UID].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Host worker threads [default: 1].
    #[arg(long)]
    workers: Option<u32>,
    /// Link queue pairs, at least the dataplane's worker count [default: 2].
    #[arg(long)]
    nic_workers: Option<u32>,
    /// Region memory of the shared area in MiB [default: what the data need, at least 64].
    #[arg(long)]
    arena_mb: Option<u64>,
    /// Keys of the MICA table built at start [default: 65536].
    #[arg(long)]
    mica_keys: Option<u64>,
    /// Value size of the MICA items [default: 64].
    #[arg(long)]
    value_size: Option<u32>,
    /// Build the MICA table lossless: PUT answers "log full" once the log is used up instead
    /// of evicting acknowledged items (default: lossy, MICA's cache mode).
    #[arg(long)]
    mica_lossless: bool,
    /// Keys of the B-tree built at start [default: 65536].
    #[arg(long)]
    btree_keys: Option<u64>,
    /// 64-byte records of the `record` application [default: 1024].
    #[arg(long)]
    records: Option<u64>,
    /// Seed of the generated data [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Extra handler object FILE.o[:SECTION], verified and registered (ids from 16); repeatable.
    #[arg(long = "handler", value_name = "FILE.o[:SECTION]")]
    handlers: Vec<String>,
    /// Snapshot file: loaded at start if it exists, written on shutdown and on request.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Keep the shared area in this file (on tmpfs) so it survives the host agent.
    #[arg(long)]
    persist: Option<PathBuf>,
    /// Idle workers: `yield` (spin, then sleep on the ring doorbells) or `spin` (dedicated cores) [default: yield].
    #[arg(long, value_parser = ["spin", "yield"])]
    backoff: Option<String>,
    /// Do not try hugetlb pages for the shared area.
    #[arg(long)]
    no_hugetlb: bool,
    /// Slots per link ring, a power of two [default: 256].
    #[arg(long)]
    ring_slots: Option<u32>,
    /// Key file of the admin and the tenants, created with fresh keys when absent
    /// [default: RUN_DIR/credentials]; see docs/security.md.
    #[arg(long, value_name = "FILE")]
    credentials: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Offloads one tenant may have registered at once [default: 4096].
    #[arg(long, value_name = "N")]
    max_offloads_per_tenant: Option<u32>,
    /// Steering classes one tenant's run-time offloads may be on at once [default: 8].
    #[arg(long, value_name = "N")]
    max_classes_per_tenant: Option<u32>,
}

impl Args {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { c.$f = v; })* };
        }
        set!(
            run_dir,
            workers,
            nic_workers,
            mica_keys,
            value_size,
            btree_keys,
            records,
            seed,
            ring_slots,
            max_offloads_per_tenant,
            max_classes_per_tenant
        );
        if self.arena_mb.is_some() {
            c.arena_mb = self.arena_mb;
        }
        if self.snapshot.is_some() {
            c.snapshot = self.snapshot;
        }
        if self.persist.is_some() {
            c.persist = self.persist;
        }
        if self.credentials.is_some() {
            c.credentials = self.credentials;
        }
        if self.metrics_addr.is_some() {
            c.metrics_addr = self.metrics_addr;
        }
        if let Some(b) = self.backoff {
            c.backoff = b
                .parse::<BackoffMode>()
                .map_err(anyhow::Error::msg)
                .context("--backoff")?;
        }
        if self.no_hugetlb {
            c.hugetlb = false;
        }
        if self.mica_lossless {
            c.mica_lossless = true;
        }
        c.handler
            .extend(self.handlers.iter().map(|h| HandlerSpec::parse(h)));
        Ok(c)
    }
}

/// The program with these arguments (the first is the program name): what its own binary
/// runs, and what the `naam-rs` program of the repository root runs for this role.
pub fn run(args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    naam_link::log::init();
    let args = Args::parse_from(args);
    let parent = args.parent_pid;
    let cfg = args.into_config()?;

    let stop = Arc::new(AtomicBool::new(false));
    // SIGHUP too (its terminal closed), as the dataplane's handler does: by default it would
    // end the process without its snapshot and with its sockets left behind.
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone()).context("install signal handler")?;
    }
    naam_link::parent::ignore_user_signals().context("ignoring SIGUSR1 and SIGUSR2")?;
    if let Some(pid) = parent {
        naam_link::parent::stop_without_parent(pid, stop.clone())
            .context("starting the parent watch")?;
    }
    let mut agent = match HostAgent::start_unless(cfg, &stop) {
        Ok(a) => a,
        Err(AgentError::App(AppError::Stopped { app })) => {
            tracing::info!(app, "stopped while building the data");
            return Ok(());
        }
        Err(e) => return Err(e).context("starting the host agent"),
    };
    if let Some(m) = agent.metrics_addr() {
        naam_link::parent::tell_starter(&format!("naam-host-agent metrics http://{m}/metrics"));
    }
    let run = agent.run(&stop);
    let down = agent.shutdown();
    run.context("control loop")?;
    down.context("shutdown")?;
    Ok(())
}
