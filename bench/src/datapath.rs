//! `naam-bench datapath` (issue 12): the complete NIC worker path on one core, in process and
//! with no kernel: request datagrams in an in-memory port → parse → steering → capability and
//! reply-cache checks → steps in the VM pool → ops on host memory through the shared-memory
//! link to an in-process host → reply out; beside the same operations in native Rust on the
//! same memory, in the same run. Rounds alternate the two and the medians are reported with
//! their spread, since the machine is shared.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use naam_core::auth::{Capabilities, Credential, Keyring, Principal};
use naam_core::pool::{OffloadSpec, Registry};
use naam_core::region::Perms;
use naam_core::verifier::VerifierConfig;
use naam_core::vm::Engine;
use naam_core::wire::{AmFlags, AmRequestRepr, AmStatus, Body, Location, Message};
use naam_dataplane::port::MemPort;
use naam_dataplane::runtime::{Shared, Worker, WorkerConfig, WorkerStats};
use naam_dataplane::steering::{SoftSwitch, Target};
use naam_handlers::btree::{self, BTree, BTreeConfig};
use naam_handlers::mica::{key_for, MicaArgs, MicaGeometry, MicaPrograms, MicaReply, MicaTable};
use naam_link::shm::ConnectOptions;
use naam_link::{RegionSpec, ShmConfig, ShmHost, ShmLink, ShmQp};

const TENANT: u32 = 1;
const BASE: u16 = 7000;
const CLASSES: u16 = 8;
const MICA_GET: (u32, u16) = (0, 0);
const MICA_PUT: (u32, u16) = (1, 1);
const BTREE_LOOKUP: (u32, u16) = (3, 3);
const BTREE_REGION: u32 = 3;
/// The operations measured, in order, with their steering class (`--ops` names them).
pub const OPERATIONS: [(&str, u16); 3] = [
    ("mica_get", MICA_GET.1),
    ("mica_put", MICA_PUT.1),
    ("btree_lookup", BTREE_LOOKUP.1),
];
/// Distinct requests per kind, cycled (a hot set: the comparison is of the runtime's work,
/// not of the memory system; see `benches/apps.rs`).
const HOT: u64 = 1024;

/// Sizes of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatapathConfig {
    pub mica_keys: u64,
    pub value_size: usize,
    pub btree_keys: u64,
    /// Messages per kind per round.
    pub messages: u64,
    pub rounds: usize,
    /// The operations to run (all when empty): one alone is what a profile of it needs.
    pub ops: Vec<String>,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            mica_keys: 100_000,
            value_size: 8,
            btree_keys: 100_000,
            messages: 50_000,
            rounds: 5,
            ops: Vec::new(),
        }
    }
}

/// One operation's figures: medians over the rounds, and their spread.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatapathRow {
    pub op: &'static str,
    pub ns_per_msg: f64,
    pub ns_per_msg_min: f64,
    pub ns_per_msg_max: f64,
    pub native_ns: f64,
    pub native_ns_min: f64,
    pub native_ns_max: f64,
    /// `ns_per_msg / native_ns` (medians).
    pub ratio: f64,
    /// Messages per second one core serves (1e9 / ns_per_msg).
    pub msgs_per_s: f64,
    /// The capability check alone, ns per message (median), as part of `ns_per_msg` (issue 13:
    /// what authenticating the tenant costs the data path).
    pub capability_ns: f64,
    pub rounds: usize,
    pub messages: u64,
}

/// The worker and everything it runs against.
struct Rig {
    _host: ShmHost,
    _link: ShmLink,
    qp: ShmQp,
    port: MemPort,
    worker: Worker,
    stats: Arc<WorkerStats>,
    /// What the worker checks capabilities against (a copy, to time the check alone).
    capabilities: Capabilities,
    table: MicaTable,
    tree_mem: naam_link::RegionMem,
    tree_root: u64,
    now: u64,
}

fn rig(cfg: &DatapathConfig) -> anyhow::Result<Rig> {
    let geom = MicaGeometry::for_keys(cfg.mica_keys, cfg.value_size);
    let tree_cfg = BTreeConfig::default();
    let arena = geom.index_len() + geom.log_len() + tree_cfg.region_len(cfg.btree_keys, 0) as u64;
    let mut host = ShmHost::create(&ShmConfig {
        qps: 1,
        load_slots: 1,
        arena_bytes: arena + (4 << 20),
        hugetlb: false,
        ..Default::default()
    })?;
    for (id, len) in [
        (geom.index_region, geom.index_len()),
        (geom.log_region, geom.log_len()),
        (BTREE_REGION, tree_cfg.region_len(cfg.btree_keys, 0) as u64),
    ] {
        host.register_region(RegionSpec {
            id,
            tenant: TENANT,
            len,
            perms: Perms::ALL,
            key: 1,
        })?;
    }
    let region = |id| host.region(id).map(|r| r.mem().clone());
    let (Some(index), Some(log), Some(tree_mem)) = (
        region(geom.index_region),
        region(geom.log_region),
        region(BTREE_REGION),
    ) else {
        anyhow::bail!("regions missing after registration");
    };
    let table = MicaTable::format(geom, index, log)?;
    table.fill(0..cfg.mica_keys, 42, cfg.value_size)?;
    let tree = BTree::bulk_load(
        tree_mem.clone(),
        tree_cfg,
        (0..cfg.btree_keys).map(|k| (2 * k + 1, k)),
    )?;
    let wcfg = WorkerConfig {
        id: 0,
        classes: CLASSES,
        burst: 32,
        slots: 64,
        dedup_entries: 4096,
        engine: Engine::native(),
        ..Default::default()
    };
    let link = host.connect_local(ConnectOptions {
        stale_after: Duration::ZERO,
        staging_bytes: wcfg.staging_bytes(),
        cq_depth: wcfg.cq_depth(),
    })?;
    let qp = link.qp(0)?;
    let registry = Registry::new();
    let verifier = VerifierConfig::default();
    let mica = MicaPrograms::load(&verifier)?;
    let lookup = btree::program::load(btree::program::LOOKUP_SECTION, &verifier)?;
    for ((id, class), name, prog, read_only) in [
        (MICA_GET, "mica_get", mica.get, true),
        (MICA_PUT, "mica_put", mica.put, false),
        (BTREE_LOOKUP, "btree_lookup", Arc::new(lookup), true),
    ] {
        let spec = OffloadSpec {
            name: name.into(),
            tenant: TENANT,
            class,
            read_only,
        };
        registry.register_as(id, spec, prog)?;
    }
    let switch = SoftSwitch::new(BASE, CLASSES, 1, Target::NicQueue(0));
    let capabilities = Capabilities::from_keyring(&keyring()?);
    let shared = Shared::new(registry, switch.table(), CLASSES, capabilities.clone());
    shared.regions.publish(link.region_table());
    let stats = Arc::new(WorkerStats::new(CLASSES));
    let worker = Worker::new(wcfg, shared, stats.clone());
    let mut port = MemPort::new(SocketAddrV4::new([127, 0, 0, 1].into(), BASE), CLASSES);
    port.discard_sent(true);
    Ok(Rig {
        _host: host,
        _link: link,
        qp,
        port,
        worker,
        stats,
        capabilities,
        table,
        tree_mem,
        tree_root: tree.root(),
        now: naam_link::now_ns(),
    })
}

/// Tenant 1's key, whose capability the requests carry.
fn credential() -> Credential {
    Credential::new(1, Principal::Tenant(TENANT), [0x5e; 32])
}

/// Tenants with keys besides the one measured, so the capability check searches a table of a
/// deployment's size rather than one entry.
const OTHER_TENANTS: u32 = 63;

/// The deployment's keys: the admin's, tenant 1's and [`OTHER_TENANTS`] others'.
fn keyring() -> anyhow::Result<Keyring> {
    let mut keys = vec![
        credential(),
        Credential::new(2, Principal::Admin, [0xad; 32]),
    ];
    keys.extend(
        (0..OTHER_TENANTS)
            .map(|i| Credential::new(3 + i, Principal::Tenant(TENANT + 1 + i), [i as u8 + 1; 32])),
    );
    Ok(Keyring::new(keys)?)
}

/// The request datagrams of one kind, built once.
fn requests(op: &str, cfg: &DatapathConfig, geom: &MicaGeometry) -> anyhow::Result<Vec<Vec<u8>>> {
    let cap = credential().capability(TENANT);
    let value = vec![0x77u8; cfg.value_size];
    (0..HOT)
        .map(|i| {
            let k = (i * 7919) % cfg.mica_keys;
            let (offload, class, args): (u32, u16, Vec<u8>) = match op {
                "mica_get" => (
                    MICA_GET.0,
                    MICA_GET.1,
                    MicaArgs::get_expecting(geom, &key_for(42, k), cfg.value_size)?
                        .as_bytes()
                        .to_vec(),
                ),
                "mica_put" => (
                    MICA_PUT.0,
                    MICA_PUT.1,
                    MicaArgs::put(geom, &key_for(42, k), &value)?
                        .as_bytes()
                        .to_vec(),
                ),
                _ => (
                    BTREE_LOOKUP.0,
                    BTREE_LOOKUP.1,
                    btree::Args::lookup(BTREE_REGION, 2 * ((i * 7919) % cfg.btree_keys) + 1)
                        .to_bytes()
                        .to_vec(),
                ),
            };
            let m = Message {
                // One request open at a time, as the worker sees them: the reply cache may
                // forget each one once the next arrives.
                window: 1,
                ..Message::new(
                    i + 1,
                    class,
                    Body::AmRequest(AmRequestRepr {
                        offload,
                        tenant: TENANT,
                        capability: cap,
                        flags: AmFlags::empty(),
                        args: &args,
                    }),
                )
            };
            let mut buf = vec![0u8; m.buffer_len()];
            m.emit(&mut buf)?;
            Ok(buf)
        })
        .collect()
}

/// Datagrams waiting at the port at most: what a NIC's receive ring holds. Queuing all of a
/// round's requests up front instead would stream megabytes of datagrams through the caches
/// the handlers' data lives in, which no port does.
const PORT_DEPTH: usize = 512;

/// Runs `n` requests (cycling `reqs`) through the worker; returns ns per message, the time
/// in the worker's polls (the port is topped up between them, untimed). Request ids move on
/// each round so mutations are new requests, not replays.
fn run_worker(r: &mut Rig, reqs: &[Vec<u8>], class: u16, n: u64, round: u64) -> f64 {
    let client: SocketAddrV4 = "127.0.0.1:40000".parse().expect("literal");
    r.port.reserve(PORT_DEPTH);
    let mut d = vec![0u8; reqs.iter().map(Vec::len).max().unwrap_or(0)];
    let mut injected = 0;
    let mut busy = Duration::ZERO;
    while injected < n || r.port.pending() > 0 || r.worker.in_flight() > 0 {
        while injected < n && r.port.pending() < PORT_DEPTH {
            let req = &reqs[(injected % reqs.len() as u64) as usize];
            let d = &mut d[..req.len()];
            d.copy_from_slice(req);
            d[8..16].copy_from_slice(&(round << 40 | injected).to_le_bytes());
            r.port.inject(client, class, d);
            injected += 1;
        }
        r.now += 1_000;
        let start = Instant::now();
        r.worker.poll(r.now, &mut r.port, &mut r.qp);
        busy += start.elapsed();
    }
    busy.as_nanos() as f64 / n as f64
}

/// The same operation in native Rust on the same memory; ns per operation.
fn run_native(r: &Rig, op: &str, cfg: &DatapathConfig, n: u64) -> anyhow::Result<f64> {
    let keys: Vec<[u8; 16]> = (0..HOT)
        .map(|i| key_for(42, (i * 7919) % cfg.mica_keys))
        .collect();
    let value = vec![0x77u8; cfg.value_size];
    let mut out = vec![0u8; cfg.value_size];
    let start = Instant::now();
    for i in 0..n {
        let h = (i % HOT) as usize;
        match op {
            "mica_get" => {
                std::hint::black_box(r.table.get(&keys[h], &mut out)?);
            }
            "mica_put" => r.table.put(&keys[h], &value)?,
            _ => {
                let k = 2 * ((h as u64 * 7919) % cfg.btree_keys) + 1;
                std::hint::black_box(btree::native::lookup(&r.tree_mem, r.tree_root, k)?);
            }
        }
    }
    Ok(start.elapsed().as_nanos() as f64 / n as f64)
}

/// Checks every reply the port kept: one AM_REPLY per request, done at the NIC, with what the
/// same operation in native Rust gives (for GET, the value; for LOOKUP, the key's value).
/// Returns the steps each request of the hot set took (the same each time it was sent).
fn check_replies(r: &mut Rig, op: &str, cfg: &DatapathConfig) -> anyhow::Result<Vec<u32>> {
    let sent = r.port.take_sent();
    anyhow::ensure!(
        sent.len() as u64 == HOT * 2,
        "{op}: {} replies to {} requests",
        sent.len(),
        HOT * 2
    );
    let mut steps = vec![None; HOT as usize];
    let mut native = vec![0u8; cfg.value_size];
    for (_, d) in &sent {
        let m = Message::parse(d)?;
        let Body::AmReply(a) = m.body else {
            anyhow::bail!(
                "{op}: request {} answered {:?}",
                m.request_id,
                m.body.kind()
            );
        };
        anyhow::ensure!(
            a.status == AmStatus::Done && a.executed_at == Location::Nic,
            "{op}: request {}: {:?} at {:?}",
            m.request_id,
            a.status,
            a.executed_at
        );
        // The request id's low bits count the requests injected, which cycle the hot set.
        let h = (m.request_id & ((1 << 40) - 1)) % HOT;
        anyhow::ensure!(
            *steps[h as usize].get_or_insert(a.steps) == a.steps,
            "{op}: the same request took different numbers of steps"
        );
        match op {
            "mica_get" => {
                let n = r
                    .table
                    .get(&key_for(42, (h * 7919) % cfg.mica_keys), &mut native)?;
                let reply = MicaReply::parse(a.output)?;
                anyhow::ensure!(
                    matches!((reply, n), (MicaReply::Value(v), Some(n)) if v == &native[..n]),
                    "{op}: request {}: {reply:?}, native {:?}",
                    m.request_id,
                    n.map(|n| &native[..n])
                );
            }
            "mica_put" => anyhow::ensure!(
                matches!(MicaReply::parse(a.output)?, MicaReply::Done),
                "{op}: request {} not stored",
                m.request_id
            ),
            _ => {
                let k = 2 * ((h * 7919) % cfg.btree_keys) + 1;
                let want = btree::native::lookup(&r.tree_mem, r.tree_root, k)?;
                let got = btree::parse_lookup_reply(a.output)
                    .map_err(|e| anyhow::anyhow!("{op}: request {}: {e:?}", m.request_id))?;
                anyhow::ensure!(
                    got == want && want.is_some(),
                    "{op}: key {k}: {got:?}, native {want:?}"
                );
            }
        }
    }
    steps
        .into_iter()
        .map(|s| s.ok_or_else(|| anyhow::anyhow!("{op}: a request of the hot set got no reply")))
        .collect()
}

/// The worker's capability check alone, on the (tenant, capability) the requests carry; ns
/// per message.
fn run_capability_check(r: &Rig, n: u64) -> f64 {
    let cap = credential().capability(TENANT);
    let start = Instant::now();
    for _ in 0..n {
        let (tenant, cap) = std::hint::black_box((TENANT, cap));
        assert!(r.capabilities.check(tenant, cap), "tenant 1's capability");
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median_min_max(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Runs every operation `rounds` times, the worker path and the native code alternately.
pub fn run(cfg: &DatapathConfig) -> anyhow::Result<Vec<DatapathRow>> {
    let mut r = rig(cfg)?;
    let geom = MicaGeometry::for_keys(cfg.mica_keys, cfg.value_size);
    let mut rows = Vec::new();
    for (op, class) in OPERATIONS {
        if !cfg.ops.is_empty() && !cfg.ops.iter().any(|o| o == op) {
            continue;
        }
        let reqs = requests(op, cfg, &geom)?;
        let executed = r
            .stats
            .nic_executed
            .load(std::sync::atomic::Ordering::Relaxed);
        // Warm-up: the VM pool, the reply cache, the hot data; its replies are kept and
        // checked, and the steps they took are what every timed message must take.
        let steps_before = r.stats.steps.load(std::sync::atomic::Ordering::Relaxed);
        r.port.discard_sent(false);
        run_worker(&mut r, &reqs, class, HOT * 2, 0);
        r.port.discard_sent(true);
        let steps = check_replies(&mut r, op, cfg)?;
        run_native(&r, op, cfg, HOT * 2)?;
        let (mut w, mut nat, mut caps) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=cfg.rounds.max(1) as u64 {
            w.push(run_worker(&mut r, &reqs, class, cfg.messages, round));
            nat.push(run_native(&r, op, cfg, cfg.messages)?);
            caps.push(run_capability_check(&r, cfg.messages));
        }
        let done = r
            .stats
            .nic_executed
            .load(std::sync::atomic::Ordering::Relaxed)
            - executed;
        let want = HOT * 2 + cfg.messages * cfg.rounds.max(1) as u64;
        // Each run cycles the hot set from its first request.
        let run_steps =
            |n: u64| -> u64 { (0..n).map(|i| u64::from(steps[(i % HOT) as usize])).sum() };
        let steps_want = run_steps(HOT * 2) + cfg.rounds.max(1) as u64 * run_steps(cfg.messages);
        anyhow::ensure!(
            done == want,
            "{op}: {done} of {want} messages executed at the NIC (errors: see the worker stats)"
        );
        // A message cut short (an abort, a handler that saw stale state) would be cheap: every
        // timed message must have run the steps its checked twin ran.
        let ran = r.stats.steps.load(std::sync::atomic::Ordering::Relaxed) - steps_before;
        anyhow::ensure!(
            ran == steps_want,
            "{op}: {ran} steps for {want} messages, where the checked replies say {steps_want}"
        );
        let (ns, ns_min, ns_max) = median_min_max(&mut w);
        let (nn, nn_min, nn_max) = median_min_max(&mut nat);
        let (capability_ns, _, _) = median_min_max(&mut caps);
        rows.push(DatapathRow {
            op,
            ns_per_msg: ns,
            ns_per_msg_min: ns_min,
            ns_per_msg_max: ns_max,
            native_ns: nn,
            native_ns_min: nn_min,
            native_ns_max: nn_max,
            ratio: ns / nn,
            msgs_per_s: 1e9 / ns,
            capability_ns,
            rounds: cfg.rounds.max(1),
            messages: cfg.messages,
        });
    }
    Ok(rows)
}
