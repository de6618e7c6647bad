//! Tests of the wire format: round trips, golden bytes, and every way a datagram can be bad.

use super::*;
use crate::abi::{OpKind, ARGS_MAX, OUT_MAX};
use crate::exec::ErrorKind;
use crate::region::OpErrorCode;

const OFFLOADS: [OffloadEntry<'static>; 2] = [
    OffloadEntry {
        id: 1,
        name: "mica_get",
        tenant: 7,
        class: 3,
        read_only: true,
        insn_count: 211,
        worst_case: 40,
        served: true,
    },
    OffloadEntry {
        id: 2,
        name: "mica_put",
        tenant: 7,
        class: 4,
        read_only: false,
        insn_count: 390,
        worst_case: 77,
        served: false,
    },
];
const COUNTERS: [KvEntry<'static>; 3] = [
    KvEntry {
        name: "rx",
        value: 10,
    },
    KvEntry {
        name: "tx",
        value: u64::MAX,
    },
    KvEntry { name: "", value: 0 },
];

/// One message of every kind, with every optional part present somewhere.
fn samples() -> Vec<Message<'static>> {
    let ops = [
        RemoteOp {
            region: 1,
            key: 0xdead_beef,
            offset: 64,
            body: OpBody::Read { len: 32 },
        },
        RemoteOp {
            region: 2,
            key: 9,
            offset: 8,
            body: OpBody::Write { data: b"hello" },
        },
        RemoteOp {
            region: 2,
            key: 9,
            offset: 16,
            body: OpBody::Cas {
                expected: 1,
                desired: 2,
            },
        },
        RemoteOp {
            region: 3,
            key: 1,
            offset: 0,
            body: OpBody::Faa { addend: u64::MAX },
        },
    ];
    let results = [
        OpResult {
            kind: OpKind::Read,
            error: None,
            previous: 0,
            data: b"0123456789",
        },
        OpResult {
            kind: OpKind::Write,
            error: Some(ErrorCode::PermissionDenied),
            previous: 0,
            data: &[],
        },
        OpResult {
            kind: OpKind::Cas,
            error: None,
            previous: 1,
            data: &[],
        },
    ];
    let bodies = [
        Body::AmRequest(AmRequestRepr {
            offload: 5,
            tenant: 7,
            capability: 0x0102_0304_0506_0708,
            flags: AmFlags::EXEC_HINT,
            args: b"key-0001",
        }),
        Body::AmReply(AmReplyRepr {
            status: AmStatus::Done,
            executed_at: Location::Nic,
            steps: 2,
            hint: Some(PlacementHint {
                class: 3,
                location: Location::Client,
                lease_ms: 250,
            }),
            output: b"value",
        }),
        Body::AmReply(AmReplyRepr {
            status: AmStatus::Aborted(404),
            executed_at: Location::Host,
            steps: 1,
            hint: None,
            output: &[],
        }),
        Body::Error(ErrorRepr::new(ErrorCode::UnknownOffload, "no offload 5")),
        Body::Error(ErrorRepr::new(ErrorCode::Busy, "")),
        Body::Error(ErrorRepr::new(ErrorCode::Busy, "tenant over its share").retry_after_ns(1)),
        Body::Error(ErrorRepr::new(ErrorCode::Busy, "").retry_after_ns(u64::MAX)),
        Body::OneSided(OneSidedRepr::new(&ops).unwrap()),
        Body::OneSided(OneSidedRepr::single(ops[1])),
        Body::OneSidedReply(OneSidedReplyRepr::new(&results).unwrap()),
        Body::Register(RegisterRepr {
            name: "mica_get",
            tenant: 7,
            class: 3,
            read_only: true,
            section: Some("naam/mica_get"),
            object: b"\x7fELF-not-really",
        }),
        Body::Register(RegisterRepr {
            name: "x",
            tenant: 0,
            class: 0,
            read_only: false,
            section: None,
            object: b"o",
        }),
        Body::RegisterReply(OffloadIdRepr { id: 12 }),
        Body::Unregister(OffloadIdRepr { id: 12 }),
        Body::List(PageRequestRepr { start: 0, max: 100 }),
        Body::ListReply(ListReplyRepr {
            more: true,
            next: 3,
            entries: EntryList::from_slice(&OFFLOADS),
        }),
        Body::ListReply(ListReplyRepr::last(&[])),
        Body::Stats(PageRequestRepr { start: 9, max: 0 }),
        Body::StatsReply(KvListRepr::last(&COUNTERS)),
        Body::Describe(DescribeRepr {
            app: "mica",
            start: 0,
        }),
        Body::DescribeReply(KvListRepr {
            more: true,
            next: 1,
            entries: EntryList::from_slice(&COUNTERS[..1]),
        }),
        Body::Fetch(FetchRepr { id: 7, start: 1024 }),
        Body::FetchReply(FetchReplyRepr {
            id: 7,
            total: 24,
            start: 8,
            digest: 0x0102_0304_0506_0708,
            bytes: &[0x95; 16],
        }),
        Body::Ack,
        Body::Sealed(SealedRepr {
            key_id: 3,
            nonce: 0x1122_3344_5566_7788,
            mac: [0x5a; MAC_LEN],
            inner: &SEALED_INNER,
        }),
    ];
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| Message {
            request_id: 0x0102_0304_0506_0708 + i as u64,
            class: i as u16,
            flags: if i % 2 == 0 {
                Flags::RETRANSMIT
            } else {
                Flags::empty()
            },
            window: i as u32 * 3,
            body: *b,
        })
        .collect()
}

/// The SEALED sample's inner datagram: a header whose payload length (bytes 16..20) is 0;
/// the rest is not parsed by the wire layer.
const SEALED_INNER: [u8; HEADER_LEN] = [
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0, 0, 0, 0, 7, 7, 7, 7,
];

fn encode(m: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0xaa; m.buffer_len()];
    assert_eq!(m.emit(&mut buf), Ok(m.buffer_len()));
    buf
}

#[test]
fn every_kind_is_sampled() {
    let kinds: Vec<Kind> = samples().iter().map(Message::kind).collect();
    for k in Kind::ALL {
        assert!(kinds.contains(&k), "{k:?} has no sample");
    }
}

#[test]
fn round_trip_every_kind() {
    for m in samples() {
        let bytes = encode(&m);
        let back = Message::parse(&bytes).unwrap_or_else(|e| panic!("{:?}: {e}", m.kind()));
        assert_eq!(back, m);
        // Emitting what was parsed gives the same bytes.
        assert_eq!(encode(&back), bytes);
        // The per-kind entry point agrees with the datagram one.
        assert_eq!(Body::parse(m.kind(), &bytes[HEADER_LEN..]), Ok(m.body));
    }
}

#[test]
fn parsed_lists_iterate_without_a_vec() {
    let m = samples()
        .into_iter()
        .find(|m| m.kind() == Kind::ListReply)
        .unwrap();
    let bytes = encode(&m);
    let Body::ListReply(page) = Message::parse(&bytes).unwrap().body else {
        panic!("not a list reply")
    };
    assert!(page.more);
    assert_eq!(page.next, 3);
    assert_eq!(page.entries.len(), 2);
    let names: Vec<&str> = page.entries.iter().map(|e| e.name).collect();
    assert_eq!(names, ["mica_get", "mica_put"]);
    assert_eq!(page.entries.iter().nth(1), Some(OFFLOADS[1]));
}

#[test]
fn header_golden_bytes() {
    // docs/protocol.md, "Common header": every field little-endian at its documented offset.
    let m = Message {
        request_id: 0x1122_3344_5566_7788,
        class: 0x0203,
        flags: Flags::RETRANSMIT,
        window: 0x0504_0302,
        body: Body::Unregister(OffloadIdRepr { id: 0x0a0b_0c0d }),
    };
    let expected: [u8; 32] = [
        b'N', b'A', 1, 0x12, // magic, version, kind
        0x01, 0x00, 0x03, 0x02, // flags, class
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // request id
        8, 0, 0, 0, // payload length
        0x02, 0x03, 0x04, 0x05, // window
        0x0d, 0x0c, 0x0b, 0x0a, 0, 0, 0, 0, // offload id, reserved
    ];
    assert_eq!(encode(&m), expected);
    let p = HeaderPacket::new_checked(&expected[..]).unwrap();
    assert_eq!(
        (
            p.kind(),
            p.flags(),
            p.class(),
            p.request_id(),
            p.payload_len()
        ),
        (0x12, 1, 0x0203, 0x1122_3344_5566_7788, 8)
    );
    assert_eq!(p.payload(), &expected[24..]);
}

#[test]
fn am_request_golden_bytes() {
    let r = AmRequestRepr {
        offload: 0x01020304,
        tenant: 5,
        capability: 0x1122_3344_5566_7788,
        flags: AmFlags::EXEC_HINT,
        args: &[0xee, 0xff],
    };
    let mut buf = [0u8; 22];
    r.emit(&mut AmRequestPacket::new_unchecked(&mut buf[..]));
    assert_eq!(
        buf,
        [
            4, 3, 2, 1, 5, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 1, 0, 2, 0,
            0xee, 0xff
        ]
    );
}

#[test]
fn one_sided_golden_bytes() {
    let r = OneSidedRepr::single(RemoteOp {
        region: 9,
        key: 0x0102,
        offset: 16,
        body: OpBody::Write { data: b"ab" },
    });
    let mut buf = vec![0xaa; r.buffer_len()];
    r.emit(&mut OneSidedPacket::new_unchecked(&mut buf[..]));
    let mut expected = vec![1, 0, 0, 0, 0, 0, 0, 0]; // count, reserved
    expected.extend([2, 0, 0, 0, 9, 0, 0, 0]); // kind WRITE, reserved, region
    expected.extend(0x0102u64.to_le_bytes()); // key
    expected.extend(16u64.to_le_bytes()); // offset
    expected.extend([2, 0, 0, 0, 0, 0, 0, 0]); // len, reserved
    expected.extend([0; 16]); // arg0, arg1
    expected.extend(b"ab");
    assert_eq!(buf, expected);
}

/// Every proper prefix of every valid datagram is rejected (and nothing panics).
#[test]
fn every_truncation_is_an_error() {
    for m in samples() {
        let bytes = encode(&m);
        for len in 0..bytes.len() {
            assert!(
                Message::parse(&bytes[..len]).is_err(),
                "{:?} cut to {len} parsed",
                m.kind()
            );
        }
    }
}

/// The same with the header's payload length fixed up, so the payload parser (not the header
/// check) sees every truncated payload.
#[test]
fn every_truncated_payload_is_an_error() {
    for m in samples() {
        let bytes = encode(&m);
        let payload = &bytes[HEADER_LEN..];
        for len in 0..payload.len() {
            assert!(
                Body::parse(m.kind(), &payload[..len]).is_err(),
                "{:?} payload cut to {len} parsed",
                m.kind()
            );
            let mut cut = bytes[..HEADER_LEN + len].to_vec();
            HeaderPacket::new_unchecked(&mut cut[..]).set_payload_len(len as u32);
            assert!(
                Message::parse(&cut).is_err(),
                "{:?} payload cut to {len} parsed",
                m.kind()
            );
        }
    }
}

#[test]
fn extra_bytes_are_an_error() {
    for m in samples() {
        let mut bytes = encode(&m);
        bytes.push(0);
        assert!(
            matches!(
                Message::parse(&bytes),
                Err(WireError::TrailingBytes { extra: 1, .. })
            ),
            "{:?}",
            m.kind()
        );
        let payload_len = (bytes.len() - HEADER_LEN) as u32;
        HeaderPacket::new_unchecked(&mut bytes[..]).set_payload_len(payload_len);
        assert!(
            Message::parse(&bytes).is_err(),
            "{:?} with a byte appended to its payload parsed",
            m.kind()
        );
    }
}

#[test]
fn wrong_magic_version_kind_flags() {
    let good = encode(&samples()[0]);
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadMagic {
            found: [b'X', b'A']
        })
    );
    let mut b = good.clone();
    b[2] = 2;
    assert_eq!(Message::parse(&b), Err(WireError::BadVersion { found: 2 }));
    let mut b = good.clone();
    b[3] = 0x7e;
    assert_eq!(
        Message::parse(&b),
        Err(WireError::UnknownKind { kind: 0x7e })
    );
    let mut b = good.clone();
    b[4] = 0x80;
    assert_eq!(
        Message::parse(&b),
        Err(WireError::UnknownFlags {
            field: "header.flags",
            bits: 0x80
        })
    );
    // Bytes 20..24 are the client's window, any value.
    let mut b = good.clone();
    b[20..24].copy_from_slice(&7u32.to_le_bytes());
    assert_eq!(Message::parse(&b).map(|m| m.window), Ok(7));
    // A short datagram of another protocol says "bad magic", not "truncated".
    assert_eq!(
        Message::parse(b"GET /"),
        Err(WireError::BadMagic { found: *b"GE" })
    );
    assert!(matches!(
        Message::parse(b"NA\x01"),
        Err(WireError::Truncated {
            needed: HEADER_LEN,
            got: 3
        })
    ));
}

#[test]
fn lengths_past_the_end() {
    let good = encode(&samples()[0]);
    let mut b = good.clone();
    HeaderPacket::new_unchecked(&mut b[..]).set_payload_len(1000);
    assert!(matches!(
        Message::parse(&b),
        Err(WireError::LengthPastEnd {
            field: "payload_len",
            len: 1000,
            ..
        })
    ));
    let mut b = good.clone();
    HeaderPacket::new_unchecked(&mut b[..]).set_payload_len(u32::MAX);
    assert!(matches!(
        Message::parse(&b),
        Err(WireError::TooLong {
            field: "payload_len",
            ..
        })
    ));
    // args_len one more than the bytes present.
    let mut b = good.clone();
    let args_len = AmRequestPacket::new_checked(&b[HEADER_LEN..])
        .unwrap()
        .args_len();
    AmRequestPacket::new_unchecked(&mut b[HEADER_LEN..]).set_args_len(args_len + 1);
    assert!(matches!(
        Message::parse(&b),
        Err(WireError::LengthPastEnd {
            field: "am.args_len",
            ..
        })
    ));
    // A list entry's name running past the end.
    let list = samples()
        .into_iter()
        .find(|m| m.kind() == Kind::StatsReply)
        .unwrap();
    let mut b = encode(&list);
    // The last counter has an empty name: its name_len is the last byte.
    let n = b.len();
    b[n - 1] = 5;
    assert!(matches!(
        Message::parse(&b),
        Err(WireError::LengthPastEnd {
            field: "kv.name_len",
            ..
        })
    ));
}

#[test]
fn bad_counts() {
    let good = encode(
        &samples()
            .into_iter()
            .find(|m| m.kind() == Kind::OneSided)
            .unwrap(),
    );
    for n in [0u8, 5, 255] {
        let mut b = good.clone();
        b[HEADER_LEN] = n;
        assert_eq!(
            Message::parse(&b),
            Err(WireError::BadOpCount {
                count: n as usize,
                max: MAX_REMOTE_OPS
            })
        );
    }
    // Fewer ops than the bytes hold: the rest is left over.
    let mut b = good.clone();
    b[HEADER_LEN] = 3;
    assert!(Message::parse(&b).is_err());
    // A list whose count is larger than its entries.
    let list = encode(
        &samples()
            .into_iter()
            .find(|m| m.kind() == Kind::ListReply)
            .unwrap(),
    );
    let mut b = list.clone();
    PagedPacket::new_unchecked(&mut b[HEADER_LEN..]).set_count(3);
    assert!(matches!(
        Message::parse(&b),
        Err(WireError::Truncated { .. })
    ));
    let mut b = list;
    PagedPacket::new_unchecked(&mut b[HEADER_LEN..]).set_count(1);
    assert!(matches!(
        Message::parse(&b),
        Err(WireError::TrailingBytes {
            what: "list entries",
            ..
        })
    ));
    assert!(OneSidedRepr::new(&[]).is_err());
}

#[test]
fn per_field_maxima() {
    let big = vec![0u8; ARGS_MAX + 1];
    let m = Message::new(
        1,
        0,
        Body::AmRequest(AmRequestRepr {
            offload: 1,
            tenant: 0,
            capability: 0,
            flags: AmFlags::empty(),
            args: &big,
        }),
    );
    let mut buf = vec![0u8; 4096];
    assert_eq!(
        m.emit(&mut buf),
        Err(WireError::TooLong {
            field: "am.args",
            len: ARGS_MAX + 1,
            max: ARGS_MAX
        })
    );
    // Hand-built bytes with too many args are rejected by the parser too.
    let mut raw = vec![0u8; 20 + ARGS_MAX + 1];
    AmRequestPacket::new_unchecked(&mut raw[..]).set_args_len((ARGS_MAX + 1) as u16);
    assert!(matches!(
        Body::parse(Kind::AmRequest, &raw),
        Err(WireError::TooLong {
            field: "am.args",
            ..
        })
    ));
    let out = vec![0u8; OUT_MAX + 1];
    let r = AmReplyRepr {
        status: AmStatus::Done,
        executed_at: Location::Host,
        steps: 1,
        hint: None,
        output: &out,
    };
    assert!(matches!(
        r.check(),
        Err(WireError::TooLong {
            field: "reply.output",
            ..
        })
    ));
    let detail = "x".repeat(DETAIL_MAX + 1);
    assert!(ErrorRepr::new(ErrorCode::Internal, &detail)
        .check()
        .is_err());
    let mut zero = ErrorRepr::new(ErrorCode::Busy, "");
    zero.retry_after_us = Some(0);
    assert!(
        zero.check().is_err(),
        "no hint is the absent field, never 0"
    );
    let name = "n".repeat(NAME_MAX + 1);
    let reg = RegisterRepr {
        name: &name,
        tenant: 0,
        class: 0,
        read_only: false,
        section: None,
        object: b"x",
    };
    assert!(matches!(
        reg.check(),
        Err(WireError::TooLong {
            field: "register.name",
            ..
        })
    ));
    let data = vec![0u8; ONE_SIDED_MAX_LEN + 1];
    let op = RemoteOp {
        region: 0,
        key: 0,
        offset: 0,
        body: OpBody::Write { data: &data },
    };
    assert!(OneSidedRepr::single(op).check().is_err());
    let op = RemoteOp {
        region: 0,
        key: 0,
        offset: 0,
        body: OpBody::Read {
            len: ONE_SIDED_MAX_LEN as u32 + 1,
        },
    };
    assert!(OneSidedRepr::single(op).check().is_err());
    // A datagram larger than UDP allows.
    let obj = vec![1u8; MAX_DATAGRAM];
    let reg = RegisterRepr {
        name: "big",
        tenant: 0,
        class: 0,
        read_only: false,
        section: None,
        object: &obj,
    };
    assert!(matches!(
        Message::new(1, 0, Body::Register(reg)).emit(&mut vec![0u8; 2 * MAX_DATAGRAM]),
        Err(WireError::TooLong { .. })
    ));
}

#[test]
fn names_with_control_characters_are_refused() {
    // A tab or a newline in an offload's name would forge rows of `naam offload ls`.
    for (name, section, field) in [
        ("a\tb", None, "register.name"),
        ("a\nc", None, "register.name"),
        ("ok", Some("naam/x\u{1b}[2J"), "register.section"),
        // Invisible or reordering: "zw\u{200b}sp" shows as "zwsp", "\u{202e}kcab" as "back".
        ("zw\u{200b}sp", None, "register.name"),
        ("\u{202e}kcab", None, "register.name"),
        ("one\u{2028}two", None, "register.name"),
        ("soft\u{ad}hyphen", None, "register.name"),
        ("bom\u{feff}", None, "register.name"),
    ] {
        let reg = RegisterRepr {
            name,
            tenant: 0,
            class: 0,
            read_only: false,
            section,
            object: b"x",
        };
        assert_eq!(reg.check(), Err(WireError::ControlChar { field }));
        let mut buf = vec![0u8; MAX_DATAGRAM];
        assert!(Message::new(1, 0, Body::Register(reg))
            .emit(&mut buf)
            .is_err());
    }
    let ok = RegisterRepr {
        name: "größe été",
        tenant: 0,
        class: 0,
        read_only: false,
        section: None,
        object: b"x",
    };
    assert_eq!(ok.check(), Ok(()));
}

#[test]
fn empty_names_and_bad_utf8() {
    let reg = RegisterRepr {
        name: "",
        tenant: 0,
        class: 0,
        read_only: false,
        section: None,
        object: b"x",
    };
    assert_eq!(
        reg.check(),
        Err(WireError::Empty {
            field: "register.name"
        })
    );
    let reg = RegisterRepr {
        name: "a",
        tenant: 0,
        class: 0,
        read_only: false,
        section: Some(""),
        object: b"x",
    };
    assert_eq!(
        reg.check(),
        Err(WireError::Empty {
            field: "register.section"
        })
    );
    let m = Message::new(
        1,
        0,
        Body::Error(ErrorRepr::new(ErrorCode::BadRequest, "ab")),
    );
    let mut b = encode(&m);
    let n = b.len();
    b[n - 1] = 0xff;
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadUtf8 {
            field: "error.detail"
        })
    );
}

#[test]
fn reply_fields_that_must_be_zero() {
    let m = samples()
        .into_iter()
        .find(|m| matches!(m.body, Body::AmReply(AmReplyRepr { hint: None, .. })))
        .unwrap();
    let good = encode(&m);
    // Hint fields without the hint flag.
    let mut b = good.clone();
    b[HEADER_LEN + 20] = 1;
    assert_eq!(
        Message::parse(&b),
        Err(WireError::NonZeroReserved {
            field: "reply.hint"
        })
    );
    // Unknown status and location.
    let mut b = good.clone();
    b[HEADER_LEN] = 9;
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadValue {
            field: "reply.status",
            value: 9
        })
    );
    let mut b = good.clone();
    b[HEADER_LEN + 1] = 3;
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadValue {
            field: "reply.executed_at",
            value: 3
        })
    );
    // DONE with an abort code.
    let mut b = good;
    b[HEADER_LEN] = 0;
    assert_eq!(
        Message::parse(&b),
        Err(WireError::NonZeroReserved {
            field: "reply.abort_code"
        })
    );
    // A failed op result carrying data.
    let bad = OpResult {
        kind: OpKind::Read,
        error: Some(ErrorCode::BadKey),
        previous: 0,
        data: b"x",
    };
    assert!(OneSidedReplyRepr::new(&[bad]).unwrap().check().is_err());
    // A CAS whose length is not 8.
    let m = Message::new(
        1,
        0,
        Body::OneSided(OneSidedRepr::single(RemoteOp {
            region: 0,
            key: 0,
            offset: 0,
            body: OpBody::Cas {
                expected: 0,
                desired: 1,
            },
        })),
    );
    let mut b = encode(&m);
    b[HEADER_LEN + 8 + 24] = 4;
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadValue {
            field: "onesided.op.len",
            value: 4
        })
    );
}

#[test]
fn emit_into_a_short_buffer_is_an_error() {
    let m = samples()[0];
    let mut buf = vec![0u8; m.buffer_len() - 1];
    assert_eq!(
        m.emit(&mut buf),
        Err(WireError::BufferTooSmall {
            needed: m.buffer_len(),
            got: m.buffer_len() - 1
        })
    );
}

#[test]
fn error_codes_are_distinct_and_round_trip() {
    let mut seen = std::collections::HashSet::new();
    for c in ErrorCode::ALL {
        assert!(seen.insert(c as u16), "{c:?} reuses a value");
        assert_eq!(ErrorCode::from_u16(c as u16), Some(c));
    }
    assert_eq!(ErrorCode::from_u16(0), None);
    // Every op error class maps to its own code.
    let op_codes: std::collections::HashSet<ErrorCode> =
        OpErrorCode::ALL.iter().map(|&c| c.into()).collect();
    assert_eq!(op_codes.len(), OpErrorCode::COUNT);
    assert_eq!(
        ErrorCode::from(ErrorKind::Op(OpErrorCode::WrongTenant)),
        ErrorCode::WrongTenant
    );
    assert_eq!(
        ErrorCode::from(ErrorKind::UnknownOffload),
        ErrorCode::UnknownOffload
    );
    assert_eq!(
        ErrorCode::from(ErrorKind::StepBudget),
        ErrorCode::StepBudget
    );
    assert_eq!(
        ErrorCode::from(&crate::exec::ExecError::StepBudget { max: 32 }),
        ErrorCode::StepBudget
    );
}

#[test]
fn kinds_round_trip() {
    for k in Kind::ALL {
        assert_eq!(Kind::from_u8(k as u8), Some(k));
    }
    assert_eq!(Kind::from_u8(0), None);
    assert!(Kind::AmReply.is_reply() && !Kind::AmRequest.is_reply());
}

#[test]
fn limits_match_the_spec() {
    // docs/protocol.md, "Limits".
    assert_eq!(
        (
            MAX_DATAGRAM,
            MAX_PAYLOAD,
            ARGS_MAX,
            OUT_MAX,
            NAME_MAX,
            DETAIL_MAX,
            MAX_REMOTE_OPS,
            ONE_SIDED_MAX_LEN,
            OBJECT_MAX
        ),
        (65507, 65483, 1088, 1088, 64, 200, 4, 8192, 65467)
    );
}

#[test]
fn a_window_retires_the_ids_below_the_oldest_open_one_even_across_the_wrap() {
    use crate::wire::{id_before, retired_below};
    assert_eq!(retired_below(100, 0), None, "0: not said");
    assert_eq!(retired_below(100, 1), Some(100), "only this one open");
    assert_eq!(retired_below(100, 5), Some(96));
    assert_eq!(retired_below(2, 5), Some(u64::MAX - 1), "wraps");
    assert!(id_before(u64::MAX - 1, 2) && !id_before(2, u64::MAX - 1));
    assert!(id_before(95, 96) && !id_before(96, 96) && !id_before(97, 96));
}

#[test]
fn replies_echo_request_id_and_class() {
    let req = Message {
        request_id: 42,
        class: 7,
        flags: Flags::RETRANSMIT,
        window: 3,
        body: Body::Stats(PageRequestRepr::default()),
    };
    let rep = req.reply(Body::Ack);
    assert_eq!(
        (rep.request_id, rep.class, rep.flags, rep.kind()),
        (42, 7, Flags::empty(), Kind::Ack)
    );
    // A server that cannot parse a request's payload still answers it from the header.
    let mut bytes = encode(&req);
    bytes[HEADER_LEN + 6] = 1; // reserved byte of the page request
    assert!(Message::parse(&bytes).is_err());
    let header = HeaderRepr::parse(&HeaderPacket::new_unchecked(&bytes[..])).unwrap();
    assert_eq!(
        (header.request_id, header.class, header.kind),
        (42, 7, Kind::Stats)
    );
}

#[test]
fn fetch_replies_stay_inside_the_program_and_page_through_it() {
    let insns: Vec<u8> = (0..FETCH_CHUNK as u32 + 40).map(|i| i as u8).collect();
    let d = program_digest(&insns);
    let first = FetchReplyRepr::piece(FetchRepr { id: 3, start: 0 }, &insns, d);
    assert_eq!(
        (first.start, first.bytes.len(), first.total),
        (0, FETCH_CHUNK, insns.len() as u32)
    );
    let second = FetchReplyRepr::piece(
        FetchRepr {
            id: 3,
            start: FETCH_CHUNK as u32,
        },
        &insns,
        d,
    );
    assert_eq!(second.bytes, &insns[FETCH_CHUNK..]);
    let past = FetchReplyRepr::piece(
        FetchRepr {
            id: 3,
            start: u32::MAX,
        },
        &insns,
        d,
    );
    assert!(past.bytes.is_empty() && past.start == past.total);
    assert!(first.check().is_ok() && second.check().is_ok() && past.check().is_ok());
    // A reply claiming bytes past the program's end does not parse.
    let lying = FetchReplyRepr { total: 4, ..second };
    assert!(lying.check().is_err());
    let mut buf = [0u8; 2048];
    let m = Message::new(1, 0, Body::FetchReply(lying));
    assert!(m.emit(&mut buf).is_err(), "emit checks the piece too");
    assert_ne!(program_digest(&insns), program_digest(&insns[1..]));
}

/// `peek_am_tenant` (tenant and capability) agrees with the full parse on every sample, and finds nothing in a cut one.
#[test]
fn peeked_tenant_is_the_parsed_one() {
    for m in samples() {
        let bytes = encode(&m);
        let want = match Message::parse(&bytes).unwrap().body {
            Body::AmRequest(r) => Some((r.tenant, r.capability)),
            _ => None,
        };
        assert_eq!(peek_am_tenant(&bytes), want, "{:?}", m.kind());
        for len in 0..bytes.len() {
            assert_eq!(peek_am_tenant(&bytes[..len]), None);
        }
    }
}

#[test]
fn an_error_fits_the_bytes_it_is_given_and_never_below_an_empty_detail() {
    let e = ErrorRepr::new(ErrorCode::BadRequest, "déjà vu: a detail of some length");
    let len = |e: ErrorRepr<'_>| Message::new(1, 0, Body::Error(e)).buffer_len();
    let whole = len(e);
    assert_eq!(e.within(usize::MAX), e);
    assert_eq!(e.within(whole), e, "exactly enough room: unchanged");
    for max in 0..whole {
        let cut = e.within(max);
        assert_eq!(
            (cut.code, cut.detail),
            (e.code, ""),
            "{max}: all of it or none"
        );
        assert!(len(cut) <= max.max(HEADER_LEN + 4), "{max}: {}", len(cut));
    }
    let busy = ErrorRepr::new(ErrorCode::Busy, "behind").retry_after_ns(1500);
    assert_eq!(busy.within(HEADER_LEN + 8 + 6), busy);
    let cut = busy.within(HEADER_LEN + 8 + 5);
    assert_eq!((cut.detail, cut.retry_after_us), ("", Some(2)));
}
