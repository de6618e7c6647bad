//! `udp:ADDR`: kernel UDP sockets, batched with `recvmmsg`/`sendmmsg`.
//!
//! Steering classes: one non-blocking socket per class port (`base .. base + classes`), so the
//! class of a datagram is the index of the socket it arrived on (`class = dst port - base`)
//! with no per-packet work, and a reply leaves from the socket of its class — a client that
//! sent to `base + c` sees the reply come from `base + c`. With more than one class, an epoll
//! set (level-triggered, polled with timeout 0) says which sockets have data, so an idle poll
//! is one system call whatever the number of classes. (One socket with `IP_PKTINFO` would give
//! the destination address but not the port, hence this design.)
//!
//! Addresses are IPv4 only, like the DPDK port.

use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{DropReason, Packet, PacketBatch, Peer, Port, PortError, PortStats, MAX_PAYLOAD};

/// Datagrams per `recvmmsg`/`sendmmsg` call (the scratch arrays live on the stack).
const CHUNK: usize = 32;
/// Ready sockets taken from epoll per poll.
const EVENTS: usize = 64;
/// Attempts at finding a free range of consecutive ports when the base port is 0.
const BIND_ATTEMPTS: usize = 32;
/// `SO_MEMINFO` (the asm-generic value, as on x86_64 and aarch64; not in the libc crate for
/// these targets): the socket's memory counters, among them `SK_MEMINFO_DROPS`.
const SO_MEMINFO: libc::c_int = 55;
/// Receive bursts between two readings of the kernel's drop counters (one system call per
/// socket; a busy worker makes tens of thousands of bursts a second).
const KERNEL_DROPS_EVERY: u32 = 1024;

/// A port on kernel UDP sockets, one per steering class.
pub struct UdpPort {
    sockets: Vec<UdpSocket>,
    base: SocketAddrV4,
    /// Present when there is more than one socket.
    epoll: Option<OwnedFd>,
    stats: PortStats,
    loss: LossInjection,
    /// Each socket's kernel drop counter when last read, and bursts since.
    kernel_drops: Vec<u32>,
    bursts: u32,
    /// Which ready socket a burst reads first (rotates, so none is always last).
    first_ready: usize,
}

/// Deterministic packet loss for tests of retransmission and de-duplication: every `N`th
/// datagram received (or sent) is dropped and counted as its own drop reason. Off (0) by
/// default, which costs one predictable branch per datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossInjection {
    /// Drop every `rx_every`th received datagram (0: never).
    pub rx_every: u32,
    /// Drop every `tx_every`th datagram to send (0: never).
    pub tx_every: u32,
    rx_seen: u32,
    tx_seen: u32,
}

impl LossInjection {
    /// Drops every `rx_every`th received and every `tx_every`th sent datagram (0: never).
    pub fn every(rx_every: u32, tx_every: u32) -> Self {
        LossInjection {
            rx_every,
            tx_every,
            ..Self::default()
        }
    }

    #[inline]
    fn tick(every: u32, seen: &mut u32) -> bool {
        if every == 0 {
            return false;
        }
        *seen += 1;
        if *seen >= every {
            *seen = 0;
            return true;
        }
        false
    }

    #[inline]
    fn drop_rx(&mut self) -> bool {
        Self::tick(self.rx_every, &mut self.rx_seen)
    }

    #[inline]
    fn drop_tx(&mut self) -> bool {
        Self::tick(self.tx_every, &mut self.tx_seen)
    }
}

fn io_err(op: &'static str) -> PortError {
    PortError::Io {
        op,
        source: std::io::Error::last_os_error(),
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
        u16::from_be(s.sin_port),
    )
}

/// The kernel's count of datagrams it dropped on `sock` for want of receive buffer space
/// (`SK_MEMINFO_DROPS` of `SO_MEMINFO`; it wraps at 2^32); `None` if the kernel will not say.
pub fn kernel_drops(sock: &UdpSocket) -> Option<u32> {
    let mut info = [0u32; 16]; // SK_MEMINFO_VARS is 9 today
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `sock` is an open socket; `info` is writable for `len` bytes, and the kernel
    // writes at most `len` bytes and stores the length it wrote in `len`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let at = libc::SK_MEMINFO_DROPS as usize;
    (rc == 0 && len as usize >= (at + 1) * 4).then(|| info[at])
}

fn local_port(s: &UdpSocket) -> Result<u16, PortError> {
    s.local_addr()
        .map(|a| a.port())
        .map_err(|source| PortError::Io {
            op: "getsockname",
            source,
        })
}

/// Held while a range of ports is claimed and rebound with `SO_REUSEPORT`: between the two,
/// another dataplane could claim an overlapping range, and both would then share its ports
/// (each taking some of the other's datagrams: "header class 0 but sent to the port of class
/// 63" in a CI run with deployments started side by side). An abstract Unix socket name is
/// the lock: one socket holds it at a time, it goes with the process, and it is per network
/// namespace, as the ports are.
struct RangeLock {
    _held: std::os::unix::net::UnixDatagram,
}

impl RangeLock {
    const NAME: &'static [u8] = b"naam-dataplane-udp-range-pick";
    /// The longest wait for another dataplane's pick (a pick takes milliseconds).
    const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

    fn take() -> Result<RangeLock, PortError> {
        use std::os::linux::net::SocketAddrExt as _;
        let io = |op, source| PortError::Io { op, source };
        let name = std::os::unix::net::SocketAddr::from_abstract_name(Self::NAME)
            .map_err(|e| io("name the port range lock", e))?;
        let until = std::time::Instant::now() + Self::WAIT;
        loop {
            match std::os::unix::net::UnixDatagram::bind_addr(&name) {
                Ok(s) => return Ok(RangeLock { _held: s }),
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < until =>
                {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                Err(e) => return Err(io("take the port range lock", e)),
            }
        }
    }
}

impl UdpPort {
    /// Binds `classes` sockets on `addr.port() ..`, non-blocking. With port 0, a free range of
    /// consecutive ports is picked (for tests and clients).
    pub fn bind(addr: SocketAddrV4, classes: u16) -> Result<UdpPort, PortError> {
        Self::bind_with(addr, classes, false)
    }

    /// Like [`UdpPort::bind`], with `SO_REUSEPORT` on every socket, for the first of several
    /// ports (one per worker) that share the range: the others [`UdpPort::join_shared`] it,
    /// and the kernel spreads the traffic by flow (a client's datagrams, same source address
    /// and port, always reach the same worker). Port 0 picks a free range.
    ///
    /// The range must be free: `SO_REUSEPORT` alone would let this port join a range another
    /// process of the same user (another dataplane) already serves, and the two would split
    /// its clients silently. So the range is first claimed without the option (that fails
    /// on any socket holding one of its ports) and then rebound with it, under a lock that
    /// other dataplanes picking at the same time wait for ([`RangeLock`]).
    pub fn bind_shared(addr: SocketAddrV4, classes: u16) -> Result<UdpPort, PortError> {
        let classes = classes.max(1);
        let _picking = RangeLock::take()?;
        let mut last = None;
        for _ in 0..BIND_ATTEMPTS {
            let claim = Self::bind_any(addr, classes, false)?;
            let base = local_port(&claim[0])?;
            drop(claim); // rebound at once with SO_REUSEPORT
            match Self::bind_range(SocketAddrV4::new(*addr.ip(), base), classes, true) {
                Ok(sockets) => return Self::with_sockets(addr, sockets),
                // Taken in between (by a free-port pick elsewhere): a fixed range is in use,
                // a picked one is picked again.
                Err(e) if addr.port() == 0 => last = Some(e),
                Err(source) => {
                    return Err(PortError::Bind {
                        addr,
                        classes,
                        source,
                    })
                }
            }
        }
        Err(PortError::Io {
            op: "bind (free port range)",
            source: last.unwrap_or_else(|| std::io::Error::other("no free range")),
        })
    }

    /// Another worker's port on the range a [`UdpPort::bind_shared`] port serves (`addr` is
    /// its [`Port::local_addr`]).
    pub fn join_shared(addr: SocketAddrV4, classes: u16) -> Result<UdpPort, PortError> {
        let classes = classes.max(1);
        let sockets = Self::bind_range(addr, classes, true).map_err(|source| PortError::Bind {
            addr,
            classes,
            source,
        })?;
        Self::with_sockets(addr, sockets)
    }

    fn bind_with(addr: SocketAddrV4, classes: u16, reuse: bool) -> Result<UdpPort, PortError> {
        let sockets = Self::bind_any(addr, classes.max(1), reuse)?;
        Self::with_sockets(addr, sockets)
    }

    /// The range at `addr`, or a free one with port 0.
    fn bind_any(
        addr: SocketAddrV4,
        classes: u16,
        reuse: bool,
    ) -> Result<Vec<UdpSocket>, PortError> {
        if addr.port() == 0 {
            Self::bind_free_range(*addr.ip(), classes, reuse)
        } else {
            Self::bind_range(addr, classes, reuse).map_err(|source| PortError::Bind {
                addr,
                classes,
                source,
            })
        }
    }

    fn with_sockets(addr: SocketAddrV4, sockets: Vec<UdpSocket>) -> Result<UdpPort, PortError> {
        let base_port = local_port(&sockets[0])?;
        let epoll = if sockets.len() > 1 {
            Some(Self::epoll_set(&sockets)?)
        } else {
            None
        };
        // Drops from before this port existed (a socket reused) are not ours.
        let kernel_drops = sockets
            .iter()
            .map(|s| kernel_drops(s).unwrap_or(0))
            .collect();
        Ok(UdpPort {
            sockets,
            base: SocketAddrV4::new(*addr.ip(), base_port),
            epoll,
            stats: PortStats::default(),
            loss: LossInjection::default(),
            kernel_drops,
            bursts: 0,
            first_ready: 0,
        })
    }

    /// Adds what the kernel dropped on each socket since the last reading to the counters.
    pub fn read_kernel_drops(&mut self) {
        for (s, last) in self.sockets.iter().zip(self.kernel_drops.iter_mut()) {
            if let Some(now) = kernel_drops(s) {
                let new = now.wrapping_sub(*last);
                *last = now;
                self.stats.count_drops(DropReason::KernelRx, u64::from(new));
            }
        }
    }

    /// Turns loss injection on (or off, with zeros): for tests only.
    pub fn set_loss(&mut self, loss: LossInjection) {
        self.loss = loss;
    }

    /// The receive buffer asked for each data socket (bytes).
    const RECV_BUFFER: usize = 2 << 20;

    fn bind_one(addr: SocketAddrV4, reuse: bool) -> std::io::Result<UdpSocket> {
        if !reuse {
            return UdpSocket::bind(addr);
        }
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        s.set_reuse_port(true)?;
        s.bind(&std::net::SocketAddr::V4(addr).into())?;
        Ok(s.into())
    }

    fn bind_range(
        addr: SocketAddrV4,
        classes: u16,
        reuse: bool,
    ) -> std::io::Result<Vec<UdpSocket>> {
        let mut sockets = Vec::with_capacity(usize::from(classes));
        for c in 0..classes {
            let port = addr.port().checked_add(c).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "class ports past 65535")
            })?;
            let s = Self::bind_one(SocketAddrV4::new(*addr.ip(), port), reuse)?;
            s.set_nonblocking(true)?;
            // The default (~200 KiB, ~270 datagrams of kernel bookkeeping) dropped requests of
            // one client with 512 outstanding; each drop cost a retransmission timeout and held
            // the client's de-duplication window open meanwhile (the reply cache filled). The
            // kernel caps this at net.core.rmem_max; memory is taken only while datagrams wait.
            let _ = socket2::SockRef::from(&s).set_recv_buffer_size(Self::RECV_BUFFER);
            sockets.push(s);
        }
        Ok(sockets)
    }

    fn bind_free_range(
        ip: Ipv4Addr,
        classes: u16,
        reuse: bool,
    ) -> Result<Vec<UdpSocket>, PortError> {
        let mut last = None;
        for _ in 0..BIND_ATTEMPTS {
            let first = UdpSocket::bind(SocketAddrV4::new(ip, 0))
                .map_err(|source| PortError::Io { op: "bind", source })?;
            let base = local_port(&first)?;
            drop(first); // rebind it below with the rest of the range
            match Self::bind_range(SocketAddrV4::new(ip, base), classes, reuse) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(PortError::Io {
            op: "bind (free port range)",
            source: last.unwrap_or_else(|| std::io::Error::other("no free range")),
        })
    }

    fn epoll_set(sockets: &[UdpSocket]) -> Result<OwnedFd, PortError> {
        // SAFETY: plain system call; the result is checked below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io_err("epoll_create1"));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(fd) };
        for (i, s) in sockets.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: both descriptors are open (owned by `ep` and `s`); `ev` is valid.
            let rc = unsafe {
                libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev)
            };
            if rc < 0 {
                return Err(io_err("epoll_ctl"));
            }
        }
        Ok(ep)
    }

    /// The socket of class `class`.
    pub fn socket(&self, class: u16) -> Option<&UdpSocket> {
        self.sockets.get(usize::from(class))
    }

    /// Reads datagrams from socket `class` into the free buffers of `batch` until it is empty
    /// or the batch is full. Returns how many were delivered.
    /// Receives up to `limit` datagrams of socket `class` into `batch`.
    fn recv_socket(&mut self, class: usize, batch: &mut PacketBatch, limit: usize) -> usize {
        let fd = self.sockets[class].as_raw_fd();
        let local = SocketAddrV4::new(*self.base.ip(), self.base.port().wrapping_add(class as u16));
        let mut delivered = 0;
        loop {
            let start = batch.len();
            let n = batch.spare().min(CHUNK).min(limit - delivered);
            if n == 0 {
                return delivered;
            }
            // SAFETY: all-zero is a valid value for these plain C structs.
            let mut msgs: [libc::mmsghdr; CHUNK] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut iovs: [libc::iovec; CHUNK] = unsafe { std::mem::zeroed() };
            let mut names: [MaybeUninit<libc::sockaddr_in>; CHUNK] = [MaybeUninit::uninit(); CHUNK];
            {
                let free = &mut batch.all_mut()[start..start + n];
                for (i, p) in free.iter_mut().enumerate() {
                    iovs[i] = libc::iovec {
                        iov_base: p.data.as_mut_ptr().cast(),
                        iov_len: MAX_PAYLOAD,
                    };
                    msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                    msgs[i].msg_hdr.msg_iovlen = 1;
                    msgs[i].msg_hdr.msg_name = names[i].as_mut_ptr().cast();
                    msgs[i].msg_hdr.msg_namelen =
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                }
            }
            // SAFETY: `fd` is an open socket; `msgs[..n]` point at `n` distinct packet buffers
            // of MAX_PAYLOAD bytes (borrowed from `batch`, untouched until the call returns)
            // and at `names` entries large enough for an IPv4 address.
            let got = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    n as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if got < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::WouldBlock {
                    self.stats.count_drop(DropReason::RxError);
                }
                return delivered;
            }
            let got = got as usize;
            for (i, msg) in msgs.iter().enumerate().take(got) {
                let hdr = &msg.msg_hdr;
                // Cut to MAX_PAYLOAD: counted, and delivered marked so the sender is told.
                let truncated = hdr.msg_flags & libc::MSG_TRUNC != 0;
                if truncated {
                    self.stats.count_drop(DropReason::Oversize);
                }
                if (hdr.msg_namelen as usize) < std::mem::size_of::<libc::sockaddr_in>() {
                    self.stats.count_drop(DropReason::RxError);
                    continue;
                }
                if self.loss.drop_rx() {
                    self.stats.count_drop(DropReason::InjectedRx);
                    continue;
                }
                // SAFETY: the kernel wrote an IPv4 address of `msg_namelen` bytes (checked).
                let remote = from_sockaddr(unsafe { names[i].assume_init_ref() });
                let w = batch.len();
                let slots = batch.all_mut();
                if start + i != w {
                    // An earlier datagram of this call was dropped: close the gap.
                    slots.swap(w, start + i);
                }
                let p: &mut Packet = &mut slots[w];
                p.len = msg.msg_len.min(MAX_PAYLOAD as u32) as u16;
                p.truncated = truncated;
                p.class = class as u16;
                p.peer = Peer {
                    remote,
                    local,
                    remote_mac: [0; 6],
                    local_mac: [0; 6],
                };
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += u64::from(p.len);
                batch.commit_one();
                delivered += 1;
            }
            if got < n {
                return delivered; // socket drained
            }
        }
    }

    /// Sends `packets` (all of class socket `class`) with `sendmmsg`; returns how many went.
    fn send_run(&mut self, class: usize, packets: &[Packet]) -> usize {
        let fd = self.sockets[class].as_raw_fd();
        let mut sent = 0;
        let mut chunks = packets.chunks(CHUNK);
        while let Some(chunk) = chunks.next() {
            // SAFETY: all-zero is a valid value for these plain C structs.
            let mut msgs: [libc::mmsghdr; CHUNK] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut iovs: [libc::iovec; CHUNK] = unsafe { std::mem::zeroed() };
            let mut names = [sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)); CHUNK];
            // Packets of this chunk that are sent (loss injection may leave some out).
            let mut kept = [0usize; CHUNK];
            let mut n = 0;
            for (i, p) in chunk.iter().enumerate() {
                if self.loss.drop_tx() {
                    self.stats.count_drop(DropReason::InjectedTx);
                    continue;
                }
                kept[n] = i;
                names[n] = sockaddr(p.peer.remote);
                // sendmmsg only reads through iov_base; the `*mut` is the C type's.
                iovs[n] = libc::iovec {
                    iov_base: p.payload().as_ptr().cast_mut().cast(),
                    iov_len: p.payload().len(),
                };
                n += 1;
            }
            for i in 0..n {
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
                msgs[i].msg_hdr.msg_name = std::ptr::from_mut(&mut names[i]).cast();
                msgs[i].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            let mut off = 0;
            while off < n {
                let todo = n - off;
                // SAFETY: `fd` is an open socket; `msgs[off..n]` point at live payloads and
                // addresses (borrowed from `packets` and this frame) that the call only reads.
                let rc = unsafe {
                    libc::sendmmsg(
                        fd,
                        msgs[off..].as_mut_ptr(),
                        todo as u32,
                        libc::MSG_DONTWAIT,
                    )
                };
                if rc < 0 {
                    let err = std::io::Error::last_os_error();
                    if err.kind() == std::io::ErrorKind::WouldBlock {
                        // Socket buffer full: the rest of this run is dropped.
                        let rest = todo + chunks.map(<[Packet]>::len).sum::<usize>();
                        self.stats.count_drops(DropReason::TxFull, rest as u64);
                        return sent;
                    }
                    // This datagram was refused (e.g. bad address): drop it, go on.
                    self.stats.count_drop(DropReason::TxError);
                    off += 1;
                    continue;
                }
                for &i in &kept[off..off + rc as usize] {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += chunk[i].payload().len() as u64;
                }
                off += rc as usize;
                sent += rc as usize;
            }
        }
        sent
    }
}

impl Port for UdpPort {
    fn rx_burst(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        self.bursts += 1;
        if self.bursts >= KERNEL_DROPS_EVERY {
            self.bursts = 0;
            self.read_kernel_drops();
        }
        let Some(ep) = &self.epoll else {
            return Ok(self.recv_socket(0, batch, usize::MAX));
        };
        if batch.spare() == 0 {
            return Ok(0);
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        // SAFETY: `ep` is an open epoll descriptor; `events` has room for EVENTS entries;
        // timeout 0 never blocks.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), EVENTS as i32, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(PortError::Io {
                op: "epoll_wait",
                source: err,
            });
        }
        // Every ready socket (class) gets an equal part of the burst, the first one rotating:
        // a flooded class must not keep another's datagrams waiting in the kernel (where
        // they would be dropped) for as long as it stays flooded. What the quiet ones leave
        // goes to those that had more, in a second pass.
        let ready = n as usize;
        let quota = (batch.spare() / ready.max(1)).max(1);
        self.first_ready = self.first_ready.wrapping_add(1);
        let mut more = [0usize; EVENTS];
        let mut n_more = 0;
        let mut total = 0;
        for k in 0..ready {
            let class = events[(self.first_ready + k) % ready].u64 as usize;
            if class >= self.sockets.len() {
                continue;
            }
            let got = self.recv_socket(class, batch, quota);
            total += got;
            if got == quota {
                more[n_more] = class;
                n_more += 1;
            }
            if batch.spare() == 0 {
                return Ok(total); // the others stay ready (level-triggered) for the next poll
            }
        }
        for &class in &more[..n_more] {
            total += self.recv_socket(class, batch, usize::MAX);
            if batch.spare() == 0 {
                break;
            }
        }
        Ok(total)
    }

    fn tx_burst(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        let packets = batch.as_slice();
        let mut sent = 0;
        let mut i = 0;
        while i < packets.len() {
            let port = packets[i].peer.local.port();
            let class = if port == 0 {
                0
            } else {
                usize::from(port.wrapping_sub(self.base.port()))
            };
            let mut j = i + 1;
            while j < packets.len() && packets[j].peer.local.port() == port {
                j += 1;
            }
            if class >= self.sockets.len() {
                self.stats
                    .count_drops(DropReason::BadSource, (j - i) as u64);
            } else {
                sent += self.send_run(class, &packets[i..j]);
            }
            i = j;
        }
        Ok(sent)
    }

    fn flush(&mut self) -> Result<(), PortError> {
        Ok(()) // datagrams go to the kernel at once
    }

    fn stats(&self) -> &PortStats {
        &self.stats
    }

    fn local_addr(&self) -> SocketAddrV4 {
        self.base
    }

    fn classes(&self) -> u16 {
        self.sockets.len() as u16
    }
}
