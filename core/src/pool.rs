//! Offloads and the shared VM pool.
//!
//! The [`Registry`] is the one list of offloads a process runs, shared by all its workers.
//! Registering or unregistering bumps an epoch; each worker's [`VmPool`] looks at the epoch
//! before each message it runs and catches up (taking new programs, dropping removed ones)
//! without stopping: looked at after the message was received, so a message sent once a
//! REGISTER or UNREGISTER was answered always finds it done. A program is compiled once per engine, by the registering thread when the
//! registry knows its process's engine ([`Registry::for_engine`]), and every pool shares that
//! one [`CompiledVm`]: no worker compiles in its poll loop. Dispatch on the data path is an
//! array index and never allocates.

use crate::region::TenantId;
use crate::verifier::VerifiedProgram;
use crate::vm::{CompiledVm, Engine, VmError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// An offload id, as messages name it.
pub type OffloadId = u32;

/// The most offloads one registry holds.
pub const MAX_OFFLOADS: usize = 1 << 16;

/// A registered offload.
pub struct Offload {
    pub id: OffloadId,
    pub name: String,
    pub tenant: TenantId,
    /// Steering class (UDP destination port = base + class).
    pub class: u16,
    /// Whether the offload only reads (so a client may run it on a placement hint).
    pub read_only: bool,
    pub program: Arc<VerifiedProgram>,
    /// The program compiled for each engine ([`Engine::index`]), the first time one is asked
    /// for; shared by every pool.
    compiled: [OnceLock<Result<Arc<CompiledVm>, String>>; 3],
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("class", &self.class)
            .field("read_only", &self.read_only)
            .field("program", &self.program.name())
            .finish_non_exhaustive()
    }
}

impl Offload {
    /// This offload as a LIST reply describes it (its name clipped to what the wire carries).
    pub fn list_entry(&self) -> crate::wire::OffloadEntry<'_> {
        crate::wire::OffloadEntry {
            id: self.id,
            name: crate::wire::clip_utf8(&self.name, crate::wire::NAME_MAX),
            tenant: self.tenant,
            class: self.class,
            read_only: self.read_only,
            insn_count: self.program.insn_count() as u32,
            worst_case: self.program.worst_case_insns() as u32,
            served: true,
        }
    }

    /// The program compiled for `engine`: compiled by the first caller, then shared; the
    /// reason when it does not compile.
    pub fn compiled(&self, engine: Engine) -> Result<Arc<CompiledVm>, String> {
        self.compiled[engine.index()]
            .get_or_init(|| {
                CompiledVm::new(self.program.clone(), engine)
                    .map(|vm| Arc::new(vm.read_only(self.read_only)))
                    .map_err(|e| e.to_string())
            })
            .clone()
    }
}

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("offload id {id} is already registered (as {name:?})")]
    Exists { id: OffloadId, name: String },
    #[error("no offload with id {id}")]
    Unknown { id: OffloadId },
    #[error("offload id {id} is past the limit of {MAX_OFFLOADS}")]
    TooLarge { id: OffloadId },
    #[error("the registry is full ({MAX_OFFLOADS} offloads)")]
    Full,
    #[error("offload {name:?} does not compile for the {engine} engine: {reason}")]
    Compile {
        name: String,
        engine: &'static str,
        reason: String,
    },
}

struct Table {
    slots: Vec<Option<Arc<Offload>>>,
}

/// The offloads of a process, shared by its workers.
pub struct Registry {
    table: Mutex<Table>,
    epoch: AtomicU64,
    /// The engine this process's workers run, when known: a registration compiles for it
    /// before the offload becomes visible, in the registering thread (a control thread, not a
    /// worker), and fails when the program does not compile.
    engine: Option<Engine>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            table: Mutex::new(Table { slots: Vec::new() }),
            epoch: AtomicU64::new(0),
            engine: None,
        }
    }
}

/// What `register` needs besides the program.
#[derive(Debug, Clone)]
pub struct OffloadSpec {
    pub name: String,
    pub tenant: TenantId,
    pub class: u16,
    pub read_only: bool,
}

/// Why a REGISTER on `class` was refused: `taken` (another tenant's offload) is there.
pub fn class_taken_detail(class: u16, taken: &Offload) -> String {
    format!(
        "class {class} carries tenant {}'s offload {} ({}): a class is one tenant's; choose \
         another",
        taken.tenant, taken.id, taken.name
    )
}

impl Registry {
    /// A registry whose offloads are compiled by the first pool that takes them.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A registry whose registrations compile for `engine` (the one the process's workers
    /// run) before they take effect, so workers never compile.
    pub fn for_engine(engine: Engine) -> Arc<Self> {
        Arc::new(Self {
            engine: Some(engine),
            ..Self::default()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A worker that panicked while holding the lock leaves the table consistent (every
        // change is a single slot store), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok` when `id` is not registered in `t`.
    fn free(t: &Table, id: OffloadId) -> Result<(), RegistryError> {
        match t.slots.get(id as usize).and_then(Option::as_ref) {
            Some(o) => Err(RegistryError::Exists {
                id,
                name: o.name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Registers under a chosen id.
    pub fn register_as(
        &self,
        id: OffloadId,
        spec: OffloadSpec,
        program: Arc<VerifiedProgram>,
    ) -> Result<Arc<Offload>, RegistryError> {
        if id as usize >= MAX_OFFLOADS {
            return Err(RegistryError::TooLarge { id });
        }
        // A taken id is refused before anything is compiled: callers looking for a free id
        // try one after another.
        Self::free(&self.lock(), id)?;
        let off = Arc::new(Offload {
            id,
            name: spec.name,
            tenant: spec.tenant,
            class: spec.class,
            read_only: spec.read_only,
            program,
            compiled: Default::default(),
        });
        // Compiled before the lock is taken: the workers' pools read the table.
        if let Some(engine) = self.engine {
            off.compiled(engine)
                .map_err(|reason| RegistryError::Compile {
                    name: off.name.clone(),
                    engine: engine.name(),
                    reason,
                })?;
        }
        let mut t = self.lock();
        // Again: another registration may have taken it while this one compiled.
        Self::free(&t, id)?;
        let i = id as usize;
        if t.slots.len() <= i {
            t.slots.resize(i + 1, None);
        }
        t.slots[i] = Some(off.clone());
        self.epoch.fetch_add(1, Ordering::Release);
        Ok(off)
    }

    /// Registers under the lowest free id.
    pub fn register(
        &self,
        spec: OffloadSpec,
        program: Arc<VerifiedProgram>,
    ) -> Result<Arc<Offload>, RegistryError> {
        let id = {
            let t = self.lock();
            t.slots
                .iter()
                .position(Option::is_none)
                .unwrap_or(t.slots.len())
        };
        if id >= MAX_OFFLOADS {
            return Err(RegistryError::Full);
        }
        // The lock was released: another registration may have taken `id`; try the next.
        match self.register_as(id as OffloadId, spec.clone(), program.clone()) {
            Err(RegistryError::Exists { .. }) => self.register(spec, program),
            r => r,
        }
    }

    pub fn unregister(&self, id: OffloadId) -> Result<Arc<Offload>, RegistryError> {
        let mut t = self.lock();
        let off = t
            .slots
            .get_mut(id as usize)
            .and_then(Option::take)
            .ok_or(RegistryError::Unknown { id })?;
        self.epoch.fetch_add(1, Ordering::Release);
        Ok(off)
    }

    pub fn get(&self, id: OffloadId) -> Option<Arc<Offload>> {
        self.lock().slots.get(id as usize).cloned().flatten()
    }

    pub fn find(&self, name: &str) -> Option<Arc<Offload>> {
        self.lock()
            .slots
            .iter()
            .flatten()
            .find(|o| o.name == name)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<Offload>> {
        self.lock().slots.iter().flatten().cloned().collect()
    }

    /// An offload of another tenant than `tenant` on steering class `class`, if any: a class
    /// (its port, its queue at the NIC) is one tenant's, so that another tenant flooding its
    /// own offload there cannot drop this one's messages before any fair share applies.
    pub fn class_taken(&self, class: u16, tenant: u32) -> Option<Arc<Offload>> {
        self.lock()
            .slots
            .iter()
            .flatten()
            .find(|o| o.class == class && o.tenant != tenant)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().slots.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes every time the set of offloads changes.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

/// One worker's entry for an offload.
pub struct PoolEntry {
    pub offload: Arc<Offload>,
    /// The offload's compiled program, shared with every other pool.
    pub vm: Arc<CompiledVm>,
    /// What this worker ran of the offload (written by the worker only).
    pub runs: Arc<RunCounters>,
}

/// One worker's counters of one offload, as the kernel's `run_cnt`/`run_time_ns`: written by
/// that worker alone (plain loads and stores, [`crate::counter::bump`]), read by whoever reports
/// them. Created when the pool compiles the offload, never on the data path.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct RunCounters {
    /// Messages that ended here (done, aborted or failed).
    pub runs: AtomicU64,
    /// Handler steps run.
    pub steps: AtomicU64,
    /// Messages that ended in an error (other than the handler's own abort).
    pub errors: AtomicU64,
    /// Nanoseconds inside the VM, when the worker measures it (it costs two clock reads per
    /// step; the kernel's `bpf_stats_enabled` makes the same trade).
    pub run_ns: AtomicU64,
}

impl RunCounters {
    /// `(runs, steps, errors, run_ns)` now.
    pub fn read(&self) -> [u64; 4] {
        [&self.runs, &self.steps, &self.errors, &self.run_ns].map(|c| c.load(Ordering::Relaxed))
    }
}

/// A worker's view of the registry: each offload's compiled VM, indexed by id.
pub struct VmPool {
    registry: Arc<Registry>,
    engine: Engine,
    seen_epoch: u64,
    slots: Vec<Option<PoolEntry>>,
    /// Programs that failed to compile here, with the reason (reported, then skipped).
    pub compile_errors: Vec<(OffloadId, String)>,
}

impl VmPool {
    pub fn new(registry: Arc<Registry>, engine: Engine) -> Self {
        let mut p = Self {
            registry,
            engine,
            seen_epoch: u64::MAX,
            slots: Vec::new(),
            compile_errors: Vec::new(),
        };
        p.sync();
        p
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Catches up with the registry when its epoch moved; cheap (one atomic load) otherwise.
    /// Returns true when anything changed.
    pub fn sync(&mut self) -> bool {
        let epoch = self.registry.epoch();
        if epoch == self.seen_epoch {
            return false;
        }
        let current = self.registry.list();
        let max = current.iter().map(|o| o.id as usize + 1).max().unwrap_or(0);
        // Indexed by id, so that catching up is linear in the offloads (comparing every slot
        // with the whole list made each registration cost every worker O(n²): 45 ms at 12 000
        // offloads, the probe of 2026-12-06).
        let mut registered: Vec<Option<&Arc<Offload>>> = vec![None; max];
        for o in &current {
            registered[o.id as usize] = Some(o);
        }
        for (id, slot) in self.slots.iter_mut().enumerate() {
            let keep = match (slot.as_ref(), registered.get(id).copied().flatten()) {
                (Some(e), Some(o)) => Arc::ptr_eq(o, &e.offload),
                _ => false,
            };
            if !keep {
                *slot = None;
            }
        }
        if self.slots.len() < max {
            self.slots.resize_with(max, || None);
        }
        for off in current {
            let slot = &mut self.slots[off.id as usize];
            if slot.is_none() {
                match off.compiled(self.engine) {
                    Ok(vm) => {
                        *slot = Some(PoolEntry {
                            offload: off,
                            vm,
                            runs: Arc::default(),
                        })
                    }
                    Err(e) => self.compile_errors.push((off.id, e)),
                }
            }
        }
        self.seen_epoch = epoch;
        true
    }

    /// Every compiled offload's run counters (for publishing after [`VmPool::sync`]).
    pub fn run_counters(&self) -> Vec<(OffloadId, Arc<RunCounters>)> {
        self.slots
            .iter()
            .flatten()
            .map(|e| (e.offload.id, e.runs.clone()))
            .collect()
    }

    /// The compiled offload `id`, if registered.
    #[inline]
    pub fn get(&self, id: OffloadId) -> Option<&PoolEntry> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

/// Convenience for single-program uses (tests, benchmarks, the client's local execution).
pub fn compile(program: Arc<VerifiedProgram>, engine: Engine) -> Result<CompiledVm, VmError> {
    CompiledVm::new(program, engine)
}
