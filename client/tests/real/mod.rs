//! Shared pieces of the tests with real processes (host agent + dataplane started by
//! `naam_deploy`): starting a small deployment, clients with test settings, and
//! waiting for a condition with a deadline instead of sleeping a fixed time.

#![allow(dead_code)]

use naam_client::{ClientConfig, ExecMode};
use naam_deploy::{Binaries, DeployConfig, Deployment};
use std::time::{Duration, Instant};

/// A deployment with small applications (fast to build) and the given changes.
pub fn deploy(change: impl FnOnce(&mut DeployConfig)) -> Deployment {
    try_deploy(change).expect("deployment starts")
}

/// [`deploy`], or why it did not start.
pub fn try_deploy(
    change: impl FnOnce(&mut DeployConfig),
) -> Result<Deployment, naam_deploy::DeployError> {
    let bins = Binaries::locate_or_build().expect("the host agent and dataplane programs");
    let mut cfg = DeployConfig {
        mica_keys: 1024,
        btree_keys: 1024,
        ..DeployConfig::default()
    };
    change(&mut cfg);
    Deployment::start(bins, cfg)
}

/// A client that sends every message to the server and retries lost ones generously: a
/// loaded machine must not turn into test failures.
pub fn patient(mode: ExecMode) -> ClientConfig {
    ClientConfig {
        timeout: Duration::from_millis(200),
        max_retries: 6,
        exec_mode: mode,
        ..ClientConfig::default()
    }
}

/// A client that reports every error at once (no retransmission, no retry of `busy` or
/// `host_unavailable`): for tests that look at the first answer.
pub fn no_retry(timeout: Duration) -> ClientConfig {
    ClientConfig {
        timeout,
        max_retries: 0,
        exec_mode: ExecMode::Server,
        ..ClientConfig::default()
    }
}

/// Polls `f` every millisecond until it returns `Some`, or `None` after `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One counter of the dataplane (0 when absent: counters like `drop.*` appear when non-zero).
pub fn stat(d: &Deployment, name: &str) -> u64 {
    d.stats().expect("stats").get(name).copied().unwrap_or(0)
}
