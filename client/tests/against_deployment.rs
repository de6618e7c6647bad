//! The client suites (`client`, `mica`, `btree`, `cli`) against real processes: compiled into
//! this target, `common::start_server` starts a host agent and a dataplane for every test
//! (see `common/mod.rs`) instead of the in-process fake. Tests that need the fake's fault
//! injection or its exact contents print why they skip; `real_client.rs` covers loss,
//! retransmission and de-duplication with the dataplane's own loss injection.

// Each suite declares its own `mod common` (so it also builds as a target of its own): the
// duplicates are intended, and all of them see this target's module path.
#![allow(clippy::duplicate_mod)]

#[path = "btree.rs"]
mod btree_suite;
#[path = "cli.rs"]
mod cli_suite;
#[path = "client.rs"]
mod client_suite;
#[path = "mica.rs"]
mod mica_suite;
