//! Where the tests get a server. Today: an in-process fake (`naam_client::fake`). To run the
//! same tests against a real deployment (host agent + dataplane started separately), set
//! `NAAM_TEST_SERVER=IP:BASE` (and `NAAM_TEST_SERVER2` for the sharding tests); tests that
//! need the fake's fault injection then skip with a printed reason. With
//! `NAAM_TEST_DEPLOY=1`, every test starts its own real deployment instead (a host agent and
//! a dataplane process, `naam_deploy`), stopped when the test ends; the
//! `against_deployment` test target does that for all the suites. The switch lives in
//! [`start_server`] only.

#![allow(dead_code)]

use naam_client::fake::FakeServer;
use naam_client::ClientConfig;
use naam_core::auth::{Credential, Keyring, Principal};
use naam_deploy::{Binaries, DeployConfig, Deployment};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Steering classes of the fake (the bundled offloads use classes 0..=5).
pub const CLASSES: u16 = 8;

pub struct TestServer {
    pub data: SocketAddr,
    pub control: SocketAddr,
    /// The admin key file control requests are sealed with (`None` for the fake, which
    /// takes them unsealed).
    pub key_file: Option<PathBuf>,
    fake: Option<FakeServer>,
    deployment: Option<Deployment>,
}

impl TestServer {
    /// The fake, for fault injection and inspection; `None` against a real deployment.
    pub fn fake(&self) -> Option<&FakeServer> {
        self.fake.as_ref()
    }

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

/// The key file every deployment of this test process shares, as an operator provisions one
/// admin key for a cluster (so one client reaches both servers of the sharding tests).
fn cluster_keys() -> PathBuf {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("naam-test-keys-{}", std::process::id()));
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
        std::fs::write(&p, keys.to_text()).unwrap();
        p
    })
    .clone()
}

fn from_env(var: &str) -> Option<TestServer> {
    let data: SocketAddr = std::env::var(var).ok()?.parse().ok()?;
    let mut control = data;
    control.set_port(data.port() - 1);
    Some(TestServer {
        data,
        control,
        key_file: std::env::var_os(naam_client::keys::KEY_FILE_ENV).map(PathBuf::from),
        fake: None,
        deployment: None,
    })
}

/// Whether tests start their own deployments: `NAAM_TEST_DEPLOY` set, or these suites
/// compiled into the `against_deployment` target.
fn deploy_per_test() -> bool {
    std::env::var_os("NAAM_TEST_DEPLOY").is_some_and(|v| v != "0")
        || module_path!().starts_with("against_deployment::")
}

fn deployed() -> TestServer {
    let bins = Binaries::locate_or_build().expect("the host agent and dataplane programs");
    let cfg = DeployConfig {
        mica_keys: 1024,
        btree_keys: 1024,
        // The fake's steering classes; the bundled offloads use 0..=5.
        dataplane_args: vec!["--classes".into(), CLASSES.to_string()],
        credentials: Some(cluster_keys()),
        ..DeployConfig::default()
    };
    let d = Deployment::start(bins, cfg).expect("deployment starts");
    TestServer {
        data: d.data_addr(),
        control: d.control_addr(),
        key_file: Some(d.admin_key_file()),
        fake: None,
        deployment: Some(d),
    }
}

/// Server number `n` (0 or 1) for a test.
pub fn start_server_n(n: usize) -> TestServer {
    let var = if n == 0 {
        "NAAM_TEST_SERVER"
    } else {
        "NAAM_TEST_SERVER2"
    };
    if let Some(s) = from_env(var) {
        return s;
    }
    if deploy_per_test() {
        return deployed();
    }
    let fake = naam_client::fake::FakeServer::start_apps(CLASSES).expect("fake server starts");
    TestServer {
        data: fake.data,
        control: fake.control,
        key_file: None,
        fake: Some(fake),
        deployment: None,
    }
}

pub fn start_server() -> TestServer {
    start_server_n(0)
}

/// The fake of `s`, or prints why the test is skipped.
pub fn fake_or_skip<'a>(s: &'a TestServer, test: &str) -> Option<&'a FakeServer> {
    let f = s.fake();
    if f.is_none() {
        println!("skipped: {test} needs the fake server's fault injection");
    }
    f
}
