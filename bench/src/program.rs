//! `naam-bench`: the experiments of DESIGN §8. Each prints a table and writes JSON and CSV
//! under `--out` (default `results/`).
//!
//! The experiments' program body (arguments, start-up, exit status), in the library so that its
//! own binary (`src/main.rs`, a one-line `main`) and the `naam-rs` program of the repository
//! root run the same code; errors end here, as `anyhow` reports or an exit code.

use crate::{all, btree, placement, report, scale, shift, ycsb};
use clap::{Parser, Subcommand};
use naam_core::arg::{non_negative, positive};
use naam_link::BackoffMode;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "naam-bench", about = "NAAM-rs experiments")]
struct Cli {
    /// Folder for JSON, CSV and plots [default: runs/<UTC time>-<pid>, git-ignored; `results` is
    /// the committed reference].
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N distinct offloads: NAAM's shared VM pool vs an iPipe-style actor per offload.
    Scale {
        /// Offload counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,8,16,64,256,1024", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16_384))]
        offloads: Vec<usize>,
        /// Offered load, messages per second.
        #[arg(long, default_value_t = 100_000.0, value_parser = positive(1e9))]
        rate: f64,
        /// Also measure saturation throughput (no rate limit).
        #[arg(long)]
        saturate: bool,
        /// Seconds per point.
        #[arg(long, default_value_t = 2.0, value_parser = positive(86_400.0))]
        seconds: f64,
        /// NAAM worker threads.
        #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
        workers: usize,
        /// Idle workers spin instead of yielding (for dedicated cores).
        #[arg(long)]
        spin: bool,
        /// Only what one message costs at each N, run inline on one thread (no generator, no
        /// queue, no OS scheduling), through the pool and natively on the same records:
        /// medians of 5 rounds of 1 M messages.
        #[arg(long)]
        inline: bool,
    },
    /// YCSB on MICA. Without --server: the placement comparison (host-only RPC, client-only
    /// one-sided, NIC-only, NAAM adaptive) on local deployments it starts itself. With
    /// --server: one run against that running deployment.
    Ycsb {
        /// Data base port(s) of running server(s); several shard the keys by consistent hashing.
        #[arg(long, value_delimiter = ',')]
        server: Vec<std::net::SocketAddr>,
        /// Workload(s) [default: a,b,c for the comparison, b with --server].
        #[arg(long, value_enum, value_delimiter = ',')]
        workload: Vec<ycsb::Workload>,
        /// Comparison: the placements to compare.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "host,client,nic,adaptive"
        )]
        systems: Vec<placement::System>,
        /// Comparison: seconds of discarded warm-up before each run.
        #[arg(long, default_value_t = 0.5, value_parser = non_negative(3_600.0))]
        warmup: f64,
        /// Key choice.
        #[arg(long, value_enum, default_value = "zipfian")]
        distribution: ycsb::KeyDist,
        /// Zipfian constant.
        #[arg(long, default_value_t = 0.99, value_parser = ycsb::parse_theta)]
        theta: f64,
        /// Number of keys (the comparison's host agents build this many) [default: 100 000;
        /// with --server and --no-load, the keys the server's MICA was filled with].
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
        keys: Option<u64>,
        /// Value size in bytes (1..=1024).
        #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
        value_size: usize,
        /// Where handlers run: server, client (one-sided only), auto (follow hints).
        #[arg(long, value_enum, default_value = "server")]
        placement: ycsb::Placement,
        /// Seconds of measurement.
        #[arg(long, default_value_t = 5.0, value_parser = positive(86_400.0))]
        duration: f64,
        /// Client threads (one socket each).
        #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
        threads: usize,
        /// Open loop at this total rate (ops/s); without it, closed loop.
        #[arg(long, value_parser = positive(1e9))]
        rate: Option<f64>,
        /// Requests outstanding per thread (closed loop), or the cap on them (open loop).
        #[arg(long, default_value_t = 16, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
        outstanding: usize,
        /// Skip the load phase (the keys are already there).
        #[arg(long)]
        no_load: bool,
        /// Milliseconds before the first retransmission.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        timeout_ms: u64,
        /// Seed of the operation mix and key choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Key set [default: the server's describe(mica).seed, else 1].
        #[arg(long)]
        key_seed: Option<u64>,
    },
    /// The NIC worker's whole path in process (no kernel, one core): MICA GET, MICA PUT and
    /// B-tree LOOKUP messages through parse, steering, checks, the VM pool and ops over the
    /// shared-memory link, against the same operations in native Rust (issue 12).
    Datapath {
        /// Messages per operation per round.
        #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
        messages: u64,
        /// Rounds (medians and spread are reported).
        #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
        rounds: usize,
        /// Only these operations (for profiling one).
        #[arg(
            long,
            value_delimiter = ',',
            value_parser = clap::builder::PossibleValuesParser::new(
                crate::datapath::OPERATIONS.map(|(op, _)| op)
            )
        )]
        ops: Vec<String>,
    },
    /// Goodput and p99 as the offered load (requests outstanding per client thread) goes far
    /// past capacity, with the clients' congestion window (AIMD) and without (issue 14).
    Overload {
        /// Requests outstanding per client thread, one point each.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256,1024", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
        outstanding: Vec<usize>,
        /// Client threads.
        #[arg(long, default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
        threads: usize,
        /// Seconds per point.
        #[arg(long, default_value_t = 2.0, value_parser = positive(86_400.0))]
        seconds: f64,
        /// MICA keys.
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
        keys: u64,
        /// Milliseconds before the first retransmission.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        timeout_ms: u64,
    },
    /// YCSB-A and FAAs with loss injection while the host agent and the dataplane are killed
    /// in turn; ends with every acknowledged write readable and no FAA run twice (issue 14).
    Soak {
        #[arg(long, default_value_t = 10.0, value_parser = positive(10_080.0))]
        minutes: f64,
        /// Seconds between kills (host agent and dataplane in turn).
        #[arg(long, default_value_t = 60.0, value_parser = positive(86_400.0))]
        kill_every_s: f64,
        /// Keys the soak writes.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
        keys: u64,
        /// The dataplane drops every Nth request (0: none).
        #[arg(long, default_value_t = 29)]
        drop_rx_every: u32,
        /// The dataplane drops every Nth reply (0: none).
        #[arg(long, default_value_t = 23)]
        drop_tx_every: u32,
    },
    /// Two tenants on one NIC worker: a light one (cheap requests at a modest rate) beside a
    /// heavy one (expensive requests, far more than the worker serves), first come first
    /// served vs the tenants' shares.
    Fairness {
        /// Seconds per point.
        #[arg(long, default_value_t = 2.0, value_parser = positive(86_400.0))]
        seconds: f64,
        /// The light tenant's rate (requests per second).
        #[arg(long, default_value_t = 2_000.0, value_parser = positive(1e9))]
        light_rate: f64,
        /// Requests the heavy tenant keeps outstanding.
        #[arg(long, default_value_t = 512, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
        heavy_outstanding: usize,
        /// Steps of each heavy request (1..=30; each reads a record and hashes it).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=30))]
        heavy_steps: u32,
        /// Rounds of every point (medians and spread are reported).
        #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
        rounds: usize,
        /// The dataplane's poll budget (µs) [default: the dataplane's].
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        poll_budget_us: Option<u64>,
    },
    /// B-tree lookups: client-side traversal (one round trip per level) vs one active message.
    Btree {
        /// Tree depths to measure (one local deployment each).
        #[arg(long, value_delimiter = ',', default_value = "2,3,4,5", value_parser = clap::value_parser!(u32).range(1..=7))]
        depths: Vec<u32>,
        /// Seconds per point.
        #[arg(long, default_value_t = 3.0, value_parser = positive(86_400.0))]
        seconds: f64,
        /// Lookups in flight.
        #[arg(long, default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
        outstanding: usize,
        /// Milliseconds before the first retransmission.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        timeout_ms: u64,
        /// Seed of the key choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Every experiment (scale, ycsb, btree, shift) sized for this machine, then summary.md.
    All {
        /// Multiplies every experiment's duration (1.0: about 3 minutes on 2 cores).
        #[arg(long, default_value_t = 1.0, value_parser = positive(1_000.0))]
        time_scale: f64,
        /// Skip the shift experiment.
        #[arg(long)]
        no_shift: bool,
    },
    /// Where messages execute, per ms, around injected host and NIC congestion (starts its
    /// own local deployment).
    Shift {
        /// Offered load, messages per second (half MICA GETs, half B-tree lookups).
        #[arg(long, default_value_t = 8_000.0, value_parser = positive(1e9))]
        rate: f64,
        /// Repetitions of the injection cycle.
        #[arg(long, default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
        reps: usize,
        /// Calm milliseconds before and after each host congestion.
        #[arg(long, default_value_t = 700, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        calm_ms: u64,
        /// Milliseconds of host congestion.
        #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        host_ms: u64,
        /// NIC congestion starts this long after the host's.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
        nic_after_ms: u64,
        /// Milliseconds of NIC congestion.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        nic_ms: u64,
        /// Keys of MICA and of the B-tree.
        #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
        keys: u64,
        /// Write the processes' logs to this folder.
        #[arg(long)]
        log_dir: Option<PathBuf>,
    },
}

/// Keys of a YCSB run unless told (or, against a filled server, unless it says).
const YCSB_KEYS: u64 = 100_000;

/// The program with these arguments (the first is the program name): what its own binary
/// runs, and what the `naam-rs` program of the repository root runs for this role.
pub fn run(args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    let cli = Cli::parse_from(args);
    let out = cli.out.clone().unwrap_or_else(report::run_folder);
    // Before the experiment, not after its minutes of work: a folder that cannot be made
    // fails now, named.
    let writes = !matches!(cli.command, Command::Scale { inline: true, .. });
    if writes {
        report::make_folder(&out)?;
    }
    match cli.command {
        Command::Scale {
            offloads,
            rate,
            saturate,
            seconds,
            workers,
            spin,
            inline,
        } => {
            if inline {
                let mut first = None;
                for &n in &offloads {
                    let (vm, native) = scale::inline_ns(n, 1_000_000, 5)?;
                    let (vm0, native0) = *first.get_or_insert((vm, native));
                    println!(
                        "scale inline: {n:>5} offloads: pool {vm:>6.1} ns/msg ({:.2}x its {}-offload cost), native {native:>6.1} ns ({:.2}x), pool - native {:>6.1} ns ({:.2}x)",
                        vm / vm0,
                        offloads[0],
                        native / native0,
                        vm - native,
                        (vm - native) / (vm0 - native0),
                    );
                }
                return Ok(());
            }
            let cfg = scale::ScaleConfig {
                offloads,
                rate: Some(rate),
                duration: Duration::from_secs_f64(seconds),
                naam_workers: workers,
                backoff: if spin {
                    BackoffMode::Spin
                } else {
                    BackoffMode::Yield
                },
            };
            all::scale(&cfg, saturate, &out)?;
        }
        Command::Ycsb {
            server,
            workload,
            systems,
            warmup,
            distribution,
            theta,
            keys,
            value_size,
            placement,
            duration,
            threads,
            rate,
            outstanding,
            no_load,
            timeout_ms,
            seed,
            key_seed,
        } => {
            if server.is_empty() {
                let cfg = placement::CompareConfig {
                    workloads: all::workloads_or_all(&workload),
                    systems,
                    dist: distribution,
                    theta,
                    keys: keys.unwrap_or(YCSB_KEYS),
                    value_size,
                    duration: Duration::from_secs_f64(duration),
                    warmup: Duration::from_secs_f64(warmup),
                    threads,
                    outstanding,
                    rate,
                    timeout: Duration::from_millis(timeout_ms.max(1)),
                    seed,
                    ..Default::default()
                };
                all::ycsb_compare(&cfg, &out)?;
                return Ok(());
            }
            let workload = workload.first().copied().unwrap_or(ycsb::Workload::B);
            let mut cfg = ycsb::YcsbConfig {
                servers: server
                    .iter()
                    .map(|&a| naam_client::ServerAddr::new(a, None))
                    .collect(),
                workload,
                dist: distribution,
                theta,
                keys: keys.unwrap_or(YCSB_KEYS),
                value_size,
                placement,
                duration: Duration::from_secs_f64(duration),
                threads,
                rate,
                outstanding,
                load: !no_load,
                timeout: Duration::from_millis(timeout_ms.max(1)),
                seed,
                key_seed,
                credential: naam_client::keys::find(None)?,
                max_window: naam_client::ClientConfig::default().max_window,
            };
            if keys.is_none() && no_load {
                // The keys the server filled, not a default that may name absent ones.
                if let Some(n) = ycsb::server_keys(&cfg)? {
                    cfg.keys = n;
                }
            }
            let keys = cfg.keys;
            println!(
                "ycsb: workload {workload:?}, {distribution:?} (theta {theta}), {keys} keys of \
                 {value_size} B, placement {placement:?}, {threads} thread(s), {}",
                match rate {
                    Some(r) => format!("open loop at {r:.0} ops/s"),
                    None => format!("closed loop, {outstanding} outstanding per thread"),
                }
            );
            if cfg.load {
                let t = std::time::Instant::now();
                ycsb::with_progress("load", Some(keys), None, |p| ycsb::load(&cfg, p))?;
                println!("loaded {keys} keys in {:.2} s", t.elapsed().as_secs_f64());
            }
            let r = ycsb::with_progress("run", None, Some(cfg.duration), |p| ycsb::run(&cfg, p))?;
            println!(
                "{:>12} {:>10} {:>9} {:>9} {:>9} {:>7} {:>8}",
                "ops/s", "ops", "p50 us", "p99 us", "p99.9 us", "errors", "retrans"
            );
            println!(
                "{:>12.0} {:>10} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>8}",
                r.throughput_per_s,
                r.ops,
                r.latency.p50_us,
                r.latency.p99_us,
                r.latency.p999_us,
                r.errors,
                r.retransmits
            );
            if let Some(e) = &r.first_error {
                println!("first error: {e}");
            }
            let name = format!("ycsb-{workload:?}-{placement:?}").to_lowercase();
            for p in report::write_rows(&out, &name, &[r])? {
                println!("wrote {}", p.display());
            }
        }
        Command::Datapath {
            messages,
            rounds,
            ops,
        } => {
            let cfg = crate::datapath::DatapathConfig {
                messages,
                rounds,
                ops,
                ..Default::default()
            };
            let rows = crate::datapath::run(&cfg)?;
            for r in &rows {
                println!(
                    "datapath: {:<12} {:>7.0} ns/msg ({:.0}-{:.0}), native {:>6.0} ns ({:.0}-{:.0}), \
                     ratio {:.2}, {:.2} M msgs/s per core, capability check {:.1} ns",
                    r.op,
                    r.ns_per_msg,
                    r.ns_per_msg_min,
                    r.ns_per_msg_max,
                    r.native_ns,
                    r.native_ns_min,
                    r.native_ns_max,
                    r.ratio,
                    r.msgs_per_s / 1e6,
                    r.capability_ns
                );
            }
            for p in report::write_rows(&out, "datapath", &rows)? {
                println!("wrote {}", p.display());
            }
            if let Some(g) = rows.iter().find(|r| r.op == "mica_get") {
                println!(
                    "datapath: mica_get {:.0} ns/msg, native {:.0} ns, ratio {:.2}",
                    g.ns_per_msg, g.native_ns, g.ratio
                );
            }
            return Ok(());
        }
        Command::Overload {
            outstanding,
            threads,
            seconds,
            keys,
            timeout_ms,
        } => {
            let cfg = crate::overload::OverloadConfig {
                outstanding,
                threads,
                seconds,
                keys,
                timeout: Duration::from_millis(timeout_ms.max(1)),
            };
            println!(
                "overload: {threads} client thread(s), {seconds} s per point, YCSB-B on {keys} keys"
            );
            let rows = crate::overload::run(&cfg, |r| {
                println!(
                    "{:>5} {:>5} outstanding/thread: {:>9.0} ops/s  p99 {:>9.0} us  retrans {:>7}  timeouts {:>5}  busy {:>6}  kernel drops {:>7}",
                    r.window, r.outstanding_per_thread, r.goodput_per_s, r.p99_us, r.retransmits, r.timeouts, r.busy, r.kernel_drops
                )
            })?;
            print!("{}", crate::overload::markdown(&rows));
            for w in ["aimd", "none"] {
                if let Some(f) = crate::overload::kept_fraction(&rows, w) {
                    println!(
                        "window {w}: goodput at the highest load = {:.0} % of its peak",
                        f * 100.0
                    );
                }
            }
            for p in report::write_rows(&out, "overload", &rows)? {
                println!("wrote {}", p.display());
            }
            for p in crate::overload::write_charts(&out, &rows)? {
                println!("wrote {}", p.display());
            }
        }
        Command::Soak {
            minutes,
            kill_every_s,
            keys,
            drop_rx_every,
            drop_tx_every,
        } => {
            use crate::soak;
            let cfg = soak::SoakConfig {
                minutes,
                kill_every: Duration::from_secs_f64(kill_every_s),
                keys,
                drop_rx_every,
                drop_tx_every,
                ..soak::SoakConfig::default()
            };
            println!(
                "soak: {minutes} min, a kill every {kill_every_s} s, {keys} keys, the dataplane dropping 1 in {drop_rx_every} requests and 1 in {drop_tx_every} replies"
            );
            let r = soak::run(&cfg, |line| println!("{line}"))?;
            let path = out.join("soak.json");
            report::write_file(&path, serde_json::to_string_pretty(&r)?)?;
            println!("wrote {}", path.display());
            println!("{}", r.last_line());
            if !r.held() {
                anyhow::bail!("the soak found lost writes or duplicate executions");
            }
        }
        Command::Fairness {
            seconds,
            light_rate,
            heavy_outstanding,
            heavy_steps,
            rounds,
            poll_budget_us,
        } => {
            use crate::fairness;
            let cfg = fairness::FairnessConfig {
                seconds,
                light_rate,
                heavy_outstanding,
                heavy_steps,
                rounds,
                poll_budget_us,
            };
            println!(
                "fairness: {rounds} round(s) of {seconds} s per point; light tenant {light_rate}/s, heavy tenant {heavy_outstanding} requests of {heavy_steps} steps outstanding"
            );
            let rows = fairness::run(&cfg, |r| {
                println!(
                    "round {} {:>12}: light {:>6.0}/s p50 {:>6.0} us p99 {:>7.0} us failed {:>3} refused {:>4} | heavy {:>6.0}/s failed {:>3} refused {:>7} | worker busy {:>3.0} % poll {:>4.0} us kernel drops {}",
                    r.round, r.case, r.light_per_s, r.light_p50_us, r.light_p99_us, r.light_failed,
                    r.light_refused, r.heavy_per_s, r.heavy_failed, r.heavy_refused,
                    r.worker_busy * 100.0, r.poll_us, r.kernel_drops
                )
            })?;
            let s = fairness::summary(&rows);
            print!("{}", fairness::markdown(&s));
            for p in report::write_rows(&out, "fairness", &rows)? {
                println!("wrote {}", p.display());
            }
            let path = out.join("fairness-summary.json");
            report::write_file(&path, serde_json::to_string_pretty(&s)?)?;
            println!("wrote {}", path.display());
            for p in fairness::write_chart(&out, &s)? {
                println!("wrote {}", p.display());
            }
            println!(
                "p99 ratio spread over rounds: {:.2}x .. {:.2}x",
                s.p99_ratio_spread.0, s.p99_ratio_spread.1
            );
            if !s.light_realtime {
                println!(
                    "note: the light client could not run at a real-time priority (SCHED_FIFO needs CAP_SYS_NICE): its wake-ups share the cores with the heavy client's work"
                );
            }
            println!("{}", fairness::last_line(&s));
        }
        Command::Btree {
            depths,
            seconds,
            outstanding,
            timeout_ms,
            seed,
        } => {
            let cfg = btree::BtreeConfig {
                depths,
                duration: Duration::from_secs_f64(seconds),
                outstanding,
                timeout: Duration::from_millis(timeout_ms.max(1)),
                seed,
                log_dir: None,
            };
            all::btree(&cfg, &out)?;
        }
        Command::All {
            time_scale,
            no_shift,
        } => {
            let mut cfg = all::AllConfig::sized(time_scale);
            cfg.shift = !no_shift;
            all::run(&cfg, &out)?;
        }
        Command::Shift {
            rate,
            reps,
            calm_ms,
            host_ms,
            nic_after_ms,
            nic_ms,
            keys,
            log_dir,
        } => {
            let cfg = shift::ShiftConfig {
                rate,
                reps,
                calm_ms,
                host_ms,
                nic_after_ms,
                nic_ms,
                mica_keys: keys,
                btree_keys: keys,
                log_dir,
                ..shift::ShiftConfig::default()
            };
            println!(
                "shift: local deployment (home host, idle back-off on), {rate:.0} msgs/s open \
                 loop (MICA GET + B-tree lookup), {reps} x [{calm_ms} ms calm, host congested \
                 {host_ms} ms (NIC too from +{nic_after_ms} ms for {nic_ms} ms), {calm_ms} ms calm]"
            );
            // A return followed by congestion within the policy's flap window counts as a
            // flap, and the next return waits twice as long: the "back" times would grow.
            let gap_ns = calm_ms.saturating_mul(2_000_000);
            if reps > 1 && gap_ns < naam_core::policy::FLAP_WINDOW {
                eprintln!(
                    "naam-bench shift: warning: two calm phases ({} ms) are shorter than the \
                     policy's flap window ({} ms): from the second repetition on, returns count \
                     as flaps and the times back grow",
                    calm_ms.saturating_mul(2),
                    naam_core::policy::FLAP_WINDOW / 1_000_000
                );
            }
            let run = shift::run(shift::binaries()?, &cfg)?;
            shift::print(&run);
            for p in shift::write(&run, &out)? {
                println!("wrote {}", p.display());
            }
        }
    }
    Ok(())
}
