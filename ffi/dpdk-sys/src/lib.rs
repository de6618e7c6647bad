//! Raw DPDK bindings. Everything here is generated or declared; the safe layer lives in
//! naam-dataplane.
