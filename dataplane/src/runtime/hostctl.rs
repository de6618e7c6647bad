//! The dataplane's client of the host agent's control socket (`control.sock`, Unix
//! `SOCK_SEQPACKET`, one protocol datagram per request and per reply; docs/runtime.md). Kept in
//! one small module so the forwarding rules live in one place: the dataplane forwards
//! REGISTER (the host agent picks the id, the dataplane adopts it), UNREGISTER and DESCRIBE.

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use naam_core::wire::MAX_DATAGRAM;

/// How often a wait for a reply checks that the host agent is still answering.
pub const WAIT_SLICE: Duration = Duration::from_millis(10);

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
    #[error("host agent gone (the dataplane reconnects when one serves the run directory again)")]
    Gone,
    #[error("the host agent serving the run directory cannot be used by this dataplane (its log says why; counted in dp.link_refused)")]
    Unusable,
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
        self.request_while(req, &|| true)
    }

    /// [`HostControl::request`], giving up ([`HostCtlError::Unresponsive`]) as soon as `live`
    /// says the host agent stopped answering (its heartbeat is late), checked every
    /// [`WAIT_SLICE`] while the reply is awaited: a host agent stopped just after the request
    /// went out held the caller for the whole timeout (2 s), and the dataplane's control
    /// thread, which also notices the stall, with it.
    pub fn request_while(
        &mut self,
        req: &[u8],
        live: &dyn Fn() -> bool,
    ) -> Result<&[u8], HostCtlError> {
        let mut last = None;
        for _ in 0..2 {
            match self.try_request(req, live) {
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
    fn try_request(
        &mut self,
        req: &[u8],
        live: &dyn Fn() -> bool,
    ) -> Result<usize, (HostCtlError, bool)> {
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
        let started = Instant::now();
        let slice = WAIT_SLICE.min(self.timeout);
        let _ = s.set_read_timeout(Some(slice));
        let mut r: &Socket = s;
        let n = loop {
            match r.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if !live() {
                        return Err((HostCtlError::Unresponsive, true));
                    }
                    if started.elapsed() < self.timeout {
                        continue;
                    }
                    let path = self.path.clone();
                    let what = "receive";
                    return Err((
                        HostCtlError::Io {
                            path,
                            what,
                            source: e,
                        },
                        true,
                    ));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    let path = self.path.clone();
                    let what = "receive";
                    return Err((HostCtlError::Io { path, what, source }, true));
                }
            }
        };
        if n == 0 {
            let path = self.path.clone();
            return Err((HostCtlError::Closed { path }, true));
        }
        Ok(n)
    }
}
