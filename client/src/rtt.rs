//! The round-trip time to a server and the retransmission timeout it gives (RFC 6298, as
//! TCP does): a smoothed RTT and its variation, from replies to requests sent once (Karn: a
//! retransmitted request's reply could answer either send). The configured timeout is the
//! floor: on a quick server nothing changes; when replies queue behind thousands of
//! outstanding requests (tens of ms) requests are no longer retransmitted while their first
//! copy waits, which held the server's de-duplication window open and refilled its queues.

use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub struct Rtt {
    /// Smoothed round-trip time and its mean deviation, ns; `None` before the first sample.
    srtt_ns: Option<f64>,
    rttvar_ns: f64,
}

impl Rtt {
    /// A reply came `rtt` after the request's only send.
    pub fn sample(&mut self, rtt: Duration) {
        let r = rtt.as_nanos() as f64;
        match self.srtt_ns {
            None => {
                self.srtt_ns = Some(r);
                self.rttvar_ns = r / 2.0;
            }
            Some(s) => {
                self.rttvar_ns = 0.75 * self.rttvar_ns + 0.25 * (s - r).abs();
                self.srtt_ns = Some(0.875 * s + 0.125 * r);
            }
        }
    }

    /// The retransmission timeout: SRTT + 4 RTTVAR, within `floor ..= ceiling` (`floor`
    /// before any sample).
    pub fn rto(&self, floor: Duration, ceiling: Duration) -> Duration {
        let Some(s) = self.srtt_ns else {
            return floor;
        };
        let rto = Duration::from_nanos((s + 4.0 * self.rttvar_ns) as u64);
        rto.clamp(floor, ceiling.max(floor))
    }

    /// The smoothed round-trip time, once measured.
    pub fn smoothed(&self) -> Option<Duration> {
        self.srtt_ns.map(|s| Duration::from_nanos(s as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_timeout_follows_the_round_trip_above_the_configured_floor() {
        let mut r = Rtt::default();
        assert_eq!(
            r.rto(50 * MS, 1000 * MS),
            50 * MS,
            "no sample: the configured timeout"
        );
        for _ in 0..50 {
            r.sample(MS / 10);
        }
        assert_eq!(
            r.rto(50 * MS, 1000 * MS),
            50 * MS,
            "a quick server changes nothing"
        );
        // Replies start queueing: 80 ms round trips, then steady.
        for _ in 0..50 {
            r.sample(80 * MS);
        }
        let rto = r.rto(50 * MS, 1000 * MS);
        assert!(rto > 80 * MS && rto < 200 * MS, "{rto:?}");
        assert!(r.smoothed().unwrap() > 75 * MS);
        r.sample(10_000 * MS);
        assert_eq!(r.rto(50 * MS, 1000 * MS), 1000 * MS, "at most the ceiling");
    }
}
