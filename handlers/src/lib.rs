//! The bundled handlers: C sources in `handlers/*.bpf.c`, compiled objects committed beside
//! them (so building NAAM needs no clang), embedded here.

pub mod mica;
pub mod relayout;
