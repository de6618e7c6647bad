//! The step executor: runs a message through its handler's steps (DESIGN §3).
//!
//! A message is a context block and a [`Run`]: its step counter and the ops of its current
//! step. Each step runs the handler once; on `NEXT` the ops it wrote are checked (bounds,
//! tenant, permissions) and executed against a [`Memory`], their results written back, and the
//! next step runs. A message ends with a reply (`DONE`), an abort code (`ABORT`), or an error —
//! an isolation violation, a spent step budget, a malformed return — that is counted and turned
//! into an error reply, never UB.
//!
//! [`Run`] is the one execution every location drives: the host's [`Executor::run`] runs its
//! steps back to back on local memory, the NIC worker parks it between steps while the ops
//! travel over the link, and the client's local runs send each step's ops to the server as one
//! one-sided request. So the step budget, the checks, and the order in which a step's ops take
//! effect are the same wherever a message runs.

use std::ops::Range;

use crate::abi::{ctx::DATA, Ctx, OpKind, StepReturn, MAX_OPS};
use crate::memory::{MemError, Memory};
use crate::region::{CheckedOp, OpError, OpErrorCode, RegionTable, TenantId};
use crate::vm::{CompiledVm, VmError};

/// Default step budget of a message.
pub const DEFAULT_MAX_STEPS: u32 = 32;

/// What one step asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Reply with `ctx.out()`.
    Done,
    /// Run this many ops (already validated as `<= MAX_OPS`), then the next step.
    Ops(usize),
    /// The handler aborted with a code.
    Abort(u32),
}

/// Why a message ended in an error.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("unknown offload {id}")]
    UnknownOffload { id: u32 },
    #[error("step budget of {max} steps spent")]
    StepBudget { max: u32 },
    #[error("handler returned {r0:#x}, which is not DONE, NEXT or ABORT(code)")]
    BadReturn { r0: u64 },
    #[error("handler set out_len to {len}, past the {max}-byte reply area", max = crate::abi::OUT_MAX)]
    BadOutLen { len: u32 },
    #[error("handler returned NEXT with no ops")]
    NoOps,
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Mem(#[from] MemError),
    #[error(transparent)]
    Vm(#[from] VmError),
}

impl ExecError {
    /// The error class, for counters and error replies.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExecError::UnknownOffload { .. } => ErrorKind::UnknownOffload,
            ExecError::StepBudget { .. } => ErrorKind::StepBudget,
            ExecError::BadReturn { .. } | ExecError::BadOutLen { .. } | ExecError::NoOps => {
                ErrorKind::BadHandler
            }
            ExecError::Op(e) => ErrorKind::Op(e.code()),
            ExecError::Mem(_) => ErrorKind::Memory,
            ExecError::Vm(_) => ErrorKind::Vm,
        }
    }
}

/// Error classes of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    UnknownOffload,
    StepBudget,
    BadHandler,
    Op(OpErrorCode),
    Memory,
    Vm,
}

/// Runs one step: the handler once, then its return value decoded and checked.
fn run_step(vm: &CompiledVm, ctx: &mut Ctx) -> Result<StepOutcome, ExecError> {
    ctx.clear_requests();
    let r0 = vm.run(ctx)?;
    match StepReturn::decode(r0).ok_or(ExecError::BadReturn { r0 })? {
        StepReturn::Done => match ctx.out() {
            Some(_) => Ok(StepOutcome::Done),
            None => Err(ExecError::BadOutLen { len: ctx.out_len() }),
        },
        StepReturn::Abort(code) => Ok(StepOutcome::Abort(code)),
        StepReturn::Next => match ctx.n_ops() {
            0 => Err(ExecError::NoOps),
            n if n as usize > MAX_OPS => Err(OpError::TooManyOps { n, max: MAX_OPS }.into()),
            n => Ok(StepOutcome::Ops(n as usize)),
        },
    }
}

/// Checks the first `n` ops of the context for `tenant`; fills `out[..n]`.
fn check_ops(
    regions: &RegionTable,
    tenant: TenantId,
    ctx: &Ctx,
    n: usize,
    out: &mut [CheckedOp; MAX_OPS],
) -> Result<(), OpError> {
    if n > MAX_OPS {
        return Err(OpError::TooManyOps {
            n: n as u32,
            max: MAX_OPS,
        });
    }
    for (i, slot) in out.iter_mut().enumerate().take(n) {
        *slot = regions.check(tenant, i, &ctx.raw_op(i))?;
    }
    Ok(())
}

/// Executes checked ops `ops[range]` in order and records their results in the context (op
/// `i`'s result in its slot `i`).
fn apply_ops<M: Memory + ?Sized>(
    mem: &mut M,
    ops: &[CheckedOp; MAX_OPS],
    range: Range<usize>,
    ctx: &mut Ctx,
) -> Result<(), MemError> {
    for (i, op) in ops.iter().enumerate().take(range.end).skip(range.start) {
        // Only a READ writes the data area, and only its window (the contract of `Memory`).
        let window = match op.kind {
            OpKind::Read => op.data_off as usize..op.data_off as usize + op.len as usize,
            _ => 0..0,
        };
        let data = ctx.data_for(DATA + window.start..DATA + window.end);
        let result = mem.execute(op, data)?;
        ctx.set_op_result(i, result, 0);
    }
    Ok(())
}

/// Where the batch of ops that starts at `first` ends, for runtimes that send a step's ops
/// away and wait (the NIC posting them over RDMA, a client sending them as one one-sided
/// request): the ops of one step must have the effect of running one after another, as they
/// do on the host, but ops in flight together are only ordered where RDMA orders them, and a
/// WRITE sends its data window as it was when the batch left. A READ may be
/// overtaken by a later WRITE or atomic (InfiniBand needs a fence there), and two READs into
/// overlapping windows of the data area may land in either order, and a WRITE may send bytes an
/// earlier READ of the step fills; so an op that follows a READ waits for it unless it is a
/// READ into a disjoint window. WRITEs and atomics after WRITEs and atomics are ordered by the
/// queue pair (and by the server, which runs a one-sided request's ops in order).
fn ordered_batch_end(ops: &[CheckedOp], first: usize) -> usize {
    let window = |op: &CheckedOp| op.data_off..op.data_off + op.len;
    let mut end = first;
    while end < ops.len() {
        let op = &ops[end];
        let waits = ops[first..end].iter().any(|prior| {
            prior.kind == OpKind::Read
                && (op.kind != OpKind::Read || {
                    let (a, b) = (window(prior), window(op));
                    a.start < b.end && b.start < a.end
                })
        });
        if waits && end > first {
            break;
        }
        end += 1;
    }
    end
}

/// One message's execution, resumable between steps: its step count and the ops of its
/// current step. A runtime keeps one beside each message's context and drives it:
///
/// 1. [`Run::step`] runs the handler once (after the step budget) and says what it asked for;
/// 2. on [`StepOutcome::Ops`], [`Run::check`] checks the step's ops for the message's tenant;
/// 3. then either [`Run::apply`] executes them all, in order, on memory this runtime reaches,
///    or the runtime sends them away in [`Run::next_batch`]es, each batch's results written
///    back (by [`Run::apply_batch`], or op by op) before the next batch leaves, until
///    [`Run::ops_left`] is false;
/// 4. then the next step.
#[derive(Debug, Clone)]
pub struct Run {
    steps: u32,
    /// How many ops the last step asked for.
    asked: u8,
    /// Whether `ops[..asked]` hold them, checked.
    checked: bool,
    /// Whether the VM of the last step may ask for READs only ([`CompiledVm::is_read_only`]).
    read_only: bool,
    /// `ops[first..end]`: the batch in flight (or executed last); the ops before `end` left.
    first: u8,
    end: u8,
    ops: [CheckedOp; MAX_OPS],
}

impl Default for Run {
    fn default() -> Self {
        Self::new()
    }
}

impl Run {
    pub const fn new() -> Self {
        Self {
            steps: 0,
            asked: 0,
            checked: false,
            read_only: false,
            first: 0,
            end: 0,
            ops: [CheckedOp::EMPTY; MAX_OPS],
        }
    }

    /// Back to a new message's start (a runtime reusing its runs).
    pub fn reset(&mut self) {
        (self.steps, self.asked, self.checked, self.first, self.end) = (0, 0, false, 0, 0);
    }

    /// The steps run so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Runs the next step: the step budget, the step's number in the context, the handler,
    /// and its return value decoded. A step that ends in an error still counts.
    #[inline]
    pub fn step(
        &mut self,
        vm: &CompiledVm,
        ctx: &mut Ctx,
        max_steps: u32,
    ) -> Result<StepOutcome, ExecError> {
        (self.asked, self.checked, self.first, self.end) = (0, false, 0, 0);
        if self.steps >= max_steps {
            return Err(ExecError::StepBudget { max: max_steps });
        }
        ctx.set_step(self.steps);
        self.steps += 1;
        self.read_only = vm.is_read_only();
        let out = run_step(vm, ctx)?;
        if let StepOutcome::Ops(n) = out {
            // `run_step` bounds n by MAX_OPS.
            self.asked = n as u8;
        }
        Ok(out)
    }

    /// Checks the ops the last step asked for, for `tenant`: their bounds in their regions,
    /// the tenant's ownership and the regions' permissions, and that a read-only offload asks
    /// for READs only.
    #[inline]
    pub fn check(
        &mut self,
        regions: &RegionTable,
        tenant: TenantId,
        ctx: &Ctx,
    ) -> Result<(), OpError> {
        check_ops(regions, tenant, ctx, self.asked as usize, &mut self.ops)?;
        if self.read_only {
            let ops = &self.ops[..self.asked as usize];
            if let Some(index) = ops.iter().position(|op| op.kind != OpKind::Read) {
                let kind = ops[index].kind;
                return Err(OpError::ReadOnlyOffload { index, kind });
            }
        }
        self.checked = true;
        Ok(())
    }

    /// Whether the current step's ops were checked.
    pub fn is_checked(&self) -> bool {
        self.checked
    }

    /// The current step's checked ops (empty before [`Run::check`]).
    pub fn ops(&self) -> &[CheckedOp] {
        &self.ops[..if self.checked { self.asked as usize } else { 0 }]
    }

    /// Executes all of the current step's checked ops on `mem`, one after another, their
    /// results written into the context.
    #[inline]
    pub fn apply<M: Memory + ?Sized>(
        &mut self,
        mem: &mut M,
        ctx: &mut Ctx,
    ) -> Result<(), MemError> {
        // One batch of all of them.
        (self.first, self.end) = (0, self.ops().len() as u8);
        self.apply_batch(mem, ctx)
    }

    /// The next batch of the current step's checked ops to send away together: the ops after
    /// the last batch up to the first one that must wait for it ([`ordered_batch_end`]).
    /// Empty when none are left.
    pub fn next_batch(&mut self) -> Range<usize> {
        let ops = &self.ops[..self.ops().len()];
        let first = self.end as usize;
        let end = ordered_batch_end(ops, first);
        (self.first, self.end) = (first as u8, end as u8);
        first..end
    }

    /// The batch last returned by [`Run::next_batch`] (op indices of the step).
    pub fn batch(&self) -> Range<usize> {
        self.first as usize..self.end as usize
    }

    /// Writes the results of the batch in flight into the context: `results` is a [`Memory`]
    /// that hands back, in order, what the other side produced for each of its ops.
    pub fn apply_batch<M: Memory + ?Sized>(
        &mut self,
        results: &mut M,
        ctx: &mut Ctx,
    ) -> Result<(), MemError> {
        apply_ops(results, &self.ops, self.batch(), ctx)
    }

    /// Whether ops of the current step have not been sent yet.
    pub fn ops_left(&self) -> bool {
        (self.end as usize) < self.ops().len()
    }
}

/// How a message ended.
#[derive(Debug)]
pub enum Outcome {
    /// Reply with `ctx.out()`.
    Done { steps: u32 },
    /// The handler aborted.
    Aborted { code: u32, steps: u32 },
    /// The runtime ended the message.
    Failed { error: ExecError, steps: u32 },
}

/// Counters of one executor (one worker). Plain integers: a worker owns its executor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecStats {
    pub messages: u64,
    pub steps: u64,
    pub ops: u64,
    pub done: u64,
    pub aborted: u64,
    pub unknown_offload: u64,
    pub step_budget: u64,
    pub bad_handler: u64,
    pub memory_errors: u64,
    pub vm_errors: u64,
    /// Isolation violations and malformed ops, by [`OpErrorCode`].
    pub op_errors: [u64; OpErrorCode::COUNT],
}

impl ExecStats {
    pub fn count_error(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::UnknownOffload => self.unknown_offload += 1,
            ErrorKind::StepBudget => self.step_budget += 1,
            ErrorKind::BadHandler => self.bad_handler += 1,
            ErrorKind::Op(c) => self.op_errors[c as usize] += 1,
            ErrorKind::Memory => self.memory_errors += 1,
            ErrorKind::Vm => self.vm_errors += 1,
        }
    }

    pub fn errors(&self) -> u64 {
        self.unknown_offload
            + self.step_budget
            + self.bad_handler
            + self.memory_errors
            + self.vm_errors
            + self.op_errors.iter().sum::<u64>()
    }

    /// Adds another executor's counters (for totals across workers).
    pub fn add(&mut self, o: &ExecStats) {
        self.messages += o.messages;
        self.steps += o.steps;
        self.ops += o.ops;
        self.done += o.done;
        self.aborted += o.aborted;
        self.unknown_offload += o.unknown_offload;
        self.step_budget += o.step_budget;
        self.bad_handler += o.bad_handler;
        self.memory_errors += o.memory_errors;
        self.vm_errors += o.vm_errors;
        for (a, b) in self.op_errors.iter_mut().zip(o.op_errors) {
            *a += b;
        }
    }
}

/// Runs messages to completion against synchronous memory.
#[derive(Debug, Clone)]
pub struct Executor {
    pub max_steps: u32,
    pub stats: ExecStats,
}

impl Default for Executor {
    fn default() -> Self {
        Self {
            max_steps: DEFAULT_MAX_STEPS,
            stats: ExecStats::default(),
        }
    }
}

impl Executor {
    pub fn new(max_steps: u32) -> Self {
        Self {
            max_steps,
            ..Self::default()
        }
    }

    /// Runs the message whose arguments are already in `ctx` (see [`Ctx::start`]).
    pub fn run<M: Memory + ?Sized>(
        &mut self,
        vm: &CompiledVm,
        tenant: TenantId,
        regions: &RegionTable,
        mem: &mut M,
        ctx: &mut Ctx,
    ) -> Outcome {
        self.stats.messages += 1;
        let mut run = Run::new();
        let result = loop {
            match run.step(vm, ctx, self.max_steps) {
                Ok(StepOutcome::Done) => break Ok(None),
                Ok(StepOutcome::Abort(code)) => break Ok(Some(code)),
                Ok(StepOutcome::Ops(n)) => {
                    if let Err(e) = run.check(regions, tenant, ctx) {
                        break Err(e.into());
                    }
                    self.stats.ops += n as u64;
                    if let Err(e) = run.apply(mem, ctx) {
                        break Err(e.into());
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let step = run.steps();
        self.stats.steps += u64::from(step);
        match result {
            Ok(None) => {
                self.stats.done += 1;
                Outcome::Done { steps: step }
            }
            Ok(Some(code)) => {
                self.stats.aborted += 1;
                Outcome::Aborted { code, steps: step }
            }
            Err(error) => {
                self.stats.count_error(error.kind());
                Outcome::Failed { error, steps: step }
            }
        }
    }

    /// Records a message that named an offload this worker does not have.
    pub fn unknown_offload(&mut self, id: u32) -> Outcome {
        self.stats.messages += 1;
        let error = ExecError::UnknownOffload { id };
        self.stats.count_error(error.kind());
        Outcome::Failed { error, steps: 0 }
    }
}
