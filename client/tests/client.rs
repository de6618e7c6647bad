//! The client library against a real deployment (see `common`). What only the client decides
//! (retransmission, refusals, timeouts, leases) is tested exactly, with simulated time, in
//! `endpoint.rs`; loss against real processes in `real_client.rs`.

mod common;

use common::{reply_to, scripted_server, start_server, start_server_n};
use naam_client::bundled::{self, region};
use naam_client::{
    Client, ClientConfig, ClientError, ExecMode, RegisterOptions, Response, ServerAddr,
    ShardedClient, Shards,
};
use naam_core::wire::{AmStatus, ErrorCode, Location, OpBody, RemoteOp};
use std::collections::HashMap;
use std::time::Duration;

fn record_args(offset: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&region::RECORD.to_le_bytes());
    a[8..].copy_from_slice(&offset.to_le_bytes());
    a
}

fn client_of(s: &common::TestServer, cfg: ClientConfig) -> Client {
    let mut c = Client::with_servers(&[ServerAddr::new(s.data, Some(s.control))], s.sealed(cfg))
        .expect("client");
    c.describe(0, "record").expect("describe record");
    bundled::load_local(&mut c).expect("bundled handlers load locally");
    c
}

fn quick() -> ClientConfig {
    ClientConfig {
        // Long enough that a busy machine does not cause spurious retransmissions, which
        // the fault-injection tests count exactly.
        timeout: Duration::from_millis(100),
        max_retries: 4,
        ..ClientConfig::default()
    }
}

#[test]
fn call_runs_the_offload_at_the_server() {
    let s = start_server();
    let mut c = client_of(&s, quick());
    let o = bundled::RECORD;
    let a = c
        .call_on(0, o.id, o.class, &record_args(128), ExecMode::Server)
        .unwrap();
    assert_eq!(a.status, AmStatus::Done);
    assert_ne!(a.executed_at, Location::Client);
    assert_eq!(a.output.len(), 8);
    let b = c
        .call_on(0, o.id, o.class, &record_args(192), ExecMode::Server)
        .unwrap();
    assert_ne!(a.output, b.output, "different records, different digests");
    // Too-short arguments: the handler aborts with code 1.
    let r = c
        .call_on(0, o.id, o.class, &[0u8; 4], ExecMode::Server)
        .unwrap();
    assert_eq!(r.status, AmStatus::Aborted(1));
    assert!(matches!(
        r.into_output(),
        Err(ClientError::Aborted {
            offload: 5,
            code: 1
        })
    ));
}

#[test]
fn local_execution_gives_the_server_result() {
    let s = start_server();
    let mut c = client_of(&s, quick());
    let o = bundled::RECORD;
    for off in [0u64, 64, 640, 4096] {
        let server = c
            .call_on(0, o.id, o.class, &record_args(off), ExecMode::Server)
            .unwrap();
        let local = c
            .call_on(0, o.id, o.class, &record_args(off), ExecMode::Local)
            .unwrap();
        assert_eq!(local.executed_at, Location::Client);
        assert_eq!(local.output, server.output, "offset {off}");
        assert_eq!(local.steps, server.steps);
    }
    // A local run's ops are checked by the server: an offset past the region is refused.
    let err = c
        .call_on(0, o.id, o.class, &record_args(1 << 40), ExecMode::Local)
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::OutOfBounds), "{err}");
}

#[test]
fn local_execution_needs_the_program_and_keys() {
    let s = start_server();
    let mut c = Client::with_servers(
        &[ServerAddr::new(s.data, Some(s.control))],
        s.sealed(ClientConfig::default()),
    )
    .unwrap();
    let err = c
        .call_on(0, 5, 5, &record_args(0), ExecMode::Local)
        .unwrap_err();
    assert!(
        matches!(err, ClientError::NotLocal { offload: 5, .. }),
        "{err}"
    );
    bundled::load_local(&mut c).unwrap();
    let err = c
        .call_on(0, 5, 5, &record_args(0), ExecMode::Local)
        .unwrap_err();
    assert!(
        matches!(err, ClientError::NotLocal { .. }),
        "no keys yet: {err}"
    );
}

#[test]
fn one_sided_ops_read_write_cas_faa() {
    let s = start_server();
    let mut c = client_of(&s, quick());
    let r = region::RECORD;
    c.write(0, r, 1024, b"hello, one-sided").unwrap();
    assert_eq!(c.read(0, r, 1024, 16).unwrap(), b"hello, one-sided");
    c.write(0, r, 2048, &7u64.to_le_bytes()).unwrap();
    assert_eq!(c.faa(0, r, 2048, 5).unwrap(), 7);
    assert_eq!(c.cas(0, r, 2048, 12, 100).unwrap(), 12, "CAS saw 7 + 5");
    assert_eq!(
        c.cas(0, r, 2048, 12, 200).unwrap(),
        100,
        "failed CAS reports the value"
    );
    // Four ops in one request, results in order.
    let key = c.region_key(0, r).unwrap();
    let op = |offset, body| RemoteOp {
        region: r,
        key,
        offset,
        body,
    };
    let res = c
        .ops(
            0,
            &[
                op(3000, OpBody::Write { data: b"abcd" }),
                op(3000, OpBody::Read { len: 4 }),
                op(2048, OpBody::Faa { addend: 1 }),
                op(2048, OpBody::Read { len: 8 }),
            ],
        )
        .unwrap();
    assert_eq!(res.len(), 4);
    assert_eq!(res[1].data, b"abcd");
    assert_eq!(res[2].previous, 100);
    assert_eq!(res[3].data, 101u64.to_le_bytes());
    // Errors are per op: a wrong key, an out-of-bounds read.
    let bad = RemoteOp {
        key: key ^ 1,
        ..op(0, OpBody::Read { len: 8 })
    };
    let res = c
        .ops(0, &[bad, op(u64::MAX - 4, OpBody::Read { len: 8 })])
        .unwrap();
    assert_eq!(res[0].error, Some(ErrorCode::BadKey));
    assert_eq!(res[1].error, Some(ErrorCode::OutOfBounds));
    let err = c.read(0, 99, 0, 8).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoSuchRegion), "{err}");
    assert!(c.ops(0, &[]).is_err(), "no ops is not a request");
}

#[test]
fn many_requests_in_flight_on_one_thread() {
    let s = start_server();
    let mut c = client_of(&s, quick());
    let o = bundled::RECORD;
    let mut want = HashMap::new();
    for i in 0..64u64 {
        let off = i * 64;
        let expect = c
            .call_on(0, o.id, o.class, &record_args(off), ExecMode::Server)
            .unwrap()
            .output;
        want.insert(off, expect);
    }
    let mut tickets = HashMap::new();
    for round in 0..4 {
        for i in 0..64u64 {
            let off = i * 64;
            let mode = if round % 2 == 0 {
                ExecMode::Server
            } else {
                ExecMode::Local
            };
            let t = c
                .submit_call_on(0, o.id, o.class, &record_args(off), mode)
                .unwrap();
            assert!(tickets.insert(t, off).is_none(), "tickets are unique");
        }
    }
    assert!(c.outstanding() > 0);
    let mut done = 0;
    while let Some(comp) = c.poll(Some(Duration::from_secs(5))).unwrap() {
        let off = tickets
            .remove(&comp.ticket)
            .expect("each ticket completes once");
        match comp.result.unwrap() {
            Response::Am(r) => assert_eq!(r.output, want[&off]),
            other => panic!("unexpected {other:?}"),
        }
        done += 1;
    }
    assert_eq!(done, 256);
    assert!(tickets.is_empty());
    assert_eq!(c.outstanding(), 0);
}

#[test]
fn polling_without_waiting_still_receives() {
    let s = start_server();
    // A retransmission timeout far past what the replies take, even on a loaded machine
    // (CI once saw 17 retransmissions at `quick`'s 100 ms, with 11 deployments starting on
    // 2 cores): a retransmission then means the polls did not take a reply that had come.
    let patient = ClientConfig {
        timeout: Duration::from_secs(2),
        ..quick()
    };
    let mut c = client_of(&s, patient);
    let o = bundled::RECORD;
    let mut left = 20;
    for i in 0..20u64 {
        let mode = if i % 2 == 0 {
            ExecMode::Server
        } else {
            ExecMode::Local
        };
        c.submit_call_on(0, o.id, o.class, &record_args(i * 64), mode)
            .unwrap();
    }
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while left > 0 && std::time::Instant::now() < give_up {
        if let Some(comp) = c.poll(Some(Duration::ZERO)).unwrap() {
            comp.result.unwrap();
            left -= 1;
        }
    }
    assert_eq!(left, 0, "zero-timeout polls completed every request");
    assert_eq!(
        c.stats().retransmits,
        0,
        "and without waiting for retransmissions"
    );
}

#[test]
fn register_list_call_unregister() {
    let s = start_server();
    let mut c = client_of(&s, quick());
    let object = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../handlers/test/three_step.bpf.o"
    ))
    .unwrap();
    let opts = RegisterOptions {
        name: "three_step".into(),
        section: None,
        class: 6,
        read_only: false,
    };
    let id = c.register(0, &object, &opts).unwrap();
    assert!(id >= bundled::FIRST_DYNAMIC_ID);
    let list = c.list(0).unwrap();
    let e = list.iter().find(|e| e.id == id).expect("listed");
    assert_eq!(
        (e.name.as_str(), e.class, e.read_only),
        ("three_step", 6, false)
    );
    assert!(list.iter().any(|e| e.id == bundled::RECORD.id));
    // args: region, pad, offset, add. The handler reads v, CASes v -> v + add, replies.
    let mut args = [0u8; 24];
    args[..4].copy_from_slice(&region::RECORD.to_le_bytes());
    args[8..16].copy_from_slice(&4000u64.to_le_bytes());
    args[16..].copy_from_slice(&3u64.to_le_bytes());
    c.write(0, region::RECORD, 4000, &39u64.to_le_bytes())
        .unwrap();
    let out = c.call_on(0, id, 6, &args, ExecMode::Server).unwrap().output;
    assert_eq!(&out[..8], 39u64.to_le_bytes());
    // The same handler, run here, sees the server's update and makes its own.
    let out = c.call_on(0, id, 6, &args, ExecMode::Local).unwrap().output;
    assert_eq!(&out[..8], 42u64.to_le_bytes());
    assert_eq!(
        c.read(0, region::RECORD, 4000, 8).unwrap(),
        45u64.to_le_bytes()
    );
    // Wrong class for the offload: refused.
    let err = c.call_on(0, id, 7, &args, ExecMode::Server).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    c.unregister(0, id).unwrap();
    assert!(!c.list(0).unwrap().iter().any(|e| e.id == id));
    let err = c.call_on(0, id, 6, &args, ExecMode::Server).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownOffload), "{err}");
    let err = c.unregister(0, id).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownOffload), "{err}");
    // A bundled handler registered again gets a new id and runs like the original.
    let again = c.register_bundled(0, bundled::RECORD, "record2").unwrap();
    assert!(again >= bundled::FIRST_DYNAMIC_ID);
    let a = c.call_on(
        0,
        again,
        bundled::RECORD.class,
        &record_args(64),
        ExecMode::Server,
    );
    let b = c.call_on(
        0,
        5,
        bundled::RECORD.class,
        &record_args(64),
        ExecMode::Server,
    );
    assert_eq!(a.unwrap().output, b.unwrap().output);
    let err = c.register(0, b"not an ELF object", &opts).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidProgram), "{err}");
}

#[test]
fn describe_and_stats() {
    let s = start_server();
    let mut c = Client::with_servers(
        &[ServerAddr::new(s.data, Some(s.control))],
        s.sealed(ClientConfig::default()),
    )
    .unwrap();
    let p = c.describe(0, "record").unwrap();
    let region = p.iter().find(|(k, _)| k == "region").unwrap().1;
    assert_eq!(region, region::RECORD as u64);
    assert!(
        c.region_key(0, region::RECORD).is_some(),
        "keys are remembered"
    );
    let err = c.describe(0, "no-such-app").unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownApp), "{err}");
    let stats = c.server_stats(0).unwrap();
    assert!(!stats.is_empty());
}

#[test]
fn sharded_client_spreads_keys_and_keeps_each_on_one_server() {
    let a = start_server_n(0);
    let b = start_server_n(1);
    let servers = [
        ServerAddr::new(a.data, Some(a.control)),
        ServerAddr::new(b.data, Some(b.control)),
    ];
    let mut sc = ShardedClient::connect(&servers, a.sealed(quick())).unwrap();
    for s in 0..2 {
        sc.describe(s, "record").unwrap();
    }
    // An offload registered on every server, with one id, callable on each.
    let id = register_record_everywhere(&mut sc);
    for s in 0..2 {
        let r = sc.call_on(
            s,
            id,
            bundled::RECORD.class,
            &record_args(0),
            ExecMode::Server,
        );
        assert_eq!(r.unwrap().status, AmStatus::Done, "server {s}");
    }
    sc.unregister_all(id).unwrap();
    for s in 0..2 {
        assert!(!sc.list(s).unwrap().iter().any(|e| e.id == id));
    }
    // The words before.
    let word = |sc: &mut ShardedClient, s: usize, i: u64| {
        let w = sc.read(s, region::RECORD, 8192 + 8 * i, 8).unwrap();
        u64::from_le_bytes(w.try_into().unwrap())
    };
    let before: Vec<[u64; 2]> = (0..200u64)
        .map(|i| [word(&mut sc, 0, i), word(&mut sc, 1, i)])
        .collect();
    let mut per_server = [0u64; 2];
    for i in 0..200u64 {
        let key = format!("key-{i}");
        let s = sc.server_for(key.as_bytes());
        assert_eq!(s, sc.server_for(key.as_bytes()));
        per_server[s] += 1;
        // Count the key on its server: one FAA per key on word i.
        sc.faa(s, region::RECORD, 8192 + 8 * i, 1).unwrap();
    }
    assert!(per_server.iter().all(|&n| n > 50), "{per_server:?}");
    for i in 0..200u64 {
        let key = format!("key-{i}");
        let owner = sc.server_for(key.as_bytes());
        for (s, &initial) in before[i as usize].iter().enumerate() {
            let want = if s == owner {
                initial.wrapping_add(1)
            } else {
                initial
            };
            assert_eq!(word(&mut sc, s, i), want, "key {i} server {s}");
        }
    }
}

fn register_record_everywhere(sc: &mut ShardedClient) -> u32 {
    let o = bundled::RECORD;
    let opts = RegisterOptions {
        name: "record-copy".into(),
        section: Some(o.section.into()),
        class: o.class,
        read_only: true,
    };
    let id = sc
        .register_all(naam_handlers::RECORD_OBJECT, &opts)
        .unwrap();
    assert!(id >= bundled::FIRST_DYNAMIC_ID);
    id
}

/// A server (here a thread with a UDP socket) that answers every LIST, STATS and FETCH with
/// pages that never end: the probe of 2026-12-06 made `naam offload ls` loop forever and
/// `naam stats` grow to gigabytes this way. The client now stops with an error.
#[test]
fn a_server_whose_pages_never_end_is_refused_not_followed_forever() {
    use naam_core::wire::{
        Body, EntryList, FetchReplyRepr, KvEntry, KvListRepr, ListReplyRepr, Message,
    };
    let server = scripted_server(|d| {
        let req = Message::parse(d).ok()?;
        let entries = [KvEntry {
            name: "x",
            value: 1,
        }];
        let body = match req.body {
            // An empty page that says "more" from the start again.
            Body::List(_) => Body::ListReply(ListReplyRepr {
                more: true,
                next: 0,
                entries: EntryList::from_slice(&[]),
            }),
            // One entry a page, always one further.
            Body::Stats(p) => Body::StatsReply(KvListRepr {
                more: true,
                next: p.start + 1,
                entries: EntryList::from_slice(&entries),
            }),
            // A program of 4 GiB, eight bytes at a time.
            Body::Fetch(f) => Body::FetchReply(FetchReplyRepr {
                id: f.id,
                total: u32::MAX,
                start: f.start,
                digest: 7,
                bytes: &[0; 8],
            }),
            _ => return None,
        };
        Some(reply_to(&req, body))
    });
    let addr = server.addr;
    let mut c = Client::with_servers(&[ServerAddr::new(addr, Some(addr))], quick()).unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(c.list(0), Err(ClientError::EndlessPages { .. })));
    let e = c.server_stats(0).unwrap_err();
    assert!(matches!(e, ClientError::EndlessPages { .. }), "{e}");
    let e = c.fetch_program(0, 16).unwrap_err();
    assert!(matches!(e, ClientError::TooLarge { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

/// A server that answers only with what matches nothing (malformed datagrams, replies to
/// other ids): the timeout says that something did answer, instead of "nothing answered (is
/// a server there?)" (the second probe of 2026-12-06).
#[test]
fn a_timeout_says_when_the_server_answered_only_with_what_matched_nothing() {
    let server = scripted_server(|_| Some(b"\x00not a naam reply".to_vec()));
    let addr = server.addr;
    let mut c = Client::with_servers(&[ServerAddr::new(addr, Some(addr))], quick()).unwrap();
    let e = c.server_stats(0).unwrap_err();
    match &e {
        ClientError::Timeout { unmatched, .. } => assert!(*unmatched >= 1, "{e}"),
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("came from its address"), "{e}");
}
