//! YCSB workloads A, B and C on MICA, driven through `naam-client` against a running
//! deployment (DESIGN §8 "ycsb").
//!
//! - Workloads: A = 50 % reads / 50 % updates, B = 95 / 5, C = reads only.
//! - Key choice: YCSB's Zipfian generator (Gray et al., "Quickly generating billion-record
//!   synthetic databases", θ = 0.99) with scrambled keys (FNV-1a of the rank, modulo the key
//!   count, as YCSB's `ScrambledZipfianGenerator`), or uniform.
//! - Placement: `server` (every message to the server), `client` (handlers run here, ops sent
//!   one-sided), `auto` (server, following its placement hints).
//! - Open loop: each thread issues at `rate / threads` per second on a fixed schedule and
//!   measures latency from the *intended* send time, so a stalled server shows up in the tail
//!   (no coordinated omission). Closed loop: each thread keeps N requests outstanding.

use crate::load::Percentiles;
use hdrhistogram::Histogram;
use naam_client::{
    apps::MicaOutcome, ClientConfig, ExecMode, Mica, Response, ServerAddr, ShardedClient, Ticket,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A YCSB core workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// 50 % reads, 50 % updates.
    A,
    /// 95 % reads, 5 % updates.
    B,
    /// Reads only.
    C,
}

impl Workload {
    pub fn read_fraction(self) -> f64 {
        match self {
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C => 1.0,
        }
    }
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    Zipfian,
    Uniform,
}

/// Where the MICA handlers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Every message executes at the server (NIC or host, as the server places it).
    Server,
    /// Every handler runs at the client with one-sided ops.
    Client,
    /// At the server, following its placement hints.
    Auto,
}

impl Placement {
    pub fn exec_mode(self) -> ExecMode {
        match self {
            Placement::Server => ExecMode::Server,
            Placement::Client => ExecMode::Local,
            Placement::Auto => ExecMode::Auto,
        }
    }
}

/// SplitMix64: a small, fast generator (each thread has its own).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `sum_{i=1..n} 1 / i^theta`.
fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// A Zipfian constant from the command line: `0 <= theta < 1` (0 is uniform; at 1 and above
/// the generator's `1 / (1 - theta)` has no meaning).
pub fn parse_theta(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(t) if (0.0..1.0).contains(&t) => Ok(t),
        Ok(_) => Err(format!(
            "{s}: the Zipfian constant must be from 0 up to, not including, 1"
        )),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

/// YCSB's `ZipfianGenerator`: ranks `0..n`, rank 0 the most popular.
#[derive(Debug, Clone)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    pub fn new(n: u64, theta: f64) -> Self {
        let n = n.max(1);
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2, theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Self {
            n,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    pub fn next(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }
}

/// FNV-1a over the 8 bytes of `v` (YCSB's `fnvhash64`).
pub fn fnv64(v: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_le_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Key choice over `0..n`.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    Uniform(u64),
    /// Zipfian ranks, scrambled so popular keys are spread over the key space (and servers).
    Zipfian(Zipfian),
}

impl KeyChooser {
    pub fn new(dist: KeyDist, n: u64, theta: f64) -> Self {
        match dist {
            KeyDist::Uniform => KeyChooser::Uniform(n.max(1)),
            KeyDist::Zipfian => KeyChooser::Zipfian(Zipfian::new(n, theta)),
        }
    }

    pub fn next(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyChooser::Uniform(n) => rng.next_u64() % n,
            KeyChooser::Zipfian(z) => fnv64(z.next(rng)) % z.n,
        }
    }
}

/// The 16-byte MICA key of record `i` in key set `seed`: the keys a host agent pre-fills its
/// table with (`naam_handlers::mica::key_for`), so `--no-load` runs on a filled table.
pub fn key(seed: u64, i: u64) -> [u8; 16] {
    naam_handlers::mica::key_for(seed, i)
}

/// A value for record `i` at version `v`: `len` bytes, recognisable in a dump.
pub fn fill_value(i: u64, v: u64, out: &mut [u8]) {
    let mut r = Rng::new(i ^ v.rotate_left(32));
    for chunk in out.chunks_mut(8) {
        let w = r.next_u64().to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

/// One experiment.
#[derive(Debug, Clone)]
pub struct YcsbConfig {
    pub servers: Vec<ServerAddr>,
    pub workload: Workload,
    pub dist: KeyDist,
    pub theta: f64,
    pub keys: u64,
    pub value_size: usize,
    pub placement: Placement,
    pub duration: Duration,
    pub threads: usize,
    /// Open loop: total target rate (ops/s). `None`: closed loop.
    pub rate: Option<f64>,
    /// Closed loop: requests outstanding per thread. Open loop: the most in flight per thread.
    pub outstanding: usize,
    /// PUT every key once before measuring.
    pub load: bool,
    pub timeout: Duration,
    pub seed: u64,
    /// Key set (see [`key`]); `None`: the server's `describe(mica).seed`, else 1.
    pub key_seed: Option<u64>,
    /// Seals the control requests (describe, stats): the servers' admin or tenant key.
    pub credential: Option<naam_core::auth::Credential>,
    /// The clients' congestion window ceiling (`ClientConfig::max_window`; `usize::MAX`:
    /// congestion control off).
    pub max_window: usize,
}

/// How many keys the first server's MICA was filled with (`describe(mica).keys`), if it says.
pub fn server_keys(cfg: &YcsbConfig) -> anyhow::Result<Option<u64>> {
    Ok(client(cfg)?.param(0, "keys"))
}

/// The key set to use: the configured one, the server's, or 1.
pub fn key_seed(cfg: &YcsbConfig, mica: &Mica<ShardedClient>) -> u64 {
    cfg.key_seed.or_else(|| mica.param(0, "seed")).unwrap_or(1)
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct YcsbResult {
    pub workload: Workload,
    pub distribution: KeyDist,
    pub placement: Placement,
    pub keys: u64,
    pub value_size: usize,
    pub threads: usize,
    pub mode: &'static str,
    pub target_rate: Option<f64>,
    pub outstanding: usize,
    pub seconds: f64,
    pub ops: u64,
    pub reads: u64,
    pub updates: u64,
    pub not_found: u64,
    pub errors: u64,
    pub throughput_per_s: f64,
    #[serde(flatten)]
    pub latency: Percentiles,
    pub read_p99_us: f64,
    pub update_p99_us: f64,
    pub retransmits: u64,
    pub timeouts: u64,
    pub local_runs: u64,
    pub first_error: Option<String>,
    /// How each server counter (`naam stats`) changed during the run, summed over servers
    /// (say host CPU time, messages executed at the NIC and at the host), when they answer.
    #[serde(skip)]
    pub server_counters: std::collections::BTreeMap<String, i128>,
    /// The same, as `name=delta` pairs separated by `;` (one CSV cell).
    pub server_counter_deltas: String,
}

/// Every server's counters, summed by name; empty when a server does not answer.
fn server_counters(cfg: &YcsbConfig) -> std::collections::BTreeMap<String, i128> {
    let mut sum = std::collections::BTreeMap::new();
    let ccfg = ClientConfig {
        credential: cfg.credential.clone(),
        ..ClientConfig::default()
    };
    let Ok(mut c) = naam_client::Client::with_servers(&cfg.servers, ccfg) else {
        return sum;
    };
    for s in 0..cfg.servers.len() {
        match c.server_stats(s) {
            Ok(stats) => {
                for (k, v) in stats {
                    *sum.entry(k).or_insert(0) += v as i128;
                }
            }
            Err(_) => return std::collections::BTreeMap::new(),
        }
    }
    sum
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn client(cfg: &YcsbConfig) -> anyhow::Result<Mica<ShardedClient>> {
    let ccfg = ClientConfig {
        exec_mode: cfg.placement.exec_mode(),
        timeout: cfg.timeout,
        credential: cfg.credential.clone(),
        max_window: cfg.max_window,
        ..ClientConfig::default()
    };
    Ok(Mica::new(ShardedClient::connect(&cfg.servers, ccfg)?)?)
}

/// PUTs keys `0..keys` (spread over `threads` threads, `outstanding` in flight each).
pub fn load(cfg: &YcsbConfig, progress: &AtomicU64) -> anyhow::Result<()> {
    let threads = cfg.threads.max(1) as u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> anyhow::Result<()> {
                    let mut mica = client(cfg)?;
                    let ks = key_seed(cfg, &mica);
                    let mut value = vec![0u8; cfg.value_size];
                    let mut inflight = 0usize;
                    let mut i = t;
                    loop {
                        while inflight < cfg.outstanding.max(1) && i < cfg.keys {
                            fill_value(i, 0, &mut value);
                            mica.submit_put(&key(ks, i), &value)?;
                            inflight += 1;
                            i += threads;
                        }
                        if inflight == 0 {
                            return Ok(());
                        }
                        let Some(c) = mica.inner_mut().poll(Some(Duration::from_secs(10)))? else {
                            anyhow::bail!("load stalled");
                        };
                        inflight -= 1;
                        progress.fetch_add(1, Ordering::Relaxed);
                        match c.result? {
                            Response::Am(r) => {
                                Mica::<ShardedClient>::decode(&r)?;
                            }
                            other => anyhow::bail!("unexpected reply {other:?}"),
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        }
        Ok(())
    })
}

struct ThreadResult {
    all: Histogram<u64>,
    reads: Histogram<u64>,
    updates: Histogram<u64>,
    not_found: u64,
    errors: u64,
    retransmits: u64,
    timeouts: u64,
    local_runs: u64,
    first_error: Option<String>,
}

fn run_thread(
    cfg: &YcsbConfig,
    t: usize,
    chooser: &KeyChooser,
    start: Instant,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> anyhow::Result<ThreadResult> {
    let mut mica = client(cfg)?;
    let ks = key_seed(cfg, &mica);
    let mut rng = Rng::new(cfg.seed ^ (t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut value = vec![0u8; cfg.value_size];
    let mut res = ThreadResult {
        all: histogram(),
        reads: histogram(),
        updates: histogram(),
        not_found: 0,
        errors: 0,
        retransmits: 0,
        timeouts: 0,
        local_runs: 0,
        first_error: None,
    };
    // ticket -> (intended or actual send time, is_read)
    let mut inflight: HashMap<Ticket, (Instant, bool)> = HashMap::new();
    let interval = cfg
        .rate
        .map(|r| Duration::from_secs_f64(cfg.threads as f64 / r.max(1e-9)));
    let mut next_send = start;
    let mut version = 1u64;
    let end = start + cfg.duration;
    let cap = cfg.outstanding.max(1);
    loop {
        let now = Instant::now();
        let sending = now < end && !stop.load(Ordering::Relaxed);
        // Issue what is due.
        while sending && inflight.len() < cap {
            let intended = match interval {
                Some(iv) => {
                    if next_send > Instant::now() {
                        break;
                    }
                    let at = next_send;
                    next_send += iv;
                    at
                }
                None => Instant::now(),
            };
            let k = chooser.next(&mut rng);
            let read = rng.next_f64() < cfg.workload.read_fraction();
            let submitted = if read {
                mica.submit_get(&key(ks, k))
            } else {
                fill_value(k, version, &mut value);
                version += 1;
                mica.submit_put(&key(ks, k), &value)
            };
            match submitted {
                Ok(ticket) => {
                    inflight.insert(ticket, (intended, read));
                }
                Err(e) => {
                    res.errors += 1;
                    res.first_error.get_or_insert(e.to_string());
                }
            }
        }
        if !sending && inflight.is_empty() {
            break;
        }
        let wait = match interval {
            Some(_) if sending => next_send
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(5)),
            _ => Duration::from_millis(5),
        };
        let mut polled = mica.inner_mut().poll(Some(wait))?;
        while let Some(c) = polled {
            let done = Instant::now();
            if let Some((sent, read)) = inflight.remove(&c.ticket) {
                let ns = (done - sent).as_nanos().max(1) as u64;
                let ok = match c.result {
                    Ok(Response::Am(r)) => match Mica::<ShardedClient>::decode(&r) {
                        Ok(MicaOutcome::NotFound) => {
                            res.not_found += 1;
                            true
                        }
                        Ok(_) => true,
                        Err(e) => {
                            res.first_error.get_or_insert(e.to_string());
                            false
                        }
                    },
                    Ok(other) => {
                        res.first_error
                            .get_or_insert(format!("unexpected {other:?}"));
                        false
                    }
                    Err(e) => {
                        res.first_error.get_or_insert(e.to_string());
                        false
                    }
                };
                if ok {
                    let _ = res.all.record(ns);
                    let _ = if read {
                        res.reads.record(ns)
                    } else {
                        res.updates.record(ns)
                    };
                    progress.fetch_add(1, Ordering::Relaxed);
                } else {
                    res.errors += 1;
                }
            }
            polled = mica.inner_mut().poll(Some(Duration::ZERO))?;
        }
        // Stop waiting for stragglers long after the end (they count as errors).
        if !sending && Instant::now() > end + Duration::from_secs(10) {
            res.errors += inflight.len() as u64;
            break;
        }
    }
    let st = mica.inner().stats();
    res.retransmits = st.retransmits;
    res.timeouts = st.timeouts;
    res.local_runs = st.local_runs;
    Ok(res)
}

/// Runs one measurement; `progress` counts completed ops while it runs.
pub fn run(cfg: &YcsbConfig, progress: &AtomicU64) -> anyhow::Result<YcsbResult> {
    let chooser = KeyChooser::new(cfg.dist, cfg.keys, cfg.theta);
    let counters_before = server_counters(cfg);
    let stop = AtomicBool::new(false);
    let start = Instant::now() + Duration::from_millis(20);
    let results: Vec<ThreadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.threads.max(1))
            .map(|t| {
                let (chooser, stop) = (&chooser, &stop);
                s.spawn(move || run_thread(cfg, t, chooser, start, stop, progress))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a ycsb thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let elapsed = Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64();
    let mut all = histogram();
    let mut reads = histogram();
    let mut updates = histogram();
    let mut r = YcsbResult {
        workload: cfg.workload,
        distribution: cfg.dist,
        placement: cfg.placement,
        keys: cfg.keys,
        value_size: cfg.value_size,
        threads: cfg.threads,
        mode: if cfg.rate.is_some() { "open" } else { "closed" },
        target_rate: cfg.rate,
        outstanding: cfg.outstanding,
        seconds: cfg.duration.as_secs_f64(),
        ops: 0,
        reads: 0,
        updates: 0,
        not_found: 0,
        errors: 0,
        throughput_per_s: 0.0,
        latency: Percentiles::default(),
        read_p99_us: 0.0,
        update_p99_us: 0.0,
        retransmits: 0,
        timeouts: 0,
        local_runs: 0,
        first_error: None,
        server_counters: std::collections::BTreeMap::new(),
        server_counter_deltas: String::new(),
    };
    for t in results {
        all.add(&t.all).expect("same bounds");
        reads.add(&t.reads).expect("same bounds");
        updates.add(&t.updates).expect("same bounds");
        r.not_found += t.not_found;
        r.errors += t.errors;
        r.retransmits += t.retransmits;
        r.timeouts += t.timeouts;
        r.local_runs += t.local_runs;
        if r.first_error.is_none() {
            r.first_error = t.first_error;
        }
    }
    r.ops = all.len();
    r.reads = reads.len();
    r.updates = updates.len();
    r.throughput_per_s = r.ops as f64 / elapsed.max(cfg.duration.as_secs_f64());
    r.latency = Percentiles::of(&all);
    r.read_p99_us = reads.value_at_quantile(0.99) as f64 / 1000.0;
    r.update_p99_us = updates.value_at_quantile(0.99) as f64 / 1000.0;
    let after = server_counters(cfg);
    r.server_counters = after
        .into_iter()
        .filter_map(|(k, v)| counters_before.get(&k).map(|b| (k, v - b)))
        .collect();
    r.server_counter_deltas = r
        .server_counters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    Ok(r)
}

/// A progress bar on stderr while `work` runs, only when stderr is a terminal.
pub fn with_progress<T>(
    label: &str,
    total: Option<u64>,
    duration: Option<Duration>,
    work: impl FnOnce(&AtomicU64) -> T,
) -> T {
    use std::io::IsTerminal;
    let counter = Arc::new(AtomicU64::new(0));
    if !std::io::stderr().is_terminal() {
        return work(&counter);
    }
    let bar = match (total, duration) {
        (Some(n), _) => indicatif::ProgressBar::new(n),
        (None, Some(d)) => indicatif::ProgressBar::new(d.as_millis() as u64),
        _ => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let style = if total.is_some() {
        "{prefix} [{bar:30}] {pos}/{len} {per_sec}"
    } else {
        "{prefix} [{bar:30}] {elapsed} {msg}"
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(style)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (bar, counter, done) = (bar.clone(), counter.clone(), done.clone());
        let started = Instant::now();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let n = counter.load(Ordering::Relaxed);
                if total.is_some() {
                    bar.set_position(n);
                } else {
                    bar.set_position(started.elapsed().as_millis() as u64);
                    bar.set_message(format!("{n} ops"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let out = work(&counter);
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    bar.finish_and_clear();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipfian_is_skewed_like_ycsb() {
        let n = 10_000;
        let z = Zipfian::new(n, 0.99);
        let mut rng = Rng::new(1);
        let mut counts = vec![0u32; n as usize];
        let draws = 200_000;
        for _ in 0..draws {
            let r = z.next(&mut rng);
            assert!(r < n);
            counts[r as usize] += 1;
        }
        // P(rank 0) = 1 / zeta(n, 0.99), about 0.1 for n = 10^4.
        let p0 = counts[0] as f64 / draws as f64;
        let want = 1.0 / zeta(n, 0.99);
        assert!((p0 - want).abs() < 0.01, "p0 {p0} want {want}");
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[1000]);
        // The top 1 % of ranks take far more than 1 % of draws.
        let top: u32 = counts[..100].iter().sum();
        assert!(top as f64 / draws as f64 > 0.4, "top 1% got {top}");
    }

    #[test]
    fn scrambling_spreads_popular_keys() {
        let n = 1000;
        let c = KeyChooser::new(KeyDist::Zipfian, n, 0.99);
        let mut rng = Rng::new(2);
        let mut counts = vec![0u32; n as usize];
        for _ in 0..50_000 {
            counts[c.next(&mut rng) as usize] += 1;
        }
        let hottest = (0..n as usize).max_by_key(|&i| counts[i]).unwrap() as u64;
        assert_eq!(hottest, fnv64(0) % n, "rank 0 lands on its scrambled key");
        assert_ne!(hottest, 0);
    }

    #[test]
    fn uniform_covers_the_keys_evenly() {
        let c = KeyChooser::new(KeyDist::Uniform, 100, 0.99);
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[c.next(&mut rng) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&x| (800..1200).contains(&x)),
            "{counts:?}"
        );
    }

    #[test]
    fn keys_are_distinct_per_index_and_seed() {
        assert_ne!(key(1, 1), key(1, 10));
        assert_ne!(key(1, 1), key(2, 1));
        assert_eq!(key(7, 3), key(7, 3));
    }
}
