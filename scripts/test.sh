#!/usr/bin/env bash
# The NAAM-rs test suite: what CI runs (.ci/run) and what the README's test command runs.
#   1. Debian packages (scripts/setup.sh, idempotent)
#   2. formatting and clippy (workspace lints deny undocumented unsafe blocks)
#   3. handler objects: recompiling every *.bpf.c gives the committed bytes
#   4. tests of the default build (no DPDK, no RDMA libraries needed)
#   5. tests with feature `dpdk` (ffi/dpdk-sys, its safe layer ffi/dpdk and the DPDK ports on
#      virtual devices)
#   6. tests with feature `verbs` (skip with a printed reason when no RDMA device exists)
#   7. naam-core's memory views under Miri (when a nightly toolchain with Miri is installed)
#   8. the aarch64 build of naam-core and naam-dataplane, and the core tests under qemu with
#      the cranelift engine (when the target can be installed)
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "setup"
scripts/setup.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "handler objects match their sources"
handlers/build.sh --check

step "tests: default build"
cargo test --quiet

step "tests: feature dpdk"
cargo test --quiet -p dpdk-sys
cargo test --quiet -p naam-dpdk
cargo test --quiet -p naam-dataplane --features dpdk
# MICA GETs through the dataplane over net_memif, against testpmd io-fwd (short runs).
cargo test --quiet -p naam-bench --features dpdk --test memif_smoke

step "tests: feature verbs"
cargo test --quiet -p naam-link --features verbs
cargo build --quiet -p naam-dataplane --features verbs

step "naam-core's memory views under Miri"
if cargo +nightly miri --version >/dev/null 2>&1; then
    # Views that outlive their owner, concurrent partial-word writes: undefined behaviour
    # (use after free, racing mixed-size atomics) would be reported here.
    cargo +nightly miri test --quiet -p naam-core --lib memory::
else
    echo "skipped: no nightly toolchain with Miri (scripts/setup.sh could not install it)"
fi

step "aarch64 build and core tests under qemu"
if rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu; then
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
    cargo build --quiet --target aarch64-unknown-linux-gnu -p naam-core -p naam-dataplane
    cargo test --quiet --target aarch64-unknown-linux-gnu -p naam-core
else
    echo "skipped: the aarch64-unknown-linux-gnu target is not installed and could not be added"
fi

step "all tests passed"
