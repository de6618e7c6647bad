//! Which connection to the link socket becomes the dataplane: the host agent's side of the
//! handshake. Accepted connections wait here, non-blocking, until they have said the
//! dataplane's ask ([`super::ASK_MAGIC`] and a pid); then the first one is handed the area,
//! and one that comes while a dataplane is connected is answered busy. A connection that says
//! something else, closes, or stays silent past [`ASK_WITHIN`] is closed and counted: a stray
//! client of the socket (a probe, `nc -U`, a hung process) never holds the dataplane's place.

use super::{ASK_LEN, ASK_MAGIC, BUSY_MAGIC, HELLO_LEN};
use crate::sys;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// How long a new connection has to send its ask.
pub const ASK_WITHIN: Duration = Duration::from_secs(1);
/// Connections waiting to ask at once; the oldest is closed to make room (kept in order of
/// arrival).
const WAITING: usize = 8;

/// Why connections to the link socket were closed without becoming the dataplane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerRefusals {
    /// Said something that is not the ask, or closed before finishing it.
    pub malformed: u64,
    /// Did not ask within [`ASK_WITHIN`] (or were pushed out by newer connections).
    pub silent: u64,
    /// Of another user (only the host agent's user, or root, may be its dataplane).
    pub foreign: u64,
    /// Asked while a dataplane was connected, and were told so.
    pub busy: u64,
}

struct Waiting {
    sock: UnixStream,
    since: Instant,
    ask: [u8; ASK_LEN],
    got: usize,
}

/// The connections that have not asked yet.
#[derive(Default)]
pub struct Admission {
    waiting: Vec<Waiting>,
    pub refused: PeerRefusals,
    /// The (asking, connected) pids last turned away: a dataplane that keeps asking is
    /// logged once, not at every attempt (the counter has them all).
    turned_away: Option<(u64, u64)>,
}

/// A connection that asked to be the dataplane.
pub struct Asked {
    pub sock: UnixStream,
    pub pid: u64,
}

impl Admission {
    /// Takes every connection `listener` has ready, then returns the first waiting one that
    /// has asked (blocking again, for the hand-over), closing the ones that failed on the
    /// way; `None` when none has asked yet. At `now`.
    pub fn poll(
        &mut self,
        listener: &UnixListener,
        now: Instant,
    ) -> std::io::Result<Option<Asked>> {
        loop {
            match listener.accept() {
                Ok((sock, _)) => self.admit(sock, now)?,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let mut i = 0;
        while i < self.waiting.len() {
            match self.read_ask(i, now) {
                Progress::Waiting => i += 1,
                Progress::Refused => {
                    self.waiting.remove(i);
                }
                Progress::Asked(pid) => {
                    let w = self.waiting.remove(i);
                    w.sock.set_nonblocking(false)?;
                    return Ok(Some(Asked { sock: w.sock, pid }));
                }
            }
        }
        Ok(None)
    }

    /// Tells `asked` that a dataplane (pid `peer_pid`) is connected, and closes it.
    pub fn turn_away(&mut self, mut asked: Asked, peer_pid: u64) {
        let mut busy = [0u8; HELLO_LEN];
        busy[..8].copy_from_slice(&BUSY_MAGIC.to_le_bytes());
        busy[8..16].copy_from_slice(&peer_pid.to_le_bytes());
        // Best effort: it may already be gone.
        let _ = asked.sock.write_all(&busy);
        self.refused.busy += 1;
        if self.turned_away.replace((asked.pid, peer_pid)) != Some((asked.pid, peer_pid)) {
            tracing::warn!(
                pid = asked.pid,
                peer_pid,
                "a dataplane asked to connect while another is connected; turned away (its \
                 further attempts are counted in link.refused.busy, not logged)"
            );
        }
    }

    fn admit(&mut self, sock: UnixStream, now: Instant) -> std::io::Result<()> {
        if !sys::peer_is_same_user(sock.as_fd()) {
            self.refused.foreign += 1;
            tracing::warn!("link socket connection of another user closed");
            return Ok(());
        }
        sock.set_nonblocking(true)?;
        if self.waiting.len() == WAITING {
            self.waiting.remove(0);
            self.refused.silent += 1;
        }
        self.waiting.push(Waiting {
            sock,
            since: now,
            ask: [0; ASK_LEN],
            got: 0,
        });
        Ok(())
    }

    fn read_ask(&mut self, i: usize, now: Instant) -> Progress {
        let w = &mut self.waiting[i];
        while w.got < ASK_LEN {
            match w.sock.read(&mut w.ask[w.got..]) {
                Ok(0) => {
                    self.refused.malformed += 1;
                    return Progress::Refused;
                }
                Ok(n) => w.got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if now.saturating_duration_since(w.since) > ASK_WITHIN {
                        self.refused.silent += 1;
                        tracing::warn!("link socket connection closed: it did not ask in time");
                        return Progress::Refused;
                    }
                    return Progress::Waiting;
                }
                Err(_) => {
                    self.refused.malformed += 1;
                    return Progress::Refused;
                }
            }
        }
        let word =
            |k: usize| u64::from_le_bytes(w.ask[k * 8..k * 8 + 8].try_into().unwrap_or([0; 8]));
        if word(0) != ASK_MAGIC {
            self.refused.malformed += 1;
            tracing::warn!("link socket connection closed: not a dataplane's ask");
            return Progress::Refused;
        }
        Progress::Asked(word(1))
    }
}

enum Progress {
    Waiting,
    Refused,
    Asked(u64),
}

/// The dataplane's ask, sent first on a new connection.
pub fn ask(sock: &mut UnixStream) -> std::io::Result<()> {
    let mut a = [0u8; ASK_LEN];
    a[..8].copy_from_slice(&ASK_MAGIC.to_le_bytes());
    a[8..].copy_from_slice(&u64::from(sys::pid()).to_le_bytes());
    sock.write_all(&a)
}
