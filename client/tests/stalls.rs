//! A stalled host agent is suspect, not gone (issue 14, DESIGN §10): `kill -STOP` the host
//! agent of a real deployment, check that every class keeps being served (on the NIC, over
//! the still mapped host memory) and that `naam stats` answers throughout, then `kill -CONT`
//! and check that the host is back, on the same link, within 100 ms.

mod real;

use naam_client::{BTree, ExecMode, Mica};
use naam_core::wire::Location;
use real::{deploy, patient, stat, wait_for};
use std::process::Command;
use std::time::{Duration, Instant};

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Resumes the host agent even when an assertion fails while it is stopped.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// One message of every bundled MICA and B-tree class; where the GET ran.
fn every_class(m: &mut Mica, t: &mut BTree, round: u32) -> Location {
    let key = format!("stall-{round}").into_bytes();
    m.put(&key, b"value").expect("PUT");
    let args = naam_handlers::mica::MicaArgs::get(m.geometry(0).unwrap(), &key).unwrap();
    let get = naam_client::bundled::MICA_GET;
    let r = m
        .inner_mut()
        .call_on(0, get.id, get.class, args.as_bytes(), ExecMode::Server)
        .expect("GET");
    assert!(m.delete(&key).expect("DELETE"), "the key was there");
    assert!(
        t.lookup(1).expect("LOOKUP").is_some(),
        "key 1 is in the tree"
    );
    assert_eq!(t.lookup(2).expect("LOOKUP"), None, "even keys are absent");
    r.executed_at
}

/// While the host agent is stopped, new clients start: a library client and the `naam` CLI
/// (with the admin's key and with tenant 1's) describe MICA first, which the dataplane
/// answers from the host agent's last answers (every principal's are asked for at connect),
/// and then read a key.
fn new_clients_start(d: &naam_deploy::Deployment) {
    let mut m = Mica::new(d.client(patient(ExecMode::Server)).unwrap())
        .expect("a new client starts while the host agent is stopped");
    m.put(b"during-stall", b"kept").expect("PUT");
    assert_eq!(m.get(b"during-stall").expect("GET"), Some(b"kept".to_vec()));
    // The admin's key and tenant 1's (whose applications they are): each gets the answer
    // the host agent gave that principal at connect.
    for key in [d.admin_key_file(), d.tenant_key_file(1)] {
        let cli = Command::new(env!("CARGO_BIN_EXE_naam"))
            .args(["--server", &d.data_addr().to_string(), "--key-file"])
            .arg(&key)
            .args(["--timeout-ms", "100", "get", "during-stall"])
            .output()
            .expect("naam runs");
        assert!(cli.status.success(), "naam get while stopped: {cli:?}");
        assert_eq!(String::from_utf8_lossy(&cli.stdout).trim(), "kept");
    }
    let cached = stat(d, "ctl.describe_cached");
    assert!(cached >= 3, "answered from the kept descriptions: {cached}");
}

fn stall(stop_for: Duration) {
    // Classes at home on the host: the case a stall used to break for good.
    let mut d = deploy(|c| c.home = "host".into());
    let mut m = Mica::new(d.client(patient(ExecMode::Server)).unwrap()).unwrap();
    let mut t = BTree::new(d.client(patient(ExecMode::Server)).unwrap()).unwrap();
    assert_eq!(every_class(&mut m, &mut t, 0), Location::Host);
    let generation = stat(&d, "dp.link_generation");
    let pid = d.host_pid().expect("host agent running");

    // The stall ends on its own clock, as a descheduled or stopped process's does; messages
    // already forwarded to the host agent wait for it, the rest run on the NIC meanwhile.
    signal(pid, "-STOP");
    let resume = Resume(pid);
    let stopped = Instant::now();
    let continuing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cont = std::thread::spawn({
        let continuing = continuing.clone();
        move || {
            std::thread::sleep(stop_for);
            continuing.store(true, std::sync::atomic::Ordering::SeqCst);
            signal(pid, "-CONT");
            Instant::now()
        }
    });
    // A message sent in the first `--stale-ms` (100 ms) still goes to the host agent and
    // waits for it (a mutation must: it may already be running there); once the host is
    // suspect, new messages run on the NIC. `naam stats` answers throughout.
    let suspect = wait_for(Duration::from_secs(1), || {
        (stat(&d, "dp.host_suspect") == 1).then(|| stopped.elapsed())
    })
    .expect("the stalled host agent becomes suspect");
    println!("stopped {stop_for:?}: suspect after {suspect:?}");
    if stop_for >= Duration::from_secs(1) {
        new_clients_start(&d);
    }
    let mut rounds = 0;
    while !cont.is_finished() {
        rounds += 1;
        let at = every_class(&mut m, &mut t, rounds);
        if at != Location::Nic {
            // Only once the host agent runs again (a round may straddle the SIGCONT).
            assert!(
                continuing.load(std::sync::atomic::Ordering::SeqCst),
                "ran at {at:?} while the host agent was stopped"
            );
            break;
        }
        assert_eq!(stat(&d, "dp.host_up"), 1, "stalled, not gone");
        std::thread::sleep(Duration::from_millis(10));
    }
    let resumed = cont.join().unwrap();
    drop(resume);
    println!(
        "stopped {stop_for:?}: {rounds} rounds of every class while stopped ({:?})",
        resumed - stopped
    );
    assert!(rounds >= 2, "served while the host agent was stopped");
    every_class(&mut m, &mut t, 1000);
    let served = resumed.elapsed();
    println!("stopped {stop_for:?}: every class served {served:?} after SIGCONT");
    assert!(served < Duration::from_millis(100), "{served:?}");

    // The host is back on the same link: no reconnect, nothing declared gone, and host-placed
    // classes run at the host again once the policy sees its load.
    let back = wait_for(Duration::from_secs(5), || {
        (stat(&d, "dp.host_suspect") == 0).then(|| resumed.elapsed())
    })
    .expect("the heartbeat is back");
    println!("stopped {stop_for:?}: dp.host_suspect = 0 {back:?} after SIGCONT");
    assert_eq!(stat(&d, "dp.host_up"), 1);
    assert_eq!(stat(&d, "dp.link_generation"), generation, "no reconnect");
    let home = wait_for(Duration::from_secs(10), || {
        (every_class(&mut m, &mut t, 2000) == Location::Host).then_some(())
    });
    assert!(home.is_some(), "classes return to the host");
    let s = d.stats().unwrap();
    assert_eq!(
        s.get("total.host_unavailable").copied().unwrap_or(0),
        0,
        "{s:?}"
    );
    assert!(d.running() == (true, true));
}

#[test]
fn host_agent_stopped_for_300_ms_keeps_serving_and_returns() {
    stall(Duration::from_millis(300));
}

#[test]
fn host_agent_stopped_for_3_s_keeps_serving_and_returns() {
    stall(Duration::from_secs(3));
}

/// A control request that reaches the dataplane just after the host agent stopped is
/// forwarded to it and waits for a reply that cannot come: that wait ended with the 2 s
/// socket timeout, holding the dataplane's control thread (which also notices the stall), so
/// `naam` commands took 2 s each and, with a few of them, the stall was never noticed. It
/// ends once the heartbeat is late now.
#[test]
fn a_command_right_after_a_host_stall_does_not_hold_the_control_plane() {
    let d = deploy(|c| c.home = "host".into());
    let mut m = Mica::new(d.client(patient(ExecMode::Server)).unwrap()).unwrap();
    m.put(b"k", b"v").expect("PUT");
    let pid = d.host_pid().expect("host agent running");
    signal(pid, "-STOP");
    let _resume = Resume(pid);
    let stopped = Instant::now();
    let get = |d: &naam_deploy::Deployment| {
        Command::new(env!("CARGO_BIN_EXE_naam"))
            .args(["--server", &d.data_addr().to_string(), "--key-file"])
            .arg(d.admin_key_file())
            .args(["get", "k"])
            .output()
            .expect("naam runs")
    };
    let mut took = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = get(&d);
        took.push(t.elapsed());
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
    }
    println!("naam get right after the stop took {took:?}");
    assert!(
        took.iter().all(|t| *t < Duration::from_millis(1000)),
        "{took:?}"
    );
    let suspect = wait_for(Duration::from_secs(2), || {
        (stat(&d, "dp.host_suspect") == 1).then(|| stopped.elapsed())
    })
    .expect("the stall is noticed");
    assert!(suspect < Duration::from_millis(1500), "{suspect:?}");
}
