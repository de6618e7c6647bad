//! Owned packet buffers and fixed-capacity bursts of them (on the stack, no allocation).
//!
//! Only single-segment mbufs are handled: ports are configured without scatter, and a
//! received multi-segment mbuf is visible through `nb_segs`/`pkt_len` for the caller to drop.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

/// One owned mbuf, returned to its pool when dropped.
#[repr(transparent)]
pub struct Mbuf(NonNull<dpdk_sys::rte_mbuf>);

// SAFETY: an `Mbuf` is the only handle on its buffer, and freeing to a mempool is thread-safe.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `m` must be a valid mbuf that nothing else owns or frees.
    pub unsafe fn from_raw(m: NonNull<dpdk_sys::rte_mbuf>) -> Mbuf {
        Mbuf(m)
    }

    /// Gives up ownership: the caller must free (or transmit) the mbuf.
    pub fn into_raw(self) -> NonNull<dpdk_sys::rte_mbuf> {
        let m = self.0;
        std::mem::forget(self);
        m
    }

    /// The raw pointer, still owned by `self`.
    pub fn as_ptr(&self) -> *mut dpdk_sys::rte_mbuf {
        self.0.as_ptr()
    }

    /// Bytes of data in the first (only) segment.
    pub fn data_len(&self) -> usize {
        // SAFETY: `self.0` is a valid mbuf we own.
        usize::from(unsafe { dpdk_sys::naam_pktmbuf_data_len(self.0.as_ptr()) })
    }

    /// Bytes of data in the whole chain.
    pub fn pkt_len(&self) -> usize {
        // SAFETY: as above.
        unsafe { dpdk_sys::naam_pktmbuf_pkt_len(self.0.as_ptr()) as usize }
    }

    /// Segments in the chain (1 for everything this layer builds).
    pub fn nb_segs(&self) -> u16 {
        // SAFETY: as above.
        unsafe { dpdk_sys::naam_pktmbuf_nb_segs(self.0.as_ptr()) }
    }

    /// Free bytes before the data.
    pub fn headroom(&self) -> usize {
        // SAFETY: as above.
        usize::from(unsafe { dpdk_sys::naam_pktmbuf_headroom(self.0.as_ptr()) })
    }

    /// Free bytes after the data (first segment).
    pub fn tailroom(&self) -> usize {
        // SAFETY: as above.
        usize::from(unsafe { dpdk_sys::naam_pktmbuf_tailroom(self.0.as_ptr()) })
    }

    /// The data of the first segment.
    pub fn data(&self) -> &[u8] {
        // SAFETY: mtod points at `data_len` initialised bytes inside the mbuf's buffer, which
        // we own and which lives as long as `self`; `&self` forbids mutation meanwhile.
        unsafe {
            std::slice::from_raw_parts(
                dpdk_sys::naam_pktmbuf_mtod(self.0.as_ptr()) as *const u8,
                self.data_len(),
            )
        }
    }

    /// The data of the first segment, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let len = self.data_len();
        // SAFETY: as in `data`, and `&mut self` makes this the only view of the bytes.
        unsafe {
            std::slice::from_raw_parts_mut(
                dpdk_sys::naam_pktmbuf_mtod(self.0.as_ptr()) as *mut u8,
                len,
            )
        }
    }

    /// Grows the data by `len` bytes at the end; returns the new bytes (uninitialised contents
    /// are whatever the buffer held: write them), or `None` if the tailroom is too small.
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: we own the mbuf; append checks the tailroom and returns NULL if short.
        let p = unsafe { dpdk_sys::naam_pktmbuf_append(self.0.as_ptr(), len) };
        let p = NonNull::new(p as *mut u8)?;
        // SAFETY: `p` points at `len` bytes inside our buffer, now part of the data; mbuf
        // buffers are plain bytes, so any content is a valid `u8`.
        Some(unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), usize::from(len)) })
    }

    /// Grows the data by `len` bytes at the front; returns them, or `None` if the headroom is
    /// too small.
    pub fn prepend(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: we own the mbuf; prepend checks the headroom and returns NULL if short.
        let p = unsafe { dpdk_sys::naam_pktmbuf_prepend(self.0.as_ptr(), len) };
        let p = NonNull::new(p as *mut u8)?;
        // SAFETY: as in `append`.
        Some(unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), usize::from(len)) })
    }

    /// Removes `len` bytes from the front; false (unchanged) if the data is shorter.
    pub fn adj(&mut self, len: u16) -> bool {
        // SAFETY: we own the mbuf; adj checks the length and returns NULL if short.
        !unsafe { dpdk_sys::naam_pktmbuf_adj(self.0.as_ptr(), len) }.is_null()
    }

    /// Removes `len` bytes from the end; false (unchanged) if the data is shorter.
    pub fn trim(&mut self, len: u16) -> bool {
        // SAFETY: we own the mbuf; trim checks the length and returns -1 if short.
        unsafe { dpdk_sys::naam_pktmbuf_trim(self.0.as_ptr(), len) == 0 }
    }

    /// Empties the mbuf (data offset back to the default headroom, lengths 0, flags cleared).
    pub fn reset(&mut self) {
        // SAFETY: we own the mbuf.
        unsafe { dpdk_sys::naam_pktmbuf_reset(self.0.as_ptr()) }
    }

    /// The offload flags (`RTE_MBUF_F_*`).
    pub fn ol_flags(&self) -> u64 {
        // SAFETY: we own the mbuf.
        unsafe { dpdk_sys::naam_mbuf_ol_flags(self.0.as_ptr()) }
    }

    /// Asks the NIC to fill in the IPv4 header checksum (the port must have been configured
    /// with `RTE_ETH_TX_OFFLOAD_IPV4_CKSUM`).
    pub fn request_ipv4_checksum(&mut self, l2_len: u16, l3_len: u16) {
        // SAFETY: we own the mbuf; this only sets metadata fields.
        unsafe { dpdk_sys::naam_mbuf_set_tx_ipv4_cksum(self.0.as_ptr(), l2_len, l3_len) }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and nothing uses it after this.
        unsafe { dpdk_sys::naam_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Up to `N` owned mbufs in an inline array (meant to live on the stack of a poll loop). The
/// mbufs still held when it is dropped are freed.
pub struct MbufBurst<const N: usize> {
    len: usize,
    slots: [MaybeUninit<Mbuf>; N],
}

impl<const N: usize> Default for MbufBurst<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> MbufBurst<N> {
    /// An empty burst.
    pub const fn new() -> Self {
        MbufBurst {
            len: 0,
            slots: [const { MaybeUninit::uninit() }; N],
        }
    }

    /// Mbufs held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no mbuf is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fixed capacity `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Free slots.
    pub fn spare(&self) -> usize {
        N - self.len
    }

    /// Adds an mbuf at the end; gives it back if the burst is full.
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == N {
            return Err(m);
        }
        self.slots[self.len].write(m);
        self.len += 1;
        Ok(())
    }

    /// Removes the last mbuf.
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: slot `len` (the old last) was initialised and is now outside the live
        // range, so it is read exactly once.
        Some(unsafe { self.slots[self.len].assume_init_read() })
    }

    /// Removes the mbuf at `index`, moving the last one into its place.
    pub fn swap_remove(&mut self, index: usize) -> Option<Mbuf> {
        if index >= self.len {
            return None;
        }
        self.slots.swap(index, self.len - 1);
        self.pop()
    }

    /// The held mbufs.
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: the first `len` slots are initialised; `MaybeUninit<Mbuf>` has `Mbuf`'s
        // layout.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr().cast::<Mbuf>(), self.len) }
    }

    /// The held mbufs, writable.
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in `as_slice`, with exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.slots.as_mut_ptr().cast::<Mbuf>(), self.len) }
    }

    /// Moves as many mbufs as fit from the front of `other` to the end of `self`, keeping their
    /// order; the rest stay in `other`. Returns how many moved.
    pub fn append_from<const M: usize>(&mut self, other: &mut MbufBurst<M>) -> usize {
        let n = self.spare().min(other.len);
        // SAFETY: the first `n` slots of `other` hold owned mbufs; they are copied into free
        // slots of `self` (distinct arrays) and then dropped from `other`'s live range without
        // being freed, so each mbuf keeps exactly one owner.
        unsafe {
            std::ptr::copy_nonoverlapping(
                other.slots.as_ptr(),
                self.slots.as_mut_ptr().add(self.len),
                n,
            );
            self.len += n;
            other.forget_front(n);
        }
        n
    }

    /// Frees every held mbuf (in one bulk call).
    pub fn clear(&mut self) {
        if self.len == 0 {
            return;
        }
        let n = self.len;
        self.len = 0;
        // SAFETY: the first `n` slots held owned mbufs (`Mbuf` is a transparent pointer), now
        // outside the live range so never freed again.
        unsafe { dpdk_sys::naam_pktmbuf_free_bulk(self.slots.as_mut_ptr().cast(), n as u32) }
    }

    /// Drops the first `n` mbufs from the live range *without freeing them* (they were handed
    /// to the device), moving the rest to the front.
    ///
    /// # Safety
    /// The first `n` mbufs must now be owned elsewhere.
    pub(crate) unsafe fn forget_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        let n = n.min(self.len);
        let rest = self.len - n;
        // SAFETY: both ranges lie within the array; `ptr::copy` handles the overlap, and the
        // moved-from slots past `rest` are outside the live range afterwards.
        unsafe {
            let base = self.slots.as_mut_ptr();
            std::ptr::copy(base.add(n), base, rest);
        }
        self.len = rest;
    }

    /// Pointer to the first held mbuf pointer (for tx bursts).
    pub(crate) fn raw_ptr(&mut self) -> *mut *mut dpdk_sys::rte_mbuf {
        self.slots.as_mut_ptr().cast()
    }

    /// Pointer to the first free slot (for rx bursts and bulk allocation).
    pub(crate) fn spare_ptr(&mut self) -> *mut *mut dpdk_sys::rte_mbuf {
        // SAFETY: `len <= N`, so the offset is within (or one past) the array.
        unsafe { self.slots.as_mut_ptr().add(self.len).cast() }
    }

    /// Counts `n` more slots after the live range as held.
    ///
    /// # Safety
    /// Those `n` slots must hold owned, valid mbuf pointers, and `len + n <= N`.
    pub(crate) unsafe fn assume_filled(&mut self, n: usize) {
        debug_assert!(self.len + n <= N);
        self.len += n;
    }
}

impl<const N: usize> Drop for MbufBurst<N> {
    fn drop(&mut self) {
        self.clear();
    }
}
