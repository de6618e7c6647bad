//! The four runs and their table. Each run starts its server processes, then one generator
//! process, waits for the generator's report, and stops everything (every child is killed
//! when its guard drops, whatever happens).

use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use naam_core::wire::Location;
use naam_deploy::{Binaries, DeployConfig, Deployment};

use super::drive::{DriveConfig, GenReport};
use super::procs::{self, pin_process, Proc};
use super::requests::{Expect, TableSpec};
use super::testpmd;

/// The runs, in the order they are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// `dpdk-testpmd` io forwarding on the memif server side.
    TestpmdMemif,
    /// The dataplane with a DPDK memif port, NIC-executed MICA GET.
    NaamMemif,
    /// A kernel UDP echo with the same batching.
    UdpEcho,
    /// The dataplane with its UDP port, NIC-executed MICA GET.
    NaamUdp,
}

impl RunKind {
    pub const ALL: [RunKind; 4] = [
        RunKind::TestpmdMemif,
        RunKind::NaamMemif,
        RunKind::UdpEcho,
        RunKind::NaamUdp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RunKind::TestpmdMemif => "testpmd-memif",
            RunKind::NaamMemif => "naam-memif",
            RunKind::UdpEcho => "udp-echo",
            RunKind::NaamUdp => "naam-udp",
        }
    }

    /// The reference run a NAAM run is divided by.
    pub fn reference(self) -> Option<RunKind> {
        match self {
            RunKind::NaamMemif => Some(RunKind::TestpmdMemif),
            RunKind::NaamUdp => Some(RunKind::UdpEcho),
            _ => None,
        }
    }

    fn transport(self) -> &'static str {
        match self {
            RunKind::TestpmdMemif | RunKind::NaamMemif => "net_memif",
            RunKind::UdpEcho | RunKind::NaamUdp => "kernel UDP (loopback)",
        }
    }
}

/// Settings of the whole benchmark.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// This program (its `gen-memif`, `gen-udp`, `udp-echo`, `host-agent` and `dataplane`
    /// subcommands are the processes of the runs).
    pub exe: PathBuf,
    pub testpmd: PathBuf,
    pub runs: Vec<RunKind>,
    pub warmup: Duration,
    pub measure: Duration,
    pub burst: usize,
    /// Requests outstanding over memif.
    pub window: usize,
    /// Requests outstanding over kernel UDP (socket buffers are small).
    pub udp_window: usize,
    /// Distinct requests (keys) cycled through.
    pub requests: usize,
    /// Fully check every `sample`-th reply.
    pub sample: u64,
    pub keys: u64,
    pub value_size: usize,
    pub gen_core: u32,
    pub server_core: u32,
    /// The dataplane's `--engine`.
    pub engine: String,
    /// Where the servers' logs go.
    pub log_dir: PathBuf,
    /// Times the whole run set is made (the machine is shared: repeating interleaves the
    /// references and the measured runs over time).
    pub rounds: u32,
}

/// What a generator process is told (as JSON on its command line).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GenConfig {
    pub table: TableSpec,
    pub requests: usize,
    pub drive: DriveConfig,
}

/// One line of the results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Which repetition of the run set (1, 2, ...); ratios pair rows of the same round.
    pub round: u32,
    pub run: &'static str,
    pub transport: &'static str,
    pub server: String,
    /// The run this one is divided by (empty for references).
    pub reference: &'static str,
    pub worker_cores: u32,
    /// Back-off of the measured server core (spin: DESIGN §9, dedicated cores).
    pub backoff: &'static str,
    pub mpps: f64,
    pub kpps_per_worker_core: f64,
    /// `mpps / reference mpps`.
    pub ratio: Option<f64>,
    pub replies: u64,
    pub sent: u64,
    pub checked: u64,
    pub bad: u64,
    pub first_bad: Option<String>,
    pub lost: u64,
    pub stalls: u64,
    pub seconds: f64,
    /// Share of the measurement the generator was on a CPU (below 1: its core was shared).
    pub gen_cpu_share: Option<f64>,
    pub burst: usize,
    pub window: usize,
    pub gen_core: u32,
    pub server_core: u32,
    /// The server's own counters over the generator's run (warm-up included).
    pub server_stats: String,
}

/// Runs `cfg.runs` in order, `cfg.rounds` times; a run that fails is reported and skipped,
/// the others go on. `each` sees every row as it is measured.
pub fn run_all(cfg: &BenchConfig, mut each: impl FnMut(&Row)) -> Vec<Row> {
    let _ = std::fs::create_dir_all(&cfg.log_dir);
    let mut rows: Vec<Row> = Vec::new();
    for round in 1..=cfg.rounds.max(1) {
        for &kind in &cfg.runs {
            let r = match kind {
                // dpdk-testpmd (22.11) as a memif server now and then refuses the generator's
                // first connection and then panics in its interrupt thread (its log shows the
                // panic): the reference is measured again, once. NAAM's own runs are never
                // retried: their failures are what this benchmark reports.
                RunKind::TestpmdMemif => testpmd_memif(cfg).or_else(|e| {
                    eprintln!("{} (round {round}): {e}; measuring it again", kind.name());
                    testpmd_memif(cfg)
                }),
                RunKind::NaamMemif => naam_server(cfg, kind),
                RunKind::UdpEcho => udp_echo(cfg),
                RunKind::NaamUdp => naam_server(cfg, kind),
            };
            match r {
                Ok((report, server, stats)) => {
                    let mut row = row(cfg, kind, server, &report, stats);
                    row.round = round;
                    row.ratio = ratio_to_reference(&rows, &row);
                    each(&row);
                    rows.push(row);
                }
                Err(e) => eprintln!("{} (round {round}): failed: {e}", kind.name()),
            }
        }
    }
    rows
}

/// `row`'s throughput over that of its reference run in the same round, if measured.
pub fn ratio_to_reference(rows: &[Row], row: &Row) -> Option<f64> {
    let reference = rows
        .iter()
        .find(|r| r.round == row.round && r.run == row.reference && !row.reference.is_empty())?;
    (reference.mpps > 0.0).then(|| row.mpps / reference.mpps)
}

/// The median of the ratios of NAAM run `kind` over the rounds.
pub fn median_ratio(rows: &[Row], kind: RunKind) -> Option<f64> {
    let mut v: Vec<f64> = rows
        .iter()
        .filter(|r| r.run == kind.name())
        .filter_map(|r| r.ratio)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn row(cfg: &BenchConfig, kind: RunKind, server: String, r: &GenReport, stats: String) -> Row {
    let cores = 1;
    let mpps = r.replies_per_s / 1e6;
    Row {
        round: 1,
        run: kind.name(),
        transport: kind.transport(),
        server,
        reference: kind.reference().map_or("", RunKind::name),
        worker_cores: cores,
        backoff: "spin",
        mpps,
        kpps_per_worker_core: r.replies_per_s / 1e3 / cores as f64,
        ratio: None,
        replies: r.good,
        sent: r.sent,
        checked: r.checked,
        bad: r.bad,
        first_bad: r.first_bad.clone(),
        lost: r.lost,
        stalls: r.stalls,
        seconds: r.seconds,
        gen_cpu_share: r.cpu_share,
        burst: cfg.burst,
        window: match kind {
            RunKind::TestpmdMemif | RunKind::NaamMemif => cfg.window,
            _ => cfg.udp_window,
        },
        gen_core: cfg.gen_core,
        server_core: cfg.server_core,
        server_stats: stats,
    }
}

/// Prints the table of `rows`, and the median ratio of each NAAM run over the rounds.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:>5} {:<14} {:<22} {:>6} {:>8} {:>9} {:>12} {:>8} {:>9} {:>5}",
        "round",
        "run",
        "transport",
        "cores",
        "back-off",
        "Mpps",
        "Kpps/core",
        "ratio",
        "checked",
        "bad"
    );
    for r in rows {
        println!(
            "{:>5} {:<14} {:<22} {:>6} {:>8} {:>9.3} {:>12.1} {:>8} {:>9} {:>5}",
            r.round,
            r.run,
            r.transport,
            r.worker_cores,
            r.backoff,
            r.mpps,
            r.kpps_per_worker_core,
            match (r.ratio, r.reference.is_empty()) {
                (Some(x), _) => format!("{x:.3}"),
                (None, true) => "ref".into(),
                (None, false) => "-".into(),
            },
            r.checked,
            r.bad
        );
    }
    for kind in [RunKind::NaamMemif, RunKind::NaamUdp] {
        if let (Some(m), Some(reference)) = (median_ratio(rows, kind), kind.reference()) {
            println!(
                "{} / {}: median ratio {m:.3} over {} round(s)",
                kind.name(),
                reference.name(),
                rows.iter()
                    .filter(|r| r.run == kind.name() && r.ratio.is_some())
                    .count()
            );
        }
    }
}

/// Appends a child's standard output to its log (standard error already goes there).
fn append_log(log: &Path, text: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
    {
        let _ = writeln!(f, "{text}");
    }
}

/// Per-run names of sockets and DPDK runtime folders, removed when the run ends.
struct Scratch {
    tag: String,
    socket: PathBuf,
}

impl Scratch {
    fn new(kind: RunKind) -> Self {
        let tag = format!("naam-mb-{}-{}", std::process::id(), kind.name());
        let socket = std::env::temp_dir().join(format!("{tag}.sock"));
        let _ = std::fs::remove_file(&socket);
        Self { tag, socket }
    }

    fn prefix(&self, side: &str) -> String {
        format!("{}-{side}", self.tag)
    }

    /// The `--vdev` of the memif `role` side. The control socket is an abstract one (the
    /// PMD's default): with `socket-abstract=no`, DPDK 22.11's memif server never brought
    /// the link up here and testpmd crashed.
    fn vdev(&self, role: &str) -> String {
        format!("net_memif0,role={role},socket={}", self.socket.display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        for side in ["server", "gen"] {
            procs::remove_dpdk_runtime(&self.prefix(side));
        }
    }
}

/// EAL arguments common to both memif sides: no hugepages, no PCI scan, one lcore.
fn eal_common(core: u32, prefix: &str, vdev: &str) -> String {
    format!(
        "--no-huge -m 256 --no-pci --no-telemetry --log-level=notice -l {core} \
         --file-prefix={prefix} --vdev={vdev}"
    )
}

fn gen_config(cfg: &BenchConfig, kind: RunKind, table: TableSpec, expect: Expect) -> GenConfig {
    let memif = kind.transport() == RunKind::NaamMemif.transport();
    GenConfig {
        table,
        requests: cfg.requests,
        drive: DriveConfig {
            warmup: cfg.warmup,
            measure: cfg.measure,
            burst: cfg.burst,
            window: if memif { cfg.window } else { cfg.udp_window },
            sample: cfg.sample,
            // Memif never drops (a full ring stops the sender), so a silence there is a
            // server descheduled on this shared machine, not loss; kernel UDP may drop.
            stall: Duration::from_millis(if memif { 250 } else { 50 }),
            expect,
        },
    }
}

/// Runs a generator process to the end and reads its report (its last line of output).
fn run_generator(cfg: &BenchConfig, name: &str, cmd: Command) -> Result<GenReport, String> {
    let log = cfg.log_dir.join(format!("{name}.log"));
    let mut p = Proc::spawn(name, cmd, Some(&log))?;
    let limit = cfg.warmup + cfg.measure + Duration::from_secs(60);
    let (status, out) = p.wait_exit(limit)?;
    if !status.success() {
        return Err(format!("{name} failed ({status}); see {}", log.display()));
    }
    let last = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
    serde_json::from_str(last).map_err(|e| format!("{name}: report {last:?}: {e}"))
}

fn memif_generator(cfg: &BenchConfig, s: &Scratch, g: &GenConfig) -> Result<GenReport, String> {
    let mut cmd = Command::new(&cfg.exe);
    cmd.arg("gen-memif")
        .arg(format!(
            "--eal={}",
            eal_common(cfg.gen_core, &s.prefix("gen"), &s.vdev("client"))
        ))
        .arg("--config")
        .arg(serde_json::to_string(g).map_err(|e| e.to_string())?);
    run_generator(cfg, "gen-memif", cmd)
}

fn udp_generator(
    cfg: &BenchConfig,
    server: SocketAddrV4,
    g: &GenConfig,
) -> Result<GenReport, String> {
    let mut cmd = procs::pinned(cfg.gen_core, &cfg.exe);
    cmd.arg("gen-udp")
        .arg("--server")
        .arg(server.to_string())
        .arg("--config")
        .arg(serde_json::to_string(g).map_err(|e| e.to_string())?);
    run_generator(cfg, "gen-udp", cmd)
}

type RunResult = Result<(GenReport, String, String), String>;

fn testpmd_memif(cfg: &BenchConfig) -> RunResult {
    let s = Scratch::new(RunKind::TestpmdMemif);
    let mut cmd = Command::new(&cfg.testpmd);
    cmd.args(testpmd::args(
        &s.vdev("server"),
        &s.prefix("server"),
        cfg.server_core,
        cfg.gen_core,
        cfg.burst,
    ));
    let log = cfg.log_dir.join("testpmd.log");
    let mut tp = Proc::spawn("dpdk-testpmd", cmd, Some(&log))?;
    // testpmd's output is block-buffered into the pipe: wait for its socket, not its words.
    // The generator then waits for the memif link to come up.
    procs::wait_for_abstract_socket(&s.socket.to_string_lossy(), Duration::from_secs(30))?;
    let table = TableSpec::assumed(cfg.keys, cfg.value_size);
    let report = memif_generator(
        cfg,
        &s,
        &gen_config(cfg, RunKind::TestpmdMemif, table, Expect::Echo),
    )?;
    tp.say("\n")?;
    let (_, out) = tp.wait_exit(Duration::from_secs(20))?;
    append_log(&log, &out);
    // testpmd reports deltas from the counters it saw at start; net_memif resets its
    // counters when the link comes up, after that, so the deltas can wrap.
    let stats = match testpmd::parse_stats(&out) {
        None => "testpmd printed no forward statistics".into(),
        Some(f) if f.rx_packets > u64::MAX / 2 || f.tx_packets > u64::MAX / 2 => {
            "testpmd forward statistics unusable (memif reset its counters at link up)".into()
        }
        Some(f) => format!(
            "testpmd rx {} rx_dropped {} tx {} tx_dropped {}",
            f.rx_packets, f.rx_dropped, f.tx_packets, f.tx_dropped
        ),
    };
    let server = format!(
        "dpdk-testpmd --forward-mode=io --nb-cores=1 --burst={} (forwarding lcore {})",
        cfg.burst, cfg.server_core
    );
    Ok((report, server, stats))
}

fn udp_echo(cfg: &BenchConfig) -> RunResult {
    let mut cmd = procs::pinned(cfg.server_core, &cfg.exe);
    let lifetime = cfg.warmup + cfg.measure + Duration::from_secs(60);
    cmd.arg("udp-echo")
        .arg("--seconds")
        .arg(lifetime.as_secs().to_string())
        .arg("--burst")
        .arg(cfg.burst.to_string());
    let mut echo = Proc::spawn("udp-echo", cmd, Some(&cfg.log_dir.join("udp-echo.log")))?;
    let line = echo.wait_line(Duration::from_secs(20), |l| {
        l.starts_with("udp-echo serving")
    })?;
    let addr: SocketAddrV4 = line
        .split_whitespace()
        .last()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("udp-echo said {line:?}"))?;
    let table = TableSpec::assumed(cfg.keys, cfg.value_size);
    let report = udp_generator(
        cfg,
        addr,
        &gen_config(cfg, RunKind::UdpEcho, table, Expect::Echo),
    )?;
    drop(echo);
    let server = format!(
        "UdpPort echo, recvmmsg/sendmmsg bursts of {}, spinning (core {})",
        cfg.burst, cfg.server_core
    );
    Ok((report, server, String::new()))
}

/// Dataplane flags of the measured runs: a spinning worker, and the policy kept from moving
/// the class away from the NIC (the figure is of NIC-executed GETs; a saturated NIC worker
/// would otherwise send the class to the host or the clients).
fn dataplane_args(cfg: &BenchConfig) -> Vec<String> {
    [
        "--backoff",
        "spin",
        "--engine",
        &cfg.engine,
        "--nic-high",
        "2",
        "--nic-low",
        "1.5",
        "--queue-high",
        "4000000000",
        "--no-client-hints",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// The counters named here, as deltas between two STATS snapshots, plus every non-zero drop.
fn stats_delta(before: &[(String, u64)], after: &[(String, u64)]) -> String {
    let get = |s: &[(String, u64)], k: &str| s.iter().find(|(n, _)| n == k).map_or(0, |p| p.1);
    let mut out = Vec::new();
    for (name, v) in after {
        let keep = matches!(
            name.as_str(),
            "total.rx" | "total.tx" | "total.nic_executed" | "total.forwarded" | "total.busy"
        ) || name.starts_with("total.drop.")
            || name.starts_with("total.port_drop.")
            || name.starts_with("total.error.");
        let d = v.saturating_sub(get(before, name));
        if keep && (d > 0 || !name.contains("drop")) {
            out.push(format!("{}={d}", name.trim_start_matches("total.")));
        }
    }
    out.join(" ")
}

fn naam_server(cfg: &BenchConfig, kind: RunKind) -> RunResult {
    let s = Scratch::new(kind);
    let mut dp_args = dataplane_args(cfg);
    let memif = kind == RunKind::NaamMemif;
    if memif {
        // The deployment passes `--port udp:...` first; this program's dataplane subcommand
        // takes the last `--port`. The control port stays on kernel UDP (loopback).
        let port = format!(
            "dpdk:{} --naam-addr={}",
            eal_common(cfg.server_core, &s.prefix("server"), &s.vdev("server")),
            super::requests::LINK_SERVER
        );
        dp_args.extend([
            "--port".into(),
            port,
            "--control".into(),
            "127.0.0.1:0".into(),
        ]);
    }
    let deploy = DeployConfig {
        host_workers: 1,
        nic_workers: 1,
        mica_keys: cfg.keys,
        value_size: cfg.value_size as u32,
        btree_keys: 1024,
        home: "nic".into(),
        dataplane_args: dp_args,
        host_args: Vec::new(),
        log_dir: Some(cfg.log_dir.clone()),
        log_filter: "info".into(),
        ..DeployConfig::default()
    };
    let mut d = Deployment::start(Binaries::subcommands(cfg.exe.clone()), deploy)
        .map_err(|e| format!("{e:#}"))?;
    // The measured worker alone on the server core; the dataplane's control thread and the
    // (idle) host agent with the generator.
    if let Some(pid) = d.dataplane_pid() {
        pin_process(pid, cfg.gen_core)?;
        if procs::pin_threads(pid, "naam-w0", cfg.server_core)? != 1 {
            return Err("no dataplane worker thread naam-w0 to pin".into());
        }
    }
    if let Some(pid) = d.host_pid() {
        pin_process(pid, cfg.gen_core)?;
    }
    let mut client = d
        .client(naam_client::ClientConfig::default())
        .map_err(|e| format!("client: {e}"))?;
    let mut table = TableSpec::from_describe(
        &client
            .describe(0, "mica")
            .map_err(|e| format!("describe(mica): {e}"))?,
    )?;
    table.capability = client
        .config()
        .credential
        .as_ref()
        .map_or(0, |k| k.capability(naam_client::bundled::TENANT));
    // The dataplane's counters are best effort: a loaded machine may time the request out.
    let before = client.server_stats(0);
    let expect = Expect::Value {
        at: Location::Nic as u8,
    };
    let report = if memif {
        memif_generator(cfg, &s, &gen_config(cfg, kind, table, expect))?
    } else {
        let SocketAddr::V4(addr) = d.data_addr() else {
            return Err("the dataplane serves IPv6".into());
        };
        udp_generator(cfg, addr, &gen_config(cfg, kind, table, expect))?
    };
    let after = client.server_stats(0);
    let clean = d.stop(Duration::from_secs(5));
    if !clean {
        eprintln!("{}: the deployment did not stop cleanly", kind.name());
    }
    let port = if memif {
        "dpdk: net_memif server"
    } else {
        "udp:127.0.0.1"
    };
    let server = format!(
        "host agent + naam-dataplane --port {port} --workers 1 --home nic --backoff spin \
         --engine {} (worker thread on core {}, control thread and host agent on core {})",
        cfg.engine, cfg.server_core, cfg.gen_core
    );
    let stats = match (before, after) {
        (Ok(b), Ok(a)) => stats_delta(&b, &a),
        (Err(e), _) | (_, Err(e)) => format!("dataplane counters unavailable: {e}"),
    };
    Ok((report, server, stats))
}

/// Where `naam-memif-bench` writes logs by default: beside the results.
pub fn default_log_dir(out: &Path) -> PathBuf {
    out.join("memif-logs")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_row(kind: RunKind, mpps: f64) -> Row {
        let cfg = BenchConfig {
            exe: "x".into(),
            testpmd: "dpdk-testpmd".into(),
            runs: RunKind::ALL.to_vec(),
            warmup: Duration::ZERO,
            measure: Duration::ZERO,
            burst: 32,
            window: 512,
            udp_window: 64,
            requests: 1,
            sample: 1,
            keys: 1,
            value_size: 8,
            gen_core: 0,
            server_core: 1,
            engine: "native".into(),
            log_dir: "/tmp".into(),
            rounds: 1,
        };
        let r = GenReport {
            replies_per_s: mpps * 1e6,
            ..GenReport::default()
        };
        row(&cfg, kind, String::new(), &r, String::new())
    }

    #[test]
    fn ratios_divide_by_the_reference_of_the_same_transport_and_round() {
        let mut rows = vec![
            test_row(RunKind::TestpmdMemif, 10.0),
            test_row(RunKind::UdpEcho, 0.4),
        ];
        let mut second = test_row(RunKind::TestpmdMemif, 5.0);
        second.round = 2;
        rows.push(second);
        let memif = test_row(RunKind::NaamMemif, 2.5);
        assert_eq!(ratio_to_reference(&rows, &memif), Some(0.25));
        let mut memif2 = test_row(RunKind::NaamMemif, 2.5);
        memif2.round = 2;
        assert_eq!(ratio_to_reference(&rows, &memif2), Some(0.5));
        assert_eq!(
            ratio_to_reference(&rows, &test_row(RunKind::NaamUdp, 0.2)),
            Some(0.5)
        );
        // References have none; a NAAM run whose reference failed has none.
        assert_eq!(ratio_to_reference(&rows, &rows[0]), None);
        let mut lone = test_row(RunKind::NaamMemif, 2.5);
        lone.round = 3;
        assert_eq!(ratio_to_reference(&rows, &lone), None);
    }

    #[test]
    fn median_of_the_ratios_of_a_run_over_rounds() {
        let mut rows = Vec::new();
        for (round, ratio) in [(1, 0.2), (2, 0.5), (3, 0.3)] {
            let mut r = test_row(RunKind::NaamMemif, 1.0);
            r.round = round;
            r.ratio = Some(ratio);
            rows.push(r);
        }
        rows.push(test_row(RunKind::TestpmdMemif, 4.0));
        assert_eq!(median_ratio(&rows, RunKind::NaamMemif), Some(0.3));
        rows[0].ratio = None;
        assert_eq!(median_ratio(&rows, RunKind::NaamMemif), Some(0.4));
        assert_eq!(median_ratio(&rows, RunKind::NaamUdp), None);
        assert_eq!(rows[0].kpps_per_worker_core, 1000.0);
        assert_eq!(rows[0].window, 512);
        assert_eq!(test_row(RunKind::NaamUdp, 1.0).window, 64);
    }

    #[test]
    fn stats_deltas_keep_the_counters_that_say_where_gets_ran() {
        let s = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
            v.iter().map(|&(k, n)| (k.to_string(), n)).collect()
        };
        let before = s(&[
            ("total.nic_executed", 10),
            ("total.forwarded", 0),
            ("w0.rx", 3),
        ]);
        let after = s(&[
            ("total.nic_executed", 110),
            ("total.forwarded", 0),
            ("total.drop.malformed", 0),
            ("total.port_drop.tx_full", 7),
            ("w0.rx", 300),
        ]);
        assert_eq!(
            stats_delta(&before, &after),
            "nic_executed=100 forwarded=0 port_drop.tx_full=7"
        );
    }
}
