//! The bundled applications: their regions (fixed ids, docs/runtime.md), how their data is
//! built at start, what `Describe(app)` answers, and their offloads (fixed ids).
//!
//! Each application is one [`App`] in the table [`bundled`]; the host agent registers its
//! regions, builds or keeps their data, and registers its offloads. An application whose
//! regions all exist already (a persisted area, a loaded snapshot) keeps its data.

use crate::config::Config;
use naam_core::helpers::hash64;
use naam_core::memory::RegionMem;
use naam_core::region::{Perms, RegionDesc, RegionId};
use naam_handlers::btree::{self, BTree, BTreeConfig};
use naam_handlers::mica::{self, MicaGeometry, MicaTable};
use std::sync::atomic::{AtomicBool, Ordering};

/// Tenant of every bundled application.
pub const BUNDLED_TENANT: u32 = naam_handlers::bundled::TENANT;

/// Region ids of docs/runtime.md (the one table: `naam_handlers::bundled`).
pub use naam_handlers::bundled::region;
/// The bundled offloads' table (`naam_handlers::bundled`).
pub use naam_handlers::bundled::BundledOffload;

/// Offload ids.
pub mod offload {
    use naam_core::pool::OffloadId;
    /// Offloads registered at run time get ids from here up.
    pub const FIRST_DYNAMIC: OffloadId = naam_handlers::bundled::FIRST_DYNAMIC_ID;
}

/// A region an application needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionPlan {
    pub id: RegionId,
    pub len: u64,
    pub perms: Perms,
}

/// An application's regions as registered: description (with its key) and bytes.
#[derive(Debug, Clone)]
pub struct AppRegion {
    pub desc: RegionDesc,
    pub mem: RegionMem,
}

/// Why an application could not be built or described.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{app}: {reason}")]
    Invalid { app: &'static str, reason: String },
    /// A stop (SIGTERM, SIGINT, SIGHUP, the parent gone) came while its data was built.
    #[error("{app}: stopped while its data was built")]
    Stopped { app: &'static str },
}

/// Items a build writes between two looks at the stop flag (a few ms of work).
const BUILD_PIECE: u64 = 1 << 16;

/// `Err(Stopped)` once `stop` is set.
fn go_on(app: &'static str, stop: &AtomicBool) -> Result<(), AppError> {
    match stop.load(Ordering::Relaxed) {
        true => Err(AppError::Stopped { app }),
        false => Ok(()),
    }
}

/// The settings an application's data was built with, kept in its own header so that they
/// travel with the data (a persisted area, a snapshot): DESCRIBE then tells what is served,
/// not what this start's flags say (probe 12: `describe mica` said 100 000 keys over a kept
/// 65 536-key table, and a client that trusted it missed a third of its keys). `N` words
/// at `at`, then a tag; data built before these were kept has no tag (`None`).
struct FilledWith<const N: usize>;

impl<const N: usize> FilledWith<N> {
    const TAG: u64 = u64::from_le_bytes(*b"FILLEDWI");

    fn keep(mem: &RegionMem, at: u64, words: [u64; N]) {
        for (i, w) in (0u64..).zip(words) {
            mem.store_u64(at + 8 * i, w);
        }
        mem.store_u64(at + 8 * N as u64, Self::TAG);
    }

    fn read(mem: &RegionMem, at: u64) -> Option<[u64; N]> {
        if mem.load_u64(at + 8 * N as u64) != Some(Self::TAG) {
            return None;
        }
        let mut words = [0; N];
        for (i, w) in (0u64..).zip(words.iter_mut()) {
            *w = mem.load_u64(at + 8 * i)?;
        }
        Some(words)
    }
}

/// Describe parameters: `(name, value)`.
pub type Params = Vec<(String, u64)>;

/// One bundled application.
pub trait App: Send + Sync {
    fn name(&self) -> &'static str;
    /// The regions it needs under `cfg`; empty when it is disabled (say, zero keys).
    fn regions(&self, cfg: &Config) -> Vec<RegionPlan>;
    /// Writes the initial data into freshly registered (zeroed) regions, in `regions()` order;
    /// gives up with [`AppError::Stopped`] soon after `stop` is set (millions of keys take
    /// seconds, and a SIGTERM must not wait for them).
    fn build(&self, cfg: &Config, regions: &[AppRegion], stop: &AtomicBool)
        -> Result<(), AppError>;
    /// What `Describe(name)` answers, read from the regions as they are (built or restored).
    fn describe(&self, cfg: &Config, regions: &[AppRegion]) -> Result<Params, AppError>;
    /// Counters read from its data at each STATS (`APP.NAME value`).
    fn counters(&self, _regions: &[AppRegion]) -> Params {
        Vec::new()
    }
    /// Its offloads: the bundled ones of this application.
    fn offloads(&self) -> Vec<BundledOffload> {
        naam_handlers::bundled::ALL
            .into_iter()
            .filter(|o| o.app == self.name())
            .collect()
    }
}

/// The bundled applications.
pub fn bundled() -> Vec<Box<dyn App>> {
    vec![Box::new(Mica), Box::new(Btree), Box::new(Records)]
}

/// `mica`: a MICA table (`naam_handlers::mica`) in regions 1 (index) and 2 (log), filled with
/// `mica-keys` keys `key_for(seed, i)` and `value-size`-byte values `value_for(seed, i)`.
/// Served by `mica_get`, `mica_put`, `mica_delete` (offloads 0, 1, 2).
pub struct Mica;

impl Mica {
    /// The geometry the configuration asks for.
    pub fn geometry(cfg: &Config) -> MicaGeometry {
        MicaGeometry::for_keys(cfg.mica_keys, cfg.value_size as usize)
            .with_regions(region::MICA_INDEX, region::MICA_LOG)
            .lossless(cfg.mica_lossless)
    }

    /// What `cfg` fills a table with, as its header keeps it: keys, value size, seed.
    fn filled_with(cfg: &Config) -> [u64; 3] {
        [cfg.mica_keys, u64::from(cfg.value_size), cfg.seed]
    }

    /// The geometry of a table as its headers describe it.
    pub fn read_geometry(index: &RegionMem, log: &RegionMem) -> Result<MicaGeometry, AppError> {
        let word = |m: &RegionMem, off| m.load_u64(off).unwrap_or(0);
        let magic = word(index, mica::layout::INDEX_MAGIC);
        if magic != mica::layout::MAGIC {
            return Err(Mica::err(format!(
                "index region holds no table (magic {magic:#x})"
            )));
        }
        let g = MicaGeometry {
            index_region: region::MICA_INDEX,
            log_region: region::MICA_LOG,
            bucket_count: word(index, mica::layout::INDEX_BUCKETS),
            overflow_count: word(index, mica::layout::INDEX_OVERFLOW),
            log_size: word(log, mica::layout::LOG_SIZE),
            lossless: word(log, mica::layout::LOG_FLAGS) & mica::layout::FLAG_LOSSLESS as u64 != 0,
        };
        g.validate().map_err(Mica::err)?;
        Ok(g)
    }

    fn err(e: impl std::fmt::Display) -> AppError {
        AppError::Invalid {
            app: "mica",
            reason: e.to_string(),
        }
    }
}

impl App for Mica {
    fn name(&self) -> &'static str {
        "mica"
    }

    fn regions(&self, cfg: &Config) -> Vec<RegionPlan> {
        if cfg.mica_keys == 0 {
            return Vec::new();
        }
        let g = Mica::geometry(cfg);
        // GET reads; PUT allocates log space with FAA, writes the item, installs it with CAS.
        vec![
            RegionPlan {
                id: region::MICA_INDEX,
                len: g.index_len(),
                perms: Perms::ALL,
            },
            RegionPlan {
                id: region::MICA_LOG,
                len: g.log_len(),
                perms: Perms::ALL,
            },
        ]
    }

    fn build(
        &self,
        cfg: &Config,
        regions: &[AppRegion],
        stop: &AtomicBool,
    ) -> Result<(), AppError> {
        let t = MicaTable::format(
            Mica::geometry(cfg),
            regions[0].mem.clone(),
            regions[1].mem.clone(),
        )
        .map_err(Mica::err)?;
        for first in (0..cfg.mica_keys).step_by(BUILD_PIECE as usize) {
            go_on(self.name(), stop)?;
            let piece = first..cfg.mica_keys.min(first + BUILD_PIECE);
            t.fill(piece, cfg.seed, cfg.value_size as usize)
                .map_err(Mica::err)?;
        }
        FilledWith::keep(
            &regions[0].mem,
            mica::layout::INDEX_FILLED_WITH,
            Mica::filled_with(cfg),
        );
        Ok(())
    }

    fn describe(&self, cfg: &Config, regions: &[AppRegion]) -> Result<Params, AppError> {
        let g = Mica::read_geometry(&regions[0].mem, &regions[1].mem)?;
        Ok([
            ("index_region".into(), g.index_region as u64),
            ("log_region".into(), g.log_region as u64),
            ("buckets".into(), g.bucket_count),
            ("overflow".into(), g.overflow_count),
            ("log_size".into(), g.log_size),
            ("lossless".into(), g.lossless as u64),
            ("key_len".into(), mica::layout::KEY_MAX as u64),
            ("index_key".into(), regions[0].desc.key),
            ("log_key".into(), regions[1].desc.key),
        ]
        .into_iter()
        .chain(
            ["keys", "value_size", "seed"]
                .into_iter()
                .zip(
                    FilledWith::read(&regions[0].mem, mica::layout::INDEX_FILLED_WITH)
                        .unwrap_or(Mica::filled_with(cfg)),
                )
                .map(|(name, v)| (name.into(), v)),
        )
        .collect())
    }

    /// `mica.lossless` (the table's mode), `mica.log_tail_bytes` (allocated so far) and
    /// `mica.log_evicted_bytes`: in lossy mode, the bytes of items the log has overwritten
    /// (0 until the log first wraps; a lossy table may have evicted acknowledged items once it
    /// is not), always 0 in lossless mode. Full lossless PUTs are the `mica_put` offload's
    /// aborts with code 6.
    fn counters(&self, regions: &[AppRegion]) -> Params {
        let Ok(g) = Mica::read_geometry(&regions[0].mem, &regions[1].mem) else {
            return Vec::new();
        };
        let Ok(t) = MicaTable::attach(g, regions[0].mem.clone(), regions[1].mem.clone()) else {
            return Vec::new();
        };
        vec![
            ("mica.lossless".into(), g.lossless as u64),
            ("mica.log_tail_bytes".into(), t.log_tail()),
            ("mica.log_evicted_bytes".into(), t.evicted_bytes()),
        ]
    }
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

    fn build(
        &self,
        cfg: &Config,
        regions: &[AppRegion],
        stop: &AtomicBool,
    ) -> Result<(), AppError> {
        let seed = cfg.seed;
        // A stop ends the keys early: the tree built of the first ones is then thrown away.
        let pairs = (0..cfg.btree_keys)
            .take_while(|i| i % BUILD_PIECE != 0 || !stop.load(Ordering::Relaxed))
            .map(|i| {
                let k = Btree::key(i);
                (k, Btree::value(seed, k))
            });
        BTree::bulk_load(regions[0].mem.clone(), BTreeConfig::default(), pairs)
            .map_err(Btree::err)?;
        go_on(self.name(), stop)?;
        FilledWith::keep(
            &regions[0].mem,
            btree::layout::sup::FILLED_WITH as u64,
            [seed],
        );
        Ok(())
    }

    fn describe(&self, cfg: &Config, regions: &[AppRegion]) -> Result<Params, AppError> {
        let d = regions[0].desc;
        let t = BTree::open(regions[0].mem.clone()).map_err(Btree::err)?;
        Ok(vec![
            ("region".into(), d.id as u64),
            ("root".into(), t.root()),
            ("key".into(), d.key),
            ("depth".into(), t.height() as u64),
            ("keys".into(), t.len()),
            (
                "seed".into(),
                FilledWith::read(&regions[0].mem, btree::layout::sup::FILLED_WITH as u64)
                    .map_or(cfg.seed, |[seed]| seed),
            ),
        ])
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
            id: region::RECORD,
            len: cfg.records * RECORD_SIZE,
            // Written only by one-sided ops, atomics included (the fault tests write through
            // the link; clients count with FAA and CAS here).
            perms: Perms::ALL,
        }]
    }

    fn build(
        &self,
        cfg: &Config,
        regions: &[AppRegion],
        stop: &AtomicBool,
    ) -> Result<(), AppError> {
        let mem = &regions[0].mem;
        for i in 0..cfg.records {
            if i % BUILD_PIECE == 0 {
                go_on(self.name(), stop)?;
            }
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
        let r = [r];
        Records.build(&cfg, &r, &AtomicBool::new(false)).unwrap();
        assert_eq!(r[0].mem.load_u64(3 * 64 + 8), Some(Records::word(9, 3, 1)));
        let p = Records.describe(&cfg, &r).unwrap();
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
        let r = [r];
        Btree.build(&cfg, &r, &AtomicBool::new(false)).unwrap();
        let p = Btree.describe(&cfg, &r).unwrap();
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

    #[test]
    fn mica_builds_a_table_and_reads_its_geometry_back() {
        let cfg = Config {
            mica_keys: 300,
            value_size: 24,
            seed: 4,
            ..Config::default()
        };
        let plan = Mica.regions(&cfg);
        assert_eq!(plan.len(), 2);
        let owned: Vec<_> = plan
            .iter()
            .map(|p| OwnedRegion::zeroed(p.len as usize))
            .collect();
        let regions: Vec<_> = plan
            .iter()
            .zip(&owned)
            .map(|(p, o)| AppRegion {
                desc: RegionDesc {
                    id: p.id,
                    tenant: BUNDLED_TENANT,
                    len: p.len,
                    perms: p.perms,
                    key: p.id as u64 * 100,
                },
                mem: o.mem(),
            })
            .collect();
        Mica.build(&cfg, &regions, &AtomicBool::new(false)).unwrap();
        let g = Mica::read_geometry(&regions[0].mem, &regions[1].mem).unwrap();
        assert_eq!(g, Mica::geometry(&cfg));
        let t = MicaTable::attach(g, regions[0].mem.clone(), regions[1].mem.clone()).unwrap();
        let mut out = [0u8; 64];
        let mut want = [0u8; 24];
        mica::value_for(4, 299, &mut want);
        assert_eq!(t.get(&mica::key_for(4, 299), &mut out).unwrap(), Some(24));
        assert_eq!(&out[..24], &want);
        let p = Mica.describe(&cfg, &regions).unwrap();
        assert!(p.contains(&("index_key".into(), 100)));
        assert!(p.contains(&("log_key".into(), 200)));
        assert!(p.contains(&("buckets".into(), g.bucket_count)));
        // A zeroed index is no table.
        let blank = OwnedRegion::zeroed(4096);
        assert!(Mica::read_geometry(&blank.mem(), &regions[1].mem).is_err());
    }
}
