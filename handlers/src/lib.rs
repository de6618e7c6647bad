//! The bundled handlers: C sources in `handlers/*.bpf.c`, compiled objects committed beside
//! them (so building NAAM needs no clang), embedded here.

pub mod btree;
pub mod bundled;
pub mod mica;
/// Re-exported: the loader in naam-core applies it to every program.
pub use naam_core::relayout;

/// `record.bpf.c`: reads one 64-byte record and replies with a digest (the scale experiment's
/// handler).
pub const RECORD_OBJECT: &[u8] = include_bytes!("../record.bpf.o");
/// The salt `record.bpf.c` mixes in (`RECORD_SALT`), the immediate of its one `lddw`.
pub const RECORD_SALT: u64 = 0x5a17_5a17_5a17_5a17;
