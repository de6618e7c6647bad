//! Open-loop load generation and latency recording shared by the experiments.
//!
//! Latency is measured from each message's *intended* send time (open loop: a slow system
//! cannot slow the generator down and hide its queueing), recorded per message id into a
//! preallocated log, and summarised with HdrHistogram after the run.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Completion latencies by message id (ns + 1; 0 = never completed).
pub struct LatencyLog {
    slots: Box<[AtomicU64]>,
}

impl LatencyLog {
    /// A log for `messages` ids; its memory is written (not just reserved) here, so it does
    /// not count against what is measured afterwards.
    pub fn new(messages: usize) -> Self {
        Self {
            slots: (0..messages).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    pub fn record(&self, id: u64, latency: Duration) {
        if let Some(s) = self.slots.get(id as usize) {
            s.store(latency.as_nanos() as u64 + 1, Ordering::Relaxed);
        }
    }

    /// Completed messages and their latency histogram (µs resolution to 10 s).
    pub fn summary(&self) -> (u64, Histogram<u64>) {
        let mut h =
            Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds");
        let mut done = 0;
        for s in self.slots.iter() {
            let v = s.load(Ordering::Relaxed);
            if v != 0 {
                done += 1;
                h.saturating_record(v);
            }
        }
        (done, h)
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
        }
    }
}

/// Sends `total` messages at `rate` per second (`None`: as fast as the sink takes them),
/// calling `send(id, intended_time)`; `send` returns false when the message was dropped.
/// Returns (dropped, elapsed).
pub fn open_loop(
    total: u64,
    rate: Option<f64>,
    mut send: impl FnMut(u64, Instant) -> bool,
) -> (u64, Duration) {
    let start = Instant::now();
    let mut dropped = 0;
    for id in 0..total {
        let intended = match rate {
            Some(r) => {
                let t = start + Duration::from_secs_f64(id as f64 / r);
                loop {
                    let now = Instant::now();
                    if now >= t {
                        break;
                    }
                    if t - now > Duration::from_micros(200) {
                        std::thread::sleep(Duration::from_micros(100));
                    } else {
                        std::hint::spin_loop();
                    }
                }
                t
            }
            None => Instant::now(),
        };
        if !send(id, intended) {
            dropped += 1;
        }
    }
    (dropped, start.elapsed())
}

/// Resident memory of this process in bytes (Linux), for memory-per-offload figures.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Waits for replies until `next` (at most `max_wait`) and hands each request of `inflight`
/// that finished to `on_reply(due, arrived, result)`, `due` being when the load meant to send
/// it; other completions are dropped. The reply loop of the open-loop drivers (the shift
/// experiment, the demo).
pub fn collect_replies(
    client: &mut naam_client::Client,
    inflight: &mut std::collections::HashMap<naam_client::Ticket, Instant>,
    next: Instant,
    max_wait: Duration,
    mut on_reply: impl FnMut(Instant, Instant, naam_client::Result<naam_client::Response>),
) -> naam_client::Result<()> {
    let wait = next.saturating_duration_since(Instant::now()).min(max_wait);
    let mut polled = client.poll(Some(wait))?;
    while let Some(c) = polled {
        let arrived = Instant::now();
        if let Some(due) = inflight.remove(&c.ticket) {
            on_reply(due, arrived, c.result);
        }
        polled = client.poll(Some(Duration::ZERO))?;
    }
    Ok(())
}
