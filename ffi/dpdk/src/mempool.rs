//! Packet-buffer pools (`rte_pktmbuf_pool_create`).

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use super::error::DpdkError;
use super::mbuf::{Mbuf, MbufBurst};
use super::Eal;

/// A pool of packet buffers. Cheap to clone (shared); the ports whose receive rings it fills
/// hold a clone, so it outlives them. Freed when the last clone goes, unless mbufs from it are
/// still out (then it is leaked with a warning rather than freed under them).
#[derive(Clone)]
pub struct Mempool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    ptr: NonNull<dpdk_sys::rte_mempool>,
    name: String,
    _eal: Eal,
}

// SAFETY: DPDK mempools are multi-producer/multi-consumer safe (the default ring ops); the
// pointer is only used through the thread-safe mempool API.
unsafe impl Send for PoolInner {}
// SAFETY: as above.
unsafe impl Sync for PoolInner {}

impl Mempool {
    /// Creates a pool of `n` mbufs with `data_room` bytes each (including the
    /// `RTE_PKTMBUF_HEADROOM`), and a per-lcore cache of `cache` mbufs. Names are global to the
    /// process (and to its secondary processes): pick a unique one.
    pub fn pktmbuf(
        eal: &Eal,
        name: &str,
        n: u32,
        cache: u32,
        data_room: u16,
    ) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError {
            op: "rte_pktmbuf_pool_create",
            errno: libc::EINVAL,
            message: format!("pool name {name:?} contains a NUL byte"),
        })?;
        // SAFETY: EAL is initialised (`eal`); `cname` is a valid C string that DPDK copies.
        let ptr = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                n,
                cache,
                0,
                data_room,
                eal.socket_id() as i32,
            )
        };
        let ptr = NonNull::new(ptr)
            .ok_or_else(|| DpdkError::from_rte_errno("rte_pktmbuf_pool_create"))?;
        Ok(Mempool {
            inner: Arc::new(PoolInner {
                ptr,
                name: name.to_owned(),
                _eal: eal.clone(),
            }),
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Mbufs free in the pool (including per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive (we hold it).
        unsafe { dpdk_sys::rte_mempool_avail_count(self.inner.ptr.as_ptr()) }
    }

    /// Mbufs taken from the pool and not yet returned.
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is alive.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.inner.ptr.as_ptr()) }
    }

    /// Takes one mbuf (reset, empty), or `None` if the pool is exhausted.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is alive and a packet-mbuf pool (created by rte_pktmbuf_pool_create).
        let m = unsafe { dpdk_sys::naam_pktmbuf_alloc(self.inner.ptr.as_ptr()) };
        // SAFETY: a non-NULL result is an mbuf we now own exclusively.
        NonNull::new(m).map(|m| unsafe { Mbuf::from_raw(m) })
    }

    /// Appends `count` fresh mbufs to `burst`, all or none. Returns false (nothing taken) if the
    /// pool cannot supply them all or the burst has no room.
    pub fn alloc_into<const N: usize>(&self, burst: &mut MbufBurst<N>, count: usize) -> bool {
        if count == 0 {
            return true;
        }
        if count > burst.spare() {
            return false;
        }
        let tail = burst.spare_ptr();
        // SAFETY: `tail` points at `count` (<= spare) writable slots of the burst; on success
        // DPDK writes `count` owned mbuf pointers there, which we then count as initialised.
        let rc = unsafe {
            dpdk_sys::naam_pktmbuf_alloc_bulk(self.inner.ptr.as_ptr(), tail, count as u32)
        };
        if rc != 0 {
            return false;
        }
        // SAFETY: the `count` slots after `len` were just filled with owned mbufs.
        unsafe { burst.assume_filled(count) };
        true
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.inner.ptr.as_ptr()
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: the pool is alive until the free below.
        let in_use = unsafe { dpdk_sys::rte_mempool_in_use_count(self.ptr.as_ptr()) };
        if in_use != 0 {
            tracing::warn!(pool = %self.name, in_use, "mempool dropped with mbufs out: leaked");
            return;
        }
        // SAFETY: no mbuf from the pool is out and no port references it (ports hold a
        // `Mempool` clone), so nothing can touch its memory after this.
        unsafe { dpdk_sys::rte_mempool_free(self.ptr.as_ptr()) };
    }
}
