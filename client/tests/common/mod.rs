//! Where the tests get a server: the code that ships. Every test starts its own local
//! deployment (a host agent and a dataplane process, `naam_deploy`), stopped when the test
//! ends. To run the same tests against a deployment started separately, set
//! `NAAM_TEST_SERVER=IP:BASE` (and `NAAM_TEST_SERVER2` for the sharding tests) and
//! `NAAM_KEY_FILE`. The switch lives in [`start_server`] only.

#![allow(dead_code)]

use naam_client::ClientConfig;
use naam_core::auth::{Credential, Keyring, Principal};
use naam_deploy::{Binaries, DeployConfig, Deployment};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Steering classes of the test deployments (the bundled offloads use classes 0..=5).
pub const CLASSES: u16 = 8;

pub struct TestServer {
    pub data: SocketAddr,
    pub control: SocketAddr,
    /// The admin key file control requests are sealed with.
    pub key_file: Option<PathBuf>,
    deployment: Option<Deployment>,
    /// The key file the deployment's processes read when they (re)start.
    _keys: Option<tempfile::NamedTempFile>,
}

impl TestServer {
    /// The deployment this test started, if it started one.
    pub fn deployment(&self) -> Option<&Deployment> {
        self.deployment.as_ref()
    }

    /// `cfg` with this server's admin credential.
    pub fn sealed(&self, mut cfg: ClientConfig) -> ClientConfig {
        if let Some(k) = &self.key_file {
            cfg.credential = Some(naam_client::keys::load(k).expect("the admin key file"));
        }
        cfg
    }

    /// `--key-file FILE` for the `naam` CLI, when this server needs one.
    pub fn key_args(&self) -> Vec<String> {
        self.key_file
            .iter()
            .flat_map(|k| ["--key-file".to_owned(), k.display().to_string()])
            .collect()
    }
}

/// The keys every deployment of this test process shares, as an operator provisions one
/// admin key for a cluster (so one client reaches both servers of the sharding tests), in a
/// private file of the deployment's own (0600), removed with it.
fn cluster_keys() -> tempfile::NamedTempFile {
    let secret = |b: u8| {
        let mut s = [b; 32];
        s[..8].copy_from_slice(&(std::process::id() as u64).to_le_bytes());
        s
    };
    let keys = Keyring::new(vec![
        Credential::new(0, Principal::Admin, secret(0xad)),
        Credential::new(1, Principal::Tenant(1), secret(0x01)),
    ])
    .unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), keys.to_text()).unwrap();
    file
}

fn from_env(var: &str) -> Option<TestServer> {
    let data: SocketAddr = std::env::var(var).ok()?.parse().ok()?;
    let mut control = data;
    control.set_port(data.port() - 1);
    Some(TestServer {
        data,
        control,
        key_file: std::env::var_os(naam_client::keys::KEY_FILE_ENV).map(PathBuf::from),
        deployment: None,
        _keys: None,
    })
}

fn deployed() -> TestServer {
    let keys = cluster_keys();
    let bins = Binaries::locate_or_build().expect("the host agent and dataplane programs");
    let cfg = DeployConfig {
        mica_keys: 1024,
        btree_keys: 1024,
        // Classes for run-time offloads besides the bundled ones (0..=5).
        dataplane_args: vec!["--classes".into(), CLASSES.to_string()],
        credentials: Some(keys.path().to_owned()),
        ..DeployConfig::default()
    };
    let d = Deployment::start(bins, cfg).expect("deployment starts");
    TestServer {
        data: d.data_addr(),
        control: d.control_addr(),
        key_file: Some(d.admin_key_file()),
        deployment: Some(d),
        _keys: Some(keys),
    }
}

/// Server number `n` (0 or 1) for a test.
pub fn start_server_n(n: usize) -> TestServer {
    let var = if n == 0 {
        "NAAM_TEST_SERVER"
    } else {
        "NAAM_TEST_SERVER2"
    };
    from_env(var).unwrap_or_else(deployed)
}

pub fn start_server() -> TestServer {
    start_server_n(0)
}

/// A stand-in server on a loopback UDP socket that answers each datagram with what `answer`
/// makes of it (`None`: no answer), until dropped: for clients facing a broken or hostile
/// server.
pub struct ScriptedServer {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn scripted_server(
    mut answer: impl FnMut(&[u8]) -> Option<Vec<u8>> + Send + 'static,
) -> ScriptedServer {
    use std::sync::atomic::{AtomicBool, Ordering};
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(20)))
        .unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = vec![0u8; 70_000];
        while !s.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if let Some(reply) = answer(&buf[..n]) {
                let _ = sock.send_to(&reply, from);
            }
        }
    });
    ScriptedServer {
        addr,
        stop,
        thread: Some(thread),
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The datagram of the reply to `request` with `body`.
pub fn reply_to(
    request: &naam_core::wire::Message<'_>,
    body: naam_core::wire::Body<'_>,
) -> Vec<u8> {
    let m = request.reply(body);
    let mut out = vec![0u8; m.buffer_len()];
    m.emit(&mut out).unwrap();
    out
}
