//! Where the tests get a server. Today: an in-process fake (`naam_client::fake`). To run the
//! same tests against a real deployment (host agent + dataplane started separately), set
//! `NAAM_TEST_SERVER=IP:BASE` (and `NAAM_TEST_SERVER2` for the sharding tests); tests that
//! need the fake's fault injection then skip with a printed reason. The switch lives in
//! [`start_server`] only.

#![allow(dead_code)]

use naam_client::fake::FakeServer;
use std::net::SocketAddr;

/// Steering classes of the fake (the bundled offloads use classes 0..=5).
pub const CLASSES: u16 = 8;

pub struct TestServer {
    pub data: SocketAddr,
    pub control: SocketAddr,
    fake: Option<FakeServer>,
}

impl TestServer {
    /// The fake, for fault injection and inspection; `None` against a real deployment.
    pub fn fake(&self) -> Option<&FakeServer> {
        self.fake.as_ref()
    }
}

fn from_env(var: &str) -> Option<TestServer> {
    let data: SocketAddr = std::env::var(var).ok()?.parse().ok()?;
    let mut control = data;
    control.set_port(data.port() - 1);
    Some(TestServer {
        data,
        control,
        fake: None,
    })
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
    let fake = naam_client::fake::FakeServer::start_apps(CLASSES).expect("fake server starts");
    TestServer {
        data: fake.data,
        control: fake.control,
        fake: Some(fake),
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
