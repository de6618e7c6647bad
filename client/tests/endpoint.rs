//! The client's protocol driven with simulated time and no network (`naam_client::Endpoint`):
//! whole exchanges — retransmission with back-off, a refusal with a retry-after hint, replies
//! from the wrong address, late duplicates, the congestion window — decided by the times and
//! datagrams the test hands it, so each assertion is exact.

use naam_client::{ClientConfig, ClientError, Endpoint, ExecMode, Response, ServerAddr};
use naam_core::wire::{
    AmReplyRepr, AmStatus, Body, ErrorCode, ErrorRepr, Flags, Location, Message,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(10);

fn server() -> ServerAddr {
    ServerAddr::new("10.0.0.1:7000".parse().unwrap(), None)
}

fn endpoint(max_retries: u32, max_window: usize) -> Endpoint {
    let cfg = ClientConfig {
        timeout: TIMEOUT,
        max_retries,
        max_backoff: Duration::from_millis(40),
        max_window,
        ..ClientConfig::default()
    };
    Endpoint::new(&[server()], cfg).unwrap()
}

/// Every datagram due now: (request id, destination, bytes).
fn sent(ep: &mut Endpoint) -> Vec<(u64, SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        out.push((t.request_id, t.dest, t.datagram.to_vec()));
    }
    out
}

fn call(ep: &mut Endpoint, now: Instant) -> naam_client::Ticket {
    ep.submit_call_on(now, 0, 0, 2, b"args", ExecMode::Server)
        .unwrap()
}

fn reply(request: &[u8], body: Body<'_>) -> Vec<u8> {
    let m = Message::parse(request).unwrap().reply(body);
    let mut buf = vec![0u8; m.buffer_len()];
    m.emit(&mut buf).unwrap();
    buf
}

fn done(output: &[u8]) -> Body<'_> {
    Body::AmReply(AmReplyRepr {
        status: AmStatus::Done,
        executed_at: Location::Nic,
        steps: 1,
        hint: None,
        output,
    })
}

#[test]
fn a_lost_request_is_retransmitted_with_backoff_then_times_out() {
    let t0 = Instant::now();
    let mut ep = endpoint(2, 64);
    let ticket = call(&mut ep, t0);
    let first = sent(&mut ep);
    assert_eq!(first.len(), 1);
    let (id, dest, bytes) = &first[0];
    assert_eq!(
        *dest,
        server().class_addr(2).unwrap(),
        "to its class's port"
    );
    assert_eq!(ep.poll_timeout(), Some(t0 + TIMEOUT));

    // Nothing is due before the timer.
    ep.handle_timeout(t0 + TIMEOUT - Duration::from_micros(1));
    assert!(sent(&mut ep).is_empty());

    // Each timeout resends the same request, flagged RETRANSMIT, after twice the wait.
    let mut at = t0 + TIMEOUT;
    for (n, wait) in [(1, 20), (2, 40)] {
        ep.handle_timeout(at);
        let again = sent(&mut ep);
        assert_eq!(again.len(), 1, "retransmission {n}");
        let m = Message::parse(&again[0].2).unwrap();
        assert_eq!(m.request_id, *id);
        assert!(m.flags.contains(Flags::RETRANSMIT));
        assert_eq!(again[0].2.len(), bytes.len());
        at += Duration::from_millis(wait);
        assert_eq!(ep.poll_timeout(), Some(at));
    }
    ep.handle_timeout(at);
    assert!(sent(&mut ep).is_empty(), "no retries left");
    match ep.take(ticket) {
        Some(Err(ClientError::Timeout { attempts, .. })) => assert_eq!(attempts, 3),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(
        (ep.stats.requests, ep.stats.retransmits, ep.stats.timeouts),
        (1, 2, 1)
    );
    assert!(ep.is_idle());
}

#[test]
fn replies_match_by_id_and_address_and_late_duplicates_are_stray() {
    let t0 = Instant::now();
    let mut ep = endpoint(5, 64);
    let ticket = call(&mut ep, t0);
    let (_, _, req) = sent(&mut ep).remove(0);
    let answer = reply(&req, done(b"value"));

    ep.handle(t0, "10.9.9.9:7002".parse().unwrap(), &answer);
    assert_eq!(ep.stats.stray_replies, 1, "from another host");
    assert!(ep.take(ticket).is_none());
    ep.handle(t0, "10.0.0.1:7002".parse().unwrap(), b"\x00garbage");
    assert_eq!(ep.stats.malformed_replies, 1);

    ep.handle(t0, "10.0.0.1:7002".parse().unwrap(), &answer);
    match ep.take(ticket) {
        Some(Ok(Response::Am(r))) => assert_eq!(r.output, b"value"),
        other => panic!("expected the reply, got {other:?}"),
    }
    ep.handle(t0, "10.0.0.1:7002".parse().unwrap(), &answer);
    assert_eq!(ep.stats.stray_replies, 2, "a late duplicate");
    assert_eq!(
        ep.poll_timeout(),
        Some(t0 + TIMEOUT),
        "only a stale timer is left"
    );
    ep.handle_timeout(t0 + TIMEOUT);
    assert!(
        sent(&mut ep).is_empty(),
        "a finished request is never resent"
    );
    assert_eq!(ep.poll_timeout(), None);
}

#[test]
fn a_refusal_with_a_hint_is_retried_when_the_server_said() {
    let t0 = Instant::now();
    let mut ep = endpoint(5, 64);
    let ticket = call(&mut ep, t0);
    let (id, _, req) = sent(&mut ep).remove(0);
    let busy = reply(
        &req,
        Body::Error(ErrorRepr {
            code: ErrorCode::Busy,
            detail: "tenant over its share",
            retry_after_us: Some(3_000),
        }),
    );
    let t1 = t0 + Duration::from_millis(1);
    ep.handle(t1, "10.0.0.1:7002".parse().unwrap(), &busy);
    assert!(ep.take(ticket).is_none(), "a refusal is not the end");
    assert_eq!(ep.poll_timeout(), Some(t1 + Duration::from_millis(3)));
    assert_eq!((ep.stats.busy_retries, ep.stats.retry_after_hints), (1, 1));
    ep.handle_timeout(t1 + Duration::from_millis(3));
    let retry = sent(&mut ep);
    assert_eq!(retry.len(), 1);
    // Its only copy was refused, so it did not run: retried under a new id, so that the
    // old one no longer holds the server's de-duplication window open.
    assert_ne!(retry[0].0, id, "a new request id");
    assert_eq!(ep.stats.renumbered, 1);
    let from: SocketAddr = "10.0.0.1:7002".parse().unwrap();
    ep.handle(t1, from, &reply(&req, done(b"late")));
    assert_eq!(
        ep.stats.stray_replies, 1,
        "the old id is answered by nothing any more"
    );
    ep.handle(t1, from, &reply(&retry[0].2, done(b"ok")));
    assert!(matches!(ep.take(ticket), Some(Ok(Response::Am(_)))));
}

#[test]
fn a_refused_retransmission_keeps_its_id() {
    // Two copies went out: the refusal may answer the second while the first ran (and its
    // reply was lost). The retry keeps the id, so the server answers it from its cache.
    let t0 = Instant::now();
    let mut ep = endpoint(5, 64);
    let ticket = call(&mut ep, t0);
    let (id, _, req) = sent(&mut ep).remove(0);
    ep.handle_timeout(t0 + TIMEOUT);
    let again = sent(&mut ep);
    assert_eq!(again[0].0, id, "a retransmission");
    let t1 = t0 + TIMEOUT + Duration::from_millis(1);
    ep.handle(
        t1,
        "10.0.0.1:7002".parse().unwrap(),
        &reply(&req, busy("queues full")),
    );
    let due = ep.poll_timeout().expect("a retry is scheduled");
    ep.handle_timeout(due);
    let retry = sent(&mut ep);
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].0, id, "the same id: its first copy may have run");
    assert_eq!(ep.stats.renumbered, 0);
    ep.handle(
        due,
        "10.0.0.1:7002".parse().unwrap(),
        &reply(&req, done(b"ok")),
    );
    assert!(matches!(ep.take(ticket), Some(Ok(Response::Am(_)))));
}

#[test]
fn the_window_holds_requests_until_replies_make_room() {
    let t0 = Instant::now();
    let mut ep = endpoint(5, 2);
    let tickets: Vec<_> = (0..5).map(|_| call(&mut ep, t0)).collect();
    let first = sent(&mut ep);
    assert_eq!(first.len(), 2, "two on the wire");
    assert_eq!(ep.window(0).map(|w| (w.1, w.2)), Some((2, 3)));
    // Each reply lets one held request go.
    let t1 = t0 + Duration::from_millis(1);
    ep.handle(
        t1,
        "10.0.0.1:7002".parse().unwrap(),
        &reply(&first[0].2, done(b"")),
    );
    let next = sent(&mut ep);
    assert_eq!(next.len(), 1);
    assert!(next[0].0 > first[1].0, "held requests go in order");
    assert!(matches!(ep.take(tickets[0]), Some(Ok(_))));
    assert_eq!(ep.outstanding(), 4);
}

fn busy<'a>(detail: &'a str) -> Body<'a> {
    Body::Error(ErrorRepr {
        code: ErrorCode::Busy,
        detail,
        retry_after_us: None,
    })
}

#[test]
fn refusals_are_retried_soon_under_new_ids_until_the_retries_run_out() {
    let t0 = Instant::now();
    let mut ep = endpoint(2, 64);
    let ticket = call(&mut ep, t0);
    let (mut id, _, mut req) = sent(&mut ep).remove(0);
    let from: SocketAddr = "10.0.0.1:7002".parse().unwrap();
    let mut now = t0;
    // Without a hint, a refused request is retried after a thirty-second of the timeout,
    // doubling per refusal, long before a retransmission timeout; each refused copy was the
    // only one under its id, so each retry gets a new id.
    for (n, wait) in [(1, TIMEOUT / 32), (2, TIMEOUT / 16)] {
        ep.handle(now, from, &reply(&req, busy("queues full")));
        let due = ep.poll_timeout().expect("a retry is scheduled");
        assert_eq!(due - now, wait, "refusal {n}");
        now = due;
        ep.handle_timeout(now);
        let mut again = sent(&mut ep);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].0, id, "a new request id");
        (id, _, req) = again.remove(0);
    }
    // A refusal past the last retry is the answer.
    ep.handle(now, from, &reply(&req, busy("queues full")));
    match ep.take(ticket) {
        Some(Err(e)) => assert_eq!(e.code(), Some(ErrorCode::Busy), "{e}"),
        other => panic!("expected busy, got {other:?}"),
    }
    assert_eq!(ep.stats.busy_retries, 2);
}

#[test]
fn host_unavailable_is_retried_on_the_retransmission_schedule() {
    // The host agent away lasts about as long as a restart, not a queue's moment: retried
    // after the timeout, doubling (quick retries gave up after ~50 ms in all).
    let t0 = Instant::now();
    let mut ep = endpoint(5, 64);
    let _ticket = call(&mut ep, t0);
    let (_, _, mut req) = sent(&mut ep).remove(0);
    let from: SocketAddr = "10.0.0.1:7002".parse().unwrap();
    let mut now = t0;
    for wait in [TIMEOUT, 2 * TIMEOUT, 4 * TIMEOUT] {
        let gone = Body::Error(ErrorRepr {
            code: ErrorCode::HostUnavailable,
            detail: "host agent gone",
            retry_after_us: None,
        });
        ep.handle(now, from, &reply(&req, gone));
        let due = ep.poll_timeout().expect("a retry is scheduled");
        assert_eq!(due - now, wait);
        now = due;
        ep.handle_timeout(now);
        req = sent(&mut ep).remove(0).2;
    }
}

#[test]
fn a_timeout_after_a_refusal_names_the_refusal() {
    // Attempt 1 is refused; the later ones get no answer: the outcome is unknown (a timeout),
    // and the error says what the server answered before.
    let t0 = Instant::now();
    let mut ep = endpoint(2, 64);
    let ticket = call(&mut ep, t0);
    let (_, _, req) = sent(&mut ep).remove(0);
    ep.handle(
        t0,
        "10.0.0.1:7002".parse().unwrap(),
        &reply(&req, busy("queues full")),
    );
    while let Some(at) = ep.poll_timeout() {
        ep.handle_timeout(at);
        sent(&mut ep);
    }
    let err = match ep.take(ticket) {
        Some(Err(e)) => e,
        other => panic!("expected a timeout, got {other:?}"),
    };
    match &err {
        ClientError::Timeout { refused, .. } => {
            assert_eq!(refused.as_deref(), Some("busy: queues full"), "{err}")
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(
        err.to_string()
            .contains("earlier attempts were refused: busy"),
        "{err}"
    );
}

#[test]
fn a_placement_hint_leases_the_class_to_the_client_until_another_hint_ends_it() {
    let t0 = Instant::now();
    let mut ep = endpoint(5, 64);
    let hinted = |class, location, lease_ms| {
        Body::AmReply(AmReplyRepr {
            status: AmStatus::Done,
            executed_at: Location::Nic,
            steps: 1,
            hint: Some(naam_core::wire::PlacementHint {
                class,
                location,
                lease_ms,
            }),
            output: b"",
        })
    };
    let from: SocketAddr = "10.0.0.1:7002".parse().unwrap();
    let ticket = call(&mut ep, t0);
    let (_, _, req) = sent(&mut ep).remove(0);
    ep.handle(t0, from, &reply(&req, hinted(2, Location::Client, 1500)));
    assert!(matches!(ep.take(ticket), Some(Ok(_))));
    assert!(ep.lease_active(t0, 0, 2), "leased to the client");
    assert!(!ep.lease_active(t0, 0, 3), "only that class");
    assert!(ep.lease_active(t0 + Duration::from_millis(1499), 0, 2));
    assert!(
        !ep.lease_active(t0 + Duration::from_millis(1500), 0, 2),
        "the lease ran out"
    );
    // A hint naming another location ends the lease at once.
    let ticket = call(&mut ep, t0);
    let (_, _, req) = sent(&mut ep).remove(0);
    ep.handle(t0, from, &reply(&req, hinted(2, Location::Host, 0)));
    assert!(matches!(ep.take(ticket), Some(Ok(_))));
    assert!(!ep.lease_active(t0, 0, 2));
    assert_eq!(ep.stats.hints, 2);
}

#[test]
fn no_copy_of_an_id_goes_out_later_than_the_retry_span() {
    // The servers keep a reply for their retention time only: a retransmission after it
    // could run a mutation whose reply was lost a second time. However many retries are
    // left, no copy of an id is sent later than `max_retry_span` after its first.
    let cfg = ClientConfig {
        timeout: Duration::from_millis(100),
        max_retries: 50,
        max_backoff: Duration::from_millis(100),
        max_retry_span: Duration::from_millis(250),
        exec_mode: ExecMode::Server,
        ..ClientConfig::default()
    };
    let mut ep = Endpoint::new(&[server()], cfg).unwrap();
    let t0 = Instant::now();
    let ticket = ep
        .submit_call_on(t0, 0, 0, 2, b"args", ExecMode::Server)
        .unwrap();
    let mut copies = vec![Duration::ZERO];
    sent(&mut ep);
    while let Some(at) = ep.poll_timeout() {
        ep.handle_timeout(at);
        copies.extend(sent(&mut ep).iter().map(|_| at - t0));
    }
    assert_eq!(
        copies,
        [0, 100, 200].map(Duration::from_millis),
        "sent at 0, 100, 200 ms; the next (300 ms) would be past the span"
    );
    match ep.take(ticket) {
        Some(Err(ClientError::Timeout { attempts, .. })) => assert_eq!(attempts, 3),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// A restarted server refuses what was sealed before it started (a replay of the previous
/// process's traffic could run again otherwise). A query refused so is sealed again with a
/// fresh nonce and sent at once (the probe of 2026-12-06 saw `naam put` fail "unauthorized"
/// when it started during a dataplane restart); a mutation is not, since its first copy may
/// have run before the restart: its caller gets the refusal.
#[test]
fn a_query_sealed_before_a_restart_is_sealed_again_and_a_mutation_is_not() {
    use naam_core::auth::{Credential, Principal, Refusal};
    use naam_core::wire::{DescribeRepr, EntryList, KvEntry, KvListRepr, OffloadIdRepr};
    let cred = Credential::new(0, Principal::Admin, [9; 32]);
    let cfg = ClientConfig {
        timeout: TIMEOUT,
        max_retries: 3,
        credential: Some(cred),
        ..ClientConfig::default()
    };
    let mut ep = Endpoint::new(&[server()], cfg).unwrap();
    let t0 = Instant::now();
    let from: SocketAddr = "10.0.0.1:7000".parse().unwrap();
    let refused = |req: &[u8]| {
        let e = ErrorRepr::new(ErrorCode::Unauthorized, Refusal::BeforeStart.detail());
        reply(req, Body::Error(e))
    };
    let nonce = |d: &[u8]| match Message::parse(d).unwrap().body {
        Body::Sealed(s) => s.nonce,
        other => panic!("not sealed: {other:?}"),
    };

    let describe = |ep: &mut Endpoint| {
        let body = Body::Describe(DescribeRepr {
            app: "mica",
            start: 0,
        });
        ep.submit_control(t0, 0, body).unwrap()
    };
    let q = describe(&mut ep);
    let first = sent(&mut ep);
    assert_eq!(first.len(), 1);
    ep.handle(t0, from, &refused(&first[0].2));
    let again = sent(&mut ep);
    assert_eq!(again.len(), 1, "sent again at once");
    assert_ne!(nonce(&again[0].2), nonce(&first[0].2), "with a fresh nonce");
    let entries = [KvEntry {
        name: "keys",
        value: 5,
    }];
    let page = Body::DescribeReply(KvListRepr {
        more: false,
        next: 0,
        entries: EntryList::from_slice(&entries),
    });
    ep.handle(t0, from, &reply(&again[0].2, page));
    assert!(matches!(ep.take(q), Some(Ok(Response::Describe(_)))));
    assert_eq!(ep.stats.resealed, 1);

    let m = ep
        .submit_control(t0, 0, Body::Unregister(OffloadIdRepr { id: 16 }))
        .unwrap();
    let first = sent(&mut ep);
    ep.handle(t0, from, &refused(&first[0].2));
    assert!(sent(&mut ep).is_empty(), "a mutation is not sealed again");
    match ep.take(m) {
        Some(Err(ClientError::Server { code, detail, .. })) => {
            assert_eq!(code, ErrorCode::Unauthorized);
            assert!(detail.contains("before this server started"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ep.stats.resealed, 1);

    // Also when the restarted server first sees the query's last retransmission (it failed
    // then: the retries were used up).
    let q = describe(&mut ep);
    let mut last = sent(&mut ep);
    let mut now = t0;
    for _ in 0..3 {
        now = ep.poll_timeout().expect("a retransmission is due");
        ep.handle_timeout(now);
        last = sent(&mut ep);
    }
    assert_eq!(last.len(), 1, "the last retransmission");
    ep.handle(now, from, &refused(&last[0].2));
    let again = sent(&mut ep);
    assert_eq!(again.len(), 1, "sealed again and sent");
    ep.handle(now, from, &reply(&again[0].2, page));
    assert!(matches!(ep.take(q), Some(Ok(Response::Describe(_)))));
    assert_eq!(ep.stats.resealed, 2);
}
