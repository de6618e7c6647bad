//! The whole dataplane runtime (worker threads, control thread, UDP ports) against an
//! in-process stand-in host agent: a `ShmHost` serving `link.sock` with a thread that answers
//! ring entries and publishes load, and a `control.sock` that answers REGISTER.

mod common;

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use common::{call, record_request, run_dir, TestHost};
use naam_core::wire::{
    Body, ErrorCode, KvEntry, Location, Message, OffloadIdRepr, PageRequestRepr, RegisterRepr,
};
use naam_dataplane::runtime::{BackoffMode, Runtime, RuntimeConfig};

#[test]
fn udp_end_to_end_nic_execution_control_and_host_restart() {
    let tmp = run_dir("e2e");
    let dir = tmp.path().to_owned();
    let host = TestHost::start(&dir);
    let rt = Runtime::start(RuntimeConfig {
        port: "udp:127.0.0.1:0".into(),
        workers: 2,
        classes: 8,
        run_dir: dir.clone(),
        idle: BackoffMode::Yield,
        connect_wait: Duration::from_secs(5),
        ..Default::default()
    })
    .unwrap();
    let data = rt.data_addr();
    let record_port = SocketAddr::V4(SocketAddrV4::new(*data.ip(), data.port() + 5));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();

    // A bundled offload executed on the NIC, reading host memory over the link.
    let reply = call(&client, record_port, &record_request(1));
    let m = Message::parse(&reply).unwrap();
    assert_eq!(m.request_id, 1);
    match m.body {
        Body::AmReply(r) => {
            assert_eq!(r.executed_at, Location::Nic);
            assert_eq!(r.output.len(), 8);
        }
        other => panic!("expected an AM reply, got {other:?}"),
    }

    // Control port: LIST shows the bundled offload, STATS counts the message, REGISTER goes
    // through the host agent, which picks id 16.
    let ctl = rt.control_addr();
    let list = call(
        &client,
        ctl,
        &Message::new(2, 0, Body::List(PageRequestRepr { start: 0, max: 0 })),
    );
    match Message::parse(&list).unwrap().body {
        Body::ListReply(l) => {
            assert!(l.entries.iter().any(|e| e.id == 5 && e.name == "record"));
        }
        other => panic!("expected a list, got {other:?}"),
    }
    let reg = call(
        &client,
        ctl,
        &Message::new(
            3,
            0,
            Body::Register(RegisterRepr {
                name: "record2",
                tenant: 1,
                class: 6,
                read_only: true,
                section: None,
                object: naam_handlers::RECORD_OBJECT,
            }),
        ),
    );
    assert_eq!(
        Message::parse(&reg).unwrap().body,
        Body::RegisterReply(OffloadIdRepr { id: 16 })
    );
    let bad = call(
        &client,
        ctl,
        &Message::new(
            4,
            0,
            Body::Register(RegisterRepr {
                name: "junk",
                tenant: 1,
                class: 6,
                read_only: true,
                section: None,
                object: b"not an ELF object",
            }),
        ),
    );
    match Message::parse(&bad).unwrap().body {
        Body::Error(e) => assert_eq!(e.code, ErrorCode::InvalidProgram),
        other => panic!("expected invalid_program, got {other:?}"),
    }
    // One counter of a STATS page (request `id`).
    let stat = |id: u64, name: &str| -> Option<u64> {
        let stats = call(
            &client,
            ctl,
            &Message::new(id, 0, Body::Stats(PageRequestRepr { start: 0, max: 0 })),
        );
        let Body::StatsReply(page) = Message::parse(&stats).unwrap().body else {
            panic!("expected stats")
        };
        page.entries
            .iter()
            .find(|e: &KvEntry<'_>| e.name == name)
            .map(|e| e.value)
    };
    let get = |name: &str| stat(5, name);
    assert_eq!(get("total.nic_executed"), Some(1));
    assert_eq!(get("dp.workers"), Some(2));
    assert_eq!(get("dp.host_up"), Some(1));
    assert_eq!(get("class.5.placement"), Some(1), "class 5 at the NIC");

    // The host agent dies: within the heartbeat timeout requests get HostUnavailable.
    host.kill();
    let start = Instant::now();
    let mut id = 100;
    loop {
        id += 1;
        let reply = call(&client, record_port, &record_request(id));
        if let Body::Error(e) = Message::parse(&reply).unwrap().body {
            assert_eq!(e.code, ErrorCode::HostUnavailable);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "host loss not noticed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let noticed = start.elapsed();
    assert!(
        noticed < Duration::from_millis(500),
        "noticed after {noticed:?}"
    );
    // A control request that needs it says it is gone, not that its heartbeat is late (which
    // tells the user to try again at once), once the control thread has seen it go (the
    // workers notice on their own queue pairs, a few milliseconds earlier).
    let seen = Instant::now();
    while stat(9, "dp.host_up") != Some(0) {
        assert!(
            seen.elapsed() < Duration::from_secs(2),
            "dp.host_up stays 1"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let reg = call(
        &client,
        ctl,
        &Message::new(
            6,
            0,
            Body::Register(RegisterRepr {
                name: "record3",
                tenant: 1,
                class: 6,
                read_only: true,
                section: None,
                object: naam_handlers::RECORD_OBJECT,
            }),
        ),
    );
    match Message::parse(&reg).unwrap().body {
        Body::Error(e) => {
            assert_eq!(e.code, ErrorCode::HostUnavailable);
            assert!(e.detail.contains("gone"), "{}", e.detail);
        }
        other => panic!("expected host_unavailable, got {other:?}"),
    }

    // It comes back: the dataplane reconnects and serves again.
    let host = TestHost::start(&dir);
    let start = Instant::now();
    loop {
        id += 1;
        let reply = call(&client, record_port, &record_request(id));
        if let Body::AmReply(r) = Message::parse(&reply).unwrap().body {
            assert_eq!(r.executed_at, Location::Nic);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "no reconnection");
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.stop();
    host.kill();
}
