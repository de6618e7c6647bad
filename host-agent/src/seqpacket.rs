//! Unix `SOCK_SEQPACKET` sockets (std has none): a listener, and a connection that sends and
//! receives whole datagrams. The control socket speaks NAAM datagrams over them. The system
//! calls go through `socket2` (as the dataplane's `hostctl.rs` does for the same socket type)
//! and `rustix`, so this file needs no `unsafe`.

use std::io::{self, Read as _};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use socket2::{Domain, SockAddr, Socket, Type};

fn socket() -> io::Result<Socket> {
    // socket2 opens it close-on-exec.
    Socket::new(Domain::UNIX, Type::SEQPACKET, None)
}

/// A listening `SOCK_SEQPACKET` socket (non-blocking accept).
pub struct SeqListener {
    sock: Socket,
}

impl SeqListener {
    /// Binds `path` (replacing a stale socket file) and listens.
    pub fn bind(path: &Path) -> io::Result<SeqListener> {
        let _ = std::fs::remove_file(path);
        let sock = socket()?;
        sock.set_nonblocking(true)?;
        sock.bind(&SockAddr::unix(path)?)?;
        sock.listen(16)?;
        Ok(SeqListener { sock })
    }

    /// A pending connection, if any (the connection is non-blocking).
    pub fn accept(&self) -> io::Result<Option<SeqConn>> {
        match self.sock.accept() {
            Ok((sock, _)) => {
                sock.set_nonblocking(true)?;
                Ok(Some(SeqConn { sock }))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl AsFd for SeqListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// One connection: each `send` is one datagram, each `recv` returns one.
pub struct SeqConn {
    sock: Socket,
}

impl SeqConn {
    /// Connects (blocking) to the socket at `path`.
    pub fn connect(path: &Path) -> io::Result<SeqConn> {
        let sock = socket()?;
        sock.connect(&SockAddr::unix(path)?)?;
        Ok(SeqConn { sock })
    }

    /// Bounds blocking receives (`None`: wait forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t.filter(|t| !t.is_zero()))
    }

    /// Sends one datagram (a closed peer is an error, never SIGPIPE).
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        self.sock
            .send_with_flags(msg, libc::MSG_NOSIGNAL)
            .map(|_| ())
    }

    /// Receives one datagram. `Ok(None)`: the peer closed the connection (or, non-blocking,
    /// nothing is waiting: check `WouldBlock` in the error instead). A datagram larger than
    /// `buf` is cut to `buf.len()` bytes (it will then fail to parse).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match (&self.sock).read(buf)? {
            0 => Ok(None),
            n => Ok(Some(n)),
        }
    }
}

impl AsFd for SeqConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
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
    let mut p: Vec<PollFd<'_>> = fds
        .iter()
        .map(|&f| PollFd::from_borrowed_fd(f, PollFlags::IN))
        .collect();
    let t = Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: timeout.subsec_nanos().into(),
    };
    match rustix::event::poll(&mut p, Some(&t)) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    for (i, q) in p.iter().enumerate() {
        if !q.revents().is_empty() {
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

    #[test]
    fn a_socket_path_too_long_is_an_error() {
        let long = std::path::PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
        assert!(SeqListener::bind(&long).is_err());
        assert!(SeqConn::connect(&long).is_err());
    }
}
