//! Running the MICA handlers through the step executor: what a host worker does with a MICA
//! message, packaged for tests, benchmarks and local execution.

use super::layout::{MicaArgs, MicaGeometry, MicaReply, VALUE_MAX};
use super::{MicaError, MicaPrograms};
use naam_core::abi::Ctx;
use naam_core::exec::{ExecError, Executor, Outcome};
use naam_core::memory::Memory;
use naam_core::region::{RegionTable, TenantId};
use naam_core::vm::{CompiledVm, Engine, VmError};

/// Why a MICA message through the VM failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Mica(#[from] MicaError),
    #[error("the runtime ended the message")]
    Exec(#[source] ExecError),
}

/// The three handlers compiled for one engine, with an executor and a context: one per
/// thread (rbpf VMs are not `Send`).
pub struct MicaVm {
    get: CompiledVm,
    put: CompiledVm,
    delete: CompiledVm,
    exec: Executor,
    ctx: Box<Ctx>,
    args: Box<MicaArgs>,
    tenant: TenantId,
}

impl MicaVm {
    pub fn new(progs: &MicaPrograms, engine: Engine, tenant: TenantId) -> Result<Self, VmError> {
        Ok(Self {
            get: CompiledVm::new(progs.get.clone(), engine)?,
            put: CompiledVm::new(progs.put.clone(), engine)?,
            delete: CompiledVm::new(progs.delete.clone(), engine)?,
            exec: Executor::default(),
            ctx: Ctx::boxed(),
            args: Box::default(),
            tenant,
        })
    }

    /// The executor (its counters: steps, ops, aborts).
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// Runs handler `which` (0 GET, 1 PUT, 2 DELETE) on the arguments in `self.args`.
    fn run<M: Memory + ?Sized>(
        &mut self,
        which: u8,
        regions: &RegionTable,
        mem: &mut M,
    ) -> Result<MicaReply<'_>, RunError> {
        let vm = match which {
            0 => &self.get,
            1 => &self.put,
            _ => &self.delete,
        };
        self.ctx.start(self.args.as_bytes());
        match self.exec.run(vm, self.tenant, regions, mem, &mut self.ctx) {
            Outcome::Done { .. } => Ok(MicaReply::parse(self.ctx.out().unwrap_or_default())?),
            Outcome::Aborted { code, .. } => Err(MicaError::from_abort(code).into()),
            Outcome::Failed { error, .. } => Err(RunError::Exec(error)),
        }
    }

    /// GET: copies the value into `out` and returns its length, or `None` for a miss. The
    /// handler first reads `out.len()` value bytes with the item.
    pub fn get<M: Memory + ?Sized>(
        &mut self,
        regions: &RegionTable,
        mem: &mut M,
        geom: &MicaGeometry,
        key: &[u8],
        out: &mut [u8],
    ) -> Result<Option<usize>, RunError> {
        self.args.set_get(geom, key, out.len().min(VALUE_MAX))?;
        match self.run(0, regions, mem)? {
            MicaReply::Value(v) if v.len() <= out.len() => {
                out[..v.len()].copy_from_slice(v);
                Ok(Some(v.len()))
            }
            MicaReply::Value(v) => Err(MicaError::BufferTooSmall {
                len: v.len(),
                have: out.len(),
            }
            .into()),
            MicaReply::NotFound => Ok(None),
            MicaReply::Done => Err(MicaError::BadReply { len: 8 }.into()),
        }
    }

    /// PUT (insert or update).
    pub fn put<M: Memory + ?Sized>(
        &mut self,
        regions: &RegionTable,
        mem: &mut M,
        geom: &MicaGeometry,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), RunError> {
        self.args.set_put(geom, key, value)?;
        match self.run(1, regions, mem)? {
            MicaReply::Done => Ok(()),
            _ => Err(MicaError::BadReply { len: 0 }.into()),
        }
    }

    /// DELETE: whether the key was there.
    pub fn delete<M: Memory + ?Sized>(
        &mut self,
        regions: &RegionTable,
        mem: &mut M,
        geom: &MicaGeometry,
        key: &[u8],
    ) -> Result<bool, RunError> {
        self.args.set_delete(geom, key)?;
        match self.run(2, regions, mem)? {
            MicaReply::Done => Ok(true),
            MicaReply::NotFound => Ok(false),
            MicaReply::Value(_) => Err(MicaError::BadReply { len: 0 }.into()),
        }
    }
}
