//! `UdpPort::bind_shared` and `join_shared`: several workers' ports on the same class ports (`SO_REUSEPORT`),
//! each client flow reaching exactly one of them.

use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use naam_dataplane::port::{PacketBatch, Port, UdpPort};

#[test]
fn shared_ports_bind_the_same_range_and_split_flows() {
    let mut a = UdpPort::bind_shared("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let base = a.local_addr();
    let mut b = UdpPort::join_shared(base, 2).unwrap();
    assert_eq!(b.local_addr(), base);
    // Without SO_REUSEPORT the range is taken.
    assert!(UdpPort::bind(base, 2).is_err());
    // And a second dataplane cannot claim it, on the same ports or overlapping them: it would
    // split the first one's clients with it.
    assert!(UdpPort::bind_shared(base, 2).is_err());
    let below = SocketAddrV4::new(*base.ip(), base.port() - 1);
    assert!(UdpPort::bind_shared(below, 2).is_err());

    let clients: Vec<UdpSocket> = (0..16)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let to = SocketAddrV4::new(*base.ip(), base.port() + 1);
    for round in 0..3u8 {
        for c in &clients {
            c.send_to(&[round], to).unwrap();
        }
    }
    let mut got: Vec<(SocketAddrV4, char)> = Vec::new();
    let mut batch = PacketBatch::with_capacity(64);
    let start = Instant::now();
    while got.len() < clients.len() * 3 && start.elapsed() < Duration::from_secs(2) {
        for (port, name) in [(&mut a, 'a'), (&mut b, 'b')] {
            batch.clear();
            port.rx_burst(&mut batch).unwrap();
            for p in batch.iter() {
                assert_eq!(p.class(), 1);
                got.push((p.peer().remote, name));
            }
        }
    }
    assert_eq!(got.len(), clients.len() * 3, "every datagram arrives once");
    for c in &clients {
        let addr = match c.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let workers: Vec<char> = got
            .iter()
            .filter(|(r, _)| *r == addr)
            .map(|x| x.1)
            .collect();
        assert_eq!(workers.len(), 3);
        assert!(
            workers.iter().all(|w| *w == workers[0]),
            "one flow, one worker: {workers:?}"
        );
    }
}

/// Ranges picked at the same time by several dataplanes never overlap. A range was claimed
/// without `SO_REUSEPORT`, released and rebound with it: between the two another pick could
/// claim an overlapping range, and both then served the shared ports, each taking some of the
/// other's datagrams (a CI run saw "header class 0 but sent to the port of class 63").
#[test]
fn ranges_picked_at_once_do_not_overlap() {
    use naam_dataplane::port::Port as _;
    const CLASSES: u16 = 64;
    for round in 0..300 {
        let start = std::sync::Arc::new(std::sync::Barrier::new(6));
        let picks: Vec<_> = (0..6)
            .map(|_| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    UdpPort::bind_shared("127.0.0.1:0".parse().unwrap(), CLASSES).unwrap()
                })
            })
            .collect();
        let ports: Vec<UdpPort> = picks.into_iter().map(|t| t.join().unwrap()).collect();
        let mut bases: Vec<u16> = ports.iter().map(|p| p.local_addr().port()).collect();
        bases.sort_unstable();
        for w in bases.windows(2) {
            assert!(
                w[1] - w[0] >= CLASSES,
                "round {round}: ranges overlap: {bases:?}"
            );
        }
    }
}
