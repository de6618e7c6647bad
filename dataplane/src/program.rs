//! `naam-dataplane`: the NIC-side process (docs/runtime.md). Connects to the host agent's
//! link, serves the data port with N poll-mode workers and the control port, and stops
//! cleanly on SIGINT/SIGTERM.
//!
//! The dataplane's program body (arguments, start-up, exit status), in the library so that its
//! own binary (`src/main.rs`, a one-line `main`) and the `naam-rs` program of the repository
//! root run the same code; errors end here, as `anyhow` reports or an exit code.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::port::LossInjection;
use crate::runtime::fair::FairConfig;
use crate::runtime::{BackoffMode, MonitorConfig, Runtime, RuntimeConfig};
use anyhow::Context;
use clap::Parser;
use naam_core::policy::{Location, PolicyConfig};
use naam_core::vm::Engine;

#[derive(Parser, Debug)]
#[command(
    name = "naam-dataplane",
    version,
    about = "NAAM dataplane: the NIC-side runtime",
    // A flag given twice (in --config's file, then on the command line): the last one wins.
    args_override_self = true
)]
struct Args {
    /// A TOML file of settings: its keys are these flags' long names (`workers = 2`,
    /// `port = "udp:0.0.0.0:7000"`, `no-client-hints = true`); flags on the command line win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Stop (as on SIGTERM) once process PID is no longer this one's parent: for a dataplane
    /// started by another program (the local deployment passes its own), which may be killed
    /// without a chance to stop it.
    #[arg(long, value_name = "PID")]
    parent_pid: Option<u32>,
    /// Data port: `udp:IP:BASE` (classes on BASE .. BASE+classes) or `dpdk:EAL-ARGS` (feature dpdk).
    #[arg(long, default_value = "udp:127.0.0.1:7000", value_parser = port_spec)]
    port: String,
    /// Worker threads (one link queue pair each; UDP workers share the ports with SO_REUSEPORT).
    #[arg(long, default_value_t = 1, value_parser = at_least_one(256))]
    workers: usize,
    /// Steering classes (at least the bundled applications' 6).
    #[arg(long, default_value_t = crate::port::DEFAULT_CLASSES, value_parser = clap::value_parser!(u16).range(1..))]
    classes: u16,
    /// Control port [default: 127.0.0.1 and the data base port minus one]; give an address
    /// to expose it beyond this machine (requests are sealed either way: docs/security.md).
    #[arg(long, visible_alias = "control-addr")]
    control: Option<SocketAddrV4>,
    /// Run directory holding the host agent's link.sock and control.sock [default:
    /// $XDG_RUNTIME_DIR/naam or /tmp/naam-$UID, as the host agent's].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Idle workers: `spin` (dedicated cores) or `yield` (shared cores; spin, yield, then sleep).
    #[arg(long, default_value = "yield")]
    backoff: BackoffMode,
    /// eBPF engine: jit, cranelift, interpreter or native.
    #[arg(long, default_value = "native")]
    engine: Engine,
    /// Messages in flight per worker (parked on link ops or waiting for the host).
    #[arg(long, default_value_t = 64, value_parser = at_least_one(65_536))]
    slots: usize,
    /// Packets per receive burst.
    #[arg(long, default_value_t = 32, value_parser = at_least_one(4096))]
    burst: usize,
    /// Requests remembered per worker for de-duplication (rounded up to whole sets of 8).
    /// There is no "off": without it a retransmitted mutation could run twice.
    #[arg(long, default_value_t = crate::runtime::DEDUP_ENTRIES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(8..=1 << 20))]
    dedup: usize,
    /// How long (ms) a completed mutation is remembered when its client does not say it is
    /// finished with it: at least the clients' longest retry time (docs/protocol.md).
    #[arg(long, default_value_t = crate::runtime::DEDUP_RETAIN_NS / 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    dedup_retain_ms: u64,
    /// Step budget of a message.
    #[arg(long, default_value_t = naam_core::exec::DEFAULT_MAX_STEPS, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_steps: u32,
    /// Host heartbeat age (ms) after which the host agent is suspect (stalled: its classes run
    /// on the NIC until the heartbeat returns); gone is its link socket closing.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    stale_ms: u64,
    /// How long to wait for the host agent's link socket at start (ms; at most an hour).
    /// SIGINT, SIGTERM or --parent-pid stop the wait at once.
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    connect_wait_ms: u64,
    /// Policy: NIC busy fraction above which the NIC is congested (above 1: never by its busy
    /// fraction; a queue past --queue-high still is. The benchmarks' way, with a large
    /// --queue-high, to keep classes where they are).
    #[arg(long, default_value_t = PolicyConfig::default().nic_high)]
    nic_high: f64,
    /// Policy: NIC busy fraction below which it is calm.
    #[arg(long, default_value_t = PolicyConfig::default().nic_low)]
    nic_low: f64,
    /// Policy: host busy fraction above which the host is congested (above 1: never by its
    /// busy fraction; a queue past --queue-high, or a host agent gone, still is).
    #[arg(long, default_value_t = PolicyConfig::default().host_high)]
    host_high: f64,
    /// Policy: host busy fraction below which it is calm.
    #[arg(long, default_value_t = PolicyConfig::default().host_low)]
    host_low: f64,
    /// Policy: queue depth that counts as congestion.
    #[arg(long, default_value_t = PolicyConfig::default().queue_high, value_parser = clap::value_parser!(u32).range(1..))]
    queue_high: u32,
    /// Policy: minimum time between two moves of a class (ms).
    #[arg(long, default_value_t = PolicyConfig::default().min_dwell / 1_000_000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    min_dwell_ms: u64,
    /// Policy: client lease (ms) of a placement hint; a class comes back from the clients at
    /// most this long after the reason ends, and each client asks the server once per lease.
    #[arg(long, default_value_t = PolicyConfig::default().client_lease / 1_000_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    client_lease_ms: u64,
    /// Policy: never send classes to clients.
    #[arg(long)]
    no_client_hints: bool,
    /// Where every class runs when nothing is congested: `nic` or `host`.
    #[arg(long, default_value = "nic", value_parser = parse_home)]
    home: Location,
    /// Policy off: every class stays at `--home` (fixed-placement baselines).
    #[arg(long)]
    pin: bool,
    /// Host cores run handlers this many times faster than NIC cores (cost model).
    #[arg(long, default_value_t = 2.0, value_parser = naam_core::arg::positive(1_000.0))]
    host_speedup: f64,
    /// Tests only: drop every Nth datagram a UDP worker receives (counted as
    /// `port_drop.injected_rx`; 0 = never).
    #[arg(long, default_value_t = 0)]
    drop_rx_every: u32,
    /// Tests only: drop every Nth datagram a UDP worker sends (counted as
    /// `port_drop.injected_tx`; 0 = never).
    #[arg(long, default_value_t = 0)]
    drop_tx_every: u32,
    /// The host agent's key file, for the control port's authentication (docs/security.md)
    /// [default: RUN_DIR/credentials].
    #[arg(long, value_name = "FILE")]
    credentials: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default; port 0 picks one).
    /// Also measures each offload's run time on the NIC (two clock reads per step).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Serve bursts first come, first served: no fair order between tenants, nothing refused
    /// (docs/dataplane.md, "Tenants' shares").
    #[arg(long)]
    fcfs: bool,
    /// What one poll of a NIC worker may take (µs): it receives as many packets as that pays
    /// for at what packets have lately cost, and when it is behind it refuses a tenant's
    /// further messages of the burst once this is spent.
    #[arg(long, default_value_t = crate::runtime::fair::DEFAULT_POLL_BUDGET_NS / 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    poll_budget_us: u64,
    /// A tenant's weight in the NIC workers' fair order, as TENANT=WEIGHT (repeat the flag; in
    /// --config, a list); tenants not named weigh 1.
    #[arg(long, value_name = "TENANT=WEIGHT", value_parser = FairConfig::parse_weight)]
    tenant_weight: Vec<(u32, u32)>,
}

/// The command line with the settings of `--config FILE` (if given) put in front of the
/// other flags, as flags, so that one parser checks both and the command line wins.
fn with_config_file(args: Vec<std::ffi::OsString>) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let path = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .or_else(|| {
            args.iter()
                .find_map(|a| a.to_str()?.strip_prefix("--config=").map(PathBuf::from))
        });
    let Some(path) = path else {
        return Ok(args);
    };
    let max = naam_core::run_dir::CONFIG_FILE_MAX;
    let bytes = naam_core::run_dir::read_regular(&path, max, "a config file")
        .with_context(|| format!("reading config file {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("config file {}: not UTF-8 text", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
    let mut flags: Vec<std::ffi::OsString> = Vec::new();
    let mut seen: Vec<(clap::Id, String)> = Vec::new();
    let cmd = <Args as clap::CommandFactory>::command();
    for (key, value) in table {
        // A key is a long flag without its dashes; an unknown one is the file's mistake,
        // named as such (the parser would call it an unexpected command-line argument).
        // Or one of its aliases (`control-addr`, which --help shows).
        let named = |a: &clap::Arg| {
            a.get_long() == Some(&key)
                || a.get_all_aliases()
                    .is_some_and(|all| all.contains(&key.as_str()))
        };
        let arg = cmd.get_arguments().find(|a| key != "config" && named(a));
        let Some(arg) = arg else {
            anyhow::bail!(
                "config file {}: unknown key {key:?} (the keys are the long flags without \"--\", see --help)",
                path.display()
            );
        };
        // One setting under two names (`control` and `control-addr`): the later won without
        // a word (probe 21).
        if let Some(other) = seen.iter().find(|(id, _)| id == arg.get_id()) {
            anyhow::bail!(
                "config file {}: {key} and {} are one setting: give it once",
                path.display(),
                other.1
            );
        }
        seen.push((arg.get_id().clone(), key.clone()));
        // The command line wins: for a flag given there, the file's value is not used (for
        // one taken several times, `tenant-weight`, the two lists were joined, probe 21).
        let names: Vec<&str> = arg
            .get_long()
            .into_iter()
            .chain(arg.get_all_aliases().unwrap_or_default())
            .collect();
        let on_command_line = args.iter().filter_map(|a| a.to_str()).any(|a| {
            names.iter().any(|n| {
                a.strip_prefix("--")
                    .and_then(|a| a.strip_prefix(n))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
            })
        });
        if on_command_line {
            continue;
        }
        let flag = format!("--{key}");
        let bad = || {
            anyhow::anyhow!(
                "config file {}: {key}: unsupported value {value}",
                path.display()
            )
        };
        // `--flag=value`, one word: a value that begins with a dash (`workers = -1`) stays
        // the flag's value instead of reading as another flag.
        let with = |v: &str| std::ffi::OsString::from(format!("{flag}={v}"));
        match &value {
            toml::Value::Boolean(true) => flags.push(flag.clone().into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => flags.push(with(s)),
            toml::Value::Integer(n) => flags.push(with(&n.to_string())),
            toml::Value::Float(x) => flags.push(with(&x.to_string())),
            // A list: the flag once per item (`tenant-weight = ["2=3", "5=1"]`), for the
            // flags that take several (of another, the last item won without a word).
            toml::Value::Array(_) if !matches!(arg.get_action(), clap::ArgAction::Append) => {
                anyhow::bail!(
                    "config file {}: {key} takes one value, not a list",
                    path.display()
                )
            }
            toml::Value::Array(items) => {
                for item in items {
                    let v = match item {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Integer(n) => n.to_string(),
                        _ => return Err(bad()),
                    };
                    flags.push(with(&v));
                }
            }
            _ => return Err(bad()),
        }
    }
    // The file's settings alone first, so that a wrong value is named as the file's, not as
    // the command line's.
    let program = args.first().cloned().unwrap_or_default();
    if let Err(e) =
        <Args as clap::Parser>::try_parse_from(std::iter::once(program).chain(flags.clone()))
    {
        if !matches!(
            e.kind(),
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
        ) {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            anyhow::bail!(
                "config file {}: {}",
                path.display(),
                first.strip_prefix("error: ").unwrap_or(first)
            );
        }
    }
    let mut out = Vec::with_capacity(args.len() + flags.len());
    let mut rest = args.into_iter();
    out.extend(rest.next()); // the program name
    out.extend(flags);
    out.extend(rest);
    Ok(out)
}

/// A `--port` whose form this build can open (checked before connecting to anything).
fn port_spec(s: &str) -> Result<String, String> {
    crate::port::parse_spec(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// A count from 1 to `max` (0 would serve nothing, or silently mean the default).
fn at_least_one(max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=max)
}

fn parse_home(s: &str) -> Result<Location, String> {
    match s {
        "nic" => Ok(Location::Nic),
        "host" => Ok(Location::Host),
        _ => Err(format!("unknown home {s:?} (nic or host)")),
    }
}

/// The program with these arguments (the first is the program name): what its own binary
/// runs, and what the `naam-rs` program of the repository root runs for this role.
pub fn run(args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    // Logs go to stderr; stdout carries only the "serving" line (scripts read the ports).
    naam_link::log::init();
    let a = Args::parse_from(with_config_file(args)?);
    // As the data port's (`port::parse_spec`).
    if let Some((c, why)) = a
        .control
        .and_then(|c| crate::port::unservable(c.ip()).map(|why| (c, why)))
    {
        anyhow::bail!("--control {c}: {why}");
    }
    // Class `c` is served on UDP port `base + c`: found out here, not after connecting.
    if let Ok(crate::port::PortSpec::Udp(base)) = crate::port::parse_spec(&a.port) {
        let last = u32::from(base.port()) + u32::from(a.classes) - 1;
        anyhow::ensure!(
            base.port() == 0 || last <= u32::from(u16::MAX),
            "--port {}: its {} classes would need UDP ports up to {last}, past 65535 (lower the \
             base port or --classes)",
            a.port,
            a.classes
        );
        // Clients look for the control port below the data ports: below port 1 there is none
        // (it was bound anywhere, and `naam --server IP:1` looked at port 0).
        anyhow::ensure!(
            base.port() != 1 || a.control.is_some(),
            "--port {}: the control port, the data base port minus one, would be port 0; \
             give --control or another base port",
            a.port
        );
        // Bound after the data ports, it failed with a bare "address already in use".
        let same_ip = |c: &SocketAddrV4| {
            c.ip() == base.ip() || c.ip().is_unspecified() || base.ip().is_unspecified()
        };
        if let Some(c) = a.control.filter(|c| base.port() != 0 && same_ip(c)) {
            let data = u32::from(base.port())..=last;
            anyhow::ensure!(
                !data.contains(&u32::from(c.port())),
                "--control {c}: one of the data ports ({}:{}..={last}, one per class)",
                base.ip(),
                base.port()
            );
        }
    }
    // The host agent always runs the bundled applications: a class of theirs not served
    // left their commands timing out ("nothing answered") with only a warning in this log.
    let bundled = naam_handlers::bundled::ALL
        .iter()
        .map(|o| o.class + 1)
        .max()
        .unwrap_or(1);
    anyhow::ensure!(
        a.classes >= bundled,
        "--classes {}: the bundled applications' offloads use classes 0 to {} (at least {bundled})",
        a.classes,
        bundled - 1
    );
    if !a.engine.available() {
        anyhow::bail!(
            "engine {} is not available on this machine",
            a.engine.name()
        );
    }
    // Two weights for one tenant: the last one won, without a word (probe 20).
    if let Some((i, (t, _))) = a
        .tenant_weight
        .iter()
        .enumerate()
        .find(|(i, (t, _))| a.tenant_weight[..*i].iter().any(|(u, _)| u == t))
    {
        anyhow::bail!(
            "--tenant-weight: tenant {t} is given a weight twice ({} and {})",
            a.tenant_weight
                .iter()
                .find(|(u, _)| u == t)
                .map_or(0, |w| w.1),
            a.tenant_weight[i].1
        );
    }
    for (what, whose, low, high) in [
        ("nic", "NIC", a.nic_low, a.nic_high),
        ("host", "host", a.host_low, a.host_high),
    ] {
        anyhow::ensure!(
            low.is_finite() && high.is_finite() && 0.0 <= low && low <= high,
            "--{what}-low {low} and --{what}-high {high}: need 0 <= low <= high (busy fractions)"
        );
        if high > 1.0 {
            // A busy fraction never exceeds 1: said, since a typo (2 for 0.2) reads the same.
            tracing::info!(
                "--{what}-high {high} is above 1: the {whose}'s busy fraction never moves a class (its queue past --queue-high still does)"
            );
        }
    }
    let policy = PolicyConfig {
        nic_high: a.nic_high,
        nic_low: a.nic_low,
        host_high: a.host_high,
        host_low: a.host_low,
        queue_high: a.queue_high,
        min_dwell: a.min_dwell_ms * 1_000_000,
        client_lease: a.client_lease_ms * 1_000_000,
        allow_client: !a.no_client_hints,
        ..PolicyConfig::default()
    };
    let defaults = RuntimeConfig::default();
    let cfg = RuntimeConfig {
        port: a.port,
        workers: a.workers,
        classes: a.classes,
        control: a.control,
        run_dir: a.run_dir.unwrap_or(defaults.run_dir.clone()),
        idle: a.backoff,
        engine: a.engine,
        slots: a.slots,
        burst: a.burst,
        dedup_entries: a.dedup,
        dedup_retain: std::time::Duration::from_millis(a.dedup_retain_ms),
        max_steps: a.max_steps,
        monitor: MonitorConfig {
            policy,
            host_speedup: a.host_speedup,
            home: a.home,
            pinned: a.pin,
            ..MonitorConfig::default()
        },
        stale_after: Duration::from_millis(a.stale_ms),
        connect_wait: Duration::from_millis(a.connect_wait_ms),
        loss: LossInjection::every(a.drop_rx_every, a.drop_tx_every),
        credentials: a.credentials.clone(),
        metrics: a.metrics_addr,
        fair: FairConfig {
            enabled: !a.fcfs,
            poll_budget_ns: a.poll_budget_us * 1000,
            weights: a.tenant_weight.clone(),
            ..FairConfig::default()
        },
        ..defaults
    };
    if a.dedup_retain_ms < naam_core::wire::DEFAULT_RETRY_SPAN_MS {
        tracing::warn!(
            dedup_retain_ms = a.dedup_retain_ms,
            client_retry_span_ms = naam_core::wire::DEFAULT_RETRY_SPAN_MS,
            "--dedup-retain-ms is shorter than a client's retries by default: a mutation \
             retransmitted after its reply was forgotten runs again (counted in dedup_evicted); \
             keep it above the clients' max_retry_span"
        );
    }
    tracing::info!(backoff = ?cfg.idle, engine = cfg.engine.name(), workers = cfg.workers, "starting");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::Release))
        .context("installing the SIGINT/SIGTERM handler")?;
    naam_link::parent::ignore_user_signals().context("ignoring SIGUSR1 and SIGUSR2")?;
    if let Some(pid) = a.parent_pid {
        naam_link::parent::stop_without_parent(pid, stop.clone())
            .context("starting the parent watch")?;
    }
    let rt = match Runtime::start_unless(cfg, &stop) {
        Ok(rt) => rt,
        Err(crate::runtime::SetupError::Stopped) => {
            tracing::info!("stopped while waiting for the host agent");
            return Ok(());
        }
        Err(e) => return Err(e).context("starting the dataplane"),
    };
    // One line, read by whoever started this process to learn the addresses.
    let metrics = rt
        .metrics_addr()
        .map(|m| format!(" metrics {m}"))
        .unwrap_or_default();
    naam_link::parent::tell_starter(&format!(
        "naam-dataplane serving data {} control {}{metrics}",
        rt.data_addr(),
        rt.control_addr()
    ));
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!("stopping");
    rt.stop();
    Ok(())
}
