//! The host side of the tree: creating it in a region, bulk loading sorted keys, and inserting
//! while readers (handlers, the native reference) run.
//!
//! There is exactly one writer, the [`BTree`] value (the host agent owns it); readers need
//! only the region. Every change of a reachable node follows the seqlock protocol of
//! `btree.h`: version + 1 (odd), the body, version + 2 (even). A split writes the new right
//! node completely before anything links to it, then shortens the left node (lowering its
//! `high` and pointing `next` at the new node), then tells the parent: a reader that comes
//! down from the old parent finds its key above the left node's `high` and moves right.

use super::layout::{node, sup, Node, FANOUT, MAGIC, NODE_SIZE, SUPER_SIZE};
use naam_core::memory::RegionMem;

/// Height limit of a tree (a tree of fanout 2 with 2^31 keys is still below it).
pub const MAX_HEIGHT: usize = 32;

/// Shape of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BTreeConfig {
    /// Keys a node may hold before it splits, `2..=FANOUT`. Smaller values give deeper trees
    /// on the same layout (tests use 2 or 3); the handlers read `count` and do not care.
    pub max_keys: usize,
    /// Keys per node written by [`BTree::bulk_load`], `1..=max_keys`.
    pub fill: usize,
}

impl Default for BTreeConfig {
    /// Full 16-key nodes: the densest tree, what lookup benchmarks use.
    fn default() -> Self {
        Self {
            max_keys: FANOUT,
            fill: FANOUT,
        }
    }
}

impl BTreeConfig {
    pub fn new(max_keys: usize, fill: usize) -> Result<Self, BTreeError> {
        if !(2..=FANOUT).contains(&max_keys) || !(1..=max_keys).contains(&fill) {
            return Err(BTreeError::Config { max_keys, fill });
        }
        Ok(Self { max_keys, fill })
    }

    /// Nodes [`BTree::bulk_load`] writes for `n` keys.
    pub fn bulk_nodes(&self, n: u64) -> u64 {
        let mut level = n.div_ceil(self.fill as u64).max(1);
        let mut total = level;
        while level > 1 {
            level = level.div_ceil(self.fill as u64 + 1);
            total += level;
        }
        total
    }

    /// A region length that holds `n` bulk-loaded keys plus `inserts` later inserts: an insert
    /// splits at most one leaf, and a tree has no more internal nodes than leaves, so it adds
    /// at most two nodes (plus one new root).
    pub fn region_len(&self, n: u64, inserts: u64) -> usize {
        let nodes = self.bulk_nodes(n) + 2 * inserts + 1;
        SUPER_SIZE + nodes as usize * NODE_SIZE
    }
}

/// Why a tree operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BTreeError {
    #[error(
        "bad tree config: max_keys {max_keys} must be in 2..={FANOUT}, fill {fill} in 1..=max_keys"
    )]
    Config { max_keys: usize, fill: usize },
    #[error("region of {len} bytes is too small: {needed} bytes needed")]
    RegionFull { len: usize, needed: u64 },
    #[error("bulk-load keys must be strictly increasing: {key} came after {prev}")]
    Unsorted { prev: u64, key: u64 },
    #[error("region holds no tree (magic {found:#x})")]
    NotATree { found: u64 },
    #[error("tree is {height} levels high, the limit is {MAX_HEIGHT}")]
    TooHigh { height: usize },
    #[error("node at offset {offset} is corrupt: {reason}")]
    Corrupt { offset: u64, reason: &'static str },
}

/// The tree's single writer.
#[derive(Debug)]
pub struct BTree {
    mem: RegionMem,
    cfg: BTreeConfig,
    root: u64,
    alloc: u64,
    height: usize,
    n_keys: u64,
}

impl BTree {
    /// Writes an empty tree (one empty leaf as the root) into `mem`.
    pub fn create(mem: RegionMem, cfg: BTreeConfig) -> Result<Self, BTreeError> {
        Self::bulk_load(mem, cfg, core::iter::empty())
    }

    /// Writes a tree holding `pairs` (strictly increasing keys) into `mem` in one pass: leaves
    /// left to right, then each level above them. O(n) time; memory for one offset and key
    /// per node of the level being built.
    pub fn bulk_load(
        mem: RegionMem,
        cfg: BTreeConfig,
        pairs: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<Self, BTreeError> {
        BTreeConfig::new(cfg.max_keys, cfg.fill)?;
        let mut t = Self {
            mem,
            cfg,
            root: 0,
            alloc: SUPER_SIZE as u64,
            height: 1,
            n_keys: 0,
        };
        t.ensure_len(SUPER_SIZE as u64)?;
        // (low key, offset) of every node of the level just built.
        let mut level: Vec<(u64, u64)> = Vec::new();
        let mut leaf = Node::empty(0, u64::MAX, 0);
        let mut leaf_off = t.alloc_node()?;
        let mut prev: Option<u64> = None;
        for (key, val) in pairs {
            if let Some(p) = prev.filter(|&p| p >= key) {
                return Err(BTreeError::Unsorted { prev: p, key });
            }
            prev = Some(key);
            if leaf.count as usize == cfg.fill {
                // The next leaf starts at `key`; leaves are allocated back to back.
                let next_off = t.alloc_node()?;
                leaf.high = key - 1;
                leaf.next = next_off;
                t.write_fresh(leaf_off, &leaf);
                level.push((leaf.keys[0], leaf_off));
                leaf = Node::empty(0, u64::MAX, 0);
                leaf_off = next_off;
            }
            leaf.keys[leaf.count as usize] = key;
            leaf.vals[leaf.count as usize] = val;
            leaf.count += 1;
            t.n_keys += 1;
        }
        t.write_fresh(leaf_off, &leaf);
        level.push((leaf.keys[0], leaf_off));

        let mut lvl = 0u32;
        while level.len() > 1 {
            lvl += 1;
            let children = level.len();
            let nodes = children.div_ceil(cfg.fill + 1);
            let first = t.alloc;
            t.ensure_len(first + (nodes * NODE_SIZE) as u64)?;
            t.alloc += (nodes * NODE_SIZE) as u64;
            let mut up = Vec::with_capacity(nodes);
            // Spread the children evenly so that no node is left nearly empty.
            let mut start = 0;
            for i in 0..nodes {
                let end = children * (i + 1) / nodes;
                let group = &level[start..end];
                let off = first + (i * NODE_SIZE) as u64;
                let last = i + 1 == nodes;
                let mut n = Node::empty(lvl, if last { u64::MAX } else { level[end].0 - 1 }, 0);
                if !last {
                    n.next = off + NODE_SIZE as u64;
                }
                n.count = (group.len() - 1) as u32;
                for (j, &(low, child)) in group.iter().enumerate() {
                    n.vals[j] = child;
                    if j > 0 {
                        n.keys[j - 1] = low;
                    }
                }
                t.write_fresh(off, &n);
                up.push((group[0].0, off));
                start = end;
            }
            level = up;
            t.height += 1;
            if t.height > MAX_HEIGHT {
                return Err(BTreeError::TooHigh { height: t.height });
            }
        }
        t.root = level[0].1;
        t.write_super();
        Ok(t)
    }

    /// Takes over the tree already in `mem` (after a restart of the writer).
    pub fn open(mem: RegionMem) -> Result<Self, BTreeError> {
        let word = |off: usize| mem.load_u64(off as u64).unwrap_or(0);
        let magic = word(sup::MAGIC);
        if magic != MAGIC {
            return Err(BTreeError::NotATree { found: magic });
        }
        let fanout = (word(sup::NODE_SIZE) >> 32) as usize;
        let cfg = BTreeConfig::new(fanout, fanout)?;
        let (root, alloc, height, n_keys) = (
            word(sup::ROOT),
            word(sup::ALLOC),
            word(sup::HEIGHT) as usize,
            word(sup::N_KEYS),
        );
        Ok(Self {
            mem,
            cfg,
            root,
            alloc,
            height,
            n_keys,
        })
    }

    pub fn mem(&self) -> &RegionMem {
        &self.mem
    }

    pub fn config(&self) -> BTreeConfig {
        self.cfg
    }

    /// Offset of the root node (what [`super::Args::with_root`] takes).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Levels, leaves included.
    pub fn height(&self) -> usize {
        self.height
    }

    pub fn len(&self) -> u64 {
        self.n_keys
    }

    pub fn is_empty(&self) -> bool {
        self.n_keys == 0
    }

    /// Bytes of the region in use.
    pub fn used(&self) -> u64 {
        self.alloc
    }

    /// Inserts `key` or updates its value; returns the previous value. Concurrent readers see
    /// either the old or the new state of every node they use, never a mix.
    pub fn insert(&mut self, key: u64, val: u64) -> Result<Option<u64>, BTreeError> {
        // Reserve room for the worst case (a split on every level and a new root) first, so
        // a full region fails before any node changes.
        self.ensure_len(self.alloc + ((self.height + 1) * NODE_SIZE) as u64)?;
        let mut path = [0u64; MAX_HEIGHT];
        let mut off = self.root;
        let mut depth = 0;
        let mut n = self.read(off);
        loop {
            // Only this writer changes nodes and it finishes every split before the next
            // insert, so it never has to move right; check rather than assume.
            if key > n.high {
                return Err(BTreeError::Corrupt {
                    offset: off,
                    reason: "writer found its key above the node's high",
                });
            }
            if depth >= MAX_HEIGHT {
                return Err(BTreeError::TooHigh { height: depth });
            }
            path[depth] = off;
            depth += 1;
            if n.is_leaf() {
                break;
            }
            off = n.vals[n.upper_bound(key)];
            n = self.read(off);
        }

        let pos = n.lower_bound(key);
        let count = n.count as usize;
        if pos < count && n.keys[pos] == key {
            let old = n.vals[pos];
            n.vals[pos] = val;
            self.write(off, &n);
            return Ok(Some(old));
        }
        self.n_keys += 1;
        self.mem.store_u64(sup::N_KEYS as u64, self.n_keys);

        // Insert into the leaf, then carry (separator, right node) up while nodes split.
        let mut keys = [0u64; FANOUT + 1];
        let mut vals = [0u64; FANOUT + 2];
        keys[..count].copy_from_slice(&n.keys[..count]);
        vals[..count].copy_from_slice(&n.vals[..count]);
        keys.copy_within(pos..count, pos + 1);
        vals.copy_within(pos..count, pos + 1);
        keys[pos] = key;
        vals[pos] = val;
        let mut carry = self.place(off, &n, &keys[..count + 1], &vals[..count + 1])?;
        depth -= 1;
        while let Some((sep, right)) = carry {
            if depth == 0 {
                self.grow_root(sep, right, n.level + 1)?;
                break;
            }
            depth -= 1;
            off = path[depth];
            n = self.read(off);
            let count = n.count as usize;
            let pos = n.upper_bound(sep);
            keys[..count].copy_from_slice(&n.keys[..count]);
            vals[..=count].copy_from_slice(&n.vals[..=count]);
            keys.copy_within(pos..count, pos + 1);
            vals.copy_within(pos + 1..count + 1, pos + 2);
            keys[pos] = sep;
            vals[pos + 1] = right;
            carry = self.place(off, &n, &keys[..count + 1], &vals[..count + 2])?;
        }
        Ok(None)
    }

    /// Writes `keys`/`vals` (one more key than `old` had) into the node at `off`, splitting
    /// it when they do not fit. Returns the separator and offset of the new right node.
    fn place(
        &mut self,
        off: u64,
        old: &Node,
        keys: &[u64],
        vals: &[u64],
    ) -> Result<Option<(u64, u64)>, BTreeError> {
        let leaf = old.is_leaf();
        let mut left = *old;
        if keys.len() <= self.cfg.max_keys {
            left.count = keys.len() as u32;
            left.keys[..keys.len()].copy_from_slice(keys);
            left.vals[..vals.len()].copy_from_slice(vals);
            self.write(off, &left);
            return Ok(None);
        }
        let right_off = self.alloc_node()?;
        let mut right = Node::empty(old.level, old.high, old.next);
        // Leaves: left keeps keys[..m], right gets keys[m..] and sep = keys[m].
        // Internal: left keeps keys[..m] and children[..=m], keys[m] moves up, right gets
        // keys[m+1..] and children[m+1..].
        let m = keys.len().div_ceil(2);
        let (sep, rk, rv) = if leaf {
            (keys[m], &keys[m..], &vals[m..])
        } else {
            let m = keys.len() / 2;
            (keys[m], &keys[m + 1..], &vals[m + 1..])
        };
        let lk = if leaf { m } else { keys.len() / 2 };
        right.count = rk.len() as u32;
        right.keys[..rk.len()].copy_from_slice(rk);
        right.vals[..rv.len()].copy_from_slice(rv);
        self.write_fresh(right_off, &right);

        left.count = lk as u32;
        left.keys = [0; FANOUT];
        left.vals = [0; FANOUT + 1];
        left.keys[..lk].copy_from_slice(&keys[..lk]);
        let lv = if leaf { lk } else { lk + 1 };
        left.vals[..lv].copy_from_slice(&vals[..lv]);
        left.high = sep - 1;
        left.next = right_off;
        self.write(off, &left);
        Ok(Some((sep, right_off)))
    }

    fn grow_root(&mut self, sep: u64, right: u64, level: u32) -> Result<(), BTreeError> {
        if self.height >= MAX_HEIGHT {
            return Err(BTreeError::TooHigh {
                height: self.height + 1,
            });
        }
        let off = self.alloc_node()?;
        let mut root = Node::empty(level, u64::MAX, 0);
        root.count = 1;
        root.keys[0] = sep;
        root.vals[0] = self.root;
        root.vals[1] = right;
        self.write_fresh(off, &root);
        self.root = off;
        self.height += 1;
        self.write_super();
        Ok(())
    }

    fn ensure_len(&self, needed: u64) -> Result<(), BTreeError> {
        if needed > self.mem.len() as u64 {
            return Err(BTreeError::RegionFull {
                len: self.mem.len(),
                needed,
            });
        }
        Ok(())
    }

    fn alloc_node(&mut self) -> Result<u64, BTreeError> {
        let off = self.alloc;
        self.ensure_len(off + NODE_SIZE as u64)?;
        self.alloc += NODE_SIZE as u64;
        self.mem.store_u64(sup::ALLOC as u64, self.alloc);
        Ok(off)
    }

    fn read(&self, off: u64) -> Node {
        let mut image = [0u8; NODE_SIZE];
        self.mem.read(off, &mut image);
        Node::decode(&image)
    }

    /// Writes a node no reader can reach yet: body, then an even version. Whoever links it
    /// later publishes it with a release store.
    fn write_fresh(&self, off: u64, n: &Node) {
        let mut body = [0u8; NODE_SIZE - 8];
        n.encode_body(&mut body);
        self.mem.write(off + 8, &body);
        self.mem.store_u64(off + node::VERSION as u64, 0);
    }

    /// Rewrites a reachable node under its version: odd, body, even.
    fn write(&self, off: u64, n: &Node) {
        let mut body = [0u8; NODE_SIZE - 8];
        n.encode_body(&mut body);
        let v = self.mem.load_u64(off).unwrap_or(0);
        self.mem.store_u64(off, v + 1);
        // `write` starts with a release fence: the odd version is visible before any byte of
        // the new body.
        self.mem.write(off + 8, &body);
        self.mem.store_u64(off, v + 2);
    }

    fn write_super(&self) {
        let m = &self.mem;
        m.store_u64(sup::MAGIC as u64, MAGIC);
        m.store_u64(sup::ALLOC as u64, self.alloc);
        m.store_u64(
            sup::NODE_SIZE as u64,
            NODE_SIZE as u64 | (self.cfg.max_keys as u64) << 32,
        );
        m.store_u64(sup::HEIGHT as u64, self.height as u64);
        m.store_u64(sup::N_KEYS as u64, self.n_keys);
        // Last: readers that see the new root see everything it needs.
        m.store_u64(sup::ROOT as u64, self.root);
    }
}
