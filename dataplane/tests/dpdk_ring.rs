//! The DPDK layer and port over two ethdev ports joined by a ring pair (`rte_eth_from_rings`):
//! a crafted Eth/IPv4/UDP request sent raw on one port is received by a `DpdkPort` on the
//! other, answered, and the reply checked on the wire; malformed frames are counted and
//! dropped; rte_flow reports that the PMD does not support it.
//!
//! One `#[test]`: EAL initialises once per process, and this binary is that process.

use std::net::{Ipv4Addr, SocketAddrV4};

use naam_dataplane::dpdk::{
    flow, ring_pair, Eal, EthPort, LcoreId, MbufBurst, Mempool, PortConfig, RxQueue, TxQueue,
    MBUF_DATA_ROOM,
};
use naam_dataplane::port::frame::{self, UdpHeaders, HEADERS_LEN};
use naam_dataplane::port::{DpdkPort, DpdkPortConfig, DropReason, PacketBatch, Peer, Port};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const BASE: u16 = 7000;
const CLASSES: u16 = 8;

struct Raw {
    rx: RxQueue,
    tx: TxQueue,
    pool: Mempool,
}

impl Raw {
    /// Sends `frames` as they are.
    fn send(&mut self, frames: &[Vec<u8>]) {
        let mut burst = MbufBurst::<64>::new();
        for f in frames {
            let mut m = self.pool.alloc().expect("mbuf");
            m.append(f.len() as u16).expect("room").copy_from_slice(f);
            burst.push(m).ok().expect("burst room");
        }
        let n = self.tx.tx_burst(&mut burst);
        assert_eq!(n, frames.len(), "ring took every frame");
    }

    /// Receives everything waiting, as byte vectors.
    fn recv(&mut self) -> Vec<Vec<u8>> {
        let mut burst = MbufBurst::<64>::new();
        self.rx.rx_burst(&mut burst);
        burst.as_slice().iter().map(|m| m.data().to_vec()).collect()
    }
}

fn request_headers(client_mac: [u8; 6], server_mac: [u8; 6], class: u16) -> UdpHeaders {
    UdpHeaders {
        src_mac: client_mac,
        dst_mac: server_mac,
        src_ip: CLIENT_IP,
        dst_ip: SERVER_IP,
        src_port: 40000 + class,
        dst_port: BASE + class,
    }
}

fn build(h: &UdpHeaders, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HEADERS_LEN + payload.len()];
    assert!(frame::emit(&mut f, h, payload.len(), false));
    f[HEADERS_LEN..].copy_from_slice(payload);
    f
}

fn poll_rx(port: &mut DpdkPort, batch: &mut PacketBatch, want: usize) {
    for _ in 0..1000 {
        port.rx_burst(batch).unwrap();
        if batch.len() >= want {
            return;
        }
    }
}

fn check_eal_is_once(eal: &Eal) {
    fn assert_send<T: Send>() {}
    assert_send::<DpdkPort>();
    assert_send::<naam_dataplane::dpdk::RxQueue>();
    assert_send::<naam_dataplane::dpdk::Mbuf>();
    assert_send::<MbufBurst<32>>();
    let again = Eal::init(&["--no-pci"])
        .err()
        .expect("second init must fail");
    assert_eq!(again.op, "rte_eal_init");
    assert_eq!(again.errno, libc::EALREADY);
    assert_eq!(eal.lcore_count(), 1);
    assert_eq!(LcoreId::current(), eal.main_lcore());
    let other = std::thread::spawn(LcoreId::current).join().unwrap();
    assert_eq!(other, LcoreId::ANY);
}

fn check_request_reply(client: &mut Raw, server: &mut DpdkPort, client_mac: [u8; 6]) {
    let server_mac = server.mac();
    let req = request_headers(client_mac, server_mac, 3);
    client.send(&[build(&req, b"naam request")]);

    let mut batch = PacketBatch::with_capacity(32);
    poll_rx(server, &mut batch, 1);
    assert_eq!(batch.len(), 1);
    let p = &mut batch.as_mut_slice()[0];
    assert_eq!(p.payload(), b"naam request");
    assert_eq!(p.class(), 3);
    assert_eq!(p.dst_port(), BASE + 3);
    assert_eq!(p.peer().remote, SocketAddrV4::new(CLIENT_IP, 40003));
    assert_eq!(p.peer().local, SocketAddrV4::new(SERVER_IP, BASE + 3));
    assert_eq!(p.peer().remote_mac, client_mac);
    assert_eq!(p.peer().local_mac, server_mac);

    assert!(p.set_payload(b"naam reply, longer than the request"));
    assert_eq!(server.tx_burst(&batch).unwrap(), 1);
    server.flush().unwrap();

    let frames = client.recv();
    assert_eq!(frames.len(), 1);
    let (h, range) = frame::parse(&frames[0], true).expect("reply parses, checksum ok");
    assert_eq!(h, req.reply(), "every address pair swapped");
    assert_eq!(&frames[0][range], b"naam reply, longer than the request");
    assert_eq!(server.stats().tx_packets, 1);
    assert_eq!(server.stats().rx_packets, 1);
}

fn check_burst_of_classes(client: &mut Raw, server: &mut DpdkPort, client_mac: [u8; 6]) {
    let frames: Vec<Vec<u8>> = (0..40u16)
        .map(|i| {
            let h = request_headers(client_mac, server.mac(), i % CLASSES);
            build(&h, format!("m{i}").as_bytes())
        })
        .collect();
    client.send(&frames);
    // A batch smaller than the burst: the rest stays in the ring for the next call.
    let mut batch = PacketBatch::with_capacity(16);
    let mut got = Vec::new();
    for _ in 0..100 {
        batch.clear();
        server.rx_burst(&mut batch).unwrap();
        assert!(batch.len() <= 16);
        got.extend(
            batch
                .iter()
                .map(|p| (String::from_utf8(p.payload().to_vec()).unwrap(), p.class())),
        );
        if got.len() == 40 {
            break;
        }
    }
    let expect: Vec<(String, u16)> = (0..40u16).map(|i| (format!("m{i}"), i % CLASSES)).collect();
    assert_eq!(got, expect, "all delivered, in order");
}

fn check_malformed_frames(client: &mut Raw, server: &mut DpdkPort, client_mac: [u8; 6]) {
    let before = server.stats().clone();
    let h = request_headers(client_mac, server.mac(), 1);
    let good = build(&h, b"good");
    let mut bad: Vec<(DropReason, Vec<u8>)> = Vec::new();
    bad.push((DropReason::Truncated, good[..10].to_vec()));
    bad.push((DropReason::Truncated, good[..20].to_vec()));
    let mut f = good.clone();
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    bad.push((DropReason::NotIpv4, f));
    let mut f = good.clone();
    f[14] = 0x43; // IHL 3
    bad.push((DropReason::BadIpHeader, f));
    let mut f = good.clone();
    f[38..40].copy_from_slice(&500u16.to_be_bytes()); // UDP length past the end
    bad.push((DropReason::BadUdpLength, f));
    let mut f = good.clone();
    f[23] = 6; // TCP; checksum now wrong too, so fix it
    f[24..26].copy_from_slice(&[0, 0]);
    let c = frame::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    bad.push((DropReason::NotUdp, f));
    let mut f = good.clone();
    f[22] = 1; // TTL changed without fixing the checksum
    bad.push((DropReason::BadIpChecksum, f));
    let mut h2 = h;
    h2.dst_port = BASE + CLASSES; // one past the last class
    bad.push((DropReason::UnknownClass, build(&h2, b"x")));
    let mut h3 = h;
    h3.dst_port = 53;
    bad.push((DropReason::UnknownClass, build(&h3, b"x")));
    bad.push((DropReason::Truncated, Vec::new()));

    let mut frames: Vec<Vec<u8>> = bad.iter().map(|(_, f)| f.clone()).collect();
    frames.push(good);
    client.send(&frames);
    let mut batch = PacketBatch::with_capacity(32);
    poll_rx(server, &mut batch, 1);
    for _ in 0..10 {
        server.rx_burst(&mut batch).unwrap();
    }
    assert_eq!(batch.len(), 1, "only the good frame is delivered");
    assert_eq!(batch.as_slice()[0].payload(), b"good");
    for reason in DropReason::ALL {
        let expect = bad.iter().filter(|(r, _)| *r == reason).count() as u64;
        assert_eq!(
            server.stats().drops(reason) - before.drops(reason),
            expect,
            "drops for {}",
            reason.name()
        );
    }
}

/// More replies than the ring holds: the device takes what fits, the port keeps up to its
/// pending capacity for `flush`, and counts the rest as `tx_full`; nothing is lost silently.
fn check_tx_backpressure(client: &mut Raw, server: &mut DpdkPort) {
    const SENT: usize = 1100; // the ring holds 1023
    let before = server.stats().clone();
    let mut batch = PacketBatch::with_capacity(SENT);
    for i in 0..SENT {
        let p = batch.push().unwrap();
        p.set_peer(Peer::to(SocketAddrV4::new(CLIENT_IP, 40000)).from_port(BASE + 1));
        assert!(p.set_payload(&(i as u32).to_be_bytes()));
    }
    let taken = server.tx_burst(&batch).unwrap();
    let dropped = server.stats().drops(DropReason::TxFull) - before.drops(DropReason::TxFull);
    assert!(taken < SENT, "the ring cannot take {SENT}");
    assert!(dropped > 0);
    let pending = SENT - taken - dropped as usize;
    assert!(pending > 0, "some frames wait for flush");

    let mut received = Vec::new();
    let drain = |client: &mut Raw, received: &mut Vec<u32>| loop {
        let frames = client.recv();
        if frames.is_empty() {
            break;
        }
        for f in frames {
            let (h, range) = frame::parse(&f, true).unwrap();
            assert_eq!(
                (h.src_ip, h.src_port, h.dst_port),
                (SERVER_IP, BASE + 1, 40000)
            );
            received.push(u32::from_be_bytes(f[range].try_into().unwrap()));
        }
    };
    drain(client, &mut received);
    assert_eq!(received.len(), taken);
    server.flush().unwrap();
    drain(client, &mut received);
    assert_eq!(received.len(), taken + pending);
    // Order is kept: the device's share first, then the pending frames.
    assert!(received.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(
        server.stats().tx_packets - before.tx_packets,
        (taken + pending) as u64
    );
    assert_eq!(
        server.stats().tx_bytes - before.tx_bytes,
        4 * (taken + pending) as u64
    );
}

/// Payloads longer than the MTU allows are dropped on transmit, not sent as giant frames.
fn check_tx_oversize(client: &mut Raw, server: &mut DpdkPort) {
    let mtu = server.eth_port().mtu().unwrap();
    assert_eq!(server.max_payload(), usize::from(mtu) - 28);
    let before = server.stats().drops(DropReason::Oversize);
    let mut batch = PacketBatch::with_capacity(2);
    for len in [server.max_payload() + 1, server.max_payload()] {
        let p = batch.push().unwrap();
        p.set_peer(Peer::to(SocketAddrV4::new(CLIENT_IP, 40000)));
        assert!(p.set_len(len));
    }
    assert_eq!(server.tx_burst(&batch).unwrap(), 1);
    assert_eq!(server.stats().drops(DropReason::Oversize) - before, 1);
    let frames = client.recv();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].len(), HEADERS_LEN + server.max_payload());
}

fn check_rte_flow_unsupported(eal: &Eal, port: &EthPort) {
    match flow::pick_transfer_proxy(eal, port.id()) {
        Ok(proxy) => println!(
            "transfer proxy of net_ring port {}: {}",
            port.id().0,
            proxy.0
        ),
        Err(e) => println!("no transfer proxy on net_ring: {e}"),
    }
    let attr = flow::FlowAttr {
        ingress: true,
        ..Default::default()
    };
    let pattern = flow::FlowPattern::new(&[
        flow::FlowItem::Eth {
            dst: None,
            src: None,
            ether_type: None,
        },
        flow::FlowItem::Ipv4 {
            src: None,
            dst: None,
        },
        flow::FlowItem::Udp {
            src_port: None,
            dst_port: Some(BASE + 2),
        },
    ]);
    let actions =
        flow::FlowActions::new(&[flow::FlowAction::Queue(naam_dataplane::dpdk::QueueId(0))]);
    let err =
        flow::validate(port, &attr, &pattern, &actions).expect_err("net_ring has no rte_flow");
    assert!(err.is_unsupported(), "unexpected rte_flow error: {err}");
    let err = flow::Flow::create(port, &attr, &pattern, &actions)
        .err()
        .expect("no rte_flow");
    assert!(err.is_unsupported(), "unexpected rte_flow error: {err}");
    assert_eq!(err.op, "rte_flow_create");
}

#[test]
fn net_ring_pair_request_reply_and_malformed_frames() {
    let prefix = format!("naam-ring-{}", std::process::id());
    let eal = Eal::init(&[
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-telemetry",
        "-l",
        "0",
        &format!("--file-prefix={prefix}"),
        "--log-level=notice",
    ])
    .expect("EAL init");
    check_eal_is_once(&eal);

    let (a, b) = ring_pair(&eal, "naamring").unwrap();
    let pool = Mempool::pktmbuf(&eal, "ring_test", 4095, 0, MBUF_DATA_ROOM).unwrap();
    let free_at_start = pool.available();
    {
        let (port_a, mut rxa, mut txa) =
            EthPort::configure(&eal, a, &PortConfig::default(), &pool).unwrap();
        let (port_b, mut rxb, mut txb) =
            EthPort::configure(&eal, b, &PortConfig::default(), &pool).unwrap();
        assert_eq!(port_a.info().driver_name, "net_ring");
        port_a.start().unwrap();
        port_b.start().unwrap();
        let client_mac = [0x02, 0, 0, 0, 0, 0x01]; // net_ring ports have an all-zero MAC
        let mut client = Raw {
            rx: rxa.pop().unwrap(),
            tx: txa.pop().unwrap(),
            pool: pool.clone(),
        };
        let mut server = DpdkPort::new(
            port_b,
            rxb.pop().unwrap(),
            txb.pop().unwrap(),
            pool.clone(),
            DpdkPortConfig {
                addr: SocketAddrV4::new(SERVER_IP, BASE),
                classes: CLASSES,
                mac: Some([0x02, 0, 0, 0, 0, 0x02]),
            },
        )
        .unwrap();
        assert_ne!(server.mac(), client_mac);

        check_request_reply(&mut client, &mut server, client_mac);
        check_burst_of_classes(&mut client, &mut server, client_mac);
        check_malformed_frames(&mut client, &mut server, client_mac);
        check_tx_backpressure(&mut client, &mut server);
        check_tx_oversize(&mut client, &mut server);
        check_rte_flow_unsupported(&eal, &port_a);
        let stats = port_a.stats().unwrap();
        assert!(stats.opackets >= 1 + 40 + 11, "device counters: {stats:?}");
    }
    // Ports closed, bursts dropped: every mbuf is back.
    assert_eq!(pool.available(), free_at_start);
    drop(pool);
    drop(eal);
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}
