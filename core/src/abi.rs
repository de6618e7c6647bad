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

/// A set of the context's 8-byte words: those a program may store to (the verifier's
/// [`crate::verifier::VerifiedProgram::ctx_writes`]) or the runtime wrote. A context reused for
/// the next message clears only these: that is all the previous message could have left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtxWords([u64; CTX_WORD_MASKS]);

/// `u64`s of [`CtxWords`]: one bit per 8-byte word of the context.
const CTX_WORD_MASKS: usize = CTX_SIZE.div_ceil(8).div_ceil(64);

impl CtxWords {
    pub const NONE: CtxWords = CtxWords([0; CTX_WORD_MASKS]);

    /// The words the runtime itself writes while a message runs: the header (step, lengths)
    /// and every op's result and status. A context counts them as written from its start,
    /// so that the setters called between steps store without marking: a mark is a
    /// read-modify-write of these masks, and the VM's next read of them (a vector load
    /// over several such stores) stalled on store forwarding (docs/profiles/datapath-2026-12-06.md).
    pub const RUNTIME: CtxWords = {
        let mut w = CtxWords::NONE.with(0, ctx::ARGS);
        let mut i = 0;
        while i < MAX_OPS {
            let b = ctx::OPS + i * OP_SIZE;
            w = w.with(b + op::RESULT, b + OP_SIZE);
            i += 1;
        }
        w
    };

    /// These words and those holding any byte of `[start, end)`, at compile time.
    const fn with(mut self, start: usize, end: usize) -> CtxWords {
        let mut word = start / 8;
        while word < end.div_ceil(8) {
            self.0[word / 64] |= 1 << (word % 64);
            word += 1;
        }
        self
    }

    /// Every word.
    pub fn all() -> CtxWords {
        let mut w = CtxWords::NONE;
        w.mark(0..CTX_SIZE);
        w
    }

    /// Adds the words holding any byte of `bytes` (cut at the context's end).
    pub fn mark(&mut self, bytes: Range<usize>) {
        let end = bytes.end.min(CTX_SIZE);
        if bytes.start >= end {
            return;
        }
        let (first, last) = (bytes.start / 8, (end - 1) / 8);
        for group in first / 64..=last / 64 {
            // Words first..=last within this group, as a mask.
            let lo = if group == first / 64 { first % 64 } else { 0 };
            let hi = if group == last / 64 { last % 64 } else { 63 };
            self.0[group] |= (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
        }
    }

    pub fn union(&mut self, other: &CtxWords) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }

    pub fn contains(&self, byte: usize) -> bool {
        byte < CTX_SIZE && self.0[byte / 8 / 64] & (1 << (byte / 8 % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&m| m == 0)
    }

    /// The marked words as byte ranges, in order (maximal within each 64-word group; a run
    /// across groups comes as two ranges).
    pub fn ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let mut group = 0;
        let mut rest = self.0[0];
        core::iter::from_fn(move || loop {
            if rest != 0 {
                let start = rest.trailing_zeros() as usize;
                let len = (rest >> start).trailing_ones() as usize;
                rest &= rest.wrapping_add(1 << start); // clears the run just found
                let word = group * 64 + start;
                return Some(word * 8..(word + len) * 8);
            }
            group += 1;
            if group == CTX_WORD_MASKS {
                return None;
            }
            rest = self.0[group];
        })
    }
}

/// The longest run of never-written bytes [`Ctx::start`] clears along with the written runs
/// around it rather than clearing those separately.
const CLEAR_GAP_MAX: usize = 256;

/// One context block, 8-byte aligned so the eBPF code may do aligned 64-bit accesses. Besides
/// the bytes handed to handlers, it remembers which words may be non-zero, so that starting
/// the next message clears those instead of all 4.7 KiB (the profile of issue 12: 12 % of the
/// NIC worker's time was that memset).
#[derive(Clone)]
#[repr(C, align(8))]
pub struct Ctx {
    bytes: [u8; CTX_SIZE],
    /// Always holds [`CtxWords::RUNTIME`].
    written: CtxWords,
    /// The VM whose store footprint `written` already holds in this message (0: none), so
    /// that steps after the first skip the union ([`Ctx::for_program`]).
    footprint_of: u64,
}

impl Default for Ctx {
    fn default() -> Self {
        Self {
            bytes: [0; CTX_SIZE],
            written: CtxWords::RUNTIME,
            footprint_of: 0,
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

    /// All the bytes, to change at will (every word then counts as written).
    pub fn as_bytes_mut(&mut self) -> &mut [u8; CTX_SIZE] {
        self.written = CtxWords::all();
        &mut self.bytes
    }

    /// The bytes for a handler step that may store to `writes`, the verified store footprint
    /// of the program compiled as VM `vm` (an id no other VM of the process has): the VM's
    /// way in. The footprint is added at the message's first step of that VM.
    pub(crate) fn for_program(&mut self, writes: &CtxWords, vm: u64) -> &mut [u8; CTX_SIZE] {
        if self.footprint_of != vm {
            self.written.union(writes);
            self.footprint_of = vm;
        }
        &mut self.bytes
    }

    /// Words that may be non-zero.
    pub fn written(&self) -> &CtxWords {
        &self.written
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
        self.written.mark(off..off + 4);
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn set_u64(&mut self, off: usize, v: u64) {
        self.written.mark(off..off + 8);
        self.bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// A store to a runtime field ([`CtxWords::RUNTIME`], always counted as written).
    #[inline]
    fn put_u32(&mut self, off: usize, v: u32) {
        debug_assert!(CtxWords::RUNTIME.contains(off) && CtxWords::RUNTIME.contains(off + 3));
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// As [`Ctx::put_u32`].
    #[inline]
    fn put_u64(&mut self, off: usize, v: u64) {
        debug_assert!(CtxWords::RUNTIME.contains(off) && CtxWords::RUNTIME.contains(off + 7));
        self.bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Prepares the context for the first step of a message: clears every word the previous
    /// message may have written (all of them when unknown), then copies the arguments in.
    /// Arguments longer than [`ARGS_MAX`] are refused by the caller (the wire parser); here
    /// they are cut, which never happens on a checked path.
    pub fn start(&mut self, args: &[u8]) {
        let n = args.len().min(ARGS_MAX);
        let written = core::mem::replace(&mut self.written, CtxWords::RUNTIME);
        // Words never written are zero already, so clearing across a short gap between two
        // runs costs less than a second call: the ops' result fields alone are four runs.
        let mut runs = written.ranges();
        if let Some(mut span) = runs.next() {
            for r in runs {
                if r.start - span.end > CLEAR_GAP_MAX {
                    self.bytes[span].fill(0);
                    span = r;
                } else {
                    span.end = r.end;
                }
            }
            self.bytes[span].fill(0);
        }
        self.footprint_of = 0;
        self.written.mark(ctx::ARGS..ctx::ARGS + n);
        self.put_u32(ctx::ABI_VERSION, ABI_VERSION);
        self.put_u32(ctx::ARGS_LEN, n as u32);
        self.bytes[ctx::ARGS..ctx::ARGS + n].copy_from_slice(&args[..n]);
    }

    pub fn step(&self) -> u32 {
        self.u32_at(ctx::STEP)
    }

    pub fn set_step(&mut self, step: u32) {
        self.put_u32(ctx::STEP, step);
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

    /// The whole data area, to change at will (all of it then counts as written; see
    /// [`Ctx::data_window_mut`]).
    pub fn data_mut(&mut self) -> &mut [u8; DATA_SIZE] {
        self.data_for(ctx::DATA..ctx::OUT)
    }

    /// `data[window]`, for an op's data (a READ's completion).
    pub fn data_window_mut(&mut self, window: Range<usize>) -> &mut [u8] {
        &mut self.data_for(ctx::DATA + window.start..ctx::DATA + window.end)[window]
    }

    /// The data area, for a change that writes at most `bytes` (context offsets) of it.
    pub(crate) fn data_for(&mut self, bytes: Range<usize>) -> &mut [u8; DATA_SIZE] {
        self.written.mark(bytes);
        (&mut self.bytes[ctx::DATA..ctx::OUT])
            .try_into()
            .expect("DATA_SIZE window")
    }

    /// Op `i` (`i < MAX_OPS`) as the handler wrote it.
    #[inline]
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
        self.written.mark(b..b + 1);
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
        self.put_u64(b + op::RESULT, result);
        self.put_u32(b + op::STATUS, status as u32);
    }

    pub fn op_result(&self, i: usize) -> u64 {
        self.u64_at(ctx::OPS + i * OP_SIZE + op::RESULT)
    }

    /// Clears the writable header before a step so stale requests are never re-executed.
    pub fn clear_requests(&mut self) {
        self.put_u32(ctx::N_OPS, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_packed_and_aligned() {
        assert_eq!(ctx::SIZE, 4736);
        assert_eq!(core::mem::offset_of!(Ctx, bytes), 0);
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
    #[allow(clippy::single_range_in_vec_init)] // each case is a list of marked ranges
    fn ctx_words_ranges_cover_exactly_the_marked_words() {
        let cases: [&[Range<usize>]; 5] = [
            &[],
            &[0..1],
            &[0..CTX_SIZE],
            &[
                5..9,
                504..520,
                511..513,
                1000..1100,
                CTX_SIZE - 3..CTX_SIZE + 10,
            ],
            &[8..16, 24..32, 32..40, 4088..4104],
        ];
        for marks in cases {
            let mut w = CtxWords::NONE;
            for m in marks {
                w.mark(m.clone());
            }
            let mut covered = [false; CTX_SIZE];
            for r in w.ranges() {
                assert!(r.start < r.end && r.end <= CTX_SIZE, "{r:?}");
                for b in r {
                    assert!(!covered[b], "byte {b} twice");
                    covered[b] = true;
                }
            }
            for (b, c) in covered.iter().enumerate() {
                let marked = marks.iter().any(|m| {
                    m.contains(&(b / 8 * 8)) || (b / 8 * 8..b / 8 * 8 + 8).any(|x| m.contains(&x))
                });
                assert_eq!(*c, marked, "byte {b} of {marks:?}");
                assert_eq!(w.contains(b), marked);
            }
        }
    }

    #[test]
    fn a_reused_context_is_cleared_where_it_was_written() {
        let mut c = Ctx::boxed();
        c.start(&[7; 100]);
        c.set_raw_op(
            3,
            &RawOp {
                kind: 1,
                region: 2,
                offset: 3,
                len: 4,
                data_off: 5,
                arg0: 6,
                arg1: 7,
            },
        );
        c.set_op_result(3, 99, -1);
        c.data_window_mut(100..164).fill(0xee);
        c.start(b"x");
        let mut fresh = Ctx::boxed();
        fresh.start(b"x");
        assert!(c.as_bytes() == fresh.as_bytes());
    }

    #[test]
    fn a_context_written_in_scattered_windows_is_cleared_whole() {
        // Windows of the data area with gaps shorter and longer than CLEAR_GAP_MAX between
        // them, across the masks' 512-byte groups: whatever runs are cleared together, no
        // byte of the previous message survives and nothing past the context is touched.
        let mut c = Ctx::boxed();
        for round in 0..64usize {
            c.start(&[round as u8 + 1; 40]);
            let mut at = round % 7;
            while at < DATA_SIZE - 16 {
                c.data_window_mut(at..at + 1 + round % 13).fill(0xa5);
                at += 3 + (at * 31 + round * 17) % (2 * CLEAR_GAP_MAX);
            }
            c.set_op_result(round % MAX_OPS, u64::MAX, -1);
            c.start(b"next");
            let mut fresh = Ctx::boxed();
            fresh.start(b"next");
            assert!(c.as_bytes() == fresh.as_bytes(), "round {round}");
        }
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

    #[test]
    fn every_program_of_a_message_adds_its_footprint_once_per_message() {
        let mut a = CtxWords::NONE;
        a.mark(ctx::STATE..ctx::STATE + 8);
        let mut b = CtxWords::NONE;
        b.mark(ctx::OUT..ctx::OUT + 8);
        let mut c = Ctx::boxed();
        c.start(b"x");
        c.for_program(&a, 1)[ctx::STATE] = 1;
        assert!(c.written().contains(ctx::STATE));
        // Another VM in the same message (its offload replaced between steps): its own
        // footprint counts too.
        c.for_program(&b, 2)[ctx::OUT] = 2;
        assert!(c.written().contains(ctx::OUT));
        // The next message clears both and starts without any footprint.
        c.start(b"y");
        assert_eq!(c.as_bytes()[ctx::STATE], 0);
        assert_eq!(c.as_bytes()[ctx::OUT], 0);
        assert!(!c.written().contains(ctx::STATE) && !c.written().contains(ctx::OUT));
        c.for_program(&a, 1);
        assert!(
            c.written().contains(ctx::STATE),
            "added again in the new message"
        );
        // The runtime's own fields are always counted.
        for off in [ctx::STEP, ctx::N_OPS, ctx::OPS + 3 * OP_SIZE + op::STATUS] {
            assert!(c.written().contains(off), "{off}");
        }
    }
}
