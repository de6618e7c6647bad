//! Execution on the NIC: steps in the VM pool, their ops run on host memory (at once when
//! it is mapped, else posted on the link), completions resuming parked messages.

use std::fmt::Write as _;

use naam_core::abi::{OpKind, DATA_SIZE};
use naam_core::exec::StepOutcome;
use naam_core::region::OpError;
use naam_core::wire::ErrorCode;
use naam_link::{Completion, CompletionStatus, Link, LinkError, RemoteAddr};

use super::*;
use crate::port::Port;
use crate::runtime::stats::{bump, Dropped};

impl Worker {
    /// Runs slot `i`'s handler until it finishes or parks on ops it asked for (resumed by
    /// [`Worker::on_completion`]), and charges the time to its tenant: steps, ops on host
    /// memory and the reply are what the message cost this worker.
    pub(super) fn advance<P: Port, L: Link>(&mut self, i: usize, port: &mut P, link: &mut L) {
        // Two reads of the cycle counter a message (or a resumption), also under first
        // come, first served: the per-tenant figures are what an operator compares the two
        // by. Not `now_ns()`: two clock_gettime calls were 10 % of a GET (the profile in
        // docs/profiles/datapath-2026-12-06.md).
        let account = self.slots[i].account;
        let t = self.clock.raw();
        self.run_steps(i, port, link);
        let ns = self.clock.delta_as_nanos(t, self.clock.raw());
        self.shares.charge(account, ns);
    }

    /// [`Worker::advance`] without the charge. When the link maps host memory here
    /// ([`Link::direct`]) the ops of each step run at once, in order, straight into the
    /// context, and the next step follows in this call; otherwise they are posted.
    pub(super) fn run_steps<P: Port, L: Link>(&mut self, i: usize, port: &mut P, link: &mut L) {
        let Some(mut n) = self.next_step(i, port) else {
            return;
        };
        // Asked once a message (or a resumption): the mapping stays for its later steps.
        let direct = match link.direct() {
            Ok(d) => d,
            Err(e) => {
                if e.is_peer_gone() {
                    self.host_ok = false;
                }
                return self.finish_error(i, port, link_error_code(&e), "host memory unreachable");
            }
        };
        let Some(direct) = direct else {
            let s = &mut self.slots[i];
            if let Err(e) = s.run.check(&self.regions, s.tenant, &s.ctx) {
                return self.refuse_ops(i, &e, port);
            }
            bump(&self.stats.ops, n as u64);
            // Parked when at least one op is outstanding; otherwise the failure is recorded
            // in the slot.
            if !self.post_ops(i, link) {
                let code = self.slots[i].failed.unwrap_or(ErrorCode::Memory);
                self.finish_error(i, port, code, "link refused the ops");
            }
            return;
        };
        loop {
            let s = &mut self.slots[i];
            if let Err(e) = s.run.check(direct.table, s.tenant, &s.ctx) {
                return self.refuse_ops(i, &e, port);
            }
            bump(&self.stats.ops, n as u64);
            if let Err(e) = s.run.apply(&mut *direct.mem, &mut s.ctx) {
                let mut d = Detail::new();
                let _ = write!(d, "{e}");
                return self.finish_error(i, port, ErrorCode::Memory, d.as_str());
            }
            let Some(next) = self.next_step(i, port) else {
                return;
            };
            n = next;
        }
    }

    /// Runs slot `i`'s next step: the number of ops it asked for, or `None` when the message
    /// ended (its reply or error is sent).
    fn next_step<P: Port>(&mut self, i: usize, port: &mut P) -> Option<usize> {
        let s = &mut self.slots[i];
        let Some(entry) = self.pool.get(s.offload) else {
            self.finish_error(i, port, ErrorCode::UnknownOffload, "offload unregistered");
            return None;
        };
        let before = s.run.steps();
        let out = if self.cfg.run_time {
            let t = self.clock.raw();
            let out = s.run.step(&entry.vm, &mut s.ctx, self.cfg.max_steps);
            bump(
                &entry.runs.run_ns,
                self.clock.delta_as_nanos(t, self.clock.raw()),
            );
            out
        } else {
            s.run.step(&entry.vm, &mut s.ctx, self.cfg.max_steps)
        };
        // A spent budget ran no step.
        let ran = u64::from(s.run.steps() - before);
        bump(&self.stats.steps, ran);
        bump(&entry.runs.steps, ran);
        match out {
            Ok(StepOutcome::Ops(n)) => Some(n),
            Ok(StepOutcome::Done) => {
                self.finish_am(i, None, port);
                None
            }
            Ok(StepOutcome::Abort(code)) => {
                self.finish_am(i, Some(code), port);
                None
            }
            Err(e) => {
                let mut d = Detail::new();
                let _ = write!(d, "{e}");
                self.finish_error(i, port, ErrorCode::from(&e), d.as_str());
                None
            }
        }
    }

    /// Answers slot `i`'s message with why an op of its step was refused (bounds, tenant,
    /// permission).
    fn refuse_ops<P: Port>(&mut self, i: usize, e: &OpError, port: &mut P) {
        let mut d = Detail::new();
        let _ = write!(d, "{e}");
        self.finish_error(i, port, e.code().into(), d.as_str());
    }

    /// Posts the next batch of slot `i`'s checked handler ops ([`Run::next_batch`]); true if
    /// at least one is outstanding.
    ///
    /// [`Run::next_batch`]: naam_core::exec::Run::next_batch
    pub(super) fn post_ops<L: Link>(&mut self, i: usize, link: &mut L) -> bool {
        let slot = self.slots.slot_ref(i);
        let s = &mut self.slots[i];
        let base = (i * DATA_SIZE) as u64;
        s.pending = 0;
        s.state = SlotState::Ops;
        for k in s.run.next_batch() {
            let op = s.run.ops()[k];
            let Some(desc) = self.regions.get(op.region) else {
                s.failed = Some(ErrorCode::NoSuchRegion);
                break;
            };
            let remote = RemoteAddr {
                region: op.region,
                offset: op.offset,
                key: desc.key,
            };
            let wr = slot.wr_id(k);
            let local = base + op.data_off as u64;
            let r = match op.kind {
                OpKind::Read => link.post_read(wr, remote, local, op.len),
                OpKind::Write => {
                    let w = op.data_off as usize..op.data_off as usize + op.len as usize;
                    if link.local().write(local, &s.ctx.data()[w]) {
                        link.post_write(wr, remote, local, op.len)
                    } else {
                        Err(LinkError::LocalOutOfRange {
                            offset: local,
                            len: op.len as u64,
                            size: link.local().len() as u64,
                        })
                    }
                }
                OpKind::Cas => link.post_cas(wr, remote, op.arg0, op.arg1),
                OpKind::Faa => link.post_faa(wr, remote, op.arg0),
            };
            match r {
                Ok(()) => {
                    s.pending += 1;
                    s.wrote |= op.kind != OpKind::Read;
                }
                Err(e) => {
                    if e.is_peer_gone() {
                        self.host_ok = false;
                    }
                    s.failed = Some(link_error_code(&e));
                    break;
                }
            }
        }
        s.pending > 0
    }

    pub(super) fn drain_completions<P: Port, L: Link>(
        &mut self,
        port: &mut P,
        link: &mut L,
    ) -> usize {
        let mut done = [Completion::default(); 32];
        let mut total = 0;
        loop {
            let n = link.poll_completions(&mut done);
            for c in &done[..n] {
                self.on_completion(c, port, link);
            }
            total += n;
            // Resumed messages may have posted more ops (completed at once on shm): keep
            // going until the queue is empty; the step budget bounds this.
            if n == 0 {
                return total;
            }
        }
    }

    pub(super) fn on_completion<P: Port, L: Link>(
        &mut self,
        c: &Completion,
        port: &mut P,
        link: &mut L,
    ) {
        let (slot, k) = SlotRef::from_wr_id(c.wr_id);
        let Some(i) = self
            .slots
            .resolve(slot, SlotState::Ops)
            .filter(|&i| self.slots[i].pending > 0)
        else {
            return self.stats.count_drop(Dropped::StaleCompletion);
        };
        let base = (i * DATA_SIZE) as u64;
        let s = &mut self.slots[i];
        s.pending -= 1;
        match c.status {
            CompletionStatus::Success => match s.kind {
                SlotKind::Am => {
                    // k came back in the op's work request id, so it is one of the step's ops.
                    let op = s.run.ops()[k];
                    if op.kind == OpKind::Read {
                        let w = op.data_off as usize..op.data_off as usize + op.len as usize;
                        if !link
                            .local()
                            .read(base + op.data_off as u64, s.ctx.data_window_mut(w))
                        {
                            s.failed = Some(ErrorCode::Memory);
                        }
                    }
                    s.ctx.set_op_result(k, c.value, 0);
                }
                SlotKind::OneSided => s.os[k].previous = c.value,
            },
            CompletionStatus::PeerGone => {
                self.host_ok = false;
                match s.kind {
                    SlotKind::Am => s.failed = Some(lost_code(s)),
                    // Per op: a lost READ was not executed, a lost write or atomic may have been.
                    SlotKind::OneSided => {
                        s.os[k].error = Some(if s.os[k].kind == OpKind::Read {
                            ErrorCode::HostUnavailable
                        } else {
                            ErrorCode::OutcomeUnknown
                        })
                    }
                }
            }
            CompletionStatus::Failed { .. } => match s.kind {
                SlotKind::Am => s.failed = Some(ErrorCode::Memory),
                SlotKind::OneSided => s.os[k].error = Some(ErrorCode::Memory),
            },
        }
        if s.pending > 0 {
            return;
        }
        match (s.kind, s.failed) {
            (SlotKind::Am, Some(code)) => self.finish_error(i, port, code, "op failed on the link"),
            (SlotKind::Am, None) if s.run.ops_left() => {
                if !self.post_ops(i, link) {
                    let code = self.slots[i].failed.unwrap_or(ErrorCode::Memory);
                    self.finish_error(i, port, code, "link refused the ops");
                }
            }
            (SlotKind::Am, None) => self.advance(i, port, link),
            (SlotKind::OneSided, _) => self.finish_one_sided(i, port, link),
        }
    }
}
