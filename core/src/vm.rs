//! Compiling and running one handler program: the rbpf engines behind one type.
//!
//! A program is compiled once per engine and the [`CompiledVm`] shared by every worker (see
//! [`crate::pool`]): it is immutable once built, and running it keeps all state on the calling
//! thread's stack. The JIT checks nothing at run time: only programs accepted by
//! [`crate::verifier`] reach this module.

use crate::abi::{Ctx, CTX_SIZE};
use crate::verifier::VerifiedProgram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Which rbpf engine runs a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// rbpf's x86_64 JIT (x86_64 only).
    Jit,
    /// rbpf's cranelift JIT (built on aarch64, where the x86 JIT cannot run).
    Cranelift,
    /// rbpf's interpreter: slow, checks every access; for debugging and differential tests.
    Interpreter,
}

impl Engine {
    /// The compiled engine for this machine.
    pub const fn native() -> Engine {
        if cfg!(target_arch = "x86_64") {
            Engine::Jit
        } else if cfg!(target_arch = "aarch64") {
            Engine::Cranelift
        } else {
            Engine::Interpreter
        }
    }

    /// Whether this build can run the engine.
    pub const fn available(self) -> bool {
        match self {
            Engine::Jit => cfg!(target_arch = "x86_64"),
            Engine::Cranelift => cfg!(target_arch = "aarch64"),
            Engine::Interpreter => true,
        }
    }

    /// Every engine, in [`Engine::index`] order.
    pub const ALL: [Engine; 3] = [Engine::Jit, Engine::Cranelift, Engine::Interpreter];

    /// This engine's position in [`Engine::ALL`] (a table index).
    pub const fn index(self) -> usize {
        match self {
            Engine::Jit => 0,
            Engine::Cranelift => 1,
            Engine::Interpreter => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Jit => "jit",
            Engine::Cranelift => "cranelift",
            Engine::Interpreter => "interpreter",
        }
    }
}

impl core::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jit" => Ok(Engine::Jit),
            "cranelift" => Ok(Engine::Cranelift),
            "interpreter" | "interp" => Ok(Engine::Interpreter),
            "native" => Ok(Engine::native()),
            _ => Err(format!(
                "unknown engine {s:?} (jit, cranelift, interpreter, native)"
            )),
        }
    }
}

/// Why a program could not be compiled or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("engine {} is not available on this machine", engine.name())]
    Unavailable { engine: Engine },
    #[error("rbpf refused program {name:?}")]
    Load {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("program {name:?} is too large for the {} code buffer", engine.name())]
    TooLarge { name: String, engine: Engine },
    #[error("program {name:?} failed at run time")]
    Run {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// One program compiled for one engine, shared (behind an `Arc`) by every thread that runs it.
pub struct CompiledVm {
    // Field order matters: `vm` borrows the instructions `prog` keeps alive, so it is dropped
    // first.
    vm: rbpf::EbpfVmRaw<'static>,
    engine: Engine,
    prog: Arc<VerifiedProgram>,
    /// Unique among the VMs of this process (never reused): how a context tells that it
    /// already holds this program's store footprint ([`Ctx::for_program`]).
    id: u64,
    /// The offload it runs was registered read-only: its steps may ask for READs only
    /// ([`CompiledVm::read_only`]).
    read_only: bool,
}

// SAFETY: Send: of rbpf's VM, only two parts are not `Send` by their types: the stack
// verifier's optional user data (`Option<Box<dyn Any>>`), which is `None` here (`EbpfVmRaw::new`
// creates it so and this type never installs a stack-usage calculator), and, on aarch64,
// cranelift's `JITModule`, whose fields are owned allocations and `Send` boxes (its symbol
// table is a `RefCell`, which may move between threads). Moving the whole VM to another
// thread, and dropping it there, is therefore sound.
#[allow(unsafe_code)]
unsafe impl Send for CompiledVm {}
// SAFETY: Sync: a CompiledVm is never mutated after `new` (every method takes `&self`), and
// running it through `&self` only reads: the instruction slice, the helper table and, for the
// JITs, the compiled code's address (cranelift's `get_finalized_function` reads its function
// table, not the `RefCell`). The generated code and the interpreter keep registers and the
// eBPF stack on the calling thread's stack, and the helpers registered here are pure
// functions, so any number of threads may run one CompiledVm at once.
#[allow(unsafe_code)]
unsafe impl Sync for CompiledVm {}

/// The next [`CompiledVm::id`]; 0 is never given out.
static NEXT_VM_ID: AtomicU64 = AtomicU64::new(1);

impl CompiledVm {
    pub fn new(prog: Arc<VerifiedProgram>, engine: Engine) -> Result<Self, VmError> {
        if !engine.available() {
            return Err(VmError::Unavailable { engine });
        }
        let name = prog.name().to_owned();
        let insns: &[u8] = prog.insns();
        // SAFETY: the instructions live in `prog`, an Arc this struct holds for as long as the
        // VM exists (the VM is dropped first, see the field order), and they are never
        // mutated. The 'static lifetime is never handed out.
        let insns: &'static [u8] =
            unsafe { core::slice::from_raw_parts(insns.as_ptr(), insns.len()) };
        let mut vm = rbpf::EbpfVmRaw::new(Some(insns)).map_err(|source| VmError::Load {
            name: name.clone(),
            source,
        })?;
        for &(id, _, _, f) in crate::helpers::HELPERS {
            vm.register_helper(id, f).map_err(|source| VmError::Load {
                name: name.clone(),
                source,
            })?;
        }
        match engine {
            Engine::Interpreter => {}
            Engine::Jit => {
                // rbpf's x86 JIT asserts (panics) when its one-page code buffer overflows; the
                // verifier bounds program size, and this turns any remaining case into an error.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| vm.jit_compile()));
                match r {
                    Ok(res) => res.map_err(|source| VmError::Load {
                        name: name.clone(),
                        source,
                    })?,
                    Err(_) => return Err(VmError::TooLarge { name, engine }),
                }
            }
            Engine::Cranelift => {
                #[cfg(target_arch = "aarch64")]
                vm.cranelift_compile().map_err(|source| VmError::Load {
                    name: name.clone(),
                    source,
                })?;
            }
        }
        Ok(Self {
            vm,
            engine,
            prog,
            id: NEXT_VM_ID.fetch_add(1, Ordering::Relaxed),
            read_only: false,
        })
    }

    /// This VM for an offload registered read-only, whose requests are not de-duplicated (a
    /// retransmission runs again): a step of it that asks for anything but READs is refused
    /// ([`crate::exec::Run::check`]), wherever it runs, so a mutation never runs twice.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Whether its steps may ask for READs only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub fn program(&self) -> &Arc<VerifiedProgram> {
        &self.prog
    }

    /// Runs one step with r1 = the context; returns r0.
    pub fn run(&self, ctx: &mut Ctx) -> Result<u64, VmError> {
        let bytes = ctx.for_program(self.prog.ctx_writes(), self.id);
        // SAFETY: rbpf ties the memory argument to the program's lifetime ('static here) but
        // only uses it for the duration of the call; the slice is the caller's exclusive
        // borrow of the context and does not outlive this function.
        let mem: &'static mut [u8] =
            unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr(), CTX_SIZE) };
        let r = match self.engine {
            Engine::Interpreter => self.vm.execute_program(mem),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the program passed our verifier (VerifiedProgram can only be built by it),
            // which proves every load and store stays inside the context or the stack, that
            // it terminates, and that it calls only whitelisted pure helpers.
            Engine::Jit => unsafe { self.vm.execute_program_jit(mem) },
            #[cfg(target_arch = "aarch64")]
            Engine::Cranelift => self.vm.execute_program_cranelift(mem),
            #[allow(unreachable_patterns)]
            _ => {
                return Err(VmError::Unavailable {
                    engine: self.engine,
                })
            }
        };
        r.map_err(|source| VmError::Run {
            name: self.prog.name().to_owned(),
            source,
        })
    }
}

/// The instructions of a verified program as text, one entry per instruction slot that
/// starts an instruction (`lddw` takes two), with its index: what `naam offload dump`
/// prints (as `bpftool prog dump xlated`).
pub fn disassemble(prog: &VerifiedProgram) -> Vec<(usize, String)> {
    // rbpf's disassembler panics on opcodes it does not know; a verified program has none,
    // and a panic would still be turned into one line rather than take the caller down.
    let insns = prog.insns();
    let decoded = std::panic::catch_unwind(|| rbpf::disassembler::to_insn_vec(insns));
    let Ok(decoded) = decoded else {
        return vec![(0, "(the disassembler failed on this program)".into())];
    };
    let mut out = Vec::with_capacity(decoded.len());
    let mut slot = 0;
    for insn in decoded {
        out.push((slot, insn.desc));
        slot += if insn.opc == rbpf::ebpf::LD_DW_IMM {
            2
        } else {
            1
        };
    }
    out
}
