//! Smoke tests of the demo (`naam-rs demo`) against a real local deployment (host agent and
//! dataplane processes), with tiny sizes: it moves traffic, writes its files, and stops
//! cleanly. Measurements are the binaries' job, not these tests'.

use naam_deploy::Binaries;
use naam_rs::demo;
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
    // Stopped long before the congestion: only the phase that ran is reported (the others
    // said 0 ops/s and a p99 of 0 us), with latencies only where operations completed.
    let phases: Vec<_> = r.phases.iter().map(|p| p.phase).collect();
    assert_eq!(phases, ["before congestion"], "{phases:?}");
    for p in &r.phases {
        assert_eq!(p.p99_us.is_some(), p.ops > 0, "{p:?}");
    }
    let written = std::fs::read_to_string(dir.path().join("demo-phases.json")).unwrap();
    assert!(!written.contains("host congested"), "{written}");
}

#[test]
fn demo_settings_that_could_not_run_are_refused_before_anything_starts() {
    for args in [
        &["--keys", "0"][..],
        &["--rate", "0"],
        &["--rate", "nan"],
        &["--seconds=-1"],
        &["--seconds", "inf"],
        // Past what a duration holds (it panicked), and a congestion the host agent refuses.
        &["--seconds", "1e300"],
        &["--congest-ms", "60001"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_naam-rs"))
            .arg("demo")
            .args(args)
            .output()
            .expect("naam-rs runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            err.contains(args[0].split('=').next().unwrap()),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("host agent pid"),
            "{args:?} started a deployment: {err}"
        );
    }
}

/// The pids of `parent`'s children still running (a zombie, waiting for init to reap it, has
/// stopped running).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name (which may hold spaces) in parentheses: state, ppid.
            let mut f = stat[stat.rfind(')').map_or(0, |i| i + 2)..].split(' ');
            let state = f.next().unwrap_or("");
            let ppid = f.next().and_then(|p| p.parse::<u32>().ok());
            ppid == Some(parent) && state != "Z"
        })
        .collect()
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s[s.rfind(')').map_or(0, |i| i + 2)..].split(' ').next();
        state != Some("Z")
    })
}

/// SIGKILL gives the demo no chance to stop its host agent and dataplane: they notice that
/// their parent is gone and stop themselves, rather than polling a core for good.
#[test]
fn a_demo_killed_outright_leaves_no_process_behind() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_naam-rs"))
        .args(["demo", "--seconds", "60", "--keys", "1024", "--rate", "500"])
        .arg("--out")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("naam-rs runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let children = loop {
        let c = children_of(demo.id());
        if c.len() >= 2 {
            break c;
        }
        assert!(Instant::now() < deadline, "the demo started no deployment");
        assert!(demo.try_wait().unwrap().is_none(), "the demo exited early");
        std::thread::sleep(Duration::from_millis(50));
    };
    demo.kill().unwrap(); // SIGKILL
    demo.wait().unwrap();
    let killed = Instant::now();
    while children.iter().any(|&p| running(p)) {
        if killed.elapsed() > Duration::from_secs(10) {
            let left: Vec<u32> = children.iter().copied().filter(|&p| running(p)).collect();
            for p in &left {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .status();
            }
            panic!("processes {left:?} still run 10 s after their demo was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A results or log folder that cannot be made is refused before anything starts: the results
/// were lost after the whole run, the logs silently sent nowhere.
#[test]
fn unusable_results_and_log_folders_are_refused_before_anything_starts() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let under_file = file.join("sub");
    for (flag, what) in [("--out", "results folder"), ("--log-dir", "log folder")] {
        let t = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_naam-rs"))
            .args(["demo", "--seconds", "30", "--keys", "1024"])
            .arg(flag)
            .arg(&under_file)
            .output()
            .expect("naam-rs runs");
        let err = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{flag}: accepted\n{stdout}");
        assert!(err.contains(what), "{flag}: {err}");
        assert!(
            !stdout.contains("host agent pid"),
            "{flag} started: {stdout}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{flag}: {:?}",
            t.elapsed()
        );
    }
    assert_eq!(run_dirs(), 0);
}

/// Ctrl-C in a terminal reaches the demo's whole process group, the host agent still building
/// its data included: a stop, not a failure ("the host agent exited early", exit 1 before).
#[test]
fn ctrl_c_to_the_process_group_while_starting_is_a_clean_stop() {
    use std::os::unix::process::CommandExt as _;
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let demo = std::process::Command::new(env!("CARGO_BIN_EXE_naam-rs"))
        // A million keys: seconds of building, in which the signal comes.
        .args(["demo", "--seconds", "60", "--keys", "1048576"])
        .arg("--out")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("naam-rs runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let host = loop {
        if let Some(&pid) = children_of(demo.id()).first() {
            break pid;
        }
        assert!(Instant::now() < deadline, "the demo started no host agent");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    let sent = std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{}", demo.id())])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = demo.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(stdout.contains("interrupted"), "{stdout}");
    assert!(!running(host), "the host agent still runs");
}
