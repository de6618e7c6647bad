//! `naam-memif-bench`: the dataplane throughput benchmark (issue 6 item 7; `naam_bench::memif`).
//!
//! ```text
//! naam-memif-bench [FLAGS]             the benchmark: four runs, a table, JSON + CSV
//! naam-memif-bench gen-memif ...       a generator over net_memif (a DPDK process)
//! naam-memif-bench gen-udp ...         a generator over kernel UDP
//! naam-memif-bench udp-echo ...        the kernel UDP reference server
//! naam-memif-bench host-agent ...      the naam-host-agent program
//! naam-memif-bench dataplane ...       the naam-dataplane program, built with DPDK ports
//! ```
//!
//! Every process of a run is this program, so the dataplane measured is the one built with
//! this program's `dpdk` feature.

use std::ffi::OsString;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use naam_bench::memif::runs::{default_log_dir, print_table, run_all};
use naam_bench::memif::udp::{echo, UdpLoad};
use naam_bench::memif::{drive, BenchConfig, GenConfig, RequestSet, RunKind};
use naam_bench::report;
use naam_core::arg::{non_negative, positive};

/// Messages per second per worker core of NIC-executed MICA GET over net_memif and kernel
/// UDP, against dpdk-testpmd io forwarding (memif) and a plain UDP echo (UDP) in the same run.
#[derive(Parser, Debug)]
#[command(name = "naam-memif-bench")]
struct Bench {
    /// Folder for JSON and CSV (`memif.json`, `memif.csv`) and the processes' logs
    /// [default: runs/<UTC time>-<pid>, git-ignored; `results` is the committed reference].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Runs to make, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "testpmd-memif,naam-memif,udp-echo,naam-udp"
    )]
    runs: Vec<RunKind>,
    /// Seconds measured per run (after the warm-up).
    #[arg(long, default_value_t = 5.0, value_parser = positive(86_400.0))]
    seconds: f64,
    /// Seconds of warm-up per run.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative(3_600.0))]
    warmup: f64,
    /// Requests per burst (generator, testpmd, echo).
    #[arg(long, default_value_t = 32, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=512))]
    burst: usize,
    /// Requests outstanding over memif.
    #[arg(long, default_value_t = 512, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    window: usize,
    /// Requests outstanding over kernel UDP.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    udp_window: usize,
    /// Distinct GET requests cycled through (keys spread over the table).
    #[arg(long, default_value_t = 4096, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1 << 20))]
    requests: usize,
    /// Check every N-th reply in full (request id, status, place of execution, value).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    sample: u64,
    /// MICA keys the host agent builds.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
    keys: u64,
    /// MICA value size in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    value_size: usize,
    /// CPU of the generators (and of the idle host agent, and testpmd's main lcore).
    #[arg(long, default_value_t = 0)]
    gen_core: u32,
    /// CPU of every measured server (testpmd's forwarding lcore, the dataplane worker, the echo).
    #[arg(long, default_value_t = 1)]
    server_core: u32,
    /// The dataplane's eBPF engine.
    #[arg(long, default_value = "native")]
    engine: String,
    /// Times the whole set of runs is made (each NAAM run is divided by its reference of the
    /// same round; the table ends with the median ratios).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: u32,
    /// The testpmd program.
    #[arg(long, default_value = "dpdk-testpmd")]
    testpmd: PathBuf,
}

/// `gen-memif`: a generator over the first ethdev of its EAL.
#[derive(Parser, Debug)]
struct GenMemif {
    /// EAL arguments (whitespace-separated).
    #[arg(long, allow_hyphen_values = true)]
    eal: String,
    /// `GenConfig` as JSON.
    #[arg(long)]
    config: String,
}

/// `gen-udp`: a generator over kernel UDP.
#[derive(Parser, Debug)]
struct GenUdp {
    /// Class 0's address.
    #[arg(long)]
    server: SocketAddrV4,
    /// `GenConfig` as JSON.
    #[arg(long)]
    config: String,
}

/// `udp-echo`: the kernel UDP reference server.
#[derive(Parser, Debug)]
struct UdpEcho {
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddrV4,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    #[arg(long, default_value_t = 32)]
    burst: usize,
}

fn main() -> std::process::ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let role = args.get(1).and_then(|a| a.to_str()).map(str::to_owned);
    let mut with_name = |name: &str| {
        let mut rest = args.split_off(1);
        rest[0] = format!("naam-memif-bench {name}").into();
        rest
    };
    let r = match role.as_deref() {
        Some("host-agent") => naam_host_agent::program::run(with_name("host-agent")),
        Some("dataplane") => naam_dataplane::program::run(last_port_wins(with_name("dataplane"))),
        Some("gen-memif") => gen_memif(GenMemif::parse_from(with_name("gen-memif"))),
        Some("gen-udp") => gen_udp(GenUdp::parse_from(with_name("gen-udp"))),
        Some("udp-echo") => udp_echo(UdpEcho::parse_from(with_name("udp-echo"))),
        _ => bench(Bench::parse_from(args)),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("naam-memif-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The local deployment starts the dataplane with `--port udp:...`; a later `--port` (the
/// memif run's `dpdk:...`) replaces it.
fn last_port_wins(args: Vec<OsString>) -> Vec<OsString> {
    let ports: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| a.to_str() == Some("--port"))
        .map(|(i, _)| i)
        .collect();
    let Some((_, earlier)) = ports.split_last() else {
        return args;
    };
    args.into_iter()
        .enumerate()
        .filter(|(i, _)| !earlier.iter().any(|&p| *i == p || *i == p + 1))
        .map(|(_, a)| a)
        .collect()
}

fn bench(a: Bench) -> anyhow::Result<()> {
    let out = a.out.clone().unwrap_or_else(naam_bench::report::run_folder);
    let cfg = BenchConfig {
        exe: std::env::current_exe().context("locating this program")?,
        testpmd: a.testpmd,
        runs: a.runs,
        warmup: Duration::from_secs_f64(a.warmup),
        measure: Duration::from_secs_f64(a.seconds),
        burst: a.burst.clamp(1, naam_bench::memif::dpdk::MAX_BURST),
        window: a.window,
        udp_window: a.udp_window,
        requests: a.requests,
        sample: a.sample,
        keys: a.keys,
        value_size: a.value_size,
        gen_core: a.gen_core,
        server_core: a.server_core,
        engine: a.engine,
        log_dir: default_log_dir(&out),
        rounds: a.rounds.max(1),
    };
    println!(
        "memif bench: MICA GET ({} keys, {} B values), generator on core {}, each server on core {} \
         (one worker core, back-off spin); {} s per run after {} s warm-up; bursts of {}, window {} \
         (memif) / {} (UDP); logs in {}",
        cfg.keys,
        cfg.value_size,
        cfg.gen_core,
        cfg.server_core,
        a.seconds,
        a.warmup,
        cfg.burst,
        cfg.window,
        cfg.udp_window,
        cfg.log_dir.display()
    );
    let rows = run_all(&cfg, |r| {
        println!(
            "{} {:<14} {:>8.3} Mpps  ({} replies in {:.2} s; {} checked, {} bad{}; {} lost in {} stalls; generator on CPU {}) server: {}; {}",
            r.round,
            r.run,
            r.mpps,
            r.replies,
            r.seconds,
            r.checked,
            r.bad,
            r.first_bad.as_deref().map_or(String::new(), |e| format!(", first: {e}")),
            r.lost,
            r.stalls,
            r.gen_cpu_share
                .map_or("?".into(), |x| format!("{:.0}%", x * 100.0)),
            r.server,
            r.server_stats
        );
    });
    println!();
    print_table(&rows);
    for p in report::write_rows(&out, "memif", &rows)? {
        println!("wrote {}", p.display());
    }
    if rows.len() < cfg.runs.len() {
        anyhow::bail!(
            "{} of {} runs failed",
            cfg.runs.len() - rows.len(),
            cfg.runs.len()
        );
    }
    Ok(())
}

fn parse_config(json: &str) -> anyhow::Result<(GenConfig, RequestSet)> {
    let g: GenConfig = serde_json::from_str(json).context("--config")?;
    let set = RequestSet::mica_get(g.table, g.requests).map_err(anyhow::Error::msg)?;
    Ok((g, set))
}

fn gen_memif(a: GenMemif) -> anyhow::Result<()> {
    let (g, set) = parse_config(&a.config)?;
    let eal: Vec<String> = a.eal.split_whitespace().map(String::from).collect();
    let mut port = naam_bench::memif::dpdk::DpdkLoad::open(&eal, &set, Duration::from_secs(20))
        .map_err(anyhow::Error::msg)?;
    let r = drive(&mut port, &set, &g.drive).map_err(anyhow::Error::msg)?;
    eprintln!("gen-memif: device counters {:?}", port.eth_port().stats());
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

fn gen_udp(a: GenUdp) -> anyhow::Result<()> {
    let (g, set) = parse_config(&a.config)?;
    let mut port = UdpLoad::new(a.server, g.drive.burst).map_err(anyhow::Error::msg)?;
    let r = drive(&mut port, &set, &g.drive).map_err(anyhow::Error::msg)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

fn udp_echo(a: UdpEcho) -> anyhow::Result<()> {
    let n = echo(a.addr, a.burst, Duration::from_secs(a.seconds), |addr| {
        println!("udp-echo serving {addr}");
    })
    .map_err(anyhow::Error::msg)?;
    eprintln!("udp-echo: {n} datagrams echoed");
    Ok(())
}
