use super::*;

fn b(client: u32, nic: u32, host: u32, delayed: u32) -> Bucket {
    Bucket {
        client,
        nic,
        host,
        delayed,
        lost: 0,
    }
}

/// A timeline: `n` ms at the host, then `stuck` ms delayed, then at the NIC.
fn shifted(before: usize, stuck: usize, after: usize) -> Vec<Bucket> {
    let mut t = vec![b(0, 0, 20, 0); before];
    t.extend(vec![b(0, 0, 0, 20); stuck]);
    t.extend(vec![b(0, 20, 0, 0); after]);
    t
}

#[test]
fn shift_time_is_from_onset_to_the_first_ms_that_stays_elsewhere() {
    let t = shifted(100, 4, 100);
    let away = |b: &Bucket| b.away_from(Location::Host);
    assert_eq!(settle_ms(&t, 100, 50, away, 0.9, 5), Some(4));
    // Onset earlier than the first stuck ms: the time includes the ms still at the host.
    assert_eq!(settle_ms(&t, 97, 50, away, 0.9, 5), Some(7));
    // Not within the horizon.
    assert_eq!(settle_ms(&t, 100, 3, away, 0.9, 5), None);
    // Back: the end until ≥ 90 % at the host again.
    let mut back = t.clone();
    back.extend(vec![b(0, 0, 20, 0); 50]);
    assert_eq!(
        settle_ms(&back, 110, 200, |b| b.at(Location::Host), 0.9, 5),
        Some(94)
    );
}

#[test]
fn one_lucky_millisecond_does_not_count_and_empty_ones_are_skipped() {
    let mut t = vec![b(0, 0, 20, 0); 10];
    t[3] = b(0, 20, 0, 0); // a lone ms elsewhere
    t[4] = b(0, 0, 0, 0); // nothing sent
    t.extend(vec![b(0, 19, 1, 0); 10]); // 95 % elsewhere from ms 10
    let away = |b: &Bucket| b.away_from(Location::Host);
    assert_eq!(settle_ms(&t, 0, 20, away, 0.9, 5), Some(10));
    // 85 % is not enough.
    let t2 = vec![b(0, 17, 3, 0); 10];
    assert_eq!(settle_ms(&t2, 0, 10, away, 0.9, 5), None);
    // Client and NIC both count as elsewhere; delayed messages do not.
    let t3 = vec![b(10, 9, 0, 1); 10];
    assert_eq!(settle_ms(&t3, 0, 10, away, 0.9, 5), Some(0));
    let t4 = vec![b(10, 7, 0, 3); 10];
    assert_eq!(settle_ms(&t4, 0, 10, away, 0.9, 5), None);
}

#[test]
fn dominant_place_and_spread() {
    let t = shifted(10, 0, 10);
    assert_eq!(dominant_before(&t, 10, 5), Some(Location::Host));
    assert_eq!(dominant_before(&t, 20, 5), Some(Location::Nic));
    assert_eq!(dominant_before(&t, 0, 5), None);
    let s = Spread::of(vec![5.0, 1.0, 3.0, 9.0]);
    assert_eq!((s.n, s.median, s.min, s.max), (4, 4.0, 1.0, 9.0));
    assert_eq!(Spread::of(vec![2.0, 7.0, 3.0]).median, 3.0);
}

#[test]
fn timeline_shares_sum_to_one() {
    let rows = timeline_rows(&[b(1, 2, 3, 4), Bucket::default()]);
    let r = &rows[0];
    let sum = r.client + r.nic + r.host + r.delayed + r.lost;
    assert!((sum - 1.0).abs() < 1e-9);
    assert_eq!(rows[1].sent, 0);
}

#[test]
fn decisions_parse_from_stats_names_and_are_kept_once() {
    let mono0 = 1_000_000_000;
    let d = PolicyDecision::parse("decision.3.c0.host-nic.HostCongested", 1_012_500_000, mono0)
        .unwrap();
    assert_eq!(d.class, 0);
    assert_eq!((d.from.as_str(), d.to.as_str()), ("host", "nic"));
    assert_eq!(d.reason_text(), "host congested");
    assert!((d.at_ms() - 12.5).abs() < 1e-9);
    assert!(PolicyDecision::parse("total.rx", 5, 0).is_none());
    let stats = vec![
        (
            "decision.0.c3.nic-client.BothCongested".to_owned(),
            2_000_000_000,
        ),
        (
            "decision.1.c0.host-nic.HostCongested".to_owned(),
            1_500_000_000,
        ),
        ("dp.workers".to_owned(), 1),
    ];
    let mut log = DecisionLog::default();
    let new = log.absorb(&stats, mono0);
    assert_eq!(new.len(), 2);
    assert!(new[0].at_ms() < new[1].at_ms(), "oldest first");
    assert!(log.absorb(&stats, mono0).is_empty(), "seen once");
    assert_eq!(log.all().len(), 2);
}
