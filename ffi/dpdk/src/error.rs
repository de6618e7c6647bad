//! One error type for every DPDK call, built in one place from the call's return code.

use std::ffi::CStr;

/// A failed DPDK call: which call, the errno it reported, and DPDK's text for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} failed: {message} (errno {errno})")]
pub struct DpdkError {
    /// The DPDK function (or step) that failed.
    pub op: &'static str,
    /// The positive errno value.
    pub errno: i32,
    /// `rte_strerror(errno)`, or the driver's own message (rte_flow).
    pub message: String,
}

/// How a DPDK function reports failure.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Convention {
    /// Returns `-errno` (ethdev, rte_flow).
    NegErrno,
    /// Returns a negative value and sets `rte_errno` (EAL, mempool, ring, from_rings).
    RteErrno,
}

impl DpdkError {
    /// An error with `rte_strerror`'s text for `errno`.
    pub(crate) fn new(op: &'static str, errno: i32) -> Self {
        DpdkError {
            op,
            errno,
            message: strerror(errno),
        }
    }

    /// An error from the current `rte_errno`.
    pub(crate) fn from_rte_errno(op: &'static str) -> Self {
        // SAFETY: reads the calling thread's `rte_errno`; no preconditions.
        let errno = unsafe { dpdk_sys::naam_errno() };
        Self::new(op, errno)
    }

    /// Whether the call failed because the driver does not implement it (`ENOSYS`/`ENOTSUP`).
    pub fn is_unsupported(&self) -> bool {
        self.errno == libc::ENOSYS || self.errno == libc::ENOTSUP
    }
}

/// Turns a DPDK return code into `Ok(rc)` (non-negative) or the error it reports.
pub(crate) fn check(op: &'static str, rc: i32, convention: Convention) -> Result<u32, DpdkError> {
    if rc >= 0 {
        return Ok(rc as u32);
    }
    match convention {
        Convention::NegErrno => Err(DpdkError::new(op, -rc)),
        Convention::RteErrno => Err(DpdkError::from_rte_errno(op)),
    }
}

/// DPDK's description of an errno value (it covers both libc and DPDK's own codes).
pub(crate) fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a NUL-terminated string, static or in
    // thread-local storage, that stays valid until the next call on this thread; we copy it
    // out at once.
    unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) }
        .to_string_lossy()
        .into_owned()
}
