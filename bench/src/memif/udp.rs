//! Kernel UDP for the generator and for the reference echo: a `naam_dataplane::port::UdpPort`
//! (non-blocking, `recvmmsg`/`sendmmsg` batches), the same port type the dataplane serves UDP
//! with, so both sides pay the same system calls per burst.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use naam_dataplane::port::{PacketBatch, Peer, Port, UdpPort};

use super::drive::LoadPort;
use super::requests::RequestSet;

/// The generator's side: sends to `server` (class 0's port), receives on its own port.
pub struct UdpLoad {
    port: UdpPort,
    server: SocketAddrV4,
    tx: PacketBatch,
    rx: PacketBatch,
}

impl UdpLoad {
    /// A port on a free local port of `server`'s address, bursts of up to `burst`.
    pub fn new(server: SocketAddrV4, burst: usize) -> Result<Self, String> {
        let local = SocketAddrV4::new(*server.ip(), 0);
        let port = UdpPort::bind(local, 1).map_err(|e| e.to_string())?;
        Ok(Self {
            port,
            server,
            tx: PacketBatch::with_capacity(burst.max(1)),
            rx: PacketBatch::with_capacity(burst.max(1)),
        })
    }
}

impl LoadPort for UdpLoad {
    fn send(&mut self, set: &RequestSet, next: usize, n: usize) -> Result<usize, String> {
        self.tx.clear();
        for k in 0..n.min(self.tx.capacity()) {
            let Some(p) = self.tx.push() else { break };
            p.set_peer(Peer::to(self.server));
            p.set_payload(set.payload(next + k));
        }
        self.port.tx_burst(&self.tx).map_err(|e| e.to_string())
    }

    fn recv<F: FnMut(&[u8])>(&mut self, mut seen: F) -> Result<usize, String> {
        self.rx.clear();
        let n = self
            .port
            .rx_burst(&mut self.rx)
            .map_err(|e| e.to_string())?;
        for p in self.rx.iter() {
            seen(p.payload());
        }
        Ok(n)
    }
}

/// The reference server for kernel UDP: sends every datagram straight back, burst for burst
/// (`recvmmsg` then `sendmmsg`), spinning, for `duration`. `ready` gets the bound address.
pub fn echo(
    addr: SocketAddrV4,
    burst: usize,
    duration: Duration,
    ready: impl FnOnce(SocketAddrV4),
) -> Result<u64, String> {
    let mut port = UdpPort::bind(addr, 1).map_err(|e| e.to_string())?;
    ready(port.local_addr());
    let mut batch = PacketBatch::with_capacity(burst.max(1));
    let end = Instant::now() + duration;
    let mut echoed = 0u64;
    let mut iteration = 0u32;
    loop {
        iteration = iteration.wrapping_add(1);
        if iteration % 1024 == 0 && Instant::now() >= end {
            return Ok(echoed);
        }
        batch.clear();
        if port.rx_burst(&mut batch).map_err(|e| e.to_string())? > 0 {
            echoed += port.tx_burst(&batch).map_err(|e| e.to_string())? as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memif::drive::{drive, DriveConfig};
    use crate::memif::requests::{Expect, TableSpec};
    use std::net::Ipv4Addr;

    #[test]
    fn generator_and_echo_over_loopback() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            echo(
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
                16,
                Duration::from_millis(400),
                |a| tx.send(a).unwrap(),
            )
        });
        let server = rx.recv().unwrap();
        let set = RequestSet::mica_get(TableSpec::assumed(1000, 64), 64).unwrap();
        let mut load = UdpLoad::new(server, 16).unwrap();
        let cfg = DriveConfig {
            warmup: Duration::from_millis(20),
            measure: Duration::from_millis(100),
            burst: 16,
            window: 32,
            sample: 4,
            stall: Duration::from_millis(50),
            expect: Expect::Echo,
        };
        let r = drive(&mut load, &set, &cfg).unwrap();
        let echoed = t.join().unwrap().unwrap();
        assert!(r.replies > 0, "{r:?}");
        assert_eq!(r.bad, 0, "{:?}", r.first_bad);
        assert!(r.checked > 0);
        assert!(echoed >= r.replies);
    }
}
