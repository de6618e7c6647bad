//! The scale experiment (DESIGN §8): N distinct offloads, each its own program and region, at a
//! fixed offered load on the same cores — NAAM's shared VM pool with run-to-completion workers
//! against an iPipe-style baseline where every offload is an actor with its own mailbox and
//! thread, running native Rust, scheduled by the OS.
//!
//! Messages come from an in-process open-loop generator (kernel UDP on loopback tops out far
//! below the VM pool here, DESIGN §8). Each message reads one 64-byte record of its offload's
//! region and digests it (`handlers/record.bpf.c`; the actors run the same logic natively).

use crate::load::{open_loop, resident_bytes, LatencyLog, Percentiles};
use crossbeam_queue::ArrayQueue;
use naam_core::abi::Ctx;
use naam_core::elf::{load_program, Program};
use naam_core::exec::{Executor, Outcome};
use naam_core::helpers::hash64;
use naam_core::memory::{LocalMemory, OwnedRegion, RegionMem};
use naam_core::pool::{OffloadSpec, Registry, VmPool};
use naam_core::region::{Perms, RegionDesc, RegionTable};
use naam_core::verifier::{verify, VerifierConfig};
use naam_core::vm::Engine;
use naam_link::BackoffMode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Records per region.
const RECORDS: u64 = 64;
const REGION_LEN: usize = (RECORDS * 64) as usize;

#[derive(Debug, Clone)]
pub struct ScaleConfig {
    pub offloads: Vec<usize>,
    /// Offered load in messages per second; `None` saturates (as fast as queues take them).
    pub rate: Option<f64>,
    pub duration: Duration,
    pub naam_workers: usize,
    pub backoff: BackoffMode,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        Self {
            offloads: vec![1, 8, 16, 64, 256, 1024],
            rate: Some(100_000.0),
            duration: Duration::from_secs(2),
            naam_workers: 1,
            backoff: BackoffMode::Yield,
        }
    }
}

/// One measured point.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScalePoint {
    pub system: &'static str,
    pub offloads: usize,
    pub offered_per_s: Option<f64>,
    pub throughput_per_s: f64,
    pub completed: u64,
    pub dropped: u64,
    #[serde(flatten)]
    pub latency: Percentiles,
    pub memory_per_offload_bytes: f64,
}

/// The record handler with its salt patched to `salt`, so each offload is a distinct program.
pub fn record_program(salt: u64) -> anyhow::Result<Program> {
    let mut p = load_program(naam_handlers::RECORD_OBJECT, None)?;
    let want = naam_handlers::RECORD_SALT;
    let mut patched = 0;
    for i in 0..p.insn_count().saturating_sub(1) {
        let at = i * 8;
        if p.insns[at] != 0x18 {
            continue;
        }
        let lo = u32::from_le_bytes(p.insns[at + 4..at + 8].try_into()?) as u64;
        let hi = u32::from_le_bytes(p.insns[at + 12..at + 16].try_into()?) as u64;
        if lo | hi << 32 == want {
            p.insns[at + 4..at + 8].copy_from_slice(&(salt as u32).to_le_bytes());
            p.insns[at + 12..at + 16].copy_from_slice(&((salt >> 32) as u32).to_le_bytes());
            patched += 1;
        }
    }
    anyhow::ensure!(
        patched == 1,
        "record.bpf.o: expected one lddw of the salt, found {patched}"
    );
    p.name = format!("record{salt}");
    Ok(p)
}

/// The native twin of `record.bpf.c` (what an iPipe actor runs).
pub fn native_record(mem: &RegionMem, offset: u64, salt: u64) -> u64 {
    let mut rec = [0u8; 64];
    mem.read(offset, &mut rec);
    rec.chunks_exact(8).fold(salt, |h, w| {
        hash64(h, u64::from_le_bytes(w.try_into().expect("8 bytes")))
    })
}

fn salt_of(i: usize) -> u64 {
    hash64(i as u64, 0x5ca1e)
}

fn args(region: u32, offset: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&region.to_le_bytes());
    a[8..].copy_from_slice(&offset.to_le_bytes());
    a
}

fn fill(mem: &RegionMem, i: usize) {
    for w in 0..REGION_LEN as u64 / 8 {
        mem.store_u64(w * 8, hash64(i as u64, w))
            .expect("in bounds");
    }
}

/// Which offload and record message `id` touches (the same sequence for both systems).
fn pick(id: u64, n: usize) -> (usize, u64) {
    let h = hash64(id, 0xfeed);
    ((h % n as u64) as usize, ((h >> 32) % RECORDS) * 64)
}

struct Msg {
    id: u64,
    offload: u32,
    offset: u64,
    intended: Instant,
}

/// N offloads of the record handler, each its own program (salt) and region, all mapped.
struct Offloads {
    registry: Arc<Registry>,
    regions: RegionTable,
    mem: LocalMemory,
    /// The regions' memory, kept alive while the pool runs.
    owned: Vec<OwnedRegion>,
}

fn offloads(n: usize) -> anyhow::Result<Offloads> {
    let registry = Registry::new();
    let mut regions = RegionTable::new();
    let mut mem = LocalMemory::new();
    let mut owned = Vec::with_capacity(n);
    for i in 0..n {
        let r = OwnedRegion::zeroed(REGION_LEN);
        fill(&r.mem(), i);
        mem.map(i as u32, r.mem());
        owned.push(r);
        regions.insert(RegionDesc {
            id: i as u32,
            tenant: i as u32,
            len: REGION_LEN as u64,
            perms: Perms::READ,
            key: salt_of(i),
        })?;
        let prog = Arc::new(verify(
            &record_program(salt_of(i))?,
            &VerifierConfig::default(),
        )?);
        let spec = OffloadSpec {
            name: format!("record{i}"),
            tenant: i as u32,
            class: 0,
            read_only: true,
        };
        registry.register_as(i as u32, spec, prog)?;
    }
    Ok(Offloads {
        registry,
        regions,
        mem,
        owned,
    })
}

/// What one message costs with `n` offloads, in ns, with no generator, queue or second
/// thread: `messages` messages run back to back on this thread, each to the offload and
/// record the open-loop runs would pick, through the VM pool and then as the native twin
/// (what an iPipe actor runs) on the same records (medians of `rounds`). The native figure
/// grows with `n` as much as the data does (each offload reads its own region: 4 KiB at
/// N = 1, 4 MiB at N = 1024); the difference is what the pool adds per message.
pub fn inline_ns(n: usize, messages: u64, rounds: usize) -> anyhow::Result<(f64, f64)> {
    let Offloads {
        registry,
        regions,
        mut mem,
        owned,
    } = offloads(n)?;
    let pool = VmPool::new(registry, Engine::native());
    let mut ex = Executor::default();
    let mut ctx = Ctx::boxed();
    let (mut vm_ns, mut native_ns) = (Vec::new(), Vec::new());
    let mut sink = 0u64;
    // Round 0 warms the caches and the pool.
    for round in 0..=rounds {
        let start = Instant::now();
        for id in 0..messages {
            let (o, offset) = pick(id, n);
            ctx.start(&args(o as u32, offset));
            let e = pool
                .get(o as u32)
                .ok_or_else(|| anyhow::anyhow!("offload {o} gone"))?;
            let out = ex.run(&e.vm, e.offload.tenant, &regions, &mut mem, &mut ctx);
            anyhow::ensure!(matches!(out, Outcome::Done { .. }), "offload {o}: {out:?}");
        }
        let vm = start.elapsed();
        let start = Instant::now();
        for id in 0..messages {
            let (o, offset) = pick(id, n);
            sink ^= native_record(&owned[o].mem(), offset, salt_of(o));
        }
        let native = start.elapsed();
        if round > 0 {
            vm_ns.push(vm.as_nanos() as f64 / messages as f64);
            native_ns.push(native.as_nanos() as f64 / messages as f64);
        }
    }
    std::hint::black_box(sink);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(&mut vm_ns), median(&mut native_ns)))
}

/// NAAM: the shared VM pool, run-to-completion workers.
pub fn run_naam(n: usize, cfg: &ScaleConfig, total: u64) -> anyhow::Result<ScalePoint> {
    // The latency log and the queues are the generator's, not the offloads': allocate and
    // touch them before measuring memory per offload.
    let log = Arc::new(LatencyLog::new(total as usize));
    let queues: Vec<Arc<ArrayQueue<Msg>>> = (0..cfg.naam_workers)
        .map(|_| Arc::new(ArrayQueue::new(1 << 16)))
        .collect();
    let before = resident_bytes();
    let Offloads {
        registry,
        regions,
        mem,
        owned,
    } = offloads(n)?;
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for q in &queues {
        let (q, log, stop, ready, errors) = (
            q.clone(),
            log.clone(),
            stop.clone(),
            ready.clone(),
            errors.clone(),
        );
        let (registry, regions, mut mem, backoff) = (
            registry.clone(),
            regions.clone(),
            mem.clone(),
            cfg.backoff.polling(),
        );
        workers.push(std::thread::spawn(move || {
            let pool = VmPool::new(registry, Engine::native());
            let mut ex = Executor::default();
            let mut ctx = Ctx::boxed();
            ready.fetch_add(1, Ordering::SeqCst);
            let mut idle = 0;
            while !stop.load(Ordering::Relaxed) || !q.is_empty() {
                let Some(m) = q.pop() else {
                    backoff.idle(&mut idle);
                    continue;
                };
                idle = 0;
                ctx.start(&args(m.offload, m.offset));
                let ok = match pool.get(m.offload) {
                    Some(e) => matches!(
                        ex.run(&e.vm, e.offload.tenant, &regions, &mut mem, &mut ctx),
                        Outcome::Done { .. }
                    ),
                    None => false,
                };
                if ok {
                    log.record(m.id, m.intended.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    while ready.load(Ordering::SeqCst) < cfg.naam_workers as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let memory = resident_bytes().saturating_sub(before);
    let w = queues.len();
    let (dropped, elapsed) = open_loop(total, cfg.rate, |id, intended| {
        let (o, offset) = pick(id, n);
        queues[id as usize % w]
            .push(Msg {
                id,
                offload: o as u32,
                offset,
                intended,
            })
            .is_ok()
    });
    stop.store(true, Ordering::Relaxed);
    for h in workers {
        h.join()
            .map_err(|_| anyhow::anyhow!("a NAAM worker panicked"))?;
    }
    let wall = elapsed.max(Duration::from_micros(1));
    anyhow::ensure!(
        errors.load(Ordering::Relaxed) == 0,
        "NAAM workers failed {} messages",
        errors.load(Ordering::Relaxed)
    );
    drop(owned);
    Ok(point("naam", n, cfg, &log, dropped, wall, memory))
}

/// The iPipe-style baseline: one actor (thread + mailbox + native handler) per offload.
pub fn run_ipipe(n: usize, cfg: &ScaleConfig, total: u64) -> anyhow::Result<ScalePoint> {
    let log = Arc::new(LatencyLog::new(total as usize));
    let before = resident_bytes();
    let ready = Arc::new(AtomicU64::new(0));
    let mut mailboxes = Vec::with_capacity(n);
    let mut actors = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = mpsc::sync_channel::<Msg>(1024);
        mailboxes.push(tx);
        let (log, ready) = (log.clone(), ready.clone());
        actors.push(
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let region = OwnedRegion::zeroed(REGION_LEN);
                    fill(&region.mem(), i);
                    let salt = salt_of(i);
                    ready.fetch_add(1, Ordering::SeqCst);
                    let mut sink = 0u64;
                    while let Ok(m) = rx.recv() {
                        sink ^= native_record(&region.mem(), m.offset, salt);
                        log.record(m.id, m.intended.elapsed());
                    }
                    std::hint::black_box(sink);
                })?,
        );
    }
    while ready.load(Ordering::SeqCst) < n as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let memory = resident_bytes().saturating_sub(before);
    let (dropped, elapsed) = open_loop(total, cfg.rate, |id, intended| {
        let (o, offset) = pick(id, n);
        mailboxes[o]
            .try_send(Msg {
                id,
                offload: o as u32,
                offset,
                intended,
            })
            .is_ok()
    });
    drop(mailboxes);
    for a in actors {
        a.join().map_err(|_| anyhow::anyhow!("an actor panicked"))?;
    }
    Ok(point("ipipe", n, cfg, &log, dropped, elapsed, memory))
}

fn point(
    system: &'static str,
    n: usize,
    cfg: &ScaleConfig,
    log: &LatencyLog,
    dropped: u64,
    elapsed: Duration,
    memory: u64,
) -> ScalePoint {
    let (completed, h) = log.summary();
    ScalePoint {
        system,
        offloads: n,
        offered_per_s: cfg.rate,
        throughput_per_s: completed as f64 / elapsed.as_secs_f64(),
        completed,
        dropped,
        latency: Percentiles::of(&h),
        memory_per_offload_bytes: memory as f64 / n as f64,
    }
}

/// Runs both systems at every N, side by side.
pub fn run(
    cfg: &ScaleConfig,
    mut progress: impl FnMut(&ScalePoint),
) -> anyhow::Result<Vec<ScalePoint>> {
    let total = match cfg.rate {
        Some(r) => (r * cfg.duration.as_secs_f64()) as u64,
        None => 2_000_000,
    };
    let mut out = Vec::new();
    for &n in &cfg.offloads {
        for p in [run_naam(n, cfg, total)?, run_ipipe(n, cfg, total)?] {
            progress(&p);
            out.push(p);
        }
    }
    Ok(out)
}

/// Throughput and p99 against N (log scale), NAAM and the iPipe-style baseline, one pair of
/// charts per offered load (`<name>-throughput`, `<name>-p99`; `-saturate` for the saturation
/// points).
pub fn write_charts(
    dir: &std::path::Path,
    name: &str,
    points: &[ScalePoint],
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use crate::plot::{Chart, Series};
    let mut offered: Vec<Option<f64>> = Vec::new();
    for p in points {
        if !offered.contains(&p.offered_per_s) {
            offered.push(p.offered_per_s);
        }
    }
    let mut out = Vec::new();
    for o in offered {
        let (suffix, load) = match o {
            Some(r) => (String::new(), format!("{r:.0} msgs/s offered")),
            None => ("-saturate".to_string(), "saturation".to_string()),
        };
        let series = |f: &dyn Fn(&ScalePoint) -> f64| {
            [("naam", "NAAM"), ("ipipe", "iPipe-style")]
                .into_iter()
                .map(|(sys, label)| Series {
                    name: label.into(),
                    points: points
                        .iter()
                        .filter(|p| p.system == sys && p.offered_per_s == o)
                        .map(|p| (p.offloads as f64, f(p)))
                        .collect(),
                })
                .collect::<Vec<_>>()
        };
        let chart = |what: &str, y: &str, f: &dyn Fn(&ScalePoint) -> f64| Chart {
            title: format!("{what} vs distinct offloads ({load})"),
            x_label: "distinct offloads (log scale)".into(),
            y_label: y.into(),
            log_x: true,
            series: series(f),
            markers: Vec::new(),
        };
        out.extend(
            chart("Throughput", "completed msgs/s", &|p| p.throughput_per_s)
                .write(dir, &format!("{name}{suffix}-throughput"))?,
        );
        out.extend(
            chart("p99 latency", "p99 (µs)", &|p| p.latency.p99_us)
                .write(dir, &format!("{name}{suffix}-p99"))?,
        );
    }
    Ok(out)
}

/// Issue 9's goal, per offered load: NAAM at the largest N against NAAM at the smallest
/// (throughput share, p99 ratio).
pub fn goal(points: &[ScalePoint]) -> String {
    let mut out = String::new();
    let mut offered: Vec<Option<f64>> = Vec::new();
    for p in points {
        if !offered.contains(&p.offered_per_s) {
            offered.push(p.offered_per_s);
        }
    }
    for o in offered {
        let naam: Vec<&ScalePoint> = points
            .iter()
            .filter(|p| p.system == "naam" && p.offered_per_s == o)
            .collect();
        let (Some(lo), Some(hi)) = (
            naam.iter().min_by_key(|p| p.offloads),
            naam.iter().max_by_key(|p| p.offloads),
        ) else {
            continue;
        };
        if lo.offloads == hi.offloads {
            continue;
        }
        out += &format!(
            "{}: NAAM at {} offloads keeps {:.0} % of its {}-offload throughput (goal ≥ 90 %), p99 {:.2}× its {}-offload p99 (goal ≤ 2×).\n",
            o.map_or("saturation".into(), |r| format!("{r:.0} msgs/s offered")),
            hi.offloads,
            100.0 * hi.throughput_per_s / lo.throughput_per_s.max(1e-9),
            lo.offloads,
            hi.latency.p99_us / lo.latency.p99_us.max(1e-9),
            lo.offloads
        );
    }
    out
}

/// The results as a markdown table, with NAAM ÷ baseline at each N.
pub fn markdown(points: &[ScalePoint]) -> String {
    let mut s = String::from(
        "| offered/s | offloads | system | done/s | p50 µs | p99 µs | p99.9 µs | memory/offload | NAAM ÷ iPipe throughput |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        let ratio = (p.system == "naam")
            .then(|| {
                points.iter().find(|q| {
                    q.system == "ipipe"
                        && q.offloads == p.offloads
                        && q.offered_per_s == p.offered_per_s
                })
            })
            .flatten()
            .map_or(String::new(), |q| {
                format!("{:.2}", p.throughput_per_s / q.throughput_per_s.max(1e-9))
            });
        s += &format!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} KiB | {} |\n",
            p.offered_per_s
                .map_or("saturate".into(), |r| format!("{r:.0}")),
            p.offloads,
            p.system,
            p.throughput_per_s,
            p.latency.p50_us,
            p.latency.p99_us,
            p.latency.p999_us,
            p.memory_per_offload_bytes / 1024.0,
            ratio
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patched_programs_are_distinct_and_match_the_native_twin() {
        let r = OwnedRegion::zeroed(REGION_LEN);
        fill(&r.mem(), 3);
        let mut regions = RegionTable::new();
        regions
            .insert(RegionDesc {
                id: 0,
                tenant: 0,
                len: REGION_LEN as u64,
                perms: Perms::READ,
                key: 1,
            })
            .unwrap();
        let mut mem = LocalMemory::new();
        mem.map(0, r.mem());
        let mut digests = Vec::new();
        for salt in [1u64, 2, u64::MAX] {
            let prog = Arc::new(
                verify(&record_program(salt).unwrap(), &VerifierConfig::default()).unwrap(),
            );
            let vm = naam_core::pool::compile(prog, Engine::native()).unwrap();
            let mut ctx = Ctx::boxed();
            ctx.start(&args(0, 128));
            let out = Executor::default().run(&vm, 0, &regions, &mut mem, &mut ctx);
            assert!(matches!(out, Outcome::Done { steps: 2 }), "{out:?}");
            let d = u64::from_le_bytes(ctx.out().unwrap().try_into().unwrap());
            assert_eq!(d, native_record(&r.mem(), 128, salt));
            digests.push(d);
        }
        digests.dedup();
        assert_eq!(digests.len(), 3);
    }

    #[test]
    fn goal_compares_naam_at_the_largest_n_with_the_smallest() {
        let pt = |system, offloads, tput, p99| ScalePoint {
            system,
            offloads,
            offered_per_s: Some(1000.0),
            throughput_per_s: tput,
            completed: 0,
            dropped: 0,
            latency: Percentiles {
                p50_us: 1.0,
                p99_us: p99,
                p999_us: p99,
            },
            memory_per_offload_bytes: 0.0,
        };
        let g = goal(&[
            pt("naam", 1, 1000.0, 10.0),
            pt("ipipe", 1, 1.0, 1.0),
            pt("naam", 1024, 950.0, 25.0),
            pt("naam", 8, 10.0, 1.0),
        ]);
        assert!(
            g.contains("NAAM at 1024 offloads keeps 95 % of its 1-offload throughput"),
            "{g}"
        );
        assert!(g.contains("p99 2.50× its 1-offload p99"), "{g}");
        assert_eq!(
            goal(&[pt("naam", 1, 1.0, 1.0)]),
            "",
            "one N: nothing to compare"
        );
    }

    #[test]
    fn both_systems_complete_every_message_at_light_load() {
        let cfg = ScaleConfig {
            offloads: vec![4],
            rate: Some(20_000.0),
            duration: Duration::from_millis(100),
            ..Default::default()
        };
        let points = run(&cfg, |_| {}).unwrap();
        for p in points {
            assert_eq!(p.completed + p.dropped, 2000, "{p:?}");
            assert_eq!(p.dropped, 0, "{p:?}");
        }
    }
}
