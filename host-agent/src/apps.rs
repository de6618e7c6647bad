//! The bundled applications: their regions (fixed ids, docs/runtime.md), how their data is
//! built at start, what `Describe(app)` answers, and their offloads (fixed ids).
//!
//! Each application is one [`App`] in the table [`bundled`]; the host agent registers its
//! regions, builds or keeps their data, and registers its offloads. An application whose
//! regions all exist already (a persisted area, a loaded snapshot) keeps its data.

use crate::config::Config;
use naam_core::helpers::hash64;
use naam_core::memory::RegionMem;
use naam_core::pool::OffloadId;
use naam_core::region::{Perms, RegionDesc, RegionId};
use naam_handlers::btree::{self, BTree, BTreeConfig};

/// Tenant of every bundled application.
pub const BUNDLED_TENANT: u32 = 1;

/// Region ids of docs/runtime.md.
pub mod region {
    use naam_core::region::RegionId;
    pub const MICA_INDEX: RegionId = 1;
    pub const MICA_LOG: RegionId = 2;
    pub const BTREE: RegionId = 3;
    pub const RECORDS: RegionId = 4;
}

/// Offload ids of docs/runtime.md (the class equals the id).
pub mod offload {
    use naam_core::pool::OffloadId;
    pub const MICA_GET: OffloadId = 0;
    pub const MICA_PUT: OffloadId = 1;
    pub const MICA_DELETE: OffloadId = 2;
    pub const BTREE_LOOKUP: OffloadId = 3;
    pub const BTREE_SCAN: OffloadId = 4;
    pub const RECORD: OffloadId = 5;
    /// Offloads registered at run time get ids from here up.
    pub const FIRST_DYNAMIC: OffloadId = 16;
}

/// A region an application needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionPlan {
    pub id: RegionId,
    pub len: u64,
    pub perms: Perms,
}

/// A bundled offload: the program is section `section` of `object`.
#[derive(Debug, Clone, Copy)]
pub struct BundledOffload {
    pub id: OffloadId,
    pub name: &'static str,
    pub section: &'static str,
    pub class: u16,
    pub read_only: bool,
    pub object: &'static [u8],
}

/// An application's regions as registered: description (with its key) and bytes.
#[derive(Debug, Clone, Copy)]
pub struct AppRegion {
    pub desc: RegionDesc,
    pub mem: RegionMem,
}

/// Why an application could not be built or described.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{app}: {reason}")]
    Invalid { app: &'static str, reason: String },
}

/// Describe parameters: `(name, value)`.
pub type Params = Vec<(String, u64)>;

/// One bundled application.
pub trait App: Send + Sync {
    fn name(&self) -> &'static str;
    /// The regions it needs under `cfg`; empty when it is disabled (say, zero keys).
    fn regions(&self, cfg: &Config) -> Vec<RegionPlan>;
    /// Writes the initial data into freshly registered (zeroed) regions, in `regions()` order.
    fn build(&self, cfg: &Config, regions: &[AppRegion]) -> Result<(), AppError>;
    /// What `Describe(name)` answers, read from the regions as they are (built or restored).
    fn describe(&self, cfg: &Config, regions: &[AppRegion]) -> Result<Params, AppError>;
    fn offloads(&self) -> Vec<BundledOffload>;
}

/// The bundled applications. MICA (`naam_handlers::mica`) joins this table when its builder
/// lands.
pub fn bundled() -> Vec<Box<dyn App>> {
    vec![Box::new(Btree), Box::new(Records)]
}

/// `btree`: a Cell-style B-link tree in region 3 (`naam_handlers::btree`), bulk-loaded with
/// `btree-keys` keys `1, 3, 5, ..., 2n - 1` (even keys are absent), the value of key `k` being
/// `hash64(seed, k)`. Read by `btree_lookup` (offload 3) and `btree_scan` (offload 4).
pub struct Btree;

impl Btree {
    /// The `i`-th key of the tree.
    pub fn key(i: u64) -> u64 {
        2 * i + 1
    }

    /// The value stored under `key`.
    pub fn value(seed: u64, key: u64) -> u64 {
        hash64(seed, key)
    }

    fn err(e: impl std::fmt::Display) -> AppError {
        AppError::Invalid {
            app: "btree",
            reason: e.to_string(),
        }
    }
}

impl App for Btree {
    fn name(&self) -> &'static str {
        "btree"
    }

    fn regions(&self, cfg: &Config) -> Vec<RegionPlan> {
        if cfg.btree_keys == 0 {
            return Vec::new();
        }
        let n = cfg.btree_keys;
        // Room for later inserts by a host-side writer: an eighth of the keys.
        let len = BTreeConfig::default().region_len(n, n / 8 + 16) as u64;
        vec![RegionPlan {
            id: region::BTREE,
            len,
            // The handlers only read; the host writes natively.
            perms: Perms::READ,
        }]
    }

    fn build(&self, cfg: &Config, regions: &[AppRegion]) -> Result<(), AppError> {
        let seed = cfg.seed;
        let pairs = (0..cfg.btree_keys).map(|i| {
            let k = Btree::key(i);
            (k, Btree::value(seed, k))
        });
        BTree::bulk_load(regions[0].mem, BTreeConfig::default(), pairs).map_err(Btree::err)?;
        Ok(())
    }

    fn describe(&self, cfg: &Config, regions: &[AppRegion]) -> Result<Params, AppError> {
        let d = regions[0].desc;
        let t = BTree::open(regions[0].mem).map_err(Btree::err)?;
        Ok(vec![
            ("region".into(), d.id as u64),
            ("root".into(), t.root()),
            ("key".into(), d.key),
            ("depth".into(), t.height() as u64),
            ("keys".into(), t.len()),
            ("seed".into(), cfg.seed),
        ])
    }

    fn offloads(&self) -> Vec<BundledOffload> {
        let o = |id, name, section| BundledOffload {
            id,
            name,
            section,
            class: id as u16,
            read_only: true,
            object: btree::program::OBJECT,
        };
        vec![
            o(
                offload::BTREE_LOOKUP,
                "btree_lookup",
                btree::program::LOOKUP_SECTION,
            ),
            o(
                offload::BTREE_SCAN,
                "btree_scan",
                btree::program::SCAN_SECTION,
            ),
        ]
    }
}

/// `record`: an array of 64-byte records read by the `record` handler (the scale
/// experiment's offload; args `u32 region, u32 pad, u64 offset`, reply a digest).
pub struct Records;

/// Bytes per record of [`Records`].
pub const RECORD_SIZE: u64 = 64;

impl Records {
    /// Word `w` of record `i` as built with `seed`.
    pub fn word(seed: u64, i: u64, w: u64) -> u64 {
        hash64(hash64(seed, i), w)
    }

    /// The digest the `record` handler replies for the 8 words of a record.
    pub fn digest(words: &[u64; 8]) -> u64 {
        words
            .iter()
            .fold(naam_handlers::RECORD_SALT, |h, &w| hash64(h, w))
    }
}

impl App for Records {
    fn name(&self) -> &'static str {
        "record"
    }

    fn regions(&self, cfg: &Config) -> Vec<RegionPlan> {
        if cfg.records == 0 {
            return Vec::new();
        }
        vec![RegionPlan {
            id: region::RECORDS,
            len: cfg.records * RECORD_SIZE,
            // Written only by one-sided ops (the fault tests write through the link).
            perms: Perms::READ.union(Perms::WRITE),
        }]
    }

    fn build(&self, cfg: &Config, regions: &[AppRegion]) -> Result<(), AppError> {
        let mem = &regions[0].mem;
        for i in 0..cfg.records {
            for w in 0..8 {
                mem.store_u64(i * RECORD_SIZE + w * 8, Records::word(cfg.seed, i, w));
            }
        }
        Ok(())
    }

    fn describe(&self, _cfg: &Config, regions: &[AppRegion]) -> Result<Params, AppError> {
        let d = regions[0].desc;
        Ok(vec![
            ("region".into(), d.id as u64),
            ("key".into(), d.key),
            ("records".into(), d.len / RECORD_SIZE),
            ("record_size".into(), RECORD_SIZE),
        ])
    }

    fn offloads(&self) -> Vec<BundledOffload> {
        vec![BundledOffload {
            id: offload::RECORD,
            name: "record",
            section: "naam/record",
            class: offload::RECORD as u16,
            read_only: true,
            object: naam_handlers::RECORD_OBJECT,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use naam_core::memory::OwnedRegion;

    #[test]
    fn records_build_and_describe() {
        let cfg = Config {
            records: 4,
            seed: 9,
            ..Config::default()
        };
        let plan = Records.regions(&cfg);
        assert_eq!(plan[0].len, 256);
        let owned = OwnedRegion::zeroed(plan[0].len as usize);
        let r = AppRegion {
            desc: RegionDesc {
                id: plan[0].id,
                tenant: BUNDLED_TENANT,
                len: plan[0].len,
                perms: plan[0].perms,
                key: 77,
            },
            mem: owned.mem(),
        };
        Records.build(&cfg, &[r]).unwrap();
        assert_eq!(r.mem.load_u64(3 * 64 + 8), Some(Records::word(9, 3, 1)));
        let p = Records.describe(&cfg, &[r]).unwrap();
        assert!(p.contains(&("key".into(), 77)));
        assert!(p.contains(&("records".into(), 4)));
        assert!(Records.regions(&Config { records: 0, ..cfg }).is_empty());
    }

    #[test]
    fn btree_builds_keys_and_describes_its_root() {
        let cfg = Config {
            btree_keys: 500,
            seed: 3,
            ..Config::default()
        };
        let plan = Btree.regions(&cfg);
        let owned = OwnedRegion::zeroed(plan[0].len as usize);
        let r = AppRegion {
            desc: RegionDesc {
                id: plan[0].id,
                tenant: BUNDLED_TENANT,
                len: plan[0].len,
                perms: plan[0].perms,
                key: 5,
            },
            mem: owned.mem(),
        };
        Btree.build(&cfg, &[r]).unwrap();
        let p = Btree.describe(&cfg, &[r]).unwrap();
        let get = |n: &str| p.iter().find(|(k, _)| k == n).unwrap().1;
        assert_eq!(get("keys"), 500);
        assert_eq!(get("region"), 3);
        assert!(get("depth") >= 2, "500 keys need more than one 16-key node");
        assert!(get("root") > 0);
        let mut t = BTree::open(owned.mem()).unwrap();
        // Inserting an existing key returns the value the build stored.
        let k = Btree::key(123);
        assert_eq!(t.insert(k, 0).unwrap(), Some(Btree::value(3, k)));
        assert_eq!(
            t.insert(Btree::key(123) + 1, 0).unwrap(),
            None,
            "even keys absent"
        );
    }
}
