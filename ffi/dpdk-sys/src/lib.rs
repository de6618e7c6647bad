//! Raw DPDK bindings (bindgen over `c/wrapper.h`) plus `naam_*` exported wrappers for the
//! DPDK `static inline` functions (`c/shim.c`). Everything here is generated or declared; the
//! safe layer lives in `naam-dataplane` (module `dpdk`, feature `dpdk`).

#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused_qualifications
)]
#![allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn
)]
#![allow(missing_docs, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
