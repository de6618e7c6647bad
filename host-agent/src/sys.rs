//! The host agent's one raw system call: poll(2) over the doorbells a host worker collects at
//! start. (rustix's `poll` borrows each fd for the call, which the worker cannot do while it
//! arms the rings it holds mutably; building that array per sleep would allocate.) Every other
//! OS call goes through std, `socket2` or `rustix`.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// A fixed set of fds to sleep on, allocated once.
pub struct PollSet {
    fds: Vec<libc::pollfd>,
}

impl PollSet {
    /// The set of `fds`, waited on for readability. Their owners keep them open for as long
    /// as the set is used (a closed fd only makes `wait` return at once: POLLNVAL).
    pub fn new<'a>(fds: impl IntoIterator<Item = BorrowedFd<'a>>) -> PollSet {
        PollSet {
            fds: fds
                .into_iter()
                .map(|f| libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect(),
        }
    }

    /// Sleeps until one of the first `n` fds is readable or `max` passes (at least 1 ms, at
    /// most `i32::MAX` ms); an interrupted wait just returns.
    pub fn wait(&mut self, n: usize, max: Duration) {
        let n = n.min(self.fds.len());
        let ms = max.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: the pointer and length describe the first `n` elements of `self.fds`, a live,
        // exclusively borrowed array of pollfd structs, for the whole call; poll(2) writes only
        // their `revents`. The fds are plain integers to the kernel: a stale one is reported
        // (POLLNVAL), never memory-unsafe.
        let _ = unsafe { libc::poll(self.fds.as_mut_ptr(), n as libc::nfds_t, ms) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    #[test]
    fn wakes_on_data_and_times_out_without() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut set = PollSet::new([a.as_fd()]);
        let t = Instant::now();
        set.wait(1, Duration::from_millis(30));
        assert!(
            t.elapsed() >= Duration::from_millis(25),
            "nothing to read: timed out"
        );
        b.write_all(b"x").unwrap();
        let t = Instant::now();
        set.wait(1, Duration::from_secs(10));
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "readable: woke at once"
        );
    }
}
