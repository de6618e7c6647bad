//! Runs `naam-memif-bench` for a fraction of a second per run: dpdk-testpmd io forwarding and
//! the dataplane over net_memif (each DPDK side its own process, with its own file prefix), a
//! UDP echo and the dataplane over kernel UDP. Checks that every run got replies, that every
//! checked reply was right (MICA values, executed at the NIC), and that the results were
//! written. Speed is not asserted: that is the benchmark's job.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn testpmd_present() -> bool {
    Command::new("dpdk-testpmd")
        .arg("--version")
        .output()
        .is_ok()
}

#[test]
fn every_run_answers_correctly() {
    let exe = env!("CARGO_BIN_EXE_naam-memif-bench");
    let out = std::env::temp_dir().join(format!("naam-memif-smoke-{}", std::process::id()));
    let mut runs = "testpmd-memif,naam-memif,udp-echo,naam-udp";
    if !testpmd_present() {
        println!("skipped: dpdk-testpmd not installed (Debian package dpdk); running without it");
        runs = "naam-memif,udp-echo,naam-udp";
    }
    let started = Instant::now();
    let wall_start = std::time::SystemTime::now();
    let status = Command::new(exe)
        .args(["--out", out.to_str().unwrap()])
        .args(["--runs", runs])
        .args(["--seconds", "0.3", "--warmup", "0.2"])
        .args(["--keys", "4096", "--requests", "256", "--sample", "4"])
        .status()
        .expect("run naam-memif-bench");
    assert!(status.success(), "naam-memif-bench failed: {status}");
    assert!(started.elapsed() < Duration::from_secs(120));

    let json = std::fs::read_to_string(out.join("memif.json")).unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["run"].as_str().unwrap()).collect();
    assert_eq!(names, runs.split(',').collect::<Vec<_>>());
    for r in &rows {
        let run = r["run"].as_str().unwrap();
        assert!(r["replies"].as_u64().unwrap() > 0, "{run}: no replies: {r}");
        assert!(
            r["checked"].as_u64().unwrap() > 0,
            "{run}: nothing checked: {r}"
        );
        assert_eq!(r["bad"].as_u64(), Some(0), "{run}: bad replies: {r}");
        assert!(r["mpps"].as_f64().unwrap() > 0.0);
        if run.starts_with("naam") {
            let stats = r["server_stats"].as_str().unwrap();
            assert!(
                stats.contains("forwarded=0"),
                "{run}: GETs left the NIC: {stats}"
            );
            assert!(!stats.contains("nic_executed=0 "), "{run}: {stats}");
        }
        if run == "naam-memif" && runs.contains("testpmd") {
            assert!(r["ratio"].as_f64().unwrap() > 0.0);
        }
    }
    assert!(Path::new(&out.join("memif.csv")).exists());
    // No DPDK runtime folder or memif socket made during this run is left behind.
    for dir in ["/var/run/dpdk", "/tmp"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let new = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= wall_start);
            assert!(
                !(name.starts_with("naam-mb-") && new),
                "left behind: {dir}/{name}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}
