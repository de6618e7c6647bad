//! The B-tree experiment (DESIGN §8 "btree", issue 9 item 3): Cell-style lookups (Mitchell et
//! al., ATC'16) done two ways against the same tree on a local deployment:
//!
//! - **client traversal**: the client walks the tree itself, one round trip per level: each
//!   node is fetched with one ONE_SIDED request of three READs (version, body, version again:
//!   the seqlock of `handlers/include/btree.h`, the ops executed in order), checked (versions
//!   equal and even, else the node is read again), and searched here; the B-link `high`/`next`
//!   words send it right after a concurrent split, as in Cell;
//! - **active message**: one `btree_lookup` message; the handler does the same walk next to
//!   the memory (one step per level) and replies once.
//!
//! Both start at the root offset from `describe(btree)`. The dataplane is pinned at the NIC
//! (both kinds of request are then served by the same cores). One deployment per tree depth:
//! the host agent bulk-loads `--btree-keys` keys into full 16-key nodes, so depth `d` holds
//! between `16·17^(d−2) + 1` and `16·17^(d−1)` keys ([`keys_for_depth`]).

use crate::load::Percentiles;
use crate::plot::{Chart, Series};
use crate::ycsb::Rng;
use hdrhistogram::Histogram;
use naam_client::bundled::BTREE_LOOKUP;
use naam_client::{Client, ClientConfig, ExecMode, Response, Ticket};
use naam_core::helpers::hash64;
use naam_core::wire::{OpBody, RemoteOp};
use naam_deploy::{DeployConfig, Deployment};
use naam_handlers::btree::layout::{Node, FANOUT, LEVEL_ANY, NODE_SIZE};
use naam_handlers::btree::{parse_lookup_reply, Args};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Node reads one traversal may make before it gives up (a writer racing it forever, or a
/// cycle in a corrupt tree).
pub const MAX_READS: u32 = 64;

/// Why a client traversal stopped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TraversalError {
    #[error("node at offset {offset} is corrupt")]
    Corrupt { offset: u64 },
    #[error("node read returned {len} bytes, expected {NODE_SIZE}")]
    ShortRead { len: usize },
    #[error("gave up after {MAX_READS} node reads")]
    TooManyReads,
}

/// What a traversal wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read the node at this offset (the same one again after a torn read).
    Read(u64),
    /// The lookup's answer.
    Done(Option<u64>),
}

/// One client-side lookup: the state between two node reads (what the handler keeps in
/// `ctx.state`).
#[derive(Debug, Clone, Copy)]
pub struct Traversal {
    key: u64,
    node: u64,
    level: u32,
    reads: u32,
    retries: u32,
}

impl Traversal {
    pub fn new(key: u64, root: u64) -> Self {
        Self {
            key,
            node: root,
            level: LEVEL_ANY,
            reads: 0,
            retries: 0,
        }
    }

    /// The node to read now.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// Node reads so far (round trips).
    pub fn reads(&self) -> u32 {
        self.reads
    }

    /// Reads repeated because a writer was changing the node.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The three READs of the current node: version, body, version again.
    pub fn ops(&self, region: u32, key: u64) -> [RemoteOp<'static>; 3] {
        let read = |offset, len| RemoteOp {
            region,
            key,
            offset,
            body: OpBody::Read { len },
        };
        [
            read(self.node, 8),
            read(self.node + 8, (NODE_SIZE - 8) as u32),
            read(self.node, 8),
        ]
    }

    /// Takes the three READs' data and decides where to go.
    pub fn on_read(
        &mut self,
        version: &[u8],
        body: &[u8],
        version_after: &[u8],
    ) -> Result<Next, TraversalError> {
        self.reads += 1;
        if self.reads > MAX_READS {
            return Err(TraversalError::TooManyReads);
        }
        let word = |b: &[u8]| -> Result<u64, TraversalError> {
            Ok(u64::from_le_bytes(
                b.try_into()
                    .map_err(|_| TraversalError::ShortRead { len: b.len() })?,
            ))
        };
        let (v0, v1) = (word(version)?, word(version_after)?);
        if body.len() != NODE_SIZE - 8 {
            return Err(TraversalError::ShortRead {
                len: body.len() + 8,
            });
        }
        if v0 != v1 || v0 & 1 == 1 {
            // A writer was in the node: read it again.
            self.retries += 1;
            return Ok(Next::Read(self.node));
        }
        let mut image = [0u8; NODE_SIZE];
        image[..8].copy_from_slice(version);
        image[8..].copy_from_slice(body);
        let n = Node::decode(&image);
        let corrupt = TraversalError::Corrupt { offset: self.node };
        if (self.level != LEVEL_ANY && n.level != self.level) || n.count as usize > FANOUT {
            return Err(corrupt);
        }
        let (next, level) = if self.key > n.high {
            // The node split after its parent was read: move right (B-link).
            (n.next, n.level)
        } else if n.level != 0 {
            (n.vals[n.upper_bound(self.key)], n.level - 1)
        } else {
            let i = n.lower_bound(self.key);
            let found = (i < n.count as usize && n.keys[i] == self.key).then(|| n.vals[i]);
            return Ok(Next::Done(found));
        };
        if next == 0 {
            return Err(corrupt);
        }
        self.node = next;
        self.level = level;
        Ok(Next::Read(next))
    }
}

/// Keys that give a bulk-loaded tree of full nodes `depth` levels (1 = a single leaf).
pub fn keys_for_depth(depth: u32) -> u64 {
    match depth {
        0 | 1 => FANOUT as u64 / 2,
        // A quarter above the least that needs `depth` levels: 16·17^(d−2) + 1.
        d => FANOUT as u64 * 17u64.pow(d - 2) * 5 / 4,
    }
}

/// How lookups are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// One-sided READs, one round trip per level.
    ClientTraversal,
    /// One `btree_lookup` active message.
    ActiveMessage,
}

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Method::ClientTraversal => "client traversal (one-sided)",
            Method::ActiveMessage => "active message",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BtreeConfig {
    pub depths: Vec<u32>,
    pub duration: Duration,
    /// Lookups in flight (closed loop).
    pub outstanding: usize,
    pub timeout: Duration,
    pub seed: u64,
    pub log_dir: Option<PathBuf>,
}

impl Default for BtreeConfig {
    fn default() -> Self {
        Self {
            depths: vec![2, 3, 4, 5],
            duration: Duration::from_secs(3),
            outstanding: 8,
            timeout: Duration::from_millis(50),
            seed: 1,
            log_dir: None,
        }
    }
}

/// One (depth, method) measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BtreePoint {
    pub method: Method,
    pub label: &'static str,
    /// The tree's depth as the host agent describes it.
    pub depth: u64,
    pub keys: u64,
    pub seconds: f64,
    pub lookups: u64,
    pub throughput_per_s: f64,
    #[serde(flatten)]
    pub latency: Percentiles,
    /// Requests sent per lookup (round trips).
    pub round_trips_per_lookup: f64,
    pub node_retries: u64,
    /// Lookups that failed or returned a wrong value.
    pub errors: u64,
    pub retransmits: u64,
    pub first_error: Option<String>,
}

/// What a lookup's client needs to know about the tree.
#[derive(Debug, Clone, Copy)]
struct Tree {
    region: u32,
    region_key: u64,
    root: u64,
    depth: u64,
    keys: u64,
    seed: u64,
}

fn describe(c: &mut Client) -> anyhow::Result<Tree> {
    let p = c.describe(0, "btree")?;
    let get = |name: &str| {
        p.iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
            .ok_or_else(|| anyhow::anyhow!("describe(btree) has no {name}"))
    };
    Ok(Tree {
        region: get("region")? as u32,
        region_key: get("key")?,
        root: get("root")?,
        depth: get("depth")?,
        keys: get("keys")?,
        seed: get("seed").unwrap_or(1),
    })
}

enum InFlight {
    Walk(Traversal),
    Message,
}

/// Runs one method against a deployment for `cfg.duration`.
pub fn measure(d: &Deployment, method: Method, cfg: &BtreeConfig) -> anyhow::Result<BtreePoint> {
    let mut c = d.client(ClientConfig {
        exec_mode: ExecMode::Server,
        timeout: cfg.timeout,
        ..ClientConfig::default()
    })?;
    let t = describe(&mut c)?;
    anyhow::ensure!(t.keys > 0, "the deployment has an empty tree");
    let mut rng = Rng::new(cfg.seed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut inflight: HashMap<Ticket, (Instant, u64, InFlight)> = HashMap::new();
    let (mut lookups, mut requests, mut retries, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut first_error: Option<String> = None;
    let start = Instant::now();
    let end = start + cfg.duration;
    let submit = |c: &mut Client, state: &InFlight, key: u64| -> naam_client::Result<Ticket> {
        match state {
            InFlight::Walk(w) => c.submit_ops(0, &w.ops(t.region, t.region_key)),
            InFlight::Message => {
                let args = Args::lookup(t.region, key).with_root(t.root).to_bytes();
                c.submit_call(BTREE_LOOKUP.id, BTREE_LOOKUP.class, &args)
            }
        }
    };
    loop {
        let sending = Instant::now() < end;
        while sending && inflight.len() < cfg.outstanding.max(1) {
            // Keys 1, 3, 5, ...: every lookup finds its key (docs/runtime.md).
            let key = 2 * (rng.next_u64() % t.keys) + 1;
            let state = match method {
                Method::ClientTraversal => InFlight::Walk(Traversal::new(key, t.root)),
                Method::ActiveMessage => InFlight::Message,
            };
            let ticket = submit(&mut c, &state, key)?;
            requests += 1;
            inflight.insert(ticket, (Instant::now(), key, state));
        }
        if !sending && inflight.is_empty() {
            break;
        }
        if !sending && Instant::now() > end + Duration::from_secs(10) {
            errors += inflight.len() as u64;
            break;
        }
        let mut polled = c.poll(Some(Duration::from_millis(5)))?;
        while let Some(done) = polled {
            if let Some((sent, key, mut state)) = inflight.remove(&done.ticket) {
                let outcome: Result<Option<Option<u64>>, String> = match (&mut state, done.result) {
                    (InFlight::Walk(w), Ok(Response::OneSided(outs))) => {
                        if let Some(e) = outs.iter().find_map(|o| o.error) {
                            Err(format!("one-sided read failed: {e:?}"))
                        } else if outs.len() != 3 {
                            Err(format!("{} op results, expected 3", outs.len()))
                        } else {
                            match w.on_read(&outs[0].data, &outs[1].data, &outs[2].data) {
                                Ok(Next::Done(v)) => {
                                    retries += w.retries() as u64;
                                    Ok(Some(v))
                                }
                                Ok(Next::Read(_)) => Ok(None),
                                Err(e) => Err(e.to_string()),
                            }
                        }
                    }
                    (InFlight::Message, Ok(Response::Am(r))) => r
                        .into_output()
                        .map_err(|e| e.to_string())
                        .and_then(|out| parse_lookup_reply(&out).map_err(|e| e.to_string()))
                        .map(Some),
                    (_, Ok(other)) => Err(format!("unexpected reply {other:?}")),
                    (_, Err(e)) => Err(e.to_string()),
                };
                match outcome {
                    Ok(None) => {
                        // The next level: one more round trip.
                        let ticket = submit(&mut c, &state, key)?;
                        requests += 1;
                        inflight.insert(ticket, (sent, key, state));
                    }
                    Ok(Some(v)) if v == Some(hash64(t.seed, key)) => {
                        lookups += 1;
                        let _ = hist.record(sent.elapsed().as_nanos().max(1) as u64);
                    }
                    Ok(Some(v)) => {
                        errors += 1;
                        first_error.get_or_insert(format!("key {key}: got {v:?}"));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            polled = c.poll(Some(Duration::ZERO))?;
        }
    }
    let seconds = start
        .elapsed()
        .as_secs_f64()
        .max(cfg.duration.as_secs_f64());
    Ok(BtreePoint {
        method,
        label: method.label(),
        depth: t.depth,
        keys: t.keys,
        seconds,
        lookups,
        throughput_per_s: lookups as f64 / seconds,
        latency: Percentiles::of(&hist),
        round_trips_per_lookup: requests as f64 / (lookups + errors).max(1) as f64,
        node_retries: retries,
        errors,
        retransmits: c.stats().retransmits,
        first_error,
    })
}

/// Every depth, both methods; `progress` sees each point.
pub fn run(
    cfg: &BtreeConfig,
    mut progress: impl FnMut(&BtreePoint),
) -> anyhow::Result<Vec<BtreePoint>> {
    let bins = crate::procs::binaries()?;
    let mut out = Vec::new();
    for &depth in &cfg.depths {
        let dc = DeployConfig {
            btree_keys: keys_for_depth(depth),
            mica_keys: 1024,
            // --stale-ms: as in the placement comparison (a loaded machine delays heartbeats).
            dataplane_args: [
                "--pin",
                "--no-client-hints",
                "--backoff",
                "yield",
                "--stale-ms",
                "1000",
            ]
            .map(String::from)
            .to_vec(),
            host_args: vec!["--backoff".into(), "yield".into()],
            log_dir: cfg.log_dir.clone().or_else(crate::procs::log_dir),
            log_filter: "warn".into(),
            ..DeployConfig::default()
        };
        let d = Deployment::start(bins.clone(), dc)?;
        // A short warm-up of each kind (sockets, caches), not measured.
        let warm = BtreeConfig {
            duration: Duration::from_millis(200),
            ..cfg.clone()
        };
        for method in [Method::ClientTraversal, Method::ActiveMessage] {
            measure(&d, method, &warm)?;
            let p = measure(&d, method, cfg)?;
            progress(&p);
            out.push(p);
        }
    }
    Ok(out)
}

/// Throughput and median / p99 latency against depth, one line per method.
pub fn write_charts(dir: &Path, name: &str, points: &[BtreePoint]) -> anyhow::Result<Vec<PathBuf>> {
    let series = |f: &dyn Fn(&BtreePoint) -> f64| {
        [Method::ClientTraversal, Method::ActiveMessage]
            .into_iter()
            .map(|m| Series {
                // Short: the legend is narrow.
                name: match m {
                    Method::ClientTraversal => "client traversal",
                    Method::ActiveMessage => "active message",
                }
                .into(),
                points: points
                    .iter()
                    .filter(|p| p.method == m)
                    .map(|p| (p.depth as f64, f(p)))
                    .collect(),
            })
            .collect::<Vec<_>>()
    };
    let chart = |title: &str, y: &str, f: &dyn Fn(&BtreePoint) -> f64| Chart {
        title: title.into(),
        x_label: "tree depth (levels)".into(),
        y_label: y.into(),
        log_x: false,
        series: series(f),
        markers: Vec::new(),
    };
    let mut out = chart("B-tree lookups: throughput", "lookups/s", &|p| {
        p.throughput_per_s
    })
    .write(dir, &format!("{name}-throughput"))?;
    out.extend(
        chart("B-tree lookups: median latency", "p50 (µs)", &|p| {
            p.latency.p50_us
        })
        .write(dir, &format!("{name}-p50"))?,
    );
    out.extend(
        chart("B-tree lookups: p99 latency", "p99 (µs)", &|p| {
            p.latency.p99_us
        })
        .write(dir, &format!("{name}-p99"))?,
    );
    Ok(out)
}

/// The results as a markdown table.
pub fn markdown(points: &[BtreePoint]) -> String {
    let mut s = String::from(
        "| depth | keys | method | lookups/s | p50 µs | p99 µs | p99.9 µs | round trips / lookup |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        s += &format!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} |\n",
            p.depth,
            p.keys,
            p.label,
            p.throughput_per_s,
            p.latency.p50_us,
            p.latency.p99_us,
            p.latency.p999_us,
            p.round_trips_per_lookup
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use naam_core::memory::{OwnedRegion, RegionMem};
    use naam_handlers::btree::{BTree, BTreeConfig};

    fn tree(n: u64, cfg: BTreeConfig) -> (OwnedRegion, BTree) {
        let region = OwnedRegion::zeroed(cfg.region_len(n, 64));
        let t = BTree::bulk_load(region.mem(), cfg, (0..n).map(|i| (2 * i + 1, 1000 + i)))
            .expect("bulk load");
        (region, t)
    }

    /// Runs a traversal against the region directly (what the one-sided reads return).
    fn walk(mem: &RegionMem, root: u64, key: u64) -> (Result<Option<u64>, TraversalError>, u32) {
        let mut w = Traversal::new(key, root);
        loop {
            let mut v = [0u8; 8];
            let mut body = [0u8; NODE_SIZE - 8];
            mem.read(w.node(), &mut v);
            mem.read(w.node() + 8, &mut body);
            match w.on_read(&v, &body, &v) {
                Ok(Next::Read(_)) => continue,
                Ok(Next::Done(found)) => return (Ok(found), w.reads()),
                Err(e) => return (Err(e), w.reads()),
            }
        }
    }

    #[test]
    fn traversal_finds_every_key_in_one_read_per_level() {
        for (n, cfg) in [
            (5, BTreeConfig::default()),
            (300, BTreeConfig::default()),
            (5000, BTreeConfig::default()),
            (200, BTreeConfig::new(3, 3).unwrap()),
        ] {
            let (region, t) = tree(n, cfg);
            let mem = region.mem();
            for i in 0..n {
                let (got, reads) = walk(&mem, t.root(), 2 * i + 1);
                assert_eq!(got, Ok(Some(1000 + i)), "n {n} key {}", 2 * i + 1);
                assert_eq!(reads as usize, t.height(), "n {n}");
            }
            for k in [0, 2, 2 * n, u64::MAX] {
                assert_eq!(walk(&mem, t.root(), k).0, Ok(None), "absent key {k}");
            }
        }
    }

    #[test]
    fn keys_for_depth_give_that_depth() {
        for d in 1..=5 {
            let n = keys_for_depth(d);
            let (_r, t) = tree(n, BTreeConfig::default());
            assert_eq!(t.height(), d as usize, "{n} keys");
        }
    }

    #[test]
    fn a_torn_read_is_retried_and_a_bad_node_is_reported() {
        let (region, t) = tree(300, BTreeConfig::default());
        let mem = region.mem();
        let mut w = Traversal::new(7, t.root());
        let mut body = [0u8; NODE_SIZE - 8];
        mem.read(t.root() + 8, &mut body);
        // Versions differ: a writer was there.
        assert_eq!(
            w.on_read(&2u64.to_le_bytes(), &body, &4u64.to_le_bytes()),
            Ok(Next::Read(t.root()))
        );
        // Odd: a writer is there.
        assert_eq!(
            w.on_read(&3u64.to_le_bytes(), &body, &3u64.to_le_bytes()),
            Ok(Next::Read(t.root()))
        );
        assert_eq!(w.retries(), 2);
        // A good read moves down a level.
        assert!(matches!(
            w.on_read(&0u64.to_le_bytes(), &body, &0u64.to_le_bytes()),
            Ok(Next::Read(n)) if n != t.root()
        ));
        // Reading the root again where a leaf is expected: wrong level.
        assert_eq!(
            w.on_read(&0u64.to_le_bytes(), &body, &0u64.to_le_bytes()),
            Err(TraversalError::Corrupt { offset: w.node() })
        );
        assert!(matches!(
            Traversal::new(7, t.root()).on_read(&[0; 8], &body[..10], &[0; 8]),
            Err(TraversalError::ShortRead { .. })
        ));
        // A writer that never lets go: bounded.
        let mut w = Traversal::new(7, t.root());
        let mut last = Ok(Next::Read(0));
        for _ in 0..=MAX_READS {
            last = w.on_read(&1u64.to_le_bytes(), &body, &1u64.to_le_bytes());
        }
        assert_eq!(last, Err(TraversalError::TooManyReads));
    }
}
