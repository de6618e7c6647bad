//! A stand-in host agent for the runtime and binary tests.
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use naam_core::auth::{wall_clock_ns, Credential, Keyring, Principal};
use naam_core::region::Perms;
use naam_core::wire::{
    AmFlags, AmReplyRepr, AmRequestRepr, AmStatus, Body, Location, Message, OffloadIdRepr,
};
use naam_link::{now_ns, Link, RegionSpec, ShmConfig, ShmHost, MSG_MAX};

const KEY: u64 = 0xfeed_f00d;

/// A stand-in host agent: link area with region 4, one worker answering every ring entry
/// with `executed_at = host`, heartbeat, and a control socket answering REGISTER with id 16.
pub struct TestHost {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// The admin credential of the stand-in host agent's key file (`DIR/credentials`).
pub fn admin() -> Credential {
    Credential::new(0, Principal::Admin, [0x42; 32])
}

impl TestHost {
    pub fn start(dir: &Path) -> TestHost {
        let keys = Keyring::new(vec![admin()]).unwrap();
        std::fs::write(dir.join("credentials"), keys.to_text()).unwrap();
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
                    let outer = Message::parse(&buf[..n]).unwrap();
                    // The dataplane forwards sealed requests as they came.
                    let req = match outer.body {
                        Body::Sealed(s) => Message::parse(s.inner).unwrap(),
                        _ => outer,
                    };
                    let body = match req.body {
                        Body::Register(_) => Body::RegisterReply(OffloadIdRepr { id: 16 }),
                        _ => Body::Ack,
                    };
                    let len = req.reply(body).emit(&mut out).unwrap();
                    // The dataplane may have given up on this connection meanwhile (its
                    // forwards stop waiting once the heartbeat is late, as on a loaded
                    // machine): its next request comes on a new one.
                    let _ = c.send(&out[..len]);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        TestHost {
            stop,
            threads: vec![link_thread, ctl_thread],
        }
    }

    pub fn kill(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// A fresh private run directory, removed when the guard drops (a failed test leaves nothing
/// behind either).
pub fn run_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("naam-dp-{name}-"))
        .tempdir()
        .unwrap()
}

/// Sends `msg` (control requests sealed with [`admin`]) and returns the reply.
pub fn call(sock: &UdpSocket, to: SocketAddr, msg: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let n = msg.emit(&mut buf).unwrap();
    let control = !matches!(msg.body, Body::AmRequest(_) | Body::OneSided(_));
    let datagram = if control {
        admin().seal(wall_clock_ns(), &buf[..n]).unwrap()
    } else {
        buf[..n].to_vec()
    };
    sock.send_to(&datagram, to).unwrap();
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("a reply within the timeout");
    buf.truncate(n);
    buf
}

pub fn record_request(id: u64) -> Message<'static> {
    const ARGS: &[u8] = &[4, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0];
    Message::new(
        id,
        5,
        Body::AmRequest(AmRequestRepr {
            offload: 5,
            tenant: 1,
            capability: admin().capability(1),
            flags: AmFlags::empty(),
            args: ARGS,
        }),
    )
}
