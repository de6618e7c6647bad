//! Unix `SOCK_SEQPACKET` sockets (std has none): a listener, and a connection that sends and
//! receives whole datagrams. The control socket speaks NAAM datagrams over them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long", path.display()),
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn socket(nonblocking: bool) -> io::Result<OwnedFd> {
    let mut ty = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: plain system call with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, ty, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A listening `SOCK_SEQPACKET` socket (non-blocking accept).
pub struct SeqListener {
    fd: OwnedFd,
}

impl SeqListener {
    /// Binds `path` (replacing a stale socket file) and listens.
    pub fn bind(path: &Path) -> io::Result<SeqListener> {
        let _ = std::fs::remove_file(path);
        let fd = socket(true)?;
        let (addr, len) = sockaddr(path)?;
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes that outlives the call.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        })?;
        // SAFETY: plain system call on a socket we own.
        check(unsafe { libc::listen(fd.as_raw_fd(), 16) })?;
        Ok(SeqListener { fd })
    }

    /// A pending connection, if any (the connection is non-blocking).
    pub fn accept(&self) -> io::Result<Option<SeqConn>> {
        // SAFETY: null address pointers are allowed (we do not want the peer address).
        let fd = unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: `fd` was just returned by accept4(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Some(SeqConn { fd }))
    }
}

impl AsFd for SeqListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One connection: each `send` is one datagram, each `recv` returns one.
pub struct SeqConn {
    fd: OwnedFd,
}

impl SeqConn {
    /// Connects (blocking) to the socket at `path`.
    pub fn connect(path: &Path) -> io::Result<SeqConn> {
        let fd = socket(false)?;
        let (addr, len) = sockaddr(path)?;
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes that outlives the call.
        check(unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        })?;
        Ok(SeqConn { fd })
    }

    /// Bounds blocking receives (`None`: wait forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        let t = t.unwrap_or(Duration::ZERO);
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: `tv` is a valid timeval that outlives the call, with its exact size.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })
    }

    /// Sends one datagram.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: `msg` is a valid readable buffer of `msg.len()` bytes.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one datagram. `Ok(None)`: the peer closed the connection (or, non-blocking,
    /// nothing is waiting: check `WouldBlock` in the error instead). A datagram larger than
    /// `buf` is cut to `buf.len()` bytes (it will then fail to parse).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            0 => Ok(None),
            n => Ok(Some(n as usize)),
        }
    }
}

impl AsFd for SeqConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout` passes; returns the readable ones'
/// indexes in `ready` (cleared first).
pub fn poll_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Duration,
    ready: &mut Vec<usize>,
) -> io::Result<()> {
    ready.clear();
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `p` is a valid array of `p.len()` pollfd structs that outlives the call, and its
    // fds are borrowed for the call.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(())
        } else {
            Err(e)
        };
    }
    for (i, q) in p.iter().enumerate() {
        if q.revents != 0 {
            ready.push(i);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_keep_their_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = SeqListener::bind(&path).unwrap();
        assert!(l.accept().unwrap().is_none());
        let c = SeqConn::connect(&path).unwrap();
        let s = l.accept().unwrap().expect("pending connection");
        c.send(b"one").unwrap();
        c.send(b"two!").unwrap();
        let mut buf = [0u8; 16];
        let mut ready = Vec::new();
        poll_readable(&[s.as_fd()], Duration::from_secs(1), &mut ready).unwrap();
        assert_eq!(ready, vec![0]);
        assert_eq!(s.recv(&mut buf).unwrap(), Some(3));
        assert_eq!(s.recv(&mut buf).unwrap(), Some(4));
        assert_eq!(&buf[..4], b"two!");
        drop(c);
        assert_eq!(s.recv(&mut buf).unwrap(), None, "closed peer reads as None");
    }
}
