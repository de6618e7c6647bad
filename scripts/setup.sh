#!/usr/bin/env bash
# Installs the Debian packages NAAM-rs builds and tests with (idempotent: installs only what
# is missing). The default build needs none of them; the tests need clang (handler objects),
# DPDK (feature `dpdk`), the verbs build dependencies (feature `verbs`) and the aarch64
# cross toolchain with qemu (the Arm build of the core).
set -euo pipefail
packages=(
    clang llvm libclang-dev pkg-config
    libdpdk-dev dpdk dpdk-dev
    cmake libnl-3-dev libnl-route-3-dev libibverbs-dev
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
    iproute2
)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu; then
    rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 \
        || echo "setup: could not add the aarch64-unknown-linux-gnu target; the Arm build will be skipped"
fi
# naam-core's memory views are also tested under Miri, which needs a nightly toolchain.
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal --component miri,rust-src >/dev/null 2>&1 \
        || echo "setup: could not install a nightly toolchain with Miri; the Miri tests will be skipped"
fi
