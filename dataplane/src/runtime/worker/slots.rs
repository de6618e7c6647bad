//! The slot table: messages in flight (parked on link ops or forwarded to the host), and
//! the ids that name a slot on the link and on the host ring.

use naam_core::abi::{Ctx, OpKind, MAX_OPS};
use naam_core::exec::Run;
use naam_core::wire::ErrorCode;

use super::*;
use crate::port::{Peer, Port};
use crate::runtime::fair::{Account, MAX_TENANTS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    Free,
    /// Waiting for `pending` link ops.
    Ops,
    /// Forwarded to the host, waiting for its reply.
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotKind {
    Am,
    OneSided,
}

/// The result of one one-sided op, kept while its completion is outstanding.
#[derive(Debug, Clone, Copy)]
pub(super) struct OsResult {
    pub kind: OpKind,
    pub error: Option<ErrorCode>,
    pub previous: u64,
    /// Where READ data lands in the slot's staging area, and how much.
    pub local_off: u32,
    pub len: u32,
}

pub(super) const OS_EMPTY: OsResult = OsResult {
    kind: OpKind::Read,
    error: None,
    previous: 0,
    local_off: 0,
    len: 0,
};

/// A message in flight.
pub(super) struct Slot {
    pub state: SlotState,
    pub kind: SlotKind,
    pub generation: u32,
    pub peer: Peer,
    pub request_id: u64,
    pub class: u16,
    pub exec_hint: bool,
    pub read_only: bool,
    /// Remembered in the reply cache (its final reply is stored there).
    pub dedup: bool,
    /// It may have changed host memory: a write or atomic was posted for it, or it was
    /// forwarded to the host as a mutation. Lost then, its outcome is unknown.
    pub wrote: bool,
    pub offload: u32,
    pub tenant: u32,
    /// Its tenant's account, charged with each step's run time.
    pub account: Account,
    /// An active message's execution: its steps and the ops of its current step.
    pub run: Run,
    pub pending: u8,
    pub failed: Option<ErrorCode>,
    /// A one-sided request's ops, and their results.
    pub n_ops: u8,
    pub os: [OsResult; MAX_OPS],
    pub ctx: Box<Ctx>,
}

impl Slot {
    pub(super) fn new() -> Slot {
        Slot {
            state: SlotState::Free,
            kind: SlotKind::Am,
            generation: 0,
            peer: Peer::default(),
            request_id: 0,
            class: 0,
            exec_hint: false,
            read_only: true,
            dedup: false,
            wrote: false,
            offload: 0,
            tenant: 0,
            account: Account::default(),
            run: Run::new(),
            pending: 0,
            failed: None,
            n_ops: 0,
            os: [OS_EMPTY; MAX_OPS],
            ctx: Ctx::boxed(),
        }
    }
}

/// Where a request came from, everything a reply needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReqInfo {
    pub peer: Peer,
    pub request_id: u64,
    pub class: u16,
    /// The client's window (docs/protocol.md, "De-duplication"); 0: not said.
    pub window: u32,
    /// The most bytes an error reply to it may take: the request's own length until its
    /// sender proved a capability or a key (a forged source address must not make this
    /// worker an amplifier), then no limit ([`ReqInfo::PROVEN`]).
    pub reply_max: usize,
}

impl ReqInfo {
    /// `reply_max` of a request whose sender proved who it is.
    pub const PROVEN: usize = usize::MAX;

    /// The same request, its sender proven.
    pub fn proven(&self) -> ReqInfo {
        ReqInfo {
            reply_max: Self::PROVEN,
            ..*self
        }
    }
}

/// Names a slot outside the worker: in a link work-request id and in a host ring entry's
/// token. It carries the generation the slot had when the id was issued, so an id that comes
/// back for a recycled slot is recognised as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotRef {
    pub index: usize,
    /// 30 bits (a work-request id has room for no more; the table wraps it there).
    pub generation: u32,
}

const GENERATION_MASK: u32 = 0x3fff_ffff;

impl SlotRef {
    /// The work-request id of the slot's op `op`: generation (30 bits) | slot (32) | op (2).
    #[inline]
    pub fn wr_id(self, op: usize) -> u64 {
        (u64::from(self.generation) << 34) | ((self.index as u64) << 2) | op as u64
    }

    /// The slot and the op a work-request id names.
    #[inline]
    pub fn from_wr_id(wr: u64) -> (SlotRef, usize) {
        let r = SlotRef {
            index: ((wr >> 2) & 0xffff_ffff) as usize,
            generation: (wr >> 34) as u32,
        };
        (r, (wr & 3) as usize)
    }

    /// The ring token (`TOKEN_LEN` bytes, little-endian): generation (32 bits) | slot (32).
    #[inline]
    pub fn token(self) -> u64 {
        (u64::from(self.generation) << 32) | self.index as u64
    }

    #[inline]
    pub fn from_token(t: u64) -> SlotRef {
        SlotRef {
            index: (t & 0xffff_ffff) as usize,
            generation: (t >> 32) as u32,
        }
    }
}

/// The worker's messages in flight: a fixed table of slots (allocated at setup) and its free
/// list. A slot is held from [`SlotTable::alloc`] until [`SlotTable::release`].
pub(super) struct SlotTable {
    slots: Box<[Slot]>,
    free: Vec<u32>,
    /// Slots in state `Host`.
    at_host: usize,
    /// Slots held per tenant account (for the share, [`SlotTable::alloc`]; up to 65 536).
    held: [u32; MAX_TENANTS],
}

/// Why [`SlotTable::alloc`] gave no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoSlot {
    /// Every slot is held.
    Full,
    /// The tenant holds its share while the worker is shared.
    OverShare,
}

impl SlotTable {
    pub fn new(n: usize) -> SlotTable {
        let slots: Box<[Slot]> = (0..n.max(1)).map(|_| Slot::new()).collect();
        let free = (0..slots.len() as u32).rev().collect();
        SlotTable {
            slots,
            free,
            at_host: 0,
            held: [0; MAX_TENANTS],
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Slots held.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Of those, the ones forwarded to the host.
    pub fn at_host(&self) -> usize {
        self.at_host
    }

    /// The slots one tenant may hold while another uses the worker: all but an eighth (at
    /// least one), which stays for the others. A heavy tenant whose messages waited at the
    /// host held every slot, and a light one was refused `busy` though the fair order
    /// never refused it (the second probe, 2026-12-06).
    pub fn share(&self) -> usize {
        self.slots.len() - (self.slots.len() / 8).max(1).min(self.slots.len() - 1)
    }

    /// Takes a free slot for the request `info` of `account`; refused when every slot is
    /// held, or when `shared` (another tenant uses the worker) and the account holds its
    /// [`SlotTable::share`].
    pub fn alloc(
        &mut self,
        info: &ReqInfo,
        kind: SlotKind,
        account: Account,
        shared: bool,
    ) -> Result<usize, NoSlot> {
        if shared && self.held[account.index()] as usize >= self.share() {
            return Err(NoSlot::OverShare);
        }
        let i = self.free.pop().ok_or(NoSlot::Full)? as usize;
        self.held[account.index()] += 1;
        let s = &mut self.slots[i];
        s.account = account;
        s.generation = s.generation.wrapping_add(1) & GENERATION_MASK;
        // Allocated: `Ops` until the message is posted or forwarded (never `Free` while held).
        s.state = SlotState::Ops;
        s.kind = kind;
        s.peer = info.peer;
        s.request_id = info.request_id;
        s.class = info.class;
        s.exec_hint = false;
        s.read_only = true;
        s.dedup = false;
        s.wrote = false;
        s.run.reset();
        s.pending = 0;
        s.failed = None;
        s.n_ops = 0;
        Ok(i)
    }

    /// Returns slot `i` to the free list (once: a free slot is left alone).
    pub fn release(&mut self, i: usize) {
        if self.slots[i].state == SlotState::Host {
            self.at_host -= 1;
        }
        if self.slots[i].state != SlotState::Free {
            self.slots[i].state = SlotState::Free;
            self.free.push(i as u32);
            let held = &mut self.held[self.slots[i].account.index()];
            *held = held.saturating_sub(1);
        }
    }

    /// Slot `i` went to the host.
    pub fn mark_at_host(&mut self, i: usize) {
        debug_assert_ne!(self.slots[i].state, SlotState::Host);
        self.slots[i].state = SlotState::Host;
        self.at_host += 1;
    }

    /// How slot `i` is named outside the worker now.
    pub fn slot_ref(&self, i: usize) -> SlotRef {
        SlotRef {
            index: i,
            generation: self.slots[i].generation,
        }
    }

    /// The slot `r` names, if it still holds the message `r` was issued for and is in `state`.
    pub fn resolve(&self, r: SlotRef, state: SlotState) -> Option<usize> {
        self.slots
            .get(r.index)
            .filter(|s| s.state == state && s.generation == r.generation)
            .map(|_| r.index)
    }
}

impl std::ops::Index<usize> for SlotTable {
    type Output = Slot;

    fn index(&self, i: usize) -> &Slot {
        &self.slots[i]
    }
}

impl std::ops::IndexMut<usize> for SlotTable {
    fn index_mut(&mut self, i: usize) -> &mut Slot {
        &mut self.slots[i]
    }
}

/// Why the messages in flight will not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lost {
    /// The host agent (or the link to it) is gone.
    HostGone,
    /// This dataplane is stopping and they did not finish in its grace time.
    Stopping,
}

impl Lost {
    /// The error detail of a message answered `code` for this cause.
    fn detail(self, code: ErrorCode) -> &'static str {
        match (self, code == ErrorCode::OutcomeUnknown) {
            (Lost::HostGone, true) => {
                "host agent gone while this mutation was in flight: it may have been applied"
            }
            (Lost::HostGone, false) => "host agent gone",
            (Lost::Stopping, true) => {
                "dataplane stopped while this mutation was in flight: it may have been applied"
            }
            (Lost::Stopping, false) => "dataplane stopped before it finished: not executed",
        }
    }
}

impl Worker {
    /// Every message in flight is answered, `HostUnavailable` (not executed) or
    /// `OutcomeUnknown` for a mutation that may have reached host memory.
    pub(super) fn fail_in_flight<P: Port>(&mut self, port: &mut P, why: Lost) -> usize {
        let mut n = 0;
        for i in 0..self.slots.len() {
            if self.slots[i].state != SlotState::Free {
                let code = lost_code(&self.slots[i]);
                self.finish_error(i, port, code, why.detail(code));
                n += 1;
            }
        }
        if n > 0 {
            tracing::warn!(worker = self.cfg.id, n, cause = ?why, "answered in-flight messages");
        }
        n
    }
}

/// How a message lost with the host is answered: a mutation that may have reached host
/// memory has an unknown outcome (and that answer is remembered, so a retry does not run it
/// again); anything else was not executed and may be retried.
pub(super) fn lost_code(s: &Slot) -> ErrorCode {
    if s.dedup && s.wrote {
        ErrorCode::OutcomeUnknown
    } else {
        ErrorCode::HostUnavailable
    }
}
