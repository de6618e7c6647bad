//! The tree's bytes: the Rust mirror of `handlers/include/btree.h` (the test
//! `btree_layout` compiles static assertions generated from these constants against the
//! header), node images, message arguments and replies.

use naam_core::abi::OUT_MAX;

/// Keys per node (`BTREE_FANOUT`); internal nodes have up to `FANOUT + 1` children.
pub const FANOUT: usize = 16;
/// Bytes per node (`BTREE_NODE_SIZE`).
pub const NODE_SIZE: usize = 320;
/// Bytes of the superblock at offset 0 (`BTREE_SUPER_SIZE`); nodes follow it.
pub const SUPER_SIZE: usize = 64;
/// `BTREE_MAGIC`: "NAAMBT01" little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"NAAMBT01");

/// Superblock field offsets (`BTREE_SUPER_*`).
pub mod sup {
    pub const MAGIC: usize = 0;
    /// The root node's offset: the word a handler reads when `args.root == 0`.
    pub const ROOT: usize = 8;
    pub const ALLOC: usize = 16;
    pub const NODE_SIZE: usize = 24;
    pub const FANOUT: usize = 28;
    pub const HEIGHT: usize = 32;
    pub const N_KEYS: usize = 40;
    /// `[48, 64)`: what the tree's values were made with (the seed, then a tag saying it is
    /// there), written by whoever loads it; no handler reads it.
    pub const FILLED_WITH: usize = 48;
}

/// Node field offsets (`BTREE_NODE_*`).
pub mod node {
    pub const VERSION: usize = 0;
    pub const LEVEL: usize = 8;
    pub const COUNT: usize = 12;
    pub const HIGH: usize = 16;
    pub const NEXT: usize = 24;
    pub const KEYS: usize = 32;
    pub const VALS: usize = 160;
}

/// Bytes of [`Args`] (`sizeof(struct btree_args)`).
pub const ARGS_LEN: usize = 24;
/// Most pairs one SCAN returns (`BTREE_SCAN_MAX`).
pub const SCAN_MAX: usize = 48;
/// `BTREE_SCAN_END`: the scan reached the end of the tree.
pub const SCAN_END: u32 = 1;
/// `BTREE_MAX_STEPS`: the step budget the handlers plan for.
pub const MAX_STEPS: u32 = 32;
/// `BTREE_LEVEL_ANY`.
pub const LEVEL_ANY: u32 = u32::MAX;
/// Bytes of the LOOKUP reply.
pub const LOOKUP_REPLY_LEN: usize = 16;
/// Bytes of the SCAN reply header.
pub const SCAN_HEADER_LEN: usize = 8;
/// `BTREE_DATA_VERSION_AFTER`: where the re-read version lands in `ctx.data`.
pub const DATA_VERSION_AFTER: usize = NODE_SIZE;

// The handler writes a whole leaf from the last slot a reply can start a leaf at.
const _: () = assert!(SCAN_HEADER_LEN + (SCAN_MAX - 1 + FANOUT) * 16 <= OUT_MAX);
const _: () = assert!(node::VALS + (FANOUT + 1) * 8 <= NODE_SIZE);

/// Abort codes of the handlers (`BTREE_E_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AbortCode {
    /// Arguments shorter than [`Args`], or a SCAN count outside `1..=SCAN_MAX`.
    Args = 1,
    /// A stable node that breaks the layout's invariants.
    Corrupt = 2,
    /// LOOKUP only: the step budget ran out (writer contention).
    Busy = 3,
}

impl AbortCode {
    pub fn from_u32(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Args),
            2 => Some(Self::Corrupt),
            3 => Some(Self::Busy),
            _ => None,
        }
    }
}

/// Offset of node `index` in the region (nodes follow the superblock).
pub const fn node_offset(index: u64) -> u64 {
    SUPER_SIZE as u64 + index * NODE_SIZE as u64
}

/// A node's contents without its version word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub level: u32,
    pub count: u32,
    pub high: u64,
    pub next: u64,
    pub keys: [u64; FANOUT],
    pub vals: [u64; FANOUT + 1],
}

impl Node {
    /// An empty node of `level` covering keys up to `high`.
    pub const fn empty(level: u32, high: u64, next: u64) -> Self {
        Self {
            level,
            count: 0,
            high,
            next,
            keys: [0; FANOUT],
            vals: [0; FANOUT + 1],
        }
    }

    pub fn is_leaf(&self) -> bool {
        self.level == 0
    }

    /// The keys in use.
    pub fn keys(&self) -> &[u64] {
        &self.keys[..(self.count as usize).min(FANOUT)]
    }

    /// The number of keys `<= key` (the child to follow, or one past the leaf slot of `key`).
    pub fn upper_bound(&self, key: u64) -> usize {
        self.keys().partition_point(|&k| k <= key)
    }

    /// The number of keys `< key` (the leaf slot where `key` is or would go).
    pub fn lower_bound(&self, key: u64) -> usize {
        self.keys().partition_point(|&k| k < key)
    }

    /// The node's bytes after the version word: `NODE_SIZE - 8` bytes.
    pub fn encode_body(&self, out: &mut [u8; NODE_SIZE - 8]) {
        out.fill(0);
        let mut put =
            |off: usize, bytes: &[u8]| out[off - 8..off - 8 + bytes.len()].copy_from_slice(bytes);
        put(node::LEVEL, &self.level.to_le_bytes());
        put(node::COUNT, &self.count.to_le_bytes());
        put(node::HIGH, &self.high.to_le_bytes());
        put(node::NEXT, &self.next.to_le_bytes());
        for (i, k) in self.keys.iter().enumerate() {
            put(node::KEYS + 8 * i, &k.to_le_bytes());
        }
        for (i, v) in self.vals.iter().enumerate() {
            put(node::VALS + 8 * i, &v.to_le_bytes());
        }
    }

    /// Decodes a whole node image (version word included, and ignored).
    pub fn decode(image: &[u8; NODE_SIZE]) -> Self {
        let u64_at =
            |off: usize| u64::from_le_bytes(image[off..off + 8].try_into().expect("8 bytes"));
        let u32_at =
            |off: usize| u32::from_le_bytes(image[off..off + 4].try_into().expect("4 bytes"));
        let mut n = Node::empty(u32_at(node::LEVEL), u64_at(node::HIGH), u64_at(node::NEXT));
        n.count = u32_at(node::COUNT);
        for i in 0..FANOUT {
            n.keys[i] = u64_at(node::KEYS + 8 * i);
        }
        for i in 0..=FANOUT {
            n.vals[i] = u64_at(node::VALS + 8 * i);
        }
        n
    }
}

/// The arguments of both handlers (`struct btree_args`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Args {
    pub region: u32,
    /// SCAN: pairs wanted, `1..=SCAN_MAX`; LOOKUP: 0.
    pub count: u32,
    /// The root node's offset, or 0 to have the handler read it from the superblock (one step
    /// more). A stale root stays correct: nodes are never freed and the B-link `next` pointers
    /// lead from an old root to the keys right of it.
    pub root: u64,
    /// LOOKUP: the key; SCAN: the first key wanted (inclusive).
    pub key: u64,
}

impl Args {
    pub fn lookup(region: u32, key: u64) -> Self {
        Self {
            region,
            count: 0,
            root: 0,
            key,
        }
    }

    pub fn scan(region: u32, from: u64, count: u32) -> Self {
        Self {
            region,
            count,
            root: 0,
            key: from,
        }
    }

    /// Starts at `root` instead of reading the superblock.
    pub fn with_root(self, root: u64) -> Self {
        Self { root, ..self }
    }

    pub fn to_bytes(&self) -> [u8; ARGS_LEN] {
        let mut b = [0u8; ARGS_LEN];
        b[0..4].copy_from_slice(&self.region.to_le_bytes());
        b[4..8].copy_from_slice(&self.count.to_le_bytes());
        b[8..16].copy_from_slice(&self.root.to_le_bytes());
        b[16..24].copy_from_slice(&self.key.to_le_bytes());
        b
    }
}

/// A reply that does not have the shape the handlers produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("LOOKUP reply is {len} bytes, expected {LOOKUP_REPLY_LEN}")]
    LookupLen { len: usize },
    #[error("LOOKUP reply has found = {found}, expected 0 or 1")]
    LookupFlag { found: u64 },
    #[error("SCAN reply is {len} bytes, expected {expected} for {n} pairs")]
    ScanLen { len: usize, n: u32, expected: usize },
}

/// Decodes a LOOKUP reply: the value, or `None` when the key is absent.
pub fn parse_lookup_reply(out: &[u8]) -> Result<Option<u64>, ReplyError> {
    let Ok(b) = <&[u8; LOOKUP_REPLY_LEN]>::try_from(out) else {
        return Err(ReplyError::LookupLen { len: out.len() });
    };
    let found = u64::from_le_bytes(b[0..8].try_into().expect("8 bytes"));
    let value = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
    match found {
        0 => Ok(None),
        1 => Ok(Some(value)),
        found => Err(ReplyError::LookupFlag { found }),
    }
}

/// A decoded SCAN reply, borrowing the reply bytes.
#[derive(Debug, Clone, Copy)]
pub struct ScanReply<'a> {
    pairs: &'a [u8],
    /// No key follows the last pair returned. When false and fewer pairs came back than were
    /// asked for, the step budget ran out: continue after the last key.
    pub end: bool,
}

impl<'a> ScanReply<'a> {
    pub fn parse(out: &'a [u8]) -> Result<Self, ReplyError> {
        if out.len() < SCAN_HEADER_LEN {
            return Err(ReplyError::ScanLen {
                len: out.len(),
                n: 0,
                expected: SCAN_HEADER_LEN,
            });
        }
        let n = u32::from_le_bytes(out[0..4].try_into().expect("4 bytes"));
        let flags = u32::from_le_bytes(out[4..8].try_into().expect("4 bytes"));
        let expected = SCAN_HEADER_LEN + n as usize * 16;
        if out.len() != expected {
            return Err(ReplyError::ScanLen {
                len: out.len(),
                n,
                expected,
            });
        }
        Ok(Self {
            pairs: &out[SCAN_HEADER_LEN..],
            end: flags & SCAN_END != 0,
        })
    }

    pub fn len(&self) -> usize {
        self.pairs.len() / 16
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The (key, value) pairs in key order.
    pub fn pairs(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.pairs.chunks_exact(16).map(|c| {
            (
                u64::from_le_bytes(c[0..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(c[8..16].try_into().expect("8 bytes")),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_round_trips_through_its_image() {
        let mut n = Node::empty(3, 99, 640);
        n.count = 2;
        n.keys[0] = 5;
        n.keys[1] = 7;
        n.vals[0] = 1000;
        n.vals[2] = 3000;
        let mut body = [0u8; NODE_SIZE - 8];
        n.encode_body(&mut body);
        let mut image = [0u8; NODE_SIZE];
        image[8..].copy_from_slice(&body);
        assert_eq!(Node::decode(&image), n);
        assert_eq!(n.upper_bound(5), 1);
        assert_eq!(n.lower_bound(5), 0);
        assert_eq!(n.upper_bound(100), 2);
    }

    #[test]
    fn replies_are_checked() {
        assert_eq!(parse_lookup_reply(&[0; 16]), Ok(None));
        let mut r = [0u8; 16];
        r[0] = 1;
        r[8] = 42;
        assert_eq!(parse_lookup_reply(&r), Ok(Some(42)));
        r[0] = 2;
        assert!(parse_lookup_reply(&r).is_err());
        assert!(parse_lookup_reply(&[0; 8]).is_err());
        let mut s = vec![0u8; 8 + 32];
        s[0] = 2;
        s[4] = 1;
        s[8] = 9;
        let reply = ScanReply::parse(&s).expect("valid");
        assert!(reply.end);
        assert_eq!(reply.pairs().collect::<Vec<_>>(), vec![(9, 0), (0, 0)]);
        assert!(ScanReply::parse(&s[..24]).is_err());
    }
}
