//! The one-sided op engine: serves clients' READ / WRITE / CAS / FAA (`ONE_SIDED` messages),
//! the stand-in for the RDMA NIC's own engine, so that handlers run at the client work against
//! this server (DESIGN §5, issue 6 item 5).
//!
//! Each op is checked with [`naam_core::region::RegionTable::check_keyed`] (a wrong key is
//! refused with `BadKey` in its result and counted), then posted on the link like handler
//! ops: the request is parked in a slot and answered with a `ONE_SIDED_REPLY` when all its ops
//! completed. Ops run in order and independently; each has its own status. READ data and
//! WRITE data of one request share the slot's `DATA_SIZE` staging area, so a request whose
//! READs would not fit one reply packet is refused as a whole (`BadRequest`).

use naam_core::abi::{OpKind, RawOp, DATA_SIZE, MAX_OPS};
use naam_core::region::{CheckedOp, OpError};
use naam_core::wire::{ErrorCode, Kind, OneSidedRepr, OpBody, OpResult, RemoteOp, HEADER_LEN};
use naam_link::{Link, RemoteAddr};

use super::{link_error_code, Detail, ReqInfo, SlotKind, SlotState, Worker, OS_EMPTY};
use crate::port::{Port, MAX_PAYLOAD};
use crate::runtime::stats::bump;
use std::fmt::Write as _;

/// A result before it is filled in.
const OP_REFUSED: OpResult<'static> = OpResult {
    kind: OpKind::Read,
    error: None,
    previous: 0,
    data: &[],
};

/// `op` as the region table checks it (`data_off` is the runtime's business).
fn raw_op(op: &RemoteOp<'_>) -> RawOp {
    let (len, arg0, arg1) = op.body.operands();
    RawOp {
        kind: op.body.kind() as u8,
        region: op.region,
        offset: op.offset,
        len,
        data_off: 0,
        arg0,
        arg1,
    }
}

/// Bytes of a one-sided reply before its READ data: header, count + reserved, results.
fn reply_overhead(n: usize) -> usize {
    HEADER_LEN + 8 + 16 * n
}

/// Why one-sided `ops` cannot be served by one request, if they cannot: their data must fit
/// the slot's staging and their READ data one reply datagram.
fn over_limits(ops: &[RemoteOp<'_>]) -> Option<Detail> {
    let staged: usize = ops
        .iter()
        .map(|o| match o.body {
            OpBody::Read { len } => len as usize,
            OpBody::Write { data } => data.len(),
            _ => 0,
        })
        .sum();
    let read: usize = ops
        .iter()
        .map(|o| match o.body {
            OpBody::Read { len } => len as usize,
            _ => 0,
        })
        .sum();
    if staged <= DATA_SIZE && reply_overhead(ops.len()) + read <= MAX_PAYLOAD {
        return None;
    }
    let mut d = Detail::new();
    let _ = write!(
        d,
        "one-sided data of {staged} bytes ({read} read): the NIC takes at most {} bytes of \
         READ data per request (one {MAX_PAYLOAD}-byte reply) and {DATA_SIZE} in all; split \
         the request",
        MAX_PAYLOAD - reply_overhead(ops.len()),
    );
    Some(d)
}

impl Worker {
    pub(super) fn on_one_sided<P: Port, L: Link>(
        &mut self,
        info: &ReqInfo,
        req: &OneSidedRepr<'_>,
        port: &mut P,
        link: &mut L,
    ) {
        bump(&self.stats.one_sided, 1);
        let ops = req.ops();
        // Every op's key, bounds and permission first: a request none of whose ops shows its
        // region's key is answered at once, and takes no slot, no share and no entry of the
        // reply cache (where a forged one would stand in for its client's real request).
        let mut checked: [Result<CheckedOp, OpError>; MAX_OPS] =
            std::array::from_fn(|_| Ok(CheckedOp::EMPTY));
        let mut owner = None;
        let mut dedup = false;
        // Whether some op showed its region's key (run or refused after the key check).
        let mut keyed = false;
        for (k, op) in ops.iter().enumerate().take(MAX_OPS) {
            bump(&self.stats.one_sided_ops, 1);
            checked[k] = self.regions.check_keyed(op.key, &raw_op(op));
            match &checked[k] {
                Ok(c) => {
                    owner = owner.or(self.regions.get(c.region).map(|d| d.tenant));
                    dedup |= c.kind.is_mutation();
                    keyed = true;
                }
                Err(OpError::BadKey { .. }) => bump(&self.stats.bad_key, 1),
                Err(OpError::NoSuchRegion { .. } | OpError::UnknownKind { .. }) => {}
                Err(_) => keyed = true,
            }
        }
        // A sender that showed a key is told the limits in numbers (to one that did not, the
        // error could not say them in as few bytes as it sent).
        if keyed {
            if let Some(d) = over_limits(ops) {
                let info = &info.proven();
                return self.send_error(port, info, ErrorCode::BadRequest, d.as_str(), false);
            }
        }
        let Some(tenant) = owner else {
            if !self.may_answer_unproven() {
                return;
            }
            let mut results = [OP_REFUSED; MAX_OPS];
            for (r, (op, c)) in results.iter_mut().zip(ops.iter().zip(&checked)) {
                r.kind = op.body.kind();
                r.error = c.as_ref().err().map(|e| e.code().into());
            }
            let n = ops.len().min(MAX_OPS);
            let to = (&info.peer, info.request_id, info.class);
            return self.send_one_sided_reply(port, to, &results[..n], false);
        };
        // Proven: its errors may say all they have to.
        let info = &info.proven();
        if !self.host_ok {
            return self.host_gone(port, info);
        }
        // What its window says about the client's finished requests counts.
        self.out
            .cache
            .retire(info.peer.remote, info.request_id, info.window);
        let owner = (tenant, Kind::OneSided);
        if dedup && self.replayed(port, info, owner) {
            return;
        }
        // The shares of the slots and of the reply cache are the tenant's whose region the
        // first op with its key names.
        let account = Some(self.shares.account(tenant));
        let Some(i) = self.take_slot(port, info, SlotKind::OneSided, account) else {
            return;
        };
        if dedup && !self.begin_dedup(port, info, i, owner) {
            return;
        }
        let base = (i * DATA_SIZE) as u64;
        let mut cursor = 0u32;
        let slot = self.slots.slot_ref(i);
        let s = &mut self.slots[i];
        s.dedup = dedup;
        s.state = SlotState::Ops;
        s.n_ops = ops.len().min(MAX_OPS) as u8;
        s.pending = 0;
        for (k, (op, c)) in ops.iter().zip(&checked).enumerate() {
            let kind = op.body.kind();
            s.os[k] = OS_EMPTY;
            s.os[k].kind = kind;
            if let Err(e) = c {
                s.os[k].error = Some(e.code().into());
                continue;
            }
            let remote = RemoteAddr {
                region: op.region,
                offset: op.offset,
                key: op.key,
            };
            let wr = slot.wr_id(k);
            let local = base + cursor as u64;
            let r = match op.body {
                OpBody::Read { len } => {
                    s.os[k].local_off = cursor;
                    s.os[k].len = len;
                    cursor += len;
                    link.post_read(wr, remote, local, len)
                }
                OpBody::Write { data } => {
                    cursor += data.len() as u32;
                    if link.local().write(local, data) {
                        link.post_write(wr, remote, local, data.len() as u32)
                    } else {
                        Err(naam_link::LinkError::LocalOutOfRange {
                            offset: local,
                            len: data.len() as u64,
                            size: link.local().len() as u64,
                        })
                    }
                }
                OpBody::Cas { expected, desired } => link.post_cas(wr, remote, expected, desired),
                OpBody::Faa { addend } => link.post_faa(wr, remote, addend),
            };
            match r {
                Ok(()) => {
                    s.pending += 1;
                    s.wrote |= kind != OpKind::Read;
                }
                Err(e) => {
                    if e.is_peer_gone() {
                        self.host_ok = false;
                    }
                    if let naam_link::LinkError::Refused(OpError::BadKey { .. }) = e {
                        bump(&self.stats.bad_key, 1);
                    }
                    s.os[k].error = Some(link_error_code(&e));
                }
            }
        }
        if self.slots[i].pending == 0 {
            self.finish_one_sided(i, port, link);
        }
    }

    /// Builds the reply of one-sided slot `i` from its results and the staged READ data.
    pub(super) fn finish_one_sided<P: Port, L: Link>(
        &mut self,
        i: usize,
        port: &mut P,
        link: &mut L,
    ) {
        let base = (i * DATA_SIZE) as u64;
        let s = &self.slots[i];
        let n = s.n_ops as usize;
        let os = s.os;
        // Gather the READ data on the stack, in op order, then reply.
        let mut data = [0u8; DATA_SIZE];
        let mut at = 0usize;
        let mut spans = [(0usize, 0usize); MAX_OPS];
        for k in 0..n {
            let r = &os[k];
            if r.kind == OpKind::Read && r.error.is_none() {
                let len = r.len as usize;
                if link
                    .local()
                    .read(base + r.local_off as u64, &mut data[at..at + len])
                {
                    spans[k] = (at, len);
                    at += len;
                }
            }
        }
        let mut results = [OP_REFUSED; MAX_OPS];
        for k in 0..n {
            let r = &os[k];
            let ok = r.error.is_none();
            results[k] = OpResult {
                kind: r.kind,
                error: r.error,
                previous: if ok && matches!(r.kind, OpKind::Cas | OpKind::Faa) {
                    r.previous
                } else {
                    0
                },
                data: if ok && r.kind == OpKind::Read {
                    &data[spans[k].0..spans[k].0 + spans[k].1]
                } else {
                    &[]
                },
            };
        }
        self.finish_one_sided_results(i, port, &results[..n]);
    }
}
