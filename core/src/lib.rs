//! NAAM-rs core: everything about active messages that is pure logic.
//!
//! The handler ABI ([`abi`]), regions and their checks ([`region`]), memory backends
//! ([`memory`]), loading ([`elf`]) and verifying ([`verifier`]) handler programs, compiling them
//! ([`vm`]) into per-worker pools ([`pool`]), and running messages step by step ([`exec`]), and the datagrams they travel in ([`wire`]).
//! Nothing here opens a socket or reads a clock: time, when needed, is passed in.

#![deny(unsafe_code)]

pub mod abi;
pub mod auth;
pub mod btf;
pub mod counter;
pub mod elf;
pub mod exec;
pub mod helpers;
pub mod memory;
pub mod policy;
pub mod pool;
pub mod region;
pub mod relayout;
pub mod run_dir;
pub mod verifier;
#[allow(unsafe_code)]
pub mod vm;
pub mod wire;
