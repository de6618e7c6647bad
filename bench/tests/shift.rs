//! Smoke tests of `naam-bench shift` against a real local deployment (host agent and
//! dataplane processes), with tiny sizes: it produces its files and sensible numbers.
//! Measurements are the binaries' job, not these tests'. (The demo's are in the root crate's
//! `tests/demo.rs`.)

use naam_bench::shift;
use naam_deploy::Binaries;

fn bins() -> Binaries {
    Binaries::locate_or_build().expect("host agent and dataplane programs")
}

#[test]
fn shift_detects_the_move_away_from_a_congested_host_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = shift::ShiftConfig {
        rate: 3_000.0,
        reps: 1,
        calm_ms: 300,
        host_ms: 700,
        nic_after_ms: 300,
        nic_ms: 200,
        mica_keys: 2_048,
        btree_keys: 2_048,
        ..shift::ShiftConfig::default()
    };
    let run = shift::run(bins(), &cfg).unwrap();
    shift::print(&run);
    let files = shift::write(&run, dir.path()).unwrap();
    for name in [
        "shift.json",
        "shift.csv",
        "shift-timeline.csv",
        "shift-decisions.json",
        "shift-summary.json",
        "shift-timeline.svg",
        "shift-timeline.png",
    ] {
        let p = dir.path().join(name);
        assert!(files.contains(&p), "{name} not reported");
        assert!(std::fs::metadata(&p).unwrap().len() > 0, "{name} empty");
    }
    // Every message sent is accounted for once, and the shares of a millisecond sum to 1.
    let sent: u64 = run.timeline.iter().map(|b| b.total() as u64).sum();
    let expected = cfg.rate * (2 * cfg.calm_ms + cfg.host_ms + 200) as f64 / 1e3;
    assert!(
        (sent as f64 - expected).abs() < 0.05 * expected,
        "sent {sent}, expected about {expected}"
    );
    for r in shift::timeline_rows(&run.timeline) {
        if r.sent > 0 {
            let sum = r.client + r.nic + r.host + r.delayed + r.lost;
            assert!((sum - 1.0).abs() < 1e-9, "ms {}: shares sum to {sum}", r.ms);
        }
    }
    // The host injection: traffic ran at the host before, moved to the NIC within the
    // congestion, and the policy logged why.
    assert_eq!(run.injections.len(), 2);
    let host = &run.injections[0];
    assert_eq!((host.congested, host.before.as_str()), ("host", "host"));
    assert!(host.affected);
    let shift_ms = host
        .shift_ms
        .expect("the shift away from the host was detected");
    assert!(shift_ms < cfg.host_ms as f64, "shift {shift_ms} ms");
    assert_eq!(host.moved_to, "nic");
    assert!(
        run.decisions
            .iter()
            .any(|d| d.from == "host" && d.to == "nic" && d.reason == "HostCongested"),
        "{:?}",
        run.decisions
    );
    assert_eq!(run.summary.host_shift_ms.n, 1);
}
