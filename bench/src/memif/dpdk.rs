//! The generator's DPDK side (feature `dpdk`): one queue pair of the first ethdev EAL found
//! (the `net_memif` client), driven l2fwd-style with whole frames built once: sending is an
//! mbuf allocation, one copy of a prebuilt frame and a burst; receiving parses the headers
//! only as far as the payload and frees the burst in one call.

use std::time::{Duration, Instant};

use naam_dataplane::dpdk::{
    Eal, EthPort, MbufBurst, Mempool, PortConfig, RxQueue, TxQueue, MBUF_DATA_ROOM,
};
use naam_dataplane::port::frame;

use super::drive::LoadPort;
use super::requests::{RequestSet, LINK_CLIENT, LINK_SERVER};

/// Frames handled per burst call, at most.
pub const MAX_BURST: usize = 64;

/// How long to wait for the link before starting the port again.
const RECONNECT_EVERY: Duration = Duration::from_millis(300);

/// The generator's port. Fields drop in declaration order: queues, then the port, the pool,
/// and EAL last.
pub struct DpdkLoad {
    rxq: RxQueue,
    txq: TxQueue,
    port: EthPort,
    pool: Mempool,
    frames: Vec<Vec<u8>>,
    _eal: Eal,
}

impl DpdkLoad {
    /// Initialises EAL with `eal_args`, starts the first port with one queue pair, waits up
    /// to `link_wait` for its link (the memif peer), and builds the frames of `set`.
    pub fn open(
        eal_args: &[String],
        set: &RequestSet,
        link_wait: Duration,
    ) -> Result<Self, String> {
        let eal = Eal::init(eal_args).map_err(|e| e.to_string())?;
        let id = *EthPort::available(&eal)
            .first()
            .ok_or("EAL found no ethdev port (add a --vdev)")?;
        let pool = Mempool::pktmbuf(&eal, "naam_gen", 8191, 256, MBUF_DATA_ROOM)
            .map_err(|e| e.to_string())?;
        let (port, mut rxqs, mut txqs) =
            EthPort::configure(&eal, id, &PortConfig::default(), &pool)
                .map_err(|e| e.to_string())?;
        port.start().map_err(|e| e.to_string())?;
        let (Some(rxq), Some(txq)) = (rxqs.pop(), txqs.pop()) else {
            return Err("port configured without queues".into());
        };
        // A memif client connects when its port starts, once: a server whose own port is
        // not started yet answers "ID not found" and the link stays down. Start again until
        // the link comes up.
        let deadline = Instant::now() + link_wait;
        let mut retry_at = Instant::now() + RECONNECT_EVERY;
        while !port.link_up().map_err(|e| e.to_string())? {
            let now = Instant::now();
            if now > deadline {
                return Err(format!(
                    "link of {} not up after {link_wait:?}",
                    port.info().driver_name
                ));
            }
            if now >= retry_at {
                port.stop().map_err(|e| e.to_string())?;
                port.start().map_err(|e| e.to_string())?;
                retry_at = now + RECONNECT_EVERY;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mac = port.mac_addr().map_err(|e| e.to_string())?;
        let frames = set.frames((LINK_CLIENT, mac), (LINK_SERVER, [0xff; 6]));
        if frames.iter().any(|f| f.len() > usize::from(MBUF_DATA_ROOM)) {
            return Err("a request frame does not fit one mbuf".into());
        }
        Ok(Self {
            rxq,
            txq,
            port,
            pool,
            frames,
            _eal: eal,
        })
    }

    /// The ethdev underneath (driver name, counters).
    pub fn eth_port(&self) -> &EthPort {
        &self.port
    }
}

impl LoadPort for DpdkLoad {
    fn send(&mut self, _set: &RequestSet, next: usize, n: usize) -> Result<usize, String> {
        let mut burst = MbufBurst::<MAX_BURST>::new();
        if !self.pool.alloc_into(&mut burst, n.min(MAX_BURST)) {
            return Ok(0); // the pool is empty for now: frames are in flight
        }
        for (k, m) in burst.as_mut_slice().iter_mut().enumerate() {
            let f = &self.frames[(next + k) % self.frames.len()];
            // Checked at open: every frame fits an empty mbuf.
            if let Some(buf) = m.append(f.len() as u16) {
                buf.copy_from_slice(f);
            }
        }
        // What the device did not take is freed with the burst and sent again later.
        Ok(self.txq.tx_burst(&mut burst))
    }

    fn recv<F: FnMut(&[u8])>(&mut self, mut seen: F) -> Result<usize, String> {
        let mut burst = MbufBurst::<MAX_BURST>::new();
        let n = self.rxq.rx_burst(&mut burst);
        for m in burst.as_slice() {
            let data = m.data();
            match frame::parse(data, false) {
                Ok((_, range)) => seen(&data[range]),
                Err(_) => seen(&[]),
            }
        }
        Ok(n)
    }
}
