//! Local execution: the server's handler run in the client's own VM pool, its ops sent to the
//! server as one-sided requests — one request per step carrying all of the step's ops.
//!
//! A run is a context block and the core's [`Run`], like a message parked in a dataplane
//! between steps. [`LocalExec::start`] runs steps until the handler asks for ops (or ends);
//! [`LocalExec::ops_request`] checks the step's ops and turns their next ordered batch into
//! wire ops (the region keys come from the client's region table); when the one-sided reply
//! arrives, [`LocalExec::resume`] writes the results into the context through [`Replay`] — a
//! [`Memory`] that hands back the results the server sent, so [`Run::apply_batch`] fills the
//! context exactly as a server's memory backend would — and runs the next steps.

use crate::error::{ClientError, Result};
use crate::reply::{Reply, Response, Ticket};
use naam_core::abi::{Ctx, OpKind, DATA_SIZE, MAX_OPS};
use naam_core::exec::{ExecError, Run, StepOutcome};
use naam_core::memory::{MemError, Memory};
use naam_core::pool::{Offload, OffloadSpec, Registry, VmPool};
use naam_core::region::{CheckedOp, RegionTable, TenantId};
use naam_core::verifier::VerifiedProgram;
use naam_core::vm::Engine;
use naam_core::wire::{AmStatus, Location, OpBody, OpResult, RemoteOp};
use std::collections::HashMap;
use std::sync::Arc;

use crate::client::ServerId;

struct LocalRun {
    ticket: Ticket,
    server: ServerId,
    offload: u32,
    tenant: TenantId,
    ctx: Box<Ctx>,
    run: Run,
}

/// What a run needs next.
pub(crate) enum RunStep {
    /// The run ended (reply or error); it is gone.
    Finished {
        ticket: Ticket,
        result: Result<Response>,
    },
    /// The run waits for the ops of its current step.
    Ops {
        run: u64,
        ticket: Ticket,
        server: ServerId,
    },
}

pub(crate) struct LocalExec {
    registry: Arc<Registry>,
    pool: VmPool,
    runs: HashMap<u64, LocalRun>,
    next_run: u64,
    max_steps: u32,
}

impl LocalExec {
    pub(crate) fn new(engine: Engine, max_steps: u32) -> Result<Self> {
        let registry = Registry::new();
        let pool = VmPool::new(registry.clone(), engine);
        Ok(Self {
            registry,
            pool,
            runs: HashMap::new(),
            next_run: 1,
            max_steps,
        })
    }

    /// Registers (or replaces) offload `id` and compiles it.
    pub(crate) fn load(
        &mut self,
        id: u32,
        spec: OffloadSpec,
        program: Arc<VerifiedProgram>,
    ) -> Result<()> {
        let _ = self.registry.unregister(id);
        self.pool.sync();
        self.registry
            .register_as(id, spec, program)
            .map_err(|e| ClientError::InvalidProgram {
                detail: e.to_string(),
            })?;
        self.pool.sync();
        if let Some((_, why)) = self.pool.compile_errors.iter().find(|(i, _)| *i == id) {
            let detail = why.clone();
            let _ = self.registry.unregister(id);
            self.pool.sync();
            return Err(ClientError::InvalidProgram { detail });
        }
        Ok(())
    }

    pub(crate) fn unload(&mut self, id: u32) {
        let _ = self.registry.unregister(id);
        self.pool.sync();
    }

    pub(crate) fn offload(&self, id: u32) -> Option<&Arc<Offload>> {
        self.pool.get(id).map(|e| &e.offload)
    }

    pub(crate) fn running(&self) -> usize {
        self.runs.len()
    }

    pub(crate) fn has_ticket(&self, t: Ticket) -> bool {
        self.runs.values().any(|r| r.ticket == t)
    }

    pub(crate) fn abandon(&mut self, run: u64) {
        self.runs.remove(&run);
    }

    /// Starts a run and drives it to its first ops (or its end).
    pub(crate) fn start(
        &mut self,
        ticket: Ticket,
        server: ServerId,
        offload: u32,
        tenant: TenantId,
        args: &[u8],
    ) -> RunStep {
        let mut ctx = Ctx::boxed();
        ctx.start(args);
        let run = self.next_run;
        self.next_run += 1;
        self.runs.insert(
            run,
            LocalRun {
                ticket,
                server,
                offload,
                tenant,
                ctx,
                run: Run::new(),
            },
        );
        self.advance(run)
    }

    fn finish(&mut self, run: u64, result: Result<Response>) -> RunStep {
        let r = self.runs.remove(&run).expect("run exists");
        RunStep::Finished {
            ticket: r.ticket,
            result,
        }
    }

    /// Runs steps until the handler asks for ops, ends, or fails.
    fn advance(&mut self, run: u64) -> RunStep {
        let max_steps = self.max_steps;
        let r = self.runs.get_mut(&run).expect("run exists");
        let offload = r.offload;
        let Some(entry) = self.pool.get(offload) else {
            return self.finish(
                run,
                Err(ClientError::NotLocal {
                    offload,
                    reason: "it was unloaded while running",
                }),
            );
        };
        let outcome = r.run.step(&entry.vm, &mut r.ctx, max_steps);
        let steps = r.run.steps();
        let reply = |status, output: Vec<u8>| {
            Ok(Response::Am(Reply {
                status,
                executed_at: Location::Client,
                steps,
                hint: None,
                output,
                offload,
            }))
        };
        match outcome {
            Ok(StepOutcome::Done) => {
                let out = r.ctx.out().unwrap_or_default().to_vec();
                self.finish(run, reply(AmStatus::Done, out))
            }
            Ok(StepOutcome::Abort(code)) => {
                self.finish(run, reply(AmStatus::Aborted(code), Vec::new()))
            }
            Ok(StepOutcome::Ops(_)) => RunStep::Ops {
                run,
                ticket: r.ticket,
                server: r.server,
            },
            Err(source) => self.finish(run, Err(ClientError::Local { offload, source })),
        }
    }

    /// Checks the current step's ops (at its first batch) and turns the next batch of them into
    /// wire ops with their region keys.
    pub(crate) fn ops_request(
        &mut self,
        run: u64,
        regions: &RegionTable,
    ) -> Result<([RemoteOp<'_>; MAX_OPS], usize)> {
        let r = self.runs.get_mut(&run).expect("run exists");
        if !r.run.is_checked() {
            r.run
                .check(regions, r.tenant, &r.ctx)
                .map_err(|e| ClientError::Local {
                    offload: r.offload,
                    source: ExecError::Op(e),
                })?;
        }
        let batch = r.run.next_batch();
        let r = &*r;
        let mut out = [RemoteOp {
            region: 0,
            key: 0,
            offset: 0,
            body: OpBody::Read { len: 0 },
        }; MAX_OPS];
        for (slot, op) in out.iter_mut().zip(&r.run.ops()[batch.clone()]) {
            let key = regions.get(op.region).map_or(0, |d| d.key);
            let window = op.data_off as usize..op.data_off as usize + op.len as usize;
            let body = match op.kind {
                OpKind::Read => OpBody::Read { len: op.len },
                OpKind::Write => OpBody::Write {
                    data: &r.ctx.data()[window],
                },
                OpKind::Cas => OpBody::Cas {
                    expected: op.arg0,
                    desired: op.arg1,
                },
                OpKind::Faa => OpBody::Faa { addend: op.arg0 },
            };
            *slot = RemoteOp {
                region: op.region,
                key,
                offset: op.offset,
                body,
            };
        }
        Ok((out, batch.len()))
    }

    /// Feeds the server's results of the current step into the context and runs on.
    /// `None` when the run was abandoned meanwhile (its request timed out).
    pub(crate) fn resume(&mut self, run: u64, results: &[OpResult<'_>]) -> Option<RunStep> {
        let r = self.runs.get_mut(&run)?;
        let offload = r.offload;
        if let Some((index, code)) = results
            .iter()
            .enumerate()
            .find_map(|(i, o)| o.error.map(|c| (i, c)))
        {
            return Some(self.finish(run, Err(ClientError::OpFailed { index, code })));
        }
        let mut replay = Replay { results, next: 0 };
        let applied = if results.len() != r.run.batch().len() {
            Err(MemError::Unavailable {
                reason: "the reply has another number of results than the request had ops",
            })
        } else {
            r.run.apply_batch(&mut replay, &mut r.ctx)
        };
        if let Err(e) = applied {
            return Some(self.finish(
                run,
                Err(ClientError::Local {
                    offload,
                    source: ExecError::Mem(e),
                }),
            ));
        }
        if r.run.ops_left() {
            return Some(RunStep::Ops {
                run,
                ticket: r.ticket,
                server: r.server,
            });
        }
        Some(self.advance(run))
    }
}

/// A [`Memory`] that "executes" a step's ops by handing back the results a server already
/// produced for them, in order.
struct Replay<'a, 'b> {
    results: &'a [OpResult<'b>],
    next: usize,
}

impl Memory for Replay<'_, '_> {
    fn execute(&mut self, op: &CheckedOp, data: &mut [u8; DATA_SIZE]) -> Result<u64, MemError> {
        let r = self.results.get(self.next).ok_or(MemError::Unavailable {
            reason: "fewer results than ops",
        })?;
        self.next += 1;
        if r.kind != op.kind {
            return Err(MemError::Unavailable {
                reason: "a result's kind differs from its op's",
            });
        }
        match op.kind {
            OpKind::Read => {
                if r.data.len() != op.len as usize {
                    return Err(MemError::Unavailable {
                        reason: "a READ returned another length than asked",
                    });
                }
                let at = op.data_off as usize;
                data[at..at + r.data.len()].copy_from_slice(r.data);
                Ok(0)
            }
            OpKind::Write => Ok(0),
            OpKind::Cas | OpKind::Faa => Ok(r.previous),
        }
    }
}
