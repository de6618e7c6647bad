//! The dataplane throughput benchmark (issue 6, item 7): messages per second per worker core
//! for NIC-executed MICA GET, over `net_memif` and over kernel UDP, each against a reference
//! server on the same transport in the same run:
//!
//! | run | transport | server | reference for |
//! |---|---|---|---|
//! | `testpmd-memif` | net_memif | `dpdk-testpmd --forward-mode=io`, one forwarding core | `naam-memif` |
//! | `naam-memif` | net_memif | host agent + `naam-dataplane --port dpdk:...` (one worker, `--home nic`) | |
//! | `udp-echo` | kernel UDP, loopback | a `UdpPort` echo (`recvmmsg`/`sendmmsg`, same bursts), one core | `naam-udp` |
//! | `naam-udp` | kernel UDP, loopback | host agent + `naam-dataplane --port udp:...` (one worker) | |
//!
//! testpmd cannot use kernel sockets, so the UDP reference is the plainest server the kernel
//! path allows: receive a burst, send it back. Every server runs on one core (`server_core`),
//! the generator on the other (`gen_core`); the host agent (idle: GETs run on the NIC worker
//! against host memory through the shared-memory link) shares the generator's core.
//!
//! The generator ([`drive`]) is a separate process per run: over memif a DPDK process (its own
//! EAL and `--file-prefix`, [`dpdk`]), over UDP a `UdpPort` ([`udp`]). It keeps a window of
//! requests outstanding, sends in bursts as fast as the transport takes them, counts replies
//! and checks a sample of them in full ([`requests`]). The program is `naam-memif-bench`
//! (`bench/src/bin/memif.rs`, feature `dpdk`).

#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod drive;
pub mod procs;
pub mod requests;
pub mod runs;
pub mod testpmd;
pub mod udp;

pub use drive::{drive, DriveConfig, GenReport, LoadPort};
pub use requests::{Expect, RequestSet, TableSpec};
pub use runs::{BenchConfig, GenConfig, Row, RunKind};
