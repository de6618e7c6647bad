//! RteFlow steering on a vdev: the probe must report that the PMD cannot steer (net_ring has
//! no rte_flow support), naming the port and driver, so the dataplane falls back to the
//! SoftSwitch. One `#[test]`: EAL initialises once per process, and this binary is that process.

use naam_dataplane::dpdk::{ring_pair, Eal, EthPort, Mempool, PortConfig, MBUF_DATA_ROOM};
use naam_dataplane::steering::rte_flow::RteFlowSteering;
use naam_dataplane::steering::{SoftSwitch, Steering, SteeringError, Target};

#[test]
fn rte_flow_probe_falls_back_on_a_vdev() {
    let prefix = format!("naam-steer-{}", std::process::id());
    let eal = Eal::init(&[
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-telemetry",
        "-l",
        "0",
        &format!("--file-prefix={prefix}"),
        "--log-level=notice",
    ])
    .expect("EAL init");
    let (a, _b) = ring_pair(&eal, "steerring").unwrap();
    let pool = Mempool::pktmbuf(&eal, "steer_test", 1023, 0, MBUF_DATA_ROOM).unwrap();
    let (port, _rx, _tx) = EthPort::configure(&eal, a, &PortConfig::default(), &pool).unwrap();
    port.start().unwrap();
    let steering: Box<dyn Steering> =
        match RteFlowSteering::open(&eal, port.clone(), None, None, 7000) {
            Ok(hw) => Box::new(hw),
            Err(SteeringError::Unsupported { backend, reason }) => {
                assert_eq!(backend, "rte_flow");
                assert!(
                    reason.contains("net_ring") && reason.contains("does not support rte_flow"),
                    "{reason}"
                );
                println!("falling back to the SoftSwitch: {reason}");
                Box::new(SoftSwitch::new(7000, 64, 1, Target::NicQueue(0)))
            }
            Err(other) => panic!("probe failed unexpectedly: {other}"),
        };
    assert_eq!(steering.capabilities().backend, "soft");
    port.stop().unwrap();
}
