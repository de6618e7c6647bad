//! The shift experiment (DESIGN §8 "shift", issue 7 item 7): where messages execute, per
//! millisecond, around injected host and NIC congestion, and how long the runtime takes to
//! move the affected traffic elsewhere.
//!
//! A local deployment (host agent + dataplane as processes, `--home host`: classes run on the
//! host's cores until they are congested; idle workers back off, DESIGN §9) serves a fixed-rate
//! open-loop load of MICA GETs (class 0) and B-tree lookups (class 3), both read-only, from one
//! client thread in `ExecMode::Auto` (it follows placement hints). Each repetition:
//!
//! ```text
//! calm | host congested (DESCRIBE congest:<ms>, forwarded to the host agent) .......... | calm
//!             | NIC congested too (DESCRIBE congest-nic:<ms>) |
//! ```
//!
//! Host congestion moves the classes host → NIC; NIC congestion on top of it sends the
//! read-only classes to the clients (placement hints with a lease); when it ends they come
//! back to the NIC, and when the host is calm again, home to the host.
//!
//! Each message is counted in the millisecond it was due to be sent (open loop), at the place
//! its reply says it executed (`executed_at`; `Client` when the client ran it on a hint). A
//! reply slower than the client's retransmission timeout counts as *delayed* (it sat in a
//! congested queue, was answered `busy` or was sent again), wherever it finally ran: it was not
//! moved in time. The *shift time* of an injection is the time from its onset until ≥ 90 % of
//! the traffic runs elsewhere than the congested place, in that millisecond and over the next
//! few ([`settle_ms`]); the *time back* is the time from its end until ≥ 90 % runs where it ran
//! before the onset again.

mod output;

pub use output::{chart, chart_zoom, print, timeline_rows, write, TimelineRow};

use naam_client::bundled::{self, BTREE_LOOKUP};
use naam_client::{Client, ClientConfig, ExecMode, Mica, Response, ServerAddr};
use naam_core::auth::Credential;
use naam_core::wire::Location;
use naam_deploy::{Binaries, DeployConfig, Deployment};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Messages sent in one millisecond, by where they executed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Bucket {
    /// Executed at the client (local execution on a placement hint), in time.
    pub client: u32,
    /// Executed on the NIC's cores (the dataplane), in time.
    pub nic: u32,
    /// Executed on the host's cores (the host agent), in time.
    pub host: u32,
    /// Answered later than the client's retransmission timeout (queued at a congested place,
    /// answered `busy`, or sent again), wherever it ran in the end.
    pub delayed: u32,
    /// Never answered, or answered with an error.
    pub lost: u32,
}

impl Bucket {
    pub fn total(&self) -> u32 {
        self.client + self.nic + self.host + self.delayed + self.lost
    }

    /// Messages executed in time at `loc`.
    pub fn at(&self, loc: Location) -> u32 {
        match loc {
            Location::Client => self.client,
            Location::Nic => self.nic,
            Location::Host => self.host,
        }
    }

    /// Messages executed in time anywhere but `loc`.
    pub fn away_from(&self, loc: Location) -> u32 {
        self.client + self.nic + self.host - self.at(loc)
    }

    fn add(&mut self, o: &Bucket) {
        self.client += o.client;
        self.nic += o.nic;
        self.host += o.host;
        self.delayed += o.delayed;
        self.lost += o.lost;
    }

    /// The place most messages executed at in time (None for an empty bucket).
    pub fn dominant(&self) -> Option<Location> {
        [Location::Host, Location::Nic, Location::Client]
            .into_iter()
            .filter(|&l| self.at(l) > 0)
            .max_by_key(|&l| self.at(l))
    }
}

/// The first offset `d` (ms) from `from`, below `horizon`, at which the share of messages
/// counted by `good` reaches `threshold`, both in bucket `from + d` and over the non-empty
/// buckets of `from + d .. from + d + window` (so one lucky millisecond does not count).
/// Empty buckets (nothing sent) are skipped. `None`: it never did.
pub fn settle_ms(
    timeline: &[Bucket],
    from: usize,
    horizon: usize,
    good: impl Fn(&Bucket) -> u32,
    threshold: f64,
    window: usize,
) -> Option<usize> {
    let end = from.saturating_add(horizon).min(timeline.len());
    let share = |g: u32, t: u32| g as f64 >= threshold * t as f64;
    (from..end).find_map(|i| {
        let b = &timeline[i];
        if b.total() == 0 || !share(good(b), b.total()) {
            return None;
        }
        let (mut g, mut t) = (0, 0);
        for b in &timeline[i..(i + window.max(1)).min(timeline.len())] {
            g += good(b);
            t += b.total();
        }
        share(g, t).then_some(i - from)
    })
}

/// The place most traffic ran in time during the `span` ms before `at`.
pub fn dominant_before(timeline: &[Bucket], at: usize, span: usize) -> Option<Location> {
    let mut sum = Bucket::default();
    for b in &timeline[at.saturating_sub(span).min(timeline.len())..at.min(timeline.len())] {
        sum.add(b);
    }
    sum.dominant()
}

/// One placement decision of the dataplane's policy, from its STATS
/// (`decision.K.cC.FROM-TO.REASON` = time in ns on the dataplane's monotonic clock).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct PolicyDecision {
    /// Milliseconds since the experiment's start (the dataplane's clock is this machine's
    /// CLOCK_MONOTONIC, like the experiment's).
    pub at_us: i64,
    pub class: u16,
    pub from: String,
    pub to: String,
    pub reason: String,
}

impl PolicyDecision {
    pub fn at_ms(&self) -> f64 {
        self.at_us as f64 / 1000.0
    }

    /// Parses one STATS entry; `mono0_ns` is the monotonic time of the experiment's start.
    pub fn parse(name: &str, value: u64, mono0_ns: u64) -> Option<Self> {
        let rest = name.strip_prefix("decision.")?;
        let mut parts = rest.splitn(4, '.');
        let _k = parts.next()?;
        let class = parts.next()?.strip_prefix('c')?.parse().ok()?;
        let (from, to) = parts.next()?.split_once('-')?;
        let reason = parts.next()?.to_owned();
        Some(Self {
            at_us: (value as i64 - mono0_ns as i64) / 1000,
            class,
            from: from.to_owned(),
            to: to.to_owned(),
            reason,
        })
    }

    /// The reason in words.
    pub fn reason_text(&self) -> &str {
        naam_core::policy::Reason::named(&self.reason).map_or(&self.reason, |r| r.describe())
    }
}

/// Collects the policy's decisions from STATS polls (it keeps only its last 64).
#[derive(Debug, Default)]
pub struct DecisionLog {
    seen: BTreeSet<PolicyDecision>,
}

impl DecisionLog {
    /// Adds the decisions in `stats`; returns the new ones, oldest first.
    pub fn absorb(&mut self, stats: &[(String, u64)], mono0_ns: u64) -> Vec<PolicyDecision> {
        let mut new: Vec<PolicyDecision> = stats
            .iter()
            .filter_map(|(n, v)| PolicyDecision::parse(n, *v, mono0_ns))
            .filter(|d| self.seen.insert(d.clone()))
            .collect();
        new.sort();
        new
    }

    pub fn all(&self) -> Vec<PolicyDecision> {
        self.seen.iter().cloned().collect()
    }
}

/// The name of a bundled class.
pub fn class_name(class: u16) -> &'static str {
    match class {
        0 => "mica_get",
        1 => "mica_put",
        2 => "mica_delete",
        3 => "btree_lookup",
        4 => "btree_scan",
        5 => "record",
        _ => "offload",
    }
}

/// Dataplane flags of the experiments' deployments: messages waiting at a congested host
/// hold a worker slot each until the host answers, so the default 64 slots would all be held
/// by them and everything else would be answered `busy` even after the classes moved; with
/// more slots than the host's rings (256 entries) have room for, moved traffic keeps running.
/// And a host heartbeat may be late by more than the default 100 ms on this shared 2-core
/// machine while a congested host worker spins: 1 s keeps that from counting as a lost host.
pub fn dataplane_args() -> Vec<String> {
    ["--slots", "1024", "--stale-ms", "1000"]
        .map(String::from)
        .to_vec()
}

/// How to start the processes: the subcommands of this program when it is `naam-rs`,
/// otherwise the separate programs (built first when missing).
pub fn binaries() -> anyhow::Result<Binaries> {
    let exe = std::env::current_exe()?;
    if exe.file_stem().is_some_and(|s| s == "naam-rs") {
        return Ok(Binaries::subcommands(exe));
    }
    Ok(Binaries::locate_or_build()?)
}

/// The application workload shared by the shift experiment and the demo: MICA (YCSB keys the
/// host agent pre-filled) and B-tree lookups of present keys, on one client.
pub struct Apps {
    pub mica: Mica<Client>,
    pub mica_keys: u64,
    pub mica_seed: u64,
    btree_region: u32,
    btree_root: u64,
    pub btree_keys: u64,
}

impl Apps {
    /// A client of `dep` in `mode`, with both applications described and their handlers
    /// loaded for local execution.
    pub fn connect(
        server: ServerAddr,
        mode: ExecMode,
        timeout: Duration,
        credential: Option<Credential>,
    ) -> anyhow::Result<Self> {
        let cfg = ClientConfig {
            exec_mode: mode,
            timeout,
            credential,
            // Messages that reached a congested host wait there until it serves again: keep
            // retrying (0.5 s apart) for longer than an injected congestion lasts.
            max_retries: 20,
            max_backoff: Duration::from_millis(500),
            ..ClientConfig::default()
        };
        let mut c = Client::with_servers(&[server], cfg)?;
        let bt = c.describe(0, "btree")?;
        let get = |p: &[(String, u64)], n: &str| p.iter().find(|(k, _)| k == n).map(|e| e.1);
        bundled::load_local_btree(&mut c)?;
        let mica = Mica::new(c)?;
        Ok(Self {
            mica_keys: mica.param(0, "keys").unwrap_or(1).max(1),
            mica_seed: mica.param(0, "seed").unwrap_or(1),
            mica,
            btree_region: get(&bt, "region").unwrap_or(bundled::region::BTREE as u64) as u32,
            btree_root: get(&bt, "root").unwrap_or(0),
            btree_keys: get(&bt, "keys").unwrap_or(1).max(1),
        })
    }

    /// Starts a B-tree lookup of the `i`-th present key (keys `1, 3, 5, ...`).
    pub fn submit_lookup(&mut self, i: u64) -> naam_client::Result<naam_client::Ticket> {
        let key = 2 * (i % self.btree_keys) + 1;
        let args = naam_handlers::btree::Args::lookup(self.btree_region, key)
            .with_root(self.btree_root)
            .to_bytes();
        let c = self.mica.inner_mut();
        let mode = c.config().exec_mode;
        c.submit_call_on(0, BTREE_LOOKUP.id, BTREE_LOOKUP.class, &args, mode)
    }

    /// Starts a GET of the `i`-th pre-filled MICA key.
    pub fn submit_get(&mut self, i: u64) -> naam_client::Result<naam_client::Ticket> {
        let k = crate::ycsb::key(self.mica_seed, i % self.mica_keys);
        self.mica.submit_get(&k)
    }

    pub fn client(&mut self) -> &mut Client {
        self.mica.inner_mut()
    }
}

/// A client for control requests (congestion, STATS), sealed with `credential`.
pub fn control_client(
    server: ServerAddr,
    credential: Option<Credential>,
) -> anyhow::Result<Client> {
    Ok(Client::with_servers(
        &[server],
        ClientConfig {
            exec_mode: ExecMode::Server,
            timeout: Duration::from_millis(200),
            credential,
            ..ClientConfig::default()
        },
    )?)
}

/// The experiment's sizes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShiftConfig {
    /// Offered load, messages per second (open loop).
    pub rate: f64,
    /// Share of B-tree lookups in the load (the rest are MICA GETs).
    pub btree_share: f64,
    pub reps: usize,
    /// Calm time before the host's congestion and after it.
    pub calm_ms: u64,
    /// Length of the host's congestion.
    pub host_ms: u64,
    /// Onset of the NIC's congestion after the host's onset.
    pub nic_after_ms: u64,
    /// Length of the NIC's congestion.
    pub nic_ms: u64,
    /// The client's first retransmission timeout; slower replies count as delayed.
    pub timeout_ms: u64,
    pub mica_keys: u64,
    pub btree_keys: u64,
    /// Share of the traffic that must run elsewhere (0.9).
    pub threshold: f64,
    /// Milliseconds over which the share must hold.
    pub window_ms: usize,
    /// Process logs go here when set.
    #[serde(skip)]
    pub log_dir: Option<PathBuf>,
}

impl Default for ShiftConfig {
    fn default() -> Self {
        Self {
            rate: 8_000.0,
            btree_share: 0.5,
            reps: 10,
            calm_ms: 700,
            host_ms: 1_500,
            nic_after_ms: 500,
            nic_ms: 500,
            timeout_ms: 20,
            mica_keys: 16_384,
            btree_keys: 16_384,
            threshold: 0.9,
            window_ms: 5,
            log_dir: None,
        }
    }
}

impl ShiftConfig {
    fn rep_ms(&self) -> u64 {
        2 * self.calm_ms + self.host_ms
    }

    fn total_ms(&self) -> u64 {
        self.rep_ms() * self.reps.max(1) as u64
    }
}

/// One injection and what it did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Injection {
    pub rep: usize,
    /// `host` or `nic`.
    pub congested: &'static str,
    pub onset_ms: f64,
    pub end_ms: f64,
    /// How long the control request took to be acknowledged.
    pub ack_us: f64,
    /// Whether the traffic ran at the congested place at the onset (else nothing is timed).
    pub affected: bool,
    /// Where the traffic ran before the onset.
    pub before: String,
    /// Where most of it ran once it had shifted.
    pub moved_to: String,
    /// Onset until ≥ threshold of the traffic runs elsewhere (ms, 1 ms resolution).
    pub shift_ms: Option<f64>,
    /// End until ≥ threshold runs where it ran before the onset.
    pub back_ms: Option<f64>,
}

/// Median, min, max of some values.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Spread {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self {
            n,
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

/// Summary of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShiftSummary {
    pub host_shift_ms: Spread,
    pub host_back_ms: Spread,
    pub nic_shift_ms: Spread,
    pub nic_back_ms: Spread,
    /// Injections whose traffic never shifted within the congestion.
    pub not_shifted: usize,
    /// Injections at a place the traffic did not run at (it had not come back yet).
    pub unaffected: usize,
    pub messages: u64,
    pub delayed: u64,
    pub lost: u64,
    pub retransmits: u64,
    pub backoff: &'static str,
    pub home: &'static str,
}

/// Everything a run measured.
pub struct ShiftRun {
    pub config: ShiftConfig,
    pub timeline: Vec<Bucket>,
    pub injections: Vec<Injection>,
    pub decisions: Vec<PolicyDecision>,
    pub summary: ShiftSummary,
}

/// An injection as the injector made it: repetition, what, onset ms, end ms, ack µs.
type Mark = (usize, &'static str, f64, f64, f64);

/// The deployment the shift experiment and the demo run on: classes at home on the host,
/// the policy's settings of [`dataplane_args`].
pub fn deploy_config(mica_keys: u64, btree_keys: u64, log_dir: Option<PathBuf>) -> DeployConfig {
    DeployConfig {
        home: "host".into(),
        mica_keys,
        btree_keys,
        log_dir,
        dataplane_args: dataplane_args(),
        ..DeployConfig::default()
    }
}

/// Starts a deployment with `bins`, runs the experiment, stops the deployment.
/// Waits (at most 3 s) until every class runs at its home, the host: the warm-up's first
/// messages (cold caches, a debug build's slow start) can make the host look congested and
/// the classes move, and the first repetition must start from where the experiment says the
/// traffic is (a CI run found it at the NIC when the host congestion was injected).
fn settle_at_home(apps: &mut Apps) {
    let home = naam_core::wire::Location::Host as u64;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let away: Vec<String> = match apps.client().server_stats(0) {
            Ok(stats) => stats
                .into_iter()
                .filter(|(n, v)| n.starts_with("class.") && n.ends_with(".placement") && *v != home)
                .map(|(n, _)| n)
                .collect(),
            Err(_) => vec!["(no STATS)".into()],
        };
        if away.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("shift: warning: still away from home after the warm-up: {away:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(bins: Binaries, cfg: &ShiftConfig) -> anyhow::Result<ShiftRun> {
    let dep = Deployment::start(
        bins,
        deploy_config(cfg.mica_keys, cfg.btree_keys, cfg.log_dir.clone()),
    )?;
    let server = dep.server();
    let admin = dep.admin_key()?;
    let mut apps = Apps::connect(
        server,
        ExecMode::Auto,
        Duration::from_millis(cfg.timeout_ms),
        Some(admin.clone()),
    )?;
    // Warm up: every class has run and the policy has seen traffic.
    for i in 0..200 {
        let t = if i % 2 == 0 {
            apps.submit_get(i)?
        } else {
            apps.submit_lookup(i)?
        };
        apps.client().wait(t)?;
    }
    settle_at_home(&mut apps);

    let total_ms = cfg.total_ms() as usize;
    let tail_ms = 200usize;
    let start = Instant::now() + Duration::from_millis(20);
    let mono0 = naam_link::now_ns() + 20_000_000;
    let done = Arc::new(AtomicBool::new(false));
    let decisions = Arc::new(Mutex::new(DecisionLog::default()));

    let injector = {
        let cfg = cfg.clone();
        let done = done.clone();
        let decisions = decisions.clone();
        std::thread::spawn(move || -> anyhow::Result<Vec<Mark>> {
            // (rep, what, onset ms, end ms, ack us)
            let mut ctl = control_client(server, Some(admin))?;
            let mut plan: Vec<(u64, usize, &'static str, u64)> = Vec::new();
            for r in 0..cfg.reps.max(1) {
                let base = r as u64 * cfg.rep_ms() + cfg.calm_ms;
                plan.push((base, r, "host", cfg.host_ms));
                plan.push((base + cfg.nic_after_ms, r, "nic", cfg.nic_ms));
            }
            plan.sort();
            let mut out = Vec::new();
            let mut next_stats = Instant::now();
            let mut plan = plan.into_iter().peekable();
            while !done.load(Ordering::Relaxed) {
                let now = Instant::now();
                if let Some(&(at, r, what, ms)) = plan.peek() {
                    let due = start + Duration::from_millis(at);
                    if now >= due {
                        plan.next();
                        let app = match what {
                            "host" => format!("congest:{ms}"),
                            _ => format!("congest-nic:{ms}"),
                        };
                        let sent = Instant::now();
                        ctl.describe(0, &app)?;
                        let ack = sent.elapsed();
                        let onset = sent.saturating_duration_since(start).as_secs_f64() * 1e3;
                        out.push((r, what, onset, onset + ms as f64, ack.as_secs_f64() * 1e6));
                        continue;
                    }
                }
                if now >= next_stats {
                    next_stats = now + Duration::from_millis(100);
                    if let Ok(stats) = ctl.server_stats(0) {
                        let mut log = decisions.lock().unwrap_or_else(|e| e.into_inner());
                        log.absorb(&stats, mono0);
                    }
                    continue;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            if let Ok(stats) = ctl.server_stats(0) {
                decisions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .absorb(&stats, mono0);
            }
            Ok(out)
        })
    };

    let load = drive(&mut apps, cfg, start, total_ms + tail_ms);
    done.store(true, Ordering::Relaxed);
    let marks = injector
        .join()
        .map_err(|_| anyhow::anyhow!("the injector thread panicked"))??;
    let timeline = load?;
    let retransmits = apps.client().stats().retransmits;
    drop(apps);
    drop(dep);

    let mut injections = Vec::new();
    for &(rep, what, onset, end, ack_us) in &marks {
        let congested = if what == "host" {
            Location::Host
        } else {
            Location::Nic
        };
        let on = onset.floor() as usize;
        let off = end.ceil() as usize;
        let before = dominant_before(&timeline, on, 50);
        // Traffic that did not run at the congested place (it had not come back from the
        // previous injection) is not affected: no shift to time.
        let affected = before == Some(congested);
        let shift = settle_ms(
            &timeline,
            on,
            off.saturating_sub(on),
            |b| b.away_from(congested),
            cfg.threshold,
            cfg.window_ms,
        )
        .filter(|_| affected);
        let moved_to = shift.and_then(|d| {
            let s = on + d;
            dominant_before(&timeline, (s + 20).min(off), 20)
        });
        let back = before.filter(|_| affected).and_then(|home| {
            settle_ms(
                &timeline,
                off,
                cfg.calm_ms as usize,
                |b| b.at(home),
                cfg.threshold,
                cfg.window_ms,
            )
        });
        injections.push(Injection {
            rep,
            congested: what,
            onset_ms: onset,
            end_ms: end,
            ack_us,
            affected,
            before: before.map_or("-", loc_name).into(),
            moved_to: moved_to.map_or("-", loc_name).into(),
            shift_ms: shift.map(|d| d as f64),
            back_ms: back.map(|d| d as f64),
        });
    }
    let pick = |what: &str, f: fn(&Injection) -> Option<f64>| {
        Spread::of(
            injections
                .iter()
                .filter(|i| i.congested == what)
                .filter_map(f)
                .collect(),
        )
    };
    let mut sum = Bucket::default();
    for b in &timeline {
        sum.add(b);
    }
    let summary = ShiftSummary {
        host_shift_ms: pick("host", |i| i.shift_ms),
        host_back_ms: pick("host", |i| i.back_ms),
        nic_shift_ms: pick("nic", |i| i.shift_ms),
        nic_back_ms: pick("nic", |i| i.back_ms),
        not_shifted: injections
            .iter()
            .filter(|i| i.affected && i.shift_ms.is_none())
            .count(),
        unaffected: injections.iter().filter(|i| !i.affected).count(),
        messages: sum.total() as u64,
        delayed: sum.delayed as u64,
        lost: sum.lost as u64,
        retransmits,
        backoff: "yield (local deployment)",
        home: "host",
    };
    let decisions = decisions.lock().unwrap_or_else(|e| e.into_inner()).all();
    Ok(ShiftRun {
        config: cfg.clone(),
        timeline,
        injections,
        decisions,
        summary,
    })
}

pub fn loc_name(l: Location) -> &'static str {
    match l {
        Location::Client => "client",
        Location::Nic => "nic",
        Location::Host => "host",
    }
}

/// The open-loop load: `rate` messages per second for `ms` milliseconds, each counted in the
/// millisecond it was due.
fn drive(
    apps: &mut Apps,
    cfg: &ShiftConfig,
    start: Instant,
    ms: usize,
) -> anyhow::Result<Vec<Bucket>> {
    let mut timeline = vec![Bucket::default(); ms];
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(1.0));
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let end = start + Duration::from_millis(ms as u64);
    let mut inflight: HashMap<naam_client::Ticket, Instant> = HashMap::new();
    let mut rng = crate::ycsb::Rng::new(7);
    let mut next = start;
    let mut n = 0u64;
    let bucket = |t: Instant| (t.saturating_duration_since(start).as_millis() as usize).min(ms - 1);
    loop {
        let now = Instant::now();
        while next <= now && next < end {
            let due = next;
            next += interval;
            n += 1;
            let r = if rng.next_f64() < cfg.btree_share {
                apps.submit_lookup(rng.next_u64())
            } else {
                apps.submit_get(rng.next_u64())
            };
            match r {
                Ok(t) => {
                    inflight.insert(t, due);
                }
                Err(_) => timeline[bucket(due)].lost += 1,
            }
        }
        if next >= end && inflight.is_empty() {
            break;
        }
        if now > end + Duration::from_secs(5) {
            for due in inflight.values() {
                timeline[bucket(*due)].lost += 1;
            }
            break;
        }
        crate::load::collect_replies(
            apps.client(),
            &mut inflight,
            next,
            Duration::from_millis(1),
            |due, arrived, result| {
                let b = &mut timeline[bucket(due)];
                match result {
                    Ok(Response::Am(r)) if arrived.saturating_duration_since(due) < timeout => {
                        match r.executed_at {
                            Location::Client => b.client += 1,
                            Location::Nic => b.nic += 1,
                            Location::Host => b.host += 1,
                        }
                    }
                    Ok(Response::Am(_)) => b.delayed += 1,
                    _ => b.lost += 1,
                }
            },
        )?;
    }
    let _ = n;
    Ok(timeline)
}

#[cfg(test)]
mod tests;
