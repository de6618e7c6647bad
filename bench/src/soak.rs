//! `naam-bench soak` (issue 14): YCSB-A on MICA (half GETs, half PUTs) plus FAAs on a counter,
//! through a dataplane that drops requests and replies, while the host agent and the dataplane
//! are killed (SIGKILL) and restarted in turn. At the end every acknowledged write must be
//! readable and the counter must not have grown by more than the FAAs that may have run.
//!
//! What "acknowledged" means here: a PUT that returned Ok. A PUT that failed with an error
//! saying it may have run (a timeout, `outcome_unknown`) may or may not be there; one that
//! failed with a definite refusal was not run. Each PUT writes a new version of its key, so
//! the final value of a key must be at least its last acknowledged version and at most its
//! last attempted one. The host agent keeps its data in a persisted area (`--persist`), so a
//! kill of it loses nothing acknowledged.

use naam_client::bundled::region;
use naam_client::{Client, ClientConfig, ClientError, Mica};
use naam_core::wire::{OpBody, RemoteOp};
use naam_deploy::{DeployConfig, Deployment};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub minutes: f64,
    /// A process is killed this often (host agent and dataplane in turn).
    pub kill_every: Duration,
    /// Keys the soak writes (its own, beside the table's filled ones).
    pub keys: u64,
    /// The dataplane drops every Nth request and every Mth reply (0: none).
    pub drop_rx_every: u32,
    pub drop_tx_every: u32,
    pub seed: u64,
}

impl Default for SoakConfig {
    fn default() -> Self {
        Self {
            minutes: 10.0,
            kill_every: Duration::from_secs(60),
            keys: 1000,
            drop_rx_every: 29,
            drop_tx_every: 23,
            seed: 1,
        }
    }
}

/// What a soak saw, and whether it held.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SoakReport {
    pub seconds: f64,
    pub host_kills: u32,
    pub dataplane_kills: u32,
    pub gets: u64,
    pub puts_acked: u64,
    /// PUTs that may or may not have run (timeout, `outcome_unknown`).
    pub puts_unknown: u64,
    /// PUTs refused with a definite answer (not run).
    pub puts_refused: u64,
    pub faas_acked: u64,
    pub faas_unknown: u64,
    pub faas_refused: u64,
    /// How much the counter grew.
    pub faa_applied: u64,
    /// GETs that returned a version never written (or one of another key).
    pub wrong_reads: u64,
    /// Keys whose final value is older than their last acknowledged PUT.
    pub lost_writes: u64,
    /// Counter growth beyond the FAAs that may have run.
    pub duplicate_faas: u64,
    /// The client's retransmissions.
    pub retransmits: u64,
    /// Bytes MICA's lossy log overwrote (the soak's keys are rewritten far more often).
    pub mica_evicted_bytes: u64,
    /// Errors by kind, as the client reported them.
    pub errors: BTreeMap<String, u64>,
}

impl SoakReport {
    fn count(&mut self, e: &ClientError) {
        *self.errors.entry(error_kind(e)).or_default() += 1;
    }

    pub fn held(&self) -> bool {
        self.lost_writes == 0 && self.duplicate_faas == 0 && self.wrong_reads == 0
    }

    /// The last line `naam-bench soak` prints.
    pub fn last_line(&self) -> String {
        format!(
            "soak: {:.1} min, {} kills (host {}, dataplane {}), {} PUTs acked ({} unknown), {} FAAs acked ({} unknown), lost writes {}, duplicate FAAs {}, wrong reads {}: {}",
            self.seconds / 60.0,
            self.host_kills + self.dataplane_kills,
            self.host_kills,
            self.dataplane_kills,
            self.puts_acked,
            self.puts_unknown,
            self.faas_acked,
            self.faas_unknown,
            self.lost_writes,
            self.duplicate_faas,
            self.wrong_reads,
            if self.held() { "held" } else { "VIOLATED" }
        )
    }
}

/// A key's history: versions only grow.
#[derive(Debug, Clone, Copy, Default)]
struct KeyState {
    acked: u64,
    attempted: u64,
}

fn key_of(i: u64) -> Vec<u8> {
    format!("soak-{i}").into_bytes()
}

/// Value of version `v` of key `i`: both, so a read of another key's item is caught.
fn value_of(i: u64, v: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b[8..16].copy_from_slice(&v.to_le_bytes());
    b[16..24].copy_from_slice(&naam_core::helpers::hash64(i, v).to_le_bytes());
    b
}

/// The version a read value holds, if it is a value of key `i` at all.
fn version_in(i: u64, b: &[u8]) -> Option<u64> {
    let w = |k: usize| Some(u64::from_le_bytes(b.get(k..k + 8)?.try_into().ok()?));
    let (key, v, h) = (w(0)?, w(8)?, w(16)?);
    (b.len() == 32 && key == i && h == naam_core::helpers::hash64(i, v)).then_some(v)
}

fn error_kind(e: &ClientError) -> String {
    match e.code() {
        Some(c) => format!("{c:?}"),
        None => match e {
            ClientError::Timeout { .. } => "timeout".into(),
            other => other.to_string().chars().take(60).collect(),
        },
    }
}

/// Runs the soak; `progress` gets a line now and then.
pub fn run(cfg: &SoakConfig, mut progress: impl FnMut(&str)) -> anyhow::Result<SoakReport> {
    let bins = crate::procs::binaries()?;
    let mut dataplane_args = vec!["--stale-ms".to_string(), "1000".to_string()];
    for (flag, n) in [
        ("--drop-rx-every", cfg.drop_rx_every),
        ("--drop-tx-every", cfg.drop_tx_every),
    ] {
        if n > 0 {
            dataplane_args.extend([flag.to_string(), n.to_string()]);
        }
    }
    let d = Deployment::start(
        bins,
        DeployConfig {
            // The default table: a 16 MiB log, so the soak's keys (rewritten every second or
            // so) are never evicted by MICA's lossy log; the filled ones may be.
            mica_keys: 1 << 16,
            btree_keys: 1024,
            dataplane_args,
            persist: true,
            log_dir: crate::procs::log_dir(),
            log_filter: "warn".into(),
            ..DeployConfig::default()
        },
    )?;
    let client_cfg = ClientConfig {
        timeout: Duration::from_millis(50),
        // Long enough to outlast a restart of either process (~1 s).
        max_retries: 10,
        max_backoff: Duration::from_millis(500),
        ..ClientConfig::default()
    };
    let mut mica = Mica::new(d.client(client_cfg.clone())?)?;
    let c: &mut Client = mica.inner_mut();
    c.describe(0, "record")?;
    let record_key = c
        .region_key(0, region::RECORD)
        .ok_or_else(|| anyhow::anyhow!("no key for the record region"))?;
    let word = 64 * 11;
    let counter = |c: &mut Client| -> anyhow::Result<u64> {
        let b = c.read(0, region::RECORD, word, 8)?;
        Ok(u64::from_le_bytes(b.as_slice().try_into()?))
    };
    let start_counter = counter(mica.inner_mut())?;
    let faa = RemoteOp {
        region: region::RECORD,
        key: record_key,
        offset: word,
        body: OpBody::Faa { addend: 1 },
    };

    // The killer: a process every `kill_every`, host agent and dataplane in turn.
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let every = cfg.kill_every;
        std::thread::spawn(move || -> anyhow::Result<(Deployment, u32, u32)> {
            let mut d = d;
            let (mut host, mut dataplane) = (0u32, 0u32);
            let mut next = Instant::now() + every;
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                next += every;
                if (host + dataplane) % 2 == 0 {
                    d.kill_host();
                    d.start_host()?;
                    host += 1;
                } else {
                    d.kill_dataplane();
                    d.start_dataplane()?;
                    dataplane += 1;
                }
            }
            Ok((d, host, dataplane))
        })
    };

    let mut report = SoakReport::default();
    let mut keys = vec![KeyState::default(); cfg.keys as usize];
    let mut rng = cfg.seed.max(1);
    let mut next_rand = || {
        // xorshift64: the soak's own, reproducible sequence.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let began = Instant::now();
    let end = began + Duration::from_secs_f64(cfg.minutes * 60.0);
    let mut last_progress = began;
    while Instant::now() < end {
        let r = next_rand();
        let i = (r >> 8) % cfg.keys;
        match r % 20 {
            // 10 % FAAs on the counter.
            0 | 1 => match mica.inner_mut().ops(0, &[faa]) {
                Ok(out) if out[0].error.is_none() => report.faas_acked += 1,
                Ok(_) => report.faas_refused += 1,
                Err(e) => {
                    report.count(&e);
                    if e.may_have_executed() {
                        report.faas_unknown += 1;
                    } else {
                        report.faas_refused += 1;
                    }
                }
            },
            // 45 % GETs.
            2..=10 => match mica.get(&key_of(i)) {
                Ok(v) => {
                    report.gets += 1;
                    let k = keys[i as usize];
                    let ok = match v {
                        None => k.acked == 0,
                        Some(b) => version_in(i, &b).is_some_and(|v| v <= k.attempted),
                    };
                    if !ok {
                        report.wrong_reads += 1;
                    }
                }
                Err(e) => report.count(&e),
            },
            // 45 % PUTs, each a new version.
            _ => {
                let k = &mut keys[i as usize];
                let v = k.attempted + 1;
                k.attempted = v;
                match mica.put(&key_of(i), &value_of(i, v)) {
                    Ok(()) => {
                        k.acked = v;
                        report.puts_acked += 1;
                    }
                    Err(e) => {
                        report.count(&e);
                        if e.may_have_executed() {
                            report.puts_unknown += 1;
                        } else {
                            report.puts_refused += 1;
                        }
                    }
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            progress(&format!(
                "{:>5.0} s: {} PUTs acked, {} FAAs acked, {} GETs, errors {:?}",
                began.elapsed().as_secs_f64(),
                report.puts_acked,
                report.faas_acked,
                report.gets,
                report.errors
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (d, host_kills, dataplane_kills) = killer
        .join()
        .map_err(|_| anyhow::anyhow!("the killer thread panicked"))??;
    report.seconds = began.elapsed().as_secs_f64();
    report.host_kills = host_kills;
    report.dataplane_kills = dataplane_kills;
    report.retransmits = mica.inner().stats().retransmits;

    // The verdict, through a fresh client (the deployment is up again).
    let mut check = Mica::new(d.client(client_cfg)?)?;
    check.inner_mut().describe(0, "record")?;
    for (i, k) in keys.iter().enumerate() {
        let v = check.get(&key_of(i as u64))?;
        let fine = match v {
            None => k.acked == 0,
            Some(b) => version_in(i as u64, &b).is_some_and(|v| v >= k.acked && v <= k.attempted),
        };
        if !fine {
            report.lost_writes += 1;
        }
    }
    report.faa_applied = counter(check.inner_mut())? - start_counter;
    report.duplicate_faas = report
        .faa_applied
        .saturating_sub(report.faas_acked + report.faas_unknown);
    if report.faa_applied < report.faas_acked {
        // An acknowledged FAA that is not in the counter is a lost write too.
        report.lost_writes += report.faas_acked - report.faa_applied;
    }
    report.mica_evicted_bytes = d
        .stats()?
        .get("mica.log_evicted_bytes")
        .copied()
        .unwrap_or(0);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_key_and_version_and_nothing_else_passes() {
        let v = value_of(7, 42);
        assert_eq!(version_in(7, &v), Some(42));
        assert_eq!(version_in(8, &v), None, "another key's value");
        let mut torn = v;
        torn[9] ^= 1;
        assert_eq!(version_in(7, &torn), None);
        assert_eq!(version_in(7, &v[..16]), None);
    }
}
