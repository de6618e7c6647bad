//! The dataplane runtime: poll-mode workers ([`worker`]), the one-sided op engine
//! ([`onesided`]), de-duplication ([`dedup`]), per-tenant admission ([`fair`]), counters ([`stats`]), the state the workers
//! share with the control side ([`shared`]), the load monitor and placement ([`monitor`]),
//! the control socket ([`control`], forwarding to the host agent through [`hostctl`]), and
//! the process setup that wires them to ports and the link ([`setup`]).
//!
//! Data path (`worker`, `onesided`, `dedup`) and setup (`setup`, `control`, `monitor`) live in
//! separate files; only the setup side allocates.

pub mod control;
pub mod dedup;
pub mod fair;
mod host_watch;
mod hostctl;
pub mod monitor;
pub mod setup;
pub mod shared;
pub mod stats;
pub mod worker;

pub use control::ControlPlane;
pub use dedup::{
    ReplyCache, DEFAULT_ENTRIES as DEDUP_ENTRIES, DEFAULT_RETAIN_NS as DEDUP_RETAIN_NS,
};
pub use hostctl::HostControl;
pub use monitor::{HostLoad, Monitor, MonitorConfig};
pub use naam_link::BackoffMode;
pub use setup::{register_bundled, Runtime, RuntimeConfig, SetupError};
pub use shared::{HintTable, RegionsCell, Shared};
pub use stats::{Dropped, WorkerStats};
pub use worker::{Worker, WorkerConfig};

/// `e` and each of its sources on one line ("bind failed: Address already in use"): where an
/// error becomes a string (a log line, an error reply's detail), the OS's reason is what an
/// operator needs.
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
