//! The whole dataplane runtime (worker threads, control thread, UDP ports) against an
//! in-process stand-in host agent: a `ShmHost` serving `link.sock` with a thread that answers
//! ring entries and publishes load, and a `control.sock` that answers REGISTER.

use std::io::Read;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use naam_core::region::Perms;
use naam_core::wire::{
    AmFlags, AmReplyRepr, AmRequestRepr, AmStatus, Body, ErrorCode, KvEntry, Location, Message,
    OffloadIdRepr, PageRequestRepr, RegisterRepr,
};
use naam_dataplane::runtime::{IdleMode, Runtime, RuntimeConfig};
use naam_link::{now_ns, Link, RegionSpec, ShmConfig, ShmHost, MSG_MAX};

const KEY: u64 = 0xfeed_f00d;

/// A stand-in host agent: link area with region 4, one worker answering every ring entry
/// with `executed_at = host`, heartbeat, and a control socket answering REGISTER with id 16.
struct TestHost {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl TestHost {
    fn start(dir: &Path) -> TestHost {
        let mut host = ShmHost::create(&ShmConfig {
            qps: 2,
            load_slots: 1,
            arena_bytes: 1 << 20,
            hugetlb: false,
            ..Default::default()
        })
        .unwrap();
        host.register_region(RegionSpec {
            id: 4,
            tenant: 1,
            len: 4096,
            perms: Perms::ALL,
            key: KEY,
        })
        .unwrap();
        host.serve(&dir.join("link.sock")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let link_thread = std::thread::spawn(move || {
            let mut qps = [host.qp(0).unwrap(), host.qp(1).unwrap()];
            let publisher = host.load_publisher();
            let mut buf = vec![0u8; MSG_MAX];
            let mut out = vec![0u8; MSG_MAX];
            while !s.load(Ordering::Acquire) {
                let _ = host.poll_peer();
                publisher.publish(0, 10_000, 0, now_ns());
                for qp in qps.iter_mut() {
                    while let Ok(Some(r)) = qp.recv(&mut buf) {
                        let Ok(req) = Message::parse(&buf[8..r.len]) else {
                            continue;
                        };
                        let reply = req.reply(Body::AmReply(AmReplyRepr {
                            status: AmStatus::Done,
                            executed_at: Location::Host,
                            steps: 1,
                            hint: None,
                            output: b"host",
                        }));
                        out[..8].copy_from_slice(&buf[..8]);
                        let n = reply.emit(&mut out[8..]).unwrap();
                        let _ = qp.send(&out[..8 + n]);
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            drop(host);
        });
        let ctl_path = dir.join("control.sock");
        let _ = std::fs::remove_file(&ctl_path);
        let listener =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None).unwrap();
        listener
            .bind(&socket2::SockAddr::unix(&ctl_path).unwrap())
            .unwrap();
        listener.listen(4).unwrap();
        listener.set_nonblocking(true).unwrap();
        let s = stop.clone();
        let ctl_thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            let mut out = vec![0u8; 70_000];
            let mut conns = Vec::new();
            while !s.load(Ordering::Acquire) {
                if let Ok((c, _)) = listener.accept() {
                    c.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
                    conns.push(c);
                }
                for c in &conns {
                    let mut r: &socket2::Socket = c;
                    let Ok(n) = r.read(&mut buf) else { continue };
                    if n == 0 {
                        continue;
                    }
                    let req = Message::parse(&buf[..n]).unwrap();
                    let body = match req.body {
                        Body::Register(_) => Body::RegisterReply(OffloadIdRepr { id: 16 }),
                        _ => Body::Ack,
                    };
                    let len = req.reply(body).emit(&mut out).unwrap();
                    c.send(&out[..len]).unwrap();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        TestHost {
            stop,
            threads: vec![link_thread, ctl_thread],
        }
    }

    fn kill(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

fn run_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("naam-dp-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn call(sock: &UdpSocket, to: SocketAddr, msg: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let n = msg.emit(&mut buf).unwrap();
    sock.send_to(&buf[..n], to).unwrap();
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("a reply within the timeout");
    buf.truncate(n);
    buf
}

fn record_request(id: u64) -> Message<'static> {
    const ARGS: &[u8] = &[4, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0];
    Message::new(
        id,
        5,
        Body::AmRequest(AmRequestRepr {
            offload: 5,
            tenant: 1,
            flags: AmFlags::empty(),
            args: ARGS,
        }),
    )
}

#[test]
fn udp_end_to_end_nic_execution_control_and_host_restart() {
    let dir = run_dir("e2e");
    let host = TestHost::start(&dir);
    let rt = Runtime::start(RuntimeConfig {
        port: "udp:127.0.0.1:0".into(),
        workers: 2,
        classes: 8,
        run_dir: dir.clone(),
        idle: IdleMode::Yield,
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
    let stats = call(
        &client,
        ctl,
        &Message::new(5, 0, Body::Stats(PageRequestRepr { start: 0, max: 0 })),
    );
    let Body::StatsReply(page) = Message::parse(&stats).unwrap().body else {
        panic!("expected stats")
    };
    let get = |name: &str| -> Option<u64> {
        page.entries
            .iter()
            .find(|e: &KvEntry<'_>| e.name == name)
            .map(|e| e.value)
    };
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
    let _ = std::fs::remove_dir_all(&dir);
}
