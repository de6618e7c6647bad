//! The reference server: DPDK's own `dpdk-testpmd` in io forwarding mode (every received
//! burst is sent back on the same port untouched), the physical limit of a port for a
//! one-core server. Non-interactive: it starts forwarding at once and stops, printing its
//! forward statistics, when a line arrives on its standard input.

/// The command line (after the program name) of a one-forwarding-core io-forward server on
/// `vdev`. testpmd wants a main lcore besides the forwarding one: the main lcore only waits
/// for standard input, so it shares `idle_core` with the generator; `core` forwards.
pub fn args(vdev: &str, file_prefix: &str, core: u32, idle_core: u32, burst: usize) -> Vec<String> {
    let mut a: Vec<String> = [
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-telemetry",
        "--log-level=notice",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    a.push("-l".into());
    a.push(format!("{idle_core},{core}"));
    a.push("--main-lcore".into());
    a.push(idle_core.to_string());
    a.push(format!("--file-prefix={file_prefix}"));
    a.push(format!("--vdev={vdev}"));
    a.push("--".into());
    a.extend(
        [
            "--forward-mode=io",
            "--auto-start",
            "--nb-cores=1",
            // The default pool (~155 K mbufs) does not fit in -m 256 without hugepages.
            "--total-num-mbufs=32768",
        ]
        .into_iter()
        .map(String::from),
    );
    a.push(format!("--burst={}", burst.clamp(1, 512)));
    a
}

/// testpmd's accumulated forward statistics (all ports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ForwardStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// Reads the "Accumulated forward statistics for all ports" block testpmd prints when it
/// stops (the per-port block if there is no accumulated one).
pub fn parse_stats(output: &str) -> Option<ForwardStats> {
    let start = output
        .find("Accumulated forward statistics")
        .or_else(|| output.find("Forward statistics for port"))?;
    let block = &output[start..];
    let value = |key: &str| -> Option<u64> {
        let at = block.find(key)? + key.len();
        block[at..].split_whitespace().next()?.parse().ok()
    };
    Some(ForwardStats {
        rx_packets: value("RX-packets:")?,
        rx_dropped: value("RX-dropped:")?,
        tx_packets: value("TX-packets:")?,
        tx_dropped: value("TX-dropped:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
Press enter to exit
Telling cores to stop...
Waiting for lcores to finish...

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 11             RX-dropped: 0             RX-total: 11
  TX-packets: 10             TX-dropped: 1             TX-total: 11
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 123456789      RX-dropped: 2             RX-total: 123456791
  TX-packets: 123456700      TX-dropped: 89            TX-total: 123456789
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++

Done.
";

    #[test]
    fn accumulated_stats_are_read() {
        assert_eq!(
            parse_stats(OUTPUT),
            Some(ForwardStats {
                rx_packets: 123456789,
                rx_dropped: 2,
                tx_packets: 123456700,
                tx_dropped: 89,
            })
        );
    }

    #[test]
    fn per_port_block_when_alone_and_none_without_stats() {
        let per_port = &OUTPUT[..OUTPUT.find("  +++").unwrap()];
        assert_eq!(parse_stats(per_port).unwrap().tx_dropped, 1);
        assert_eq!(parse_stats("Press enter to exit\n"), None);
        assert_eq!(
            parse_stats("Accumulated forward statistics\n RX-packets: x"),
            None
        );
    }

    #[test]
    fn one_forwarding_core_and_a_small_pool() {
        let a = args("net_memif0,role=server", "p", 1, 0, 32);
        let s = a.join(" ");
        assert!(s.contains("-l 0,1 --main-lcore 0"), "{s}");
        assert!(s.contains("--file-prefix=p --vdev=net_memif0,role=server -- "));
        assert!(s.contains("--forward-mode=io --auto-start --nb-cores=1"));
        assert!(s.ends_with("--burst=32"));
    }
}
