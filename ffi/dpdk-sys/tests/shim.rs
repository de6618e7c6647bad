//! One check per `naam_*` shim function, against a real EAL with a `net_ring` loopback port.
//!
//! EAL initialises once per process, so this binary has a single `#[test]` that initialises it
//! and then runs every check in turn (each check is a separate function named after the shim
//! function it covers).

#![allow(clippy::undocumented_unsafe_blocks)] // test code: raw FFI throughout

use dpdk_sys::*;
use std::ffi::{c_char, CStr, CString};
use std::ptr;

const PORT_MBUFS: u32 = 1023;

struct Env {
    pool: *mut rte_mempool,
    port: u16,
}

fn eal_init() {
    let args = [
        "dpdk-sys-test".to_owned(),
        "--no-huge".to_owned(),
        "-m".to_owned(),
        "256".to_owned(),
        "--no-pci".to_owned(),
        "--no-telemetry".to_owned(),
        "-l".to_owned(),
        "0".to_owned(),
        format!("--file-prefix=naam-sys-{}", std::process::id()),
        // No nodeaction: the port's TX ring is its own RX ring, a loopback.
        "--vdev=net_ring0".to_owned(),
    ];
    let cstrings: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()).unwrap())
        .collect();
    // EAL may keep pointers into argv: leak it for the life of the process.
    let argv: &'static mut [*mut c_char] = Box::leak(
        cstrings
            .into_iter()
            .map(|c| c.into_raw())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let rc = unsafe { rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
    assert!(
        rc >= 0,
        "rte_eal_init failed: {}",
        strerror(unsafe { naam_errno() })
    );
}

fn strerror(errno: i32) -> String {
    unsafe { CStr::from_ptr(rte_strerror(errno)) }
        .to_string_lossy()
        .into_owned()
}

fn setup() -> Env {
    eal_init();
    let name = CString::new("shim_test_pool").unwrap();
    let pool = unsafe {
        rte_pktmbuf_pool_create(
            name.as_ptr(),
            PORT_MBUFS,
            0,
            0,
            RTE_MBUF_DEFAULT_BUF_SIZE as u16,
            rte_socket_id() as i32,
        )
    };
    assert!(
        !pool.is_null(),
        "pool create: {}",
        strerror(unsafe { naam_errno() })
    );
    let port = 0u16;
    assert_eq!(unsafe { rte_eth_dev_count_avail() }, 1);
    let conf = rte_eth_conf::default();
    unsafe {
        assert_eq!(rte_eth_dev_configure(port, 1, 1, &conf), 0);
        assert_eq!(
            rte_eth_rx_queue_setup(port, 0, 256, 0, ptr::null(), pool),
            0
        );
        assert_eq!(rte_eth_tx_queue_setup(port, 0, 256, 0, ptr::null()), 0);
        assert_eq!(rte_eth_dev_start(port), 0);
    }
    Env { pool, port }
}

fn avail(pool: *mut rte_mempool) -> u32 {
    unsafe { rte_mempool_avail_count(pool) }
}

fn check_alloc_free(env: &Env) {
    let before = avail(env.pool);
    let m = unsafe { naam_pktmbuf_alloc(env.pool) };
    assert!(!m.is_null());
    assert_eq!(avail(env.pool), before - 1);
    unsafe { naam_pktmbuf_free(m) };
    assert_eq!(avail(env.pool), before);
}

fn check_alloc_free_bulk(env: &Env) {
    let before = avail(env.pool);
    let mut ms = [ptr::null_mut::<rte_mbuf>(); 8];
    assert_eq!(
        unsafe { naam_pktmbuf_alloc_bulk(env.pool, ms.as_mut_ptr(), 8) },
        0
    );
    assert!(ms.iter().all(|m| !m.is_null()));
    assert_eq!(avail(env.pool), before - 8);
    unsafe { naam_pktmbuf_free_bulk(ms.as_mut_ptr(), 8) };
    assert_eq!(avail(env.pool), before);
    // Asking for more than the pool holds fails whole, taking nothing.
    let mut many = vec![ptr::null_mut::<rte_mbuf>(); (before + 1) as usize];
    assert!(unsafe { naam_pktmbuf_alloc_bulk(env.pool, many.as_mut_ptr(), before + 1) } < 0);
    assert_eq!(avail(env.pool), before);
}

fn check_lengths_and_room(env: &Env) {
    let m = unsafe { naam_pktmbuf_alloc(env.pool) };
    unsafe {
        assert_eq!(naam_pktmbuf_data_len(m), 0);
        assert_eq!(naam_pktmbuf_pkt_len(m), 0);
        assert_eq!(naam_pktmbuf_nb_segs(m), 1);
        assert_eq!(naam_pktmbuf_headroom(m) as u32, RTE_PKTMBUF_HEADROOM);
        let room = naam_pktmbuf_tailroom(m);
        assert_eq!(
            room as u32,
            RTE_MBUF_DEFAULT_BUF_SIZE - RTE_PKTMBUF_HEADROOM
        );
        naam_pktmbuf_set_len(m, 100);
        assert_eq!(naam_pktmbuf_data_len(m), 100);
        assert_eq!(naam_pktmbuf_pkt_len(m), 100);
        assert_eq!(naam_pktmbuf_tailroom(m), room - 100);
        naam_pktmbuf_reset(m);
        assert_eq!(naam_pktmbuf_data_len(m), 0);
        assert_eq!(naam_pktmbuf_tailroom(m), room);
        naam_pktmbuf_free(m);
    }
}

fn check_mtod(env: &Env) {
    let m = unsafe { naam_pktmbuf_alloc(env.pool) };
    unsafe {
        let data = naam_pktmbuf_mtod(m) as *mut u8;
        let expect = ((*m).buf_addr as *mut u8).add((*m).data_off as usize);
        assert_eq!(data, expect);
        // mtod follows data_off.
        naam_pktmbuf_append(m, 10);
        naam_pktmbuf_adj(m, 4);
        assert_eq!(naam_pktmbuf_mtod(m) as *mut u8, expect.add(4));
        naam_pktmbuf_free(m);
    }
}

fn check_append_prepend_adj_trim(env: &Env) {
    let m = unsafe { naam_pktmbuf_alloc(env.pool) };
    unsafe {
        let start = naam_pktmbuf_mtod(m) as *mut u8;
        let p = naam_pktmbuf_append(m, 16) as *mut u8;
        assert_eq!(p, start);
        ptr::copy_nonoverlapping(b"0123456789abcdef".as_ptr(), p, 16);
        assert_eq!(naam_pktmbuf_data_len(m), 16);

        let h = naam_pktmbuf_prepend(m, 4) as *mut u8;
        assert_eq!(h, start.sub(4));
        assert_eq!(naam_pktmbuf_pkt_len(m), 20);

        let a = naam_pktmbuf_adj(m, 6) as *mut u8;
        assert_eq!(*a, b'2');
        assert_eq!(naam_pktmbuf_data_len(m), 14);

        assert_eq!(naam_pktmbuf_trim(m, 4), 0);
        assert_eq!(naam_pktmbuf_data_len(m), 10);
        let data = std::slice::from_raw_parts(naam_pktmbuf_mtod(m) as *const u8, 10);
        assert_eq!(data, b"23456789ab");

        // Past the ends: NULL / -1, nothing changed.
        assert!(naam_pktmbuf_adj(m, 11).is_null());
        assert_eq!(naam_pktmbuf_trim(m, 11), -1);
        assert!(naam_pktmbuf_append(m, u16::MAX).is_null());
        assert!(naam_pktmbuf_prepend(m, naam_pktmbuf_headroom(m) + 1).is_null());
        assert_eq!(naam_pktmbuf_data_len(m), 10);
        naam_pktmbuf_free(m);
    }
}

fn check_refcnt(env: &Env) {
    let before = avail(env.pool);
    let m = unsafe { naam_pktmbuf_alloc(env.pool) };
    unsafe {
        assert_eq!(naam_mbuf_refcnt_read(m), 1);
        naam_mbuf_refcnt_set(m, 2);
        assert_eq!(naam_mbuf_refcnt_read(m), 2);
        naam_pktmbuf_free(m); // drops one reference
        assert_eq!(avail(env.pool), before - 1);
        assert_eq!(naam_mbuf_refcnt_read(m), 1);
        naam_pktmbuf_free(m);
    }
    assert_eq!(avail(env.pool), before);
}

fn check_tx_offload_flags(env: &Env) {
    let m = unsafe { naam_pktmbuf_alloc(env.pool) };
    unsafe {
        assert_eq!(naam_mbuf_ol_flags(m), 0);
        naam_mbuf_set_tx_ipv4_cksum(m, 14, 20);
        let flags = naam_mbuf_ol_flags(m);
        assert_ne!(flags & RTE_MBUF_F_TX_IP_CKSUM, 0);
        assert_ne!(flags & RTE_MBUF_F_TX_IPV4, 0);
        assert_eq!((*m).__bindgen_anon_3.__bindgen_anon_1.l2_len(), 14);
        assert_eq!((*m).__bindgen_anon_3.__bindgen_anon_1.l3_len(), 20);
        naam_pktmbuf_free(m);
    }
}

fn check_rx_tx_burst(env: &Env) {
    let mut tx = [ptr::null_mut::<rte_mbuf>(); 4];
    for (i, slot) in tx.iter_mut().enumerate() {
        let m = unsafe { naam_pktmbuf_alloc(env.pool) };
        unsafe {
            let p = naam_pktmbuf_append(m, 64) as *mut u8;
            ptr::write_bytes(p, i as u8 + 1, 64);
        }
        *slot = m;
    }
    let sent = unsafe { naam_eth_tx_burst(env.port, 0, tx.as_mut_ptr(), 4) };
    assert_eq!(sent, 4);
    let mut rx = [ptr::null_mut::<rte_mbuf>(); 8];
    let got = unsafe { naam_eth_rx_burst(env.port, 0, rx.as_mut_ptr(), 8) };
    assert_eq!(got, 4, "net_ring loopback returns what was sent");
    for (i, m) in rx[..4].iter().enumerate() {
        unsafe {
            assert_eq!(naam_pktmbuf_data_len(*m), 64);
            let d = std::slice::from_raw_parts(naam_pktmbuf_mtod(*m) as *const u8, 64);
            assert!(d.iter().all(|b| *b == i as u8 + 1));
        }
    }
    unsafe { naam_pktmbuf_free_bulk(rx.as_mut_ptr(), 4) };
    assert_eq!(
        unsafe { naam_eth_rx_burst(env.port, 0, rx.as_mut_ptr(), 8) },
        0
    );
}

fn check_errno() {
    let name = CString::new("no-such-pool").unwrap();
    let p = unsafe { rte_mempool_lookup(name.as_ptr()) };
    assert!(p.is_null());
    assert_eq!(unsafe { naam_errno() }, libc_enoent());
}

fn libc_enoent() -> i32 {
    std::io::Error::from(std::io::ErrorKind::NotFound)
        .raw_os_error()
        .unwrap_or(2)
}

fn check_lcore_id() {
    // `-l 0`: the main thread is lcore 0.
    assert_eq!(unsafe { naam_lcore_id() }, 0);
    assert_eq!(unsafe { rte_get_main_lcore() }, 0);
    // A thread EAL did not create has no lcore id (LCORE_ID_ANY = UINT32_MAX).
    let other = std::thread::spawn(|| unsafe { naam_lcore_id() })
        .join()
        .unwrap();
    assert_eq!(other, u32::MAX);
}

#[test]
fn shim_functions_against_eal() {
    let env = setup();
    check_alloc_free(&env);
    check_alloc_free_bulk(&env);
    check_lengths_and_room(&env);
    check_mtod(&env);
    check_append_prepend_adj_trim(&env);
    check_refcnt(&env);
    check_tx_offload_flags(&env);
    check_rx_tx_burst(&env);
    check_errno();
    check_lcore_id();
    unsafe {
        assert_eq!(rte_eth_dev_stop(env.port), 0);
        assert_eq!(rte_eth_dev_close(env.port), 0);
        rte_mempool_free(env.pool);
        assert_eq!(rte_eal_cleanup(), 0);
    }
    // EAL leaves its runtime directory behind; best effort, a leftover is harmless.
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/naam-sys-{}", std::process::id()));
}
