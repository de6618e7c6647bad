//! `naam-bench ycsb` end to end against a local deployment: the load phase stores every key,
//! and a short run issues the workload's mix without errors. (Figures come from the
//! experiments; this only checks the generator does what it says.)

use naam_bench::ycsb::{self, KeyDist, Placement, Workload, YcsbConfig};
use naam_client::{ClientConfig, Mica, ServerAddr};
use naam_deploy::{Binaries, DeployConfig, Deployment};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

fn config(
    d: &Deployment,
    workload: Workload,
    placement: Placement,
    rate: Option<f64>,
) -> YcsbConfig {
    YcsbConfig {
        servers: vec![ServerAddr::new(d.data_addr(), Some(d.control_addr()))],
        workload,
        dist: KeyDist::Zipfian,
        theta: 0.99,
        keys: 500,
        value_size: 32,
        placement,
        duration: Duration::from_millis(300),
        threads: 2,
        rate,
        outstanding: 8,
        load: true,
        timeout: Duration::from_millis(50),
        seed: 7,
        key_seed: Some(3),
        credential: Some(d.admin_key().expect("the deployment's admin key")),
        max_window: ClientConfig::default().max_window,
    }
}

#[test]
fn load_then_closed_and_open_loop_runs() {
    let bins = Binaries::locate_or_build().expect("the host agent and dataplane programs");
    let d = Deployment::start(
        bins,
        DeployConfig {
            // MICA's log is lossy and sized for the table's keys (twice their items): with
            // 1 024, a fast machine's YCSB-A wrapped it in 300 ms and evicted loaded keys.
            mica_keys: 65536,
            btree_keys: 1024,
            ..DeployConfig::default()
        },
    )
    .expect("deployment starts");
    let cfg = config(&d, Workload::A, Placement::Server, None);
    let progress = AtomicU64::new(0);
    ycsb::load(&cfg, &progress).unwrap();
    let mut m = Mica::new(d.client(ClientConfig::default()).unwrap()).unwrap();
    for i in [0, 1, 250, 499] {
        let v = m.get(&ycsb::key(3, i)).unwrap().expect("loaded");
        assert_eq!(v.len(), 32);
    }
    let r = ycsb::run(&cfg, &progress).unwrap();
    assert!(r.ops > 0);
    assert_eq!(r.errors, 0, "{:?}", r.first_error);
    assert_eq!(
        r.not_found,
        0,
        "every key was loaded (log evicted: {:?} bytes)",
        r.server_counters.get("mica.log_evicted_bytes")
    );
    assert_eq!(r.reads + r.updates, r.ops);
    let update_share = r.updates as f64 / r.ops as f64;
    assert!(
        (0.3..0.7).contains(&update_share),
        "workload A is 50/50: {update_share}"
    );
    assert!(r.latency.p50_us > 0.0 && r.latency.p50_us <= r.latency.p99_us);
    // The dataplane's counters moved by the run's server-side executions.
    let executed = r.server_counters["total.nic_executed"] + r.server_counters["total.forwarded"];
    assert!(executed >= r.ops as i128, "{executed} < {}", r.ops);

    // Open loop, reads only, handlers at the client.
    let cfg = config(&d, Workload::C, Placement::Client, Some(2000.0));
    let r = ycsb::run(&cfg, &progress).unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.first_error);
    assert_eq!(r.updates, 0);
    assert!(
        r.local_runs >= r.ops,
        "client placement runs every op locally"
    );
    // 2000/s for 0.3 s: about 600 ops (a loaded machine may fall behind, never ahead).
    assert!(r.ops <= 700, "{} ops", r.ops);
}
