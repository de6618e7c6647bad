//! A verbs queue pair: one-sided ops posted on an RC queue pair, the rings as SEND/RECV with
//! credits, and completions moved from the device's queue to the link's.

use super::*;
use crate::cq::CompletionQueue;
use crate::error::{GoneReason, LinkError};
use crate::ring::{checksum, Backoff, ENTRY_HDR, MSG_MAX, SLOT_SIZE};
use crate::sys::verbs::{post_recv, post_send, PostError, RegisteredBuf, SendOp};
use crate::{
    sys, Completion, CompletionStatus, DirEntry, Link, LinkCounters, OpKind, Received, RemoteAddr,
    WrId,
};
use naam_core::abi::RawOp;
use naam_core::memory::RegionMem;
use naam_core::region::RegionTable;
use sideway::ibverbs::address::{AddressHandleAttribute, Gid};
use sideway::ibverbs::completion::{
    ExtendedCompletionQueue, WorkCompletionOperationType, WorkCompletionStatus,
};
use sideway::ibverbs::device_context::Mtu;
use sideway::ibverbs::queue_pair::{
    ExtendedQueuePair, QueuePair, QueuePairAttribute, QueuePairState, SendOperationFlags,
};
use sideway::ibverbs::AccessFlags;
use std::net::{Ipv6Addr, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;

/// Internal work-request ids: user one-sided ops use their in-flight slot index; these tags
/// mark the link's own traffic.
pub(super) const TAG_RING_SEND: u64 = 1 << 63;
pub(super) const TAG_CREDIT: u64 = 1 << 62;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Inflight {
    busy: bool,
    wr_id: WrId,
    kind: OpKind,
    len: u32,
}

/// One RC queue pair implementing [`Link`]. The queue pair is declared before the buffers it
/// points into, so it is destroyed first.
pub struct VerbsQp {
    qp: ExtendedQueuePair,
    send_cq: Arc<ExtendedCompletionQueue>,
    recv_cq: Arc<ExtendedCompletionQueue>,
    staging: RegisteredBuf,
    atomics: RegisteredBuf,
    sendbufs: RegisteredBuf,
    recvbufs: RegisteredBuf,
    credit: RegisteredBuf,
    _dev: Arc<VerbsDevice>,
    side: TcpStream,
    table: RegionTable,
    remote: Vec<Option<(u64, u32)>>,
    directory: Vec<DirEntry>,
    peer_credit: (u64, u32),
    slots: u32,
    sq_depth: u32,
    sq_outstanding: u32,
    tx_tail: u64,
    rx_head: u64,
    inflight: Box<[Inflight]>,
    in_flight: usize,
    cq: CompletionQueue,
    gone: Option<GoneReason>,
    last_poll_ns: u64,
    counters: LinkCounters,
}

impl VerbsQp {
    /// Connects to a [`VerbsHost`] listening on a TCP side channel; the host's directory comes
    /// back with the connection ([`VerbsQp::directory`]).
    pub fn connect(dev: VerbsDevice, side: TcpStream) -> Result<VerbsQp, LinkError> {
        Self::handshake(Arc::new(dev), side, &[])
    }

    pub(super) fn handshake(
        dev: Arc<VerbsDevice>,
        mut side: TcpStream,
        offer: &[DirEntry],
    ) -> Result<VerbsQp, LinkError> {
        let cfg = dev.cfg.clone();
        let slots = cfg.ring_slots.max(2);
        let cq_depth = cfg.cq_depth.max(1);
        let sq_depth = cq_depth as u32 + 2 * slots + 2;
        let cq = |n: u32| {
            dev.ctx
                .create_cq_builder()
                .setup_cqe(n)
                .build_ex()
                .map_err(rdma("create completion queue"))
        };
        let send_cq = cq(sq_depth)?;
        let recv_cq = cq(slots + 1)?;
        let mut qp = dev
            .pd
            .create_qp_builder()
            .setup_max_send_wr(sq_depth)
            .setup_max_recv_wr(slots)
            .setup_send_cq(send_cq.clone())
            .setup_recv_cq(recv_cq.clone())
            .setup_send_ops_flags(
                SendOperationFlags::Send
                    | SendOperationFlags::Write
                    | SendOperationFlags::WriteWithImmediate
                    | SendOperationFlags::Read
                    | SendOperationFlags::AtomicCompareAndSwap
                    | SendOperationFlags::AtomicFetchAndAdd,
            )
            .build_ex()
            .map_err(rdma("create queue pair"))?;
        let reg = |len: usize, access: AccessFlags| {
            RegisteredBuf::new(&dev.pd, len, access).map_err(|d| LinkError::Rdma {
                what: "register buffer",
                detail: d,
            })
        };
        let lw = AccessFlags::LocalWrite;
        let staging = reg(cfg.staging_bytes, lw)?;
        let atomics = reg(cq_depth * 8, lw)?;
        let sendbufs = reg(slots as usize * SLOT_SIZE + 8, lw)?;
        let recvbufs = reg(slots as usize * SLOT_SIZE, lw)?;
        let credit = reg(8, lw | AccessFlags::RemoteWrite)?;

        let mut attr = QueuePairAttribute::new();
        attr.setup_state(QueuePairState::Init)
            .setup_pkey_index(0)
            .setup_port(cfg.port)
            .setup_access_flags(
                lw | AccessFlags::RemoteWrite | AccessFlags::RemoteRead | AccessFlags::RemoteAtomic,
            );
        qp.modify(&attr).map_err(rdma("queue pair to INIT"))?;
        for i in 0..slots {
            post_recv(
                &mut qp,
                i as u64,
                &recvbufs,
                i as u64 * SLOT_SIZE as u64,
                SLOT_SIZE as u32,
            )
            .map_err(|e| LinkError::Rdma {
                what: "post receive",
                detail: e.to_string(),
            })?;
        }

        let port = dev.ctx.query_port(cfg.port).map_err(rdma("query port"))?;
        let gid = dev
            .ctx
            .query_gid(cfg.port, cfg.gid_index as u32)
            .map_err(rdma("query gid"))?;
        let psn = (sys::monotonic_ns() as u32 ^ qp.qp_number().rotate_left(8)) & 0xff_ffff;
        let mine = PeerInfo {
            qpn: qp.qp_number(),
            psn,
            lid: port.lid(),
            gid: Ipv6Addr::from(gid).octets(),
            credit_addr: credit.addr(),
            credit_rkey: credit.rkey(),
            ring_slots: slots,
            directory: offer.to_vec(),
        };
        send_frame(&mut side, &mine.encode())
            .map_err(LinkError::io("send setup over the side channel"))?;
        let peer =
            recv_frame(&mut side).map_err(LinkError::io("receive setup over the side channel"))?;
        let peer = PeerInfo::decode(&peer).ok_or(LinkError::Layout {
            reason: "bad verbs setup message",
        })?;
        if peer.ring_slots != slots {
            return Err(LinkError::Layout {
                reason: "peers disagree on the ring depth",
            });
        }

        let mut attr = QueuePairAttribute::new();
        attr.setup_state(QueuePairState::ReadyToReceive)
            .setup_path_mtu(Mtu::Mtu1024)
            .setup_dest_qp_num(peer.qpn)
            .setup_rq_psn(peer.psn)
            .setup_max_dest_read_atomic(16)
            .setup_min_rnr_timer(12);
        let mut ah = AddressHandleAttribute::new();
        ah.setup_dest_lid(peer.lid)
            .setup_port(cfg.port)
            .setup_service_level(0)
            .setup_grh_src_gid_index(cfg.gid_index)
            .setup_grh_dest_gid(&Gid::from(Ipv6Addr::from(peer.gid)))
            .setup_grh_hop_limit(64);
        attr.setup_address_vector(&ah);
        qp.modify(&attr).map_err(rdma("queue pair to RTR"))?;
        let mut attr = QueuePairAttribute::new();
        attr.setup_state(QueuePairState::ReadyToSend)
            .setup_sq_psn(psn)
            .setup_timeout(14)
            .setup_retry_cnt(7)
            .setup_rnr_retry(7)
            .setup_max_read_atomic(16);
        qp.modify(&attr).map_err(rdma("queue pair to RTS"))?;
        side.set_nonblocking(true)
            .map_err(LinkError::io("side channel non-blocking"))?;

        let mut table = RegionTable::new();
        let mut remote = Vec::new();
        for e in &peer.directory {
            if table.insert(e.desc).is_ok() {
                let i = e.desc.id as usize;
                if remote.len() <= i {
                    remote.resize(i + 1, None);
                }
                remote[i] = Some((e.offset, e.rkey));
            }
        }
        tracing::info!(
            qpn = mine.qpn,
            peer_qpn = peer.qpn,
            regions = peer.directory.len(),
            "verbs queue pair connected"
        );
        Ok(VerbsQp {
            qp,
            send_cq,
            recv_cq,
            staging,
            atomics,
            sendbufs,
            recvbufs,
            credit,
            _dev: dev,
            side,
            table,
            remote,
            directory: peer.directory,
            peer_credit: (peer.credit_addr, peer.credit_rkey),
            slots,
            sq_depth,
            sq_outstanding: 0,
            tx_tail: 0,
            rx_head: 0,
            inflight: vec![Inflight::default(); cq_depth].into_boxed_slice(),
            in_flight: 0,
            cq: CompletionQueue::new(cq_depth),
            gone: None,
            last_poll_ns: 0,
            counters: LinkCounters::default(),
        })
    }

    /// The peer's region directory (addresses are the peer's virtual addresses).
    pub fn directory(&self) -> &[DirEntry] {
        &self.directory
    }

    /// The region table built from the peer's directory.
    pub fn region_table(&self) -> &RegionTable {
        &self.table
    }

    fn peer_ok(&mut self) -> Result<(), LinkError> {
        match self.gone {
            None => Ok(()),
            Some(reason) => {
                self.counters.peer_gone += 1;
                Err(LinkError::PeerGone { reason })
            }
        }
    }

    fn post(
        &mut self,
        wr_id: u64,
        op: SendOp,
        which: Buf,
        off: u64,
        len: u32,
    ) -> Result<(), LinkError> {
        if self.sq_outstanding >= self.sq_depth {
            self.reap();
            if self.sq_outstanding >= self.sq_depth {
                return Err(LinkError::CqFull {
                    depth: self.sq_depth as usize,
                });
            }
        }
        let buf = match which {
            Buf::Staging => &self.staging,
            Buf::Atomics => &self.atomics,
            Buf::Send => &self.sendbufs,
        };
        match post_send(&mut self.qp, wr_id, op, buf, off, len) {
            Ok(()) => {
                self.sq_outstanding += 1;
                Ok(())
            }
            Err(PostError::OutOfBuffer) => Err(LinkError::LocalOutOfRange {
                offset: off,
                len: len as u64,
                size: buf.mem().len() as u64,
            }),
            Err(e) => {
                self.gone.get_or_insert(GoneReason::Transport);
                Err(LinkError::Rdma {
                    what: "post send",
                    detail: e.to_string(),
                })
            }
        }
    }

    /// Moves send-queue completions into the local completion buffer.
    fn reap(&mut self) {
        let Ok(poller) = self.send_cq.start_poll() else {
            return;
        };
        for wc in poller {
            self.sq_outstanding = self.sq_outstanding.saturating_sub(1);
            let ok = wc.status() == WorkCompletionStatus::Success as u32;
            let id = wc.wr_id();
            if !ok {
                self.gone.get_or_insert(GoneReason::Transport);
                tracing::warn!(
                    wr_id = id,
                    status = wc.status(),
                    "verbs work request failed"
                );
            }
            if id & (TAG_RING_SEND | TAG_CREDIT) != 0 {
                continue;
            }
            let Some(slot) = self.inflight.get_mut(id as usize) else {
                continue;
            };
            if !slot.busy {
                continue;
            }
            slot.busy = false;
            self.in_flight -= 1;
            let value = if matches!(slot.kind, OpKind::Cas | OpKind::Faa) {
                self.atomics.mem().load_u64(id * 8).unwrap_or(0)
            } else {
                0
            };
            let status = if ok {
                CompletionStatus::Success
            } else {
                CompletionStatus::Failed { code: wc.status() }
            };
            let c = Completion {
                wr_id: slot.wr_id,
                kind: slot.kind,
                status,
                value,
                len: slot.len,
            };
            self.cq.push(c);
        }
    }

    /// Checks a one-sided op and reserves an in-flight slot; returns (slot, remote address, rkey).
    fn prepare(
        &mut self,
        kind: naam_core::abi::OpKind,
        remote: RemoteAddr,
        len: u32,
    ) -> Result<(usize, u64, u32), LinkError> {
        self.peer_ok()?;
        if self.in_flight + self.cq.len() >= self.inflight.len() {
            self.counters.cq_full += 1;
            return Err(LinkError::CqFull {
                depth: self.inflight.len(),
            });
        }
        let raw = RawOp {
            kind: kind as u8,
            region: remote.region,
            offset: remote.offset,
            len,
            ..Default::default()
        };
        let checked = self.counters.check_posted(&self.table, remote.key, &raw)?;
        let (base, rkey) = self
            .remote
            .get(remote.region as usize)
            .copied()
            .flatten()
            .ok_or(LinkError::Unmapped {
                region: remote.region,
            })?;
        let slot = self
            .inflight
            .iter()
            .position(|s| !s.busy)
            .ok_or(LinkError::CqFull {
                depth: self.inflight.len(),
            })?;
        Ok((slot, base + checked.offset, rkey))
    }

    fn one_sided(
        &mut self,
        wr_id: WrId,
        kind: OpKind,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
        make: impl FnOnce(u32, u64) -> SendOp,
    ) -> Result<(), LinkError> {
        let core_kind = match kind {
            OpKind::Read => naam_core::abi::OpKind::Read,
            OpKind::Write | OpKind::WriteDoorbell => naam_core::abi::OpKind::Write,
            OpKind::Cas => naam_core::abi::OpKind::Cas,
            OpKind::Faa => naam_core::abi::OpKind::Faa,
        };
        let atomic = matches!(kind, OpKind::Cas | OpKind::Faa);
        if !atomic {
            let size = self.staging.mem().len() as u64;
            if local_off.checked_add(len as u64).is_none_or(|e| e > size) {
                self.counters.refused += 1;
                return Err(LinkError::LocalOutOfRange {
                    offset: local_off,
                    len: len as u64,
                    size,
                });
            }
        }
        let (slot, addr, rkey) = self.prepare(core_kind, remote, len)?;
        if kind == OpKind::WriteDoorbell {
            // The doorbell takes a receive slot at the peer like a message does.
            if self.credit_left() == 0 {
                self.counters.ring_full += 1;
                return Err(LinkError::Full { slots: self.slots });
            }
        }
        let op = make(rkey, addr);
        let (buf, off) = if atomic {
            (Buf::Atomics, slot as u64 * 8)
        } else {
            (Buf::Staging, local_off)
        };
        self.post(slot as u64, op, buf, off, if atomic { 8 } else { len })?;
        self.inflight[slot] = Inflight {
            busy: true,
            wr_id,
            kind,
            len,
        };
        self.in_flight += 1;
        self.counters.posted += 1;
        if kind == OpKind::WriteDoorbell {
            self.tx_tail += 1;
            self.counters.doorbells_rung += 1;
        }
        Ok(())
    }

    fn credit_left(&self) -> u64 {
        let peer_head = self.credit.mem().load_u64(0).unwrap_or(0);
        (self.slots as u64).saturating_sub(self.tx_tail.wrapping_sub(peer_head))
    }

    /// Tells the peer how many entries this side consumed (its send credit).
    fn return_credit(&mut self) {
        let src = self.slots as u64 * SLOT_SIZE as u64;
        self.sendbufs.mem().store_u64(src, self.rx_head);
        let (addr, rkey) = self.peer_credit;
        if let Err(e) = self.post(TAG_CREDIT, SendOp::Write { rkey, addr }, Buf::Send, src, 8) {
            tracing::warn!(error = %e, "credit return failed");
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Buf {
    Staging,
    Atomics,
    Send,
}

impl Link for VerbsQp {
    fn local(&self) -> &RegionMem {
        self.staging.mem()
    }

    fn post_read(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
    ) -> Result<(), LinkError> {
        self.one_sided(wr_id, OpKind::Read, remote, local_off, len, |rkey, addr| {
            SendOp::Read { rkey, addr }
        })
    }

    fn post_write(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
    ) -> Result<(), LinkError> {
        self.one_sided(
            wr_id,
            OpKind::Write,
            remote,
            local_off,
            len,
            |rkey, addr| SendOp::Write { rkey, addr },
        )
    }

    fn post_write_doorbell(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        local_off: u64,
        len: u32,
        imm: u32,
    ) -> Result<(), LinkError> {
        self.one_sided(
            wr_id,
            OpKind::WriteDoorbell,
            remote,
            local_off,
            len,
            |rkey, addr| SendOp::WriteImm { rkey, addr, imm },
        )
    }

    fn post_cas(
        &mut self,
        wr_id: WrId,
        remote: RemoteAddr,
        expected: u64,
        desired: u64,
    ) -> Result<(), LinkError> {
        self.one_sided(wr_id, OpKind::Cas, remote, 0, 8, |rkey, addr| SendOp::Cas {
            rkey,
            addr,
            expected,
            desired,
        })
    }

    fn post_faa(&mut self, wr_id: WrId, remote: RemoteAddr, add: u64) -> Result<(), LinkError> {
        self.one_sided(wr_id, OpKind::Faa, remote, 0, 8, |rkey, addr| SendOp::Faa {
            rkey,
            addr,
            add,
        })
    }

    fn poll_completions(&mut self, out: &mut [Completion]) -> usize {
        self.reap();
        let n = self.cq.pop_into(out);
        self.counters.completed += n as u64;
        n
    }

    fn send(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        self.peer_ok()?;
        if msg.len() > MSG_MAX {
            return Err(LinkError::TooLong {
                len: msg.len(),
                max: MSG_MAX,
            });
        }
        if self.credit_left() == 0 {
            self.counters.ring_full += 1;
            return Err(LinkError::Full { slots: self.slots });
        }
        let seq = self.tx_tail;
        let off = (seq % self.slots as u64) * SLOT_SIZE as u64;
        let len = msg.len() as u32;
        let m = self.sendbufs.mem();
        m.store_u64(off, seq);
        m.store_u64(off + 8, len as u64);
        m.store_u64(off + 16, (checksum(seq, len, 0, 0, msg) as u64) << 32);
        m.write(off + ENTRY_HDR as u64, msg);
        self.post(
            TAG_RING_SEND | seq,
            SendOp::Send,
            Buf::Send,
            off,
            ENTRY_HDR as u32 + len,
        )?;
        self.tx_tail += 1;
        self.counters.sent += 1;
        Ok(())
    }

    /// `buf` must hold [`MSG_MAX`] bytes: a receive completion cannot be put back, so the
    /// size is checked before polling.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<Received>, LinkError> {
        if buf.len() < MSG_MAX {
            return Err(LinkError::BufferTooSmall {
                len: buf.len(),
                needed: MSG_MAX,
            });
        }
        self.reap();
        let polled = match self.recv_cq.start_poll() {
            Ok(mut p) => p.next().map(|wc| {
                (
                    wc.wr_id(),
                    wc.status(),
                    wc.opcode(),
                    wc.byte_len(),
                    wc.imm_data(),
                )
            }),
            Err(_) => None,
        };
        let Some((id, status, opcode, byte_len, imm)) = polled else {
            self.peer_ok()?;
            return Ok(None);
        };
        if status != WorkCompletionStatus::Success as u32 {
            self.gone.get_or_insert(GoneReason::Transport);
            return Err(LinkError::PeerGone {
                reason: GoneReason::Transport,
            });
        }
        let pos = self.rx_head;
        let off = (id % self.slots as u64) * SLOT_SIZE as u64;
        let result = if opcode == WorkCompletionOperationType::ReceiveWithImmediate as u32 {
            Ok(Some(Received {
                len: 0,
                imm: Some(imm),
            }))
        } else {
            let m = self.recvbufs.mem();
            let seq = m.load_u64(off).unwrap_or(0);
            let len = m.load_u64(off + 8).unwrap_or(0) as u32;
            let sum = (m.load_u64(off + 16).unwrap_or(0) >> 32) as u32;
            let len_ok = (len as usize) <= MSG_MAX && byte_len as usize == ENTRY_HDR + len as usize;
            if seq != pos {
                Err(LinkError::Corrupt {
                    pos,
                    kind: crate::CorruptKind::Sequence {
                        expected: pos,
                        found: seq,
                    },
                })
            } else if !len_ok {
                Err(LinkError::Corrupt {
                    pos,
                    kind: crate::CorruptKind::Length { len },
                })
            } else if buf.len() < len as usize {
                Err(LinkError::BufferTooSmall {
                    len: buf.len(),
                    needed: len as usize,
                })
            } else {
                m.read(off + ENTRY_HDR as u64, &mut buf[..len as usize]);
                if checksum(seq, len, 0, 0, &buf[..len as usize]) != sum {
                    Err(LinkError::Corrupt {
                        pos,
                        kind: crate::CorruptKind::Checksum,
                    })
                } else {
                    Ok(Some(Received {
                        len: len as usize,
                        imm: None,
                    }))
                }
            }
        };
        // The buffer goes back to the receive queue and the slot is consumed in every case
        // (a receive completion cannot be un-polled).
        let _ = post_recv(&mut self.qp, id, &self.recvbufs, off, SLOT_SIZE as u32);
        self.rx_head += 1;
        self.return_credit();
        match &result {
            Ok(_) => self.counters.received += 1,
            Err(LinkError::Corrupt { .. }) => self.counters.corrupt += 1,
            Err(_) => {}
        }
        result
    }

    fn wait_recv(&mut self, backoff: &Backoff) {
        if !backoff.enabled {
            return;
        }
        for _ in 0..backoff.spins {
            std::hint::spin_loop();
        }
        // No completion channel: a short sleep bounds the latency added.
        std::thread::sleep(backoff.sleep.min(std::time::Duration::from_micros(50)));
    }

    fn check_peer(&mut self, now_ns: u64) -> Result<(), LinkError> {
        self.peer_ok()?;
        if now_ns.wrapping_sub(self.last_poll_ns) >= 1_000_000 {
            self.last_poll_ns = now_ns;
            if sys::peer_hung_up(self.side.as_fd()) {
                self.gone = Some(GoneReason::SocketClosed);
                return self.peer_ok();
            }
        }
        Ok(())
    }

    fn counters(&self) -> LinkCounters {
        self.counters
    }
}
