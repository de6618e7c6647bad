//! The placement comparison (DESIGN §8 "ycsb", issue 9 item 2): MICA under YCSB workloads,
//! the same client load against four ways of placing the handlers, each on its own local
//! deployment (a host agent and a dataplane started as processes, back-off on):
//!
//! | system | dataplane | client |
//! |---|---|---|
//! | `host` — host-only RPC | `--home host --pin --no-client-hints`: every message is forwarded to the host agent | server |
//! | `client` — client-only one-sided | `--pin --no-client-hints` | runs every handler itself, its ops sent as one-sided ops (the dataplane's one-sided engine, RDMA's stand-in) |
//! | `nic` — NIC-only | `--home nic --pin --no-client-hints`: every message runs on the dataplane's cores | server |
//! | `adaptive` — NAAM | `--home nic`, the placement policy and client hints on | follows placement hints (`ExecMode::Auto`) |
//!
//! Besides throughput and latency it measures the **host CPU seconds per million operations**
//! (utime + stime of the host agent process, `/proc/<pid>/stat`, before and after the run):
//! what offloading saves the host. The dataplane's and the client's CPU time are reported the
//! same way, so it shows where the work went.

use crate::bars::{BarChart, BarSeries};
use crate::procs::{cpu_seconds, cpu_ticks, CpuTicks};
use crate::ycsb::{self, KeyDist, Placement, Workload, YcsbConfig};
use naam_deploy::{DeployConfig, Deployment};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// A placement of the MICA handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// Host-only RPC: the dataplane forwards every message to the host agent.
    Host,
    /// Client-only: handlers run at the client, their ops sent one-sided.
    Client,
    /// NIC-only: every message runs on the dataplane's cores.
    Nic,
    /// NAAM: the placement policy moves classes between NIC, host and clients.
    Adaptive,
}

impl System {
    pub const ALL: [System; 4] = [System::Host, System::Client, System::Nic, System::Adaptive];

    pub fn label(self) -> &'static str {
        match self {
            System::Host => "host-only RPC",
            System::Client => "client-only one-sided",
            System::Nic => "NIC-only",
            System::Adaptive => "NAAM adaptive",
        }
    }

    /// Where the dataplane's classes live and whether the policy may move them.
    pub fn deploy(self, base: &DeployConfig) -> DeployConfig {
        let mut cfg = base.clone();
        let pinned = ["--pin", "--no-client-hints"].map(String::from);
        match self {
            System::Host => {
                cfg.home = "host".into();
                cfg.dataplane_args.extend(pinned);
            }
            System::Client | System::Nic => {
                cfg.home = "nic".into();
                cfg.dataplane_args.extend(pinned);
            }
            System::Adaptive => cfg.home = "nic".into(),
        }
        cfg
    }

    /// How the client executes.
    pub fn placement(self) -> Placement {
        match self {
            System::Host | System::Nic => Placement::Server,
            System::Client => Placement::Client,
            System::Adaptive => Placement::Auto,
        }
    }
}

/// The comparison's parameters.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    pub workloads: Vec<Workload>,
    pub systems: Vec<System>,
    pub dist: KeyDist,
    pub theta: f64,
    /// Keys the host agent builds (and the workload touches).
    pub keys: u64,
    pub value_size: usize,
    pub duration: Duration,
    /// Discarded run before each measurement (connections, caches, the policy settling).
    pub warmup: Duration,
    pub threads: usize,
    pub outstanding: usize,
    /// Open loop at this rate; `None`: closed loop.
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub seed: u64,
    pub host_workers: u32,
    pub nic_workers: u32,
    /// Where the processes' logs go (`None`: discarded).
    pub log_dir: Option<PathBuf>,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            workloads: vec![Workload::A, Workload::B, Workload::C],
            systems: System::ALL.to_vec(),
            dist: KeyDist::Zipfian,
            theta: 0.99,
            keys: 100_000,
            value_size: 64,
            duration: Duration::from_secs(5),
            warmup: Duration::from_millis(500),
            threads: 1,
            outstanding: 16,
            rate: None,
            timeout: Duration::from_millis(50),
            seed: 1,
            host_workers: 1,
            nic_workers: 1,
            log_dir: None,
        }
    }
}

/// One (system, workload) measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlacementRow {
    pub system: System,
    pub label: &'static str,
    pub workload: Workload,
    pub distribution: KeyDist,
    pub keys: u64,
    pub seconds: f64,
    pub ops: u64,
    pub throughput_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub read_p99_us: f64,
    pub update_p99_us: f64,
    /// Host agent CPU time during the run, and per million completed operations.
    pub host_cpu_s: f64,
    pub host_cpu_s_per_mop: f64,
    /// The dataplane's (the NIC cores').
    pub nic_cpu_s: f64,
    pub nic_cpu_s_per_mop: f64,
    /// This process's (the client's).
    pub client_cpu_s_per_mop: f64,
    /// Where operations executed (fractions of the operations counted by the dataplane and the
    /// client): at the client, on the NIC, forwarded to the host.
    pub at_client: f64,
    pub at_nic: f64,
    pub at_host: f64,
    pub errors: u64,
    pub retransmits: u64,
    pub first_error: Option<String>,
}

fn per_mop(seconds: f64, ops: u64) -> f64 {
    if ops == 0 {
        0.0
    } else {
        seconds / (ops as f64 / 1e6)
    }
}

fn deploy_base(cfg: &CompareConfig) -> DeployConfig {
    DeployConfig {
        host_workers: cfg.host_workers,
        nic_workers: cfg.nic_workers,
        mica_keys: cfg.keys,
        value_size: cfg.value_size as u32,
        // The comparison only uses MICA; a small tree keeps start-up short.
        btree_keys: 1024,
        host_args: vec!["--backoff".into(), "yield".into()],
        // A loaded machine may not schedule the host agent's heartbeat for a while; the
        // experiments measure steady state, not host failure (the default is 100 ms).
        dataplane_args: ["--backoff", "yield", "--stale-ms", "1000"]
            .map(String::from)
            .to_vec(),
        log_dir: cfg.log_dir.clone().or_else(crate::procs::log_dir),
        log_filter: "warn".into(),
        ..DeployConfig::default()
    }
}

fn ycsb_config(cfg: &CompareConfig, d: &Deployment, system: System, w: Workload) -> YcsbConfig {
    YcsbConfig {
        servers: vec![d.server()],
        workload: w,
        dist: cfg.dist,
        theta: cfg.theta,
        keys: cfg.keys,
        value_size: cfg.value_size,
        placement: system.placement(),
        duration: cfg.duration,
        threads: cfg.threads,
        rate: cfg.rate,
        outstanding: cfg.outstanding,
        // The host agent fills the table with the key set it describes (docs/runtime.md).
        load: false,
        timeout: cfg.timeout,
        seed: cfg.seed,
        key_seed: None,
        credential: d.admin_key().ok(),
        max_window: naam_client::ClientConfig::default().max_window,
    }
}

/// Runs every system on every workload; `progress` sees each row as it is measured.
pub fn run(
    cfg: &CompareConfig,
    mut progress: impl FnMut(&PlacementRow),
) -> anyhow::Result<Vec<PlacementRow>> {
    let bins = crate::procs::binaries()?;
    let base = deploy_base(cfg);
    let mut rows = Vec::new();
    for &system in &cfg.systems {
        let d = Deployment::start(bins.clone(), system.deploy(&base))?;
        let host_pid = d
            .host_pid()
            .ok_or_else(|| anyhow::anyhow!("no host agent"))?;
        let nic_pid = d
            .dataplane_pid()
            .ok_or_else(|| anyhow::anyhow!("no dataplane"))?;
        for &w in &cfg.workloads {
            let mut y = ycsb_config(cfg, &d, system, w);
            if !cfg.warmup.is_zero() {
                let warm = YcsbConfig {
                    duration: cfg.warmup,
                    ..y.clone()
                };
                ycsb::run(&warm, &AtomicU64::new(0))?;
            }
            y.duration = cfg.duration;
            let ticks = |pid: u32| cpu_ticks(pid).unwrap_or_default();
            let (h0, n0, c0) = (ticks(host_pid), ticks(nic_pid), ticks(std::process::id()));
            let label = format!("{} {w:?}", system.label());
            let r = ycsb::with_progress(&label, None, Some(y.duration), |p| ycsb::run(&y, p))?;
            let (h1, n1, c1) = (ticks(host_pid), ticks(nic_pid), ticks(std::process::id()));
            let row = row(system, &r, [(h0, h1), (n0, n1), (c0, c1)]);
            progress(&row);
            rows.push(row);
        }
        drop(d);
    }
    Ok(rows)
}

fn row(system: System, r: &ycsb::YcsbResult, cpu: [(CpuTicks, CpuTicks); 3]) -> PlacementRow {
    let [host, nic, client] = cpu.map(|(a, b)| cpu_seconds(a, b));
    let counter = |k: &str| r.server_counters.get(k).copied().unwrap_or(0).max(0) as f64;
    let at_client = r.local_runs as f64;
    let at_nic = counter("total.nic_executed");
    let at_host = counter("total.forwarded");
    let total = (at_client + at_nic + at_host).max(1.0);
    PlacementRow {
        system,
        label: system.label(),
        workload: r.workload,
        distribution: r.distribution,
        keys: r.keys,
        seconds: r.seconds,
        ops: r.ops,
        throughput_per_s: r.throughput_per_s,
        p50_us: r.latency.p50_us,
        p99_us: r.latency.p99_us,
        p999_us: r.latency.p999_us,
        read_p99_us: r.read_p99_us,
        update_p99_us: r.update_p99_us,
        host_cpu_s: host,
        host_cpu_s_per_mop: per_mop(host, r.ops),
        nic_cpu_s: nic,
        nic_cpu_s_per_mop: per_mop(nic, r.ops),
        client_cpu_s_per_mop: per_mop(client, r.ops),
        at_client: at_client / total,
        at_nic: at_nic / total,
        at_host: at_host / total,
        errors: r.errors,
        retransmits: r.retransmits,
        first_error: r.first_error.clone(),
    }
}

/// The table header and one line per row (also the markdown of `results/summary.md`).
pub fn markdown(rows: &[PlacementRow]) -> String {
    let mut s = String::from(
        "| workload | placement | ops/s | p50 µs | p99 µs | p99.9 µs | host CPU s/Mop | NIC CPU s/Mop | client / NIC / host | errors |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for r in rows {
        s += &format!(
            "| {:?} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.0}% / {:.0}% / {:.0}% | {} |\n",
            r.workload,
            r.label,
            r.throughput_per_s,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.host_cpu_s_per_mop,
            r.nic_cpu_s_per_mop,
            100.0 * r.at_client,
            100.0 * r.at_nic,
            100.0 * r.at_host,
            r.errors
        );
    }
    s
}

/// Bar charts: throughput, p99 and host CPU per million ops, grouped by workload.
pub fn write_charts(dir: &Path, name: &str, rows: &[PlacementRow]) -> anyhow::Result<Vec<PathBuf>> {
    let mut workloads: Vec<Workload> = Vec::new();
    let mut systems: Vec<System> = Vec::new();
    for r in rows {
        if !workloads.contains(&r.workload) {
            workloads.push(r.workload);
        }
        if !systems.contains(&r.system) {
            systems.push(r.system);
        }
    }
    let chart = |title: &str, y: &str, f: &dyn Fn(&PlacementRow) -> f64| BarChart {
        title: title.into(),
        y_label: y.into(),
        categories: workloads.iter().map(|w| format!("YCSB-{w:?}")).collect(),
        series: systems
            .iter()
            .map(|&s| BarSeries {
                name: s.label().into(),
                values: workloads
                    .iter()
                    .map(|&w| {
                        rows.iter()
                            .find(|r| r.system == s && r.workload == w)
                            .map(f)
                    })
                    .collect(),
            })
            .collect(),
    };
    let mut out = Vec::new();
    out.extend(
        chart("MICA: throughput by placement", "ops/s", &|r| {
            r.throughput_per_s
        })
        .write(dir, &format!("{name}-throughput"))?,
    );
    out.extend(
        chart("MICA: p99 latency by placement", "p99 (µs)", &|r| r.p99_us)
            .write(dir, &format!("{name}-p99"))?,
    );
    out.extend(
        chart("MICA: host CPU per million ops", "host CPU s / Mop", &|r| {
            r.host_cpu_s_per_mop
        })
        .write(dir, &format!("{name}-host-cpu"))?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_pin_where_they_should() {
        let base = DeployConfig::default();
        let host = System::Host.deploy(&base);
        assert_eq!(host.home, "host");
        assert!(host.dataplane_args.iter().any(|a| a == "--pin"));
        assert!(host.dataplane_args.iter().any(|a| a == "--no-client-hints"));
        assert_eq!(System::Nic.deploy(&base).home, "nic");
        let adaptive = System::Adaptive.deploy(&base);
        assert!(!adaptive.dataplane_args.iter().any(|a| a == "--pin"));
        assert_eq!(System::Client.placement(), Placement::Client);
        assert_eq!(System::Adaptive.placement(), Placement::Auto);
        assert_eq!(System::Host.placement(), Placement::Server);
    }

    #[test]
    fn cpu_per_million_ops() {
        assert_eq!(per_mop(2.0, 1_000_000), 2.0);
        assert_eq!(per_mop(0.5, 250_000), 2.0);
        assert_eq!(per_mop(1.0, 0), 0.0);
    }
}
