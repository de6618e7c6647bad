//! `naam-bench fairness` (issue 17 item 3): two tenants share one NIC worker's VM pool. The
//! light tenant sends cheap requests at a modest rate (open loop); the heavy tenant keeps far
//! more expensive requests outstanding than the worker can serve (closed loop, the client
//! library's window on, as an application would run it). Measured, on local deployments:
//!
//! - the light tenant alone (its reference p99 and throughput),
//! - the heavy tenant alone (the worker's capacity for it),
//! - both, first come, first served (`--fcfs`, the dataplane before per-tenant admission),
//! - both, with the tenants' shares (the default).
//!
//! The bundled regions belong to tenant 1, so the heavy tenant is tenant 1 running
//! `handlers/examples/grind.bpf.o` (a READ of a record and some hashing per step, `--heavy-steps`
//! steps: tens of µs of the worker per message, so that one client thread can offer several
//! times what the worker serves — a bundled B-tree scan costs the worker less than it costs the
//! client to send), and the light tenant is tenant 2 running `handlers/examples/spin.bpf.o`
//! (compute only, about a GET's cost). Both are registered at run time with their tenant's
//! key. Every point runs `rounds` times; medians and the spread are reported.

use crate::load::{LatencyLog, Percentiles};
use naam_client::{Client, ClientConfig, ExecMode, RegisterOptions, Ticket};
use naam_core::auth::{Credential, Keyring, Principal, SECRET_LEN};
use naam_deploy::{DeployConfig, Deployment};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The tenants' handlers (committed beside their sources).
const SPIN_OBJECT: &[u8] = include_bytes!("../../handlers/examples/spin.bpf.o");
const SPIN_CLASS: u16 = 7;
const GRIND_OBJECT: &[u8] = include_bytes!("../../handlers/examples/grind.bpf.o");
const GRIND_CLASS: u16 = 6;
const LIGHT_TENANT: u32 = 2;
const HEAVY_TENANT: u32 = 1;

#[derive(Debug, Clone)]
pub struct FairnessConfig {
    pub seconds: f64,
    /// The light tenant's offered rate (requests per second).
    pub light_rate: f64,
    /// Requests the heavy tenant keeps outstanding.
    pub heavy_outstanding: usize,
    /// Steps of each heavy request (1..=30).
    pub heavy_steps: u32,
    pub rounds: usize,
    /// The dataplane's `--poll-budget-us` (its default when `None`).
    pub poll_budget_us: Option<u64>,
}

impl Default for FairnessConfig {
    fn default() -> Self {
        Self {
            seconds: 2.0,
            light_rate: 2_000.0,
            heavy_outstanding: 512,
            heavy_steps: 30,
            rounds: 3,
            poll_budget_us: None,
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FairnessRow {
    /// `light alone`, `heavy alone`, `fcfs` or `shares`.
    pub case: &'static str,
    pub round: usize,
    pub light_per_s: f64,
    pub light_p50_us: f64,
    pub light_p99_us: f64,
    /// Light requests that failed (after the client's retries) or never completed.
    pub light_failed: u64,
    /// Whether the light client's thread ran at a real-time priority ([`light_priority`]).
    pub light_realtime: bool,
    /// Heavy requests completed per second.
    pub heavy_per_s: f64,
    pub heavy_failed: u64,
    /// Requests the dataplane refused per tenant (`tenant.N.refused`) during the point.
    pub light_refused: i128,
    pub heavy_refused: i128,
    /// The NIC worker's busy share during the point, and the datagrams the kernel dropped
    /// on its sockets.
    pub worker_busy: f64,
    pub kernel_drops: i128,
    /// The worker's mean busy time per poll (µs): how long a datagram that just missed a
    /// burst waits for the next.
    pub poll_us: f64,
}

/// The medians over rounds, and what the issue asks of them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FairnessSummary {
    pub light_alone_p99_us: f64,
    pub light_alone_p50_us: f64,
    pub light_alone_per_s: f64,
    pub heavy_alone_per_s: f64,
    pub fcfs_light_p99_us: f64,
    pub fcfs_light_p50_us: f64,
    pub fcfs_light_per_s: f64,
    pub fcfs_heavy_per_s: f64,
    pub shares_light_p99_us: f64,
    pub shares_light_p50_us: f64,
    pub shares_light_per_s: f64,
    pub shares_heavy_per_s: f64,
    /// Under the shares: light p99 ÷ alone, light throughput ÷ alone.
    pub p99_ratio: f64,
    pub throughput_share: f64,
    /// The p99 ratio's spread over rounds (min, max).
    pub p99_ratio_spread: (f64, f64),
    /// Whether the light client ran at a real-time priority in every point.
    pub light_realtime: bool,
}

/// A key file with the admin, tenant 1 (the bundled data) and tenant 2, as an operator
/// provisions a second tenant; written with mode 0600 into a private folder of the system's
/// temporary directory (never beside the results).
fn credentials() -> anyhow::Result<(PathBuf, Keyring)> {
    use rand::RngCore;
    let fresh = |id: u32, p: Principal| {
        let mut s = [0u8; SECRET_LEN];
        rand::thread_rng().fill_bytes(&mut s);
        Credential::new(id, p, s)
    };
    let keys = Keyring::new(vec![
        fresh(0, Principal::Admin),
        fresh(1, Principal::Tenant(HEAVY_TENANT)),
        fresh(2, Principal::Tenant(LIGHT_TENANT)),
    ])?;
    let dir = std::env::temp_dir().join(format!(
        "naam-fairness-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    }
    let path = dir.join("credentials");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(keys.to_text().as_bytes())?;
    }
    Ok((path, keys))
}

fn tenant_client(d: &Deployment, keys: &Keyring, tenant: u32) -> anyhow::Result<Client> {
    let credential = keys
        .iter()
        .find(|k| k.principal == Principal::Tenant(tenant))
        .cloned();
    Ok(Client::with_servers(
        &[d.server()],
        ClientConfig {
            tenant,
            credential,
            timeout: Duration::from_millis(100),
            max_retries: 8,
            ..ClientConfig::default()
        },
    )?)
}

struct Deployed {
    d: Deployment,
    keys: Keyring,
    spin: u32,
    grind: u32,
    grind_args: [u8; 16],
}

fn deploy(cfg: &FairnessConfig, fcfs: bool) -> anyhow::Result<Deployed> {
    let (cred_path, keys) = credentials()?;
    let mut args: Vec<String> = ["--pin", "--backoff", "yield", "--stale-ms", "1000"]
        .map(String::from)
        .to_vec();
    if fcfs {
        args.push("--fcfs".into());
    }
    if let Some(us) = cfg.poll_budget_us {
        args.extend(["--poll-budget-us".into(), us.to_string()]);
    }
    let d = Deployment::start(
        crate::procs::binaries()?,
        DeployConfig {
            mica_keys: 1024,
            btree_keys: 1024,
            nic_workers: 1,
            dataplane_args: args,
            credentials: Some(cred_path.clone()),
            log_dir: crate::procs::log_dir(),
            log_filter: "warn".into(),
            ..DeployConfig::default()
        },
    );
    // Both processes read the key file when they start, and only then.
    if let Some(dir) = cred_path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    let d = d?;
    let mut light = tenant_client(&d, &keys, LIGHT_TENANT)?;
    let spin = light.register(
        0,
        SPIN_OBJECT,
        &RegisterOptions {
            name: "spin".into(),
            section: None,
            class: SPIN_CLASS,
            read_only: true,
        },
    )?;
    let mut heavy = tenant_client(&d, &keys, HEAVY_TENANT)?;
    let grind = heavy.register(
        0,
        GRIND_OBJECT,
        &RegisterOptions {
            name: "grind".into(),
            section: None,
            class: GRIND_CLASS,
            read_only: true,
        },
    )?;
    let mut grind_args = [0u8; 16];
    grind_args[0..4].copy_from_slice(&naam_handlers::bundled::region::RECORD.to_le_bytes());
    grind_args[4..8].copy_from_slice(&cfg.heavy_steps.clamp(1, 30).to_le_bytes());
    Ok(Deployed {
        d,
        keys,
        spin,
        grind,
        grind_args,
    })
}

/// The light tenant: `rate` requests per second for `seconds`, latency from each request's
/// intended send time. Returns (completed per second, percentiles, failed).
fn light_load(
    c: &mut Client,
    spin: u32,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<(f64, Percentiles, u64)> {
    let total = (rate * seconds) as u64;
    let log = LatencyLog::new(total as usize);
    let mut open: HashMap<Ticket, (u64, Instant)> = HashMap::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    let start = Instant::now();
    let mut sent = 0u64;
    let on_done =
        |open: &mut HashMap<Ticket, (u64, Instant)>, c: naam_client::Completion| -> (u64, u64) {
            let Some((id, at)) = open.remove(&c.ticket) else {
                return (0, 0);
            };
            match c.result {
                Ok(_) => {
                    log.record(id, at.elapsed());
                    (1, 0)
                }
                Err(_) => (0, 1),
            }
        };
    while sent < total {
        let intended = start + Duration::from_secs_f64(sent as f64 / rate);
        let now = Instant::now();
        if now >= intended {
            let t = c.submit_call_on(0, spin, SPIN_CLASS, &sent.to_le_bytes(), ExecMode::Server)?;
            open.insert(t, (sent, intended));
            sent += 1;
            continue;
        }
        if open.is_empty() {
            // `poll` returns at once with nothing outstanding: sleep instead of spinning on a
            // core the dataplane needs.
            std::thread::sleep(intended - now);
            continue;
        }
        if let Some(done) = c.poll(Some(intended - now))? {
            let (o, f) = on_done(&mut open, done);
            ok += o;
            failed += f;
        }
    }
    let drain_until = Instant::now() + Duration::from_secs(2);
    while !open.is_empty() && Instant::now() < drain_until {
        match c.poll(Some(Duration::from_millis(10)))? {
            Some(done) => {
                let (o, f) = on_done(&mut open, done);
                ok += o;
                failed += f;
            }
            None => continue,
        }
    }
    failed += open.len() as u64;
    let elapsed = start.elapsed().as_secs_f64().max(seconds);
    let (_, h) = log.summary();
    Ok((ok as f64 / elapsed, Percentiles::of(&h), failed))
}

/// The heavy tenant: `outstanding` requests in flight until `stop`. Returns (completed per
/// second, failed).
fn heavy_load(
    c: &mut Client,
    dep: &Deployed,
    outstanding: usize,
    stop: &AtomicBool,
) -> anyhow::Result<(f64, u64)> {
    let start = Instant::now();
    let (mut in_flight, mut ok, mut failed) = (0usize, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        while in_flight < outstanding {
            c.submit_call_on(0, dep.grind, GRIND_CLASS, &dep.grind_args, ExecMode::Server)?;
            in_flight += 1;
        }
        if let Some(done) = c.poll(Some(Duration::from_millis(5)))? {
            in_flight -= 1;
            match done.result {
                Ok(_) => ok += 1,
                Err(_) => failed += 1,
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // What is still outstanding is abandoned (the client goes away with it).
    Ok((ok as f64 / elapsed, failed))
}

/// The light tenant's client, too, stands for a machine of its own, and its latency is
/// measured from each request's intended send time: it must send on time and see its reply
/// as it arrives. So its thread sleeps with a timer slack of 1 ns (the default 50 µs made
/// every sleep until the next send late by about that much, counted as latency in every
/// case alike) and, where the system allows, runs at the lowest real-time priority, so its
/// wake-ups do not queue behind the heavy client's and the kernel's work on these two cores
/// (docs/profiles/fairness-2026-12-07.md). Returns whether the real-time priority took.
fn light_priority() -> bool {
    // SAFETY: PR_SET_TIMERSLACK takes the slack in ns as its one argument and acts on the
    // calling thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` is a valid sched_param for the call; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    rc == 0
}

/// The heavy tenant's client would run on machines of its own; here it shares two cores
/// with the dataplane and the light tenant's client, so it runs only on otherwise idle CPU
/// (`SCHED_IDLE`), lest its sending be measured as the light tenant's latency.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        eprintln!(
            "fairness: could not lower the heavy client's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn counter(d: &Deployment, name: &str) -> i128 {
    d.stats()
        .ok()
        .and_then(|s| s.get(name).copied())
        .map_or(0, i128::from)
}

fn refused(d: &Deployment, tenant: u32) -> i128 {
    counter(d, &format!("total.tenant.{tenant}.refused"))
}

/// One point: the light tenant, the heavy one, or both at once.
fn point(
    dep: &Deployed,
    cfg: &FairnessConfig,
    case: &'static str,
    round: usize,
    light: bool,
    heavy: bool,
) -> anyhow::Result<FairnessRow> {
    let before = (
        refused(&dep.d, LIGHT_TENANT),
        refused(&dep.d, HEAVY_TENANT),
        counter(&dep.d, "total.busy_ns"),
        counter(&dep.d, "total.port_drop.kernel_rx"),
        Instant::now(),
        counter(&dep.d, "total.polls"),
    );
    let stop = AtomicBool::new(false);
    let (l, h) = std::thread::scope(|s| -> anyhow::Result<_> {
        let heavy_thread = heavy.then(|| {
            s.spawn(|| -> anyhow::Result<(f64, u64)> {
                lower_priority();
                let mut c = tenant_client(&dep.d, &dep.keys, HEAVY_TENANT)?;
                heavy_load(&mut c, dep, cfg.heavy_outstanding, &stop)
            })
        });
        // The heavy tenant reaches its steady state first.
        if heavy {
            std::thread::sleep(Duration::from_millis(300));
        }
        let l = if light {
            let t = s.spawn(|| -> anyhow::Result<_> {
                let realtime = light_priority();
                let mut c = tenant_client(&dep.d, &dep.keys, LIGHT_TENANT)?;
                Ok((
                    light_load(&mut c, dep.spin, cfg.light_rate, cfg.seconds)?,
                    realtime,
                ))
            });
            Some(
                t.join()
                    .map_err(|_| anyhow::anyhow!("light tenant's thread panicked"))??,
            )
        } else {
            std::thread::sleep(Duration::from_secs_f64(cfg.seconds));
            None
        };
        stop.store(true, Ordering::Relaxed);
        let h = match heavy_thread {
            Some(t) => Some(
                t.join()
                    .map_err(|_| anyhow::anyhow!("heavy tenant's thread panicked"))??,
            ),
            None => None,
        };
        Ok((l, h))
    })?;
    let ((light_per_s, lat, light_failed), light_realtime) =
        l.unwrap_or(((0.0, Percentiles::default(), 0), false));
    let (heavy_per_s, heavy_failed) = h.unwrap_or((0.0, 0));
    Ok(FairnessRow {
        case,
        round,
        light_per_s,
        light_p50_us: lat.p50_us,
        light_p99_us: lat.p99_us,
        light_failed,
        light_realtime,
        heavy_per_s,
        heavy_failed,
        light_refused: refused(&dep.d, LIGHT_TENANT) - before.0,
        heavy_refused: refused(&dep.d, HEAVY_TENANT) - before.1,
        worker_busy: (counter(&dep.d, "total.busy_ns") - before.2) as f64
            / before.4.elapsed().as_nanos() as f64,
        kernel_drops: counter(&dep.d, "total.port_drop.kernel_rx") - before.3,
        poll_us: (counter(&dep.d, "total.busy_ns") - before.2) as f64
            / 1000.0
            / (counter(&dep.d, "total.polls") - before.5).max(1) as f64,
    })
}

/// Runs every case `rounds` times, alternating, on two deployments (shares and FCFS).
pub fn run(
    cfg: &FairnessConfig,
    mut progress: impl FnMut(&FairnessRow),
) -> anyhow::Result<Vec<FairnessRow>> {
    let shares = deploy(cfg, false)?;
    let fcfs = deploy(cfg, true)?;
    let mut rows = Vec::new();
    for round in 0..cfg.rounds.max(1) {
        for (dep, case, light, heavy) in [
            (&shares, "light alone", true, false),
            (&shares, "heavy alone", false, true),
            (&fcfs, "fcfs", true, true),
            (&shares, "shares", true, true),
        ] {
            let r = point(dep, cfg, case, round, light, heavy)?;
            progress(&r);
            rows.push(r);
        }
    }
    Ok(rows)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn summary(rows: &[FairnessRow]) -> FairnessSummary {
    let of = |case: &str, f: fn(&FairnessRow) -> f64| {
        median(rows.iter().filter(|r| r.case == case).map(f).collect())
    };
    let alone_p99 = of("light alone", |r| r.light_p99_us);
    let alone_tput = of("light alone", |r| r.light_per_s);
    // Per round: the shares' p99 over that round's light-alone p99.
    let ratios: Vec<f64> = rows
        .iter()
        .filter(|r| r.case == "shares")
        .filter_map(|s| {
            rows.iter()
                .find(|a| a.case == "light alone" && a.round == s.round)
                .map(|a| s.light_p99_us / a.light_p99_us.max(1.0))
        })
        .collect();
    let spread = (
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
    );
    FairnessSummary {
        light_alone_p99_us: alone_p99,
        light_alone_p50_us: of("light alone", |r| r.light_p50_us),
        light_alone_per_s: alone_tput,
        heavy_alone_per_s: of("heavy alone", |r| r.heavy_per_s),
        fcfs_light_p99_us: of("fcfs", |r| r.light_p99_us),
        fcfs_light_p50_us: of("fcfs", |r| r.light_p50_us),
        fcfs_light_per_s: of("fcfs", |r| r.light_per_s),
        fcfs_heavy_per_s: of("fcfs", |r| r.heavy_per_s),
        shares_light_p99_us: of("shares", |r| r.light_p99_us),
        shares_light_p50_us: of("shares", |r| r.light_p50_us),
        shares_light_per_s: of("shares", |r| r.light_per_s),
        shares_heavy_per_s: of("shares", |r| r.heavy_per_s),
        p99_ratio: median(ratios),
        throughput_share: of("shares", |r| r.light_per_s) / alone_tput.max(1e-9),
        p99_ratio_spread: spread,
        light_realtime: rows
            .iter()
            .filter(|r| r.case != "heavy alone")
            .all(|r| r.light_realtime),
    }
}

/// The table printed and kept in the README.
pub fn markdown(s: &FairnessSummary) -> String {
    format!(
        "| | light p99 | light p50 | light ops/s | heavy ops/s |\n|---|---|---|---|---|\n\
         | light tenant alone | {:.0} µs | {:.0} µs | {:.0} | |\n\
         | heavy tenant alone | | | | {:.0} |\n\
         | both, first come first served | {:.0} µs ({:.1}×) | {:.0} µs | {:.0} | {:.0} |\n\
         | both, tenants' shares | {:.0} µs ({:.1}×) | {:.0} µs | {:.0} | {:.0} |\n",
        s.light_alone_p99_us,
        s.light_alone_p50_us,
        s.light_alone_per_s,
        s.heavy_alone_per_s,
        s.fcfs_light_p99_us,
        s.fcfs_light_p99_us / s.light_alone_p99_us.max(1.0),
        s.fcfs_light_p50_us,
        s.fcfs_light_per_s,
        s.fcfs_heavy_per_s,
        s.shares_light_p99_us,
        s.p99_ratio,
        s.shares_light_p50_us,
        s.shares_light_per_s,
        s.shares_heavy_per_s,
    )
}

/// The last line `naam-bench fairness` prints.
pub fn last_line(s: &FairnessSummary) -> String {
    format!(
        "fairness: light tenant p99 {:.2}x alone, throughput {:.1} % of alone (scheduler)",
        s.p99_ratio,
        s.throughput_share * 100.0
    )
}

/// Light p99 per case (bars), one chart.
pub fn write_chart(dir: &Path, s: &FairnessSummary) -> anyhow::Result<Vec<PathBuf>> {
    let chart = crate::bars::BarChart {
        title: "Light tenant beside a heavy one on one NIC worker".into(),
        y_label: "light tenant p99 (µs)".into(),
        categories: vec![
            "light alone".into(),
            "first come, first served".into(),
            "tenants' shares".into(),
        ],
        series: vec![crate::bars::BarSeries {
            name: "p99".into(),
            values: vec![
                Some(s.light_alone_p99_us),
                Some(s.fcfs_light_p99_us),
                Some(s.shares_light_p99_us),
            ],
        }],
    };
    chart.write(dir, "fairness")
}
