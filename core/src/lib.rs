//! NAAM-rs core: everything about active messages that is pure logic.
//!
//! The handler ABI ([`abi`]), regions and their checks ([`region`]), memory backends
//! ([`memory`]), loading ([`elf`]) and verifying ([`verifier`]) handler programs, compiling them
//! ([`vm`]) into per-worker pools ([`pool`]), running messages step by step ([`exec`]), and the
//! datagrams they travel in ([`wire`]); for the programs around them, their run directory
//! ([`run_dir`]) and the numbers of their flags ([`arg`]).
//! Nothing here opens a socket or reads a clock: time, when needed, is passed in.

#![deny(unsafe_code)]

pub mod abi;
pub mod arg;
pub mod auth;
pub mod btf;
pub mod counter;
pub mod elf;
pub mod exec;
pub mod helpers;
pub mod memory;
pub mod policy;
pub mod pool;
pub mod rate;
pub mod region;
pub mod relayout;
pub mod run_dir;
pub mod verifier;
#[allow(unsafe_code)]
pub mod vm;
pub mod wire;

/// `e` and each of its sources on one line ("bind failed: Address already in use"): where an
/// error becomes a string (a log line, an error reply's detail, a wrapping error's reason),
/// the OS's reason is what an operator needs.
pub fn with_sources(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
