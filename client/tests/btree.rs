//! The B-tree wrapper against a server (the fake today; see `common`).

mod common;

use common::start_server;
use naam_client::fake::{btree_value, BTREE_KEYS, BTREE_STEP};
use naam_client::{BTree, Client, ClientConfig, ExecMode, ServerAddr};
use naam_core::wire::Location;

fn btree(s: &common::TestServer, mode: ExecMode) -> BTree {
    let cfg = ClientConfig {
        exec_mode: mode,
        ..ClientConfig::default()
    };
    let c =
        Client::with_servers(&[ServerAddr::new(s.data, Some(s.control))], s.sealed(cfg)).unwrap();
    BTree::new(c).unwrap()
}

#[test]
fn lookup_finds_present_keys_and_misses_absent_ones() {
    let s = start_server();
    if common::fake_or_skip(&s, "exact B-tree contents").is_none() {
        return;
    }
    for mode in [ExecMode::Server, ExecMode::Local] {
        let mut t = btree(&s, mode);
        let p = *t.params(0).unwrap();
        assert!(
            p.depth >= 2,
            "a tree deep enough to take several steps: {p:?}"
        );
        for i in [0, 1, 17, 999, BTREE_KEYS - 1] {
            let k = i * BTREE_STEP;
            assert_eq!(
                t.lookup(k).unwrap(),
                Some(btree_value(k)),
                "{mode:?} key {k}"
            );
            assert_eq!(t.lookup(k + 1).unwrap(), None, "{mode:?} key {}", k + 1);
        }
        assert_eq!(t.lookup(u64::MAX).unwrap(), None);
    }
}

#[test]
fn local_lookups_run_at_the_client_with_the_same_results() {
    let s = start_server();
    let mut local = btree(&s, ExecMode::Local);
    let mut server = btree(&s, ExecMode::Server);
    for k in (0..BTREE_KEYS * BTREE_STEP).step_by(997) {
        assert_eq!(
            local.lookup(k).unwrap(),
            server.lookup(k).unwrap(),
            "key {k}"
        );
    }
    let st = local.inner_mut().stats();
    assert!(
        st.local_runs > 0 && st.local_steps >= st.local_runs,
        "{st:?}"
    );
    let r = local
        .inner_mut()
        .call_on(
            0,
            3,
            3,
            &naam_handlers::btree::Args::lookup(3, 20).to_bytes(),
            ExecMode::Local,
        )
        .unwrap();
    assert_eq!(r.executed_at, Location::Client);
}

#[test]
fn scan_returns_pairs_in_order_across_reply_pages() {
    let s = start_server();
    if common::fake_or_skip(&s, "exact B-tree contents").is_none() {
        return;
    }
    for mode in [ExecMode::Server, ExecMode::Local] {
        let mut t = btree(&s, mode);
        // 100 pairs need more than one SCAN reply (48 pairs at most each).
        let got = t.scan(55, 100).unwrap();
        let want: Vec<(u64, u64)> = (6..106)
            .map(|i| (i * BTREE_STEP, btree_value(i * BTREE_STEP)))
            .collect();
        assert_eq!(got, want, "{mode:?}");
        let tail = t.scan((BTREE_KEYS - 3) * BTREE_STEP, 10).unwrap();
        assert_eq!(tail.len(), 3, "the scan stops at the last key");
        assert!(t.scan(BTREE_KEYS * BTREE_STEP, 5).unwrap().is_empty());
    }
}
