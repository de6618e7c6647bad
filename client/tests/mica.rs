//! The MICA wrapper against real deployments (see `common`): server and local execution,
//! pipelining, sharding over two servers (at-most-once PUTs under reply loss: `real_client.rs`).

mod common;

use common::{start_server, start_server_n};
use naam_client::apps::MicaOutcome;
use naam_client::{
    Client, ClientConfig, ExecMode, Mica, Response, ServerAddr, ShardedClient, Shards,
};
use std::collections::HashMap;
use std::time::Duration;

fn cfg(mode: ExecMode) -> ClientConfig {
    ClientConfig {
        exec_mode: mode,
        // Long enough that a busy machine does not cause spurious retransmissions, which
        // the fault-injection tests count exactly.
        timeout: Duration::from_millis(100),
        ..ClientConfig::default()
    }
}

fn mica(s: &common::TestServer, mode: ExecMode) -> Mica {
    let c = Client::with_servers(
        &[ServerAddr::new(s.data, Some(s.control))],
        s.sealed(cfg(mode)),
    )
    .unwrap();
    Mica::new(c).unwrap()
}

#[test]
fn put_get_delete_at_the_server_and_at_the_client() {
    let s = start_server();
    let mut server = mica(&s, ExecMode::Server);
    let mut local = mica(&s, ExecMode::Local);
    server.put(b"alpha", b"one").unwrap();
    assert_eq!(server.get(b"alpha").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(
        local.get(b"alpha").unwrap().as_deref(),
        Some(&b"one"[..]),
        "local GET sees it"
    );
    local.put(b"beta", &[7u8; 300]).unwrap();
    assert_eq!(
        server.get(b"beta").unwrap(),
        Some(vec![7u8; 300]),
        "local PUT is visible"
    );
    local.put(b"alpha", b"uno").unwrap();
    assert_eq!(server.get(b"alpha").unwrap().as_deref(), Some(&b"uno"[..]));
    assert!(local.delete(b"alpha").unwrap());
    assert_eq!(server.get(b"alpha").unwrap(), None);
    assert!(!server.delete(b"alpha").unwrap(), "already gone");
    assert_eq!(local.get(b"nothing").unwrap(), None);
    assert!(local.inner().stats().local_runs >= 5);
    // Bad input is refused before anything is sent.
    assert!(server.put(b"", b"x").is_err());
    assert!(server.put(&[1u8; 17], b"x").is_err());
    assert!(server.put(b"k", &[0u8; 2000]).is_err());
}

#[test]
fn local_and_server_execution_agree_on_many_keys() {
    let s = start_server();
    let mut server = mica(&s, ExecMode::Server);
    let mut local = mica(&s, ExecMode::Local);
    for i in 0..300u32 {
        let v = format!("value-{i}-{}", "x".repeat((i % 50) as usize));
        let k = format!("k{i}");
        if i % 2 == 0 {
            server.put(k.as_bytes(), v.as_bytes()).unwrap();
        } else {
            local.put(k.as_bytes(), v.as_bytes()).unwrap();
        }
    }
    for i in 0..320u32 {
        let k = format!("k{i}");
        assert_eq!(
            local.get(k.as_bytes()).unwrap(),
            server.get(k.as_bytes()).unwrap(),
            "key {k}"
        );
    }
}

#[test]
fn pipelined_puts_and_gets() {
    let s = start_server();
    let mut m = mica(&s, ExecMode::Server);
    let mut tickets = HashMap::new();
    for i in 0..200u32 {
        let t = m
            .submit_put(&i.to_le_bytes(), &(i * 7).to_le_bytes())
            .unwrap();
        tickets.insert(t, i);
    }
    while let Some(c) = m.inner_mut().poll(Some(Duration::from_secs(5))).unwrap() {
        tickets.remove(&c.ticket).unwrap();
        let Response::Am(r) = c.result.unwrap() else {
            panic!()
        };
        assert_eq!(Mica::<Client>::decode(&r).unwrap(), MicaOutcome::Done);
    }
    assert!(tickets.is_empty());
    for i in 0..200u32 {
        let t = m.submit_get(&i.to_le_bytes()).unwrap();
        tickets.insert(t, i);
    }
    while let Some(c) = m.inner_mut().poll(Some(Duration::from_secs(5))).unwrap() {
        let i = tickets.remove(&c.ticket).unwrap();
        let Response::Am(r) = c.result.unwrap() else {
            panic!()
        };
        assert_eq!(
            Mica::<Client>::decode(&r).unwrap(),
            MicaOutcome::Value((i * 7).to_le_bytes().to_vec())
        );
    }
    assert!(tickets.is_empty());
}

#[test]
fn sharded_mica_keeps_each_key_on_its_server() {
    let a = start_server_n(0);
    let b = start_server_n(1);
    let addrs = [
        ServerAddr::new(a.data, Some(a.control)),
        ServerAddr::new(b.data, Some(b.control)),
    ];
    let sc = ShardedClient::connect(&addrs, a.sealed(cfg(ExecMode::Server))).unwrap();
    let mut m = Mica::new(sc).unwrap();
    let mut owners = [0usize; 2];
    for i in 0..300u32 {
        let k = format!("user{i}");
        m.put(k.as_bytes(), &i.to_le_bytes()).unwrap();
        owners[m.inner().server_for(k.as_bytes())] += 1;
    }
    assert!(owners.iter().all(|&n| n > 75), "keys spread: {owners:?}");
    let mut direct = [mica(&a, ExecMode::Server), mica(&b, ExecMode::Server)];
    for i in 0..300u32 {
        let k = format!("user{i}");
        let owner = m.inner().server_for(k.as_bytes());
        assert_eq!(m.get(k.as_bytes()).unwrap(), Some(i.to_le_bytes().to_vec()));
        assert_eq!(
            direct[owner].get(k.as_bytes()).unwrap(),
            Some(i.to_le_bytes().to_vec()),
            "{k} is on its owner"
        );
        assert_eq!(
            direct[1 - owner].get(k.as_bytes()).unwrap(),
            None,
            "{k} is only there"
        );
    }
    // Local execution through the sharded client reaches the right server too.
    m.inner_mut().config_mut().exec_mode = ExecMode::Local;
    for i in (0..300u32).step_by(7) {
        let k = format!("user{i}");
        assert_eq!(m.get(k.as_bytes()).unwrap(), Some(i.to_le_bytes().to_vec()));
    }
}
