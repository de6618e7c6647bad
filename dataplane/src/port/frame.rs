//! Ethernet II / IPv4 / UDP framing for ports that see raw frames (DPDK): parse on receive,
//! build on transmit, so the message payload is the same as on a kernel UDP socket.
//!
//! smoltcp style: `mod field` holds the byte ranges, lengths are checked once up front, and
//! nothing here panics on any input (the property test in this module feeds it arbitrary
//! bytes). VLAN tags, IP options beyond the IHL and fragments are not handled: such frames are
//! reported as errors for the port to count and drop.

use std::net::Ipv4Addr;

/// Byte ranges of the header fields, from the start of each header.
pub mod field {
    use std::ops::Range;
    /// Ethernet destination MAC.
    pub const ETH_DST: Range<usize> = 0..6;
    /// Ethernet source MAC.
    pub const ETH_SRC: Range<usize> = 6..12;
    /// EtherType.
    pub const ETH_TYPE: Range<usize> = 12..14;
    /// IPv4 version (high nibble) and IHL (low nibble, in 32-bit words).
    pub const IP_VER_IHL: usize = 0;
    /// IPv4 type of service.
    pub const IP_TOS: usize = 1;
    /// IPv4 total length (header + payload).
    pub const IP_TOTAL_LEN: Range<usize> = 2..4;
    /// IPv4 identification.
    pub const IP_ID: Range<usize> = 4..6;
    /// IPv4 flags and fragment offset.
    pub const IP_FRAG: Range<usize> = 6..8;
    /// IPv4 time to live.
    pub const IP_TTL: usize = 8;
    /// IPv4 protocol.
    pub const IP_PROTO: usize = 9;
    /// IPv4 header checksum.
    pub const IP_CHECKSUM: Range<usize> = 10..12;
    /// IPv4 source address.
    pub const IP_SRC: Range<usize> = 12..16;
    /// IPv4 destination address.
    pub const IP_DST: Range<usize> = 16..20;
    /// UDP source port.
    pub const UDP_SRC: Range<usize> = 0..2;
    /// UDP destination port.
    pub const UDP_DST: Range<usize> = 2..4;
    /// UDP length (header + payload).
    pub const UDP_LEN: Range<usize> = 4..6;
    /// UDP checksum.
    pub const UDP_CHECKSUM: Range<usize> = 6..8;
}

/// Ethernet header length (no VLAN tag).
pub const ETH_HDR_LEN: usize = 14;
/// IPv4 header length without options (what `emit` writes).
pub const IPV4_HDR_LEN: usize = 20;
/// UDP header length.
pub const UDP_HDR_LEN: usize = 8;
/// Header bytes in front of the payload of a frame `emit` builds.
pub const HEADERS_LEN: usize = ETH_HDR_LEN + IPV4_HDR_LEN + UDP_HDR_LEN;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// TTL of the frames `emit` builds.
pub const DEFAULT_TTL: u8 = 64;

/// Why a frame was not a well-formed Ethernet/IPv4/UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the headers it claims to carry.
    #[error("frame truncated")]
    Truncated,
    /// EtherType is not IPv4 (including VLAN-tagged frames).
    #[error("not an IPv4 frame")]
    NotIpv4,
    /// IPv4 version is not 4, IHL below 5, or total length inconsistent with the frame.
    #[error("bad IPv4 header")]
    BadIpHeader,
    /// IPv4 header checksum does not verify.
    #[error("bad IPv4 header checksum")]
    BadIpChecksum,
    /// A fragment (MF set or non-zero offset): not reassembled.
    #[error("IPv4 fragment")]
    Fragment,
    /// IP protocol is not UDP.
    #[error("not UDP")]
    NotUdp,
    /// UDP length below 8 or past the end of the IP payload.
    #[error("bad UDP length")]
    BadUdpLength,
}

/// The addressing of one datagram: who sent it and to where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHeaders {
    /// Ethernet source.
    pub src_mac: [u8; 6],
    /// Ethernet destination.
    pub dst_mac: [u8; 6],
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
}

impl UdpHeaders {
    /// The headers of a reply: every source/destination pair swapped.
    pub fn reply(&self) -> UdpHeaders {
        UdpHeaders {
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            src_ip: self.dst_ip,
            dst_ip: self.src_ip,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    // Callers check lengths first; `get` keeps this panic-free regardless.
    match b.get(r) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}

fn ip4(b: &[u8], r: std::ops::Range<usize>) -> Ipv4Addr {
    match b.get(r) {
        Some(&[a, b, c, d]) => Ipv4Addr::new(a, b, c, d),
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

fn mac(b: &[u8], r: std::ops::Range<usize>) -> [u8; 6] {
    let mut m = [0; 6];
    if let Some(s) = b.get(r) {
        if s.len() == 6 {
            m.copy_from_slice(s);
        }
    }
    m
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Parses an Ethernet/IPv4/UDP frame. Returns the headers and the byte range of the UDP
/// payload within `frame` (trailing Ethernet padding excluded). The IPv4 header checksum is
/// verified when `verify_ip_checksum` (pass false when the NIC already checked it); the UDP
/// checksum is not verified.
pub fn parse(
    frame: &[u8],
    verify_ip_checksum: bool,
) -> Result<(UdpHeaders, std::ops::Range<usize>), FrameError> {
    if frame.len() < ETH_HDR_LEN {
        return Err(FrameError::Truncated);
    }
    if be16(frame, field::ETH_TYPE) != ETHERTYPE_IPV4 {
        return Err(FrameError::NotIpv4);
    }
    let ip = &frame[ETH_HDR_LEN..];
    if ip.len() < IPV4_HDR_LEN {
        return Err(FrameError::Truncated);
    }
    let ver_ihl = ip[field::IP_VER_IHL];
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    if ver_ihl >> 4 != 4 || ihl < IPV4_HDR_LEN {
        return Err(FrameError::BadIpHeader);
    }
    if ip.len() < ihl {
        return Err(FrameError::Truncated);
    }
    let total = usize::from(be16(ip, field::IP_TOTAL_LEN));
    if total < ihl {
        return Err(FrameError::BadIpHeader);
    }
    if total > ip.len() {
        return Err(FrameError::Truncated);
    }
    if verify_ip_checksum && checksum(&ip[..ihl]) != 0 {
        return Err(FrameError::BadIpChecksum);
    }
    // MF flag (0x2000) or a non-zero offset (low 13 bits).
    if be16(ip, field::IP_FRAG) & 0x3fff != 0 {
        return Err(FrameError::Fragment);
    }
    if ip[field::IP_PROTO] != IPPROTO_UDP {
        return Err(FrameError::NotUdp);
    }
    let udp = &ip[ihl..total];
    if udp.len() < UDP_HDR_LEN {
        return Err(FrameError::Truncated);
    }
    let udp_len = usize::from(be16(udp, field::UDP_LEN));
    if udp_len < UDP_HDR_LEN || udp_len > udp.len() {
        return Err(FrameError::BadUdpLength);
    }
    let headers = UdpHeaders {
        src_mac: mac(frame, field::ETH_SRC),
        dst_mac: mac(frame, field::ETH_DST),
        src_ip: ip4(ip, field::IP_SRC),
        dst_ip: ip4(ip, field::IP_DST),
        src_port: be16(udp, field::UDP_SRC),
        dst_port: be16(udp, field::UDP_DST),
    };
    let start = ETH_HDR_LEN + ihl + UDP_HDR_LEN;
    Ok((headers, start..ETH_HDR_LEN + ihl + udp_len))
}

/// Writes the Ethernet, IPv4 (no options, DF set) and UDP headers for a payload of
/// `payload_len` bytes into `buf[..HEADERS_LEN]`. The IPv4 checksum is computed unless
/// `ip_checksum_offload` (then it is left 0 for the NIC); the UDP checksum is 0 (none, as IPv4
/// allows). Returns false, writing nothing, if `buf` is shorter than `HEADERS_LEN` or the
/// payload does not fit the length fields.
pub fn emit(buf: &mut [u8], h: &UdpHeaders, payload_len: usize, ip_checksum_offload: bool) -> bool {
    let Some(hdr) = buf.get_mut(..HEADERS_LEN) else {
        return false;
    };
    let udp_len = UDP_HDR_LEN + payload_len;
    let ip_len = IPV4_HDR_LEN + udp_len;
    let (Ok(udp_len), Ok(ip_len)) = (u16::try_from(udp_len), u16::try_from(ip_len)) else {
        return false;
    };
    let (eth, rest) = hdr.split_at_mut(ETH_HDR_LEN);
    let (ip, udp) = rest.split_at_mut(IPV4_HDR_LEN);
    eth[field::ETH_DST].copy_from_slice(&h.dst_mac);
    eth[field::ETH_SRC].copy_from_slice(&h.src_mac);
    eth[field::ETH_TYPE].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());

    ip[field::IP_VER_IHL] = 0x45;
    ip[field::IP_TOS] = 0;
    ip[field::IP_TOTAL_LEN].copy_from_slice(&ip_len.to_be_bytes());
    ip[field::IP_ID].copy_from_slice(&0u16.to_be_bytes());
    ip[field::IP_FRAG].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip[field::IP_TTL] = DEFAULT_TTL;
    ip[field::IP_PROTO] = IPPROTO_UDP;
    ip[field::IP_CHECKSUM].copy_from_slice(&[0, 0]);
    ip[field::IP_SRC].copy_from_slice(&h.src_ip.octets());
    ip[field::IP_DST].copy_from_slice(&h.dst_ip.octets());
    if !ip_checksum_offload {
        let c = checksum(ip);
        ip[field::IP_CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    udp[field::UDP_SRC].copy_from_slice(&h.src_port.to_be_bytes());
    udp[field::UDP_DST].copy_from_slice(&h.dst_port.to_be_bytes());
    udp[field::UDP_LEN].copy_from_slice(&udp_len.to_be_bytes());
    udp[field::UDP_CHECKSUM].copy_from_slice(&[0, 0]);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> UdpHeaders {
        UdpHeaders {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 40000,
            dst_port: 7003,
        }
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; HEADERS_LEN + payload.len()];
        assert!(emit(&mut f, &headers(), payload.len(), false));
        f[HEADERS_LEN..].copy_from_slice(payload);
        f
    }

    #[test]
    fn emit_then_parse_round_trips() {
        let f = frame(b"hello naam");
        let (h, range) = parse(&f, true).unwrap();
        assert_eq!(h, headers());
        assert_eq!(&f[range], b"hello naam");
    }

    #[test]
    fn header_bytes_are_on_the_wire_layout() {
        let f = frame(b"xy");
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(f[14], 0x45);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 20 + 8 + 2);
        assert_eq!(f[14 + 9], 17);
        assert_eq!(&f[26..30], &[10, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 7003);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 10);
        // The checksum field makes the header sum to zero.
        assert_eq!(checksum(&f[14..34]), 0);
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3 example bytes: sum 0xddf2, checksum 0x220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        // Odd length: the last byte is padded with zero.
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn offloaded_checksum_is_left_zero() {
        let mut f = vec![0u8; HEADERS_LEN];
        assert!(emit(&mut f, &headers(), 0, true));
        assert_eq!(&f[24..26], &[0, 0]);
        assert_eq!(parse(&f, false).unwrap().1, HEADERS_LEN..HEADERS_LEN);
        assert_eq!(parse(&f, true), Err(FrameError::BadIpChecksum));
    }

    #[test]
    fn reply_swaps_every_pair() {
        let h = headers();
        let r = h.reply();
        assert_eq!((r.src_mac, r.dst_mac), (h.dst_mac, h.src_mac));
        assert_eq!((r.src_ip, r.dst_ip), (h.dst_ip, h.src_ip));
        assert_eq!((r.src_port, r.dst_port), (h.dst_port, h.src_port));
        assert_eq!(r.reply(), h);
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut f = frame(b"ab");
        f.resize(60, 0xee); // minimum Ethernet frame, padded
        let (_, range) = parse(&f, true).unwrap();
        assert_eq!(&f[range], b"ab");
    }

    #[test]
    fn malformed_frames_are_classified() {
        let good = frame(b"payload");
        assert_eq!(parse(&good[..10], true), Err(FrameError::Truncated));
        assert_eq!(parse(&good[..30], true), Err(FrameError::Truncated));
        assert_eq!(
            parse(&good[..HEADERS_LEN - 2], true),
            Err(FrameError::Truncated)
        );

        let mut f = good.clone();
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(parse(&f, true), Err(FrameError::NotIpv4));
        f[12..14].copy_from_slice(&0x8100u16.to_be_bytes()); // VLAN
        assert_eq!(parse(&f, true), Err(FrameError::NotIpv4));

        let mut f = good.clone();
        f[14] = 0x44; // IHL 4
        assert_eq!(parse(&f, false), Err(FrameError::BadIpHeader));
        f[14] = 0x65; // version 6
        assert_eq!(parse(&f, false), Err(FrameError::BadIpHeader));
        f[14] = 0x4f; // IHL 15: 60 bytes, past the end of this frame
        assert_eq!(parse(&f, false), Err(FrameError::Truncated));

        let mut f = good.clone();
        f[16..18].copy_from_slice(&10u16.to_be_bytes()); // total length < IHL
        assert_eq!(parse(&f, false), Err(FrameError::BadIpHeader));
        f[16..18].copy_from_slice(&1000u16.to_be_bytes()); // past the frame
        assert_eq!(parse(&f, false), Err(FrameError::Truncated));

        let mut f = good.clone();
        f[22] ^= 0xff; // TTL changed, checksum not updated
        assert_eq!(parse(&f, true), Err(FrameError::BadIpChecksum));

        let mut f = good.clone();
        f[23] = 6; // TCP
        assert_eq!(parse(&f, false), Err(FrameError::NotUdp));

        let mut f = good.clone();
        f[20..22].copy_from_slice(&0x2000u16.to_be_bytes()); // MF
        assert_eq!(parse(&f, false), Err(FrameError::Fragment));

        let mut f = good.clone();
        f[38..40].copy_from_slice(&200u16.to_be_bytes()); // UDP length past the end
        assert_eq!(parse(&f, true), Err(FrameError::BadUdpLength));
        f[38..40].copy_from_slice(&7u16.to_be_bytes()); // below the header
        assert_eq!(parse(&f, true), Err(FrameError::BadUdpLength));
    }

    #[test]
    fn emit_refuses_short_buffers_and_huge_payloads() {
        let mut short = [0u8; HEADERS_LEN - 1];
        assert!(!emit(&mut short, &headers(), 0, false));
        assert_eq!(short, [0u8; HEADERS_LEN - 1]);
        let mut buf = [0u8; HEADERS_LEN];
        assert!(!emit(&mut buf, &headers(), 70_000, false));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                              verify in proptest::bool::ANY) {
            if let Ok((_, range)) = parse(&bytes, verify) {
                proptest::prop_assert!(range.start <= range.end && range.end <= bytes.len());
            }
        }

        #[test]
        fn parse_inverts_emit(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                              sport in proptest::num::u16::ANY, dport in proptest::num::u16::ANY) {
            let mut h = headers();
            h.src_port = sport;
            h.dst_port = dport;
            let mut f = vec![0u8; HEADERS_LEN + payload.len()];
            proptest::prop_assert!(emit(&mut f, &h, payload.len(), false));
            f[HEADERS_LEN..].copy_from_slice(&payload);
            let (got, range) = parse(&f, true).unwrap();
            proptest::prop_assert_eq!(got, h);
            proptest::prop_assert_eq!(&f[range], &payload[..]);
        }
    }
}
