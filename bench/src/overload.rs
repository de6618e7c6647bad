//! `naam-bench overload` (issue 14 item 2): goodput and tail latency as the offered load goes
//! far past what the deployment serves, with the clients' congestion window (AIMD, the
//! default) and without it (every request on the wire at once, as before).
//!
//! The offered load is the number of requests each client thread keeps outstanding (closed
//! loop): from a few, where the deployment is not yet busy, to a thousand per thread, where
//! without a window the kernel's socket queues overflow and retransmissions take over. One
//! local deployment serves every point (MICA, YCSB-B: 95 % GETs).

use crate::plot::{Chart, Series};
use crate::ycsb::{self, KeyDist, Placement, Workload, YcsbConfig};
use naam_deploy::{DeployConfig, Deployment};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct OverloadConfig {
    /// Requests outstanding per client thread, one point each.
    pub outstanding: Vec<usize>,
    pub threads: usize,
    pub seconds: f64,
    pub keys: u64,
    pub timeout: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            outstanding: vec![1, 4, 16, 64, 256, 1024],
            threads: 2,
            seconds: 2.0,
            keys: 100_000,
            timeout: Duration::from_millis(50),
        }
    }
}

/// One point.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OverloadRow {
    /// `aimd` (the clients' congestion window) or `none`.
    pub window: &'static str,
    pub outstanding_per_thread: usize,
    pub threads: usize,
    pub seconds: f64,
    pub goodput_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub retransmits: u64,
    pub timeouts: u64,
    pub errors: u64,
    /// Requests the dataplane answered `busy`, and datagrams the kernel dropped on its
    /// sockets, during the point.
    pub busy: i128,
    pub kernel_drops: i128,
}

/// Runs every point with and without the window; `progress` sees each row.
pub fn run(
    cfg: &OverloadConfig,
    mut progress: impl FnMut(&OverloadRow),
) -> anyhow::Result<Vec<OverloadRow>> {
    let bins = crate::procs::binaries()?;
    let d = Deployment::start(
        bins,
        DeployConfig {
            mica_keys: cfg.keys,
            btree_keys: 1024,
            dataplane_args: ["--backoff", "yield", "--stale-ms", "1000"]
                .map(String::from)
                .to_vec(),
            log_dir: crate::procs::log_dir(),
            log_filter: "warn".into(),
            ..DeployConfig::default()
        },
    )?;
    let mut rows = Vec::new();
    for (window, max_window) in [("aimd", 4096), ("none", usize::MAX)] {
        for &n in &cfg.outstanding {
            let y = YcsbConfig {
                servers: vec![d.server()],
                workload: Workload::B,
                dist: KeyDist::Uniform,
                theta: 0.99,
                keys: cfg.keys,
                value_size: 64,
                placement: Placement::Server,
                duration: Duration::from_secs_f64(cfg.seconds),
                threads: cfg.threads,
                rate: None,
                outstanding: n,
                load: false,
                timeout: cfg.timeout,
                seed: 1,
                key_seed: None,
                credential: d.admin_key().ok(),
                max_window,
            };
            let label = format!("{window} {n} outstanding");
            let r = ycsb::with_progress(&label, None, Some(y.duration), |p| ycsb::run(&y, p))?;
            let delta = |k: &str| r.server_counters.get(k).copied().unwrap_or(0);
            let row = OverloadRow {
                window,
                outstanding_per_thread: n,
                threads: cfg.threads,
                seconds: r.seconds,
                goodput_per_s: r.throughput_per_s,
                p50_us: r.latency.p50_us,
                p99_us: r.latency.p99_us,
                p999_us: r.latency.p999_us,
                retransmits: r.retransmits,
                timeouts: r.timeouts,
                errors: r.errors,
                busy: delta("total.busy"),
                kernel_drops: delta("total.port_drop.kernel_rx"),
            };
            progress(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The table printed and kept in the README.
pub fn markdown(rows: &[OverloadRow]) -> String {
    let mut s = String::from(
        "| window | outstanding/thread | goodput ops/s | p50 µs | p99 µs | retransmits | timeouts | busy | kernel drops |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} |\n",
            r.window,
            r.outstanding_per_thread,
            r.goodput_per_s,
            r.p50_us,
            r.p99_us,
            r.retransmits,
            r.timeouts,
            r.busy,
            r.kernel_drops
        );
    }
    s
}

/// For each window mode: its goodput at the highest load as a fraction of its peak.
pub fn kept_fraction(rows: &[OverloadRow], window: &str) -> Option<f64> {
    let mine: Vec<&OverloadRow> = rows.iter().filter(|r| r.window == window).collect();
    let peak = mine.iter().map(|r| r.goodput_per_s).fold(0.0, f64::max);
    let last = mine.iter().max_by_key(|r| r.outstanding_per_thread)?;
    (peak > 0.0).then(|| last.goodput_per_s / peak)
}

/// Goodput and p99 against the load, one line per window mode.
pub fn write_charts(dir: &Path, rows: &[OverloadRow]) -> anyhow::Result<Vec<PathBuf>> {
    let series = |f: &dyn Fn(&OverloadRow) -> f64| -> Vec<Series> {
        ["aimd", "none"]
            .iter()
            .map(|w| Series {
                name: format!("window: {w}"),
                points: rows
                    .iter()
                    .filter(|r| r.window == *w)
                    .map(|r| (r.outstanding_per_thread as f64, f(r)))
                    .collect(),
            })
            .collect()
    };
    let mut out = Chart {
        title: "Goodput under overload".into(),
        x_label: "requests outstanding per client thread".into(),
        y_label: "goodput (kops/s)".into(),
        log_x: true,
        series: series(&|r| r.goodput_per_s / 1000.0),
        markers: Vec::new(),
    }
    .write(dir, "overload-goodput")?;
    out.extend(
        Chart {
            title: "p99 latency under overload".into(),
            x_label: "requests outstanding per client thread".into(),
            y_label: "p99 latency (ms)".into(),
            log_x: true,
            series: series(&|r| r.p99_us / 1000.0),
            markers: Vec::new(),
        }
        .write(dir, "overload-p99")?,
    );
    Ok(out)
}
