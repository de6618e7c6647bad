//! Issue 12 item 4 for the host: the host agent's worker loop allocates nothing per message.
//!
//! The agent runs in this process (`HostAgent::start`), so a counting global allocator sees
//! its worker threads. Every thread this test starts itself (the test thread, which feeds
//! the rings, and the thread running the agent's control loop) is exempt; the only other
//! threads are the host workers and libtest's idle main thread. This file holds one test, so
//! no other test's allocations can be counted.

mod support;

use naam_core::wire::{AmStatus, Body, Location, Message};
use naam_host_agent::{Config, HostAgent};
use naam_link::{ConnectOptions, Link, ShmLink, ShmQp, MSG_MAX};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{am, entry, record_args, SEED, TENANT};

struct CountingAlloc;

/// Counting is on only while this is set (after the warm-up).
static ARMED: AtomicBool = AtomicBool::new(false);
/// Allocations (and reallocations) by threads that are not exempt, while armed.
static COUNTED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static EXEMPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count() {
    // `try_with`: a thread being torn down has no locals left; count its allocations.
    if ARMED.load(Ordering::Relaxed) && !EXEMPT.try_with(|e| e.get()).unwrap_or(false) {
        COUNTED.fetch_add(1, Ordering::Relaxed);
    }
}

fn exempt_this_thread() {
    EXEMPT.with(|e| e.set(true));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// contract of `GlobalAlloc` holds as it does for `System`; the counting touches a static
// atomic and a const-initialised thread-local, neither of which allocates.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Keeps up to `window` entries in flight on `qp` until every entry of `entries` (cycled to
/// `n`) is answered; checks each reply with `check`. Returns the allocations counted
/// meanwhile when `armed`.
fn drive(qp: &mut ShmQp, entries: &[Vec<u8>], n: usize, armed: bool, check: &dyn Fn(&[u8])) -> u64 {
    const WINDOW: usize = 64;
    let mut buf = vec![0u8; MSG_MAX];
    let (mut sent, mut answered) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    COUNTED.store(0, Ordering::Relaxed);
    ARMED.store(armed, Ordering::Relaxed);
    while answered < n {
        while sent < n && sent - answered < WINDOW {
            match qp.send(&entries[sent % entries.len()]) {
                Ok(()) => sent += 1,
                Err(naam_link::LinkError::Full { .. }) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        match qp.recv(&mut buf) {
            Ok(Some(r)) => {
                check(&buf[naam_link::REPLY_PREFIX..r.len]);
                answered += 1;
            }
            Ok(None) => std::hint::spin_loop(),
            Err(e) => panic!("reply ring: {e}"),
        }
        assert!(Instant::now() < deadline, "{answered} of {n} answered");
    }
    ARMED.store(false, Ordering::Relaxed);
    COUNTED.load(Ordering::Relaxed)
}

fn done(d: &[u8]) -> Vec<u8> {
    match Message::parse(d).expect("reply parses").body {
        Body::AmReply(r) => {
            assert_eq!((r.status, r.executed_at), (AmStatus::Done, Location::Host));
            r.output.to_vec()
        }
        other => panic!("expected an AM reply, got {other:?}"),
    }
}

#[test]
fn the_host_worker_allocates_nothing_per_message() {
    const N: usize = 10_000;
    exempt_this_thread();
    // The counter sees the allocations of a thread that is not exempt (else a zero below
    // would prove nothing).
    let probe = std::thread::spawn(|| {
        ARMED.store(true, Ordering::Relaxed);
        drop(std::hint::black_box(Vec::<u8>::with_capacity(64)));
        ARMED.store(false, Ordering::Relaxed);
    });
    probe.join().unwrap();
    assert!(COUNTED.load(Ordering::Relaxed) >= 1, "the counter counts");

    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        run_dir: dir.path().join("run"),
        workers: 1,
        nic_workers: 1,
        arena_mb: Some(8),
        mica_keys: 1024,
        btree_keys: 1024,
        records: 64,
        seed: SEED,
        hugetlb: false,
        ..Config::default()
    };
    let mut agent = HostAgent::start(cfg).expect("host agent starts");
    let param = |app: &str, name: &str| {
        agent
            .app_params(app)
            .and_then(|p| p.iter().find(|(k, _)| k == name))
            .unwrap_or_else(|| panic!("{app} has no {name}"))
            .1
    };
    let g = naam_handlers::mica::MicaGeometry {
        index_region: param("mica", "index_region") as u32,
        log_region: param("mica", "log_region") as u32,
        bucket_count: param("mica", "buckets"),
        overflow_count: param("mica", "overflow"),
        log_size: param("mica", "log_size"),
        lossless: false,
    };
    let btree_region = param("btree", "region") as u32;
    let record_region = param("record", "region") as u32;
    let link_path = agent.config().link_socket();
    let stop = Arc::new(AtomicBool::new(false));
    let control = std::thread::spawn({
        let stop = stop.clone();
        move || {
            exempt_this_thread();
            agent.run(&stop).expect("control loop");
            agent
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let link = loop {
        match ShmLink::connect(&link_path, ConnectOptions::default()) {
            Ok(l) => break l,
            Err(e) => assert!(Instant::now() < deadline, "link connect: {e}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut qp = link.qp(0).unwrap();

    // 64 distinct requests of each bundled kind, each one entry (token + datagram).
    let keys: Vec<[u8; 16]> = (0..64)
        .map(|i| naam_handlers::mica::key_for(SEED, i))
        .collect();
    let build = |offload: u32, class: u16, args: &dyn Fn(u64) -> Vec<u8>| -> Vec<Vec<u8>> {
        (0..64u64)
            .map(|i| entry(i, &am(i, offload, class, TENANT, &args(i))))
            .collect()
    };
    let put = |i: u64| {
        naam_handlers::mica::MicaArgs::put(&g, &keys[i as usize], b"a value of some bytes")
            .unwrap()
            .as_bytes()
            .to_vec()
    };
    let get = |i: u64| {
        naam_handlers::mica::MicaArgs::get(&g, &keys[i as usize])
            .unwrap()
            .as_bytes()
            .to_vec()
    };
    let lookup = |i: u64| {
        naam_handlers::btree::Args::lookup(btree_region, naam_host_agent::apps::Btree::key(i))
            .to_bytes()
            .to_vec()
    };
    let record = |i: u64| record_args(record_region, i * 64);
    let kinds: [(&str, Vec<Vec<u8>>); 4] = [
        ("mica_put", build(1, 1, &put)),
        ("mica_get", build(0, 0, &get)),
        ("btree_lookup", build(3, 3, &lookup)),
        ("record", build(5, 5, &record)),
    ];
    let check = |d: &[u8]| assert!(!done(d).is_empty(), "an output");
    // Warm-up: every kind through the worker, its VM pool and its counters.
    for (_, entries) in &kinds {
        drive(&mut qp, entries, 500, false, &check);
    }
    for (name, entries) in &kinds {
        let allocs = drive(&mut qp, entries, N, true, &check);
        println!("{name}: {N} messages through the host worker, {allocs} allocations");
        assert_eq!(allocs, 0, "{name}: allocations in the host worker loop");
    }

    stop.store(true, Ordering::Relaxed);
    let mut agent = control.join().unwrap();
    agent.shutdown().unwrap();
}
