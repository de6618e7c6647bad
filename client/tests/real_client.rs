//! The client against real processes (issue 8), with faults:
//! packet loss injected in the dataplane's UDP port (`--drop-rx-every`, `--drop-tx-every`)
//! with retransmission under the same request id and server-side de-duplication, the host
//! agent's own data read at the server and at the client, and the `naam` CLI on the host
//! agent's B-tree. (The other suites run against deployments too, see `common`.)

mod real;

use naam_client::bundled::region;
use naam_client::{BTree, Client, ClientConfig, ExecMode, Mica};
use naam_handlers::mica::layout::{item_size, LOG_TAIL};
use real::{deploy, patient};
use std::process::Command;
use std::time::Duration;

/// Short timeouts (loss is the point) and enough retries that every request gets through.
fn lossy(mode: ExecMode) -> ClientConfig {
    ClientConfig {
        timeout: Duration::from_millis(30),
        max_retries: 8,
        max_backoff: Duration::from_millis(300),
        exec_mode: mode,
        ..ClientConfig::default()
    }
}

fn log_tail(c: &mut Client) -> u64 {
    let w = c.read(0, region::MICA_LOG, LOG_TAIL, 8).unwrap();
    u64::from_le_bytes(w.try_into().unwrap())
}

#[test]
fn lost_requests_are_retransmitted_and_every_call_completes() {
    let d = deploy(|c| c.dataplane_args = vec!["--drop-rx-every".into(), "4".into()]);
    let mut m = Mica::new(d.client(lossy(ExecMode::Server)).unwrap()).unwrap();
    for i in 0..40u32 {
        m.put(format!("k{i}").as_bytes(), &i.to_le_bytes()).unwrap();
    }
    for i in 0..40u32 {
        assert_eq!(
            m.get(format!("k{i}").as_bytes()).unwrap(),
            Some(i.to_le_bytes().to_vec())
        );
    }
    let client_retx = m.inner().stats().retransmits;
    let s = d.stats().unwrap();
    let dropped = s.get("total.port_drop.injected_rx").copied().unwrap_or(0);
    println!(
        "client retransmits {client_retx}, dataplane dropped {dropped}, stats {:?}",
        s.get("total.retransmits")
    );
    assert!(
        dropped >= 20,
        "every 4th datagram in was dropped: {dropped}"
    );
    assert!(client_retx >= dropped.min(20), "{client_retx} < {dropped}");
    assert!(
        s["total.retransmits"] >= 10,
        "the server saw the RETRANSMIT flag on the copies: {s:?}"
    );
}

#[test]
fn lost_replies_are_replayed_so_puts_and_faa_apply_once() {
    let d = deploy(|c| c.dataplane_args = vec!["--drop-tx-every".into(), "3".into()]);
    let mut m = Mica::new(d.client(lossy(ExecMode::Server)).unwrap()).unwrap();

    // MICA PUTs: each appends one item to the log, however often its reply was lost.
    let c = m.inner_mut();
    c.describe(0, "mica").unwrap();
    let before = log_tail(c);
    let puts = 30u64;
    for i in 0..puts {
        m.put(format!("once{i}").as_bytes(), b"12345678").unwrap();
    }
    let appended = log_tail(m.inner_mut()) - before;
    assert_eq!(
        appended,
        puts * item_size(8) as u64,
        "one item per PUT: no retransmitted PUT ran twice"
    );
    for i in 0..puts {
        assert_eq!(
            m.get(format!("once{i}").as_bytes()).unwrap().as_deref(),
            Some(&b"12345678"[..])
        );
    }

    // One-sided FAA: the counter moves by exactly the number of calls.
    let c = m.inner_mut();
    c.describe(0, "record").unwrap();
    let w0 = u64::from_le_bytes(
        c.read(0, region::RECORD, 512, 8)
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let mut prev = w0;
    for _ in 0..30 {
        let p = c.faa(0, region::RECORD, 512, 1).unwrap();
        assert_eq!(p, prev, "each FAA sees the one before it, once");
        prev = p.wrapping_add(1);
    }
    let w1 = u64::from_le_bytes(
        c.read(0, region::RECORD, 512, 8)
            .unwrap()
            .try_into()
            .unwrap(),
    );
    assert_eq!(w1, w0.wrapping_add(30));

    let retx = m.inner().stats().retransmits;
    let s = d.stats().unwrap();
    println!(
        "client retransmits {retx}, dropped replies {}, replayed {}",
        s["total.port_drop.injected_tx"], s["total.dup_replayed"]
    );
    assert!(s["total.port_drop.injected_tx"] >= 20, "{s:?}");
    assert!(retx >= 10, "lost replies were retransmitted: {retx}");
    assert!(
        s["total.dup_replayed"] >= 10,
        "the retransmissions (same request ids) hit the reply cache: {s:?}"
    );
}

#[test]
fn the_host_agents_data_reads_the_same_at_the_server_and_at_the_client() {
    let d = deploy(|_| {});
    let mut server = Mica::new(d.client(patient(ExecMode::Server)).unwrap()).unwrap();
    let mut local = Mica::new(d.client(patient(ExecMode::Local)).unwrap()).unwrap();
    let p = server.inner_mut().describe(0, "mica").unwrap();
    let get = |n: &str| p.iter().find(|(k, _)| k == n).map(|&(_, v)| v).unwrap();
    let (keys, seed, vsize) = (get("keys"), get("seed"), get("value_size") as usize);
    assert!(keys >= 1000);
    for i in (0..keys).step_by(37) {
        let k = naam_handlers::mica::key_for(seed, i);
        let mut want = vec![0u8; vsize];
        naam_handlers::mica::value_for(seed, i, &mut want);
        assert_eq!(
            server.get(&k).unwrap(),
            Some(want.clone()),
            "key {i} at the server"
        );
        assert_eq!(local.get(&k).unwrap(), Some(want), "key {i} at the client");
    }
    // Writes from either side are seen by the other.
    local.put(b"from-client", b"one-sided").unwrap();
    assert_eq!(
        server.get(b"from-client").unwrap().as_deref(),
        Some(&b"one-sided"[..])
    );
    server.put(b"from-server", b"message").unwrap();
    assert_eq!(
        local.get(b"from-server").unwrap().as_deref(),
        Some(&b"message"[..])
    );

    let mut st = BTree::new(d.client(patient(ExecMode::Server)).unwrap()).unwrap();
    let mut lt = BTree::new(d.client(patient(ExecMode::Local)).unwrap()).unwrap();
    let bseed = st
        .inner_mut()
        .describe(0, "btree")
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "seed")
        .map(|(_, v)| v)
        .unwrap();
    for k in [1u64, 3, 99, 1001, 2047] {
        let want = Some(naam_core::helpers::hash64(bseed, k));
        assert_eq!(st.lookup(k).unwrap(), want, "key {k}");
        assert_eq!(lt.lookup(k).unwrap(), want, "key {k} locally");
        assert_eq!(st.lookup(k + 1).unwrap(), None, "even keys are absent");
        assert_eq!(lt.lookup(k + 1).unwrap(), None);
    }
    assert_eq!(st.scan(10, 5).unwrap(), lt.scan(10, 5).unwrap());
}

fn naam(d: &naam_deploy::Deployment, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_naam"))
        .arg("--server")
        .arg(d.data_addr().to_string())
        .arg("--control")
        .arg(d.control_addr().to_string())
        .env("NAAM_KEY_FILE", d.admin_key_file())
        .args(args)
        .output()
        .expect("naam runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_btree_lookup_and_scan_on_the_host_agents_tree() {
    let d = deploy(|_| {});
    let seed = d.describe("btree").unwrap()["seed"];
    let h = |k: u64| naam_core::helpers::hash64(seed, k);
    for local in [false, true] {
        let pre: &[&str] = if local { &["--local"] } else { &[] };
        let run = |args: &[&str]| naam(&d, &[pre, args].concat());
        let (ok, out, err) = run(&["btree", "lookup", "7"]);
        assert!(ok, "{err}");
        assert_eq!(out, format!("{}\n", h(7)));
        let (ok, out, err) = run(&["btree", "lookup", "8"]);
        assert!(!ok && out.is_empty());
        assert!(
            err.starts_with("naam: ") && err.contains("key not found: 8"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
        let (ok, out, err) = run(&["btree", "scan", "4", "3"]);
        assert!(ok, "{err}");
        assert_eq!(out, format!("5 {}\n7 {}\n9 {}\n", h(5), h(7), h(9)));
    }
    let (ok, out, _) = naam(&d, &["stats"]);
    assert!(ok);
    assert!(out.lines().any(|l| l.starts_with("dp.host_up 1")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("total.nic_executed ")),
        "{out}"
    );
}

#[test]
fn cli_json_output_against_a_real_deployment() {
    // Every verb prints one JSON document with --json.
    let d = deploy(|_| {});
    let json = |args: &[&str]| -> serde_json::Value {
        let (ok, out, err) = naam(&d, &[&["--json"], args].concat());
        assert!(ok, "{args:?}: {err}");
        assert_eq!(out.lines().count(), 1, "one document: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    assert_eq!(json(&["put", "k1", "v1"])["stored"], true);
    assert_eq!(json(&["get", "k1"])["value"], "v1");
    let stats = json(&["stats"]);
    assert!(stats["dp.workers"].as_u64().unwrap() >= 1, "{stats}");
    let ls = json(&["offload", "ls"]);
    let names: Vec<&str> = ls["offloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"mica_get"), "{ls}");
    let scan = json(&["btree", "scan", "1", "3"]);
    assert_eq!(scan["pairs"].as_array().unwrap().len(), 3, "{scan}");
    assert_eq!(json(&["delete", "k1"])["deleted"], true);
}

/// A port that drops everything it receives still counts it: the port's counters were
/// published only after a poll that got a packet through, so `--drop-rx-every 1` (or a flood
/// of frames all dropped at the port) showed nothing (probe 10).
#[test]
fn a_port_that_drops_every_datagram_still_counts_them() {
    let d = deploy(|c| c.dataplane_args = vec!["--drop-rx-every".into(), "1".into()]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..50u8 {
        sock.send_to(&[i; 64], d.data_addr()).unwrap();
    }
    let counted = real::wait_for(Duration::from_secs(5), || {
        let s = d.stats().unwrap();
        let n = s.get("total.port_drop.injected_rx").copied().unwrap_or(0);
        (n >= 50).then_some(n)
    });
    assert_eq!(counted, Some(50));
    assert_eq!(d.stats().unwrap()["total.rx"], 0);
}
