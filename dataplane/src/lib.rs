//! The NAAM dataplane: the process on the NIC's cores (DESIGN §2, §5, §7).
//!
//! `unsafe` is denied in the crate except in the module that talks to the OS (the UDP port),
//! each block with a `// SAFETY:` comment; DPDK is reached through its safe layer, the
//! `naam-dpdk` crate (`ffi/dpdk`), re-exported here as [`dpdk`] with the feature `dpdk`.

#![deny(unsafe_code)]

#[cfg(feature = "dpdk")]
pub use naam_dpdk as dpdk;

pub mod port;
pub mod program;
pub mod runtime;
pub mod steering;
