//! The generator loop, the same over every transport: keep up to `window` requests
//! outstanding, send in bursts as fast as the port takes them, receive, count and check.
//!
//! The warm-up starts at the first reply. Every reply gets the cheap test (magic and kind); every `sample`-th the full one (request
//! id, status, where it ran, the value). Only the measurement window after the warm-up is
//! counted. A transport that loses replies (kernel UDP under overload) would leave the window
//! full for ever: after `stall` without a reply the outstanding requests count as lost and
//! the window opens again.

use std::time::{Duration, Instant};

use super::requests::{Expect, RequestSet};

/// A transport the generator drives.
pub trait LoadPort {
    /// Sends requests `next, next + 1, ...` (wrapping over the set), at most `n`; returns how
    /// many the transport took. Never blocks.
    fn send(&mut self, set: &RequestSet, next: usize, n: usize) -> Result<usize, String>;

    /// Receives one burst and hands each reply's UDP payload to `seen` (an empty slice for a
    /// frame that is not Ethernet/IPv4/UDP); returns how many. Never blocks.
    fn recv<F: FnMut(&[u8])>(&mut self, seen: F) -> Result<usize, String>;
}

/// How to drive.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct DriveConfig {
    pub warmup: Duration,
    pub measure: Duration,
    /// Requests per send burst.
    pub burst: usize,
    /// Requests outstanding at most.
    pub window: usize,
    /// Fully check every `sample`-th reply.
    pub sample: u64,
    /// Silence after which outstanding requests count as lost.
    pub stall: Duration,
    pub expect: Expect,
}

/// What one generator measured (counts are of the measurement window only).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenReport {
    pub seconds: f64,
    pub sent: u64,
    pub replies: u64,
    /// Replies that passed the cheap test.
    pub good: u64,
    /// Replies fully checked.
    pub checked: u64,
    /// Replies that failed either test.
    pub bad: u64,
    pub first_bad: Option<String>,
    /// Requests given up after a stall.
    pub lost: u64,
    pub stalls: u64,
    /// `good / seconds`.
    pub replies_per_s: f64,
    /// Share of the measurement the generator thread was on a CPU (`/proc/thread-self/
    /// schedstat`): well below 1, the generator's core was shared with other processes.
    pub cpu_share: Option<f64>,
}

/// Nanoseconds the calling thread has run on a CPU.
fn on_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    sent: u64,
    replies: u64,
    good: u64,
    checked: u64,
    bad: u64,
    lost: u64,
    stalls: u64,
}

impl Counters {
    fn since(&self, before: &Counters) -> Counters {
        Counters {
            sent: self.sent - before.sent,
            replies: self.replies - before.replies,
            good: self.good - before.good,
            checked: self.checked - before.checked,
            bad: self.bad - before.bad,
            lost: self.lost - before.lost,
            stalls: self.stalls - before.stalls,
        }
    }
}

/// How long the first reply may take (servers that are still starting).
pub const FIRST_REPLY_WAIT: Duration = Duration::from_secs(30);

/// Runs the load and reports the measurement window: `cfg.measure` after `cfg.warmup`
/// counted from the first reply (a server may drop what came before it was ready: testpmd
/// flushes its receive queues when it starts forwarding).
pub fn drive<P: LoadPort>(
    port: &mut P,
    set: &RequestSet,
    cfg: &DriveConfig,
) -> Result<GenReport, String> {
    if set.is_empty() {
        return Err("no requests".into());
    }
    let burst = cfg.burst.max(1);
    let window = cfg.window.max(1);
    let sample = cfg.sample.max(1);
    let start = Instant::now();
    let mut c = Counters::default();
    let mut first_bad: Option<String> = None;
    let mut outstanding = 0usize;
    let mut next = 0usize;
    let mut last_reply = start;
    let mut first_reply: Option<Instant> = None;
    let mut measuring: Option<(Instant, Counters)> = None;
    let mut cpu_at_start = None;
    let mut iteration = 0u32;
    loop {
        iteration = iteration.wrapping_add(1);
        // The clock is read once per 16 iterations (and per non-empty receive).
        if iteration % 16 == 0 {
            let now = Instant::now();
            match measuring {
                _ if first_reply.is_none() && now - start >= FIRST_REPLY_WAIT => {
                    return Err(format!("no reply within {FIRST_REPLY_WAIT:?}"));
                }
                None if first_reply.is_some_and(|t| now - t >= cfg.warmup) => {
                    measuring = Some((now, c));
                    cpu_at_start = on_cpu_ns();
                }
                Some((t0, before)) if now - t0 >= cfg.measure => {
                    let d = c.since(&before);
                    let seconds = (now - t0).as_secs_f64();
                    let cpu_share = cpu_at_start
                        .zip(on_cpu_ns())
                        .map(|(a, b)| b.saturating_sub(a) as f64 / 1e9 / seconds);
                    return Ok(GenReport {
                        seconds,
                        sent: d.sent,
                        replies: d.replies,
                        good: d.good,
                        checked: d.checked,
                        bad: d.bad,
                        first_bad,
                        lost: d.lost,
                        stalls: d.stalls,
                        replies_per_s: d.good as f64 / seconds,
                        cpu_share,
                    });
                }
                _ => {}
            }
            if outstanding > 0 && now - last_reply >= cfg.stall {
                c.lost += outstanding as u64;
                c.stalls += 1;
                outstanding = 0;
                last_reply = now;
            }
        }
        let room = window.saturating_sub(outstanding).min(burst);
        if room > 0 {
            let n = port.send(set, next, room)?;
            next = (next + n) % set.len();
            outstanding += n;
            c.sent += n as u64;
        }
        let n = port.recv(|payload| {
            c.replies += 1;
            let mut bad = None;
            if !RequestSet::quick_ok(payload, cfg.expect) {
                bad = Some(format!(
                    "reply of {} bytes is not a NAAM {:?}",
                    payload.len(),
                    cfg.expect
                ));
            } else {
                c.good += 1;
                if c.replies % sample == 0 {
                    c.checked += 1;
                    bad = set.check(payload, cfg.expect).err();
                }
            }
            if let Some(e) = bad {
                c.bad += 1;
                first_bad.get_or_insert(e);
            }
        })?;
        if n > 0 {
            outstanding = outstanding.saturating_sub(n);
            last_reply = Instant::now();
            first_reply.get_or_insert(last_reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memif::requests::TableSpec;
    use std::collections::VecDeque;

    /// An in-memory echo with a delay line: what was sent comes back `lag` receive calls
    /// later, optionally dropping every `drop_every`-th request.
    struct Echo {
        line: VecDeque<Vec<u8>>,
        taken: usize,
        max_take: usize,
        drop_every: usize,
        peak_outstanding: usize,
        /// Requests sent before this are dropped (a server still starting).
        deaf_until: Instant,
    }

    impl LoadPort for Echo {
        fn send(&mut self, set: &RequestSet, next: usize, n: usize) -> Result<usize, String> {
            let n = n.min(self.max_take);
            for k in 0..n {
                self.taken += 1;
                if self.drop_every > 0 && self.taken % self.drop_every == 0 {
                    continue;
                }
                if Instant::now() < self.deaf_until {
                    continue;
                }
                self.line.push_back(set.payload(next + k).to_vec());
            }
            self.peak_outstanding = self.peak_outstanding.max(self.line.len());
            Ok(n)
        }

        fn recv<F: FnMut(&[u8])>(&mut self, mut seen: F) -> Result<usize, String> {
            let n = self.line.len().min(4);
            for _ in 0..n {
                let p = self.line.pop_front().unwrap();
                seen(&p);
            }
            Ok(n)
        }
    }

    fn cfg(window: usize) -> DriveConfig {
        DriveConfig {
            warmup: Duration::from_millis(5),
            measure: Duration::from_millis(30),
            burst: 8,
            window,
            sample: 3,
            stall: Duration::from_millis(2),
            expect: Expect::Echo,
        }
    }

    fn echo(drop_every: usize) -> Echo {
        Echo {
            line: VecDeque::new(),
            taken: 0,
            max_take: 5,
            drop_every,
            peak_outstanding: 0,
            deaf_until: Instant::now(),
        }
    }

    #[test]
    fn an_echo_is_counted_and_checked_within_the_window() {
        let set = RequestSet::mica_get(TableSpec::assumed(100, 8), 7).unwrap();
        let mut port = echo(0);
        let r = drive(&mut port, &set, &cfg(16)).unwrap();
        assert!(r.replies > 0);
        assert_eq!(r.good, r.replies);
        assert_eq!(r.bad, 0, "{:?}", r.first_bad);
        assert!(r.checked >= r.replies / 3 - 1 && r.checked <= r.replies / 3 + 1);
        assert!(r.sent >= r.replies && r.sent <= r.replies + 16);
        assert!(port.peak_outstanding <= 16);
        assert!(r.seconds >= 0.03);
        assert!((r.replies_per_s - r.good as f64 / r.seconds).abs() < 1e-6);
        // A spinning generator is on a CPU most of the time (not all: a shared machine). The
        // thread's CPU clock and the wall clock are read at slightly different instants and
        // tick differently, so a short window can read a little over 1 (1.06 seen here).
        let share = r.cpu_share.unwrap();
        assert!(share > 0.0 && share <= 1.5, "{share}");
    }

    #[test]
    fn the_warm_up_starts_at_the_first_reply() {
        let set = RequestSet::mica_get(TableSpec::assumed(100, 8), 7).unwrap();
        let mut port = echo(0);
        // Deaf for longer than warm-up and measurement together.
        port.deaf_until = Instant::now() + Duration::from_millis(60);
        let r = drive(&mut port, &set, &cfg(16)).unwrap();
        assert!(r.replies > 0, "{r:?}");
        // What the deaf server dropped was given up before the first reply, not measured.
        assert_eq!((r.lost, r.stalls), (0, 0), "{r:?}");
    }

    #[test]
    fn wrong_replies_are_counted_bad() {
        let set = RequestSet::mica_get(TableSpec::assumed(100, 8), 7).unwrap();
        let mut port = echo(0);
        let c = DriveConfig {
            expect: Expect::Value { at: 1 },
            ..cfg(16)
        };
        let r = drive(&mut port, &set, &c).unwrap();
        assert!(r.replies > 0);
        assert_eq!((r.good, r.bad), (0, r.replies));
        assert!(r.first_bad.unwrap().contains("not a NAAM"));
    }

    #[test]
    fn lost_requests_do_not_close_the_window_for_ever() {
        let set = RequestSet::mica_get(TableSpec::assumed(100, 8), 7).unwrap();
        let mut port = echo(2); // every second request vanishes
        let r = drive(&mut port, &set, &cfg(4)).unwrap();
        assert!(r.stalls > 0);
        assert!(r.lost > 0);
        assert!(r.replies > 0);
    }
}
