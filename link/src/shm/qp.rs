//! Queue pairs: one ring pair per host worker, plus a staging buffer and a completion queue
//! for one-sided ops.

use super::{area::Area, peer::PeerWatch};
use crate::cq::CompletionQueue;
use crate::error::LinkError;
use crate::layout::{hdr, Dir};
use crate::ring::{Backoff, Consumer, Producer};
use crate::{
    Completion, CompletionStatus, Direct, Link, LinkCounters, OpKind, Received, RemoteAddr, WrId,
};
use naam_core::abi::{RawOp, DATA_SIZE};
use naam_core::memory::{LocalMemory, OwnedRegion, RegionMem};
use naam_core::region::{CheckedOp, RegionId, RegionTable};
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One queue pair over shared memory. Completions are immediate but still go through the
/// completion queue, so code written against [`Link`] works unchanged over verbs.
pub struct ShmQp {
    area: Arc<Area>,
    qp: u32,
    peer: Option<Arc<PeerWatch>>,
    tx: Producer,
    rx: Consumer,
    /// Backs `local`; lives as long as the queue pair.
    _staging: OwnedRegion,
    local: RegionMem,
    epoch: u64,
    table: RegionTable,
    mem: LocalMemory,
    cq: CompletionQueue,
    counters: LinkCounters,
    /// The last [`hdr::HOLD`] this queue pair held for (the dataplane's side).
    held: u64,
}

/// The longest a dataplane queue pair holds still for the host's snapshot: a host agent
/// stopped with a hold set must not stop its dataplane for good.
const HOLD_MAX_NS: u64 = 1_000_000_000;

impl ShmQp {
    pub(super) fn new(
        area: Arc<Area>,
        qp: u32,
        tx: Dir,
        rx: Dir,
        peer: Option<Arc<PeerWatch>>,
        staging_bytes: usize,
        cq_depth: usize,
    ) -> Result<ShmQp, LinkError> {
        area.take_qp(qp)?;
        let rings = area.ring(qp, tx).and_then(|t| Ok((t, area.ring(qp, rx)?)));
        let (t, r) = match rings {
            Ok(v) => v,
            Err(e) => {
                area.taken[qp as usize].store(false, Ordering::Release);
                return Err(e);
            }
        };
        let staging = OwnedRegion::zeroed(staging_bytes);
        let local = staging.mem();
        let epoch = area.get(hdr::DIR_EPOCH);
        let (table, mem) = area.table_and_memory();
        if peer.is_some() {
            area.hdr.store_u64(hdr::held(qp), hdr::HELD_NONE);
        }
        Ok(ShmQp {
            qp,
            peer,
            tx: Producer::new(t),
            rx: Consumer::new(r),
            _staging: staging,
            local,
            epoch,
            table,
            mem,
            cq: CompletionQueue::new(cq_depth),
            counters: LinkCounters::default(),
            held: 0,
            area,
        })
    }

    /// The dataplane's side of [`hdr::HOLD`]: between two polls (no op of this queue pair
    /// under way), says it holds, then waits until the host lifts the hold, the host is gone,
    /// or [`HOLD_MAX_NS`] passed. Its ops so far were done before the answer is seen
    /// (release), so the host's copy is a cut between two of its polls.
    fn hold_if_asked(&mut self) {
        let n = self.area.get(hdr::HOLD);
        if n == 0 || n == self.held {
            return;
        }
        let Some(peer) = self.peer.as_deref() else {
            return;
        };
        self.held = n;
        self.area.hdr.store_u64(hdr::held(self.qp), n);
        let start = crate::sys::monotonic_ns();
        loop {
            let now = crate::sys::monotonic_ns();
            if self.area.get(hdr::HOLD) != n || peer.check(now).is_err_and(|e| e.is_peer_gone()) {
                break;
            }
            if now.saturating_sub(start) > HOLD_MAX_NS {
                tracing::warn!(
                    qp = self.qp,
                    "the host's snapshot hold outlasted 1 s; going on"
                );
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        self.area.hdr.store_u64(hdr::held(self.qp), hdr::HELD_NONE);
    }

    pub fn index(&self) -> u32 {
        self.qp
    }

    /// The receive ring's doorbell, for a worker that sleeps on several queue pairs at once
    /// (epoll): call [`ShmQp::arm_rx_doorbell`] first, sleep only if it returned true, and
    /// [`ShmQp::disarm_rx_doorbell`] after waking.
    pub fn rx_doorbell(&self) -> BorrowedFd<'_> {
        self.rx.doorbell()
    }

    /// Asks the peer to ring the receive doorbell on its next send; false when something is
    /// already waiting (then do not sleep).
    pub fn arm_rx_doorbell(&mut self) -> bool {
        self.rx.arm()
    }

    pub fn disarm_rx_doorbell(&mut self) {
        self.rx.disarm()
    }

    /// Requests waiting on this queue pair's receive ring (the host worker's queue depth).
    pub fn rx_pending(&mut self) -> u64 {
        self.rx.pending()
    }

    fn peer_ok(&mut self) -> Result<(), LinkError> {
        match self.peer.as_ref().and_then(|p| p.gone()) {
            None => Ok(()),
            Some(reason) => {
                self.counters.peer_gone += 1;
                Err(LinkError::PeerGone { reason })
            }
        }
    }

    fn refresh_directory(&mut self) {
        let epoch = self.area.get(hdr::DIR_EPOCH);
        if epoch != self.epoch {
            self.epoch = epoch;
            (self.table, self.mem) = self.area.table_and_memory();
        }
    }

    fn complete(&mut self, c: Completion) {
        self.cq.push(c);
    }

    /// Checks everything a post needs and returns the checked op, whose region is mapped
    /// (see [`ShmQp::region`]).
    fn prepare(
        &mut self,
        kind: naam_core::abi::OpKind,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
        arg0: u64,
        arg1: u64,
    ) -> Result<CheckedOp, LinkError> {
        self.peer_ok()?;
        if self.cq.is_full() {
            self.counters.cq_full += 1;
            return Err(LinkError::CqFull {
                depth: self.cq.capacity(),
            });
        }
        if matches!(
            kind,
            naam_core::abi::OpKind::Read | naam_core::abi::OpKind::Write
        ) {
            let size = self.local.len() as u64;
            if local_off
                .checked_add(len as u64)
                .is_none_or(|end| end > size)
            {
                self.counters.refused += 1;
                return Err(LinkError::LocalOutOfRange {
                    offset: local_off,
                    len: len as u64,
                    size,
                });
            }
        }
        self.refresh_directory();
        let raw = RawOp {
            kind: kind as u8,
            region: remote.region,
            offset: remote.offset,
            len,
            data_off: 0,
            arg0,
            arg1,
        };
        let checked = self.counters.check_posted(&self.table, remote.key, &raw)?;
        self.region(remote.region)?;
        Ok(checked)
    }

    /// The view of a mapped region.
    fn region(&self, region: RegionId) -> Result<&RegionMem, LinkError> {
        self.mem.get(region).ok_or(LinkError::Unmapped { region })
    }

    fn copy(
        &mut self,
        kind: OpKind,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
    ) -> Result<(), LinkError> {
        let core_kind = if kind == OpKind::Read {
            naam_core::abi::OpKind::Read
        } else {
            naam_core::abi::OpKind::Write
        };
        let op = self.prepare(core_kind, remote, local_off, len, 0, 0)?;
        if kind == OpKind::WriteDoorbell && !self.tx.has_space() {
            self.counters.ring_full += 1;
            return Err(LinkError::Full {
                slots: self.tx.slots(),
            });
        }
        // check_keyed bounds len by DATA_SIZE, so one stack buffer carries any op.
        let mut buf = [0u8; DATA_SIZE];
        let buf = &mut buf[..len as usize];
        let mem = self.region(op.region)?;
        let ok = if kind == OpKind::Read {
            mem.read(op.offset, buf) && self.local.write(local_off, buf)
        } else {
            self.local.read(local_off, buf) && mem.write(op.offset, buf)
        };
        if !ok {
            return Err(LinkError::Unmapped {
                region: remote.region,
            });
        }
        self.counters.posted += 1;
        self.complete(Completion {
            wr_id,
            kind,
            status: CompletionStatus::Success,
            value: 0,
            len,
        });
        Ok(())
    }
}

impl Drop for ShmQp {
    fn drop(&mut self) {
        if self.peer.is_some() {
            self.area.hdr.store_u64(hdr::held(self.qp), 0);
        }
        self.area.taken[self.qp as usize].store(false, Ordering::Release);
    }
}

impl Link for ShmQp {
    fn local(&self) -> &RegionMem {
        &self.local
    }

    fn direct(&mut self) -> Result<Option<Direct<'_>>, LinkError> {
        self.peer_ok()?;
        self.refresh_directory();
        Ok(Some(Direct {
            table: &self.table,
            mem: &mut self.mem,
        }))
    }

    fn post_read(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
    ) -> Result<(), LinkError> {
        self.copy(OpKind::Read, wr_id, remote, local_off, len)
    }

    fn post_write(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
    ) -> Result<(), LinkError> {
        self.copy(OpKind::Write, wr_id, remote, local_off, len)
    }

    fn post_write_doorbell(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
        imm: u32,
    ) -> Result<(), LinkError> {
        self.copy(OpKind::WriteDoorbell, wr_id, remote, local_off, len)?;
        // Space was checked before the write and only this queue pair produces on the ring.
        self.tx.push(&[], Some(imm))?;
        self.counters.doorbells_rung += 1;
        Ok(())
    }

    fn post_cas(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        expected: u64,
        desired: u64,
    ) -> Result<(), LinkError> {
        let op = self.prepare(naam_core::abi::OpKind::Cas, remote, 0, 8, expected, desired)?;
        let value = self
            .region(op.region)?
            .cas(op.offset, expected, desired)
            .ok_or(LinkError::Unmapped {
                region: remote.region,
            })?;
        self.counters.posted += 1;
        self.complete(Completion {
            wr_id,
            kind: OpKind::Cas,
            status: CompletionStatus::Success,
            value,
            len: 8,
        });
        Ok(())
    }

    fn post_faa(&mut self, wr_id: WrId, remote: RemoteAddr, add: u64) -> Result<(), LinkError> {
        let op = self.prepare(naam_core::abi::OpKind::Faa, remote, 0, 8, add, 0)?;
        let value = self
            .region(op.region)?
            .faa(op.offset, add)
            .ok_or(LinkError::Unmapped {
                region: remote.region,
            })?;
        self.counters.posted += 1;
        self.complete(Completion {
            wr_id,
            kind: OpKind::Faa,
            status: CompletionStatus::Success,
            value,
            len: 8,
        });
        Ok(())
    }

    fn poll_completions(&mut self, out: &mut [Completion]) -> usize {
        let n = self.cq.pop_into(out);
        self.counters.completed += n as u64;
        n
    }

    fn send(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        self.peer_ok()?;
        match self.tx.push(msg, None) {
            Ok(()) => {
                self.counters.sent += 1;
                Ok(())
            }
            Err(e) => {
                if matches!(e, LinkError::Full { .. }) {
                    self.counters.ring_full += 1;
                }
                Err(e)
            }
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<Received>, LinkError> {
        match self.rx.pop(buf) {
            Ok(Some(r)) => {
                self.counters.received += 1;
                Ok(Some(r))
            }
            Ok(None) => {
                // Entries already in the ring are still delivered after the peer died; only
                // an empty ring reports it.
                self.peer_ok()?;
                Ok(None)
            }
            Err(e) => {
                if matches!(e, LinkError::Corrupt { .. }) {
                    self.counters.corrupt += 1;
                    tracing::warn!(qp = self.qp, error = %e, "corrupt ring entry skipped");
                }
                Err(e)
            }
        }
    }

    fn wait_recv(&mut self, backoff: &Backoff) {
        self.rx.wait(backoff);
    }

    fn check_peer(&mut self, now_ns: u64) -> Result<(), LinkError> {
        let Some(p) = &self.peer else {
            return Ok(());
        };
        let r = p.check(now_ns);
        match &r {
            Err(e) if e.is_peer_gone() => self.counters.peer_gone += 1,
            _ => self.hold_if_asked(),
        }
        r
    }

    fn counters(&self) -> LinkCounters {
        self.counters
    }
}
