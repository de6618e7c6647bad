//! Prometheus metrics of the NAAM processes (`--metrics-addr`, off by default).
//!
//! Each process already names every counter for its STATS reply (`w0.rx`, `offload.5.nic_runs`,
//! `error.busy`, ...). This crate turns those names into Prometheus families with labels
//! ([`families`]), writes them in the text format with `prometheus-client` ([`encode`]), and
//! answers `GET /metrics` over HTTP ([`Exporter`]: requests parsed with `httparse` on a thread
//! of the exporter's own, every peer's input bounded, `http.rs`). That thread does not read
//! the process's state: the process's control loop calls [`Exporter::poll`] (it never blocks),
//! so the counters are read where they are read for STATS, and the data path sees no lock and
//! no allocation of the scrape.
//!
//! How a STATS name becomes a family and labels (one rule per segment, left to right):
//! - `w<K>` (a dataplane worker) → family part `worker`, label `worker="K"`;
//! - `worker`, `offload`, `class`, `tenant` followed by a number → that word, label
//!   `<word>="N"`;
//! - `error.X`, `op_error.X` (last segment) → label `code="X"`; `drop.X`, `port_drop.X` →
//!   label `reason="X"`;
//! - under `offload.N`, `nic_X` / `host_X` → family part `X`, label `location="nic|host"`, so
//!   the two processes' families line up (`naam_dp_offload_runs_total{location="nic"}`,
//!   `naam_host_offload_runs_total{location="host"}`);
//! - a first segment `dp` (the dataplane's own state) is dropped: the prefix says it
//!   (`dp.host_up` → `naam_dp_host_up`);
//! - any other segment joins the family name.
//!
//! Sums the process also reports (`total.*` of the dataplane, `host.*` of the host agent) are
//! left out (Prometheus sums the labelled series itself), and so is the dataplane's log of
//! recent placement decisions (`decision.*`; the placement itself is `class_placement`). Values listed by [`GAUGES`] are
//! gauges, all others counters.

use naam_core::pool::Offload;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
mod http;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Counter names (last family part) whose values go up and down.
pub const GAUGES: &[&str] = &[
    "in_flight",
    "at_host",
    "placement",
    "lease_ms",
    "nic_busy_ppm",
    "nic_queue",
    "host_busy_ppm",
    "host_queue",
    "nic_congest_left_ms",
    "workers",
    "host_up",
    "host_suspect",
    "link_generation",
    "info",
    "lossless",
];

/// What a family's HELP line says where its name does not say enough.
const HELP: &[(&str, &str)] = &[(
    "class_placement",
    "where the class runs now: 0 at the clients, 1 on the NIC, 2 on the host",
)];

/// Prefixes of sums the process reports besides their parts, and of the placement log
/// (`decision.K...`, one line per recent decision: a log, not a metric); left out.
const SKIPPED: &[&str] = &["total", "host", "decision"];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot serve metrics on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

/// One family: all samples of one metric name.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Without the process prefix and without `_total` (the encoder adds it to counters).
    pub name: String,
    pub gauge: bool,
    pub samples: Vec<(Vec<(String, String)>, u64)>,
}

/// The families of a process's named counters (see the module doc for the rules), sorted by
/// name. Names that fit no rule cleanly are still exported, their segments joined by `_`.
pub fn families(counters: &[(String, u64)]) -> Vec<Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for (name, value) in counters {
        let Some((family, labels)) = split(name) else {
            continue;
        };
        let gauge = GAUGES.iter().any(|g| family.ends_with(g));
        out.entry(family.clone())
            .or_insert_with(|| Family {
                name: family,
                gauge,
                samples: Vec::new(),
            })
            .samples
            .push((labels, *value));
    }
    out.into_values().collect()
}

/// The whole text of one scrape: the families of `counters` and the `offload_info` family
/// of `offloads` (value 1 each: what an offload id stands for, to join with the
/// per-offload counters, `* on (offload) group_left(name) naam_dp_offload_info`).
pub fn render(prefix: &str, counters: &[(String, u64)], offloads: &[Arc<Offload>]) -> String {
    let mut all = families(counters);
    all.push(offload_info(offloads));
    encode(prefix, all)
}

/// The `offload_info` family of `offloads`.
pub fn offload_info(offloads: &[Arc<Offload>]) -> Family {
    Family {
        name: "offload_info".into(),
        gauge: true,
        samples: offloads
            .iter()
            .map(|o| {
                let labels = vec![
                    ("offload".into(), o.id.to_string()),
                    ("name".into(), o.name.clone()),
                    ("tenant".into(), o.tenant.to_string()),
                    ("class".into(), o.class.to_string()),
                ];
                (labels, 1)
            })
            .collect(),
    }
}

/// A STATS name as (family, labels); `None` for sums.
fn split(name: &str) -> Option<(String, Vec<(String, String)>)> {
    let segs: Vec<&str> = name.split('.').collect();
    if segs.len() > 1 && SKIPPED.contains(&segs[0]) {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut i = usize::from(segs.len() > 1 && segs[0] == "dp");
    while i < segs.len() {
        let s = segs[i];
        let next = segs.get(i + 1).copied();
        let last = i + 2 == segs.len();
        if let Some(k) = s.strip_prefix('w').filter(|k| is_number(k)) {
            parts.push("worker".into());
            labels.push(("worker".into(), k.into()));
        } else if matches!(s, "worker" | "offload" | "class" | "tenant")
            && next.is_some_and(is_number)
        {
            parts.push(s.into());
            labels.push((s.into(), next.unwrap_or_default().into()));
            i += 1;
        } else if matches!(s, "error" | "op_error" | "drop" | "port_drop") && last {
            let key = if s.ends_with("drop") {
                "reason"
            } else {
                "code"
            };
            parts.push(s.into());
            labels.push((key.into(), next.unwrap_or_default().into()));
            i += 1;
        } else if let Some((loc, rest)) = s
            .split_once('_')
            .filter(|(loc, _)| parts.first().is_some_and(|p| p == "offload") && is_location(loc))
        {
            parts.push(rest.into());
            labels.push(("location".into(), loc.into()));
        } else {
            parts.push(s.into());
        }
        i += 1;
    }
    let family: String = parts
        .join("_")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Some((family, labels))
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_location(s: &str) -> bool {
    matches!(s, "nic" | "host")
}

/// The text exposition of `families`, every name prefixed by `prefix` (`naam_dp`,
/// `naam_host`).
pub fn encode(prefix: &str, families: Vec<Family>) -> String {
    let mut registry = Registry::with_prefix(prefix);
    registry.register_collector(Box::new(Snapshot(families)));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// The families of one scrape, encoded when the registry asks.
#[derive(Debug)]
struct Snapshot(Vec<Family>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let kind = if f.gauge {
                MetricType::Gauge
            } else {
                MetricType::Counter
            };
            let help = match HELP.iter().find(|(name, _)| *name == f.name) {
                Some((_, help)) => (*help).to_owned(),
                None if f.gauge => format!("NAAM gauge {}", f.name),
                None => format!("NAAM counter {}", f.name),
            };
            let mut metric = encoder.encode_descriptor(&f.name, &help, None, kind)?;
            for (labels, v) in &f.samples {
                let e = metric.encode_family(labels)?;
                if f.gauge {
                    ConstGauge::new(*v).encode(e)?;
                } else {
                    ConstCounter::new(*v).encode(e)?;
                }
            }
        }
        Ok(())
    }
}

/// The HTTP endpoint: `GET /metrics` answers the text format; other paths 404, other
/// methods 405 (no body is ever read), malformed heads 400. Served by a thread of its own
/// ([`http`], every peer's input bounded); the text is rendered on the owner's loop, which
/// calls [`Exporter::poll`] (it never blocks).
pub struct Exporter {
    addr: SocketAddr,
    scrapes: std::sync::mpsc::Receiver<http::Scrape>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    pub fn bind(addr: SocketAddr) -> Result<Exporter, MetricsError> {
        let bind_error = |e: std::io::Error| MetricsError::Bind {
            addr,
            reason: e.to_string(),
        };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let (tx, scrapes) = std::sync::mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn({
                let stop = stop.clone();
                move || http::serve(listener, tx, stop)
            })
            .map_err(bind_error)?;
        tracing::info!(%addr, "serving metrics at /metrics");
        Ok(Exporter {
            addr,
            scrapes,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (the port chosen when it was given as 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers every scrape waiting, with the text of `render` (called once, only when a
    /// scrape waits). Never blocks. Returns how many scrapes were answered.
    pub fn poll(&mut self, render: impl FnOnce() -> String) -> usize {
        http::hand_over(&self.scrapes, render)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(n, x)| (n.to_string(), *x)).collect()
    }

    fn labels(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn stats_names_become_families_with_labels() {
        let f = families(&c(&[
            ("w0.rx", 5),
            ("w1.rx", 7),
            ("w1.error.busy", 2),
            ("w0.port_drop.kernel_rx", 3),
            ("offload.5.nic_runs", 11),
            ("offload.5.host_runs", 4),
            ("worker.2.messages", 9),
            ("class.3.placement", 1),
            ("ctl.error.unauthorized", 6),
            ("dp.host_up", 1),
            ("total.rx", 12),
            ("host.messages", 9),
            ("decision.0.c1.nic-host.HostCongested", 123),
            ("w0.tenant.2.admitted", 8),
        ]));
        let get = |name: &str| f.iter().find(|x| x.name == name).cloned();
        let rx = get("worker_rx").expect("worker_rx");
        assert!(!rx.gauge);
        assert_eq!(
            rx.samples,
            vec![
                (labels(&[("worker", "0")]), 5),
                (labels(&[("worker", "1")]), 7)
            ]
        );
        assert_eq!(
            get("worker_error").unwrap().samples,
            vec![(labels(&[("worker", "1"), ("code", "busy")]), 2)]
        );
        assert_eq!(
            get("worker_tenant_admitted").unwrap().samples,
            vec![(labels(&[("worker", "0"), ("tenant", "2")]), 8)],
            "one family for every tenant, labelled"
        );
        assert_eq!(
            get("worker_port_drop").unwrap().samples,
            vec![(labels(&[("worker", "0"), ("reason", "kernel_rx")]), 3)]
        );
        assert_eq!(
            get("offload_runs").unwrap().samples,
            vec![
                (labels(&[("offload", "5"), ("location", "nic")]), 11),
                (labels(&[("offload", "5"), ("location", "host")]), 4)
            ]
        );
        assert!(get("worker_messages").is_some());
        assert!(get("class_placement").unwrap().gauge);
        assert!(get("host_up").unwrap().gauge, "the prefix says dp");
        assert!(get("dp_host_up").is_none());
        assert_eq!(
            get("ctl_error").unwrap().samples,
            vec![(labels(&[("code", "unauthorized")]), 6)]
        );
        assert!(get("total_rx").is_none() && get("host_messages").is_none());
        assert!(f.iter().all(|x| !x.name.starts_with("decision")));
    }

    #[test]
    fn the_text_format_has_types_labels_and_values() {
        let text = encode(
            "naam_dp",
            families(&c(&[("offload.5.nic_runs", 11), ("dp.host_up", 1)])),
        );
        assert!(
            text.contains("# TYPE naam_dp_offload_runs counter"),
            "{text}"
        );
        assert!(
            text.contains("naam_dp_offload_runs_total{offload=\"5\",location=\"nic\"} 11"),
            "{text}"
        );
        assert!(text.contains("# TYPE naam_dp_host_up gauge"), "{text}");
        assert!(
            text.contains("# HELP naam_dp_host_up NAAM gauge host_up"),
            "{text}"
        );
        assert!(text.contains("naam_dp_host_up 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_endpoint_answers_metrics_and_refuses_other_paths() {
        use std::io::{Read, Write};
        let mut ex = Exporter::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = ex.local_addr();
        let get = |path: &str| {
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
                let mut r = String::new();
                s.read_to_string(&mut r).unwrap();
                r
            })
        };
        let (a, b) = (get("/metrics"), get("/nothing"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut rendered = 0;
        while !(a.is_finished() && b.is_finished()) && std::time::Instant::now() < deadline {
            rendered += ex.poll(|| encode("naam_t", families(&c(&[("w0.rx", 3)]))));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(rendered, 1, "only the scrape asks the owner for the text");
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert!(
            a.starts_with("HTTP/1.0 200") || a.starts_with("HTTP/1.1 200"),
            "{a}"
        );
        assert!(a.contains("naam_t_worker_rx_total{worker=\"0\"} 3"), "{a}");
        assert!(b.contains(" 404 "), "{b}");
    }
}
