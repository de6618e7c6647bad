//! Generates the DPDK bindings and compiles the C shim, both with the flags `pkg-config`
//! reports for `libdpdk`. The cflags matter for bindgen too: they carry
//! `-include rte_config.h` and `-march=...`, without which the headers do not parse (or parse
//! with the wrong vector types).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .unwrap_or_else(|e| {
            panic!("dpdk-sys: cannot run pkg-config ({e}); install pkg-config and libdpdk-dev")
        });
    if !out.status.success() {
        panic!(
            "dpdk-sys: `pkg-config {} libdpdk` failed: {}\ninstall libdpdk-dev (Debian) to build the `dpdk` feature",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout)
        .expect("pkg-config output is UTF-8")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn main() {
    println!("cargo:rerun-if-changed=c/wrapper.h");
    println!("cargo:rerun-if-changed=c/shim.h");
    println!("cargo:rerun-if-changed=c/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let cflags = pkg_config(&["--cflags"]);
    let libs = pkg_config(&["--libs"]);

    // The shim first: its static library must precede the shared DPDK libraries it calls on
    // the link line (the libraries are linked `--as-needed`).
    let mut shim = cc::Build::new();
    shim.file("c/shim.c")
        .include("c")
        .warnings(true)
        .opt_level(2);
    for flag in &cflags {
        shim.flag(flag);
    }
    shim.compile("naam_dpdk_shim");

    for lib in &libs {
        if let Some(name) = lib.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={name}");
        } else if let Some(dir) = lib.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        }
        // `-Wl,--as-needed` is rustc's default for dylibs already.
    }
    // `rte_eth_from_rings` (two ethdev ports over one ring pair, for tests) lives in the
    // net_ring PMD library, which shared builds do not list in pkg-config.
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");

    let bindings = bindgen::Builder::default()
        .header("c/wrapper.h")
        .clang_args(&cflags)
        .clang_arg("-Ic")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .default_enum_style(bindgen::EnumVariation::ModuleConsts)
        .derive_default(true)
        .derive_debug(false)
        .layout_tests(true)
        .generate_comments(false)
        // Functions: only those the safe layer calls.
        .allowlist_function("rte_eal_(init|cleanup|process_type)")
        .allowlist_function("rte_eth_(dev_(configure|start|stop|close|info_get|count_avail|is_valid_port|socket_id|set_mtu|get_mtu|get_name_by_port|get_port_by_name)|rx_queue_setup|tx_queue_setup|macaddr_get|stats_get|stats_reset|promiscuous_(enable|disable|get)|link_get_nowait|find_next_owned_by|from_rings)")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_mempool_(free|avail_count|in_use_count|lookup)")
        .allowlist_function("rte_flow_(validate|create|destroy|flush|pick_transfer_proxy|query|isolate)")
        .allowlist_function("rte_lcore_(count|index|to_socket_id|is_enabled)")
        .allowlist_function("rte_get_(main|next)_lcore")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_(exit|strerror)")
        .allowlist_function("rte_ring_(create|free|lookup|count)")
        .allowlist_function("naam_.*")
        // Types: the flow items and actions (beyond what the functions pull in).
        .allowlist_type("rte_flow_(item|action)_.*")
        .allowlist_type("rte_(ether|ipv4|udp)_hdr")
        .allowlist_type("rte_eth_(conf|dev_info|stats|link|rxconf|txconf)")
        // Constants used by the safe layer.
        .allowlist_var("RTE_(MAX_ETHPORTS|MAX_LCORE|ETHER_TYPE_IPV4|ETHER_ADDR_LEN|PKTMBUF_HEADROOM|MBUF_DEFAULT_.*|MEMPOOL_CACHE_MAX_SIZE|ETH_NAME_MAX_LEN|ETH_RX_OFFLOAD_.*|ETH_TX_OFFLOAD_.*|MBUF_F_(RX|TX)_.*|ETH_DEV_.*|RING_F_.*|IPV4_HDR_.*|LCORE_ID_ANY|ETH_LINK_.*)")
        // Packed headers containing aligned unions cannot be expressed in Rust; no flow item we
        // build needs them.
        .opaque_type("rte_l2tpv2_.*")
        .opaque_type("rte_flow_item_l2tpv2")
        .clang_macro_fallback()
        .generate()
        .expect("dpdk-sys: bindgen failed on c/wrapper.h");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR set by cargo"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("dpdk-sys: cannot write bindings.rs");
}
