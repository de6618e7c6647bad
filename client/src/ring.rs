//! Consistent hashing: a ring of virtual nodes, so adding a server moves only about
//! `1 / servers` of the keys.

/// A hash ring over `servers` servers with `vnodes` virtual nodes each.
#[derive(Debug, Clone)]
pub struct HashRing {
    /// (point, server), sorted by point.
    points: Vec<(u64, usize)>,
    servers: usize,
}

/// Default virtual nodes per server: enough for an even spread of keys over a few servers.
pub const DEFAULT_VNODES: usize = 128;

/// SplitMix64's finaliser: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 64-bit hash keys are placed by: FNV-1a of the bytes, then mixed.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The ring position of virtual node `v` of server `s`.
fn point(s: usize, v: usize) -> u64 {
    mix(mix(s as u64 ^ 0x5ee7_5ee7_5ee7_5ee7).wrapping_add(v as u64))
}

impl HashRing {
    pub fn new(servers: usize, vnodes: usize) -> Self {
        let mut points: Vec<(u64, usize)> = (0..servers)
            .flat_map(|s| (0..vnodes.max(1)).map(move |v| (point(s, v), s)))
            .collect();
        points.sort_unstable();
        Self { points, servers }
    }

    pub fn servers(&self) -> usize {
        self.servers
    }

    /// The server owning `key`: the first point at or after the key's hash, wrapping.
    pub fn server_for(&self, key: &[u8]) -> usize {
        self.server_for_hash(key_hash(key))
    }

    pub fn server_for_hash(&self, h: u64) -> usize {
        if self.points.is_empty() {
            return 0;
        }
        let i = self.points.partition_point(|&(p, _)| p < h);
        self.points[i % self.points.len()].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_and_stay() {
        let ring = HashRing::new(4, DEFAULT_VNODES);
        let mut counts = [0usize; 4];
        for i in 0..40_000u64 {
            let k = i.to_le_bytes();
            let s = ring.server_for(&k);
            assert_eq!(
                s,
                ring.server_for(&k),
                "the same key maps to the same server"
            );
            counts[s] += 1;
        }
        for c in counts {
            assert!((5_000..15_000).contains(&c), "uneven spread {counts:?}");
        }
    }

    #[test]
    fn adding_a_server_moves_few_keys() {
        let a = HashRing::new(3, DEFAULT_VNODES);
        let b = HashRing::new(4, DEFAULT_VNODES);
        let n = 20_000u64;
        let moved = (0..n)
            .filter(|i| {
                let k = i.to_le_bytes();
                let (x, y) = (a.server_for(&k), b.server_for(&k));
                assert!(x == y || y == 3, "a key moved between old servers");
                x != y
            })
            .count();
        assert!(moved < (n as usize) * 2 / 5, "{moved} of {n} keys moved");
        assert!(moved > 0);
    }
}
