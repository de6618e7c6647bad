//! The worker against an in-memory port and a real `ShmHost`/`ShmLink` pair in this process,
//! with a tiny host-worker loop standing in for the host agent.

use std::net::SocketAddrV4;
use std::sync::Arc;

use naam_core::auth::{Capabilities, Credential, Keyring, Principal};
use naam_core::elf::load_program;
use naam_core::helpers::hash64;
use naam_core::pool::{OffloadSpec, Registry};
use naam_core::region::Perms;
use naam_core::verifier::{verify, VerifierConfig};
use naam_core::vm::Engine;
use naam_core::wire::{
    AmFlags, AmReplyRepr, AmRequestRepr, AmStatus, Body, ErrorCode, ErrorRepr, Flags, Location,
    Message, OneSidedRepr, OpBody, PageRequestRepr, RemoteOp, HEADER_LEN,
};
use naam_dataplane::port::{MemPort, Peer};
use naam_dataplane::runtime::fair::FairConfig;
use naam_dataplane::runtime::{Dropped, Shared, Worker, WorkerConfig, WorkerStats};
use naam_dataplane::steering::{Match, SoftSwitch, Steering, Target};
use naam_handlers::btree::{BTree, BTreeConfig};
use naam_handlers::mica::{MicaArgs, MicaGeometry, MicaReply, MicaTable};
use naam_link::shm::ConnectOptions;
use naam_link::{REPLY_PREFIX, TOKEN_LEN};

/// The time the stand-in host worker says it spent on each message.
const HOST_COST_NS: u64 = 250_000;
use naam_link::{
    Link, LinkError, RegionSpec, RemoteAddr, ShmConfig, ShmHost, ShmLink, ShmQp, MSG_MAX,
};

const BASE: u16 = 7000;
const CLASSES: u16 = 8;
const KEY: u64 = 0x1234_5678_9abc_def0;
const REGION: u32 = 4;
const RECORD: u32 = 5;
const RECORD_CLASS: u16 = 5;
/// `three_step` registered as a mutating offload (read, then CAS +add).
const THREE: u32 = 16;
const THREE_CLASS: u16 = 6;
/// A small MICA table in regions 1 (index) and 2 (log).
const MICA: MicaGeometry = MicaGeometry {
    index_region: 1,
    log_region: 2,
    bucket_count: 16,
    overflow_count: 18,
    log_size: 1 << 16,
    lossless: false,
};
/// A deep B-tree (3 keys per node) in region 3, looked up by the bundled handler.
const BTREE_REGION: u32 = 3;
const BTREE: u32 = 3;
const BTREE_CLASS: u16 = 3;
const BTREE_KEYS: u64 = 200;
const BTREE_CFG: BTreeConfig = BTreeConfig {
    max_keys: 3,
    fill: 2,
};
const THREE_STEP: &[u8] = include_bytes!("../../handlers/test/three_step.bpf.o");
const ORDERED: u32 = 17;
const ORDERED_OPS: &[u8] = include_bytes!("../../handlers/test/ordered_ops.bpf.o");
/// Tenant 2's compute-only offload.
const SPIN: &[u8] = include_bytes!("../../handlers/examples/spin.bpf.o");
const SPIN_ID: u32 = 18;
const SPIN_CLASS: u16 = 7;
/// Tenant 2's look at its own context (`handlers/test/peek.bpf.c`), registered by the
/// isolation test.
const PEEK: &[u8] = include_bytes!("../../handlers/test/peek.bpf.o");
const PEEK_ID: u32 = 19;

fn client() -> SocketAddrV4 {
    "127.0.0.1:40000".parse().unwrap()
}

struct Rig {
    host: Option<ShmHost>,
    host_qp: Option<ShmQp>,
    _link: ShmLink,
    qp: ShmQp,
    port: MemPort,
    worker: Worker,
    switch: SoftSwitch,
    rules: std::collections::HashMap<u16, naam_dataplane::steering::RuleId>,
    shared: Arc<Shared>,
    stats: Arc<WorkerStats>,
    now: u64,
    /// Poll through [`Posted`]: ops are posted and completed as over RDMA.
    posted: bool,
}

/// The shared-memory queue pair without its [`Link::direct`] path: the worker posts every op
/// and resumes on its completion, as it does over verbs (which this machine cannot run).
struct Posted<'a>(&'a mut ShmQp);

impl Link for Posted<'_> {
    fn local(&self) -> &naam_link::RegionMem {
        self.0.local()
    }
    fn post_read(&mut self, wr: u64, r: RemoteAddr, off: u64, len: u32) -> Result<(), LinkError> {
        self.0.post_read(wr, r, off, len)
    }
    fn post_write(&mut self, wr: u64, r: RemoteAddr, off: u64, len: u32) -> Result<(), LinkError> {
        self.0.post_write(wr, r, off, len)
    }
    fn post_write_doorbell(
        &mut self,
        wr: u64,
        r: RemoteAddr,
        off: u64,
        len: u32,
        imm: u32,
    ) -> Result<(), LinkError> {
        self.0.post_write_doorbell(wr, r, off, len, imm)
    }
    fn post_cas(
        &mut self,
        wr: u64,
        r: RemoteAddr,
        expected: u64,
        desired: u64,
    ) -> Result<(), LinkError> {
        self.0.post_cas(wr, r, expected, desired)
    }
    fn post_faa(&mut self, wr: u64, r: RemoteAddr, add: u64) -> Result<(), LinkError> {
        self.0.post_faa(wr, r, add)
    }
    fn poll_completions(&mut self, out: &mut [naam_link::Completion]) -> usize {
        self.0.poll_completions(out)
    }
    fn send(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        self.0.send(msg)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<naam_link::Received>, LinkError> {
        self.0.recv(buf)
    }
    fn wait_recv(&mut self, backoff: &naam_link::Backoff) {
        self.0.wait_recv(backoff)
    }
    fn check_peer(&mut self, now_ns: u64) -> Result<(), LinkError> {
        self.0.check_peer(now_ns)
    }
    fn counters(&self) -> naam_link::LinkCounters {
        self.0.counters()
    }
}

fn register(registry: &Registry, id: u32, object: &[u8], class: u16, read_only: bool) {
    let prog = Arc::new(
        verify(
            &load_program(object, None).unwrap(),
            &VerifierConfig::default(),
        )
        .unwrap(),
    );
    let spec = OffloadSpec {
        name: format!("offload{id}"),
        tenant: 1,
        class,
        read_only,
    };
    registry.register_as(id, spec, prog).unwrap();
}

fn rig_with(ring_slots: u32, slots: usize) -> Rig {
    rig_fair(ring_slots, slots, FairConfig::default())
}

fn rig_fair(ring_slots: u32, slots: usize, fair: FairConfig) -> Rig {
    let mut host = ShmHost::create(&ShmConfig {
        qps: 1,
        load_slots: 1,
        ring_slots,
        arena_bytes: 1 << 20,
        hugetlb: false,
        ..Default::default()
    })
    .unwrap();
    host.register_region(RegionSpec {
        id: REGION,
        tenant: 1,
        len: 4096,
        perms: Perms::ALL,
        key: KEY,
    })
    .unwrap();
    host.register_region(RegionSpec {
        id: BTREE_REGION,
        tenant: 1,
        len: BTREE_CFG.region_len(BTREE_KEYS, 0) as u64,
        perms: Perms::READ,
        key: KEY,
    })
    .unwrap();
    for (id, len) in [(1, MICA.index_len()), (2, MICA.log_len())] {
        host.register_region(RegionSpec {
            id,
            tenant: 1,
            len,
            perms: Perms::ALL,
            key: KEY,
        })
        .unwrap();
    }
    MicaTable::format(
        MICA,
        host.region(1).unwrap().mem().clone(),
        host.region(2).unwrap().mem().clone(),
    )
    .unwrap();
    let tree_mem = host.region(BTREE_REGION).unwrap().mem().clone();
    BTree::bulk_load(
        tree_mem,
        BTREE_CFG,
        (0..BTREE_KEYS).map(|k| (k * 10, k * 100 + 1)),
    )
    .unwrap();
    let cfg = WorkerConfig {
        id: 0,
        classes: CLASSES,
        burst: 32,
        slots,
        dedup_entries: 64,
        engine: Engine::native(),
        fair,
        ..Default::default()
    };
    let link = host
        .connect_local(ConnectOptions {
            stale_after: std::time::Duration::ZERO,
            staging_bytes: cfg.staging_bytes(),
            cq_depth: cfg.cq_depth(),
        })
        .unwrap();
    let qp = link.qp(0).unwrap();
    let host_qp = host.qp(0).unwrap();
    let registry = Registry::new();
    register(
        &registry,
        RECORD,
        naam_handlers::RECORD_OBJECT,
        RECORD_CLASS,
        true,
    );
    register(&registry, THREE, THREE_STEP, THREE_CLASS, false);
    register(&registry, ORDERED, ORDERED_OPS, THREE_CLASS, false);
    let lookup = naam_handlers::btree::program::load(
        naam_handlers::btree::program::LOOKUP_SECTION,
        &VerifierConfig::default(),
    )
    .unwrap();
    let spec = OffloadSpec {
        name: "btree_lookup".into(),
        tenant: 1,
        class: BTREE_CLASS,
        read_only: true,
    };
    registry.register_as(BTREE, spec, Arc::new(lookup)).unwrap();
    let mica = naam_handlers::mica::MicaPrograms::load(&VerifierConfig::default()).unwrap();
    for (id, prog, ro) in [
        (0, mica.get, true),
        (1, mica.put, false),
        (2, mica.delete, false),
    ] {
        let spec = OffloadSpec {
            name: format!("mica{id}"),
            tenant: 1,
            class: id as u16,
            read_only: ro,
        };
        registry.register_as(id, spec, prog).unwrap();
    }
    let switch = SoftSwitch::new(BASE, CLASSES, 1, Target::NicQueue(0));
    // Tenant 2 owns no region: its offload computes only.
    let spin = Arc::new(
        verify(
            &load_program(SPIN, None).unwrap(),
            &VerifierConfig::default(),
        )
        .unwrap(),
    );
    let spec = OffloadSpec {
        name: "spin".into(),
        tenant: 2,
        class: SPIN_CLASS,
        read_only: true,
    };
    registry.register_as(SPIN_ID, spec, spin).unwrap();
    let keys = Keyring::new(vec![tenant_key(), tenant2_key()]).unwrap();
    let shared = Shared::new(
        registry,
        switch.table(),
        CLASSES,
        Capabilities::from_keyring(&keys),
    );
    shared.regions.publish(link.region_table());
    let stats = Arc::new(WorkerStats::new(CLASSES));
    let worker = Worker::new(cfg, shared.clone(), stats.clone());
    Rig {
        host: Some(host),
        host_qp: Some(host_qp),
        _link: link,
        qp,
        port: MemPort::new(SocketAddrV4::new([127, 0, 0, 1].into(), BASE), CLASSES),
        worker,
        switch,
        rules: Default::default(),
        shared,
        stats,
        now: naam_link::now_ns(),
        posted: false,
    }
}

/// Tenant 1's key: its active messages carry [`cap`].
fn tenant_key() -> Credential {
    Credential::new(1, Principal::Tenant(1), [0x31; 32])
}

fn cap() -> u64 {
    tenant_key().capability(1)
}

fn tenant2_key() -> Credential {
    Credential::new(2, Principal::Tenant(2), [0x32; 32])
}

fn rig() -> Rig {
    rig_with(64, 16)
}

impl Rig {
    /// One poll, and more while datagrams wait at the port: under the tenants' shares a poll
    /// takes only what its budget pays for (here, unoptimised, that can be one packet).
    fn poll(&mut self) -> usize {
        let mut work = 0;
        loop {
            self.now += 1_000_000;
            work += if self.posted {
                self.worker
                    .poll(self.now, &mut self.port, &mut Posted(&mut self.qp))
            } else {
                self.worker.poll(self.now, &mut self.port, &mut self.qp)
            };
            if self.port.pending() == 0 {
                return work;
            }
        }
    }

    fn steer(&mut self, class: u16, target: Target) {
        match self.rules.get(&class) {
            Some(id) => self.switch.update(*id, target).unwrap(),
            None => {
                let id = self
                    .switch
                    .insert(Match::class(BASE, class), target)
                    .unwrap();
                self.rules.insert(class, id);
            }
        }
        self.switch.commit().unwrap();
    }

    fn send(&mut self, class: u16, msg: &Message<'_>) {
        let mut buf = vec![0u8; 4096];
        let n = msg.emit(&mut buf).unwrap();
        self.port.inject(client(), class, &buf[..n]);
    }

    fn am(&mut self, id: u64, offload: u32, class: u16, flags: AmFlags, args: &[u8], hdr: Flags) {
        let mut m = Message::new(
            id,
            class,
            Body::AmRequest(AmRequestRepr {
                offload,
                tenant: 1,
                capability: cap(),
                flags,
                args,
            }),
        );
        m.flags = hdr;
        // As a client with a handful of requests open (docs/protocol.md, "De-duplication").
        m.window = 8;
        self.send(class, &m);
    }

    /// Tenant 1's RECORD handler on the record at `offset`, as request `id`.
    fn record(&mut self, id: u64, offset: u64) {
        let args = record_args(offset);
        self.am(
            id,
            RECORD,
            RECORD_CLASS,
            AmFlags::empty(),
            &args,
            Flags::empty(),
        );
    }

    /// Tenant 1's THREE handler (a read, then a CAS adding `add`) on `offset`, as request `id`.
    fn three(&mut self, id: u64, offset: u64, add: u64) {
        let args = three_args(offset, add);
        self.am(
            id,
            THREE,
            THREE_CLASS,
            AmFlags::empty(),
            &args,
            Flags::empty(),
        );
    }

    /// The worker's counters by name, once it has published them (every 10 ms of worker
    /// time: each poll here advances 1 ms).
    fn published_counters(&mut self) -> std::collections::HashMap<String, u64> {
        for _ in 0..12 {
            self.poll();
        }
        self.stats.counters().into_iter().collect()
    }

    /// Tenant 2's spin handler (seeded with `id`), as request `id`.
    fn tenant2_spin(&mut self, id: u64) {
        self.tenant2(id, SPIN_ID, &id.to_le_bytes());
    }

    /// Tenant 2's `offload` (of its class, [`SPIN_CLASS`]) with `args`, as request `id`.
    fn tenant2(&mut self, id: u64, offload: u32, args: &[u8]) {
        let m = Message::new(
            id,
            SPIN_CLASS,
            Body::AmRequest(AmRequestRepr {
                offload,
                tenant: 2,
                capability: tenant2_key().capability(2),
                flags: AmFlags::empty(),
                args,
            }),
        );
        self.send(SPIN_CLASS, &m);
    }

    /// Replies sent to the client, as raw datagrams.
    fn replies(&mut self) -> Vec<Vec<u8>> {
        self.port
            .take_sent()
            .into_iter()
            .map(|(peer, d)| {
                assert_eq!(peer.remote, client(), "reply goes back to the sender");
                d
            })
            .collect()
    }

    /// Runs the stand-in host worker: answers every queued ring entry with an AM reply whose
    /// output is the request id (little-endian), executed at the host in [`HOST_COST_NS`].
    fn serve_host(&mut self) -> usize {
        let qp = self.host_qp.as_mut().unwrap();
        let mut buf = vec![0u8; MSG_MAX];
        let mut out = vec![0u8; MSG_MAX];
        let mut n = 0;
        while let Some(r) = qp.recv(&mut buf).unwrap() {
            let req = Message::parse(&buf[TOKEN_LEN..r.len]).expect("forwarded datagram unchanged");
            let id = req.request_id.to_le_bytes();
            let reply = req.reply(Body::AmReply(AmReplyRepr {
                status: AmStatus::Done,
                executed_at: Location::Host,
                steps: 1,
                hint: None,
                output: &id,
            }));
            out[..TOKEN_LEN].copy_from_slice(&buf[..TOKEN_LEN]);
            out[TOKEN_LEN..REPLY_PREFIX].copy_from_slice(&HOST_COST_NS.to_le_bytes());
            let len = reply.emit(&mut out[REPLY_PREFIX..]).unwrap();
            qp.send(&out[..REPLY_PREFIX + len]).unwrap();
            n += 1;
        }
        n
    }

    fn region_write(&self, off: u64, bytes: &[u8]) {
        let r = self.host.as_ref().unwrap().region(REGION).unwrap();
        assert!(r.mem().write(off, bytes));
    }

    fn region_word(&self, off: u64) -> u64 {
        let r = self.host.as_ref().unwrap().region(REGION).unwrap();
        r.mem().load_u64(off).unwrap()
    }

    /// Sends `op` alone as one-sided request `id` from the test client and returns its
    /// result's error (`None`: it ran).
    fn one_sided(&mut self, id: u64, op: RemoteOp<'_>) -> Option<ErrorCode> {
        let m = Message::new(id, 0, Body::OneSided(OneSidedRepr::single(op)));
        self.send(0, &m);
        self.poll();
        let replies = self.replies();
        let Body::OneSidedReply(rep) = Message::parse(&replies[0]).unwrap().body else {
            panic!("expected a one-sided reply")
        };
        rep.results()[0].error
    }
}

/// `record_args(0)`: region 4, offset 0.
const ARGS0: &[u8] = &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn record_args(offset: u64) -> Vec<u8> {
    let mut a = vec![0u8; 16];
    a[..4].copy_from_slice(&REGION.to_le_bytes());
    a[8..16].copy_from_slice(&offset.to_le_bytes());
    a
}

fn three_args(offset: u64, add: u64) -> Vec<u8> {
    let mut a = record_args(offset);
    a.extend_from_slice(&add.to_le_bytes());
    a
}

fn expect_error(d: &[u8]) -> ErrorRepr<'_> {
    match Message::parse(d).unwrap().body {
        Body::Error(e) => e,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn expect_am(d: &[u8]) -> (u64, AmReplyRepr<'_>) {
    let m = Message::parse(d).unwrap();
    match m.body {
        Body::AmReply(r) => (m.request_id, r),
        other => panic!("expected an AM reply, got {other:?}"),
    }
}

#[test]
fn executes_record_handler_at_the_nic_through_the_link() {
    let mut r = rig();
    let words: Vec<u64> = (0..8).map(|i| 0x1000 + i * 7).collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    r.region_write(128, &bytes);
    r.record(11, 128);
    r.poll();
    let replies = r.replies();
    assert_eq!(replies.len(), 1);
    let (id, rep) = expect_am(&replies[0]);
    assert_eq!(id, 11);
    assert_eq!(rep.status, AmStatus::Done);
    assert_eq!(rep.executed_at, Location::Nic);
    assert_eq!(rep.steps, 2);
    assert_eq!(rep.hint, None);
    let expected = words
        .iter()
        .fold(naam_handlers::RECORD_SALT, |h, w| hash64(h, *w));
    assert_eq!(rep.output, expected.to_le_bytes());
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(l(&r.stats.nic_executed), 1);
    assert_eq!(l(&r.stats.steps), 2);
    assert_eq!(l(&r.stats.ops), 1);
    assert_eq!(r.stats.class_counts(RECORD_CLASS), (1, 2));
    assert_eq!(r.worker.in_flight(), 0);
}

#[test]
fn forwards_to_the_host_and_relays_the_reply_by_token() {
    let mut r = rig();
    r.steer(RECORD_CLASS, Target::Host);
    for id in 1..=3 {
        r.record(id, 0);
    }
    r.poll();
    assert!(r.replies().is_empty(), "nothing until the host answers");
    assert_eq!(r.worker.in_flight(), 3);
    assert_eq!(r.worker.at_host(), 3);
    assert_eq!(r.serve_host(), 3);
    r.poll();
    let mut ids: Vec<u64> = r
        .replies()
        .iter()
        .map(|d| {
            let (id, rep) = expect_am(d);
            assert_eq!(rep.executed_at, Location::Host);
            assert_eq!(rep.output, id.to_le_bytes());
            id
        })
        .collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(r.worker.at_host(), 0);
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(l(&r.stats.forwarded), 3);
    assert_eq!(l(&r.stats.host_replies), 3);
    assert_eq!(r.worker.in_flight(), 0);
    // The host's time on each message is charged to its tenant, as NIC time is: the tenant's
    // share of the pool counts what it costs wherever it runs.
    for _ in 0..11 {
        r.poll(); // until the worker publishes its tenants' counters (every 10 ms)
    }
    let (_, [admitted, refused, run_ns]) = r
        .stats
        .tenant_counts()
        .into_iter()
        .find(|(t, _)| *t == 1)
        .expect("tenant 1 is accounted");
    assert_eq!((admitted, refused), (3, 0));
    assert!(run_ns >= 3 * HOST_COST_NS, "{run_ns} ns charged");
}

#[test]
fn stale_and_unknown_tokens_are_dropped_and_counted() {
    let mut r = rig();
    let reply = Message::new(
        9,
        RECORD_CLASS,
        Body::AmReply(AmReplyRepr {
            status: AmStatus::Done,
            executed_at: Location::Host,
            steps: 1,
            hint: None,
            output: &[],
        }),
    );
    let mut buf = vec![0u8; MSG_MAX];
    buf[..8].copy_from_slice(&0xdead_0000_0003u64.to_le_bytes());
    let n = reply.emit(&mut buf[REPLY_PREFIX..]).unwrap();
    let qp = r.host_qp.as_mut().unwrap();
    qp.send(&buf[..REPLY_PREFIX + n]).unwrap();
    qp.send(&buf[..5]).unwrap(); // too short to hold a token and a header
    r.poll();
    assert!(r.replies().is_empty());
    assert_eq!(r.stats.drops(Dropped::StaleToken), 1);
    assert_eq!(r.stats.drops(Dropped::BadRingEntry), 1);
}

#[test]
fn full_host_ring_answers_busy() {
    let mut r = rig_with(4, 16);
    r.steer(RECORD_CLASS, Target::Host);
    for id in 1..=6 {
        r.record(id, 0);
    }
    r.poll();
    let replies = r.replies();
    assert_eq!(replies.len(), 2, "4 fit the ring, 2 are refused");
    for d in &replies {
        let e = expect_error(d);
        assert_eq!(e.code, ErrorCode::Busy);
        assert!(e.retry_after_us.is_some(), "a refusal says when to retry");
    }
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(l(&r.stats.ring_full), 2);
    assert_eq!(l(&r.stats.busy), 2);
    assert_eq!(r.stats.errors(ErrorCode::Busy), 2);
    // The four in the ring are still answered.
    assert_eq!(r.serve_host(), 4);
    r.poll();
    assert_eq!(r.replies().len(), 4);
}

#[test]
fn full_slot_table_answers_busy() {
    let mut r = rig_with(64, 2);
    r.steer(RECORD_CLASS, Target::Host);
    for id in 1..=3 {
        r.record(id, 0);
    }
    r.poll();
    let replies = r.replies();
    assert_eq!(replies.len(), 1);
    let e = expect_error(&replies[0]);
    assert_eq!(e.code, ErrorCode::Busy);
    assert!(e.retry_after_us.is_some(), "a refusal says when to retry");
}

/// A tenant whose messages wait at the host held every slot, and another tenant was
/// refused `busy` though its fair share was untouched (the second probe, 2026-12-06). While
/// two tenants use the worker, one holds at most its share of the slots; the refusals are
/// counted by reason (`slots_full`, `slots_over_share`).
#[test]
fn one_tenant_waiting_at_the_host_leaves_slots_for_another() {
    // Tenant 1 sends more than there are slots (and the host does not answer yet), with one
    // message of tenant 2 in the same burst. `Ok` for a message forwarded, else the refusal.
    let run = |with_tenant_2: bool| {
        let mut r = rig_with(64, 16);
        r.steer(RECORD_CLASS, Target::Host);
        r.steer(SPIN_CLASS, Target::Host);
        for id in 1..=20 {
            r.record(id, 0);
        }
        if with_tenant_2 {
            r.tenant2_spin(1000);
        }
        r.poll();
        let refused: Vec<(u16, String)> = r
            .replies()
            .iter()
            .map(|d| {
                let m = Message::parse(d).unwrap();
                let e = expect_error(d);
                assert_eq!(e.code, ErrorCode::Busy, "{}", e.detail);
                (m.class, e.detail.to_owned())
            })
            .collect();
        let c = r.published_counters();
        // Each refusal is also the refused tenant's (a full table's too: probe 11 saw
        // refusals another tenant caused in no counter of the refused one).
        assert_eq!(
            c.get("tenant.1.refused").copied().unwrap_or(0),
            refused.len() as u64,
            "{c:?}"
        );
        (refused, c["slots_full"], c["slots_over_share"])
    };
    // Alone, tenant 1 may take every slot: 16 forwarded, 4 refused for a full table.
    let (refused, full, over) = run(false);
    assert_eq!((refused.len(), full, over), (4, 4, 0), "{refused:?}");
    assert!(refused.iter().all(|(_, d)| d == "no free slot"));
    // With tenant 2 in the worker, tenant 1 holds at most 14 of the 16: 6 refused, and
    // tenant 2's message gets a slot.
    let (refused, full, over) = run(true);
    assert_eq!((full, over), (0, 6), "{refused:?}");
    assert!(refused.iter().all(|(class, d)| *class == RECORD_CLASS
        && d.contains("tenant 1 holds its share of this NIC worker's slots")));
}

#[test]
fn host_gone_answers_host_unavailable_and_fails_in_flight_messages() {
    let mut r = rig();
    r.steer(RECORD_CLASS, Target::Host);
    r.record(1, 0);
    r.poll();
    assert_eq!(r.worker.in_flight(), 1);
    // The host agent dies: its socket closes.
    r.host_qp = None;
    r.host = None;
    r.poll();
    let replies = r.replies();
    assert_eq!(
        replies.len(),
        1,
        "the parked request is answered, not left hanging"
    );
    assert_eq!(expect_error(&replies[0]).code, ErrorCode::HostUnavailable);
    assert_eq!(r.worker.in_flight(), 0);
    // New messages for the host, and NIC messages whose ops need host memory, too.
    r.record(2, 0);
    r.three(3, 0, 1);
    r.poll();
    let replies = r.replies();
    assert_eq!(replies.len(), 2);
    for d in &replies {
        assert_eq!(expect_error(d).code, ErrorCode::HostUnavailable);
    }
    assert_eq!(r.stats.errors(ErrorCode::HostUnavailable), 3);
}

/// Issue 14: two writes answered `host_unavailable` had in fact been stored. A mutation that
/// was at the host when it went away may have been applied: its answer says the outcome is
/// unknown, and a retry gets that answer again rather than running it a second time. A
/// read-only message lost the same way was not executed and may be retried.
#[test]
fn a_mutation_lost_with_the_host_has_an_unknown_outcome_and_is_not_run_again() {
    let mut r = rig();
    r.steer(RECORD_CLASS, Target::Host);
    r.steer(THREE_CLASS, Target::Host);
    let mutation = |r: &mut Rig, hdr: Flags| {
        r.am(
            7,
            THREE,
            THREE_CLASS,
            AmFlags::empty(),
            &three_args(0, 1),
            hdr,
        )
    };
    mutation(&mut r, Flags::empty());
    r.record(8, 0);
    r.poll();
    assert_eq!(r.worker.in_flight(), 2, "both at the host");
    r.host_qp = None;
    r.host = None;
    r.poll();
    let mut codes: Vec<(u64, ErrorCode)> = r
        .replies()
        .iter()
        .map(|d| {
            let m = Message::parse(d).unwrap();
            match m.body {
                Body::Error(e) => (m.request_id, e.code),
                b => panic!("unexpected {b:?}"),
            }
        })
        .collect();
    codes.sort_by_key(|c| c.0);
    assert_eq!(
        codes,
        [
            (7, ErrorCode::OutcomeUnknown),
            (8, ErrorCode::HostUnavailable)
        ]
    );
    assert!(
        !ErrorCode::OutcomeUnknown.is_transient(),
        "never retried blindly"
    );
    // The client retransmits the mutation: the same answer, from the reply cache.
    mutation(&mut r, Flags::RETRANSMIT);
    r.poll();
    let replies = r.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(expect_error(&replies[0]).code, ErrorCode::OutcomeUnknown);
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(l(&r.stats.dup_replayed), 1);
    assert_eq!(r.stats.errors(ErrorCode::OutcomeUnknown), 1);
}

#[test]
fn one_sided_ops_with_right_and_wrong_key() {
    let mut r = rig();
    r.region_write(64, &40u64.to_le_bytes());
    let ops = [
        RemoteOp {
            region: REGION,
            key: KEY,
            offset: 256,
            body: OpBody::Write {
                data: b"hello, one-sided",
            },
        },
        RemoteOp {
            region: REGION,
            key: KEY,
            offset: 64,
            body: OpBody::Faa { addend: 2 },
        },
        RemoteOp {
            region: REGION,
            key: KEY,
            offset: 64,
            body: OpBody::Cas {
                expected: 42,
                desired: 100,
            },
        },
        RemoteOp {
            region: REGION,
            key: KEY,
            offset: 256,
            body: OpBody::Read { len: 16 },
        },
    ];
    let m = Message::new(5, 0, Body::OneSided(OneSidedRepr::new(&ops).unwrap()));
    r.send(0, &m);
    r.poll();
    let replies = r.replies();
    assert_eq!(replies.len(), 1);
    let msg = Message::parse(&replies[0]).unwrap();
    let Body::OneSidedReply(rep) = msg.body else {
        panic!("expected a one-sided reply, got {msg:?}")
    };
    let res = rep.results();
    assert_eq!(res.len(), 4);
    assert!(res.iter().all(|x| x.error.is_none()), "{res:?}");
    assert_eq!(res[1].previous, 40);
    assert_eq!(
        res[2].previous, 42,
        "CAS saw the FAA's result and succeeded"
    );
    assert_eq!(res[3].data, b"hello, one-sided");
    assert_eq!(r.region_word(64), 100);

    // Wrong key: refused per op and counted; the right-key op beside it still runs.
    let ops = [
        RemoteOp {
            region: REGION,
            key: KEY ^ 1,
            offset: 64,
            body: OpBody::Faa { addend: 1 },
        },
        RemoteOp {
            region: REGION,
            key: KEY,
            offset: 64,
            body: OpBody::Read { len: 8 },
        },
    ];
    let m = Message::new(6, 0, Body::OneSided(OneSidedRepr::new(&ops).unwrap()));
    r.send(0, &m);
    r.poll();
    let replies = r.replies();
    let msg = Message::parse(&replies[0]).unwrap();
    let Body::OneSidedReply(rep) = msg.body else {
        panic!("expected a one-sided reply")
    };
    assert_eq!(rep.results()[0].error, Some(ErrorCode::BadKey));
    assert_eq!(rep.results()[1].error, None);
    assert_eq!(rep.results()[1].data, 100u64.to_le_bytes());
    assert_eq!(r.region_word(64), 100, "the refused FAA did not run");
    assert_eq!(
        r.stats.bad_key.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn retransmitted_mutation_runs_once_and_gets_the_same_reply() {
    let mut r = rig();
    r.region_write(0, &10u64.to_le_bytes());
    let args = three_args(0, 5);
    r.am(
        77,
        THREE,
        THREE_CLASS,
        AmFlags::empty(),
        &args,
        Flags::empty(),
    );
    r.poll();
    let first = r.replies();
    assert_eq!(first.len(), 1);
    assert_eq!(r.region_word(0), 15);
    r.am(
        77,
        THREE,
        THREE_CLASS,
        AmFlags::empty(),
        &args,
        Flags::RETRANSMIT,
    );
    r.poll();
    let second = r.replies();
    assert_eq!(second, first, "the remembered reply is sent again");
    assert_eq!(r.region_word(0), 15, "not executed twice");
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(l(&r.stats.dup_replayed), 1);
    assert_eq!(l(&r.stats.retransmits), 1);
    assert_eq!(l(&r.stats.nic_executed), 1);
    // Another request id runs again.
    r.am(
        78,
        THREE,
        THREE_CLASS,
        AmFlags::empty(),
        &args,
        Flags::empty(),
    );
    r.poll();
    assert_eq!(r.replies().len(), 1);
    assert_eq!(r.region_word(0), 20);
}

#[test]
fn read_only_requests_are_not_remembered() {
    let mut r = rig();
    r.record(5, 0);
    r.am(
        5,
        RECORD,
        RECORD_CLASS,
        AmFlags::empty(),
        &record_args(0),
        Flags::RETRANSMIT,
    );
    r.poll();
    assert_eq!(r.replies().len(), 2);
    assert_eq!(
        r.stats
            .nic_executed
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn placement_hint_on_replies_when_the_class_runs_at_clients() {
    let mut r = rig();
    r.shared
        .hints
        .set(RECORD_CLASS, r.now + 1_000_000 + 50_000_000);
    r.am(
        1,
        RECORD,
        RECORD_CLASS,
        AmFlags::EXEC_HINT,
        &record_args(0),
        Flags::empty(),
    );
    r.record(2, 0);
    r.poll();
    let mut replies = r.replies();
    replies.sort_by_key(|d| expect_am(d).0);
    let (_, with) = expect_am(&replies[0]);
    let hint = with.hint.expect("hint for a client that can execute");
    assert_eq!(hint.class, RECORD_CLASS);
    assert_eq!(hint.location, Location::Client);
    assert_eq!(hint.lease_ms, 50);
    assert_eq!(expect_am(&replies[1]).1.hint, None, "no EXEC_HINT, no hint");
    // Host replies get it too.
    r.steer(RECORD_CLASS, Target::Host);
    r.am(
        3,
        RECORD,
        RECORD_CLASS,
        AmFlags::EXEC_HINT,
        &record_args(0),
        Flags::empty(),
    );
    r.poll();
    r.serve_host();
    r.poll();
    let replies = r.replies();
    assert!(expect_am(&replies[0]).1.hint.is_some());
    // After the lease: no hint.
    r.shared.hints.clear(RECORD_CLASS);
    r.steer(RECORD_CLASS, Target::NicQueue(0));
    r.am(
        4,
        RECORD,
        RECORD_CLASS,
        AmFlags::EXEC_HINT,
        &record_args(0),
        Flags::empty(),
    );
    r.poll();
    assert_eq!(expect_am(&r.replies()[0]).1.hint, None);
}

#[test]
fn wrong_class_unknown_offload_and_wrong_tenant_are_refused() {
    let mut r = rig();
    // Header says class 5, sent to the port of class 3.
    let m = Message::new(
        1,
        RECORD_CLASS,
        Body::AmRequest(AmRequestRepr {
            offload: RECORD,
            tenant: 1,
            capability: cap(),
            flags: AmFlags::empty(),
            args: ARGS0,
        }),
    );
    r.send(3, &m);
    // Offload of class 5 sent as class 3 consistently.
    r.am(
        2,
        RECORD,
        3,
        AmFlags::empty(),
        &record_args(0),
        Flags::empty(),
    );
    r.am(3, 999, 3, AmFlags::empty(), &[], Flags::empty());
    // Tenant 2, proven, naming tenant 1's offload; then tenant 1's capability claiming
    // tenant 2 (refused before anything about the offload is said).
    for (id, capability) in [(4, tenant2_key().capability(2)), (5, cap())] {
        let m = Message::new(
            id,
            RECORD_CLASS,
            Body::AmRequest(AmRequestRepr {
                offload: RECORD,
                tenant: 2,
                capability,
                flags: AmFlags::empty(),
                args: ARGS0,
            }),
        );
        r.send(RECORD_CLASS, &m);
    }
    r.poll();
    let mut got: Vec<(u64, ErrorCode)> = r
        .replies()
        .iter()
        .map(|d| (Message::parse(d).unwrap().request_id, expect_error(d).code))
        .collect();
    got.sort_by_key(|x| x.0);
    assert_eq!(
        got,
        vec![
            (1, ErrorCode::BadRequest),
            (2, ErrorCode::BadRequest),
            (3, ErrorCode::UnknownOffload),
            (4, ErrorCode::WrongTenant),
            (5, ErrorCode::Unauthorized)
        ]
    );
}

#[test]
fn an_offload_of_the_host_agent_not_added_yet_is_retried_not_unknown() {
    // A restarted dataplane adds the host agent's offloads over seconds after it connects
    // (thousands: tens of seconds in a debug build). An active message for one of them
    // meanwhile used to get `unknown_offload`, which a client takes as final; now it is not
    // executed and its client is told to retry, and once the offload is added it runs.
    let mut r = rig();
    let call = |r: &mut Rig, id: u64, offload: u32| {
        let args = record_args(0);
        r.am(
            id,
            offload,
            RECORD_CLASS,
            AmFlags::empty(),
            &args,
            Flags::empty(),
        );
    };
    // Per request id: its status, or its error and retry-after.
    type Answer = (u64, Result<AmStatus, (ErrorCode, Option<u32>)>);
    let answers = |r: &mut Rig| -> Vec<Answer> {
        r.poll();
        let mut got: Vec<_> = r
            .replies()
            .iter()
            .map(|d| match Message::parse(d).unwrap() {
                Message {
                    request_id,
                    body: Body::Error(e),
                    ..
                } => (request_id, Err((e.code, e.retry_after_us))),
                _ => {
                    let (id, rep) = expect_am(d);
                    (id, Ok(rep.status))
                }
            })
            .collect();
        got.sort_by_key(|x| x.0);
        got
    };
    // Before the host agent has listed its offloads: any run-time id may be one of them.
    r.shared.pending.unlisted();
    call(&mut r, 1, 40);
    call(&mut r, 2, 7);
    assert_eq!(
        answers(&mut r),
        [
            (1, Err((ErrorCode::HostUnavailable, None))),
            (2, Err((ErrorCode::UnknownOffload, None))),
        ],
        "a bundled id is known from the start"
    );
    // Listed: 40 is being added, 41 is not the host agent's.
    r.shared.pending.adding([40], 5_000_000);
    call(&mut r, 3, 40);
    call(&mut r, 4, 41);
    assert_eq!(
        answers(&mut r),
        [
            (3, Err((ErrorCode::Busy, Some(5_000)))),
            (4, Err((ErrorCode::UnknownOffload, None))),
        ]
    );
    // Added (the registry first, as the control thread does): it runs, the same request id
    // too (a refusal to retry is not remembered).
    register(
        &r.shared.registry,
        40,
        naam_handlers::RECORD_OBJECT,
        RECORD_CLASS,
        true,
    );
    r.shared.pending.done(40, 1_000_000);
    call(&mut r, 3, 40);
    assert_eq!(answers(&mut r), [(3, Ok(AmStatus::Done))]);
    assert_eq!(r.published_counters()["not_yet_added"], 2);
}

#[test]
fn malformed_floods_leave_the_worker_serving() {
    use rand::{Rng, SeedableRng};
    let mut r = rig();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let valid = {
        let m = Message::new(
            1,
            RECORD_CLASS,
            Body::AmRequest(AmRequestRepr {
                offload: RECORD,
                tenant: 1,
                capability: cap(),
                flags: AmFlags::empty(),
                args: ARGS0,
            }),
        );
        let mut b = vec![0u8; 256];
        let n = m.emit(&mut b).unwrap();
        b.truncate(n);
        b
    };
    let mut sent = 0u64;
    let mut answerable = 0u64;
    for round in 0..40 {
        for _ in 0..50 {
            let d: Vec<u8> = match rng.gen_range(0..4) {
                0 => (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect(),
                1 => valid[..rng.gen_range(0..valid.len())].to_vec(),
                2 => {
                    let mut d = valid.clone();
                    let i = rng.gen_range(0..d.len());
                    d[i] ^= 1 << rng.gen_range(0..8);
                    d
                }
                _ => {
                    let mut d = valid.clone();
                    d.extend((0..rng.gen_range(1..20)).map(|_| rng.gen::<u8>()));
                    d
                }
            };
            // A truncation that kept a readable header is answered; count what must be.
            if Message::parse(&d).is_err() {
                sent += 1;
                if d.len() >= 24 && d[..2] == *b"NA" && d[3] == 1 {
                    answerable += 1;
                }
            }
            r.port.inject(client(), RECORD_CLASS, &d);
        }
        while r.port.pending() > 0 {
            r.poll();
        }
        let _ = r.replies();
        if round % 10 == 0 {
            r.record(1000 + round, 0);
            r.poll();
            let replies = r.replies();
            assert!(
                replies
                    .iter()
                    .any(|d| matches!(Message::parse(d).map(|m| m.request_id), Ok(id) if id == 1000 + round)),
                "still serving after round {round}"
            );
        }
    }
    let malformed = r.stats.malformed.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(malformed, sent, "every malformed datagram counted");
    assert!(answerable > 0 && r.stats.errors(ErrorCode::BadRequest) >= answerable);
    assert!(r.stats.drops(Dropped::Malformed) > 0);
    assert_eq!(r.worker.in_flight(), 0);
}

#[test]
fn foreign_version_is_answered_with_bad_version() {
    let mut r = rig();
    let m = Message::new(
        3,
        RECORD_CLASS,
        Body::AmRequest(AmRequestRepr {
            offload: RECORD,
            tenant: 1,
            capability: cap(),
            flags: AmFlags::empty(),
            args: ARGS0,
        }),
    );
    let mut b = vec![0u8; 256];
    let n = m.emit(&mut b).unwrap();
    b[2] = 9;
    r.port.inject(client(), RECORD_CLASS, &b[..n]);
    r.poll();
    let replies = r.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(expect_error(&replies[0]).code, ErrorCode::BadVersion);
    assert_eq!(Message::parse(&replies[0]).unwrap().request_id, 3);
}

#[test]
fn replies_come_from_the_class_port_they_were_sent_to() {
    let mut r = rig();
    r.record(1, 0);
    r.poll();
    let sent = r.port.take_sent();
    let peer: Peer = sent[0].0;
    assert_eq!(peer.local.port(), BASE + RECORD_CLASS);
}

/// `ordered_ops` arguments: the record region at `offset`, CAS `expected` → `desired`.
fn ordered_args(offset: u64, expected: u64, desired: u64) -> Vec<u8> {
    let mut a = record_args(offset);
    a.extend_from_slice(&expected.to_le_bytes());
    a.extend_from_slice(&desired.to_le_bytes());
    a
}

#[test]
fn ops_of_one_step_run_in_order_at_the_host_and_at_the_nic_direct_or_posted() {
    // Issue 12 item 3: READ, an overlapping WRITE, a CAS and a READ of what was written, in
    // one step. The host agent's executor runs them one after another; the NIC must give the
    // same reply and leave the same memory, whether it runs ops on mapped memory (shm) or
    // posts them (as over verbs).
    let init: Vec<u8> = (1..=32).collect();
    let word = u64::from_le_bytes(init[24..32].try_into().unwrap());
    let args = |off| ordered_args(off, word, 0xfeed);
    let prog = Arc::new(
        verify(
            &load_program(ORDERED_OPS, None).unwrap(),
            &VerifierConfig::default(),
        )
        .unwrap(),
    );

    // The host agent's way: naam_core's executor on local memory.
    let host_region = naam_core::memory::OwnedRegion::zeroed(4096);
    assert!(host_region.mem().write(0, &init));
    let mut table = naam_core::region::RegionTable::new();
    table
        .insert(naam_core::region::RegionDesc {
            id: REGION,
            tenant: 1,
            len: 4096,
            perms: Perms::ALL,
            key: KEY,
        })
        .unwrap();
    let mut mem = naam_core::memory::LocalMemory::new();
    mem.map(REGION, host_region.mem());
    let vm = naam_core::vm::CompiledVm::new(prog, Engine::native()).unwrap();
    let mut ctx = naam_core::abi::Ctx::boxed();
    ctx.start(&args(0));
    let outcome = naam_core::exec::Executor::default().run(&vm, 1, &table, &mut mem, &mut ctx);
    assert!(
        matches!(outcome, naam_core::exec::Outcome::Done { steps: 2 }),
        "{outcome:?}"
    );
    let host_reply = ctx.out().unwrap().to_vec();
    let mut host_mem = [0u8; 32];
    assert!(host_region.mem().read(0, &mut host_mem));

    // What running in order means, spelled out.
    let marker = [0x5a; 8];
    assert_eq!(&host_reply[..16], &init[..16], "the first READ");
    assert_eq!(&host_reply[16..24], &marker, "the handler's own bytes");
    assert_eq!(
        &host_reply[24..32],
        &init[8..16],
        "the WRITE sent what the READ brought"
    );
    assert_eq!(&host_reply[32..40], &marker);
    assert_eq!(
        host_reply[40..48],
        word.to_le_bytes(),
        "the CAS saw the old word"
    );
    assert_eq!(&host_mem[..16], &init[..16]);
    assert_eq!(&host_mem[16..24], &marker);
    assert_eq!(host_mem[24..32], 0xfeed_u64.to_le_bytes());

    for posted in [false, true] {
        let mut r = rig();
        r.posted = posted;
        r.region_write(256, &init);
        r.am(
            1,
            ORDERED,
            THREE_CLASS,
            AmFlags::empty(),
            &args(256),
            Flags::empty(),
        );
        r.poll();
        let replies = r.replies();
        assert_eq!(replies.len(), 1, "posted: {posted}");
        let (_, rep) = expect_am(&replies[0]);
        assert_eq!(rep.status, AmStatus::Done, "posted: {posted}");
        assert_eq!(rep.executed_at, Location::Nic);
        assert_eq!(
            rep.output,
            &host_reply[..],
            "same reply as the host (posted: {posted})"
        );
        let region = r.host.as_ref().unwrap().region(REGION).unwrap();
        let mut nic_mem = [0u8; 32];
        assert!(region.mem().read(256, &mut nic_mem));
        assert_eq!(
            nic_mem, host_mem,
            "same memory as the host (posted: {posted})"
        );
    }
}

#[test]
fn btree_lookup_at_the_nic_one_node_per_step() {
    let mut r = rig();
    let keys = [0u64, 10, 990, 1990, 5, 2000];
    for (i, k) in keys.iter().enumerate() {
        let args = naam_handlers::btree::Args::lookup(BTREE_REGION, *k).to_bytes();
        r.am(
            i as u64,
            BTREE,
            BTREE_CLASS,
            AmFlags::empty(),
            &args,
            Flags::empty(),
        );
    }
    r.poll();
    let mut replies = r.replies();
    assert_eq!(replies.len(), keys.len());
    replies.sort_by_key(|d| expect_am(d).0);
    for (d, k) in replies.iter().zip(keys) {
        let (_, rep) = expect_am(d);
        assert_eq!(rep.status, AmStatus::Done, "key {k}");
        assert!(
            rep.steps > 3,
            "a deep tree takes several steps ({})",
            rep.steps
        );
        let got = naam_handlers::btree::parse_lookup_reply(rep.output).unwrap();
        let want = (k % 10 == 0 && k / 10 < BTREE_KEYS).then(|| k / 10 * 100 + 1);
        assert_eq!(got, want, "key {k}");
    }
    assert_eq!(r.worker.in_flight(), 0);
}

/// No tenant sees another's bytes: tenant 2's handler, run on the context tenant 1's MICA
/// GETs (their keys and values) and PUTs just used, finds none of them in any of its bytes.
/// The verifier once took the store footprint of `mica_get`'s value copy (`out + 8 + i*8`,
/// a strided pointer moved by a constant) at the wrong offsets, so clearing the footprint
/// left the value in the context for the next message (probe 7).
#[test]
fn a_tenant_finds_nothing_of_the_previous_tenants_message_in_its_context() {
    // One slot: every message runs in the same context.
    let mut r = rig_with(64, 1);
    let peek = verify(
        &load_program(PEEK, None).unwrap(),
        &VerifierConfig::default(),
    )
    .unwrap();
    let spec = OffloadSpec {
        name: "peek".into(),
        tenant: 2,
        class: SPIN_CLASS,
        read_only: true,
    };
    r.shared
        .registry
        .register_as(PEEK_ID, spec, Arc::new(peek))
        .unwrap();
    let (key, value) = (b"tenant-one-key-A", b"TENANT-ONE-SECRET-VALUE-0123456789");
    let put = MicaArgs::put(&MICA, key, value).unwrap();
    let get = MicaArgs::get(&MICA, key).unwrap();
    let mut id = 100;
    let ctx_size = naam_core::abi::CTX_SIZE as u32;
    for off in (0..ctx_size - 1088).step_by(544).chain([ctx_size - 1088]) {
        for (offload, args) in [(1, put.as_bytes()), (0, get.as_bytes())] {
            id += 1;
            r.am(
                id,
                offload,
                offload as u16,
                AmFlags::empty(),
                args,
                Flags::empty(),
            );
            r.poll();
            let replies = r.replies();
            assert_eq!(expect_am(&replies[0]).1.status, AmStatus::Done);
        }
        id += 1;
        r.tenant2(id, PEEK_ID, &off.to_le_bytes());
        r.poll();
        let replies = r.replies();
        let (_, rep) = expect_am(&replies[0]);
        assert_eq!(rep.status, AmStatus::Done, "{rep:?}");
        for secret in [&value[..12], &value[12..24], &key[..8], &key[8..]] {
            assert!(
                !rep.output.windows(secret.len()).any(|w| w == secret),
                "tenant 2 read {:?} of tenant 1's at context offset {off}..{}",
                String::from_utf8_lossy(secret),
                off + 1088
            );
        }
    }
}

#[test]
fn mica_put_get_delete_at_the_nic() {
    let mut r = rig();
    let put = MicaArgs::put(&MICA, b"key-1", b"value one").unwrap();
    r.am(1, 1, 1, AmFlags::empty(), put.as_bytes(), Flags::empty());
    r.poll();
    let replies = r.replies();
    let (_, rep) = expect_am(&replies[0]);
    assert_eq!(rep.status, AmStatus::Done, "{rep:?}");
    assert_eq!(MicaReply::parse(rep.output).unwrap(), MicaReply::Done);

    let get = MicaArgs::get(&MICA, b"key-1").unwrap();
    r.am(2, 0, 0, AmFlags::empty(), get.as_bytes(), Flags::empty());
    let missing = MicaArgs::get(&MICA, b"key-2").unwrap();
    r.am(
        3,
        0,
        0,
        AmFlags::empty(),
        missing.as_bytes(),
        Flags::empty(),
    );
    r.poll();
    let mut replies = r.replies();
    replies.sort_by_key(|d| expect_am(d).0);
    assert_eq!(
        MicaReply::parse(expect_am(&replies[0]).1.output).unwrap(),
        MicaReply::Value(b"value one")
    );
    assert_eq!(
        MicaReply::parse(expect_am(&replies[1]).1.output).unwrap(),
        MicaReply::NotFound
    );

    let del = MicaArgs::delete(&MICA, b"key-1").unwrap();
    r.am(4, 2, 2, AmFlags::empty(), del.as_bytes(), Flags::empty());
    r.poll();
    let replies = r.replies();
    assert_eq!(
        MicaReply::parse(expect_am(&replies[0]).1.output).unwrap(),
        MicaReply::Done
    );
    r.am(5, 0, 0, AmFlags::empty(), get.as_bytes(), Flags::empty());
    r.poll();
    let replies = r.replies();
    assert_eq!(
        MicaReply::parse(expect_am(&replies[0]).1.output).unwrap(),
        MicaReply::NotFound
    );
    assert_eq!(r.worker.in_flight(), 0);
}

#[test]
fn duplicates_of_a_forwarded_mutation_wait_then_replay() {
    let mut r = rig();
    r.steer(THREE_CLASS, Target::Host);
    let args = three_args(0, 1);
    r.am(
        40,
        THREE,
        THREE_CLASS,
        AmFlags::empty(),
        &args,
        Flags::empty(),
    );
    r.poll();
    r.am(
        40,
        THREE,
        THREE_CLASS,
        AmFlags::empty(),
        &args,
        Flags::RETRANSMIT,
    );
    r.poll();
    assert!(
        r.replies().is_empty(),
        "in progress: the duplicate is dropped"
    );
    assert_eq!(r.stats.drops(Dropped::DuplicateInProgress), 1);
    assert_eq!(r.serve_host(), 1, "forwarded once");
    r.poll();
    let first = r.replies();
    assert_eq!(first.len(), 1);
    r.am(
        40,
        THREE,
        THREE_CLASS,
        AmFlags::empty(),
        &args,
        Flags::RETRANSMIT,
    );
    r.poll();
    assert_eq!(
        r.replies(),
        first,
        "completed: the host's reply is replayed"
    );
    assert_eq!(r.serve_host(), 0, "not forwarded again");
}

#[test]
fn one_sided_mutations_are_de_duplicated() {
    let mut r = rig();
    r.region_write(8, &0u64.to_le_bytes());
    let op = RemoteOp {
        region: REGION,
        key: KEY,
        offset: 8,
        body: OpBody::Faa { addend: 3 },
    };
    let mut m = Message::new(9, 0, Body::OneSided(OneSidedRepr::single(op)));
    r.send(0, &m);
    r.poll();
    let first = r.replies();
    m.flags = Flags::RETRANSMIT;
    r.send(0, &m);
    r.poll();
    assert_eq!(r.replies(), first);
    assert_eq!(r.region_word(8), 3, "the FAA ran once");
}

/// The finding of the attacker probe of 2026-12-06: a one-sided WRITE with a wrong key, sent
/// from a client's address with the id its next request will use, took a reply-cache entry,
/// and the client's real request under that id got the stored `bad_key` back and never ran.
#[test]
fn a_request_without_its_key_takes_nothing_its_client_needs() {
    let mut r = rig();
    r.region_write(8, &0u64.to_le_bytes());
    let forged = RemoteOp {
        region: REGION,
        key: KEY ^ 0x5a5a,
        offset: 8,
        body: OpBody::Write { data: &[0xee; 8] },
    };
    for _ in 0..3 {
        assert_eq!(r.one_sided(9, forged), Some(ErrorCode::BadKey));
        assert_eq!(r.worker.in_flight(), 0, "no slot held for it");
    }
    let real = RemoteOp {
        region: REGION,
        key: KEY,
        offset: 8,
        body: OpBody::Faa { addend: 3 },
    };
    assert_eq!(r.one_sided(9, real), None, "the real request ran");
    assert_eq!(r.region_word(8), 3);
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(l(&r.stats.bad_key), 3);
    assert_eq!(l(&r.stats.dup_replayed), 0);
}

/// A proven request whose id the reply cache remembers for another kind of request of the
/// same client is refused, named, counted, and not run; the first request's reply is not
/// handed to it.
#[test]
fn an_id_remembered_for_another_kind_of_request_is_refused_not_replayed() {
    let mut r = rig();
    r.region_write(8, &0u64.to_le_bytes());
    r.region_write(0, &10u64.to_le_bytes());
    let faa = RemoteOp {
        region: REGION,
        key: KEY,
        offset: 8,
        body: OpBody::Faa { addend: 3 },
    };
    assert_eq!(r.one_sided(21, faa), None);
    let args = three_args(0, 5);
    r.am(
        21,
        THREE,
        THREE_CLASS,
        AmFlags::empty(),
        &args,
        Flags::empty(),
    );
    r.poll();
    let replies = r.replies();
    let e = expect_error(&replies[0]);
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.detail.contains("another request"), "{}", e.detail);
    assert_eq!(r.region_word(0), 10, "the active message did not run");
    assert_eq!(r.region_word(8), 3, "nor did the FAA again");
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(l(&r.stats.dup_other), 1);
    assert_eq!(l(&r.stats.dup_replayed), 0);
}

/// Two findings of the attacker probe of 2026-12-06: active messages with a wrong capability
/// (1) took the fair scheduler's tenant accounts (32 invented tenant ids left every real
/// tenant sharing the last one) and (2) learnt which offloads exist and their classes.
#[test]
fn a_sender_that_proves_no_tenant_takes_no_account_and_learns_nothing() {
    let mut r = rig_fair(64, 64, FairConfig::default());
    for round in 0..4u32 {
        for k in 0..16u32 {
            let m = Message::new(
                u64::from(round * 16 + k + 1),
                THREE_CLASS,
                Body::AmRequest(AmRequestRepr {
                    offload: THREE,
                    tenant: 100 + round * 16 + k,
                    capability: 0x1234_5678,
                    flags: AmFlags::empty(),
                    args: &[],
                }),
            );
            r.send(THREE_CLASS, &m);
        }
        r.poll();
        for d in r.replies() {
            let e = expect_error(&d);
            assert_eq!(e.code, ErrorCode::Unauthorized, "{}", e.detail);
            assert!(!e.detail.contains("class"), "{}", e.detail);
        }
    }
    r.region_write(0, &10u64.to_le_bytes());
    r.three(900, 0, 5);
    r.three(901, 0, 5);
    r.poll();
    assert_eq!(r.region_word(0), 20);
    let counters = r.published_counters();
    let tenants: Vec<u32> = r.stats.tenant_counts().iter().map(|(t, _)| *t).collect();
    assert_eq!(tenants, vec![1], "only the proven tenant has an account");
    assert_eq!(counters["bad_capability"], 64);
}

/// Probe 14: a flood of requests that prove nothing (40 000 a second) cost the worker a
/// reply each, and a legitimate client lost 60 % of its throughput. Refusals to such senders
/// are now rate limited per worker (counted past the limit); proven senders are answered as
/// ever, and after a quiet second the unproven are told again.
#[test]
fn refusals_to_senders_that_prove_nothing_are_rate_limited_and_counted() {
    use naam_dataplane::runtime::worker::{UNPROVEN_BURST, UNPROVEN_REPLIES_PER_S};
    let mut r = rig();
    let junk = |id: u64| {
        Message::new(
            id,
            THREE_CLASS,
            Body::AmRequest(AmRequestRepr {
                offload: THREE,
                tenant: 1,
                capability: 0x1234_5678,
                flags: AmFlags::empty(),
                args: &[],
            }),
        )
    };
    let start = r.now;
    let n = 2_000u64;
    for id in 1..=n {
        r.send(THREE_CLASS, &junk(id));
    }
    r.region_write(0, &10u64.to_le_bytes());
    r.three(5_000, 0, 5);
    r.poll();
    let elapsed_s = (r.now - start) as f64 / 1e9;
    let replies = r.replies();
    let answered = replies
        .iter()
        .filter(|d| {
            matches!(Message::parse(d).map(|m| m.body),
                Ok(Body::Error(e)) if e.code == ErrorCode::Unauthorized)
        })
        .count() as u64;
    let limit = UNPROVEN_BURST + (UNPROVEN_REPLIES_PER_S as f64 * elapsed_s) as u64 + 1;
    assert!(
        answered >= UNPROVEN_BURST && answered <= limit,
        "{answered} refusals sent in {elapsed_s} s (limit {limit})"
    );
    // The proven request in the flood was served.
    assert_eq!(r.region_word(0), 15, "the legitimate message ran");
    let counters = r.published_counters();
    assert_eq!(counters["bad_capability"], n);
    assert_eq!(counters["drop.unproven_unanswered"], n - answered);
    // A second later a sender with a wrong key hears why again.
    r.now += 1_000_000_000;
    let _ = r.replies();
    r.send(THREE_CLASS, &junk(9_999));
    r.poll();
    let again = r.replies();
    assert_eq!(again.len(), 1);
    assert_eq!(expect_error(&again[0]).code, ErrorCode::Unauthorized);
}

#[test]
fn link_reset_answers_everything_in_flight() {
    let mut r = rig();
    r.steer(RECORD_CLASS, Target::Host);
    for id in 1..=3 {
        r.record(id, 0);
    }
    r.poll();
    assert_eq!(r.worker.in_flight(), 3);
    assert_eq!(r.worker.link_reset(&mut r.port), 3);
    let replies = r.replies();
    assert_eq!(replies.len(), 3);
    for d in &replies {
        assert_eq!(expect_error(d).code, ErrorCode::HostUnavailable);
    }
    assert_eq!(r.worker.in_flight(), 0);
    // Replies the old host still sends carry tokens nobody waits for.
    r.serve_host();
    r.poll();
    assert!(r.replies().is_empty());
    assert_eq!(r.stats.drops(Dropped::StaleToken), 3);
}

#[test]
fn replies_queued_before_the_host_died_are_still_delivered() {
    let mut r = rig();
    r.steer(RECORD_CLASS, Target::Host);
    r.record(1, 0);
    r.record(2, 0);
    r.poll();
    // The host answers the first only, then dies.
    {
        let qp = r.host_qp.as_mut().unwrap();
        let mut buf = vec![0u8; MSG_MAX];
        let got = qp.recv(&mut buf).unwrap().unwrap();
        let req = Message::parse(&buf[TOKEN_LEN..got.len]).unwrap();
        let reply = req.reply(Body::AmReply(AmReplyRepr {
            status: AmStatus::Done,
            executed_at: Location::Host,
            steps: 1,
            hint: None,
            output: b"ok",
        }));
        let mut out = vec![0u8; MSG_MAX];
        out[..TOKEN_LEN].copy_from_slice(&buf[..TOKEN_LEN]);
        let n = reply.emit(&mut out[REPLY_PREFIX..]).unwrap();
        qp.send(&out[..REPLY_PREFIX + n]).unwrap();
    }
    r.host_qp = None;
    r.host = None;
    r.poll();
    let mut replies = r.replies();
    replies.sort_by_key(|d| Message::parse(d).unwrap().request_id);
    assert_eq!(replies.len(), 2);
    assert_eq!(expect_am(&replies[0]).1.executed_at, Location::Host);
    assert_eq!(expect_error(&replies[1]).code, ErrorCode::HostUnavailable);
}

/// Counts the allocations of the threads that ask it to (the worker's own, in the test
/// below), and passes every request on to the system allocator.
struct CountingAlloc;

thread_local! {
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_if_on() {
    // `try_with`: a thread being torn down has no locals left, and allocates nothing we count.
    if COUNTING.try_with(|c| c.get()).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// contract of `GlobalAlloc` holds as it does for `System`; the counting touches only
// const-initialised thread-locals, which do not allocate.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_if_on();
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_if_on();
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        count_if_on();
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

/// Polls until every injected datagram is answered, counting the allocations made meanwhile.
fn allocations_while_draining(r: &mut Rig) -> u64 {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let mut idle = 0;
    while idle < 3 {
        let pending = r.port.pending() + r.worker.in_flight();
        let work = r.poll();
        idle = if work == 0 && pending == 0 {
            idle + 1
        } else {
            0
        };
    }
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(|a| a.get())
}

#[test]
fn the_worker_allocates_nothing_per_message() {
    // Issue 12 item 4: 10 000 messages of each bundled kind through the whole worker path
    // (parse, steering, reply cache, steps in the VM pool, ops on host memory over the link,
    // reply), after a warm-up, with zero allocations.
    const N: u64 = 10_000;
    // The counter sees this thread's allocations (else a zero below would prove nothing).
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    drop(std::hint::black_box(Vec::<u8>::with_capacity(64)));
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.with(|a| a.get()), 1);
    let mut r = rig_with(256, 64);
    r.port.discard_sent(true);
    let keys: Vec<Vec<u8>> = (0..64).map(|i| format!("key-{i}").into_bytes()).collect();
    let puts: Vec<_> = keys
        .iter()
        .map(|k| MicaArgs::put(&MICA, k, b"a value of some bytes").unwrap())
        .collect();
    let gets: Vec<_> = keys
        .iter()
        .map(|k| MicaArgs::get(&MICA, k).unwrap())
        .collect();
    let lookups: Vec<[u8; 24]> = (0..64)
        .map(|k| naam_handlers::btree::Args::lookup(BTREE_REGION, k * 10).to_bytes())
        .collect();
    let kinds: [(&str, u32, u16, Vec<&[u8]>); 3] = [
        (
            "mica_put",
            1,
            1,
            puts.iter().map(|a| a.as_bytes()).collect(),
        ),
        (
            "mica_get",
            0,
            0,
            gets.iter().map(|a| a.as_bytes()).collect(),
        ),
        (
            "btree_lookup",
            BTREE,
            BTREE_CLASS,
            lookups.iter().map(|a| a.as_slice()).collect(),
        ),
    ];
    let mut id = 1u64;
    let mut inject = |r: &mut Rig, offload: u32, class: u16, args: &[&[u8]], n: u64| {
        r.port.reserve(n as usize);
        for i in 0..n {
            r.am(
                id,
                offload,
                class,
                AmFlags::empty(),
                args[i as usize % args.len()],
                Flags::empty(),
            );
            id += 1;
        }
    };
    // Warm-up: every kind once through every slot, the reply cache and the VM pool.
    for (_, offload, class, args) in &kinds {
        inject(&mut r, *offload, *class, args, 500);
        allocations_while_draining(&mut r);
    }
    // Both ways the worker reaches host memory: mapped (shm) and posted (as over verbs).
    for posted in [false, true] {
        r.posted = posted;
        for (name, offload, class, args) in &kinds {
            let executed = r
                .stats
                .nic_executed
                .load(std::sync::atomic::Ordering::Relaxed);
            inject(&mut r, *offload, *class, args, N);
            let allocs = allocations_while_draining(&mut r);
            let done = r
                .stats
                .nic_executed
                .load(std::sync::atomic::Ordering::Relaxed)
                - executed;
            println!("{name} (posted: {posted}): {N} messages, {allocs} allocations");
            assert_eq!(done, N, "{name}: every message executed at the NIC");
            assert_eq!(
                allocs, 0,
                "{name} (posted: {posted}): allocations on the data path"
            );
        }
    }
}

/// Issue 14: the same FAA was applied twice after ~3 000 other mutations, the reply cache
/// having forgotten it within its client's retry window. Now nothing a client may still
/// retry is forgotten: a client that does not say which requests it finished is refused
/// (`busy`) once the cache is full of those, and one that says (its window) never is.
#[test]
fn a_mutation_is_applied_once_while_its_client_may_retry_whatever_follows() {
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let mut r = rig();
    const WORD: u64 = 512;
    let faa = |id: u64, window: u32| Message {
        window,
        ..Message::new(
            id,
            0,
            Body::OneSided(OneSidedRepr::single(RemoteOp {
                region: REGION,
                key: KEY,
                offset: WORD,
                body: OpBody::Faa { addend: 1 },
            })),
        )
    };
    // Outcome of each reply: Some(previous value) when applied, None when refused busy.
    let outcome = |bytes: &[u8]| match Message::parse(bytes).unwrap().body {
        Body::OneSidedReply(rep) => Some(rep.results()[0].previous),
        Body::Error(e) => {
            assert_eq!(e.code, ErrorCode::Busy, "{}", e.detail);
            // It says when the oldest entry may go: within the retention time.
            let after = e.retry_after_us.expect("a refusal says when to retry");
            assert!(u64::from(after) * 1000 <= naam_dataplane::runtime::DEDUP_RETAIN_NS);
            None
        }
        b => panic!("unexpected {b:?}"),
    };
    // 2 000 FAAs from a client that never says (one per millisecond, inside the retention
    // time of 3 s), then the first again, as its retransmission.
    let (mut applied, mut busy) = (0u64, 0u64);
    let mut first_reply = None;
    for id in 1..=2000u64 {
        r.send(0, &faa(id, 0));
        r.poll();
        for rep in r.replies() {
            match outcome(&rep) {
                Some(prev) => {
                    applied += 1;
                    if id == 1 {
                        first_reply = Some(prev);
                    }
                }
                None => busy += 1,
            }
        }
    }
    assert_eq!(r.region_word(WORD), applied, "every acknowledged FAA, once");
    assert!(busy > 0, "the cache filled up");
    // One client of one tenant: it is refused once it holds its share of each set (all but
    // one entry, left for other tenants), before the sets are full.
    assert_eq!(l(&r.stats.dedup_full) + l(&r.stats.dedup_over_share), busy);
    assert!(l(&r.stats.dedup_over_share) > 0);
    // And in the refused tenant's own counter.
    let refused: u64 = r
        .published_counters()
        .iter()
        .filter(|(n, _)| n.starts_with("tenant.") && n.ends_with(".refused"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(refused, busy);
    assert_eq!(l(&r.stats.dedup_evicted), 0, "nothing forgotten early");
    r.send(0, &faa(1, 0));
    r.poll();
    let replies = r.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(outcome(&replies[0]), first_reply, "the stored reply, again");
    assert_eq!(r.region_word(WORD), applied, "not applied twice");

    // Past the retention time the tenant gets room again (in the entry its share left free,
    // or in place of an expired one, counted `dedup_evicted`: the cache's unit tests).
    r.now += naam_dataplane::runtime::DEDUP_RETAIN_NS;
    r.send(0, &faa(5000, 0));
    r.poll();
    assert!(outcome(&r.replies()[0]).is_some());

    // A client that says how many of its requests are open is never refused.
    let before = r.region_word(WORD);
    for id in 10_000..13_000u64 {
        r.send(0, &faa(id, 4));
        r.poll();
        for rep in r.replies() {
            assert!(outcome(&rep).is_some(), "request {id} refused");
        }
    }
    assert_eq!(r.region_word(WORD), before + 3000);
}

/// Issue 17: a datagram that arrives during a poll waits for the poll to end, so under the
/// tenants' shares a poll takes from the port only as many packets as its budget pays for at
/// what packets have lately cost; the rest wait at the port for the next poll. First come,
/// first served takes full bursts.
#[test]
fn a_poll_takes_what_its_budget_pays_for() {
    let taken = |fair: FairConfig| {
        let mut r = rig_fair(64, 64, fair);
        for id in 1..=40 {
            r.record(id, 0);
        }
        let mut per_poll = Vec::new();
        for _ in 0..3 {
            r.now += 1_000_000;
            r.worker.poll(r.now, &mut r.port, &mut r.qp);
            per_poll.push(r.replies().len());
        }
        per_poll
    };
    // A budget of 1 ns pays for one packet once one has been measured (the first poll has
    // nothing to go by and takes a full burst).
    let tiny = FairConfig {
        poll_budget_ns: 1,
        ..FairConfig::default()
    };
    assert_eq!(taken(tiny), [32, 1, 1]);
    let fcfs = FairConfig {
        enabled: false,
        poll_budget_ns: 1,
        ..FairConfig::default()
    };
    assert_eq!(taken(fcfs), [32, 8, 0]);
}

/// Issue 17: under first come, first served a tenant that fills the bursts makes another
/// tenant's message wait for all of them. With the tenants' shares, a burst is served in fair
/// order (the tenant that used the least goes next), and a worker that is behind (the burst
/// filled the batch) refuses a tenant's further messages once the poll budget is spent, with
/// a retry-after; both counted per tenant.
#[test]
fn a_burst_is_served_in_fair_order_and_a_worker_behind_refuses_the_excess() {
    let light = |r: &mut Rig, id: u64| r.tenant2_spin(id);
    // `heavy` messages of tenant 1, then one of tenant 2, in one burst (32 fill it). Returns
    // the classes of the replies in order, and the refusals.
    let burst = |fair: FairConfig, heavy: u64| {
        let mut r = rig_fair(64, 64, fair);
        for id in 1..=heavy {
            r.record(id, 0);
        }
        light(&mut r, 1000);
        r.poll();
        let bursts = r.port.take_burst_sizes();
        let mut order = Vec::new();
        let mut refused = 0u64;
        for d in r.replies() {
            let m = Message::parse(&d).unwrap();
            match m.body {
                Body::AmReply(a) => {
                    assert_eq!(a.status, AmStatus::Done);
                    order.push(m.class);
                }
                Body::Error(e) => {
                    assert_eq!(m.class, RECORD_CLASS, "tenant 2 refused: {}", e.detail);
                    assert_eq!(e.code, ErrorCode::Busy, "{}", e.detail);
                    assert!(e.detail.contains("tenant 1"), "{}", e.detail);
                    assert_eq!(e.retry_after_us, Some(1000));
                    refused += 1;
                }
                b => panic!("unexpected {b:?}"),
            }
        }
        (order, refused, bursts, r.published_counters())
    };
    let spent = FairConfig {
        poll_budget_ns: 0,
        ..FairConfig::default()
    };

    // Behind, budget spent at once: each tenant gets its first message, the rest of tenant
    // 1's are refused.
    let (order, refused, bursts, c) = burst(spent.clone(), 31);
    assert_eq!(order, [RECORD_CLASS, SPIN_CLASS]);
    assert_eq!(refused, 30);
    // Each tenant's replies leave before the next tenant's run: tenant 2's alone, not after
    // whatever tenant 1's messages cost.
    assert_eq!(bursts, [1, 1, 30]);
    assert_eq!(c["tenant.1.refused"], 30);
    assert_eq!(c["tenant.1.admitted"], 1);
    assert_eq!(c["tenant.2.admitted"], 1);
    assert_eq!(c["tenant.2.refused"], 0);
    assert!(c["tenant.2.run_ns"] > 0 && c["tenant.1.run_ns"] > 0);

    // Not behind (the burst did not fill the batch): everything is served, tenant 2's
    // message second, not last.
    let (order, refused, bursts, _) = burst(spent, 20);
    assert_eq!(refused, 0);
    assert_eq!(order.len(), 21);
    assert_eq!(order[1], SPIN_CLASS);
    assert_eq!(bursts, [1, 1, 19]);

    // First come, first served: everything, in arrival order.
    let fcfs = FairConfig {
        enabled: false,
        poll_budget_ns: 0,
        ..FairConfig::default()
    };
    let (order, refused, bursts, c) = burst(fcfs, 31);
    assert_eq!(refused, 0);
    assert_eq!(order.len(), 32);
    assert_eq!(bursts, [32]);
    assert_eq!(order[31], SPIN_CLASS);
    assert_eq!(c["tenant.1.admitted"], 31);
}

/// A forged source address must not make a NIC worker an amplifier: a sender that proved no
/// capability or key gets back no more bytes than it sent (the detail is cut), while a
/// proven sender's error keeps its whole detail.
#[test]
fn senders_that_prove_nothing_get_no_more_bytes_than_they_sent() {
    let mut r = rig();
    let request = |id: u64, tenant: u32, capability: u64, offload: u32| {
        let m = Message::new(
            id,
            RECORD_CLASS,
            Body::AmRequest(AmRequestRepr {
                offload,
                tenant,
                capability,
                flags: AmFlags::empty(),
                args: &[],
            }),
        );
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b).unwrap();
        b
    };
    // A bare header (an AM request cut to its first 24 bytes), an unproven capability, a
    // control request sent to a data port: each answered, each no larger than itself.
    let mut header = request(1, 1, cap(), RECORD);
    header.truncate(HEADER_LEN);
    let forged = request(2, 1, cap() ^ 1, RECORD);
    let control = {
        let m = Message::new(
            3,
            RECORD_CLASS,
            Body::Stats(PageRequestRepr { start: 0, max: 0 }),
        );
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b).unwrap();
        b
    };
    for d in [&header, &forged, &control] {
        r.port.inject(client(), RECORD_CLASS, d);
    }
    // Proven, naming no offload: the whole detail.
    let unknown = request(4, 1, cap(), 999);
    r.port.inject(client(), RECORD_CLASS, &unknown);
    r.poll();
    let mut replies = r.replies();
    replies.sort_by_key(|d| Message::parse(d).unwrap().request_id);
    // The bare header: not even an empty error (28 bytes) fits in its 24, so no answer.
    let ids: Vec<u64> = replies
        .iter()
        .map(|d| Message::parse(d).unwrap().request_id)
        .collect();
    assert_eq!(ids, [2, 3, 4]);
    for (d, sent) in replies.iter().zip([forged.len(), control.len()]) {
        let code = expect_error(d).code;
        assert!(d.len() <= sent, "{code:?}: {} bytes for {sent}", d.len());
    }
    assert_eq!(expect_error(&replies[0]).code, ErrorCode::Unauthorized);
    assert_eq!(expect_error(&replies[2]).detail, "no offload 999");
    assert!(r.published_counters()["drop.malformed"] >= 1);
}
