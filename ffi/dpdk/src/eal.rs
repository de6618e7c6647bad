//! The Environment Abstraction Layer: initialised once per process from command-line style
//! arguments, cleaned up when the last [`Eal`] handle is dropped.

use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::error::{check, Convention, DpdkError};

/// Set by the first `Eal::init` call: DPDK allows one `rte_eal_init` per process, even after
/// `rte_eal_cleanup`.
static EAL_CLAIMED: AtomicBool = AtomicBool::new(false);

/// A handle on the initialised EAL. Cheap to clone; every pool, port and queue holds one, so
/// EAL is cleaned up only after all of them are gone.
#[derive(Clone)]
pub struct Eal {
    _inner: Arc<EalInner>,
}

struct EalInner {
    /// The argument vector given to `rte_eal_init`, which may keep pointers into it.
    argv: Vec<*mut c_char>,
}

// SAFETY: `argv` is only touched at init and drop; EAL itself is process-wide and thread-safe
// for the calls this layer makes through an `Eal` handle.
unsafe impl Send for EalInner {}
// SAFETY: as above; no method mutates `EalInner`.
unsafe impl Sync for EalInner {}

impl Eal {
    /// Initialises EAL with `args` (without a program name, e.g. `["--no-huge", "-m", "256",
    /// "--vdev=net_null0"]`). Only the first call in a process can succeed; later calls
    /// return `EALREADY`.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        if EAL_CLAIMED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::new("rte_eal_init", libc::EALREADY));
        }
        let mut argv = Vec::with_capacity(args.len() + 2);
        for arg in std::iter::once("naam-dataplane").chain(args.iter().map(AsRef::as_ref)) {
            let c = CString::new(arg).map_err(|_| DpdkError {
                op: "rte_eal_init",
                errno: libc::EINVAL,
                message: format!("argument {arg:?} contains a NUL byte"),
            })?;
            argv.push(c.into_raw());
        }
        let argc = argv.len() as i32;
        // rte_eal_init permutes argv (getopt); give it its own copy of the pointer array.
        let mut scratch = argv.clone();
        scratch.push(std::ptr::null_mut());
        // SAFETY: `scratch` holds `argc` valid NUL-terminated strings (owned by `argv`, freed
        // only in `Drop`, after cleanup) and a terminating NULL; this is the process's only
        // `rte_eal_init` call (guarded by EAL_CLAIMED).
        let rc = unsafe { dpdk_sys::rte_eal_init(argc, scratch.as_mut_ptr()) };
        std::mem::forget(scratch); // EAL may keep pointers into the array.
                                   // On failure the strings are leaked (raw pointers), as EAL may still refer to them;
                                   // and no `EalInner` exists, so no cleanup runs on an EAL that never started.
        check("rte_eal_init", rc, Convention::RteErrno)?;
        Ok(Eal {
            _inner: Arc::new(EalInner { argv }),
        })
    }

    /// The number of lcores EAL was given (`-l`/`-c`).
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: EAL is initialised (we hold a handle).
        unsafe { dpdk_sys::rte_lcore_count() }
    }

    /// The main lcore (the thread that called `Eal::init`).
    pub fn main_lcore(&self) -> LcoreId {
        // SAFETY: EAL is initialised.
        LcoreId(unsafe { dpdk_sys::rte_get_main_lcore() })
    }

    /// The NUMA socket of the calling thread.
    pub fn socket_id(&self) -> u32 {
        // SAFETY: EAL is initialised.
        unsafe { dpdk_sys::rte_socket_id() }
    }
}

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: the last handle is going: no pool, port or queue remains (each holds an
        // `Eal`), so nothing uses DPDK resources any more.
        let rc = unsafe { dpdk_sys::rte_eal_cleanup() };
        if rc < 0 {
            tracing::warn!(rc, "rte_eal_cleanup failed");
        }
        for p in self.argv.drain(..) {
            // SAFETY: each pointer came from `CString::into_raw` in `init`, and EAL, cleaned
            // up, no longer reads argv.
            drop(unsafe { CString::from_raw(p) });
        }
    }
}

/// An EAL logical core id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LcoreId(pub u32);

impl LcoreId {
    /// `LCORE_ID_ANY`: the id of threads EAL did not create.
    pub const ANY: LcoreId = LcoreId(u32::MAX);

    /// The calling thread's lcore id ([`LcoreId::ANY`] outside EAL's threads).
    pub fn current() -> LcoreId {
        // SAFETY: reads a thread-local; valid before and after EAL init.
        LcoreId(unsafe { dpdk_sys::naam_lcore_id() })
    }
}
