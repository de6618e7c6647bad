//! Opening a port from a spec string: `udp:IP:PORT` or `dpdk:<EAL args>`.

use std::net::SocketAddrV4;

use super::{PacketBatch, Port, PortError, PortStats, UdpPort, DEFAULT_CLASSES};

/// Settings common to all port types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortOptions {
    /// Number of steering classes (UDP ports `base .. base + classes`).
    pub classes: u16,
}

impl Default for PortOptions {
    fn default() -> Self {
        PortOptions {
            classes: DEFAULT_CLASSES,
        }
    }
}

/// Any port, chosen at run time from a spec string. Static dispatch inside (a `match`), so
/// the worker loop can be generic over `P: Port` and still take this.
#[allow(clippy::large_enum_variant)] // one per worker, never moved on the data path
pub enum AnyPort {
    /// Kernel UDP sockets.
    Udp(UdpPort),
    /// A DPDK ethdev queue pair.
    #[cfg(feature = "dpdk")]
    Dpdk(Box<super::DpdkPort>),
}

/// A port spec, parsed (its form only: nothing is bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSpec<'a> {
    /// `udp:IP:BASE`: class `c` on UDP port `BASE + c` (`BASE` 0: any free range).
    Udp(SocketAddrV4),
    /// `dpdk:EAL-ARGS` (a build with the `dpdk` feature).
    Dpdk(&'a str),
}

/// Parses `spec`, refusing what this build cannot open, so that a program can refuse a wrong
/// `--port` before it connects to anything.
pub fn parse(spec: &str) -> Result<PortSpec<'_>, PortError> {
    let bad = |reason: &str| PortError::Spec {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(addr) = spec.strip_prefix("udp:") {
        let addr: SocketAddrV4 = addr
            .parse()
            .map_err(|_| bad("expected udp:IPV4:PORT (IPv4 only)"))?;
        return match unservable(addr.ip()) {
            Some(why) => Err(bad(why)),
            None => Ok(PortSpec::Udp(addr)),
        };
    }
    if let Some(args) = spec.strip_prefix("dpdk:") {
        return if cfg!(feature = "dpdk") {
            Ok(PortSpec::Dpdk(args))
        } else {
            Err(PortError::NotBuilt("dpdk"))
        };
    }
    Err(bad("expected udp:ADDR or dpdk:EAL-ARGS"))
}

/// Why a socket bound to `ip` would serve nobody, if it would: no client's datagram is sent
/// from a broadcast or multicast address, nor answered to one (probes 20 and 21: the data
/// and the control port said they were serving there).
pub fn unservable(ip: &std::net::Ipv4Addr) -> Option<&'static str> {
    (ip.is_broadcast() || ip.is_multicast())
        .then_some("a broadcast or multicast address: give this machine's address (or 0.0.0.0)")
}

/// Opens a port from `spec`:
///
/// - `udp:127.0.0.1:7000` — UDP sockets on ports 7000 .. 7000 + classes (port 0: any free
///   range);
/// - `dpdk:--no-huge -m 256 --no-pci --file-prefix=x --vdev=net_memif0,role=server ...` —
///   EAL arguments, plus `--naam-addr=IP:PORT` and `--naam-port-id=N` (see
///   `DpdkPort::open`); needs the `dpdk` feature.
pub fn open(spec: &str, options: &PortOptions) -> Result<AnyPort, PortError> {
    match parse(spec)? {
        PortSpec::Udp(addr) => Ok(AnyPort::Udp(UdpPort::bind(addr, options.classes)?)),
        #[cfg(feature = "dpdk")]
        PortSpec::Dpdk(args) => Ok(AnyPort::Dpdk(Box::new(super::DpdkPort::open(
            args, options,
        )?))),
        #[cfg(not(feature = "dpdk"))]
        PortSpec::Dpdk(_) => Err(PortError::NotBuilt("dpdk")),
    }
}

macro_rules! each {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            AnyPort::Udp($p) => $e,
            #[cfg(feature = "dpdk")]
            AnyPort::Dpdk($p) => $e,
        }
    };
}

impl Port for AnyPort {
    #[inline]
    fn rx_burst(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        each!(self, p => p.rx_burst(batch))
    }

    #[inline]
    fn tx_burst(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        each!(self, p => p.tx_burst(batch))
    }

    fn flush(&mut self) -> Result<(), PortError> {
        each!(self, p => p.flush())
    }

    fn stats(&self) -> &PortStats {
        each!(self, p => p.stats())
    }

    fn local_addr(&self) -> SocketAddrV4 {
        each!(self, p => p.local_addr())
    }

    fn classes(&self) -> u16 {
        each!(self, p => p.classes())
    }
}
