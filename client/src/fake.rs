//! An in-process fake server for tests (feature `fake-server`): UDP sockets on
//! `base .. base + classes` and a control socket on `base - 1`, answering with the core's
//! registry, VM pool and executor on local memory, the way the dataplane and host agent do.
//!
//! It follows `docs/protocol.md` where the client can observe it — request ids echoed,
//! replies from the port the request went to, de-duplication by (client address, request id)
//! with remembered replies, `bad_request` for a class that does not match the port — and adds
//! knobs to test the client: drop the next N requests, put a placement hint in replies, and a
//! log of every request seen (id, RETRANSMIT flag, kind).

use naam_core::abi::{Ctx, OpKind};
use naam_core::elf;
use naam_core::exec::{Executor, Outcome};
use naam_core::memory::{LocalMemory, OwnedRegion, RegionMem};
use naam_core::pool::{OffloadSpec, Registry, VmPool};
use naam_core::region::{Perms, RegionDesc, RegionTable};
use naam_core::verifier::{self, VerifiedProgram, VerifierConfig};
use naam_core::vm::Engine;
use naam_core::wire::{
    AmFlags, AmReplyRepr, AmStatus, Body, EntryList, ErrorCode, ErrorRepr, Flags, KvEntry,
    KvListRepr, ListReplyRepr, Location, Message, OffloadEntry, OffloadIdRepr, OneSidedReplyRepr,
    OneSidedRepr, OpBody, OpResult, PagedRepr, PlacementHint, MAX_DATAGRAM, ONE_SIDED_MAX_LEN,
};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::bundled;

/// One request the fake received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub request_id: u64,
    pub retransmit: bool,
    pub kind: naam_core::wire::Kind,
    pub class: u16,
    /// Dropped on purpose (not executed, not answered).
    pub dropped: bool,
    /// Answered from the de-duplication cache (not executed again).
    pub deduplicated: bool,
}

/// Counters of the fake.
#[derive(Debug, Default)]
pub struct FakeCounters {
    pub executed_am: AtomicU64,
    pub executed_one_sided: AtomicU64,
    pub dedup_hits: AtomicU64,
    pub dropped: AtomicU64,
    pub bad_requests: AtomicU64,
}

/// An application the fake serves: its regions are built at start, its parameters answered
/// to `Describe`.
pub struct App {
    pub name: String,
    pub params: Vec<(String, u64)>,
}

struct Shared {
    registry: Arc<Registry>,
    regions: RegionTable,
    mem: LocalMemory,
    apps: Vec<App>,
    dedup: Mutex<Dedup>,
    drop_next: AtomicU32,
    drop_replies: AtomicU32,
    busy_next: AtomicU32,
    /// The retry-after hint of those `busy` replies, in µs (0: none).
    busy_retry_after_us: AtomicU32,
    hint: Mutex<Option<PlacementHint>>,
    seen: Mutex<Vec<Seen>>,
    counters: FakeCounters,
    stop: AtomicBool,
    base: u16,
    /// Keeps the regions' memory alive.
    _owned: Vec<OwnedRegion>,
}

#[derive(Default)]
struct Dedup {
    replies: HashMap<(SocketAddr, u64), Vec<u8>>,
    order: VecDeque<(SocketAddr, u64)>,
}

const DEDUP_MAX: usize = 65536;

/// A running fake server. Dropping it stops its threads.
pub struct FakeServer {
    pub data: SocketAddr,
    pub control: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// Size of the scratch region (id 4, the `record` region): words for one-sided tests.
pub const SCRATCH_LEN: u64 = 64 * 1024;

/// Key of region `id` in fake servers (distinct per server instance through `salt`).
fn region_key(salt: u64, id: u32) -> u64 {
    naam_core::helpers::hash64(salt ^ 0x6b65_795f_6b65_795f, id as u64) | 1
}

impl FakeServer {
    /// Starts a fake with `classes` steering classes on free ports of 127.0.0.1, serving the
    /// `record` application (region 4, offload 5) and whatever `setup` adds.
    pub fn start(classes: u16) -> std::io::Result<Self> {
        Self::start_with(classes, |_, _, _| Ok(Vec::new()))
    }

    /// A fake serving every bundled application the client knows: `record`, and `mica` and
    /// `btree` when their handler modules are available.
    pub fn start_apps(classes: u16) -> std::io::Result<Self> {
        Self::start_with(classes, |registry, regions, mem| {
            Ok(vec![
                btree_app(registry, regions, mem)?,
                mica_app(registry, regions, mem)?,
            ])
        })
    }

    /// As [`Self::start`]; `setup(registry, regions, mem)` registers more offloads and regions
    /// and returns the applications to describe.
    pub fn start_with(
        classes: u16,
        setup: impl FnOnce(
            &Arc<Registry>,
            &mut RegionTable,
            &mut LocalMemory,
        ) -> std::io::Result<Vec<(App, Vec<OwnedRegion>)>>,
    ) -> std::io::Result<Self> {
        let (control_sock, socks, base) = bind_ports(classes)?;
        let salt = base as u64 ^ ((std::process::id() as u64) << 16);
        let registry = Registry::new();
        let mut regions = RegionTable::new();
        let mut mem = LocalMemory::new();
        // The record application: region 4 holds 64-byte records, also used as scratch
        // memory by one-sided tests.
        let scratch = OwnedRegion::zeroed(SCRATCH_LEN as usize);
        let sm = scratch.mem();
        for w in 0..SCRATCH_LEN / 8 {
            sm.store_u64(w * 8, w.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        let rid = bundled::region::RECORD;
        regions
            .insert(RegionDesc {
                id: rid,
                tenant: bundled::TENANT,
                len: SCRATCH_LEN,
                perms: Perms::ALL,
                key: region_key(salt, rid),
            })
            .map_err(std::io::Error::other)?;
        mem.map(rid, sm);
        let o = bundled::RECORD;
        register_bundled(&registry, o)?;
        let mut apps = vec![App {
            name: "record".into(),
            params: vec![
                ("region".into(), rid as u64),
                ("key".into(), region_key(salt, rid)),
                ("len".into(), SCRATCH_LEN),
            ],
        }];
        let mut owned = vec![scratch];
        for (app, regs) in setup(&registry, &mut regions, &mut mem)? {
            apps.push(app);
            owned.extend(regs);
        }
        let shared = Arc::new(Shared {
            registry,
            regions,
            mem,
            apps,
            dedup: Mutex::new(Dedup::default()),
            drop_next: AtomicU32::new(0),
            drop_replies: AtomicU32::new(0),
            busy_next: AtomicU32::new(0),
            busy_retry_after_us: AtomicU32::new(0),
            hint: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
            counters: FakeCounters::default(),
            stop: AtomicBool::new(false),
            base,
            _owned: owned,
        });
        let data = socks[0].local_addr()?;
        let control = control_sock.local_addr()?;
        let mut threads = Vec::new();
        for (class, sock) in socks.into_iter().enumerate() {
            let sh = shared.clone();
            threads.push(std::thread::spawn(move || {
                serve(sh, sock, Some(class as u16));
            }));
        }
        let sh = shared.clone();
        threads.push(std::thread::spawn(move || serve(sh, control_sock, None)));
        Ok(Self {
            data,
            control,
            shared,
            threads,
        })
    }

    /// Drops the next `n` requests on the data ports (not executed, not answered).
    pub fn drop_next(&self, n: u32) {
        self.shared.drop_next.store(n, Ordering::SeqCst);
    }

    /// Executes the next `n` requests on the data ports but loses their replies (the
    /// de-duplication cache still remembers them).
    pub fn drop_replies(&self, n: u32) {
        self.shared.drop_replies.store(n, Ordering::SeqCst);
    }

    /// Answers the next `n` requests on the data ports with `busy` (not executed, not
    /// remembered, so the retry executes).
    pub fn busy_next(&self, n: u32) {
        self.busy_next_retry_after(n, Duration::ZERO);
    }

    /// Like [`FakeServer::busy_next`], the replies saying to retry after `after` (none when
    /// zero).
    pub fn busy_next_retry_after(&self, n: u32, after: Duration) {
        let us = u32::try_from(after.as_micros()).unwrap_or(u32::MAX);
        self.shared.busy_retry_after_us.store(us, Ordering::SeqCst);
        self.shared.busy_next.store(n, Ordering::SeqCst);
    }

    /// Puts `hint` in AM replies of its class to requests that set `EXEC_HINT`.
    pub fn set_hint(&self, hint: Option<PlacementHint>) {
        *self.shared.hint.lock().expect("hint lock") = hint;
    }

    /// Every request received so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("seen lock").clone()
    }

    pub fn counters(&self) -> &FakeCounters {
        &self.shared.counters
    }

    /// The parameters `Describe(app)` answers.
    pub fn app_params(&self, app: &str) -> Option<Vec<(String, u64)>> {
        self.shared
            .apps
            .iter()
            .find(|a| a.name == app)
            .map(|a| a.params.clone())
    }

    /// Region `id`'s memory, to check what ops did.
    pub fn region(&self, id: u32) -> Option<RegionMem> {
        self.shared.mem.get(id).cloned()
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.shared.registry
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Registers bundled offload `o` (loaded and verified) under its fixed id.
fn register_bundled(registry: &Registry, o: bundled::BundledOffload) -> std::io::Result<()> {
    let v = o
        .load(&VerifierConfig::default())
        .map_err(std::io::Error::other)?;
    register_verified(registry, o, Arc::new(v))
}

/// Registers an already verified bundled program under its fixed id.
pub fn register_verified(
    registry: &Registry,
    o: bundled::BundledOffload,
    program: Arc<VerifiedProgram>,
) -> std::io::Result<()> {
    registry
        .register_as(
            o.id,
            OffloadSpec {
                name: o.name.into(),
                tenant: bundled::TENANT,
                class: o.class,
                read_only: o.read_only,
            },
            program,
        )
        .map(|_| ())
        .map_err(std::io::Error::other)
}

/// Binds `classes` consecutive UDP ports on 127.0.0.1 and the one below them.
fn bind_ports(classes: u16) -> std::io::Result<(UdpSocket, Vec<UdpSocket>, u16)> {
    let mut seed = (std::process::id() as u64).wrapping_mul(0x9e37_79b9) ^ now_nanos();
    for _ in 0..200 {
        seed = naam_core::helpers::hash64(seed, 7);
        let base = 20_000 + (seed % 30_000) as u16;
        let Ok(control) = UdpSocket::bind(("127.0.0.1", base - 1)) else {
            continue;
        };
        let socks: std::io::Result<Vec<UdpSocket>> = (0..classes)
            .map(|c| UdpSocket::bind(("127.0.0.1", base + c)))
            .collect();
        if let Ok(socks) = socks {
            return Ok((control, socks, base));
        }
    }
    Err(std::io::Error::other("no free run of UDP ports"))
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One socket's loop: `class` is `None` for the control port.
fn serve(sh: Arc<Shared>, sock: UdpSocket, class: Option<u16>) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(20)));
    let mut pool = VmPool::new(sh.registry.clone(), Engine::native());
    let mut exec = Executor::default();
    let mut ctx = Ctx::boxed();
    let mut mem = sh.mem.clone();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = vec![0u8; MAX_DATAGRAM];
    while !sh.stop.load(Ordering::SeqCst) {
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let Ok(msg) = Message::parse(&buf[..n]) else {
            sh.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut seen = Seen {
            request_id: msg.request_id,
            retransmit: msg.flags.contains(Flags::RETRANSMIT),
            kind: msg.kind(),
            class: msg.class,
            dropped: false,
            deduplicated: false,
        };
        if class.is_some()
            && sh
                .drop_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
                .is_ok()
        {
            seen.dropped = true;
            sh.counters.dropped.fetch_add(1, Ordering::Relaxed);
            sh.seen.lock().expect("seen").push(seen);
            continue;
        }
        let key = (src, msg.request_id);
        let remembered = sh.dedup.lock().expect("dedup").replies.get(&key).cloned();
        if let Some(reply) = remembered {
            seen.deduplicated = true;
            sh.counters.dedup_hits.fetch_add(1, Ordering::Relaxed);
            sh.seen.lock().expect("seen").push(seen);
            if !lose_reply(&sh, class) {
                let _ = sock.send_to(&reply, src);
            }
            continue;
        }
        sh.seen.lock().expect("seen").push(seen);
        if class.is_some()
            && sh
                .busy_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
                .is_ok()
        {
            let mut busy = ErrorRepr::new(ErrorCode::Busy, "queues full");
            busy.retry_after_us =
                Some(sh.busy_retry_after_us.load(Ordering::SeqCst)).filter(|&us| us > 0);
            if let Ok(len) = msg.reply(Body::Error(busy)).emit(&mut out) {
                let _ = sock.send_to(&out[..len], src);
            }
            continue;
        }
        pool.sync();
        let len = handle(
            &sh, &msg, class, &mut pool, &mut exec, &mut ctx, &mut mem, &mut out,
        );
        let Some(len) = len else { continue };
        let reply = &out[..len];
        // Replies that mean "not executed" are not remembered (none here), the rest are.
        let mut d = sh.dedup.lock().expect("dedup");
        d.replies.insert(key, reply.to_vec());
        d.order.push_back(key);
        if d.order.len() > DEDUP_MAX {
            if let Some(old) = d.order.pop_front() {
                d.replies.remove(&old);
            }
        }
        drop(d);
        if !lose_reply(&sh, class) {
            let _ = sock.send_to(reply, src);
        }
    }
}

/// Whether to lose this reply (fault injection on the data ports).
fn lose_reply(sh: &Shared, class: Option<u16>) -> bool {
    let lose = class.is_some()
        && sh
            .drop_replies
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
            .is_ok();
    if lose {
        sh.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }
    lose
}

fn error(msg: &Message<'_>, code: ErrorCode, detail: &str, out: &mut [u8]) -> Option<usize> {
    let detail = &detail[..detail.len().min(naam_core::wire::DETAIL_MAX)];
    msg.reply(Body::Error(ErrorRepr::new(code, detail)))
        .emit(out)
        .ok()
}

#[allow(clippy::too_many_arguments)]
fn handle(
    sh: &Shared,
    msg: &Message<'_>,
    class: Option<u16>,
    pool: &mut VmPool,
    exec: &mut Executor,
    ctx: &mut Ctx,
    mem: &mut LocalMemory,
    out: &mut [u8],
) -> Option<usize> {
    if let Some(c) = class {
        if msg.class != c {
            sh.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error(
                msg,
                ErrorCode::BadRequest,
                "class does not match the port",
                out,
            );
        }
    }
    match (&msg.body, class) {
        (Body::AmRequest(req), Some(c)) => {
            let Some(entry) = pool.get(req.offload) else {
                return error(msg, ErrorCode::UnknownOffload, "", out);
            };
            if entry.offload.tenant != req.tenant {
                return error(msg, ErrorCode::WrongTenant, "", out);
            }
            if entry.offload.class != c {
                sh.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                return error(
                    msg,
                    ErrorCode::BadRequest,
                    "offload belongs to another class",
                    out,
                );
            }
            sh.counters.executed_am.fetch_add(1, Ordering::Relaxed);
            ctx.start(req.args);
            let outcome = exec.run(&entry.vm, req.tenant, &sh.regions, mem, ctx);
            let hint = if req.flags.contains(AmFlags::EXEC_HINT) {
                sh.hint.lock().expect("hint").filter(|h| h.class == c)
            } else {
                None
            };
            let (status, steps) = match outcome {
                Outcome::Done { steps } => (AmStatus::Done, steps),
                Outcome::Aborted { code, steps } => (AmStatus::Aborted(code), steps),
                Outcome::Failed { error: e, .. } => {
                    return error(msg, ErrorCode::from(&e), &e.to_string(), out)
                }
            };
            let output = match status {
                AmStatus::Done => ctx.out().unwrap_or_default(),
                AmStatus::Aborted(_) => &[],
            };
            msg.reply(Body::AmReply(AmReplyRepr {
                status,
                executed_at: Location::Host,
                steps,
                hint,
                output,
            }))
            .emit(out)
            .ok()
        }
        (Body::OneSided(req), Some(_)) => {
            sh.counters
                .executed_one_sided
                .fetch_add(1, Ordering::Relaxed);
            one_sided(sh, msg, req, out)
        }
        (Body::Register(r), None) => {
            let loaded = elf::load_program(r.object, r.section)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    verifier::verify(&p, &VerifierConfig::default()).map_err(|e| e.to_string())
                });
            let v = match loaded {
                Ok(v) => Arc::new(v),
                Err(e) => return error(msg, ErrorCode::InvalidProgram, &e, out),
            };
            let spec = OffloadSpec {
                name: r.name.into(),
                tenant: r.tenant,
                class: r.class,
                read_only: r.read_only,
            };
            let id = (bundled::FIRST_DYNAMIC_ID..)
                .find(|&i| {
                    sh.registry.get(i).is_none()
                        && sh.registry.register_as(i, spec.clone(), v.clone()).is_ok()
                })
                .expect("a free id");
            msg.reply(Body::RegisterReply(OffloadIdRepr { id }))
                .emit(out)
                .ok()
        }
        (Body::Unregister(r), None) => match sh.registry.unregister(r.id) {
            Ok(_) => msg.reply(Body::Ack).emit(out).ok(),
            Err(_) => error(msg, ErrorCode::UnknownOffload, "", out),
        },
        (Body::List(p), None) => {
            let all = sh.registry.list();
            let entries: Vec<OffloadEntry<'_>> = all
                .iter()
                .filter(|o| o.id >= p.start)
                .map(|o| OffloadEntry {
                    id: o.id,
                    name: &o.name,
                    tenant: o.tenant,
                    class: o.class,
                    read_only: o.read_only,
                    insn_count: o.program.insn_count() as u32,
                    worst_case: o.program.worst_case_insns() as u32,
                })
                .collect();
            // Small pages (at most 4) so clients exercise paging.
            let take = entries.len().min(4);
            let more = take < entries.len();
            let page: ListReplyRepr<'_> = PagedRepr {
                more,
                next: if more { entries[take].id } else { 0 },
                entries: EntryList::from_slice(&entries[..take]),
            };
            msg.reply(Body::ListReply(page)).emit(out).ok()
        }
        (Body::Stats(p), None) => {
            let c = &sh.counters;
            let values = [
                ("am_executed", c.executed_am.load(Ordering::Relaxed)),
                (
                    "one_sided_executed",
                    c.executed_one_sided.load(Ordering::Relaxed),
                ),
                ("dedup_hits", c.dedup_hits.load(Ordering::Relaxed)),
                ("dropped", c.dropped.load(Ordering::Relaxed)),
                ("bad_requests", c.bad_requests.load(Ordering::Relaxed)),
                ("offloads", sh.registry.len() as u64),
                ("base_port", sh.base as u64),
            ];
            let entries: Vec<KvEntry<'_>> = values
                .iter()
                .skip(p.start as usize)
                .map(|&(name, value)| KvEntry { name, value })
                .collect();
            let page: KvListRepr<'_> = PagedRepr::last(&entries);
            msg.reply(Body::StatsReply(page)).emit(out).ok()
        }
        (Body::Describe(d), None) => {
            let Some(app) = sh.apps.iter().find(|a| a.name == d.app) else {
                return error(msg, ErrorCode::UnknownApp, d.app, out);
            };
            let entries: Vec<KvEntry<'_>> = app
                .params
                .iter()
                .skip(d.start as usize)
                .map(|(name, value)| KvEntry {
                    name,
                    value: *value,
                })
                .collect();
            let page: KvListRepr<'_> = PagedRepr::last(&entries);
            msg.reply(Body::DescribeReply(page)).emit(out).ok()
        }
        _ => error(msg, ErrorCode::Unsupported, "not on this port", out),
    }
}

fn one_sided(
    sh: &Shared,
    msg: &Message<'_>,
    req: &OneSidedRepr<'_>,
    out: &mut [u8],
) -> Option<usize> {
    let mut data = vec![0u8; 4 * ONE_SIDED_MAX_LEN];
    let mut spans = [(0usize, 0usize); 4];
    let mut at = 0;
    let mut results: Vec<(OpKind, Option<ErrorCode>, u64)> = Vec::new();
    for (i, op) in req.ops().iter().enumerate() {
        let kind = op.body.kind();
        let len = match op.body {
            OpBody::Read { len } => len as u64,
            OpBody::Write { data } => data.len() as u64,
            _ => 8,
        };
        let check = || -> Result<RegionMem, ErrorCode> {
            let desc = sh.regions.get(op.region).ok_or(ErrorCode::NoSuchRegion)?;
            if desc.key != op.key {
                return Err(ErrorCode::BadKey);
            }
            if !desc.perms.contains(Perms::needed_by(kind)) {
                return Err(ErrorCode::PermissionDenied);
            }
            if len == 0 {
                return Err(ErrorCode::OpMalformed);
            }
            if op.offset.checked_add(len).is_none_or(|e| e > desc.len) {
                return Err(ErrorCode::OutOfBounds);
            }
            if matches!(kind, OpKind::Cas | OpKind::Faa) && op.offset % 8 != 0 {
                return Err(ErrorCode::Misaligned);
            }
            sh.mem.get(op.region).cloned().ok_or(ErrorCode::Memory)
        };
        let r = match check() {
            Err(code) => (kind, Some(code), 0),
            Ok(m) => match op.body {
                OpBody::Read { len } => {
                    let dst = &mut data[at..at + len as usize];
                    m.read(op.offset, dst);
                    spans[i] = (at, len as usize);
                    at += len as usize;
                    (kind, None, 0)
                }
                OpBody::Write { data } => {
                    m.write(op.offset, data);
                    (kind, None, 0)
                }
                OpBody::Cas { expected, desired } => {
                    (kind, None, m.cas(op.offset, expected, desired).unwrap_or(0))
                }
                OpBody::Faa { addend } => (kind, None, m.faa(op.offset, addend).unwrap_or(0)),
            },
        };
        results.push(r);
    }
    let res: Vec<OpResult<'_>> = results
        .iter()
        .enumerate()
        .map(|(i, &(kind, error, previous))| OpResult {
            kind,
            error,
            previous,
            data: if error.is_none() && kind == OpKind::Read {
                &data[spans[i].0..spans[i].0 + spans[i].1]
            } else {
                &[]
            },
        })
        .collect();
    let repr = OneSidedReplyRepr::new(&res).ok()?;
    msg.reply(Body::OneSidedReply(repr)).emit(out).ok()
}

/// Keys of the fake's B-tree: `0, 10, 20, ...`; the value of key `k` is [`btree_value`].
pub const BTREE_KEYS: u64 = 2000;
pub const BTREE_STEP: u64 = 10;

pub fn btree_value(key: u64) -> u64 {
    key * 3 + 1
}

/// The B-tree application: region 3 (read-only to handlers and clients), offloads 3 and 4.
fn btree_app(
    registry: &Arc<Registry>,
    regions: &mut RegionTable,
    mem: &mut LocalMemory,
) -> std::io::Result<(App, Vec<OwnedRegion>)> {
    use naam_handlers::btree::{BTree, BTreeConfig};
    let cfg = BTreeConfig::default();
    let len = cfg.region_len(BTREE_KEYS, 0);
    let region = OwnedRegion::zeroed(len);
    let tree = BTree::bulk_load(
        region.mem(),
        cfg,
        (0..BTREE_KEYS).map(|i| (i * BTREE_STEP, btree_value(i * BTREE_STEP))),
    )
    .map_err(std::io::Error::other)?;
    let id = bundled::region::BTREE;
    let key = naam_core::helpers::hash64(region.mem().base().as_ptr() as u64, id as u64) | 1;
    regions
        .insert(RegionDesc {
            id,
            tenant: bundled::TENANT,
            len: len as u64,
            perms: Perms::READ,
            key,
        })
        .map_err(std::io::Error::other)?;
    mem.map(id, region.mem());
    for o in [bundled::BTREE_LOOKUP, bundled::BTREE_SCAN] {
        register_bundled(registry, o)?;
    }
    let app = App {
        name: "btree".into(),
        params: vec![
            ("region".into(), id as u64),
            ("root".into(), tree.root()),
            ("key".into(), key),
            ("depth".into(), tree.height() as u64),
            ("keys".into(), tree.len()),
        ],
    };
    Ok((app, vec![region]))
}

/// Keys the fake's MICA table is sized for (it starts empty).
pub const MICA_KEYS: u64 = 20_000;

/// The MICA application: regions 1 (index) and 2 (log), offloads 0, 1 and 2.
fn mica_app(
    registry: &Arc<Registry>,
    regions: &mut RegionTable,
    mem: &mut LocalMemory,
) -> std::io::Result<(App, Vec<OwnedRegion>)> {
    use naam_handlers::mica::{MicaGeometry, MicaTable};
    let (ir, lr) = (bundled::region::MICA_INDEX, bundled::region::MICA_LOG);
    let geom = MicaGeometry::for_keys(MICA_KEYS, 64).with_regions(ir, lr);
    let index = OwnedRegion::zeroed(geom.index_len() as usize);
    let log = OwnedRegion::zeroed(geom.log_len() as usize);
    MicaTable::format(geom, index.mem(), log.mem()).map_err(std::io::Error::other)?;
    let salt = index.mem().base().as_ptr() as u64;
    let mut keys = [0u64; 2];
    for (k, (id, len, m)) in keys.iter_mut().zip([
        (ir, geom.index_len(), index.mem()),
        (lr, geom.log_len(), log.mem()),
    ]) {
        *k = naam_core::helpers::hash64(salt, id as u64) | 1;
        regions
            .insert(RegionDesc {
                id,
                tenant: bundled::TENANT,
                len,
                perms: Perms::ALL,
                key: *k,
            })
            .map_err(std::io::Error::other)?;
        mem.map(id, m);
    }
    for o in [bundled::MICA_GET, bundled::MICA_PUT, bundled::MICA_DELETE] {
        register_bundled(registry, o)?;
    }
    let app = App {
        name: "mica".into(),
        params: vec![
            ("index_region".into(), ir as u64),
            ("log_region".into(), lr as u64),
            ("buckets".into(), geom.bucket_count),
            ("overflow".into(), geom.overflow_count),
            ("log_size".into(), geom.log_size),
            ("key_len".into(), 16),
            ("index_key".into(), keys[0]),
            ("log_key".into(), keys[1]),
        ],
    };
    Ok((app, vec![index, log]))
}
