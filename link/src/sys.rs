//! Every system call and raw pointer the link needs, behind safe wrappers: memfd, shared
//! mappings, eventfds, descriptor passing over Unix sockets, socket hang-up checks and the
//! monotonic clock. This is the only module of the crate with `unsafe` code.

use naam_core::memory::RegionMem;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::sync::Arc;

/// The largest number of descriptors passed in one message.
pub const MAX_FDS: usize = 250;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The seals a shared area's memfd carries: its size is fixed for good, so the process it is
/// handed to can never see its mapping shrink under it (a SIGBUS on the next access).
const SIZE_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// Creates an anonymous memory file of `len` bytes, `MFD_HUGETLB` when `huge` is set, sealed
/// against any change of size.
pub fn memfd(name: &str, len: u64, huge: bool) -> io::Result<OwnedFd> {
    let cname =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags =
        libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | if huge { libc::MFD_HUGETLB } else { 0 };
    // SAFETY: cname is a valid NUL-terminated string for the duration of the call.
    let fd = cvt(unsafe { libc::memfd_create(cname.as_ptr(), flags) })?;
    // SAFETY: memfd_create just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: fd is a valid open descriptor.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    // SAFETY: fd is a valid memfd created with MFD_ALLOW_SEALING; F_ADD_SEALS takes an int.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SIZE_SEALS) })?;
    Ok(fd)
}

/// Whether the file behind `fd` can no longer shrink (`F_SEAL_SHRINK`; false for files that
/// cannot carry seals, such as a persistent area on tmpfs).
pub fn cannot_shrink(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: fd is a valid open descriptor; F_GET_SEALS takes no argument.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_SHRINK != 0
}

/// The size of the file behind `fd`.
pub fn file_len(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is valid and st is a writable stat.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_size as u64)
}

/// Opens `path` for reading and writing, created with mode 0600 when it is not there (kept
/// as it is when it is), with the extra open `flags` (`O_NOFOLLOW`, ...): the link's files
/// hold requests, replies and host memory, this user's only wherever they are.
pub fn open_private(path: &std::path::Path, flags: i32) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(flags)
        .open(path)
}

/// Sets the disposition of signal `sig` to "ignore" (signal(2) with `SIG_IGN`).
pub fn ignore_signal(sig: i32) -> io::Result<()> {
    // SAFETY: installs the SIG_IGN disposition, so no handler code of ours ever runs for it;
    // the call has no memory arguments.
    if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes an exclusive advisory lock on `fd`'s file without waiting (flock(2)); it is released
/// when the last descriptor of this open file closes. `Ok(false)`: another holds it.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: plain system call on a descriptor the caller borrows for the call.
    let r = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Gives the first `len` bytes of `fd`'s file storage now (posix_fallocate(3)), so that no
/// write through a mapping of it can fail later: a file only sized (`set_len`) is sparse, and
/// the first store to a page its filesystem has no room for kills the process with SIGBUS
/// (a full tmpfs under the run directory, probe 22). Fails with `ENOSPC` when there is no
/// room now.
pub fn allocate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: plain library call on a descriptor the caller borrows for the call.
    let r = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, len) };
    // It returns the error number rather than setting errno.
    match r {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// A shared, read-write mapping of a whole memory file, always in an `Arc`: views into it are
/// [`RegionMem`]s that hold that `Arc` and only access memory atomically, so the mapping lives
/// as long as any view and the other process writing concurrently is sound.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through RegionMem's atomics.
unsafe impl Send for Mapping {}
// SAFETY: as for Send.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared. With `populate`, pages are faulted in now (and a hugetlb
    /// file without reserved huge pages fails here rather than with SIGBUS later).
    pub fn map(fd: BorrowedFd<'_>, len: usize, populate: bool) -> io::Result<Arc<Self>> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a fresh mapping at an address of the kernel's choosing; no existing memory is
        // affected. The result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(Arc::new(Self { base, len }))
    }

    /// A view of `len` bytes at `offset`; `None` when out of the mapping or not 8-byte aligned.
    /// The view holds the mapping, so the memory stays mapped while any view of it exists.
    pub fn view(self: &Arc<Self>, offset: u64, len: u64) -> Option<RegionMem> {
        self.whole().slice(offset, len)
    }

    /// The mapping's whole words as one view ([`RegionMem::slice`] checks every view's bounds
    /// and alignment against it).
    fn whole(self: &Arc<Self>) -> RegionMem {
        // SAFETY: base is page-aligned (so 8-aligned) and valid for `len` bytes, thus for the
        // whole words below `len`, while the mapping lives, which the view's owner (this Arc)
        // guarantees; every user of this memory (both processes) accesses it only through
        // RegionMem's 8-byte atomics.
        unsafe { RegionMem::from_raw(self.base, self.len - self.len % 8, self.clone()) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned, and no view is left: each holds the
        // mapping's Arc, so the mapping drops after the last of them.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// A non-blocking eventfd used as a doorbell.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain system call with constant flags.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: eventfd just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Rings a doorbell (adds one to the eventfd counter). A saturated counter (EAGAIN) already
/// means "ring", so that is not an error.
pub fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to a valid descriptor.
    unsafe {
        libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8);
    }
}

/// Clears a doorbell without blocking.
pub fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64; the descriptor is non-blocking.
    unsafe {
        libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8);
    }
}

/// Waits until `fd` is readable or `timeout` passes; true when readable. The timeout is kept
/// to the microsecond (`ppoll` sleeps on a high-resolution timer), unlike a socket's
/// `SO_RCVTIMEO`, which the kernel counts in scheduler ticks (4 ms each at `HZ=250`: a 1 ms
/// receive timeout sleeps up to 8 ms).
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // SAFETY: p is one valid pollfd and ts a valid timespec, both live for the call; a null
    // signal mask leaves the thread's mask as it is.
    let n = unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(n > 0)
}

/// True when the other end of a connected stream socket has closed (or the socket failed),
/// without blocking and without consuming data.
pub fn peer_hung_up(sock: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLRDHUP | libc::POLLIN,
        revents: 0,
    };
    // SAFETY: p is one valid pollfd; zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n <= 0 {
        return false;
    }
    if p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        return true;
    }
    // Readable without hang-up: the peer sent bytes (it never does after setup) or closed; a
    // zero-byte peek tells which.
    let mut b = 0u8;
    // SAFETY: peeks at most one byte into a live u8 without blocking.
    let r = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            (&mut b as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    r == 0
}

/// Whether the process at the other end of a connected Unix socket runs as this process's
/// effective user, or as root (`SO_PEERCRED`, the credentials it had when it connected).
pub fn peer_is_same_user(sock: BorrowedFd<'_>) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes into `cred`, a live ucred of that size,
    // and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 || len as usize != std::mem::size_of::<libc::ucred>() {
        return false;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    cred.uid == me || cred.uid == 0
}

/// Sends `data` with descriptors attached (SCM_RIGHTS).
pub fn send_with_fds(sock: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS || data.is_empty() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value of this plain C struct.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` bytes, enough for one header carrying
        // fd_bytes of payload, so the first header and its data are inside cbuf.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), fd_bytes);
        }
    }
    // SAFETY: msg points at live iov and control buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short sendmsg"));
    }
    Ok(())
}

/// Receives one message into `buf` and the descriptors attached to it.
pub fn recv_with_fds(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let fd_bytes = MAX_FDS * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value of this plain C struct.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR/NXTHDR walk only
    // inside it, and every SCM_RIGHTS payload holds whole descriptors that are now ours.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let payload = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..payload / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors truncated",
        ));
    }
    Ok((n as usize, fds))
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the machine, so
/// heartbeats written by one process can be aged by another.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// This process's id.
pub fn pid() -> u32 {
    std::process::id()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn memfds_are_sealed_against_changes_of_size() {
        let fd = memfd("t", 8192, false).unwrap();
        assert!(cannot_shrink(fd.as_fd()));
        let f = std::fs::File::from(fd);
        assert!(f.set_len(4096).is_err(), "shrinking is refused");
        assert!(f.set_len(16384).is_err(), "growing is refused");
        assert_eq!(f.metadata().unwrap().len(), 8192);
    }

    #[test]
    fn memfd_mapping_is_shared_between_two_maps() {
        let fd = memfd("t", 8192, false).unwrap();
        assert_eq!(file_len(fd.as_fd()).unwrap(), 8192);
        let a = Mapping::map(fd.as_fd(), 8192, false).unwrap();
        let b = Mapping::map(fd.as_fd(), 8192, false).unwrap();
        a.view(4096, 8).unwrap().store_u64(0, 77).unwrap();
        assert_eq!(b.view(4096, 8).unwrap().load_u64(0), Some(77));
        assert!(a.view(8190, 8).is_none(), "past the end");
        assert!(a.view(4, 8).is_none(), "misaligned");
    }

    #[test]
    fn descriptors_cross_a_socket() {
        let (s, r) = UnixStream::pair().unwrap();
        let ev = eventfd().unwrap();
        send_with_fds(&s, b"hi", &[ev.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 8];
        let (n, fds) = recv_with_fds(&r, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(fds.len(), 1);
        eventfd_signal(ev.as_fd());
        assert!(
            wait_readable(fds[0].as_fd(), Duration::ZERO).unwrap(),
            "same eventfd on both ends"
        );
        eventfd_drain(fds[0].as_fd());
        assert!(!wait_readable(ev.as_fd(), Duration::ZERO).unwrap());
        assert!(!peer_hung_up(r.as_fd()));
        drop(s);
        assert!(peer_hung_up(r.as_fd()));
    }
}

/// The verbs calls that hand raw buffer addresses to the RDMA device.
#[cfg(feature = "verbs")]
pub mod verbs {
    use naam_core::memory::{OwnedRegion, RegionMem};
    use sideway::ibverbs::memory_region::MemoryRegion;
    use sideway::ibverbs::protection_domain::ProtectionDomain;
    use sideway::ibverbs::queue_pair::{
        ExtendedQueuePair, PostRecvError, PostSendError, PostSendGuard, QueuePair,
        SetScatterGatherEntry, WorkRequestFlags,
    };
    use sideway::ibverbs::AccessFlags;
    use std::sync::Arc;

    /// Heap memory registered with the device. The registration is dropped before the memory,
    /// which the view holds (field order), and the memory never moves (a boxed slice).
    pub struct RegisteredBuf {
        mr: Arc<MemoryRegion>,
        view: RegionMem,
    }

    impl RegisteredBuf {
        pub fn new(
            pd: &Arc<ProtectionDomain>,
            len: usize,
            access: AccessFlags,
        ) -> Result<Self, String> {
            let view = OwnedRegion::zeroed(len.max(8)).mem();
            // SAFETY: the pointer is valid for `view.len()` bytes as long as `view` (which owns
            // the memory) lives, and `view` is dropped after `mr` (declared first), so the
            // device never holds a registration of freed memory.
            let mr = unsafe { pd.reg_mr(view.base().as_ptr() as usize, view.len(), access) }
                .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
            Ok(RegisteredBuf { mr, view })
        }

        pub fn mem(&self) -> &RegionMem {
            &self.view
        }

        pub fn addr(&self) -> u64 {
            self.view.base().as_ptr() as u64
        }

        pub fn lkey(&self) -> u32 {
            self.mr.lkey()
        }

        pub fn rkey(&self) -> u32 {
            self.mr.rkey()
        }

        /// The absolute address of `off..off+len`, if inside the buffer.
        fn range(&self, off: u64, len: u32) -> Option<u64> {
            let end = off.checked_add(len as u64)?;
            (end <= self.view.len() as u64).then(|| self.addr() + off)
        }
    }

    /// What a send-queue work request does.
    #[derive(Debug, Clone, Copy)]
    pub enum SendOp {
        Send,
        Write {
            rkey: u32,
            addr: u64,
        },
        WriteImm {
            rkey: u32,
            addr: u64,
            imm: u32,
        },
        Read {
            rkey: u32,
            addr: u64,
        },
        Cas {
            rkey: u32,
            addr: u64,
            expected: u64,
            desired: u64,
        },
        Faa {
            rkey: u32,
            addr: u64,
            add: u64,
        },
    }

    /// Why a post failed.
    #[derive(Debug)]
    pub enum PostError {
        OutOfBuffer,
        Send(PostSendError),
        Recv(PostRecvError),
    }

    impl std::fmt::Display for PostError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                PostError::OutOfBuffer => write!(f, "local range outside the registered buffer"),
                PostError::Send(e) => write!(f, "post send: {e}"),
                PostError::Recv(e) => write!(f, "post receive: {e}"),
            }
        }
    }

    /// Posts one signaled send-queue work request whose local bytes are `buf[off..off+len]`.
    ///
    /// The owner of `qp` must keep `buf` alive until the queue pair is destroyed (the verbs
    /// link declares its queue pair before its buffers, so it is dropped first).
    pub fn post_send(
        qp: &mut ExtendedQueuePair,
        wr_id: u64,
        op: SendOp,
        buf: &RegisteredBuf,
        off: u64,
        len: u32,
    ) -> Result<(), PostError> {
        let addr = buf.range(off, len).ok_or(PostError::OutOfBuffer)?;
        let mut guard = qp.start_post_send();
        let wr = guard.construct_wr(wr_id, WorkRequestFlags::Signaled);
        let local = match op {
            SendOp::Send => wr.setup_send(),
            SendOp::Write { rkey, addr } => wr.setup_write(rkey, addr),
            SendOp::WriteImm { rkey, addr, imm } => wr.setup_write_imm(rkey, addr, imm),
            SendOp::Read { rkey, addr } => wr.setup_read(rkey, addr),
            SendOp::Cas {
                rkey,
                addr,
                expected,
                desired,
            } => wr.setup_atomic_compare_swap(rkey, addr, expected, desired),
            SendOp::Faa { rkey, addr, add } => wr.setup_atomic_fetch_add(rkey, addr, add),
        };
        // SAFETY: addr..addr+len is inside `buf`, registered under `buf.lkey()`, and `buf`
        // outlives the queue pair (see above), so the device only touches live memory.
        unsafe { local.setup_sge(buf.lkey(), addr, len) };
        guard.post().map_err(PostError::Send)
    }

    /// Posts one receive into `buf[off..off+len]` (same lifetime rule as [`post_send`]).
    pub fn post_recv(
        qp: &mut ExtendedQueuePair,
        wr_id: u64,
        buf: &RegisteredBuf,
        off: u64,
        len: u32,
    ) -> Result<(), PostError> {
        let addr = buf.range(off, len).ok_or(PostError::OutOfBuffer)?;
        let mut guard = qp.start_post_recv();
        let wr = guard.construct_wr(wr_id);
        // SAFETY: as for post_send: the range is inside a registered buffer that outlives the
        // queue pair.
        unsafe { wr.setup_sge(buf.lkey(), addr, len) };
        guard.post().map_err(PostError::Recv)
    }
}
