//! The demo (issue 9 item 5, `cargo run --release -- demo`): a host agent and a dataplane
//! started as separate processes on the embedded defaults (UDP on 127.0.0.1, the shared-memory
//! link, the software eSwitch, idle back-off on), MICA and the B-tree built by the host agent,
//! YCSB-B (95 % GET / 5 % PUT, Zipf 0.99) plus B-tree lookups driven open-loop from a client
//! that follows placement hints, host congestion injected half-way, and a live view: throughput,
//! p50/p99, where messages executed (client / NIC / host) and each placement change with its
//! reason as it happens. Then a summary table and a plot.

use hdrhistogram::Histogram;
use naam_bench::plot::{Chart, Series};
use naam_bench::shift::{class_name, control_client, Apps, DecisionLog, PolicyDecision};
use naam_bench::ycsb::{fill_value, key, KeyChooser, KeyDist, Rng};
use naam_client::{ExecMode, Mica, Response};
use naam_core::wire::Location;
use naam_deploy::{Binaries, DeployError, Deployment};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub seconds: f64,
    /// Offered load, operations per second (open loop).
    pub rate: f64,
    /// Length of the host congestion injected half-way.
    pub congest_ms: u64,
    /// Share of B-tree lookups among the operations (the rest is YCSB-B on MICA).
    pub btree_share: f64,
    pub mica_keys: u64,
    pub btree_keys: u64,
    /// Seconds between two redraws of the live view.
    pub refresh: Duration,
    pub out: PathBuf,
    /// Process logs go here when set (else discarded).
    pub log_dir: Option<PathBuf>,
    /// Print nothing while running (tests).
    pub quiet: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            seconds: 20.0,
            rate: 10_000.0,
            congest_ms: 5_000,
            btree_share: 0.1,
            mica_keys: 65_536,
            btree_keys: 65_536,
            refresh: Duration::from_millis(500),
            out: naam_bench::report::run_folder(),
            log_dir: None,
            quiet: false,
        }
    }
}

/// Completed operations of one period.
#[derive(Clone)]
struct Window {
    hist: Histogram<u64>,
    at: [u64; 3],
    errors: u64,
}

impl Window {
    fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds"),
            at: [0; 3],
            errors: 0,
        }
    }

    fn ops(&self) -> u64 {
        self.hist.len()
    }

    fn share(&self, l: Location) -> f64 {
        let n: u64 = self.at.iter().sum();
        self.at[l as usize] as f64 / n.max(1) as f64
    }

    fn us(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.value_at_quantile(q) as f64 / 1e3
        }
    }
}

/// What the load thread shares with the view: the current window, and totals per phase
/// (before, during, after the congestion, by the time each operation was due).
struct Live {
    window: Window,
    phases: [Window; 3],
}

/// One row of the results: a refresh period.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoRow {
    pub t_s: f64,
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub client: f64,
    pub nic: f64,
    pub host: f64,
    pub errors: u64,
    pub host_congested: bool,
}

/// One phase of the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseRow {
    pub phase: &'static str,
    pub seconds: f64,
    pub ops: u64,
    pub ops_per_s: f64,
    /// `None` (null in JSON, empty in CSV) when no operation of the phase completed.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub client: f64,
    pub nic: f64,
    pub host: f64,
    pub errors: u64,
}

/// What a demo run measured.
pub struct DemoReport {
    pub rows: Vec<DemoRow>,
    pub phases: Vec<PhaseRow>,
    pub decisions: Vec<PolicyDecision>,
    pub interrupted: bool,
    pub congested_at_s: f64,
    pub files: Vec<PathBuf>,
    /// Both processes exited cleanly when stopped.
    pub clean_stop: bool,
}

impl DemoReport {
    /// Stopped (Ctrl-C) before the load started: nothing measured, nothing written.
    fn interrupted_at_start() -> Self {
        Self {
            rows: Vec::new(),
            phases: Vec::new(),
            decisions: Vec::new(),
            interrupted: true,
            congested_at_s: 0.0,
            files: Vec::new(),
            clean_stop: true,
        }
    }
}

fn pct(x: f64) -> String {
    format!("{:>3.0}%", x * 100.0)
}

/// Runs the demo until `cfg.seconds` have passed or `stop` is set (Ctrl-C).
pub fn run(bins: Binaries, cfg: &DemoConfig, stop: Arc<AtomicBool>) -> anyhow::Result<DemoReport> {
    let say = |s: String| {
        if !cfg.quiet {
            out(&stop, format_args!("{s}\n"));
        }
    };
    say(
        "NAAM-rs demo: starting a host agent and a dataplane (separate processes; UDP on \
         127.0.0.1, shared-memory link, software eSwitch, idle back-off on)"
            .to_owned(),
    );
    // The results' folder is made now: one that cannot be made would lose a whole run.
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| anyhow::anyhow!("results folder {}: {e}", cfg.out.display()))?;
    let t = Instant::now();
    let mut dep = match Deployment::start_until(
        bins,
        naam_bench::shift::deploy_config(cfg.mica_keys, cfg.btree_keys, cfg.log_dir.clone()),
        stop.clone(),
    ) {
        Ok(d) => d,
        Err(DeployError::Cancelled { .. }) => return Ok(DemoReport::interrupted_at_start()),
        Err(e) => return Err(e.into()),
    };
    say(format!(
        "  host agent pid {} built MICA ({} keys) and the B-tree ({} keys); dataplane pid {} \
         serves {} (control {}); ready in {:.1} s",
        dep.host_pid().unwrap_or(0),
        cfg.mica_keys,
        cfg.btree_keys,
        dep.dataplane_pid().unwrap_or(0),
        dep.data_addr(),
        dep.control_addr(),
        t.elapsed().as_secs_f64()
    ));
    say(format!(
        "  meanwhile, from another shell: naam --server {} --key-file {} stats",
        dep.data_addr(),
        dep.admin_key_file().display()
    ));
    let seconds = cfg.seconds.max(0.5);
    let congest_at = seconds / 2.0;
    let congest_end = congest_at + cfg.congest_ms as f64 / 1e3;
    say(format!(
        "  load: YCSB-B on MICA (95% GET / 5% PUT, Zipf 0.99) + {:.0}% B-tree lookups, \
         {:.0} ops/s open loop, for {seconds:.0} s; classes start at the host; host congestion \
         at {congest_at:.1} s for {:.1} s. Ctrl-C stops.",
        cfg.btree_share * 100.0,
        cfg.rate,
        cfg.congest_ms as f64 / 1e3
    ));

    let server = dep.server();
    let admin = dep.admin_key()?;
    let mut ctl = control_client(server, Some(admin.clone()))?;
    // The load's client is made in its thread (clients are not `Send`); wait until it is ready.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let live = Arc::new(Mutex::new(Live {
        window: Window::new(),
        phases: [Window::new(), Window::new(), Window::new()],
    }));
    let (start_tx, start_rx) = std::sync::mpsc::channel();
    let load_stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (live, load_stop, cfg) = (live.clone(), load_stop.clone(), cfg.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let connected = Apps::connect(
                server,
                ExecMode::Auto,
                Duration::from_millis(20),
                Some(admin),
            );
            let mut apps = match connected {
                Ok(a) => {
                    let _ = ready_tx.send(Ok(()));
                    a
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Err(e);
                }
            };
            let start = Instant::now() + Duration::from_millis(10);
            let _ = start_tx.send((start, naam_link::now_ns() + 10_000_000));
            let phase = |due: Instant| {
                let s = due.saturating_duration_since(start).as_secs_f64();
                if s < congest_at {
                    0
                } else if s < congest_end {
                    1
                } else {
                    2
                }
            };
            load(&mut apps, &cfg, start, &load_stop, &live, phase)
        })
    };

    match ready_rx.recv() {
        Ok(Ok(())) => {}
        // The terminal's Ctrl-C reaches the host agent and the dataplane too: a client that
        // found them gone is part of the stop.
        _ if stop.load(Ordering::Relaxed) => {
            let _ = loader.join();
            let mut r = DemoReport::interrupted_at_start();
            r.clean_stop = dep.stop(Duration::from_secs(3));
            return Ok(r);
        }
        Ok(Err(e)) => anyhow::bail!("client: {e}"),
        Err(_) => anyhow::bail!("the load thread ended early"),
    }
    let (start, mono0) = start_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the load thread ended early"))?;
    let tty = std::io::stdout().is_terminal() && !cfg.quiet;
    let mut log = DecisionLog::default();
    let mut rows = Vec::new();
    let mut injected = false;
    let mut next = start + cfg.refresh;
    let end = start + Duration::from_secs_f64(seconds);
    let mut last = start;
    let mut status = String::new();
    let interrupted = loop {
        if stop.load(Ordering::Relaxed) {
            break true;
        }
        let now = Instant::now();
        let t_s = now.saturating_duration_since(start).as_secs_f64();
        if !injected && t_s >= congest_at {
            injected = true;
            let app = format!("congest:{}", cfg.congest_ms);
            let r = ctl.describe(0, &app);
            let line = match r {
                Ok(_) => format!(
                    "  ! {t_s:6.3}s  host congestion injected for {:.1} s (the host agent's \
                     workers spin, busy and not serving)",
                    cfg.congest_ms as f64 / 1e3
                ),
                Err(e) => format!("  ! {t_s:6.3}s  could not inject host congestion: {e}"),
            };
            print_above(&stop, tty, &status, &line, cfg.quiet);
        }
        if now >= next || now >= end {
            next += cfg.refresh;
            // New decisions first, each on its own line.
            if let Ok(stats) = ctl.server_stats(0) {
                for line in decision_lines(&log.absorb(&stats, mono0)) {
                    print_above(&stop, tty, &status, &format!("  > {line}"), cfg.quiet);
                }
            }
            let w = {
                let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
                std::mem::replace(&mut l.window, Window::new())
            };
            let dt = now.saturating_duration_since(last).as_secs_f64().max(1e-3);
            last = now;
            let congested = t_s >= congest_at && t_s < congest_end;
            let row = DemoRow {
                t_s,
                ops_per_s: w.ops() as f64 / dt,
                p50_us: w.us(0.5),
                p99_us: w.us(0.99),
                client: w.share(Location::Client),
                nic: w.share(Location::Nic),
                host: w.share(Location::Host),
                errors: w.errors,
                host_congested: congested,
            };
            status = format!(
                "{:6.1}s {:>8.0} ops/s  p50 {:>6.0} us  p99 {:>7.0} us | client {} NIC {} host {} | {}",
                row.t_s,
                row.ops_per_s,
                row.p50_us,
                row.p99_us,
                pct(row.client),
                pct(row.nic),
                pct(row.host),
                if congested { "HOST CONGESTED" } else { "calm" }
            );
            if row.errors > 0 {
                status += &format!(" | {} errors", row.errors);
            }
            if !cfg.quiet {
                if tty {
                    out(&stop, format_args!("\r\x1b[2K{status}"));
                } else {
                    out(&stop, format_args!("{status}\n"));
                }
            }
            rows.push(row);
            if now >= end {
                break false;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if tty {
        out(&stop, format_args!("\n"));
    }
    load_stop.store(true, Ordering::Relaxed);
    let load_result = loader
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
    // The last decisions (not after Ctrl-C: the terminal's SIGINT has stopped the processes
    // too, and asking them would only wait for the timeouts).
    if !interrupted {
        if let Ok(stats) = ctl.server_stats(0) {
            log.absorb(&stats, mono0);
        }
    }
    drop(ctl);
    let clean_stop = dep.stop(Duration::from_secs(3));
    drop(dep); // removes the run directory
    load_result?;

    let elapsed = last.saturating_duration_since(start).as_secs_f64();
    let spans = [
        ("before congestion", 0.0, congest_at.min(elapsed)),
        (
            "host congested",
            congest_at.min(elapsed),
            congest_end.min(elapsed),
        ),
        ("after", congest_end.min(elapsed), elapsed),
    ];
    let l = live.lock().unwrap_or_else(|e| e.into_inner());
    // A phase the run was stopped before is left out (it said 0 ops/s and a 0 us p99).
    let phases: Vec<PhaseRow> = spans
        .iter()
        .zip(l.phases.iter())
        .filter(|(&(_, a, b), w)| b > a || w.ops() + w.errors > 0)
        .map(|(&(phase, a, b), w)| {
            let secs = (b - a).max(0.0);
            PhaseRow {
                phase,
                seconds: secs,
                ops: w.ops(),
                ops_per_s: if secs > 0.0 {
                    w.ops() as f64 / secs
                } else {
                    0.0
                },
                p50_us: (w.ops() > 0).then(|| w.us(0.5)),
                p99_us: (w.ops() > 0).then(|| w.us(0.99)),
                client: w.share(Location::Client),
                nic: w.share(Location::Nic),
                host: w.share(Location::Host),
                errors: w.errors,
            }
        })
        .collect();
    drop(l);
    let mut report = DemoReport {
        rows,
        phases,
        decisions: log.all(),
        interrupted,
        congested_at_s: congest_at,
        files: Vec::new(),
        clean_stop,
    };
    report.files = write(&report, cfg, congest_end)?;
    Ok(report)
}

/// One line per group of decisions taken at the same instant with the same move and reason:
/// `t  from -> to  reason: class names`.
pub fn decision_lines(ds: &[PolicyDecision]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut i = 0;
    while i < ds.len() {
        let d = &ds[i];
        let mut names = vec![format!("{} (class {})", class_name(d.class), d.class)];
        let mut j = i + 1;
        while j < ds.len()
            && (ds[j].at_us, &ds[j].from, &ds[j].to, &ds[j].reason)
                == (d.at_us, &d.from, &d.to, &d.reason)
        {
            names.push(format!(
                "{} (class {})",
                class_name(ds[j].class),
                ds[j].class
            ));
            j += 1;
        }
        lines.push(format!(
            "{:7.3}s  {:>6} -> {:<6} {}: {}",
            d.at_ms() / 1e3,
            d.from,
            d.to,
            d.reason_text(),
            names.join(", ")
        ));
        i = j;
    }
    lines
}

/// Prints `line` above the live status line (redrawn after it on a terminal).
fn print_above(stop: &AtomicBool, tty: bool, status: &str, line: &str, quiet: bool) {
    if quiet {
        return;
    }
    if tty {
        out(stop, format_args!("\r\x1b[2K{line}\n{status}"));
    } else {
        out(stop, format_args!("{line}\n"));
    }
}

/// Writes to stdout. A stdout nobody reads any more (`naam-rs demo | head -1`) stops the
/// demo as Ctrl-C does, so that it winds its processes down, where `println!` panicked.
fn out(stop: &AtomicBool, text: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    if o.write_fmt(text).and_then(|()| o.flush()).is_err() {
        stop.store(true, Ordering::Relaxed);
    }
}

/// The client's open loop: YCSB-B on MICA plus B-tree lookups.
fn load(
    apps: &mut Apps,
    cfg: &DemoConfig,
    start: Instant,
    stop: &AtomicBool,
    live: &Mutex<Live>,
    phase: impl Fn(Instant) -> usize,
) -> anyhow::Result<()> {
    let chooser = KeyChooser::new(KeyDist::Zipfian, apps.mica_keys, 0.99);
    let mut rng = Rng::new(42);
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(1.0));
    let mut inflight: HashMap<naam_client::Ticket, Instant> = HashMap::new();
    let mut value = vec![0u8; 64];
    let mut version = 1u64;
    let mut next = start;
    let mut stopped_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
            stopped_at = Some(now);
        }
        if let Some(s) = stopped_at {
            // Wait a little for the replies of the last operations, then leave.
            if inflight.is_empty() || now > s + Duration::from_millis(300) {
                return Ok(());
            }
        }
        // Far behind schedule (a stall): skip ahead instead of sending a burst.
        if now.saturating_duration_since(next) > Duration::from_millis(100) {
            next = now;
        }
        while stopped_at.is_none() && next <= now && inflight.len() < 4096 {
            let due = next;
            next += interval;
            let r = rng.next_f64();
            let t = if r < cfg.btree_share {
                apps.submit_lookup(rng.next_u64())
            } else {
                let k = key(apps.mica_seed, chooser.next(&mut rng));
                if rng.next_f64() < 0.95 {
                    apps.mica.submit_get(&k)
                } else {
                    fill_value(version, version, &mut value);
                    version += 1;
                    apps.mica.submit_put(&k, &value)
                }
            };
            match t {
                Ok(t) => {
                    inflight.insert(t, due);
                }
                Err(_) => {
                    let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
                    l.window.errors += 1;
                    l.phases[phase(due)].errors += 1;
                }
            }
        }
        naam_bench::load::collect_replies(
            apps.client(),
            &mut inflight,
            next,
            Duration::from_millis(2),
            |due, arrived, result| {
                let ns = arrived.saturating_duration_since(due).as_nanos().max(1) as u64;
                let at = match &result {
                    Ok(Response::Am(r))
                        if Mica::<naam_client::Client>::decode(r).is_ok()
                            || r.offload == naam_client::bundled::BTREE_LOOKUP.id =>
                    {
                        Some(r.executed_at)
                    }
                    _ => None,
                };
                let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
                let p = phase(due);
                match at {
                    Some(loc) => {
                        let _ = l.window.hist.record(ns);
                        l.window.at[loc as usize] += 1;
                        let _ = l.phases[p].hist.record(ns);
                        l.phases[p].at[loc as usize] += 1;
                    }
                    None => {
                        l.window.errors += 1;
                        l.phases[p].errors += 1;
                    }
                }
            },
        )?;
    }
}

/// Writes `demo.{json,csv}` (one row per refresh), `demo-phases.{json,csv}`,
/// `demo-decisions.{json,csv}` and the plot `demo.{svg,png}` under `cfg.out`.
fn write(r: &DemoReport, cfg: &DemoConfig, congest_end: f64) -> anyhow::Result<Vec<PathBuf>> {
    let dir = &cfg.out;
    let mut files = naam_bench::report::write_rows(dir, "demo", &r.rows)?;
    files.extend(naam_bench::report::write_rows(
        dir,
        "demo-phases",
        &r.phases,
    )?);
    files.extend(naam_bench::report::write_rows(
        dir,
        "demo-decisions",
        &r.decisions,
    )?);
    let s = |name: &str, f: fn(&DemoRow) -> f64| Series {
        name: name.into(),
        points: r.rows.iter().map(|x| (x.t_s, f(x))).collect(),
    };
    let mut markers = vec![(r.congested_at_s, "host congested".to_owned())];
    if r.rows.last().is_some_and(|x| x.t_s >= congest_end) {
        markers.push((congest_end, "host calm".to_owned()));
    }
    let chart = Chart {
        title: format!(
            "NAAM-rs demo: where YCSB-B + B-tree messages execute ({:.0} ops/s)",
            cfg.rate
        ),
        x_label: "time (s)".into(),
        y_label: "share of completed messages".into(),
        log_x: false,
        series: vec![
            s("client", |x| x.client),
            s("NIC", |x| x.nic),
            s("host", |x| x.host),
        ],
        markers,
    };
    files.extend(chart.write(dir, "demo")?);
    Ok(files)
}

/// Prints the summary after a run.
pub fn print_summary(r: &DemoReport) {
    // After the run: a closed stdout only loses the summary.
    let _ = write_summary(&mut std::io::stdout().lock(), r);
}

/// A latency for the summary table: `-` where nothing completed.
fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

fn write_summary(o: &mut impl Write, r: &DemoReport) -> std::io::Result<()> {
    writeln!(o)?;
    writeln!(
        o,
        "{:<18} {:>7} {:>9} {:>8} {:>8} {:>7} {:>5} {:>5} {:>6}",
        "phase", "seconds", "ops/s", "p50 us", "p99 us", "client", "NIC", "host", "errors"
    )?;
    for p in &r.phases {
        writeln!(
            o,
            "{:<18} {:>7.1} {:>9.0} {:>8} {:>8} {:>7} {:>5} {:>5} {:>6}",
            p.phase,
            p.seconds,
            p.ops_per_s,
            us(p.p50_us),
            us(p.p99_us),
            pct(p.client),
            pct(p.nic),
            pct(p.host),
            p.errors
        )?;
    }
    writeln!(
        o,
        "{} placement decisions (class: from -> to, reason):",
        r.decisions.len()
    )?;
    for line in decision_lines(&r.decisions) {
        writeln!(o, "  {line}")?;
    }
    Ok(())
}
