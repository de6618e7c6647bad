use super::*;
use crate::runtime::monitor::MonitorConfig;
use crate::steering::Target;
use naam_core::auth::{Credential, Keyring};
use naam_core::pool::Registry;
use naam_core::wire::{DescribeRepr, PageRequestRepr};

fn admin() -> Credential {
    Credential::new(0, Principal::Admin, [7; 32])
}

fn tenant() -> Credential {
    Credential::new(1, Principal::Tenant(1), [9; 32])
}

fn plane() -> ControlPlane {
    let mut switch = SoftSwitch::new(7000, 8, 1, Target::NicQueue(0));
    let shared = Shared::new(
        Registry::new(),
        switch.table(),
        8,
        naam_core::auth::Capabilities::default(),
    );
    let monitor = Monitor::new(MonitorConfig::default(), 7000, 8, &mut switch).unwrap();
    let workers = vec![Arc::new(WorkerStats::new(8)), Arc::new(WorkerStats::new(8))];
    let host = HostControl::new(
        std::path::Path::new("/nonexistent/naam/control.sock"),
        std::time::Duration::from_millis(10),
    );
    ControlPlane::new(
        shared,
        workers,
        switch,
        monitor,
        host,
        VerifierConfig::default(),
        Engine::Interpreter,
        8,
        Gate::new(Keyring::new(vec![admin(), tenant()]).unwrap(), 64),
    )
}

fn describe_as(p: &mut ControlPlane, key: Option<&Credential>, app: &str) -> Vec<u8> {
    let mut req = vec![0u8; 256];
    let n = Message::new(7, 0, Body::Describe(DescribeRepr { app, start: 0 }))
        .emit(&mut req)
        .unwrap();
    req.truncate(n);
    if let Some(k) = key {
        req = k.seal(wall_clock_ns(), &req).unwrap();
    }
    send(p, &req)
}

fn send(p: &mut ControlPlane, req: &[u8]) -> Vec<u8> {
    send_from(p, "127.0.0.1:5555", req)
}

fn send_from(p: &mut ControlPlane, from: &str, req: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; naam_core::wire::MAX_DATAGRAM];
    let from: SocketAddr = from.parse().unwrap();
    let len = p.handle(from, req, &mut out);
    out.truncate(len);
    out
}

fn describe(p: &mut ControlPlane, app: &str) -> Vec<u8> {
    describe_as(p, Some(&admin()), app)
}

fn error_code(reply: &[u8]) -> Option<ErrorCode> {
    match Message::parse(reply).unwrap().body {
        Body::Error(e) => Some(e.code),
        _ => None,
    }
}

#[test]
fn unsealed_forged_and_non_admin_requests_are_refused_and_counted() {
    let mut p = plane();
    let r = describe_as(&mut p, None, "congest-nic:1000");
    assert_eq!(error_code(&r), Some(ErrorCode::Unauthorized));
    let forged = Credential::new(0, Principal::Admin, [1; 32]);
    let r = describe_as(&mut p, Some(&forged), "congest-nic:1000");
    assert_eq!(error_code(&r), Some(ErrorCode::Unauthorized));
    let r = describe_as(&mut p, Some(&tenant()), "congest-nic:1000");
    assert_eq!(error_code(&r), Some(ErrorCode::Forbidden));
    assert!(
        !p.shared.nic_congested(naam_link::now_ns()),
        "nothing injected"
    );
    let c: std::collections::HashMap<_, _> = p.counters().into_iter().collect();
    assert_eq!(c["auth.refused.unsealed"], 1);
    assert_eq!(c["auth.refused.bad_mac"], 1);
    assert_eq!(c["auth.forbidden"], 1);
    assert_eq!(c["ctl.error.unauthorized"], 2);
    assert_eq!(c["ctl.error.forbidden"], 1);
    assert_eq!(c["ctl.answered"], 3);
    // The admin may, and the tenant may read counters.
    assert_eq!(error_code(&describe(&mut p, "congest-nic:0")), None);
}

#[test]
fn a_retransmission_after_a_transient_refusal_runs_again() {
    // The host agent is unreachable: `host_unavailable`, "not executed". The client's
    // retransmission carries the same nonce and must be tried again, not called a replay.
    let mut p = plane();
    let mut req = vec![0u8; 256];
    let n = Message::new(
        11,
        0,
        Body::Describe(DescribeRepr {
            app: "mica",
            start: 0,
        }),
    )
    .emit(&mut req)
    .unwrap();
    let sealed = admin().seal(wall_clock_ns(), &req[..n]).unwrap();
    for _ in 0..3 {
        let r = send(&mut p, &sealed);
        assert_eq!(error_code(&r), Some(ErrorCode::HostUnavailable));
    }
    // A capture of it replayed from another address does not run there (it would answer a
    // forged address with what the request asked for), in no more than it sent; and the
    // sender's own retry still runs.
    let r = send_from(&mut p, "10.9.8.7:4000", &sealed);
    assert_eq!(error_code(&r), Some(ErrorCode::Unauthorized));
    assert!(r.len() <= sealed.len());
    let r = send(&mut p, &sealed);
    assert_eq!(error_code(&r), Some(ErrorCode::HostUnavailable));
}

#[test]
fn a_repeated_sealed_request_gets_its_first_reply_and_runs_once() {
    let mut p = plane();
    let mut req = vec![0u8; 256];
    let n = Message::new(
        9,
        0,
        Body::Describe(DescribeRepr {
            app: "congest-nic:50",
            start: 0,
        }),
    )
    .emit(&mut req)
    .unwrap();
    let sealed = admin().seal(wall_clock_ns(), &req[..n]).unwrap();
    let first = send(&mut p, &sealed);
    assert_eq!(error_code(&first), None);
    describe(&mut p, "congest-nic:0");
    assert!(!p.shared.nic_congested(naam_link::now_ns()));
    // The replay (or a retransmission) is answered from the cache and injects nothing.
    assert_eq!(send(&mut p, &sealed), first);
    assert!(
        !p.shared.nic_congested(naam_link::now_ns()),
        "not run again"
    );
}

#[test]
fn congest_nic_holds_the_workers_for_the_given_time() {
    let mut p = plane();
    let before = naam_link::now_ns();
    assert!(!p.shared.nic_congested(before));
    let reply = describe(&mut p, "congest-nic:40");
    let m = Message::parse(&reply).unwrap();
    assert_eq!(m.request_id, 7);
    let Body::DescribeReply(kv) = m.body else {
        panic!("expected a describe reply, got {:?}", m.body);
    };
    let kv: Vec<(String, u64)> = kv
        .entries
        .iter()
        .map(|e| (e.name.to_owned(), e.value))
        .collect();
    assert_eq!(
        kv,
        vec![("congest_ms".to_owned(), 40), ("workers".to_owned(), 2)]
    );
    let after = naam_link::now_ns();
    let until = p.shared.nic_congest_until_ns.load(Ordering::Relaxed);
    assert!(until >= before + 40_000_000 && until <= after + 40_000_000);
    assert!(p.shared.nic_congested(after));
    assert!(!p.shared.nic_congested(until));
    let left = p
        .counters()
        .into_iter()
        .find(|(n, _)| n == "dp.nic_congest_left_ms")
        .map(|(_, v)| v);
    assert!(left.is_some_and(|ms| ms <= 40), "{left:?}");
    // Zero ends it at once.
    describe(&mut p, "congest-nic:0");
    assert!(!p.shared.nic_congested(naam_link::now_ns()));
}

#[test]
fn congest_nic_without_a_number_is_a_bad_request_and_other_describes_are_forwarded() {
    let mut p = plane();
    for app in [
        "congest-nic:soon",
        "congest-nic:18446744073709551615",
        "congest-nic:60001",
    ] {
        let m = describe(&mut p, app);
        match Message::parse(&m).unwrap().body {
            Body::Error(e) => assert_eq!(e.code, ErrorCode::BadRequest, "{app}"),
            other => panic!("{app}: expected bad_request, got {other:?}"),
        }
        assert!(!p.shared.nic_congested(naam_link::now_ns()), "{app}");
    }
    // Anything else goes to the host agent, which is not there.
    let m = describe(&mut p, "mica");
    match Message::parse(&m).unwrap().body {
        Body::Error(e) => assert_eq!(e.code, ErrorCode::HostUnavailable),
        other => panic!("expected host_unavailable, got {other:?}"),
    }
}

#[test]
fn datagrams_that_are_no_request_get_no_answer_and_are_counted() {
    // Junk, a truncated header, a foreign magic and a reply kind: answering any of them would
    // make the control port an amplifier, so they are only counted (`ctl.ignored`).
    let mut p = plane();
    let reply = Message::new(7, 0, Body::Ack);
    let mut ack = vec![0u8; reply.buffer_len()];
    reply.emit(&mut ack).unwrap();
    let mut foreign = ack.clone();
    foreign[0] ^= 0xff;
    for d in [&b""[..], b"x", &[0xa5; 300], &ack, &foreign] {
        assert!(send(&mut p, d).is_empty(), "{d:?} was answered");
    }
    let c: std::collections::HashMap<_, _> = p.counters().into_iter().collect();
    assert_eq!(c["ctl.ignored"], 5);
    assert_eq!(c["ctl.answered"], 0);
}

/// A walk through STATS's pages is served from the list its first page was built from, not
/// built again per page (probe 16: with thousands of offloads each page cost a build of
/// every counter, and a tenant's STATS flood held the control thread for seconds per
/// request).
#[test]
fn a_stats_walk_builds_its_list_once() {
    let mut p = plane();
    let page = |p: &mut ControlPlane, key: &Credential, start: u32, id: u64| {
        let mut req = vec![0u8; 256];
        let n = Message::new(id, 0, Body::Stats(PageRequestRepr { start, max: 4 }))
            .emit(&mut req)
            .unwrap();
        let sealed = key.seal(wall_clock_ns(), &req[..n]).unwrap();
        let r = send(p, &sealed);
        match Message::parse(&r).unwrap().body {
            Body::StatsReply(page) => (
                page.entries
                    .iter()
                    .map(|e| e.name.to_owned())
                    .collect::<Vec<_>>(),
                page.more.then_some(page.next),
            ),
            other => panic!("{other:?}"),
        }
    };
    let built = |p: &ControlPlane| {
        let c: std::collections::HashMap<_, _> = p.counters().into_iter().collect();
        c["ctl.stats_lists_built"]
    };
    for (key, id0) in [(admin(), 100), (tenant(), 200)] {
        let before = built(&p);
        let (mut names, mut next) = page(&mut p, &key, 0, id0);
        let mut pages = 1;
        while let Some(start) = next {
            let (more, n) = page(&mut p, &key, start, id0 + pages);
            names.extend(more);
            next = n;
            pages += 1;
        }
        assert!(pages > 3, "{pages} pages of 4");
        assert_eq!(built(&p) - before, 1, "{pages} pages, one list");
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "no counter twice: {names:?}");
        // The counters a request moves (ctl.answered) were taken at the first page.
        assert!(names.iter().any(|n| n == "ctl.answered"));
    }
}

/// A forged source address must not make the control port an amplifier: what a sender that
/// proved no key gets back is no larger than what it sent, and a captured sealed request
/// replayed from another address gets no copy of its reply (a page of counters).
/// A flood of datagrams that prove no key (unsealed, forged, malformed) is answered up to
/// the workers' rate of such refusals; past it each is counted, not sent (a send each cost
/// the control thread most of its time under a flood, and the kernel then dropped the
/// operators' requests with the rest). A sealed request is served as ever.
#[test]
fn refusals_to_senders_that_prove_nothing_are_rate_limited_and_counted() {
    use crate::runtime::worker::{UNPROVEN_BURST, UNPROVEN_REPLIES_PER_S};
    let mut p = plane();
    let mut out = vec![0u8; naam_core::wire::MAX_DATAGRAM];
    let from: SocketAddr = "127.0.0.1:5555".parse().unwrap();
    let stats = |id| {
        let mut req = vec![0u8; 256];
        let n = Message::new(id, 0, Body::Stats(PageRequestRepr { start: 0, max: 0 }))
            .emit(&mut req)
            .unwrap();
        req.truncate(n);
        req
    };
    let unsealed = stats(1);
    let forged = Credential::new(0, Principal::Admin, [1; 32])
        .seal(wall_clock_ns(), &stats(2))
        .unwrap();
    let mut malformed = unsealed.clone();
    malformed[HEADER_LEN..].fill(0xff);
    let sent = 3 * UNPROVEN_BURST;
    let mut answered = 0;
    let began = std::time::Instant::now();
    for i in 0..sent {
        let d = [&unsealed, &forged, &malformed][(i % 3) as usize];
        let n = p.admit(from, d, naam_link::now_ns(), &mut out);
        if n > 0 {
            answered += 1;
            assert!(error_code(&out[..n]).is_some());
        }
    }
    // The burst, and what the rate earned while the loop ran.
    let earned = began.elapsed().as_secs_f64() * UNPROVEN_REPLIES_PER_S as f64;
    assert!(
        answered >= UNPROVEN_BURST && answered as f64 <= UNPROVEN_BURST as f64 + earned + 2.0,
        "{answered} of {sent} answered ({earned:.0} earned)"
    );
    let c: std::collections::HashMap<_, _> = p.counters().into_iter().collect();
    assert_eq!(c["ctl.unproven_unanswered"], sent - answered);
    assert_eq!(
        c["ctl.error.unauthorized"] + c["ctl.error.bad_request"],
        sent,
        "each refused, answered or not"
    );
    assert_eq!(
        c["auth.refused.unsealed"] + c["auth.refused.bad_mac"],
        2 * sent / 3
    );
    // The operator's sealed request still gets its answer.
    let sealed = admin().seal(wall_clock_ns(), &stats(3)).unwrap();
    assert_eq!(
        p.admit(from, &sealed, naam_link::now_ns(), &mut out),
        0,
        "queued"
    );
    let mut replies = Vec::new();
    while p.serve_next(&mut out, |r, _| replies.push(r.to_vec())) {}
    assert_eq!(replies.len(), 1);
    assert_eq!(error_code(&replies[0]), None, "served");
}

#[test]
fn senders_that_prove_nothing_get_no_more_bytes_than_they_sent() {
    let mut p = plane();
    // A bare header (a STATS request without its page) and an unsealed request.
    let mut req = vec![0u8; 256];
    let n = Message::new(3, 0, Body::Stats(PageRequestRepr { start: 0, max: 0 }))
        .emit(&mut req)
        .unwrap();
    // A bare header: not even an empty error fits in it, so no answer at all (counted).
    assert!(send(&mut p, &req[..HEADER_LEN]).is_empty());
    let r = send(&mut p, &req[..n]);
    assert_eq!(error_code(&r), Some(ErrorCode::Unauthorized));
    assert!(r.len() <= n, "{} > {n}", r.len());
    // A sealed STATS: its reply is far larger than the request.
    let sealed = admin().seal(wall_clock_ns(), &req[..n]).unwrap();
    let first = send_from(&mut p, "127.0.0.1:5555", &sealed);
    assert_eq!(error_code(&first), None);
    assert!(
        first.len() > 2 * sealed.len(),
        "{} vs {}",
        first.len(),
        sealed.len()
    );
    // Replayed from elsewhere: refused, within the request's size; from its sender (a
    // retransmission), the first reply again.
    let replayed = send_from(&mut p, "10.9.8.7:4000", &sealed);
    assert_eq!(error_code(&replayed), Some(ErrorCode::Unauthorized));
    assert!(replayed.len() <= sealed.len());
    // From its sender's address (a retransmission, or a capture replayed from that forged
    // address: the same datagram), the first reply again, as often as a client retransmits
    // one request, then no more than the request's size.
    for _ in 0..RESENDS {
        assert_eq!(send_from(&mut p, "127.0.0.1:5555", &sealed), first);
    }
    for _ in 0..100 {
        let r = send_from(&mut p, "127.0.0.1:5555", &sealed);
        assert_eq!(error_code(&r), Some(ErrorCode::Unauthorized));
        assert!(r.len() <= sealed.len(), "{} > {}", r.len(), sealed.len());
    }
    // A capture replayed to a restarted server: its refusal, with the detail the client
    // reads, is no larger than the capture.
    let restarted = &mut plane();
    restarted.gate = std::mem::replace(
        &mut restarted.gate,
        Gate::new(Keyring::new(vec![admin()]).unwrap(), 1),
    )
    .serving_since(wall_clock_ns() + 1_000_000_000);
    let r = send_from(restarted, "127.0.0.1:5555", &sealed);
    assert!(r.len() <= sealed.len(), "{} > {}", r.len(), sealed.len());
    match Message::parse(&r).unwrap().body {
        Body::Error(e) => assert_eq!(e.detail, naam_core::auth::Refusal::BeforeStart.detail()),
        other => panic!("{other:?}"),
    }
}

/// A principal's REGISTERs are verified and compiled at most 20 a second (probe 11: a flood
/// of them held the control thread, and every other principal's requests waited ~100 ms);
/// past it, `busy` with the wait, before the object is looked at; another principal's are
/// not held back.
#[test]
fn registrations_are_limited_per_principal() {
    let mut p = plane();
    let register = |p: &mut ControlPlane, key: &Credential, id: u64| -> Option<ErrorCode> {
        let mut req = vec![0u8; 256];
        let n = Message::new(
            id,
            0,
            Body::Register(naam_core::wire::RegisterRepr {
                name: "junk",
                tenant: 1,
                class: 7,
                read_only: true,
                section: None,
                object: b"not an ELF object",
            }),
        )
        .emit(&mut req)
        .unwrap();
        req.truncate(n);
        let sealed = key.seal(wall_clock_ns() + id, &req).unwrap();
        error_code(&send(p, &sealed))
    };
    // The first 20 are looked at (and refused as no program), the rest told to wait.
    let codes: Vec<_> = (0..30)
        .map(|i| register(&mut p, &tenant(), 100 + i))
        .collect();
    let looked_at = codes
        .iter()
        .filter(|c| **c == Some(ErrorCode::InvalidProgram))
        .count();
    assert!((20..=21).contains(&looked_at), "{codes:?}");
    assert!(
        codes[25..].iter().all(|c| *c == Some(ErrorCode::Busy)),
        "{codes:?}"
    );
    // Another principal has its own budget.
    assert_eq!(
        register(&mut p, &admin(), 200),
        Some(ErrorCode::InvalidProgram)
    );
    // And it comes back with time.
    std::thread::sleep(std::time::Duration::from_millis(120));
    assert_eq!(
        register(&mut p, &tenant(), 300),
        Some(ErrorCode::InvalidProgram)
    );
}

#[test]
fn the_register_budget_refills_at_its_rate_and_says_the_wait() {
    let mut b = RegisterBudget::default();
    let who = Principal::Tenant(3);
    for _ in 0..REGISTERS_PER_S {
        assert_eq!(b.take(who, 1_000), Ok(()));
    }
    let wait = b.take(who, 1_000).unwrap_err();
    assert_eq!(
        wait,
        (1_000_000 / REGISTERS_PER_S) as u32,
        "one REGISTER's time, in µs"
    );
    // Half of it later: still waiting, half as long; all of it: one more.
    let half = 1_000 + u64::from(wait) * 500;
    assert_eq!(b.take(who, half), Err(wait / 2));
    assert_eq!(b.take(who, 1_000 + u64::from(wait) * 1_000), Ok(()));
    assert!(b.take(who, 1_000 + u64::from(wait) * 1_000).is_err());
}

/// Whose business a counter is, for a tenant's STATS: any name (the host agent's are relayed
/// as they come) gets an answer, never a panic.
#[test]
fn counter_owners_are_found_through_prefixes_and_odd_names_are_nobodys() {
    use super::counters::{owner, Owners};
    for (name, who) in [
        ("w3.tenant.7.refused", Some(7)),
        ("total.tenant.2.run_ns", Some(2)),
        ("mica.log_tail_bytes", Some(naam_handlers::bundled::TENANT)),
        ("host.mica.x", Some(naam_handlers::bundled::TENANT)),
        ("dp.workers", None),
        ("offload.99.nic_steps", None),
        ("class.9.placement", None),
        ("wé.tenant.1.x", None),
        ("é", None),
        ("", None),
        ("tenant.x.refused", None),
        ("decision.0.cé.nic-host.X", None),
    ] {
        assert_eq!(owner(name, &Owners::default()), who, "{name}");
    }
}

/// The control port serves principals in turn (probe 16: one tenant's burst of STATS held
/// another's DESCRIBE until it timed out). What would open is queued under its principal;
/// anything else is answered as it arrives; a principal with a full queue is told `busy`
/// and how long to wait, no larger than what it sent.
#[test]
fn requests_are_queued_per_principal_and_served_in_turn() {
    let mut p = plane();
    let sealed_at = |key: &Credential, id: u64, nonce: u64| {
        let mut req = vec![0u8; 256];
        let n = Message::new(id, 0, Body::Stats(PageRequestRepr { start: 0, max: 0 }))
            .emit(&mut req)
            .unwrap();
        req.truncate(n);
        key.seal(nonce, &req).unwrap()
    };
    let stats = |key: &Credential, id: u64| sealed_at(key, id, wall_clock_ns() + id);
    let mut out = vec![0u8; naam_core::wire::MAX_DATAGRAM];
    let from: SocketAddr = "127.0.0.1:5555".parse().unwrap();
    let (t, a) = (tenant(), admin());
    // The tenant's burst arrives first: queued, then refused past the queue's bound.
    let first = stats(&t, 100);
    assert_eq!(p.admit(from, &first, naam_link::now_ns(), &mut out), 0);
    for i in 1..intake::QUEUED_MAX as u64 {
        assert_eq!(
            p.admit(from, &stats(&t, 100 + i), naam_link::now_ns(), &mut out),
            0
        );
    }
    let sealed = stats(&t, 200);
    let n = p.admit(from, &sealed, naam_link::now_ns(), &mut out);
    assert!(n > 0 && n <= sealed.len(), "{n}");
    match Message::parse(&out[..n]).unwrap().body {
        Body::Error(e) => {
            assert_eq!(e.code, ErrorCode::Busy);
            assert!(e.retry_after_us.is_some_and(|us| us >= 1_000), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    // A retransmission of a waiting request is left to it (one answer, not two).
    assert_eq!(p.admit(from, &first, naam_link::now_ns(), &mut out), 0);
    // The admin's request behind the burst is queued in its own name, and served second.
    assert_eq!(
        p.admit(from, &stats(&a, 300), naam_link::now_ns(), &mut out),
        0
    );
    // Not sealed, sealed with the tenant's key id but not its key, or stale: answered at
    // once, never queued in the tenant's name.
    let forged = Credential::new(1, Principal::Tenant(1), [1; 32]);
    let stale = sealed_at(&t, 500, wall_clock_ns() - 2 * naam_core::auth::WINDOW_NS);
    for req in [
        stats(&forged, 400),
        stale,
        b"junk that is no request".to_vec(),
    ] {
        let n = p.admit(from, &req, naam_link::now_ns(), &mut out);
        if n > 0 {
            assert_eq!(error_code(&out[..n]), Some(ErrorCode::Unauthorized));
        }
    }
    assert_eq!(p.waiting(), intake::QUEUED_MAX + 1);
    let mut ids = Vec::new();
    let mut copies_seen = None;
    while p.serve_next(&mut out, |reply, _| {
        let m = Message::parse(reply).unwrap();
        let Body::StatsReply(page) = m.body else {
            panic!("{:?}", m.body)
        };
        if m.request_id == 300 {
            let e = page.entries.iter().find(|e| e.name == "ctl.queued_copies");
            copies_seen = e.map(|e| e.value);
        }
        ids.push(m.request_id);
    }) {}
    // Counted, and shown by a STATS served from the queue.
    assert_eq!(copies_seen, Some(1));
    assert_eq!(ids.len(), intake::QUEUED_MAX + 1);
    assert_eq!(&ids[..3], &[100, 300, 101], "the admin's is served second");
    // Served, the first is a repeat: its remembered reply, answered at once, never queued
    // again (a capture replayed cannot fill the tenant's queue).
    let n = p.admit(from, &first, naam_link::now_ns(), &mut out);
    assert!(n > 0 && error_code(&out[..n]).is_none());
    assert_eq!(p.waiting(), 0);
    let c: std::collections::HashMap<_, _> = p.counters().into_iter().collect();
    assert_eq!(c["ctl.queue_full"], 1);
    assert_eq!(c["ctl.queued_copies"], 1);
    assert_eq!(c["ctl.error.busy"], 1);
    assert_eq!(
        c["ctl.error.unauthorized"], 2,
        "the forged one, the stale one"
    );
    assert_eq!(c["auth.refused.expired"], 1);
    assert_eq!(c["ctl.ignored"], 1, "the junk");
}

/// While the host agent's offloads are being added after a (re)connection, LIST would tell
/// a client they are gone: it is answered `busy` with the wait, as is the FETCH of one of
/// them; the FETCH of another offload and the other requests are served.
#[test]
fn list_and_the_fetch_of_an_offload_being_added_wait_for_the_re_add() {
    let mut p = plane();
    p.readding.push_back(held_by_host(40));
    let ask = |p: &mut ControlPlane, id: u64, body: Body<'_>| {
        let mut req = vec![0u8; 256];
        let n = Message::new(id, 0, body).emit(&mut req).unwrap();
        req.truncate(n);
        let sealed = admin().seal(wall_clock_ns() + id, &req).unwrap();
        let reply = send(p, &sealed);
        match Message::parse(&reply).unwrap().body {
            Body::Error(e) => Some((e.code, e.retry_after_us)),
            _ => None,
        }
    };
    let list = Body::List(PageRequestRepr { start: 0, max: 0 });
    let fetch = |id| Body::Fetch(naam_core::wire::FetchRepr { id, start: 0 });
    let busy = ask(&mut p, 1, list).unwrap();
    assert_eq!(busy.0, ErrorCode::Busy);
    assert!(busy.1.is_some_and(|us| us >= 1_000), "{busy:?}");
    assert_eq!(
        ask(&mut p, 2, fetch(40)).map(|e| e.0),
        Some(ErrorCode::Busy)
    );
    assert_eq!(
        ask(&mut p, 3, fetch(39)).map(|e| e.0),
        Some(ErrorCode::UnknownOffload),
        "another id is answered as usual"
    );
    assert_eq!(
        ask(&mut p, 4, Body::Stats(PageRequestRepr { start: 0, max: 0 })),
        None
    );
    let c: std::collections::HashMap<_, _> = p.counters().into_iter().collect();
    assert_eq!(c["ctl.offloads_readding"], 1);
    // Once added (or given up), LIST answers.
    p.readding.clear();
    assert_eq!(ask(&mut p, 5, list), None);
}

/// From the control socket, a LIST during the re-add is held (not refused: the CLI's
/// commands read LIST first, and gave up on `busy` after ~0.6 s, probe 19) and answered once
/// the re-add ends; the other requests are served meanwhile.
#[test]
fn a_list_from_the_socket_during_the_re_add_is_answered_when_it_ends() {
    let mut p = plane();
    p.readding.push_back(held_by_host(40));
    let sealed = |id: u64, body: Body<'_>| {
        let mut req = vec![0u8; 256];
        let n = Message::new(id, 0, body).emit(&mut req).unwrap();
        req.truncate(n);
        admin().seal(wall_clock_ns() + id, &req).unwrap()
    };
    let list = sealed(1, Body::List(PageRequestRepr { start: 0, max: 0 }));
    let stats = sealed(2, Body::Stats(PageRequestRepr { start: 0, max: 0 }));
    let mut out = vec![0u8; naam_core::wire::MAX_DATAGRAM];
    let from: SocketAddr = "127.0.0.1:5555".parse().unwrap();
    let now = naam_link::now_ns();
    assert_eq!(p.admit(from, &list, now, &mut out), 0, "held, not refused");
    assert_eq!(
        p.admit(from, &list, now, &mut out),
        0,
        "its retransmission too"
    );
    assert_eq!(p.admit(from, &stats, now, &mut out), 0);
    let mut served = Vec::new();
    let mut serve = |p: &mut ControlPlane| {
        p.serve_next(&mut out, |reply, _| {
            let m = Message::parse(reply).unwrap();
            served.push((m.request_id, matches!(m.body, Body::Error(_))));
        })
    };
    assert_eq!(p.waiting(), 1, "the STATS only");
    assert!(serve(&mut p));
    assert!(!serve(&mut p), "the LIST waits for the re-add");
    p.readding.clear();
    assert_eq!(p.waiting(), 1);
    assert!(serve(&mut p));
    assert!(!serve(&mut p));
    assert_eq!(
        served,
        [(2, false), (1, false)],
        "one answer each, no error"
    );
}

/// A FETCH of the re-add that the host agent does not answer (stalled: a stall does not
/// reconnect, so an offload marked unserved then would stay so) is tried again later; only
/// when it keeps failing is the offload listed as not served.
#[test]
fn an_offload_the_unreachable_host_agent_did_not_give_is_fetched_again_later() {
    let mut p = plane(); // its host agent's control socket does not exist
    p.readding.push_back(held_by_host(41));
    p.shared.pending.adding([41], p.readd_wait_ns());
    for _ in 0..host::READD_TRIES {
        assert_eq!(p.readd(u64::MAX), 0);
        assert!(p.readding(), "still to add");
        assert!(p.unserved.is_empty());
        // Its active messages are told to retry meanwhile.
        assert!(matches!(
            p.shared.pending.get(41),
            Some(super::super::shared::Pending::Adding { .. })
        ));
    }
    assert_eq!(p.readd(u64::MAX), 0);
    assert!(!p.readding());
    assert_eq!(
        p.shared.pending.get(41),
        None,
        "given up: unknown from now on"
    );
    assert_eq!(
        p.unserved
            .iter()
            .map(|o| (o.id, o.served))
            .collect::<Vec<_>>(),
        [(41, false)]
    );
}

/// A reconciliation whose LIST the host agent did not answer (probe 21: stopped right as the
/// dataplane started) leaves what an earlier listing said pending and every other run-time
/// id possible (`host_unavailable`, retry) until one succeeds; it used to clear the pending
/// ids first (their messages were answered `unknown_offload` while the pages came).
#[test]
fn a_listing_that_fails_leaves_the_run_time_ids_pending() {
    use super::super::shared::Pending;
    let mut p = plane(); // its host agent's control socket does not exist
    p.shared.pending.adding([40], 1_000_000);
    assert_eq!(p.reconcile_with_host(), None);
    assert!(matches!(
        p.shared.pending.get(40),
        Some(Pending::Adding { .. })
    ));
    assert_eq!(p.shared.pending.get(41), Some(Pending::Unlisted));
    assert_eq!(p.shared.pending.get(5), None, "a bundled id is known");
}

/// An offload the host agent holds, as its LIST gives it.
fn held_by_host(id: u32) -> OffloadInfo {
    OffloadInfo {
        id,
        name: "kept".into(),
        tenant: 1,
        class: 2,
        read_only: true,
        insn_count: 3,
        worst_case: 3,
        served: true,
    }
}
