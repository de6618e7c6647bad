//! The step executor: runs a message through its handler's steps (DESIGN §3).
//!
//! A message is a context block and a step counter. Each step runs the handler once; on
//! `NEXT` the ops it wrote are checked (bounds, tenant, permissions) and executed against a
//! [`Memory`], their results written back, and the next step runs. A message ends with a
//! reply (`DONE`), an abort code (`ABORT`), or an error — an isolation violation, a spent step
//! budget, a malformed return — that is counted and turned into an error reply, never UB.
//!
//! The pieces ([`run_step`], [`check_ops`], [`apply_ops`]) are public so that a dataplane can
//! park a message between steps while its ops travel over the link; [`Executor::run`] is the
//! synchronous loop for local memory.

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
pub fn run_step(vm: &CompiledVm, ctx: &mut Ctx) -> Result<StepOutcome, ExecError> {
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
pub fn check_ops(
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

/// Executes checked ops `ops[from..]` in order and records their results in the context (op
/// `i`'s result in its slot `i`).
pub fn apply_ops<M: Memory + ?Sized>(
    mem: &mut M,
    ops: &[CheckedOp],
    from: usize,
    ctx: &mut Ctx,
) -> Result<(), MemError> {
    for (i, op) in ops.iter().enumerate().skip(from) {
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
pub fn ordered_batch_end(ops: &[CheckedOp], first: usize) -> usize {
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
        let mut ops = [CheckedOp::EMPTY; MAX_OPS];
        let mut step = 0;
        let result = loop {
            if step >= self.max_steps {
                break Err(ExecError::StepBudget {
                    max: self.max_steps,
                });
            }
            ctx.set_step(step);
            step += 1;
            self.stats.steps += 1;
            match run_step(vm, ctx) {
                Ok(StepOutcome::Done) => break Ok(None),
                Ok(StepOutcome::Abort(code)) => break Ok(Some(code)),
                Ok(StepOutcome::Ops(n)) => {
                    if let Err(e) = check_ops(regions, tenant, ctx, n, &mut ops) {
                        break Err(e.into());
                    }
                    self.stats.ops += n as u64;
                    if let Err(e) = apply_ops(mem, &ops[..n], 0, ctx) {
                        break Err(e.into());
                    }
                }
                Err(e) => break Err(e),
            }
        };
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
