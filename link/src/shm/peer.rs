//! The dataplane's view of the host's liveness: the socket and the heartbeat.

use super::area::Area;
use crate::error::{GoneReason, LinkError};
use crate::layout::hdr;
use crate::sys;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Liveness of the host as seen by the dataplane.
pub(super) struct PeerWatch {
    pub(super) sock: UnixStream,
    pub(super) area: Arc<Area>,
    pub(super) stale_ns: u64,
    /// 0 alive; otherwise an encoded [`GoneReason`].
    pub(super) gone: AtomicU64,
    pub(super) last_poll_ns: AtomicU64,
}

pub(super) const POLL_EVERY_NS: u64 = 1_000_000;

impl PeerWatch {
    pub(super) fn encode(r: GoneReason) -> u64 {
        match r {
            GoneReason::SocketClosed => 1,
            GoneReason::Transport => 2,
        }
    }

    pub(super) fn decode(v: u64) -> GoneReason {
        match v {
            1 => GoneReason::SocketClosed,
            _ => GoneReason::Transport,
        }
    }

    /// The cheap check: has anyone seen the peer gone?
    pub(super) fn gone(&self) -> Option<GoneReason> {
        match self.gone.load(Ordering::Acquire) {
            0 => None,
            v => Some(Self::decode(v)),
        }
    }

    /// Gone (sticky: the socket closed) or suspect (not sticky: the heartbeat is late now).
    pub(super) fn check(&self, now_ns: u64) -> Result<(), LinkError> {
        if let Some(reason) = self.gone() {
            return Err(LinkError::PeerGone { reason });
        }
        let last = self.last_poll_ns.load(Ordering::Relaxed);
        if now_ns.wrapping_sub(last) >= POLL_EVERY_NS {
            self.last_poll_ns.store(now_ns, Ordering::Relaxed);
            if sys::peer_hung_up(self.sock.as_fd()) {
                let reason = GoneReason::SocketClosed;
                if self
                    .gone
                    .compare_exchange(0, Self::encode(reason), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    tracing::warn!(%reason, "host agent gone");
                }
                return Err(LinkError::PeerGone {
                    reason: self.gone().unwrap_or(reason),
                });
            }
        }
        let age = now_ns.saturating_sub(self.area.get(hdr::HEARTBEAT_NS));
        if self.stale_ns > 0 && age > self.stale_ns {
            return Err(LinkError::PeerSuspect {
                age_ms: age / 1_000_000,
            });
        }
        Ok(())
    }
}
