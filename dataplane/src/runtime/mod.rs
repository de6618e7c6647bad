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

pub(crate) use naam_core::with_sources;
