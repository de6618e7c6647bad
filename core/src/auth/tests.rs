use super::*;
use crate::wire::DescribeRepr;

const NOW: u64 = 1_800_000_000_000_000_000;

fn key(id: u32, p: Principal) -> Credential {
    Credential::new(id, p, [(id as u8).wrapping_add(0x40); SECRET_LEN])
}

fn request(id: u64) -> Vec<u8> {
    let m = Message::new(
        id,
        0,
        Body::Describe(DescribeRepr {
            app: "shutdown",
            start: 0,
        }),
    );
    let mut b = vec![0; m.buffer_len()];
    m.emit(&mut b).unwrap();
    b
}

/// Room for four live nonces per key.
fn gate() -> Gate {
    let keys = Keyring::new(vec![key(0, Principal::Admin), key(7, Principal::Tenant(1))]);
    Gate::new(keys.unwrap(), 8)
}

fn open(g: &mut Gate, datagram: &[u8], now: u64) -> Result<(Principal, bool), Refusal> {
    let m = Message::parse(datagram).unwrap();
    g.open(&m, now).map(|o| (o.principal, o.fresh))
}

#[test]
fn a_sealed_request_opens_once_then_is_a_repeat() {
    let mut g = gate();
    let sealed = key(7, Principal::Tenant(1)).seal(NOW, &request(5)).unwrap();
    assert_eq!(
        open(&mut g, &sealed, NOW + 1),
        Ok((Principal::Tenant(1), true))
    );
    assert_eq!(
        open(&mut g, &sealed, NOW + 2),
        Ok((Principal::Tenant(1), false))
    );
    let m = Message::parse(&sealed).unwrap();
    let o = g.open(&m, NOW).unwrap();
    assert_eq!(o.inner, request(5).as_slice());
    assert!(g.counters().contains(&("auth.repeats".into(), 2)));
}

/// `peek` says what `open` would, and remembers and counts nothing: a server queues what
/// it peeks at and opens it later.
#[test]
fn peeking_finds_what_opening_would_and_changes_nothing() {
    let mut g = gate().serving_since(NOW - 10);
    let t = key(7, Principal::Tenant(1));
    let sealed = t.seal(NOW, &request(5)).unwrap();
    let m = Message::parse(&sealed).unwrap();
    for _ in 0..3 {
        let o = g.peek(&m, NOW + 1).unwrap();
        assert_eq!(
            (o.principal, o.key_id, o.nonce, o.fresh),
            (Principal::Tenant(1), 7, NOW, true)
        );
    }
    assert!(
        !g.counters().iter().any(|(_, v)| *v > 0),
        "{:?}",
        g.counters()
    );
    assert_eq!(
        open(&mut g, &sealed, NOW + 1),
        Ok((Principal::Tenant(1), true))
    );
    assert!(!g.peek(&m, NOW + 2).unwrap().fresh, "opened once: a repeat");
    // What would be refused is refused alike.
    let late = Message::parse(&sealed).unwrap();
    assert_eq!(
        g.peek(&late, NOW + WINDOW_NS + 1).err(),
        Some(Refusal::Expired)
    );
    let early = t.seal(NOW - 20, &request(6)).unwrap();
    let early = Message::parse(&early).unwrap();
    assert_eq!(g.peek(&early, NOW).err(), Some(Refusal::BeforeStart));
    let forged = Credential::new(7, Principal::Tenant(1), [9; SECRET_LEN])
        .seal(NOW, &request(7))
        .unwrap();
    let forged = Message::parse(&forged).unwrap();
    assert_eq!(g.peek(&forged, NOW).err(), Some(Refusal::BadMac));
    let plain = request(8);
    assert_eq!(
        g.peek(&Message::parse(&plain).unwrap(), NOW).err(),
        Some(Refusal::Unsealed)
    );
}

#[test]
fn forged_altered_unknown_expired_and_unsealed_requests_are_refused() {
    let mut g = gate();
    let inner = request(5);
    // Signed with a key the server does not have under that id.
    let forged = Credential::new(0, Principal::Admin, [9; SECRET_LEN]).seal(NOW, &inner);
    assert_eq!(open(&mut g, &forged.unwrap(), NOW), Err(Refusal::BadMac));
    let unknown = key(99, Principal::Admin).seal(NOW, &inner).unwrap();
    assert_eq!(open(&mut g, &unknown, NOW), Err(Refusal::UnknownKey));
    // One flipped bit of the inner request.
    let mut altered = key(0, Principal::Admin).seal(NOW, &inner).unwrap();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert_eq!(open(&mut g, &altered, NOW), Err(Refusal::BadMac));
    // The envelope's request id changed (the MAC does not cover the outer header).
    let mut moved = key(0, Principal::Admin).seal(NOW, &inner).unwrap();
    moved[8] ^= 1;
    assert_eq!(open(&mut g, &moved, NOW), Err(Refusal::Mismatch));
    let old = key(0, Principal::Admin)
        .seal(NOW - WINDOW_NS - 1, &inner)
        .unwrap();
    assert_eq!(open(&mut g, &old, NOW), Err(Refusal::Expired));
    let future = key(0, Principal::Admin)
        .seal(NOW + FUTURE_NS + 1, &inner)
        .unwrap();
    assert_eq!(open(&mut g, &future, NOW), Err(Refusal::Expired));
    assert_eq!(open(&mut g, &inner, NOW), Err(Refusal::Unsealed));
    let c = g.counters();
    assert!(c.contains(&("auth.refused.bad_mac".into(), 2)), "{c:?}");
    assert!(c.contains(&("auth.refused.unsealed".into(), 1)), "{c:?}");
}

#[test]
fn a_replayed_nonce_is_a_repeat_for_the_whole_window_and_the_window_is_bounded() {
    let mut g = gate();
    let k = key(0, Principal::Admin);
    let first = k.seal(NOW, &request(1)).unwrap();
    assert_eq!(open(&mut g, &first, NOW), Ok((Principal::Admin, true)));
    for i in 1..4 {
        let s = k.seal(NOW + i, &request(1 + i)).unwrap();
        assert!(open(&mut g, &s, NOW + i).unwrap().1);
    }
    // Four live nonces fill this key's share: a fifth waits; a repeat is still recognised.
    let fifth = k.seal(NOW + 10, &request(10)).unwrap();
    assert_eq!(open(&mut g, &fifth, NOW + 10), Err(Refusal::Full));
    assert_eq!(
        open(&mut g, &first, NOW + WINDOW_NS),
        Ok((Principal::Admin, false))
    );
    // Past the window the first is forgotten, and no longer passes the time check.
    assert_eq!(
        open(&mut g, &first, NOW + WINDOW_NS + 1),
        Err(Refusal::Expired)
    );
    assert!(open(&mut g, &fifth, NOW + WINDOW_NS + 5).unwrap().1);
}

#[test]
fn a_key_flooding_the_window_cannot_lock_the_others_out() {
    let mut g = gate();
    let tenant = key(7, Principal::Tenant(1));
    let admin = key(0, Principal::Admin);
    let mut full = 0;
    for i in 0..100 {
        let s = tenant.seal(NOW + i, &request(100 + i)).unwrap();
        if open(&mut g, &s, NOW + i) == Err(Refusal::Full) {
            full += 1;
        }
    }
    assert_eq!(full, 96, "the tenant holds its share of four");
    for i in 0..4 {
        let s = admin.seal(NOW + 200 + i, &request(300 + i)).unwrap();
        assert_eq!(
            open(&mut g, &s, NOW + 200 + i),
            Ok((Principal::Admin, true)),
            "the admin still gets in"
        );
    }
    // Expiry gives the tenant its share back.
    let later = NOW + WINDOW_NS + 1_000;
    let s = tenant.seal(later, &request(999)).unwrap();
    assert!(open(&mut g, &s, later).unwrap().1);
}

#[test]
fn capabilities_prove_the_tenant_and_the_admin_one_stands_for_all() {
    let admin = key(0, Principal::Admin);
    let t1 = key(7, Principal::Tenant(1));
    let t2 = key(8, Principal::Tenant(2));
    let caps = Capabilities::from_keyring(
        &Keyring::new(vec![admin.clone(), t1.clone(), t2.clone()]).unwrap(),
    );
    assert!(caps.check(1, t1.capability(1)));
    assert!(
        !caps.check(2, t1.capability(1)),
        "tenant 1's is not tenant 2's"
    );
    assert!(
        !caps.check(2, t1.capability(2)),
        "a key makes only its own tenant's"
    );
    assert!(caps.check(2, t2.capability(2)));
    for t in [1, 2, 99] {
        assert!(
            caps.check(t, admin.capability(t)),
            "the admin's, for tenant {t}"
        );
    }
    assert!(!caps.check(1, 0));
    assert!(!caps.check(1, t1.capability(1) ^ 2));
    let forged = Credential::new(7, Principal::Tenant(1), [1; SECRET_LEN]);
    assert!(!caps.check(1, forged.capability(1)));
    // Two keys for one tenant, two admin keys (a rotation): all of them work.
    let t1b = key(9, Principal::Tenant(1));
    let admin2 = key(10, Principal::Admin);
    let caps = Capabilities::from_keyring(
        &Keyring::new(vec![admin.clone(), admin2.clone(), t1.clone(), t1b.clone()]).unwrap(),
    );
    assert!(caps.check(1, t1.capability(1)) && caps.check(1, t1b.capability(1)));
    assert!(caps.check(5, admin.capability(5)) && caps.check(5, admin2.capability(5)));
}

#[test]
fn capabilities_of_many_tenants_are_each_found_and_nothing_else_is() {
    assert!(
        !Capabilities::default().check(1, 12345),
        "the default accepts nothing"
    );
    let keys: Vec<Credential> = (0..1000u32)
        .map(|i| {
            let mut secret = [0x5au8; SECRET_LEN];
            secret[..4].copy_from_slice(&i.to_le_bytes());
            Credential::new(i, Principal::Tenant(i / 2), secret)
        })
        .collect();
    let caps = Capabilities::from_keyring(&Keyring::new(keys.clone()).unwrap());
    for (i, k) in keys.iter().enumerate() {
        let tenant = i as u32 / 2;
        assert!(caps.check(tenant, k.capability(tenant)), "key {i}");
        assert!(
            !caps.check(tenant + 1, k.capability(tenant)),
            "key {i} elsewhere"
        );
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        assert!(
            !caps.check((x >> 40) as u32 % 500, x),
            "a guessed capability"
        );
    }
}

#[test]
fn key_lines_round_trip_and_bad_ones_say_why() {
    let ring = Keyring::new(vec![
        key(0, Principal::Admin),
        key(3, Principal::Tenant(42)),
    ]);
    let ring = ring.unwrap();
    let text = ring.to_text();
    assert_eq!(Keyring::parse(&text).unwrap(), ring);
    assert_eq!(ring.of(Principal::Tenant(42)).unwrap().key_id, 3);
    for bad in [
        "naam-key 2 0 admin 00",
        "naam-key 1 x admin 0000000000000000000000000000000000000000000000000000000000000000",
        "naam-key 1 0 root 0000000000000000000000000000000000000000000000000000000000000000",
        "naam-key 1 0 admin 00zz",
        "naam-key 1 0 admin 000000000000000000000000000000000000000000000000000000000000000g",
    ] {
        assert!(matches!(
            Keyring::parse(bad),
            Err(AuthError::BadKeyLine { line: 1, .. })
        ));
    }
    assert_eq!(Keyring::parse("# nothing\n"), Err(AuthError::Empty));
    let dup = format!(
        "{}\n{}\n",
        key(1, Principal::Admin).to_line(),
        key(1, Principal::Tenant(1)).to_line()
    );
    assert_eq!(
        Keyring::parse(&dup),
        Err(AuthError::DuplicateKey { key_id: 1 })
    );
    let shown = format!("{:?}", key(5, Principal::Admin));
    assert!(!shown.contains("5, 5, 5"), "{shown}");
}

/// The finding of the attacker probe of 2026-12-06: a restarted server did not know the
/// nonces its previous process had seen, so a sealed request captured within the window ran
/// again. A gate serving since a time refuses what was sealed before it, and opens what was
/// sealed after.
#[test]
fn a_request_sealed_before_the_gate_started_is_refused() {
    let mut g = gate().serving_since(NOW);
    let k = key(7, Principal::Tenant(1));
    let old = k.seal(NOW - 1, &request(5)).unwrap();
    assert_eq!(open(&mut g, &old, NOW + 10), Err(Refusal::BeforeStart));
    assert_eq!(Refusal::BeforeStart.code(), ErrorCode::Unauthorized);
    let new = k.seal(NOW + 1, &request(6)).unwrap();
    assert_eq!(
        open(&mut g, &new, NOW + 10),
        Ok((Principal::Tenant(1), true))
    );
    let counters: std::collections::HashMap<String, u64> = g.counters().into_iter().collect();
    assert_eq!(counters["auth.refused.before_start"], 1);
}

/// The finding of the probe of 2026-12-06: a key line for `tenant:4294967295` was accepted,
/// and its capability stood for every tenant, as the admin's does.
#[test]
fn a_tenant_key_for_the_reserved_any_tenant_id_is_refused() {
    let line = format!(
        "{} 1 9 tenant:4294967295 {}",
        KEY_LINE,
        "ab".repeat(SECRET_LEN)
    );
    let e = Credential::from_line(&line, 3).unwrap_err();
    assert!(e.to_string().contains("reserved"), "{e}");
    let k = Credential::new(9, Principal::Tenant(ANY_TENANT), [1; SECRET_LEN]);
    assert_eq!(
        Keyring::new(vec![k]).unwrap_err(),
        AuthError::ReservedTenant { key_id: 9 }
    );
    let ok = format!(
        "{} 1 9 tenant:4294967294 {}",
        KEY_LINE,
        "ab".repeat(SECRET_LEN)
    );
    assert!(Credential::from_line(&ok, 3).is_ok());
}

/// Found by the second probe: an all-zero secret, and one secret for the admin and a tenant
/// (whose holder could then compute the admin's capability), were accepted.
#[test]
fn a_keyring_refuses_a_zero_secret_and_a_secret_used_twice() {
    let zero = Credential::new(3, Principal::Tenant(1), [0; SECRET_LEN]);
    assert_eq!(
        Keyring::new(vec![key(0, Principal::Admin), zero]).unwrap_err(),
        AuthError::ZeroSecret { key_id: 3 }
    );
    let admin = Credential::new(0, Principal::Admin, [5; SECRET_LEN]);
    let tenant = Credential::new(4, Principal::Tenant(1), [5; SECRET_LEN]);
    let e = Keyring::new(vec![admin, key(1, Principal::Tenant(2)), tenant]).unwrap_err();
    assert_eq!(
        e,
        AuthError::SharedSecret {
            first: 0,
            second: 4
        }
    );
    assert!(e.to_string().contains("same secret"), "{e}");
}

#[test]
fn every_refusal_of_a_validly_sealed_request_fits_in_the_smallest_one() {
    // A capture replayed to a restarted server (sealed before it started), or past the time
    // window, carries a valid MAC but proves nothing of its sender: its refusal must not be
    // larger than it, with the detail the client reads (to seal a query anew) intact.
    let smallest_sealed =
        crate::wire::HEADER_LEN + crate::wire::SEALED_OVERHEAD + crate::wire::HEADER_LEN;
    for r in Refusal::ALL {
        let e = crate::wire::ErrorRepr {
            code: r.code(),
            detail: r.detail(),
            retry_after_us: None,
        };
        let refusal = e.within(smallest_sealed);
        if !matches!(r, Refusal::Unsealed) {
            assert_eq!(refusal.detail, r.detail(), "{}: cut", r.name());
        }
    }
}
