//! What an operator looks at, against a real deployment: Prometheus metrics scraped from both
//! processes under load, `naam offload show`, `naam stats --json`.

mod real;

use naam_client::bundled;
use naam_client::{ExecMode, Mica};
use real::{deploy, patient, wait_for};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// One scrape: `GET /metrics`, the status line and the body.
fn scrape(addr: SocketAddr) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("metrics port accepts");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: naam\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").expect("an HTTP reply");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The samples of a text exposition, `name{labels}` → value; panics on a line that is not
/// a comment or a sample, or a sample without a `# TYPE` line for its family before it.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut types: Vec<String> = Vec::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            types.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            types
                .iter()
                .any(|t| name == t || name.strip_suffix("_total") == Some(t)),
            "{name} has no # TYPE line"
        );
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name {name:?}"
        );
        out.insert(series.to_string(), value);
    }
    out
}

fn naam(d: &naam_deploy::Deployment, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_naam"))
        .arg("--server")
        .arg(d.data_addr().to_string())
        .arg("--control")
        .arg(d.control_addr().to_string())
        .arg("--key-file")
        .arg(d.admin_key_file())
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
fn metrics_move_under_load_and_offloads_show_what_ran() {
    // Placement pinned at home (the NIC): this test counts where the GETs ran, and a debug
    // build serving a closed loop on a loaded machine may rightly find the NIC saturated.
    let mut d = deploy(|c| {
        c.metrics = true;
        c.dataplane_args.push("--pin".into());
    });
    let (host_addr, dp_addr) = d.metrics_addrs();
    let (host_addr, dp_addr) = (
        host_addr.expect("host metrics"),
        dp_addr.expect("dp metrics"),
    );
    let get = bundled::MICA_GET;
    let series = format!(
        "naam_dp_offload_runs_total{{offload=\"{}\",location=\"nic\"}}",
        get.id
    );

    let mut m = Mica::new(d.client(patient(ExecMode::Server)).unwrap()).unwrap();
    m.put(b"k", b"v").unwrap();
    let (status, before) = scrape(dp_addr);
    assert!(status.contains(" 200 "), "{status}");
    let before = parse(&before);
    let runs_before = before.get(&series).copied().unwrap_or(0.0);
    for _ in 0..200 {
        assert_eq!(m.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }
    // The dataplane's per-offload counters moved by at least the GETs it ran (home is the
    // NIC), and so did its run time and the port's counters.
    let after = wait_for(Duration::from_secs(5), || {
        let a = parse(&scrape(dp_addr).1);
        (a.get(&series).copied().unwrap_or(0.0) >= runs_before + 200.0).then_some(a)
    })
    .unwrap_or_else(|| {
        let now = parse(&scrape(dp_addr).1);
        let runs: Vec<_> = now
            .iter()
            .filter(|(k, _)| k.contains("offload_runs") || k.contains("decision"))
            .collect();
        panic!("{series} did not grow by 200 from {runs_before}: {runs:?}")
    });
    let ns = format!(
        "naam_dp_offload_run_ns_total{{offload=\"{}\",location=\"nic\"}}",
        get.id
    );
    assert!(
        after.get(&ns).copied().unwrap_or(0.0) > 0.0,
        "{ns} measured"
    );
    assert!(
        after
            .get("naam_dp_worker_rx_total{worker=\"0\"}")
            .copied()
            .unwrap_or(0.0)
            >= 200.0
    );
    assert!(after.keys().any(|k| k.starts_with("naam_dp_offload_info{")
        && k.contains(&format!("offload=\"{}\"", get.id))
        && k.contains("name=\"mica_get\"")));
    assert_eq!(after.get("naam_dp_host_up"), Some(&1.0));
    // Each class in use counts its moves (pinned here: none).
    assert_eq!(
        after.get(&format!(
            "naam_dp_class_moves_total{{class=\"{}\"}}",
            get.class
        )),
        Some(&0.0),
        "{after:?}"
    );
    // What the dataplane relays from the host agent in STATS is the host agent's to export:
    // here it went down when the host agent restarted, and summing both jobs counted it twice.
    assert!(
        !after
            .keys()
            .any(|k| k.contains("location=\"host\"") || k.starts_with("naam_dp_mica_")),
        "{after:?}"
    );

    // The host agent's metrics parse and carry its workers and offloads.
    let (status, host) = scrape(host_addr);
    assert!(status.contains(" 200 "), "{status}");
    let host = parse(&host);
    assert!(host
        .keys()
        .any(|k| k.starts_with("naam_host_worker_messages_total{worker=\"0\"}")));
    assert!(host
        .keys()
        .any(|k| k.starts_with("naam_host_offload_info{")));
    // Anything but /metrics is refused.
    let mut s = TcpStream::connect(dp_addr).unwrap();
    write!(s, "GET /other HTTP/1.0\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(
        r.starts_with("HTTP/1.0 404") || r.starts_with("HTTP/1.1 404"),
        "{r}"
    );

    // A request with a huge body announced and a held-open one with a body never sent: both
    // processes answer 405 at once and live on (one such request used to abort them), and
    // their control planes are not held up meanwhile.
    for addr in [host_addr, dp_addr] {
        let mut held = TcpStream::connect(addr).unwrap();
        write!(
            held,
            "POST /metrics HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n"
        )
        .unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /metrics HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nabc"
        )
        .unwrap();
        let mut r = Vec::new();
        let _ = s.read_to_end(&mut r);
        let r = String::from_utf8_lossy(&r);
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        let started = std::time::Instant::now();
        let (ok, _, err) = naam(&d, &["stats"]);
        assert!(ok, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let (status, _) = scrape(addr);
        assert!(status.contains(" 200 "), "{status}");
    }
    assert_eq!(d.running(), (true, true), "both processes live on");

    // `naam offload show ID --json`: what the metrics say, as one JSON document.
    let (ok, out, err) = naam(&d, &["--json", "offload", "show", &get.id.to_string()]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON document");
    assert_eq!(doc["id"], get.id);
    assert_eq!(doc["name"], "mica_get");
    assert_eq!(doc["placed"], "nic");
    assert!(doc["insns"].as_u64().unwrap() > 0);
    assert!(doc["worst_case"].as_u64().unwrap() > 0);
    assert!(doc["nic"]["runs"].as_u64().unwrap() >= 200, "{doc}");
    assert!(doc["nic"]["mean_ns"].as_u64().unwrap() > 0, "{doc}");
    // Every offload in text; an unknown id is one clear error.
    let (ok, out, err) = naam(&d, &["offload", "show"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("mica_get") && out.contains("btree_lookup"),
        "{out}"
    );
    let (ok, out, err) = naam(&d, &["offload", "show", "4000"]);
    assert!(
        !ok && out.is_empty() && err.contains("no offload with id 4000"),
        "{err}"
    );

    // `naam offload dump ID`: the verified instructions, fetched, checked and disassembled.
    let (ok, out, err) = naam(&d, &["offload", "dump", &get.id.to_string()]);
    assert!(ok, "{err}");
    let mut lines = out.lines();
    let head = lines.next().unwrap();
    assert!(
        head.starts_with(&format!("offload {}: ", get.id)) && head.contains("digest"),
        "{head}"
    );
    let body: Vec<&str> = lines.collect();
    assert!(body.len() > 10, "{out}");
    assert!(
        body.iter().any(|l| l.trim_start().starts_with("0: ")),
        "{out}"
    );
    assert!(body.last().unwrap().ends_with("exit"), "{out}");
    let (ok, out, err) = naam(&d, &["--json", "offload", "dump", &get.id.to_string()]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON document");
    assert_eq!(doc["insns"].as_array().unwrap().len(), body.len());
    assert_eq!(doc["digest"].as_str().unwrap().len(), 16);
    let (ok, _, err) = naam(&d, &["offload", "dump", "4000"]);
    assert!(
        !ok && err.contains("unknown_offload") && err.contains("4000"),
        "{err}"
    );

    // `naam stats --json`: one object of counters.
    let (ok, out, err) = naam(&d, &["--json", "stats"]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON document");
    assert!(doc["total.rx"].as_u64().unwrap() >= 200, "{doc}");
}

#[test]
fn naam_local_call_runs_an_offload_registered_at_run_time() {
    // `naam offload add` a read-only handler, then `naam --local call` it: the CLI's client
    // has no program for it, fetches it, verifies it and runs it here over one-sided ops,
    // with the reply the server gives.
    let d = deploy(|_| {});
    let dir = std::env::temp_dir().join(format!("naam-op-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let object = dir.join("btree.bpf.o");
    std::fs::write(&object, naam_handlers::btree::program::OBJECT).unwrap();
    let lookup = bundled::BTREE_LOOKUP;
    let (ok, out, err) = naam(
        &d,
        &[
            "offload",
            "add",
            object.to_str().unwrap(),
            "--section",
            lookup.section,
            "--class",
            &lookup.class.to_string(),
            "--name",
            "lookup_copy",
            "--read-only",
        ],
    );
    assert!(ok, "{err}");
    let id = out.trim().to_string();
    let p = d.describe("btree").unwrap();
    let args = naam_handlers::btree::Args::lookup(p["region"] as u32, 7)
        .with_root(p.get("root").copied().unwrap_or(0))
        .to_bytes();
    let hex: String = args.iter().map(|b| format!("{b:02x}")).collect();
    let arg = format!("hex:{hex}");
    let class = lookup.class.to_string();
    let call = |local: bool| {
        let mut a = vec!["--json"];
        if local {
            a.push("--local");
        }
        a.extend(["call", &id, "--class", &class, &arg]);
        let (ok, out, err) = naam(&d, &a);
        assert!(ok, "local {local}: {err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    let (here, there) = (call(true), call(false));
    assert_eq!(here["executed_at"], "client", "{here}");
    assert_ne!(there["executed_at"], "client", "{there}");
    assert_eq!(here["output"], there["output"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn offload_show_counts_the_runs_at_the_host_too() {
    let d = deploy(|c| c.home = "host".into());
    let mut m = Mica::new(d.client(patient(ExecMode::Server)).unwrap()).unwrap();
    m.put(b"k", b"v").unwrap();
    for _ in 0..50 {
        assert_eq!(m.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }
    let id = bundled::MICA_GET.id.to_string();
    // The dataplane reads the host agent's counters every 250 ms.
    let doc = wait_for(Duration::from_secs(5), || {
        let (ok, out, _) = naam(&d, &["--json", "offload", "show", &id]);
        let doc: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
        (ok && doc["host"]["runs"].as_u64()? >= 50).then_some(doc)
    })
    .expect("the host's runs of mica_get reach offload show");
    assert_eq!(doc["placed"], "host", "{doc}");
    assert!(doc["host"]["mean_ns"].as_u64().unwrap() > 0, "{doc}");
    assert!(doc["host"]["steps"].as_u64().unwrap() >= 50, "{doc}");
}

#[test]
fn a_data_port_in_use_is_named_when_the_dataplane_cannot_start() {
    let mut d = deploy(|_| {});
    let port = d.data_addr().port();
    d.kill_dataplane();
    // Someone else takes the data port meanwhile.
    let _squatter = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    assert!(
        d.start_dataplane().is_err(),
        "it cannot serve a port in use"
    );
    let log = std::fs::read_to_string(d.run_dir().join("dataplane.log")).unwrap();
    assert!(log.contains(&format!("bind 127.0.0.1:{port}")), "{log}");
    assert!(log.contains("in use"), "{log}");
}
