//! Steering (DESIGN §5): a table of `match → target` entries with counters, as an eSwitch
//! holds it. A message's steering class is carried in its UDP destination port
//! (`base + class`), so hardware can match it without parsing the message.
//!
//! Backends implement [`Steering`]: [`soft::SoftSwitch`] (the default, in the dataplane's
//! receive path) and, with feature `dpdk`, `rte_flow` rules on the eSwitch. Changes are staged
//! with insert / update / remove and take effect together at `commit`.

#[cfg(feature = "dpdk")]
pub mod rte_flow;
pub mod soft;

pub use soft::SoftSwitch;

/// Where matching messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A NIC worker's receive queue.
    NicQueue(u16),
    /// Forwarded to the host (over the link here; the host PF representor on BlueField).
    Host,
    Drop,
}

impl Target {
    /// Compact encoding for atomic storage: 0 = drop, 1 = host, 2 + q = NIC queue q.
    pub(crate) fn encode(self) -> u32 {
        match self {
            Target::Drop => 0,
            Target::Host => 1,
            Target::NicQueue(q) => 2 + q as u32,
        }
    }

    pub(crate) fn decode(v: u32) -> Self {
        match v {
            0 => Target::Drop,
            1 => Target::Host,
            q => Target::NicQueue((q - 2) as u16),
        }
    }
}

/// What an entry matches: UDP destination ports `port & mask == value & mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Match {
    pub dst_port: u16,
    pub mask: u16,
}

impl Match {
    /// Exactly one UDP destination port.
    pub fn port(dst_port: u16) -> Self {
        Self {
            dst_port,
            mask: u16::MAX,
        }
    }

    /// The port of steering class `class` above `base`.
    pub fn class(base: u16, class: u16) -> Self {
        Self::port(base.wrapping_add(class))
    }

    pub fn matches(&self, port: u16) -> bool {
        port & self.mask == self.dst_port & self.mask
    }
}

/// An entry's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u32);

/// Per-entry counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleCounters {
    pub packets: u64,
    pub bytes: u64,
}

/// What a backend can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub backend: &'static str,
    /// Rules are executed by the NIC's switch, not by dataplane cores.
    pub hardware: bool,
    pub max_rules: usize,
    pub counters: bool,
    /// Why the backend is not usable here, when it is not (the caller falls back).
    pub unavailable: Option<String>,
}

/// Why a steering change was refused.
#[derive(Debug, thiserror::Error)]
pub enum SteeringError {
    #[error("no rule {0:?}")]
    NoRule(RuleId),
    #[error("table full ({max} rules)")]
    Full { max: usize },
    #[error("rule matching port {port:#06x}/{mask:#06x} overlaps rule {existing:?}")]
    Overlap {
        port: u16,
        mask: u16,
        existing: RuleId,
    },
    #[error("{backend} cannot steer here: {reason}")]
    Unsupported {
        backend: &'static str,
        reason: String,
    },
    #[error("{backend}: {op} failed")]
    Backend {
        backend: &'static str,
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A steering table.
pub trait Steering {
    fn capabilities(&self) -> Capabilities;
    /// Stages a new entry; it takes effect at [`Steering::commit`].
    fn insert(&mut self, m: Match, target: Target) -> Result<RuleId, SteeringError>;
    /// Stages a new target for an entry.
    fn update(&mut self, id: RuleId, target: Target) -> Result<(), SteeringError>;
    /// Stages the removal of an entry.
    fn remove(&mut self, id: RuleId) -> Result<(), SteeringError>;
    /// Applies every staged change at once.
    fn commit(&mut self) -> Result<(), SteeringError>;
    /// An entry's counters (committed entries only).
    fn counters(&self, id: RuleId) -> Option<RuleCounters>;
}
