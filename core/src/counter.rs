//! Counters shared with readers but owned by one writer (a worker's own statistics): the
//! writer adds with a plain load and store, no locked read-modify-write instruction, and any
//! thread reads them with a relaxed load. Counters written by several threads use
//! `fetch_add` instead.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds `n` to a counter that only the calling thread writes.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}
