//! The handler ABI: a Rust mirror of `handlers/include/naam.h`.
//!
//! The context is a plain byte block ([`Ctx`]) because the same bytes are handed to the JIT, the
//! interpreter and the verifier, and copied in and out of wire messages. Field offsets are
//! `const`s here; `tests/abi_header.rs` compiles static assertions generated from these
//! constants against the C header, so the two cannot drift.

use core::ops::Range;

/// `NAAM_ABI_VERSION`.
pub const ABI_VERSION: u32 = 1;
/// `NAAM_ARGS_MAX`: bytes of message arguments.
pub const ARGS_MAX: usize = 1088;
/// `NAAM_STATE_SIZE`: persistent handler state.
pub const STATE_SIZE: usize = 256;
/// `NAAM_MAX_OPS`: ops per step.
pub const MAX_OPS: usize = 4;
/// `NAAM_DATA_SIZE`: op data windows.
pub const DATA_SIZE: usize = 2048;
/// `NAAM_OUT_MAX`: reply payload.
pub const OUT_MAX: usize = 1088;
/// Size of `struct naam_op`.
pub const OP_SIZE: usize = 56;
/// Bytes of `struct naam_op` the handler may write (kind .. arg1).
pub const OP_WRITABLE: usize = 40;
/// The eBPF stack available to a handler.
pub const STACK_SIZE: usize = 512;

/// Byte offsets of `struct naam_ctx` fields.
pub mod ctx {
    pub const ABI_VERSION: usize = 0;
    pub const STEP: usize = 4;
    pub const ARGS_LEN: usize = 8;
    pub const RESERVED0: usize = 12;
    pub const N_OPS: usize = 16;
    pub const OUT_LEN: usize = 20;
    pub const SCRATCH: usize = 24;
    pub const ARGS: usize = 32;
    pub const STATE: usize = ARGS + super::ARGS_MAX;
    pub const OPS: usize = STATE + super::STATE_SIZE;
    pub const DATA: usize = OPS + super::MAX_OPS * super::OP_SIZE;
    pub const OUT: usize = DATA + super::DATA_SIZE;
    /// `sizeof(struct naam_ctx)`.
    pub const SIZE: usize = OUT + super::OUT_MAX;
}

/// Byte offsets of `struct naam_op` fields.
pub mod op {
    pub const KIND: usize = 0;
    pub const FLAGS: usize = 1;
    pub const RESERVED: usize = 2;
    pub const REGION: usize = 4;
    pub const OFFSET: usize = 8;
    pub const LEN: usize = 16;
    pub const DATA_OFF: usize = 20;
    pub const ARG0: usize = 24;
    pub const ARG1: usize = 32;
    pub const RESULT: usize = 40;
    pub const STATUS: usize = 48;
    pub const RESERVED2: usize = 52;
}

/// `sizeof(struct naam_ctx)`.
pub const CTX_SIZE: usize = ctx::SIZE;

/// Byte ranges of the context a handler may store to. Everything else is read-only; the
/// verifier rejects stores outside these ranges. Loads may touch the whole context.
pub fn writable_ranges() -> impl Iterator<Item = Range<usize>> {
    let header = ctx::N_OPS..ctx::ARGS;
    let state = ctx::STATE..ctx::OPS;
    let ops = (0..MAX_OPS).map(|i| {
        let base = ctx::OPS + i * OP_SIZE;
        base..base + OP_WRITABLE
    });
    let tail = ctx::DATA..ctx::SIZE;
    [header, state].into_iter().chain(ops).chain([tail])
}

/// True when `[off, off + len)` lies inside one writable range of the context.
pub fn is_writable(off: usize, len: usize) -> bool {
    let Some(end) = off.checked_add(len) else {
        return false;
    };
    writable_ranges().any(|r| r.start <= off && end <= r.end)
}

/// What a handler asked for when it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepReturn {
    /// `NAAM_DONE`: reply with `out[..out_len]`.
    Done,
    /// `NAAM_NEXT`: run the requested ops, then the next step.
    Next,
    /// `NAAM_ABORT(code)`: reply with an error carrying the code.
    Abort(u32),
}

/// `NAAM_DONE`.
pub const RET_DONE: u64 = 0;
/// `NAAM_NEXT`.
pub const RET_NEXT: u64 = 1;
/// Low byte of `NAAM_ABORT(code)`.
pub const RET_ABORT_KIND: u64 = 2;

/// `NAAM_ABORT(code)`.
pub const fn ret_abort(code: u32) -> u64 {
    ((code as u64) << 8) | RET_ABORT_KIND
}

impl StepReturn {
    /// Decodes `r0` at exit; `None` for a value no macro of `naam.h` produces.
    pub fn decode(r0: u64) -> Option<Self> {
        match r0 & 0xff {
            RET_DONE if r0 == RET_DONE => Some(Self::Done),
            RET_NEXT if r0 == RET_NEXT => Some(Self::Next),
            RET_ABORT_KIND if r0 >> 40 == 0 => Some(Self::Abort((r0 >> 8) as u32)),
            _ => None,
        }
    }
}

/// Op kinds (`NAAM_OP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    Read = 1,
    Write = 2,
    Cas = 3,
    Faa = 4,
}

impl OpKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Read),
            2 => Some(Self::Write),
            3 => Some(Self::Cas),
            4 => Some(Self::Faa),
            _ => None,
        }
    }

    /// Whether the op changes the region (needs write or atomic permission).
    pub fn is_mutation(self) -> bool {
        !matches!(self, Self::Read)
    }
}

/// Helper ids (`naam.h` declares them as `(void *)ID`).
pub mod helper {
    /// `naam_hash64(a, b)`.
    pub const HASH64: u32 = 1;
}

/// One context block, 8-byte aligned so the eBPF code may do aligned 64-bit accesses.
#[derive(Clone)]
#[repr(C, align(8))]
pub struct Ctx {
    bytes: [u8; CTX_SIZE],
}

impl Default for Ctx {
    fn default() -> Self {
        Self {
            bytes: [0; CTX_SIZE],
        }
    }
}

impl core::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ctx")
            .field("step", &self.step())
            .field("n_ops", &self.n_ops())
            .field("out_len", &self.out_len())
            .finish_non_exhaustive()
    }
}

/// An op as the handler wrote it, before any check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawOp {
    pub kind: u8,
    pub region: u32,
    pub offset: u64,
    pub len: u32,
    pub data_off: u32,
    pub arg0: u64,
    pub arg1: u64,
}

impl Ctx {
    /// A zeroed context on the heap (it is 4.7 KiB: keep it off small stacks).
    pub fn boxed() -> Box<Self> {
        Box::default()
    }

    pub fn as_bytes(&self) -> &[u8; CTX_SIZE] {
        &self.bytes
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8; CTX_SIZE] {
        &mut self.bytes
    }

    fn u32_at(&self, off: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.bytes[off..off + 4]);
        u32::from_le_bytes(b)
    }

    fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.bytes[off..off + 8]);
        u64::from_le_bytes(b)
    }

    fn set_u32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn set_u64(&mut self, off: usize, v: u64) {
        self.bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Prepares the context for the first step of a message: clears every area, then copies
    /// the arguments in. Arguments longer than [`ARGS_MAX`] are refused by the caller (the wire
    /// parser); here they are cut, which never happens on a checked path.
    pub fn start(&mut self, args: &[u8]) {
        let n = args.len().min(ARGS_MAX);
        self.bytes.fill(0);
        self.set_u32(ctx::ABI_VERSION, ABI_VERSION);
        self.set_u32(ctx::ARGS_LEN, n as u32);
        self.bytes[ctx::ARGS..ctx::ARGS + n].copy_from_slice(&args[..n]);
    }

    pub fn step(&self) -> u32 {
        self.u32_at(ctx::STEP)
    }

    pub fn set_step(&mut self, step: u32) {
        self.set_u32(ctx::STEP, step);
    }

    pub fn args(&self) -> &[u8] {
        let n = (self.u32_at(ctx::ARGS_LEN) as usize).min(ARGS_MAX);
        &self.bytes[ctx::ARGS..ctx::ARGS + n]
    }

    pub fn n_ops(&self) -> u32 {
        self.u32_at(ctx::N_OPS)
    }

    pub fn set_n_ops(&mut self, n: u32) {
        self.set_u32(ctx::N_OPS, n);
    }

    pub fn out_len(&self) -> u32 {
        self.u32_at(ctx::OUT_LEN)
    }

    /// The reply payload, or `None` when the handler set `out_len` past [`OUT_MAX`].
    pub fn out(&self) -> Option<&[u8]> {
        let n = self.out_len() as usize;
        (n <= OUT_MAX).then(|| &self.bytes[ctx::OUT..ctx::OUT + n])
    }

    pub fn state(&self) -> &[u8] {
        &self.bytes[ctx::STATE..ctx::OPS]
    }

    pub fn data(&self) -> &[u8; DATA_SIZE] {
        self.bytes[ctx::DATA..ctx::OUT]
            .try_into()
            .expect("DATA_SIZE window")
    }

    pub fn data_mut(&mut self) -> &mut [u8; DATA_SIZE] {
        (&mut self.bytes[ctx::DATA..ctx::OUT])
            .try_into()
            .expect("DATA_SIZE window")
    }

    /// Op `i` (`i < MAX_OPS`) as the handler wrote it.
    pub fn raw_op(&self, i: usize) -> RawOp {
        let b = ctx::OPS + i * OP_SIZE;
        RawOp {
            kind: self.bytes[b + op::KIND],
            region: self.u32_at(b + op::REGION),
            offset: self.u64_at(b + op::OFFSET),
            len: self.u32_at(b + op::LEN),
            data_off: self.u32_at(b + op::DATA_OFF),
            arg0: self.u64_at(b + op::ARG0),
            arg1: self.u64_at(b + op::ARG1),
        }
    }

    /// Writes op `i` (used by tests and by hand-driven clients).
    pub fn set_raw_op(&mut self, i: usize, o: &RawOp) {
        let b = ctx::OPS + i * OP_SIZE;
        self.bytes[b + op::KIND] = o.kind;
        self.set_u32(b + op::REGION, o.region);
        self.set_u64(b + op::OFFSET, o.offset);
        self.set_u32(b + op::LEN, o.len);
        self.set_u32(b + op::DATA_OFF, o.data_off);
        self.set_u64(b + op::ARG0, o.arg0);
        self.set_u64(b + op::ARG1, o.arg1);
    }

    /// Records the outcome of op `i` for the next step.
    pub fn set_op_result(&mut self, i: usize, result: u64, status: i32) {
        let b = ctx::OPS + i * OP_SIZE;
        self.set_u64(b + op::RESULT, result);
        self.set_u32(b + op::STATUS, status as u32);
    }

    pub fn op_result(&self, i: usize) -> u64 {
        self.u64_at(ctx::OPS + i * OP_SIZE + op::RESULT)
    }

    /// Clears the writable header before a step so stale requests are never re-executed.
    pub fn clear_requests(&mut self) {
        self.set_u32(ctx::N_OPS, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_packed_and_aligned() {
        assert_eq!(ctx::SIZE, 4736);
        assert_eq!(core::mem::size_of::<Ctx>(), CTX_SIZE);
        for off in [
            ctx::ARGS,
            ctx::STATE,
            ctx::OPS,
            ctx::DATA,
            ctx::OUT,
            ctx::SIZE,
        ] {
            assert_eq!(off % 8, 0, "offset {off} not 8-aligned");
        }
    }

    #[test]
    fn writable_ranges_exclude_runtime_fields() {
        assert!(!is_writable(ctx::STEP, 4));
        assert!(!is_writable(ctx::ARGS, 1));
        assert!(is_writable(ctx::N_OPS, 4));
        assert!(is_writable(ctx::STATE, STATE_SIZE));
        assert!(!is_writable(ctx::STATE, STATE_SIZE + 1));
        let op1 = ctx::OPS + OP_SIZE;
        assert!(is_writable(op1 + op::ARG1, 8));
        assert!(!is_writable(op1 + op::RESULT, 8));
        assert!(!is_writable(op1 + op::STATUS, 4));
        assert!(is_writable(ctx::OUT + OUT_MAX - 8, 8));
        assert!(!is_writable(ctx::OUT + OUT_MAX - 4, 8));
        assert!(!is_writable(usize::MAX, 2));
    }

    #[test]
    fn return_codes_round_trip() {
        assert_eq!(StepReturn::decode(RET_DONE), Some(StepReturn::Done));
        assert_eq!(StepReturn::decode(RET_NEXT), Some(StepReturn::Next));
        assert_eq!(
            StepReturn::decode(ret_abort(77)),
            Some(StepReturn::Abort(77))
        );
        assert_eq!(
            StepReturn::decode(ret_abort(u32::MAX)),
            Some(StepReturn::Abort(u32::MAX))
        );
        assert_eq!(StepReturn::decode(3), None);
        assert_eq!(StepReturn::decode(0x100), None);
        assert_eq!(StepReturn::decode(u64::MAX), None);
    }

    #[test]
    fn ctx_start_and_ops() {
        let mut c = Ctx::boxed();
        c.start(b"hello");
        assert_eq!(c.args(), b"hello");
        let o = RawOp {
            kind: 3,
            region: 7,
            offset: 64,
            len: 8,
            data_off: 0,
            arg0: 1,
            arg1: 2,
        };
        c.set_raw_op(2, &o);
        assert_eq!(c.raw_op(2), o);
        c.set_op_result(2, 99, -1);
        assert_eq!(c.op_result(2), 99);
        assert_eq!(c.raw_op(2), o, "results do not overlap the request");
    }
}
