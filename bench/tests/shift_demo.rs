//! Smoke tests of `naam-bench shift` and `naam-bench demo` against a real local deployment
//! (host agent and dataplane processes), with tiny sizes: they produce their files and
//! sensible numbers. Measurements are the binaries' job, not these tests'.

use naam_bench::{demo, shift};
use naam_client::deploy::Binaries;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One deployment at a time: they share this small machine's cores, and the run-directory
/// check looks at every deployment of this process.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn bins() -> Binaries {
    Binaries::locate_or_build().expect("host agent and dataplane programs")
}

fn run_dirs() -> usize {
    let prefix = format!("naam-deploy-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn shift_detects_the_move_away_from_a_congested_host_and_writes_its_files() {
    let _serial = serial();
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

#[test]
fn demo_moves_traffic_off_the_congested_host_and_writes_its_files() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cfg = demo::DemoConfig {
        seconds: 3.0,
        rate: 2_000.0,
        congest_ms: 900,
        mica_keys: 4_096,
        btree_keys: 4_096,
        out: dir.path().to_owned(),
        quiet: true,
        ..demo::DemoConfig::default()
    };
    let r = demo::run(bins(), &cfg, Arc::new(AtomicBool::new(false))).unwrap();
    demo::print_summary(&r);
    assert!(!r.interrupted);
    for name in [
        "demo.json",
        "demo.csv",
        "demo-phases.csv",
        "demo.svg",
        "demo.png",
    ] {
        let p = dir.path().join(name);
        assert!(r.files.contains(&p), "{name} not reported");
        assert!(std::fs::metadata(&p).unwrap().len() > 0, "{name} empty");
    }
    assert!(r.rows.len() >= 4, "{} rows", r.rows.len());
    assert_eq!(r.phases.len(), 3);
    for p in &r.phases {
        assert!(p.ops > 0, "{}: no operations", p.phase);
        let sum = p.client + p.nic + p.host;
        assert!((sum - 1.0).abs() < 1e-9, "{}: shares sum to {sum}", p.phase);
    }
    // Classes start at the host (a busy machine may move some early); while it is congested
    // most traffic runs at the NIC.
    assert!(r.phases[0].host > 0.5, "before: {:?}", r.phases[0]);
    assert!(r.phases[1].nic > 0.5, "congested: {:?}", r.phases[1]);
    assert!(r.decisions.iter().any(|d| d.reason == "HostCongested"));
    assert_eq!(run_dirs(), 0, "the run directory is removed");
}

#[test]
fn demo_stops_cleanly_when_interrupted() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cfg = demo::DemoConfig {
        seconds: 60.0,
        rate: 1_000.0,
        mica_keys: 1_024,
        btree_keys: 1_024,
        out: dir.path().to_owned(),
        quiet: true,
        ..demo::DemoConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        flag.store(true, Ordering::Relaxed); // what the Ctrl-C handler does
    });
    let t = Instant::now();
    let r = demo::run(bins(), &cfg, stop).unwrap();
    assert!(r.interrupted);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(r.clean_stop, "both processes exit 0 on SIGTERM");
    assert!(dir.path().join("demo.json").exists());
    assert_eq!(run_dirs(), 0, "the run directory is removed");
}
