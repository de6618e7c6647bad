//! Test support: the host agent as a real process, and the dataplane's side of the link.
#![allow(dead_code)]

use naam_core::wire::{AmFlags, AmRequestRepr, Body, Message};
use naam_host_agent::ControlClient;
use naam_link::{ConnectOptions, Link, ShmLink, ShmQp, MSG_MAX};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TENANT: u32 = 1;
pub const RECORD: u32 = 5;
pub const SEED: u64 = 7;

/// A host agent process in its own run directory; killed when dropped.
pub struct Agent {
    pub child: Option<Child>,
    pub run_dir: PathBuf,
    pub log: PathBuf,
}

/// The flags every test agent gets (small data, no hugetlb, quick start).
pub fn base_args(run_dir: &Path) -> Vec<String> {
    [
        "--run-dir",
        run_dir.to_str().unwrap(),
        "--arena-mb",
        "4",
        "--records",
        "64",
        "--mica-keys",
        "1024",
        "--btree-keys",
        "1024",
        "--seed",
        &SEED.to_string(),
        "--no-hugetlb",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs `naam-host-agent` with the base flags plus `extra`, expects it to refuse to start,
/// and returns what it said on stderr.
pub fn refused_start(run_dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_naam-host-agent"))
        .args(base_args(run_dir))
        .args(extra)
        // A backtrace would be printed by `main` returning the error: it is not.
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started with {extra:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // The parser's refusals exit 2 with its usage; the program's own are one line, last.
    if out.status.code() == Some(1) {
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("naam-host-agent: "), "not one line: {err}");
        assert!(
            !err.contains("Caused by") && !err.contains("backtrace"),
            "{err}"
        );
    }
    err
}

impl Agent {
    /// Starts `naam-host-agent` with the base flags plus `extra`, and waits (bounded) until
    /// its control socket answers.
    pub fn start(dir: &Path, extra: &[&str]) -> Agent {
        Agent::start_changed(dir, &[], extra)
    }

    /// [`Agent::start`] with some base flags given other values (`(flag, value)`).
    pub fn start_changed(dir: &Path, changed: &[(&str, &str)], extra: &[&str]) -> Agent {
        Agent::start_to(dir, changed, extra, Stdio::null())
    }

    /// [`Agent::start_changed`] with its standard output sent to `stdout`.
    pub fn start_to(dir: &Path, changed: &[(&str, &str)], extra: &[&str], stdout: Stdio) -> Agent {
        let run_dir = dir.join("run");
        let log = dir.join(format!("agent-{}.log", std::process::id()));
        let mut args = base_args(&run_dir);
        for (flag, value) in changed {
            let at = args
                .iter()
                .position(|a| a == flag)
                .unwrap_or_else(|| panic!("{flag} is not a base flag"));
            args[at + 1] = value.to_string();
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_naam-host-agent"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(stdout)
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("spawn naam-host-agent");
        let mut a = Agent {
            child: Some(child),
            run_dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = ControlClient::connect(&a.control_path(), Duration::from_secs(2)) {
                if c.describe("host").is_ok() {
                    break;
                }
            }
            if let Some(st) = a.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("host agent exited early ({st}); log:\n{}", a.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "host agent did not come up:\n{}",
                a.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        a
    }

    pub fn control_path(&self) -> PathBuf {
        self.run_dir.join("control.sock")
    }

    pub fn link_path(&self) -> PathBuf {
        self.run_dir.join("link.sock")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn control(&self) -> ControlClient {
        ControlClient::connect(&self.control_path(), Duration::from_secs(5)).expect("control")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Waits (bounded) for the process to exit by itself; returns its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        let c = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "host agent did not exit:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Connects as the dataplane (bounded retries while a previous one is being dropped).
    pub fn dataplane(&self) -> ShmLink {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match ShmLink::connect(&self.link_path(), ConnectOptions::default()) {
                Ok(l) => return l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "link connect: {e}\n{}",
                        self.log_text()
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    pub fn param(&self, app: &str, name: &str) -> u64 {
        let p = self.control().describe(app).expect("describe");
        p.iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("{app} has no {name}: {p:?}"))
            .1
    }

    pub fn counter(&self, name: &str) -> u64 {
        let s = self.control().stats().expect("stats");
        s.iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("no counter {name}: {s:?}"))
            .1
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A ring entry: token + datagram.
pub fn entry(token: u64, m: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MSG_MAX];
    buf[..8].copy_from_slice(&token.to_le_bytes());
    let n = m.emit(&mut buf[8..]).expect("emit");
    buf.truncate(8 + n);
    buf
}

/// An AM request datagram for `offload` (class = `class`).
pub fn am(request_id: u64, offload: u32, class: u16, tenant: u32, args: &[u8]) -> Message<'_> {
    Message::new(
        request_id,
        class,
        Body::AmRequest(AmRequestRepr {
            offload,
            tenant,
            // The host agent takes AMs only from its dataplane, which checked this.
            capability: 0,
            flags: AmFlags::empty(),
            args,
        }),
    )
}

/// `record` arguments: region, offset.
pub fn record_args(region: u32, offset: u64) -> Vec<u8> {
    let mut a = vec![0u8; 16];
    a[..4].copy_from_slice(&region.to_le_bytes());
    a[8..].copy_from_slice(&offset.to_le_bytes());
    a
}

/// Waits (bounded) for the next reply entry on `qp`: (token, datagram). The host worker's
/// time on the message, between the two, is checked to be there and plausible.
pub fn recv_reply(qp: &mut ShmQp, within: Duration) -> Option<(u64, Vec<u8>)> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; MSG_MAX];
    loop {
        match qp.recv(&mut buf) {
            Ok(Some(r)) => {
                let prefix = naam_link::REPLY_PREFIX;
                assert!(r.len >= prefix, "reply entry without a token and a cost");
                let token = u64::from_le_bytes(buf[..8].try_into().unwrap());
                let cost = u64::from_le_bytes(buf[8..prefix].try_into().unwrap());
                assert!(cost < 60_000_000_000, "a host cost of {cost} ns");
                return Some((token, buf[prefix..r.len].to_vec()));
            }
            Ok(None) => {}
            Err(e) => panic!("reply ring: {e}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Sends `e` on `qp` (retrying a full ring, bounded).
pub fn send(qp: &mut ShmQp, e: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match qp.send(e) {
            Ok(()) => return,
            Err(naam_link::LinkError::Full { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(err) => panic!("send: {err}"),
        }
    }
}

/// Sends one request and returns its reply datagram (checking the token).
pub fn call(qp: &mut ShmQp, token: u64, m: &Message<'_>) -> Vec<u8> {
    send(qp, &entry(token, m));
    let (t, d) = recv_reply(qp, Duration::from_secs(3)).expect("a reply within 3 s");
    assert_eq!(t, token, "reply token");
    d
}

/// The expected `record` digest of record `i` as the agent built it with [`SEED`].
pub fn expected_digest(i: u64) -> u64 {
    let words: [u64; 8] =
        std::array::from_fn(|w| naam_host_agent::apps::Records::word(SEED, i, w as u64));
    naam_host_agent::apps::Records::digest(&words)
}

pub fn digest_of(words: &[u64; 8]) -> u64 {
    naam_host_agent::apps::Records::digest(words)
}

/// The MICA geometry the agent describes.
pub fn mica_geometry(agent: &Agent) -> naam_handlers::mica::MicaGeometry {
    let p = agent.control().describe("mica").expect("describe mica");
    let get = |n: &str| p.iter().find(|(k, _)| k == n).expect(n).1;
    naam_handlers::mica::MicaGeometry {
        index_region: get("index_region") as u32,
        log_region: get("log_region") as u32,
        bucket_count: get("buckets"),
        overflow_count: get("overflow"),
        log_size: get("log_size"),
        lossless: false,
    }
}

/// A MICA outcome, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mica {
    Value(Vec<u8>),
    Done,
    NotFound,
}

/// Runs a MICA offload (0 GET, 1 PUT, 2 DELETE) on the host workers.
pub fn mica(qp: &mut ShmQp, token: u64, offload: u32, args: &[u8]) -> Mica {
    let d = call(qp, token, &am(token, offload, offload as u16, TENANT, args));
    let m = Message::parse(&d).expect("reply parses");
    let Body::AmReply(r) = m.body else {
        panic!("expected an AM reply, got {:?}", m.body);
    };
    assert_eq!(r.executed_at, naam_core::wire::Location::Host);
    assert_eq!(r.status, naam_core::wire::AmStatus::Done, "{r:?}");
    match naam_handlers::mica::MicaReply::parse(r.output).expect("MICA reply") {
        naam_handlers::mica::MicaReply::Value(v) => Mica::Value(v.to_vec()),
        naam_handlers::mica::MicaReply::Done => Mica::Done,
        naam_handlers::mica::MicaReply::NotFound => Mica::NotFound,
    }
}

/// GET `key`.
pub fn mica_get(
    qp: &mut ShmQp,
    token: u64,
    g: &naam_handlers::mica::MicaGeometry,
    key: &[u8],
) -> Mica {
    let a = naam_handlers::mica::MicaArgs::get(g, key).unwrap();
    mica(qp, token, 0, a.as_bytes())
}

/// PUT `key` = `value`.
pub fn mica_put(
    qp: &mut ShmQp,
    token: u64,
    g: &naam_handlers::mica::MicaGeometry,
    key: &[u8],
    value: &[u8],
) -> Mica {
    let a = naam_handlers::mica::MicaArgs::put(g, key, value).unwrap();
    mica(qp, token, 1, a.as_bytes())
}

/// The value the agent built for key `i` (value size 64 by default).
pub fn mica_value(i: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    naam_handlers::mica::value_for(SEED, i, &mut v);
    v
}
