//! The B-tree wrapper against a real deployment (see `common`), whose host agent built the
//! tree: its `i`-th key is `2i + 1`, the value of key `k` is `hash64(seed, k)`, with the seed
//! and the key count the `btree` application describes.

mod common;

use common::start_server;
use naam_client::{BTree, Client, ClientConfig, ExecMode, ServerAddr};
use naam_core::wire::Location;

/// The tree's key count and seed, as the server describes them.
fn contents(t: &mut BTree) -> (u64, u64) {
    let p = t.inner_mut().describe(0, "btree").unwrap();
    let get = |n: &str| p.iter().find(|(k, _)| k == n).map(|&(_, v)| v).unwrap();
    (get("keys"), get("seed"))
}

fn key(i: u64) -> u64 {
    2 * i + 1
}

fn value(seed: u64, key: u64) -> u64 {
    naam_core::helpers::hash64(seed, key)
}

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
    for mode in [ExecMode::Server, ExecMode::Local] {
        let mut t = btree(&s, mode);
        let (keys, seed) = contents(&mut t);
        let p = *t.params(0).unwrap();
        assert!(
            p.depth >= 2,
            "a tree deep enough to take several steps: {p:?}"
        );
        for i in [0, 1, 17, keys / 2, keys - 1] {
            let k = key(i);
            assert_eq!(
                t.lookup(k).unwrap(),
                Some(value(seed, k)),
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
    let (keys, _) = contents(&mut server);
    for k in (0..key(keys)).step_by(97) {
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
            &naam_handlers::btree::Args::lookup(3, key(10)).to_bytes(),
            ExecMode::Local,
        )
        .unwrap();
    assert_eq!(r.executed_at, Location::Client);
}

#[test]
fn scan_returns_pairs_in_order_across_reply_pages() {
    let s = start_server();
    for mode in [ExecMode::Server, ExecMode::Local] {
        let mut t = btree(&s, mode);
        let (keys, seed) = contents(&mut t);
        // 100 pairs need more than one SCAN reply (48 pairs at most each); the scan starts at
        // the first key not below its start (key(5) + 1 falls between two keys).
        let got = t.scan(key(5) + 1, 100).unwrap();
        let want: Vec<(u64, u64)> = (6..106).map(|i| (key(i), value(seed, key(i)))).collect();
        assert_eq!(got, want, "{mode:?}");
        let tail = t.scan(key(keys - 3), 10).unwrap();
        assert_eq!(tail.len(), 3, "the scan stops at the last key");
        assert!(t.scan(key(keys), 5).unwrap().is_empty());
    }
}
