//! The dataplane's client of the host agent's control socket (`control.sock`, Unix
//! `SOCK_SEQPACKET`, one protocol datagram per request and per reply; docs/runtime.md). Kept in
//! one small module so the forwarding rules live in one place: the dataplane forwards
//! REGISTER (the host agent picks the id, the dataplane adopts it), UNREGISTER and DESCRIBE.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use naam_core::wire::MAX_DATAGRAM;

/// Why a forwarded request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum HostCtlError {
    #[error("host agent control socket {path}: {what}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("host agent control socket {path} closed the connection")]
    Closed { path: PathBuf },
    #[error("host agent not responding (its heartbeat is late); try again")]
    Unresponsive,
}

/// A connection to `control.sock`, made on first use and remade after a failure.
pub struct HostControl {
    path: PathBuf,
    timeout: Duration,
    sock: Option<Socket>,
    buf: Vec<u8>,
}

impl HostControl {
    pub fn new(path: &Path, timeout: Duration) -> HostControl {
        HostControl {
            path: path.to_owned(),
            timeout,
            sock: None,
            buf: vec![0; MAX_DATAGRAM + 1],
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, what: &'static str) -> impl FnOnce(std::io::Error) -> HostCtlError + '_ {
        move |source| HostCtlError::Io {
            path: self.path.clone(),
            what,
            source,
        }
    }

    fn connect(&self) -> Result<Socket, HostCtlError> {
        let s = Socket::new(Domain::UNIX, Type::SEQPACKET, None).map_err(self.io("socket"))?;
        let addr = SockAddr::unix(&self.path).map_err(self.io("address"))?;
        s.connect(&addr).map_err(self.io("connect"))?;
        s.set_read_timeout(Some(self.timeout))
            .map_err(self.io("set timeout"))?;
        s.set_write_timeout(Some(self.timeout))
            .map_err(self.io("set timeout"))?;
        Ok(s)
    }

    /// Sends one request datagram and returns the reply datagram. One retry on a fresh
    /// connection (the host agent may have restarted since the last request), but only when
    /// the request was not delivered: a delivered one may be executing, and sending it again
    /// would be refused as a replay (it is sealed) or run it twice.
    pub fn request(&mut self, req: &[u8]) -> Result<&[u8], HostCtlError> {
        let mut last = None;
        for _ in 0..2 {
            match self.try_request(req) {
                Ok(n) => return Ok(&self.buf[..n]),
                Err((e, delivered)) => {
                    self.sock = None;
                    if delivered {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(HostCtlError::Closed {
            path: self.path.clone(),
        }))
    }

    /// One attempt; on failure, whether the request had been delivered.
    fn try_request(&mut self, req: &[u8]) -> Result<usize, (HostCtlError, bool)> {
        if self.sock.is_none() {
            self.sock = Some(self.connect().map_err(|e| (e, false))?);
        }
        let Some(s) = self.sock.as_ref() else {
            let path = self.path.clone();
            return Err((HostCtlError::Closed { path }, false));
        };
        s.send(req).map_err(|source| {
            let path = self.path.clone();
            (
                HostCtlError::Io {
                    path,
                    what: "send",
                    source,
                },
                false,
            )
        })?;
        let mut r: &Socket = s;
        let n = r.read(&mut self.buf).map_err(|source| {
            let path = self.path.clone();
            (
                HostCtlError::Io {
                    path,
                    what: "receive",
                    source,
                },
                true,
            )
        })?;
        if n == 0 {
            let path = self.path.clone();
            return Err((HostCtlError::Closed { path }, true));
        }
        Ok(n)
    }
}
