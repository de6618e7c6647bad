//! The congestion window of one server: how many of a client's requests may be on the wire
//! to it at once (AIMD with slow start, as transports do). Protocol logic only: no socket,
//! and the time is passed in.
//!
//! A request waits in the client (held, in order) while the window is full. Every reply
//! (whatever it says) takes one request off the wire; a reply that is not a refusal grows the
//! window (by one per reply below the slow-start threshold, doubling it each round trip, then
//! by one per round trip); a `busy` or `host_unavailable` refusal, or a retransmission timeout,
//! halves it, at most once per `min_gap` so that one burst of refusals is one signal. So an
//! overloaded server sees the offered load shrink to what it serves instead of queues growing
//! in the kernel until they overflow.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window of a new client, in requests.
pub const INITIAL: f64 = 16.0;

#[derive(Debug, Clone)]
pub struct Window {
    cwnd: f64,
    ssthresh: f64,
    max: f64,
    on_wire: usize,
    held: VecDeque<u64>,
    last_cut: Option<Instant>,
    /// Times the window was halved.
    pub cuts: u64,
}

impl Window {
    /// A window that never exceeds `max` requests (at least 1); `usize::MAX`: no window at
    /// all (every request goes on the wire at once, as before congestion control).
    pub fn new(max: usize) -> Window {
        let unbounded = max == usize::MAX;
        let max = max.max(1) as f64;
        Window {
            cwnd: if unbounded {
                f64::INFINITY
            } else {
                INITIAL.min(max)
            },
            ssthresh: max,
            max,
            on_wire: 0,
            held: VecDeque::new(),
            last_cut: None,
            cuts: 0,
        }
    }

    fn room(&self) -> bool {
        (self.on_wire as f64) < self.cwnd.floor().max(1.0)
    }

    /// Whether one more request may go on the wire now; if so it is counted there.
    pub fn admit(&mut self) -> bool {
        let ok = self.room();
        if ok {
            self.on_wire += 1;
        }
        ok
    }

    /// Request `id` waits for room (after the ones already waiting).
    pub fn hold(&mut self, id: u64) {
        self.held.push_back(id);
    }

    /// The next waiting request that may go on the wire now (counted there), if any.
    pub fn release(&mut self) -> Option<u64> {
        if !self.room() {
            return None;
        }
        let id = self.held.pop_front()?;
        self.on_wire += 1;
        Some(id)
    }

    /// A request left the wire (its reply came, or it was given up).
    pub fn left(&mut self) {
        self.on_wire = self.on_wire.saturating_sub(1);
    }

    /// A reply that is not a refusal.
    pub fn acked(&mut self) {
        self.cwnd += if self.cwnd < self.ssthresh {
            1.0
        } else {
            1.0 / self.cwnd
        };
        self.cwnd = self.cwnd.min(self.max);
    }

    /// A refusal or a loss at `now`: halve the window, unless it was halved less than
    /// `min_gap` ago.
    pub fn congested(&mut self, now: Instant, min_gap: Duration) {
        if self.cwnd.is_infinite() {
            return;
        }
        if self
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < min_gap)
        {
            return;
        }
        self.ssthresh = (self.cwnd / 2.0).max(1.0);
        self.cwnd = self.ssthresh;
        self.last_cut = Some(now);
        self.cuts += 1;
    }

    /// The window now, in requests.
    pub fn size(&self) -> usize {
        self.cwnd.floor().max(1.0) as usize
    }

    /// Requests on the wire, and waiting.
    pub fn load(&self) -> (usize, usize) {
        (self.on_wire, self.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_then_halving_then_additive_growth() {
        let t0 = Instant::now();
        let gap = Duration::from_millis(10);
        let mut w = Window::new(1024);
        // 16 go out, the 17th waits.
        for _ in 0..16 {
            assert!(w.admit());
        }
        assert!(!w.admit());
        w.hold(7);
        assert_eq!(w.release(), None);
        // A reply frees one place and grows the window by one (slow start): two go.
        w.left();
        w.acked();
        assert_eq!(w.size(), 17);
        assert_eq!(w.release(), Some(7));
        assert!(w.admit());
        assert_eq!(w.load(), (17, 0));
        // A burst of refusals halves once.
        w.congested(t0, gap);
        w.congested(t0 + Duration::from_millis(1), gap);
        assert_eq!((w.size(), w.cuts), (8, 1));
        w.congested(t0 + Duration::from_millis(11), gap);
        assert_eq!((w.size(), w.cuts), (4, 2));
        // Above the threshold, one request more per window's worth of replies.
        for _ in 0..4 {
            w.acked();
        }
        assert_eq!(w.size(), 5);
        // Never below one, never above the maximum.
        for k in 0..20 {
            w.congested(t0 + gap * (3 + k), gap);
        }
        assert_eq!(w.size(), 1);
        let mut off = Window::new(usize::MAX);
        for _ in 0..10_000 {
            assert!(off.admit());
        }
        off.congested(t0, gap);
        assert_eq!(off.cuts, 0);
        let mut small = Window::new(3);
        for _ in 0..100 {
            small.acked();
        }
        assert_eq!(small.size(), 3);
    }
}
