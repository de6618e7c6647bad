//! Fair intake of the control port: requests queued per principal, served in turn.
//!
//! One thread serves the control port, and one request can cost it milliseconds (a STATS
//! page built over thousands of counters, a REGISTER's verifier and JIT). Served in the
//! order they arrived, one tenant's burst held every other principal's requests behind it:
//! with 64 of one tenant's STATS outstanding, 2 of 7 of another tenant's DESCRIBEs timed out
//! (probe 16). So the control thread reads what the socket holds, queues each request under
//! the principal whose key sealed it (checked by its MAC: a sender cannot queue in another
//! principal's name) and serves the queues one request each, in turn. A principal with
//! [`QUEUED_MAX`] requests waiting is answered `busy` at once, a transient refusal its client
//! retries: one principal's flood costs each other principal at most one of its requests'
//! service per turn, and never fills the socket's buffer in front of them.

use std::collections::VecDeque;
use std::net::SocketAddr;

use naam_core::auth::Principal;

/// Requests one principal may have waiting; more are answered `busy` as they arrive. It
/// bounds the memory and that principal's own wait, not the others': they wait for one of
/// its requests a turn however many it has queued. Tools and tests make a few at once,
/// benchmarks' clients starting together (one principal) a few dozen.
pub const QUEUED_MAX: usize = 32;

/// The bounds of the wait a refused principal is told: at least a millisecond (a client
/// that retried at once would be refused again), at most a second.
const RETRY_MIN_US: u64 = 1_000;
const RETRY_MAX_US: u64 = 1_000_000;

/// One principal's waiting requests, oldest first.
struct Queue {
    who: Principal,
    waiting: VecDeque<(SocketAddr, Vec<u8>)>,
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
}

impl Intake {
    /// Queues `req` from `from` for `who`; when `who` already has [`QUEUED_MAX`] waiting,
    /// queues nothing and returns the time (µs) until they are likely all served: the
    /// requests refused together come back together, and one freed place would take one
    /// of them only.
    pub fn admit(&mut self, who: Principal, from: SocketAddr, req: &[u8]) -> Result<(), u32> {
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
        q.push_back((from, buf));
        Ok(())
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

    /// Gives the next principal's oldest request to `serve`; false when none waits.
    pub fn serve_next(&mut self, serve: impl FnOnce(SocketAddr, &[u8])) -> bool {
        let n = self.queues.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            if let Some((from, req)) = self.queues[i].waiting.pop_front() {
                self.turn = (i + 1) % n;
                serve(from, &req);
                self.spare.push(req);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The order in which `intake` serves what it holds, as (principal's port, first byte).
    fn drain(intake: &mut Intake) -> Vec<(u16, u8)> {
        let mut order = Vec::new();
        while intake.serve_next(|from, req| order.push((from.port(), req[0]))) {}
        order
    }

    #[test]
    fn principals_are_served_in_turn_whatever_the_arrival_order() {
        let mut intake = Intake::default();
        let (a, b) = (Principal::Tenant(1), Principal::Tenant(2));
        // B's burst arrives first, then A's two requests, then the admin's.
        for i in 0..10 {
            assert!(intake.admit(b, addr(2), &[i]).is_ok());
        }
        assert!(intake.admit(a, addr(1), &[100]).is_ok());
        assert!(intake.admit(a, addr(1), &[101]).is_ok());
        assert!(intake.admit(Principal::Admin, addr(9), &[200]).is_ok());
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
        assert!(!intake.serve_next(|_, _| panic!("nothing waits")));
    }

    #[test]
    fn a_principal_with_its_queue_full_is_refused_and_the_others_are_not() {
        let mut intake = Intake::default();
        let (a, b) = (Principal::Tenant(1), Principal::Tenant(2));
        for i in 0..QUEUED_MAX {
            assert!(intake.admit(b, addr(2), &[i as u8]).is_ok());
        }
        assert!(
            intake.admit(b, addr(2), &[99]).is_err(),
            "B has QUEUED_MAX waiting"
        );
        assert!(
            intake.admit(a, addr(1), &[100]).is_ok(),
            "A's queue is its own"
        );
        // Serving one of B's makes room for one more.
        let order = drain(&mut intake);
        assert_eq!(order[1], (1, 100), "A's request is served second");
        assert!(intake.admit(b, addr(2), &[42]).is_ok());
        assert_eq!(drain(&mut intake), vec![(2, 42)]);
    }

    #[test]
    fn a_refused_principal_is_told_to_wait_for_a_turn_of_every_waiting_principal() {
        let mut intake = Intake::default();
        let (a, b) = (Principal::Tenant(1), Principal::Tenant(2));
        for _ in 0..8 {
            intake.served_in(100_000);
        }
        for _ in 0..QUEUED_MAX {
            assert!(intake.admit(b, addr(2), &[0]).is_ok());
        }
        let alone = intake.admit(b, addr(2), &[0]).unwrap_err();
        assert!(intake.admit(a, addr(1), &[0]).is_ok());
        let with_a = intake.admit(b, addr(2), &[0]).unwrap_err();
        // ~66 µs a request (the average after 8 of 100 µs), QUEUED_MAX of them.
        let drained = 66 * QUEUED_MAX as u32;
        assert!(
            (drained - 100..=drained + 100).contains(&alone),
            "{alone} us"
        );
        assert!(with_a > alone, "{with_a} us, alone {alone} us");
        // Never told to retry at once, nor to go away for long.
        let mut idle = Intake::default();
        for _ in 0..QUEUED_MAX {
            assert!(idle.admit(b, addr(2), &[0]).is_ok());
        }
        assert_eq!(idle.admit(b, addr(2), &[0]), Err(RETRY_MIN_US as u32));
    }

    #[test]
    fn buffers_hold_each_request_whole_when_reused() {
        let mut intake = Intake::default();
        let who = Principal::Tenant(3);
        assert!(intake.admit(who, addr(3), &[7; 300]).is_ok());
        assert_eq!(drain(&mut intake), vec![(3, 7)]);
        // A shorter request in the reused buffer is not padded by the longer one's bytes.
        assert!(intake.admit(who, addr(3), &[5, 6]).is_ok());
        let mut seen = Vec::new();
        assert!(intake.serve_next(|_, req| seen.extend_from_slice(req)));
        assert_eq!(seen, vec![5, 6]);
    }
}
