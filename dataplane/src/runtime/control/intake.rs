//! Fair intake of the control port: requests queued per principal, served in turn.
//!
//! One thread serves the control port, and one request can cost it milliseconds (a STATS
//! page built over thousands of counters, a REGISTER's verifier and JIT). Served in the
//! order they arrived, one tenant's burst held every other principal's requests behind it:
//! with 64 of one tenant's STATS outstanding, 2 of 7 of another tenant's DESCRIBEs timed out
//! (probe 16). So the control thread reads what the socket holds, queues each request that
//! would open (the caller checks it with `Gate::peek`: key, MAC, time, a nonce not seen
//! before) under its principal, and serves the queues one request each, in turn. A sender
//! without a principal's key cannot queue in its name, nor can one replaying its captured
//! requests. A principal with [`QUEUED_MAX`] requests waiting is answered `busy` at once, a
//! transient refusal its client retries: one principal's flood costs each other principal
//! one of its requests' service per turn.

use std::collections::VecDeque;
use std::net::SocketAddr;

use naam_core::auth::Principal;

/// Requests one principal may have waiting; more are answered `busy` as they arrive. It
/// bounds the memory and that principal's own wait, not the others': they wait for one of
/// its requests a turn however many it has queued. Tools and tests make a few at once,
/// benchmarks' clients starting together (one principal) a few dozen.
pub const QUEUED_MAX: usize = 32;

/// How long a request may wait to be served. Its client has given up on it by then (after
/// about 2.6 s at the library's defaults, reporting that a mutation may have run): run
/// later, it would change what the client was told had failed. It is dropped, counted.
pub const WAIT_MAX_NS: u64 = 2_500_000_000;

/// The bounds of the wait a refused principal is told: at least a millisecond (a client
/// that retried at once would be refused again), at most a second.
const RETRY_MIN_US: u64 = 1_000;
const RETRY_MAX_US: u64 = 1_000_000;

/// Buffers kept for reuse, and the largest kept (a REGISTER carries an object of up to
/// 64 KiB; most requests are a few hundred bytes).
const SPARE_MAX: usize = QUEUED_MAX;
const SPARE_BYTES_MAX: usize = 4096;

/// A request waiting to be served.
struct Waiting {
    from: SocketAddr,
    req: Vec<u8>,
    /// Its (key id, nonce): a second copy (a retransmission) is not queued again.
    tag: (u32, u64),
    since_ns: u64,
}

/// One principal's waiting requests, oldest first.
struct Queue {
    who: Principal,
    waiting: VecDeque<Waiting>,
}

/// What [`Intake::admit`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    Queued,
    /// A copy of one already waiting (a retransmission): that one answers it.
    Copy,
}

/// The control port's waiting requests (a key file holds few principals, so one queue each,
/// kept for the process's life).
#[derive(Default)]
pub struct Intake {
    queues: Vec<Queue>,
    /// The queue whose turn comes next.
    turn: usize,
    /// Buffers of served requests, reused for the next ones.
    spare: Vec<Vec<u8>>,
    /// A request's service time, a moving average (ns): what a refused principal is told
    /// to wait.
    service_ns: u64,
    /// Copies not queued ([`Admitted::Copy`]), and requests dropped after waiting longer
    /// than [`WAIT_MAX_NS`].
    pub copies: u64,
    pub stale: u64,
}

impl Intake {
    /// Queues `req` (sealed by `who`, with (key id, nonce) `tag`) from `from` at `now_ns`;
    /// when `who` already has [`QUEUED_MAX`] waiting, queues nothing and returns the time
    /// (µs) until they are likely all served: the requests refused together come back
    /// together, and one freed place would take one of them only.
    pub fn admit(
        &mut self,
        who: Principal,
        tag: (u32, u64),
        from: SocketAddr,
        req: &[u8],
        now_ns: u64,
    ) -> Result<Admitted, u32> {
        let i = match self.queues.iter().position(|q| q.who == who) {
            Some(i) => i,
            None => {
                self.queues.push(Queue {
                    who,
                    waiting: VecDeque::with_capacity(QUEUED_MAX),
                });
                self.queues.len() - 1
            }
        };
        let q = &mut self.queues[i].waiting;
        if q.iter().any(|w| w.tag == tag) {
            self.copies += 1;
            return Ok(Admitted::Copy);
        }
        if q.len() >= QUEUED_MAX {
            // One of its requests is served a turn, and a turn serves one request of each
            // principal with some waiting.
            let turn = self.queues.iter().filter(|q| !q.waiting.is_empty()).count();
            let turns = (QUEUED_MAX * turn) as u64;
            let us = self.service_ns.saturating_mul(turns) / 1000;
            return Err(us.clamp(RETRY_MIN_US, RETRY_MAX_US) as u32);
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(req);
        q.push_back(Waiting {
            from,
            req: buf,
            tag,
            since_ns: now_ns,
        });
        Ok(Admitted::Queued)
    }

    /// Records that serving one request took `ns`.
    pub fn served_in(&mut self, ns: u64) {
        // An average over about the last 8 requests.
        self.service_ns = (self.service_ns * 7 + ns) / 8;
    }

    /// Requests waiting, all principals together.
    pub fn waiting(&self) -> usize {
        self.queues.iter().map(|q| q.waiting.len()).sum()
    }

    /// Takes the next principal's oldest request at `now_ns`: where it came from, and the
    /// request (give the buffer back with [`Intake::recycle`]); `None` when none waits.
    /// Requests that waited longer than [`WAIT_MAX_NS`] are dropped on the way.
    pub fn next(&mut self, now_ns: u64) -> Option<(SocketAddr, Vec<u8>)> {
        let n = self.queues.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            while let Some(w) = self.queues[i].waiting.pop_front() {
                if now_ns.saturating_sub(w.since_ns) > WAIT_MAX_NS {
                    self.stale += 1;
                    self.recycle(w.req);
                    continue;
                }
                self.turn = (i + 1) % n;
                return Some((w.from, w.req));
            }
        }
        None
    }

    /// Takes back the buffer of a request [`Intake::next`] gave, for the next ones.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < SPARE_MAX && buf.capacity() <= SPARE_BYTES_MAX {
            self.spare.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Queues a request of `who` from `port` at time 0 whose first byte is `b` (and whose
    /// nonce is `port`·1000 + `b`).
    fn put(intake: &mut Intake, who: Principal, port: u16, b: u8) -> Result<Admitted, u32> {
        let tag = (u32::from(port), u64::from(port) * 1000 + u64::from(b));
        intake.admit(who, tag, addr(port), &[b], 0)
    }

    /// The order in which `intake` serves what it holds, as (principal's port, first byte).
    fn drain(intake: &mut Intake) -> Vec<(u16, u8)> {
        drain_at(intake, 0)
            .into_iter()
            .map(|(from, req)| (from.port(), req[0]))
            .collect()
    }

    /// The requests `intake` gives at `now`, in order.
    fn drain_at(intake: &mut Intake, now: u64) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut all = Vec::new();
        while let Some((from, req)) = intake.next(now) {
            all.push((from, req.clone()));
            intake.recycle(req);
        }
        all
    }

    #[test]
    fn principals_are_served_in_turn_whatever_the_arrival_order() {
        let mut intake = Intake::default();
        let (a, b) = (Principal::Tenant(1), Principal::Tenant(2));
        // B's burst arrives first, then A's two requests, then the admin's.
        for i in 0..10 {
            assert_eq!(put(&mut intake, b, 2, i), Ok(Admitted::Queued));
        }
        assert_eq!(put(&mut intake, a, 1, 100), Ok(Admitted::Queued));
        assert_eq!(put(&mut intake, a, 1, 101), Ok(Admitted::Queued));
        assert_eq!(
            put(&mut intake, Principal::Admin, 9, 200),
            Ok(Admitted::Queued)
        );
        assert_eq!(intake.waiting(), 13);
        let order = drain(&mut intake);
        assert_eq!(
            &order[..6],
            &[(2, 0), (1, 100), (9, 200), (2, 1), (1, 101), (2, 2)],
            "one request of each principal per turn"
        );
        // Each principal's own requests keep their order, and nothing is lost.
        let bs: Vec<u8> = order.iter().filter(|o| o.0 == 2).map(|o| o.1).collect();
        assert_eq!(bs, (0..10).collect::<Vec<u8>>());
        assert_eq!(order.len(), 13);
        assert_eq!(intake.waiting(), 0);
        assert!(intake.next(0).is_none());
    }

    #[test]
    fn a_principal_with_its_queue_full_is_refused_and_the_others_are_not() {
        let mut intake = Intake::default();
        let (a, b) = (Principal::Tenant(1), Principal::Tenant(2));
        for i in 0..QUEUED_MAX {
            assert_eq!(put(&mut intake, b, 2, i as u8), Ok(Admitted::Queued));
        }
        assert!(
            put(&mut intake, b, 2, 99).is_err(),
            "B has QUEUED_MAX waiting"
        );
        assert_eq!(
            put(&mut intake, a, 1, 100),
            Ok(Admitted::Queued),
            "A's own queue"
        );
        // Serving B's makes room again.
        let order = drain(&mut intake);
        assert_eq!(order[1], (1, 100), "A's request is served second");
        assert_eq!(put(&mut intake, b, 2, 42), Ok(Admitted::Queued));
        assert_eq!(drain(&mut intake), vec![(2, 42)]);
    }

    #[test]
    fn a_copy_of_a_waiting_request_is_not_queued_again() {
        let mut intake = Intake::default();
        let b = Principal::Tenant(2);
        assert_eq!(put(&mut intake, b, 2, 7), Ok(Admitted::Queued));
        // A retransmission (same key and nonce), even from elsewhere: the first answers.
        let tag = (2, 2007);
        assert_eq!(intake.admit(b, tag, addr(3), &[7], 5), Ok(Admitted::Copy));
        assert_eq!((intake.waiting(), intake.copies), (1, 1));
        assert_eq!(drain(&mut intake), vec![(2, 7)]);
        // Once served, the same tag is the gate's business (a repeat it answers).
        assert_eq!(put(&mut intake, b, 2, 7), Ok(Admitted::Queued));
    }

    #[test]
    fn a_request_waiting_longer_than_its_client_does_is_dropped_and_counted() {
        let mut intake = Intake::default();
        let b = Principal::Tenant(2);
        assert!(intake.admit(b, (2, 1), addr(2), &[1], 0).is_ok());
        assert!(intake.admit(b, (2, 2), addr(2), &[2], WAIT_MAX_NS).is_ok());
        let served = drain_at(&mut intake, WAIT_MAX_NS + 1);
        assert_eq!(served, vec![(addr(2), vec![2])]);
        assert_eq!(intake.stale, 1);
    }

    #[test]
    fn buffers_hold_each_request_whole_when_reused() {
        let mut intake = Intake::default();
        let who = Principal::Tenant(3);
        assert!(intake.admit(who, (3, 1), addr(3), &[7; 300], 0).is_ok());
        assert_eq!(drain(&mut intake), vec![(3, 7)]);
        // A shorter request in the reused buffer is not padded by the longer one's bytes.
        assert!(intake.admit(who, (3, 2), addr(3), &[5, 6], 0).is_ok());
        assert_eq!(drain_at(&mut intake, 0), vec![(addr(3), vec![5, 6])]);
        // A large one's buffer is not kept.
        assert!(intake.admit(who, (3, 3), addr(3), &[1; 60_000], 0).is_ok());
        drain(&mut intake);
        assert!(intake.spare.iter().all(|b| b.capacity() <= SPARE_BYTES_MAX));
    }

    #[test]
    fn a_refused_principal_is_told_to_wait_until_its_queue_is_served() {
        let mut intake = Intake::default();
        let (a, b) = (Principal::Tenant(1), Principal::Tenant(2));
        for _ in 0..8 {
            intake.served_in(100_000);
        }
        for i in 0..QUEUED_MAX {
            assert!(put(&mut intake, b, 2, i as u8).is_ok());
        }
        let alone = put(&mut intake, b, 2, 200).unwrap_err();
        assert!(put(&mut intake, a, 1, 0).is_ok());
        let with_a = put(&mut intake, b, 2, 201).unwrap_err();
        // ~66 µs a request (the average after 8 of 100 µs), QUEUED_MAX of them.
        let drained = 66 * QUEUED_MAX as u32;
        assert!(
            (drained - 100..=drained + 100).contains(&alone),
            "{alone} us"
        );
        assert!(with_a > alone, "{with_a} us, alone {alone} us");
        // Never told to retry at once, nor to go away for long.
        let mut idle = Intake::default();
        for i in 0..QUEUED_MAX {
            assert!(put(&mut idle, b, 2, i as u8).is_ok());
        }
        assert_eq!(put(&mut idle, b, 2, 200), Err(RETRY_MIN_US as u32));
    }
}
