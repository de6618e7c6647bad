//! The NAAM dataplane: the process on the NIC's cores (DESIGN §2, §5, §7).
//!
//! `unsafe` is denied in the crate except in the modules that talk to DPDK or the OS
//! (`dpdk`, and the UDP and DPDK ports), each block with a `// SAFETY:` comment.

#![deny(unsafe_code)]

#[cfg(feature = "dpdk")]
#[allow(unsafe_code)]
pub mod dpdk;

pub mod port;
pub mod runtime;
pub mod steering;
