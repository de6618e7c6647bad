//! The load: a fixed set of MICA GET requests for keys the host agent pre-filled, built once
//! (payloads, and whole Ethernet/IPv4/UDP frames for DPDK ports), and the check of what comes
//! back.
//!
//! Request `j` carries request id `j`, so a reply names the request it answers and the check
//! knows which key's value to expect without any per-message state.

use std::net::{Ipv4Addr, SocketAddrV4};

use naam_core::wire::{
    AmFlags, AmRequestRepr, AmStatus, Body, HeaderPacket, Kind, Location, Message, HEADER_LEN,
};
use naam_dataplane::port::frame::{self, UdpHeaders, HEADERS_LEN};
use naam_handlers::mica::{key_for, value_for, MicaArgs, MicaGeometry, MicaReply};

/// Offload id, class and tenant of the bundled `mica_get` (docs/runtime.md).
pub const MICA_GET_OFFLOAD: u32 = 0;
pub const MICA_GET_CLASS: u16 = 0;
pub const TENANT: u32 = 1;

/// The generator's address on an Ethernet link (memif); the server's base port is
/// [`LINK_SERVER`] (the dataplane's `--naam-addr`).
pub const LINK_CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 9000);
pub const LINK_SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7000);

/// The MICA table the requests address: its geometry and how it was filled (`describe(mica)`
/// of the deployment under test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableSpec {
    pub index_region: u32,
    pub log_region: u32,
    pub buckets: u64,
    pub overflow: u64,
    pub log_size: u64,
    /// The table's mode (describe's `lossless`; older servers: lossy).
    #[serde(default)]
    pub lossless: bool,
    /// Keys `key_for(seed, 0 .. keys)` are in the table.
    pub keys: u64,
    /// With values `value_for(seed, i)` of this many bytes.
    pub value_size: usize,
    pub seed: u64,
    /// The data-path capability the requests carry (docs/security.md); 0 for echo runs,
    /// whose servers check nothing.
    pub capability: u64,
}

impl TableSpec {
    /// The table a host agent builds with `--mica-keys keys --value-size value_size` and
    /// seed 1 when nobody asks it (for the echo runs, whose servers never read it).
    pub fn assumed(keys: u64, value_size: usize) -> Self {
        let g = MicaGeometry::for_keys(keys, value_size);
        Self {
            index_region: g.index_region,
            log_region: g.log_region,
            buckets: g.bucket_count,
            overflow: g.overflow_count,
            log_size: g.log_size,
            lossless: g.lossless,
            keys,
            value_size,
            seed: 1,
            capability: 0,
        }
    }

    /// From the parameters of `describe(mica)`.
    pub fn from_describe(params: &[(String, u64)]) -> Result<Self, String> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|&(_, v)| v)
                .ok_or_else(|| format!("describe(mica) has no {name}"))
        };
        Ok(Self {
            index_region: get("index_region")? as u32,
            log_region: get("log_region")? as u32,
            buckets: get("buckets")?,
            overflow: get("overflow")?,
            log_size: get("log_size")?,
            lossless: get("lossless").is_ok_and(|v| v != 0),
            keys: get("keys")?,
            value_size: get("value_size")? as usize,
            seed: get("seed")?,
            capability: 0,
        })
    }

    pub fn geometry(&self) -> MicaGeometry {
        MicaGeometry {
            index_region: self.index_region,
            log_region: self.log_region,
            bucket_count: self.buckets,
            overflow_count: self.overflow,
            log_size: self.log_size,
            lossless: self.lossless,
        }
    }
}

/// What a correct answer to request `j` looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Expect {
    /// The request itself, unchanged (an echo or `dpdk-testpmd` io forwarding).
    Echo,
    /// A MICA GET reply executed at `at`, carrying the key's value.
    Value { at: u8 },
}

/// The requests, built once; sending copies them, never builds them.
pub struct RequestSet {
    table: TableSpec,
    /// Key index of request `j`.
    keys: Vec<u64>,
    payloads: Vec<Vec<u8>>,
}

impl RequestSet {
    /// `count` GETs (at least one) for keys spread evenly over the table's key set, each
    /// asking for the table's value size up front (one handler step for a hit).
    pub fn mica_get(table: TableSpec, count: usize) -> Result<Self, String> {
        let count = count.max(1);
        let g = table.geometry();
        g.validate().map_err(|e| e.to_string())?;
        let mut keys = Vec::with_capacity(count);
        let mut payloads = Vec::with_capacity(count);
        for j in 0..count as u64 {
            let i = j * table.keys.max(1) / count as u64;
            let key = key_for(table.seed, i);
            let args =
                MicaArgs::get_expecting(&g, &key, table.value_size).map_err(|e| e.to_string())?;
            let msg = Message::new(
                j,
                MICA_GET_CLASS,
                Body::AmRequest(AmRequestRepr {
                    offload: MICA_GET_OFFLOAD,
                    tenant: TENANT,
                    capability: table.capability,
                    flags: AmFlags::empty(),
                    args: args.as_bytes(),
                }),
            );
            let mut buf = vec![0u8; msg.buffer_len()];
            msg.emit(&mut buf).map_err(|e| e.to_string())?;
            keys.push(i);
            payloads.push(buf);
        }
        Ok(Self {
            table,
            keys,
            payloads,
        })
    }

    pub fn len(&self) -> usize {
        self.payloads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }

    /// The datagram of request `j`.
    pub fn payload(&self, j: usize) -> &[u8] {
        &self.payloads[j % self.payloads.len()]
    }

    /// Every request as a whole Ethernet/IPv4/UDP frame from `src` to `dst` (class 0's
    /// port), IPv4 checksum filled in.
    pub fn frames(
        &self,
        src: (SocketAddrV4, [u8; 6]),
        dst: (SocketAddrV4, [u8; 6]),
    ) -> Vec<Vec<u8>> {
        let h = UdpHeaders {
            src_mac: src.1,
            dst_mac: dst.1,
            src_ip: *src.0.ip(),
            dst_ip: *dst.0.ip(),
            src_port: src.0.port(),
            dst_port: dst.0.port() + MICA_GET_CLASS,
        };
        self.payloads
            .iter()
            .map(|p| {
                let mut f = vec![0u8; HEADERS_LEN + p.len()];
                // Payloads are ~100 bytes: the length fields always fit.
                let ok = frame::emit(&mut f, &h, p.len(), false);
                debug_assert!(ok);
                f[HEADERS_LEN..].copy_from_slice(p);
                f
            })
            .collect()
    }

    /// The cheap test every reply gets: a NAAM datagram of the kind `expect` wants.
    #[inline]
    pub fn quick_ok(payload: &[u8], expect: Expect) -> bool {
        if payload.len() < HEADER_LEN {
            return false;
        }
        let h = HeaderPacket::new_unchecked(payload);
        let want = match expect {
            Expect::Echo => Kind::AmRequest,
            Expect::Value { .. } => Kind::AmReply,
        };
        h.magic() == naam_core::wire::MAGIC && h.kind() == want as u8
    }

    /// The full test of a sampled reply.
    pub fn check(&self, payload: &[u8], expect: Expect) -> Result<(), String> {
        let msg = Message::parse(payload).map_err(|e| format!("unparsable reply: {e}"))?;
        let j = usize::try_from(msg.request_id)
            .ok()
            .filter(|&j| j < self.len())
            .ok_or_else(|| format!("request id {} was never sent", msg.request_id))?;
        match expect {
            Expect::Echo => {
                if payload != self.payloads[j] {
                    return Err(format!("echo of request {j} differs from what was sent"));
                }
            }
            Expect::Value { at } => {
                let Body::AmReply(r) = msg.body else {
                    return Err(format!("request {j}: a {:?}, not an AM reply", msg.kind()));
                };
                if r.status != AmStatus::Done {
                    return Err(format!("request {j}: {:?}", r.status));
                }
                if r.executed_at as u8 != at {
                    return Err(format!(
                        "request {j}: executed at {:?}, expected {:?}",
                        r.executed_at,
                        Location::from_u8(at)
                    ));
                }
                let mut want = vec![0u8; self.table.value_size];
                value_for(self.table.seed, self.keys[j], &mut want);
                match MicaReply::parse(r.output) {
                    Ok(MicaReply::Value(v)) if v == want.as_slice() => {}
                    Ok(MicaReply::Value(_)) => {
                        return Err(format!("request {j}: wrong value for key {}", self.keys[j]))
                    }
                    Ok(other) => return Err(format!("request {j}: {other:?}")),
                    Err(e) => return Err(format!("request {j}: {e}")),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use naam_core::wire::AmReplyRepr;

    fn table() -> TableSpec {
        TableSpec::assumed(1000, 64)
    }

    fn reply(set: &RequestSet, j: u64, value: &[u8], at: Location) -> Vec<u8> {
        let mut out = vec![0u8; 8 + value.len()];
        // MICA reply: status OK (0), value length, then the value.
        out[4..8].copy_from_slice(&(value.len() as u32).to_le_bytes());
        out[8..].copy_from_slice(value);
        assert!(matches!(MicaReply::parse(&out), Ok(MicaReply::Value(_))));
        let msg = Message::new(
            j,
            MICA_GET_CLASS,
            Body::AmReply(AmReplyRepr {
                status: AmStatus::Done,
                executed_at: at,
                steps: 1,
                hint: None,
                output: &out,
            }),
        );
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf).unwrap();
        let _ = set;
        buf
    }

    #[test]
    fn requests_are_mica_gets_of_keys_in_the_table() {
        let t = table();
        let set = RequestSet::mica_get(t, 10).unwrap();
        assert_eq!(set.len(), 10);
        for j in 0..10 {
            let m = Message::parse(set.payload(j)).unwrap();
            assert_eq!(m.request_id, j as u64);
            assert_eq!(m.class, MICA_GET_CLASS);
            let Body::AmRequest(r) = m.body else {
                panic!("not a request")
            };
            assert_eq!((r.offload, r.tenant), (MICA_GET_OFFLOAD, TENANT));
            let key = key_for(t.seed, j as u64 * 100);
            let want = MicaArgs::get_expecting(&t.geometry(), &key, 64).unwrap();
            assert_eq!(r.args, want.as_bytes());
        }
    }

    #[test]
    fn frames_carry_the_payload_to_class_zero() {
        let set = RequestSet::mica_get(table(), 3).unwrap();
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 9000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7000);
        let frames = set.frames((src, [2, 0, 0, 0, 0, 1]), (dst, [0xff; 6]));
        for (j, f) in frames.iter().enumerate() {
            let (h, range) = frame::parse(f, true).unwrap();
            assert_eq!((h.src_port, h.dst_port), (9000, 7000));
            assert_eq!(&f[range], set.payload(j));
        }
    }

    #[test]
    fn echo_check_accepts_only_what_was_sent() {
        let set = RequestSet::mica_get(table(), 4).unwrap();
        let p = set.payload(2).to_vec();
        assert!(RequestSet::quick_ok(&p, Expect::Echo));
        assert!(!RequestSet::quick_ok(&p, Expect::Value { at: 1 }));
        assert!(!RequestSet::quick_ok(&p[..10], Expect::Echo));
        set.check(&p, Expect::Echo).unwrap();
        let mut bad = p.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(set.check(&bad, Expect::Echo).is_err());
    }

    #[test]
    fn value_check_wants_the_keys_value_from_the_right_place() {
        let t = table();
        let set = RequestSet::mica_get(t, 4).unwrap();
        let nic = Expect::Value {
            at: Location::Nic as u8,
        };
        let mut v = vec![0u8; 64];
        value_for(t.seed, 500, &mut v); // request 2 asks for key 2 * 1000 / 4
        let good = reply(&set, 2, &v, Location::Nic);
        assert!(RequestSet::quick_ok(&good, nic));
        set.check(&good, nic).unwrap();
        // Another key's value, the wrong place, an unknown request id.
        let other = reply(&set, 1, &v, Location::Nic);
        assert!(set.check(&other, nic).unwrap_err().contains("wrong value"));
        let host = reply(&set, 2, &v, Location::Host);
        assert!(set.check(&host, nic).unwrap_err().contains("executed at"));
        let unknown = reply(&set, 9, &v, Location::Nic);
        assert!(set.check(&unknown, nic).unwrap_err().contains("never sent"));
        assert!(set.check(b"garbage", nic).is_err());
    }

    #[test]
    fn describe_parameters_give_the_table() {
        let t = table();
        let params: Vec<(String, u64)> = [
            ("index_region", t.index_region as u64),
            ("log_region", t.log_region as u64),
            ("buckets", t.buckets),
            ("overflow", t.overflow),
            ("log_size", t.log_size),
            ("keys", t.keys),
            ("value_size", t.value_size as u64),
            ("seed", t.seed),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(TableSpec::from_describe(&params), Ok(t));
        assert!(TableSpec::from_describe(&params[1..])
            .unwrap_err()
            .contains("index_region"));
    }
}
