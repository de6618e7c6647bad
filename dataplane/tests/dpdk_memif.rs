//! Two processes over net_memif: a server `DpdkPort` answering on class ports and a client
//! `DpdkPort` sending requests to them, each with its own EAL (`--file-prefix`), `--no-huge`.
//!
//! The test re-runs this test binary twice, as the server and as the client (the role comes
//! in the environment), and checks both exit cleanly.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use naam_dataplane::port::{open, AnyPort, PacketBatch, Peer, Port, PortOptions};

const ROLE: &str = "NAAM_MEMIF_ROLE";
const SOCKET: &str = "NAAM_MEMIF_SOCKET";
const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7000);
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 9000);
const CLASSES: u16 = 4;
const REQUESTS: u16 = 16;
const TEST_NAME: &str = "memif_two_processes";

fn eal_args(role: &str, socket: &str, core: u32, addr: SocketAddrV4) -> String {
    format!(
        "dpdk:--no-huge -m 256 --no-pci --no-telemetry -l {core} --log-level=notice \
         --file-prefix=naam-memif-{role}-{pid} --vdev=net_memif0,role={role},socket={socket} \
         --naam-addr={addr}",
        pid = std::process::id()
    )
}

fn dpdk(port: &AnyPort) -> &naam_dataplane::port::DpdkPort {
    match port {
        AnyPort::Dpdk(p) => p,
        AnyPort::Udp(_) => unreachable!("opened a dpdk: spec"),
    }
}

fn run_server(socket: &str) {
    let mut port = open(
        &eal_args("server", socket, 0, SERVER),
        &PortOptions { classes: CLASSES },
    )
    .expect("server port");
    let mut batch = PacketBatch::with_capacity(32);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "server: client never said bye");
        batch.clear();
        if port.rx_burst(&mut batch).unwrap() == 0 {
            std::thread::yield_now();
            continue;
        }
        let mut bye = false;
        for p in batch.iter_mut() {
            bye |= p.payload() == b"bye";
            let mut reply = [0u8; 64];
            let n = p.payload().len().min(60);
            reply[..3].copy_from_slice(b"re:");
            reply[3..3 + n].copy_from_slice(&p.payload()[..n]);
            assert!(p.set_payload(&reply[..3 + n]));
        }
        port.tx_burst(&batch).unwrap();
        port.flush().unwrap();
        if bye {
            break;
        }
    }
    println!("server stats: {:?}", port.stats());
    assert_eq!(port.stats().total_drops(), 0);
}

fn run_client(socket: &str) {
    let mut port = open(
        &eal_args("client", socket, 1, CLIENT),
        &PortOptions { classes: 1 },
    )
    .expect("client port");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dpdk(&port).eth_port().link_up().unwrap() {
        assert!(
            Instant::now() < deadline,
            "client: memif link never came up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut out = PacketBatch::with_capacity(1);
    let mut inb = PacketBatch::with_capacity(32);
    let mut send = |port: &mut AnyPort, class: u16, payload: &[u8]| {
        out.clear();
        let p = out.push().unwrap();
        p.set_peer(Peer::to(SocketAddrV4::new(
            *SERVER.ip(),
            SERVER.port() + class,
        )));
        assert!(p.set_payload(payload));
        port.tx_burst(&out).unwrap();
        port.flush().unwrap();
    };
    for i in 0..REQUESTS {
        let class = i % CLASSES;
        let req = format!("req-{i}");
        let expect = format!("re:req-{i}");
        let mut answered = false;
        // Resend on silence: the server side of the link may come up a little later.
        for _attempt in 0..50 {
            send(&mut port, class, req.as_bytes());
            let wait = Instant::now() + Duration::from_millis(200);
            while Instant::now() < wait && !answered {
                inb.clear();
                port.rx_burst(&mut inb).unwrap();
                for p in inb.iter() {
                    if p.payload() == expect.as_bytes() {
                        assert_eq!(
                            p.peer().remote,
                            SocketAddrV4::new(*SERVER.ip(), SERVER.port() + class)
                        );
                        assert_eq!(p.peer().local, CLIENT);
                        assert_eq!(p.class(), 0);
                        answered = true;
                    }
                }
            }
            if answered {
                break;
            }
        }
        assert!(answered, "client: no reply to {req}");
    }
    send(&mut port, 0, b"bye");
    println!("client stats: {:?}", port.stats());
}

fn spawn(role: &str, socket: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(SOCKET, socket)
        .spawn()
        .expect("spawn role process")
}

fn wait(mut child: Child, role: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{role} process failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{role} process timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn memif_two_processes() {
    if let Ok(role) = std::env::var(ROLE) {
        let socket = std::env::var(SOCKET).expect("socket path");
        match role.as_str() {
            "server" => run_server(&socket),
            "client" => run_client(&socket),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let socket = format!("/tmp/naam-memif-{}.sock", std::process::id());
    let server = spawn("server", &socket);
    std::thread::sleep(Duration::from_millis(300)); // let the server create the socket
    let client = spawn("client", &socket);
    let pids = (server.id(), client.id());
    wait(client, "client");
    wait(server, "server");
    let _ = std::fs::remove_file(&socket);
    for (role, pid) in [("server", pids.0), ("client", pids.1)] {
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/naam-memif-{role}-{pid}"));
    }
}
