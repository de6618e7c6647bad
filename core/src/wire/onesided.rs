//! One-sided ops: READ / WRITE / CAS / FAA on a region, authorised by the region's key, and
//! their results.
//!
//! One request carries 1 to [`MAX_REMOTE_OPS`] ops so a client running a handler locally
//! (DESIGN §3, §5) sends all the ops of one step in one round trip. The ops run in order and
//! independently (not as a transaction); each gets its own result.

use super::{
    at_most, exact, get_u16, get_u32, get_u64, need, set_u16, set_u32, set_u64, zero, ErrorCode,
    WireError, MAX_REMOTE_OPS, ONE_SIDED_MAX_LEN,
};
use crate::abi::OpKind;

mod req {
    use crate::wire::Field;

    pub const N_OPS: usize = 0;
    pub const RESERVED: Field = 1..8;
    pub const OPS: usize = 8;

    /// One op descriptor, relative to its start.
    pub const KIND: usize = 0;
    pub const OP_RESERVED: Field = 1..4;
    pub const REGION: Field = 4..8;
    pub const KEY: Field = 8..16;
    pub const OFFSET: Field = 16..24;
    pub const LEN: Field = 24..28;
    pub const OP_RESERVED2: Field = 28..32;
    pub const ARG0: Field = 32..40;
    pub const ARG1: Field = 40..48;
    pub const OP_SIZE: usize = 48;
}

/// One op descriptor as it is on the wire (not yet validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawRemoteOp {
    pub kind: u8,
    pub region: u32,
    pub key: u64,
    pub offset: u64,
    /// READ: bytes to read; WRITE: bytes of data that follow; CAS/FAA: 8.
    pub len: u32,
    /// CAS: expected; FAA: addend; else 0.
    pub arg0: u64,
    /// CAS: desired; else 0.
    pub arg1: u64,
}

fn check_count(n: usize) -> Result<(), WireError> {
    if n == 0 || n > MAX_REMOTE_OPS {
        Err(WireError::BadOpCount {
            count: n,
            max: MAX_REMOTE_OPS,
        })
    } else {
        Ok(())
    }
}

/// A view of a one-sided request payload: a count, the op descriptors, then the data of the
/// WRITE ops in op order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneSidedPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> OneSidedPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the op count and that the descriptors plus the WRITE data exactly fill the
    /// payload.
    pub fn check_len(&self) -> Result<(), WireError> {
        let d = self.buffer.as_ref();
        need(req::OPS, d.len())?;
        let n = self.n_ops() as usize;
        check_count(n)?;
        let fixed = req::OPS + n * req::OP_SIZE;
        need(fixed, d.len())?;
        let data: usize = (0..n)
            .filter_map(|i| self.op(i))
            .filter(|op| op.kind == OpKind::Write as u8)
            .fold(0usize, |sum, op| sum.saturating_add(op.len as usize));
        exact(fixed, data, d.len(), "onesided.write_len", "write data")
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn n_ops(&self) -> u8 {
        self.buffer.as_ref()[req::N_OPS]
    }

    /// Op descriptor `i`, or `None` past the buffer.
    pub fn op(&self, i: usize) -> Option<RawRemoteOp> {
        let start = req::OPS.checked_add(i.checked_mul(req::OP_SIZE)?)?;
        let b = self
            .buffer
            .as_ref()
            .get(start..start.checked_add(req::OP_SIZE)?)?;
        Some(RawRemoteOp {
            kind: b[req::KIND],
            region: get_u32(b, req::REGION),
            key: get_u64(b, req::KEY),
            offset: get_u64(b, req::OFFSET),
            len: get_u32(b, req::LEN),
            arg0: get_u64(b, req::ARG0),
            arg1: get_u64(b, req::ARG1),
        })
    }

    /// Whether the reserved bytes of the header and of the first `n_ops` descriptors are zero.
    fn reserved_zero(&self) -> Result<(), WireError> {
        let d = self.buffer.as_ref();
        zero("onesided.reserved", &d[req::RESERVED])?;
        for i in 0..self.n_ops() as usize {
            let b = &d[req::OPS + i * req::OP_SIZE..][..req::OP_SIZE];
            zero("onesided.op.reserved", &b[req::OP_RESERVED])?;
            zero("onesided.op.reserved", &b[req::OP_RESERVED2])?;
        }
        Ok(())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> OneSidedPacket<&'a T> {
    /// The WRITE data of all ops, concatenated.
    pub fn data(&self) -> &'a [u8] {
        let start = req::OPS + self.n_ops() as usize * req::OP_SIZE;
        &self.buffer.as_ref()[start..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> OneSidedPacket<T> {
    pub fn set_n_ops(&mut self, n: u8) {
        let d = self.buffer.as_mut();
        d[req::N_OPS] = n;
        d[req::RESERVED].fill(0);
    }

    /// Writes descriptor `i` (its reserved bytes zeroed).
    pub fn set_op(&mut self, i: usize, op: &RawRemoteOp) {
        let b = &mut self.buffer.as_mut()[req::OPS + i * req::OP_SIZE..][..req::OP_SIZE];
        b.fill(0);
        b[req::KIND] = op.kind;
        set_u32(b, req::REGION, op.region);
        set_u64(b, req::KEY, op.key);
        set_u64(b, req::OFFSET, op.offset);
        set_u32(b, req::LEN, op.len);
        set_u64(b, req::ARG0, op.arg0);
        set_u64(b, req::ARG1, op.arg1);
    }

    /// The WRITE data area (everything after `n_ops` descriptors).
    pub fn data_mut(&mut self) -> &mut [u8] {
        let start = req::OPS + self.n_ops() as usize * req::OP_SIZE;
        &mut self.buffer.as_mut()[start..]
    }
}

/// What a one-sided op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpBody<'a> {
    /// Read `len` bytes (at most [`ONE_SIDED_MAX_LEN`]).
    Read { len: u32 },
    /// Write `data` (at most [`ONE_SIDED_MAX_LEN`] bytes).
    Write { data: &'a [u8] },
    /// Compare-and-swap the 8-byte word at `offset`; the result holds the previous value.
    Cas { expected: u64, desired: u64 },
    /// Fetch-and-add on the 8-byte word at `offset`; the result holds the previous value.
    Faa { addend: u64 },
}

impl OpBody<'_> {
    pub fn kind(&self) -> OpKind {
        match self {
            OpBody::Read { .. } => OpKind::Read,
            OpBody::Write { .. } => OpKind::Write,
            OpBody::Cas { .. } => OpKind::Cas,
            OpBody::Faa { .. } => OpKind::Faa,
        }
    }

    /// The op's length and arguments as an op slot holds them: `(len, arg0, arg1)` (a
    /// WRITE's length is its data's; CAS and FAA are one word).
    pub fn operands(&self) -> (u32, u64, u64) {
        match *self {
            OpBody::Read { len } => (len, 0, 0),
            OpBody::Write { data } => (data.len() as u32, 0, 0),
            OpBody::Cas { expected, desired } => (8, expected, desired),
            OpBody::Faa { addend } => (8, addend, 0),
        }
    }
}

/// One one-sided op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteOp<'a> {
    pub region: u32,
    /// The region's key: one-sided ops are authorised by it, not by a tenant.
    pub key: u64,
    pub offset: u64,
    pub body: OpBody<'a>,
}

impl RemoteOp<'_> {
    const EMPTY: RemoteOp<'static> = RemoteOp {
        region: 0,
        key: 0,
        offset: 0,
        body: OpBody::Read { len: 0 },
    };

    pub fn check(&self) -> Result<(), WireError> {
        match self.body {
            OpBody::Read { len } => at_most("onesided.read_len", len as usize, ONE_SIDED_MAX_LEN),
            OpBody::Write { data } => at_most("onesided.write_len", data.len(), ONE_SIDED_MAX_LEN),
            OpBody::Cas { .. } | OpBody::Faa { .. } => Ok(()),
        }
    }

    fn raw(&self) -> RawRemoteOp {
        let (len, arg0, arg1) = self.body.operands();
        RawRemoteOp {
            kind: self.body.kind() as u8,
            region: self.region,
            key: self.key,
            offset: self.offset,
            len,
            arg0,
            arg1,
        }
    }
}

/// A one-sided request: 1 to [`MAX_REMOTE_OPS`] ops, held inline (no allocation).
#[derive(Debug, Clone, Copy)]
pub struct OneSidedRepr<'a> {
    ops: [RemoteOp<'a>; MAX_REMOTE_OPS],
    n: usize,
}

impl PartialEq for OneSidedRepr<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.ops() == other.ops()
    }
}

impl Eq for OneSidedRepr<'_> {}

impl<'a> OneSidedRepr<'a> {
    /// A request of these ops (1 to [`MAX_REMOTE_OPS`]).
    pub fn new(ops: &[RemoteOp<'a>]) -> Result<Self, WireError> {
        check_count(ops.len())?;
        let mut all = [RemoteOp::EMPTY; MAX_REMOTE_OPS];
        all[..ops.len()].copy_from_slice(ops);
        Ok(Self {
            ops: all,
            n: ops.len(),
        })
    }

    /// A request of one op.
    pub fn single(op: RemoteOp<'a>) -> Self {
        let mut ops = [RemoteOp::EMPTY; MAX_REMOTE_OPS];
        ops[0] = op;
        Self { ops, n: 1 }
    }

    pub fn ops(&self) -> &[RemoteOp<'a>] {
        &self.ops[..self.n]
    }

    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &OneSidedPacket<&'a T>,
    ) -> Result<Self, WireError> {
        packet.check_len()?;
        packet.reserved_zero()?;
        let mut data = packet.data();
        let mut ops = [RemoteOp::EMPTY; MAX_REMOTE_OPS];
        let n = packet.n_ops() as usize;
        for (i, slot) in ops.iter_mut().enumerate().take(n) {
            let raw = packet.op(i).ok_or(WireError::Truncated {
                needed: req::OPS + (i + 1) * req::OP_SIZE,
                got: 0,
            })?;
            let kind = OpKind::from_u8(raw.kind).ok_or(WireError::BadValue {
                field: "onesided.op.kind",
                value: raw.kind as u64,
            })?;
            let no_args = |raw: &RawRemoteOp| {
                if raw.arg0 != 0 || raw.arg1 != 0 {
                    Err(WireError::NonZeroReserved {
                        field: "onesided.op.args",
                    })
                } else {
                    Ok(())
                }
            };
            let word = |raw: &RawRemoteOp| {
                if raw.len != 8 {
                    Err(WireError::BadValue {
                        field: "onesided.op.len",
                        value: raw.len as u64,
                    })
                } else {
                    Ok(())
                }
            };
            let body = match kind {
                OpKind::Read => {
                    no_args(&raw)?;
                    OpBody::Read { len: raw.len }
                }
                OpKind::Write => {
                    no_args(&raw)?;
                    let len = raw.len as usize;
                    // check_len proved the data area holds every WRITE's bytes.
                    let (mine, rest) =
                        data.split_at_checked(len).ok_or(WireError::LengthPastEnd {
                            field: "onesided.write_len",
                            len,
                            available: data.len(),
                        })?;
                    data = rest;
                    OpBody::Write { data: mine }
                }
                OpKind::Cas => {
                    word(&raw)?;
                    OpBody::Cas {
                        expected: raw.arg0,
                        desired: raw.arg1,
                    }
                }
                OpKind::Faa => {
                    word(&raw)?;
                    if raw.arg1 != 0 {
                        return Err(WireError::NonZeroReserved {
                            field: "onesided.op.args",
                        });
                    }
                    OpBody::Faa { addend: raw.arg0 }
                }
            };
            *slot = RemoteOp {
                region: raw.region,
                key: raw.key,
                offset: raw.offset,
                body,
            };
            slot.check()?;
        }
        Ok(Self { ops, n })
    }

    pub fn check(&self) -> Result<(), WireError> {
        check_count(self.n)?;
        self.ops().iter().try_for_each(RemoteOp::check)
    }

    pub fn buffer_len(&self) -> usize {
        let data: usize = self
            .ops()
            .iter()
            .map(|op| match op.body {
                OpBody::Write { data } => data.len(),
                _ => 0,
            })
            .sum();
        req::OPS + self.n * req::OP_SIZE + data
    }

    /// Writes the payload; the buffer must be exactly `buffer_len()` bytes and `check()` must
    /// pass.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut OneSidedPacket<T>) {
        packet.set_n_ops(self.n as u8);
        for (i, op) in self.ops().iter().enumerate() {
            packet.set_op(i, &op.raw());
        }
        let mut at = 0;
        let area = packet.data_mut();
        for op in self.ops() {
            if let OpBody::Write { data } = op.body {
                area[at..at + data.len()].copy_from_slice(data);
                at += data.len();
            }
        }
    }
}

mod rep {
    use crate::wire::Field;

    pub const N_OPS: usize = 0;
    pub const RESERVED: Field = 1..8;
    pub const RESULTS: usize = 8;

    /// One result, relative to its start.
    pub const KIND: usize = 0;
    pub const RES_RESERVED: usize = 1;
    pub const STATUS: Field = 2..4;
    pub const LEN: Field = 4..8;
    pub const VALUE: Field = 8..16;
    pub const RESULT_SIZE: usize = 16;
}

// The largest reply (every op a full READ) fits one datagram.
const _: () = assert!(
    super::HEADER_LEN + rep::RESULTS + MAX_REMOTE_OPS * (rep::RESULT_SIZE + ONE_SIDED_MAX_LEN)
        <= super::MAX_DATAGRAM
);

/// One op result as it is on the wire (not yet validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawOpResult {
    pub kind: u8,
    /// 0 for success, else an [`ErrorCode`].
    pub status: u16,
    /// Bytes of read data that follow (READ only).
    pub len: u32,
    /// The previous value (CAS, FAA).
    pub value: u64,
}

/// A view of a one-sided reply payload: a count, the results, then the READ data in op order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneSidedReplyPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> OneSidedReplyPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the result count and that the results plus the read data exactly fill the
    /// payload.
    pub fn check_len(&self) -> Result<(), WireError> {
        let d = self.buffer.as_ref();
        need(rep::RESULTS, d.len())?;
        let n = self.n_ops() as usize;
        check_count(n)?;
        let fixed = rep::RESULTS + n * rep::RESULT_SIZE;
        need(fixed, d.len())?;
        let data = (0..n)
            .filter_map(|i| self.result(i))
            .fold(0usize, |s, r| s.saturating_add(r.len as usize));
        exact(fixed, data, d.len(), "onesided_reply.len", "read data")
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn n_ops(&self) -> u8 {
        self.buffer.as_ref()[rep::N_OPS]
    }

    /// Result `i`, or `None` past the buffer.
    pub fn result(&self, i: usize) -> Option<RawOpResult> {
        let start = rep::RESULTS.checked_add(i.checked_mul(rep::RESULT_SIZE)?)?;
        let b = self
            .buffer
            .as_ref()
            .get(start..start.checked_add(rep::RESULT_SIZE)?)?;
        Some(RawOpResult {
            kind: b[rep::KIND],
            status: get_u16(b, rep::STATUS),
            len: get_u32(b, rep::LEN),
            value: get_u64(b, rep::VALUE),
        })
    }

    fn reserved_zero(&self) -> Result<(), WireError> {
        let d = self.buffer.as_ref();
        zero("onesided_reply.reserved", &d[rep::RESERVED])?;
        for i in 0..self.n_ops() as usize {
            if d[rep::RESULTS + i * rep::RESULT_SIZE + rep::RES_RESERVED] != 0 {
                return Err(WireError::NonZeroReserved {
                    field: "onesided_reply.result.reserved",
                });
            }
        }
        Ok(())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> OneSidedReplyPacket<&'a T> {
    /// The read data of all results, concatenated.
    pub fn data(&self) -> &'a [u8] {
        let start = rep::RESULTS + self.n_ops() as usize * rep::RESULT_SIZE;
        &self.buffer.as_ref()[start..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> OneSidedReplyPacket<T> {
    pub fn set_n_ops(&mut self, n: u8) {
        let d = self.buffer.as_mut();
        d[rep::N_OPS] = n;
        d[rep::RESERVED].fill(0);
    }

    pub fn set_result(&mut self, i: usize, r: &RawOpResult) {
        let b =
            &mut self.buffer.as_mut()[rep::RESULTS + i * rep::RESULT_SIZE..][..rep::RESULT_SIZE];
        b[rep::KIND] = r.kind;
        b[rep::RES_RESERVED] = 0;
        set_u16(b, rep::STATUS, r.status);
        set_u32(b, rep::LEN, r.len);
        set_u64(b, rep::VALUE, r.value);
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        let start = rep::RESULTS + self.n_ops() as usize * rep::RESULT_SIZE;
        &mut self.buffer.as_mut()[start..]
    }
}

/// The result of one one-sided op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpResult<'a> {
    pub kind: OpKind,
    /// `None` if the op succeeded.
    pub error: Option<ErrorCode>,
    /// CAS and FAA: the word's value before the op (a CAS succeeded iff it equals `expected`).
    /// Zero otherwise.
    pub previous: u64,
    /// READ: the bytes read. Empty otherwise.
    pub data: &'a [u8],
}

impl OpResult<'_> {
    const EMPTY: OpResult<'static> = OpResult {
        kind: OpKind::Read,
        error: None,
        previous: 0,
        data: &[],
    };

    /// Checks that only the fields the kind and status allow are set.
    pub fn check(&self) -> Result<(), WireError> {
        let value_allowed = self.error.is_none() && matches!(self.kind, OpKind::Cas | OpKind::Faa);
        let data_allowed = self.error.is_none() && self.kind == OpKind::Read;
        if !value_allowed && self.previous != 0 {
            return Err(WireError::NonZeroReserved {
                field: "onesided_reply.value",
            });
        }
        if !data_allowed && !self.data.is_empty() {
            return Err(WireError::NonZeroReserved {
                field: "onesided_reply.len",
            });
        }
        at_most("onesided_reply.len", self.data.len(), ONE_SIDED_MAX_LEN)
    }
}

/// A one-sided reply: one result per op of the request, in order.
#[derive(Debug, Clone, Copy)]
pub struct OneSidedReplyRepr<'a> {
    results: [OpResult<'a>; MAX_REMOTE_OPS],
    n: usize,
}

impl PartialEq for OneSidedReplyRepr<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.results() == other.results()
    }
}

impl Eq for OneSidedReplyRepr<'_> {}

impl<'a> OneSidedReplyRepr<'a> {
    /// A reply of these results (1 to [`MAX_REMOTE_OPS`]).
    pub fn new(results: &[OpResult<'a>]) -> Result<Self, WireError> {
        check_count(results.len())?;
        let mut all = [OpResult::EMPTY; MAX_REMOTE_OPS];
        all[..results.len()].copy_from_slice(results);
        Ok(Self {
            results: all,
            n: results.len(),
        })
    }

    pub fn results(&self) -> &[OpResult<'a>] {
        &self.results[..self.n]
    }

    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &OneSidedReplyPacket<&'a T>,
    ) -> Result<Self, WireError> {
        packet.check_len()?;
        packet.reserved_zero()?;
        let mut data = packet.data();
        let mut results = [OpResult::EMPTY; MAX_REMOTE_OPS];
        let n = packet.n_ops() as usize;
        for (i, slot) in results.iter_mut().enumerate().take(n) {
            let raw = packet.result(i).ok_or(WireError::Truncated {
                needed: rep::RESULTS + (i + 1) * rep::RESULT_SIZE,
                got: 0,
            })?;
            let kind = OpKind::from_u8(raw.kind).ok_or(WireError::BadValue {
                field: "onesided_reply.kind",
                value: raw.kind as u64,
            })?;
            let error = match raw.status {
                0 => None,
                s => Some(ErrorCode::from_u16(s).ok_or(WireError::BadValue {
                    field: "onesided_reply.status",
                    value: s as u64,
                })?),
            };
            let len = raw.len as usize;
            let (mine, rest) = data.split_at_checked(len).ok_or(WireError::LengthPastEnd {
                field: "onesided_reply.len",
                len,
                available: data.len(),
            })?;
            data = rest;
            *slot = OpResult {
                kind,
                error,
                previous: raw.value,
                data: mine,
            };
            slot.check()?;
        }
        Ok(Self { results, n })
    }

    pub fn check(&self) -> Result<(), WireError> {
        check_count(self.n)?;
        self.results().iter().try_for_each(OpResult::check)
    }

    pub fn buffer_len(&self) -> usize {
        let data: usize = self.results().iter().map(|r| r.data.len()).sum();
        rep::RESULTS + self.n * rep::RESULT_SIZE + data
    }

    /// Writes the payload; the buffer must be exactly `buffer_len()` bytes and `check()` must
    /// pass.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut OneSidedReplyPacket<T>) {
        packet.set_n_ops(self.n as u8);
        for (i, r) in self.results().iter().enumerate() {
            let raw = RawOpResult {
                kind: r.kind as u8,
                status: r.error.map_or(0, |e| e as u16),
                len: r.data.len() as u32,
                value: r.previous,
            };
            packet.set_result(i, &raw);
        }
        let mut at = 0;
        let area = packet.data_mut();
        for r in self.results() {
            area[at..at + r.data.len()].copy_from_slice(r.data);
            at += r.data.len();
        }
    }
}
