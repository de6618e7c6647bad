//! The Cell-style B-tree (Mitchell et al., ATC'16) of issue 4: a B-link tree of fixed-size
//! nodes in one region, read one node per step by the handlers `naam/btree_lookup` and
//! `naam/btree_scan` (`handlers/btree.bpf.c`), written by the host.
//!
//! - [`layout`]: the bytes (mirror of `handlers/include/btree.h`), handler args and replies;
//! - [`tree`]: the host's writer: create, O(n) bulk load, versioned inserts with splits;
//! - [`native`]: LOOKUP and SCAN in Rust on the same layout (reference and baseline);
//! - [`program`]: the embedded, verified handler programs.

pub mod layout;
pub mod native;
pub mod program;
pub mod tree;

pub use layout::{parse_lookup_reply, AbortCode, Args, ScanReply};
pub use program::{programs, Programs};
pub use tree::{BTree, BTreeConfig, BTreeError};
