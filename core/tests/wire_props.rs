//! Property tests of the wire format, bounded to a few seconds (the `wire_parse` fuzz target in
//! `fuzz/` runs the same properties without a bound):
//! - arbitrary bytes never panic the parser, and whatever parses re-emits to itself;
//! - mutated valid messages never panic the parser;
//! - `emit` then `parse` gives back the same message for arbitrary messages.

use naam_core::abi::{OpKind, ARGS_MAX, OUT_MAX};
use naam_core::wire::*;
use proptest::prelude::*;

/// An owned description of a message, from which a borrowing [`Message`] is built.
#[derive(Debug, Clone)]
enum Spec {
    AmRequest {
        offload: u32,
        tenant: u32,
        exec_hint: bool,
        args: Vec<u8>,
    },
    AmReply {
        aborted: Option<u32>,
        at: Location,
        steps: u32,
        hint: Option<PlacementHint>,
        out: Vec<u8>,
    },
    Error {
        code: ErrorCode,
        detail: String,
        retry_after_us: Option<u32>,
    },
    OneSided(Vec<OpSpec>),
    OneSidedReply(Vec<ResultSpec>),
    Register {
        name: String,
        tenant: u32,
        class: u16,
        read_only: bool,
        section: Option<String>,
        object: Vec<u8>,
    },
    RegisterReply(u32),
    Unregister(u32),
    List(u32, u16),
    ListReply {
        more: Option<u32>,
        entries: Vec<(u32, String, u32, u16, bool, u32)>,
    },
    Stats(u32, u16),
    StatsReply {
        more: Option<u32>,
        entries: Vec<(String, u64)>,
    },
    Describe {
        app: String,
        start: u32,
    },
    DescribeReply {
        more: Option<u32>,
        entries: Vec<(String, u64)>,
    },
    Ack,
}

#[derive(Debug, Clone)]
struct OpSpec {
    region: u32,
    key: u64,
    offset: u64,
    body: BodySpec,
}

#[derive(Debug, Clone)]
enum BodySpec {
    Read(u32),
    Write(Vec<u8>),
    Cas(u64, u64),
    Faa(u64),
}

#[derive(Debug, Clone)]
struct ResultSpec {
    kind: OpKind,
    error: Option<ErrorCode>,
    previous: u64,
    data: Vec<u8>,
}

fn location() -> impl Strategy<Value = Location> {
    prop_oneof![
        Just(Location::Client),
        Just(Location::Nic),
        Just(Location::Host)
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL.to_vec())
}

/// Up to 16 characters of any script: at most 64 bytes of UTF-8, so within NAME_MAX.
fn name() -> impl Strategy<Value = String> {
    "\\PC{0,16}"
}

fn nonempty_name() -> impl Strategy<Value = String> {
    "\\PC{1,16}"
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn more() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(any::<u32>())
}

fn kvs() -> impl Strategy<Value = Vec<(String, u64)>> {
    prop::collection::vec((name(), any::<u64>()), 0..20)
}

fn op() -> impl Strategy<Value = OpSpec> {
    let body = prop_oneof![
        (0..=ONE_SIDED_MAX_LEN as u32).prop_map(BodySpec::Read),
        bytes(256).prop_map(BodySpec::Write),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| BodySpec::Cas(a, b)),
        any::<u64>().prop_map(BodySpec::Faa),
    ];
    (any::<u32>(), any::<u64>(), any::<u64>(), body).prop_map(|(region, key, offset, body)| {
        OpSpec {
            region,
            key,
            offset,
            body,
        }
    })
}

/// A result whose fields are consistent with its kind and status.
fn result() -> impl Strategy<Value = ResultSpec> {
    let kind = prop_oneof![
        Just(OpKind::Read),
        Just(OpKind::Write),
        Just(OpKind::Cas),
        Just(OpKind::Faa)
    ];
    (
        kind,
        prop::option::of(error_code()),
        any::<u64>(),
        bytes(256),
    )
        .prop_map(|(kind, error, previous, data)| {
            let ok = error.is_none();
            ResultSpec {
                kind,
                error,
                previous: if ok && matches!(kind, OpKind::Cas | OpKind::Faa) {
                    previous
                } else {
                    0
                },
                data: if ok && kind == OpKind::Read {
                    data
                } else {
                    Vec::new()
                },
            }
        })
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<bool>(), bytes(ARGS_MAX)).prop_map(
            |(offload, tenant, exec_hint, args)| Spec::AmRequest {
                offload,
                tenant,
                exec_hint,
                args
            }
        ),
        (
            prop::option::of(any::<u32>()),
            location(),
            any::<u32>(),
            prop::option::of((any::<u16>(), location(), any::<u32>())),
            bytes(OUT_MAX)
        )
            .prop_map(|(aborted, at, steps, hint, out)| Spec::AmReply {
                aborted,
                at,
                steps,
                hint: hint.map(|(class, location, lease_ms)| PlacementHint {
                    class,
                    location,
                    lease_ms
                }),
                out,
            }),
        (error_code(), "\\PC{0,50}", proptest::option::of(1u32..)).prop_map(
            |(code, detail, retry_after_us)| Spec::Error {
                code,
                detail,
                retry_after_us
            }
        ),
        prop::collection::vec(op(), 1..=MAX_REMOTE_OPS).prop_map(Spec::OneSided),
        prop::collection::vec(result(), 1..=MAX_REMOTE_OPS).prop_map(Spec::OneSidedReply),
        (
            nonempty_name(),
            any::<u32>(),
            any::<u16>(),
            any::<bool>(),
            prop::option::of(nonempty_name()),
            prop::collection::vec(any::<u8>(), 1..2048)
        )
            .prop_map(
                |(name, tenant, class, read_only, section, object)| Spec::Register {
                    name,
                    tenant,
                    class,
                    read_only,
                    section,
                    object
                }
            ),
        any::<u32>().prop_map(Spec::RegisterReply),
        any::<u32>().prop_map(Spec::Unregister),
        (any::<u32>(), any::<u16>()).prop_map(|(s, m)| Spec::List(s, m)),
        (
            more(),
            prop::collection::vec(
                (
                    any::<u32>(),
                    name(),
                    any::<u32>(),
                    any::<u16>(),
                    any::<bool>(),
                    any::<u32>()
                ),
                0..20
            )
        )
            .prop_map(|(more, entries)| Spec::ListReply { more, entries }),
        (any::<u32>(), any::<u16>()).prop_map(|(s, m)| Spec::Stats(s, m)),
        (more(), kvs()).prop_map(|(more, entries)| Spec::StatsReply { more, entries }),
        (nonempty_name(), any::<u32>()).prop_map(|(app, start)| Spec::Describe { app, start }),
        (more(), kvs()).prop_map(|(more, entries)| Spec::DescribeReply { more, entries }),
        Just(Spec::Ack),
    ]
}

fn page<'a, E: ListEntry<'a>>(more: Option<u32>, entries: &'a [E]) -> PagedRepr<'a, E> {
    PagedRepr {
        more: more.is_some(),
        next: more.unwrap_or(0),
        entries: EntryList::from_slice(entries),
    }
}

/// Builds the borrowing message a spec describes and hands it to `f`.
fn with_message<R>(
    spec: &Spec,
    request_id: u64,
    class: u16,
    retransmit: bool,
    f: impl FnOnce(Message<'_>) -> R,
) -> R {
    let ops: Vec<RemoteOp<'_>> = match spec {
        Spec::OneSided(ops) => ops
            .iter()
            .map(|o| RemoteOp {
                region: o.region,
                key: o.key,
                offset: o.offset,
                body: match &o.body {
                    BodySpec::Read(len) => OpBody::Read { len: *len },
                    BodySpec::Write(data) => OpBody::Write { data },
                    BodySpec::Cas(expected, desired) => OpBody::Cas {
                        expected: *expected,
                        desired: *desired,
                    },
                    BodySpec::Faa(addend) => OpBody::Faa { addend: *addend },
                },
            })
            .collect(),
        _ => Vec::new(),
    };
    let results: Vec<OpResult<'_>> = match spec {
        Spec::OneSidedReply(rs) => rs
            .iter()
            .map(|r| OpResult {
                kind: r.kind,
                error: r.error,
                previous: r.previous,
                data: &r.data,
            })
            .collect(),
        _ => Vec::new(),
    };
    let offloads: Vec<OffloadEntry<'_>> = match spec {
        Spec::ListReply { entries, .. } => entries
            .iter()
            .map(
                |(id, name, tenant, class, read_only, insn_count)| OffloadEntry {
                    id: *id,
                    name,
                    tenant: *tenant,
                    class: *class,
                    read_only: *read_only,
                    insn_count: *insn_count,
                    worst_case: insn_count.wrapping_mul(3),
                    served: insn_count % 2 == 0,
                },
            )
            .collect(),
        _ => Vec::new(),
    };
    let kvs: Vec<KvEntry<'_>> = match spec {
        Spec::StatsReply { entries, .. } | Spec::DescribeReply { entries, .. } => entries
            .iter()
            .map(|(name, value)| KvEntry {
                name,
                value: *value,
            })
            .collect(),
        _ => Vec::new(),
    };
    let body = match spec {
        Spec::AmRequest {
            offload,
            tenant,
            exec_hint,
            args,
        } => Body::AmRequest(AmRequestRepr {
            offload: *offload,
            tenant: *tenant,
            // Derived from the other fields: every bit pattern round-trips the same way.
            capability: u64::from(*offload).rotate_left(17) ^ u64::from(*tenant),
            flags: if *exec_hint {
                AmFlags::EXEC_HINT
            } else {
                AmFlags::empty()
            },
            args,
        }),
        Spec::AmReply {
            aborted,
            at,
            steps,
            hint,
            out,
        } => Body::AmReply(AmReplyRepr {
            status: aborted.map_or(AmStatus::Done, AmStatus::Aborted),
            executed_at: *at,
            steps: *steps,
            hint: *hint,
            output: out,
        }),
        Spec::Error {
            code,
            detail,
            retry_after_us,
        } => Body::Error(ErrorRepr {
            code: *code,
            detail,
            retry_after_us: *retry_after_us,
        }),
        Spec::OneSided(_) => Body::OneSided(OneSidedRepr::new(&ops).unwrap()),
        Spec::OneSidedReply(_) => Body::OneSidedReply(OneSidedReplyRepr::new(&results).unwrap()),
        Spec::Register {
            name,
            tenant,
            class,
            read_only,
            section,
            object,
        } => Body::Register(RegisterRepr {
            name,
            tenant: *tenant,
            class: *class,
            read_only: *read_only,
            section: section.as_deref(),
            object,
        }),
        Spec::RegisterReply(id) => Body::RegisterReply(OffloadIdRepr { id: *id }),
        Spec::Unregister(id) => Body::Unregister(OffloadIdRepr { id: *id }),
        Spec::List(start, max) => Body::List(PageRequestRepr {
            start: *start,
            max: *max,
        }),
        Spec::ListReply { more, .. } => Body::ListReply(page(*more, &offloads)),
        Spec::Stats(start, max) => Body::Stats(PageRequestRepr {
            start: *start,
            max: *max,
        }),
        Spec::StatsReply { more, .. } => Body::StatsReply(page(*more, &kvs)),
        Spec::Describe { app, start } => Body::Describe(DescribeRepr { app, start: *start }),
        Spec::DescribeReply { more, .. } => Body::DescribeReply(page(*more, &kvs)),
        Spec::Ack => Body::Ack,
    };
    let flags = if retransmit {
        Flags::RETRANSMIT
    } else {
        Flags::empty()
    };
    f(Message {
        request_id,
        class,
        flags,
        window: request_id as u32,
        body,
    })
}

fn encode(m: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; m.buffer_len()];
    let n = m.emit(&mut buf).expect("a valid message emits");
    assert_eq!(n, buf.len());
    buf
}

/// Whatever parses must re-emit to the same bytes (the format has one encoding per message).
fn parse_and_reemit(bytes: &[u8]) {
    if let Ok(m) = Message::parse(bytes) {
        assert_eq!(encode(&m), bytes);
    }
    if let Some((&kind, payload)) = bytes.split_first() {
        if let Some(kind) = Kind::from_u8(kind) {
            if let Ok(body) = Body::parse(kind, payload) {
                let mut out = vec![0u8; body.buffer_len()];
                body.check().expect("a parsed body passes its checks");
                body.emit(&mut out);
                assert_eq!(out, payload);
            }
        }
    }
}

/// A datagram with a valid header in front of arbitrary payload bytes, so the payload parsers
/// see them.
fn with_header(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN + payload.len()];
    let mut p = HeaderPacket::new_unchecked(&mut b[..]);
    HeaderRepr {
        kind,
        flags: Flags::empty(),
        class: 0,
        request_id: 1,
        window: 0,
        payload_len: payload.len(),
    }
    .emit(&mut p);
    b[HEADER_LEN..].copy_from_slice(payload);
    b
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation, fix_len: bool) {
    let n = bytes.len().max(1);
    match *m {
        Mutation::Set(i, v) => {
            if let Some(b) = bytes.get_mut(i % n) {
                *b = v;
            }
        }
        Mutation::Truncate(i) => bytes.truncate(i % n),
        Mutation::Insert(i, v) => bytes.insert(i % (bytes.len() + 1), v),
        Mutation::Remove(i) => {
            if !bytes.is_empty() {
                bytes.remove(i % bytes.len());
            }
        }
    }
    // Keeping the header's payload length consistent lets mutations reach the payload parsers.
    if fix_len && bytes.len() >= HEADER_LEN {
        let len = (bytes.len() - HEADER_LEN) as u32;
        HeaderPacket::new_unchecked(&mut bytes[..]).set_payload_len(len);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in bytes(600)) {
        parse_and_reemit(&bytes);
    }

    #[test]
    fn arbitrary_payloads_never_panic(kind in proptest::sample::select(Kind::ALL.to_vec()), payload in bytes(600)) {
        let datagram = with_header(kind, &payload);
        parse_and_reemit(&datagram);
        prop_assert_eq!(Message::parse(&datagram).map(|m| m.body), Body::parse(kind, &payload));
    }

    #[test]
    fn mutated_messages_never_panic(
        spec in spec(),
        mutations in prop::collection::vec(mutation(), 1..6),
        fix_len in any::<bool>(),
    ) {
        let mut bytes = with_message(&spec, 7, 3, false, |m| encode(&m));
        for m in &mutations {
            mutate(&mut bytes, m, fix_len);
        }
        parse_and_reemit(&bytes);
    }

    #[test]
    fn emit_then_parse_is_identity(
        spec in spec(),
        request_id in any::<u64>(),
        class in any::<u16>(),
        retransmit in any::<bool>(),
    ) {
        with_message(&spec, request_id, class, retransmit, |m| {
            let bytes = encode(&m);
            prop_assert!(bytes.len() <= MAX_DATAGRAM);
            let back = Message::parse(&bytes);
            prop_assert_eq!(back, Ok(m));
            Ok(())
        })?;
    }
}
