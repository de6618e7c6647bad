//! The host agent's settings: one struct, filled from defaults, an optional TOML file whose
//! keys mirror the command-line flags (`nic-workers = 2`), and then the flags themselves.

use naam_core::run_dir;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// How idle host workers wait: `naam_link::BackoffMode` (the same `spin|yield` as the
/// dataplane's), read from the config file as its name.
pub use naam_link::BackoffMode;

fn backoff_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BackoffMode, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// A handler object given with `--handler FILE.o[:SECTION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSpec {
    pub path: PathBuf,
    /// `None`: the first executable section that is not `.text`.
    pub section: Option<String>,
}

impl HandlerSpec {
    /// Parses `FILE.o[:SECTION]` (the section is what follows the last `:` after the
    /// file name's `.o`).
    pub fn parse(s: &str) -> HandlerSpec {
        if let Some(i) = s.rfind(".o:") {
            let (path, section) = (&s[..i + 2], &s[i + 3..]);
            if !section.is_empty() {
                return HandlerSpec {
                    path: path.into(),
                    section: Some(section.to_owned()),
                };
            }
        }
        // `FILE.o:` (no section after the colon) names FILE.o.
        HandlerSpec {
            path: s
                .strip_suffix(".o:")
                .map_or(s, |p| &s[..p.len() + 2])
                .into(),
            section: None,
        }
    }
}

impl<'de> Deserialize<'de> for HandlerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(HandlerSpec::parse(&String::deserialize(d)?))
    }
}

/// Offloads a tenant may have registered at once, by default: each costs every process a
/// compiled program (two memory mappings per JIT program) and a slot of every worker's pool,
/// so one tenant's key must not be able to register without bound (the attacker probe of
/// 2026-12-06 registered 13 900 before the host agent's heartbeat went late).
pub const DEFAULT_MAX_OFFLOADS_PER_TENANT: u32 = 4096;

/// Steering classes one tenant's run-time offloads may be on by default: a class is one
/// tenant's, so without a limit one tenant took every free class in two seconds (probe 16)
/// and no other could register anything.
pub const DEFAULT_MAX_CLASSES_PER_TENANT: u32 = 8;

/// Everything the host agent is started with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Holds `link.sock` and `control.sock`.
    pub run_dir: PathBuf,
    /// Host worker threads (K).
    pub workers: u32,
    /// Link queue pairs (one per dataplane worker, N).
    pub nic_workers: u32,
    /// Region memory of the shared area, in MiB; `None`: what the applications' data need
    /// (at least [`ARENA_MB_DEFAULT`]), so that `--mica-keys` alone sizes it.
    pub arena_mb: Option<u64>,
    /// Keys of the MICA table built at start.
    pub mica_keys: u64,
    /// Value size of the MICA items built at start.
    pub value_size: u32,
    /// Build the MICA table in lossless mode: PUT answers `log full` (abort 6) once the log is
    /// used up, rather than evicting the oldest acknowledged items as the default (lossy,
    /// MICA's cache mode) does. A restored table keeps the mode it was built with.
    pub mica_lossless: bool,
    /// Keys of the B-tree built at start.
    pub btree_keys: u64,
    /// 64-byte records of the `record` application (region 4).
    pub records: u64,
    /// Seed of the generated application data (region keys are random regardless).
    pub seed: u64,
    /// Extra handler objects, verified and registered at start (ids from 16 up).
    pub handler: Vec<HandlerSpec>,
    /// Loaded at start if it exists; written on shutdown and on request.
    pub snapshot: Option<PathBuf>,
    /// The shared area lives in this file and survives the host agent.
    pub persist: Option<PathBuf>,
    #[serde(deserialize_with = "backoff_mode")]
    pub backoff: BackoffMode,
    /// Try hugetlb pages for the shared area.
    pub hugetlb: bool,
    /// Slots per link ring (a power of two).
    pub ring_slots: u32,
    /// The key file of the admin and the tenants (docs/security.md); created with fresh keys
    /// when absent. Default: `RUN_DIR/credentials`.
    pub credentials: Option<PathBuf>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (off when `None`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Offloads one tenant may have registered at once (REGISTER past it: `no_space`).
    pub max_offloads_per_tenant: u32,
    /// Steering classes one tenant's run-time offloads may be on at once (REGISTER on
    /// another class past it: `no_space`).
    pub max_classes_per_tenant: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            run_dir: run_dir::default_run_dir(),
            workers: 1,
            nic_workers: 2,
            arena_mb: None,
            mica_keys: 1 << 16,
            value_size: 64,
            mica_lossless: false,
            btree_keys: 1 << 16,
            records: 1024,
            seed: 1,
            handler: Vec::new(),
            snapshot: None,
            persist: None,
            backoff: BackoffMode::Yield,
            hugetlb: true,
            ring_slots: 256,
            credentials: None,
            metrics_addr: None,
            max_offloads_per_tenant: DEFAULT_MAX_OFFLOADS_PER_TENANT,
            max_classes_per_tenant: DEFAULT_MAX_CLASSES_PER_TENANT,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// This machine's memory and swap in MiB (`/proc/meminfo`); `None` where it cannot be read.
pub fn machine_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((kib("MemTotal:")? + kib("SwapTotal:").unwrap_or(0)) / 1024)
}

/// The largest shared area (`--arena-mb`): 1 TiB.
const ARENA_MB_MAX: u64 = 1 << 20;
/// The least region memory of a shared area sized by its data, in MiB.
pub const ARENA_MB_DEFAULT: u64 = 64;
/// The most entries of a link ring (`--ring-slots`).
const RING_SLOTS_MAX: u32 = 1 << 16;
/// The most keys or records an application is built with.
const COUNT_MAX: u64 = 1 << 32;

impl Config {
    /// The applications' data in MiB, each region rounded up to a page as the shared area
    /// carves it.
    fn data_mb(&self) -> u64 {
        crate::apps::bundled()
            .iter()
            .flat_map(|a| a.regions(self))
            .map(|p| {
                p.len
                    .div_ceil(naam_link::layout::PAGE)
                    .saturating_mul(naam_link::layout::PAGE)
            })
            .fold(0u64, u64::saturating_add)
            .div_ceil(1 << 20)
    }

    /// The shared area's region memory in bytes: `--arena-mb`, or what the data need (at
    /// least [`ARENA_MB_DEFAULT`]). Valid after [`Config::validate`].
    pub fn arena_bytes(&self) -> u64 {
        self.arena_mb
            .unwrap_or_else(|| self.data_mb().max(ARENA_MB_DEFAULT))
            << 20
    }

    /// Reads a TOML file; keys are the long flag names (`nic-workers`, `arena-mb`, ...;
    /// `hugetlb = false` for `--no-hugetlb`), and missing keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let max = naam_core::run_dir::CONFIG_FILE_MAX;
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let bytes = naam_core::run_dir::read_regular(path, max, "a config file").map_err(read)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            read(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.utf8_error(),
            ))
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks the values that would otherwise fail deep inside the setup.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.workers == 0 || self.workers > 256 {
            return bad("workers", "must be in 1..=256");
        }
        let max_qps = naam_link::layout::MAX_QPS;
        if self.nic_workers == 0 || self.nic_workers > max_qps {
            return bad("nic-workers", &format!("must be in 1..={max_qps}"));
        }
        // An empty path (`snapshot = ""` in a config file; the flags refuse it) named the
        // current directory's `.tmp` and `.lock`: the shutdown's snapshot was lost, a key
        // file was left there.
        let empty = |p: &std::path::Path| p.as_os_str().is_empty();
        for (key, path) in [
            ("run-dir", Some(&self.run_dir)),
            ("snapshot", self.snapshot.as_ref()),
            ("persist", self.persist.as_ref()),
            ("credentials", self.credentials.as_ref()),
        ] {
            if path.is_some_and(|p| empty(p)) {
                return bad(key, "an empty path");
            }
        }
        if self.handler.iter().any(|h| empty(&h.path)) {
            return bad("handler", "an empty path");
        }
        if self.workers > self.nic_workers {
            return bad(
                "workers",
                "more host workers than queue pairs would leave some idle",
            );
        }
        if self.arena_mb.is_some_and(|mb| mb == 0 || mb > ARENA_MB_MAX) {
            return bad("arena-mb", "must be in 1..=1048576 (1 TiB)");
        }
        for (key, n) in [
            ("mica-keys", self.mica_keys),
            ("btree-keys", self.btree_keys),
            ("records", self.records),
        ] {
            if n > COUNT_MAX {
                return bad(key, "must be at most 4294967296");
            }
        }
        if self.value_size == 0 || self.value_size as usize > naam_handlers::mica::layout::VALUE_MAX
        {
            return bad("value-size", "must be in 1..=1024 (a MICA value)");
        }
        if !self.ring_slots.is_power_of_two() || !(2..=RING_SLOTS_MAX).contains(&self.ring_slots) {
            return bad("ring-slots", "must be a power of two in 2..=65536");
        }
        if self.max_offloads_per_tenant == 0
            || self.max_offloads_per_tenant as usize > naam_core::pool::MAX_OFFLOADS
        {
            return bad("max-offloads-per-tenant", "must be in 1..=65536");
        }
        if self.max_classes_per_tenant == 0 {
            return bad("max-classes-per-tenant", "must be at least 1");
        }
        // The applications' data must fit the shared area (found out here, not half-way
        // through building it, and named by the settings that size it).
        let data_mb = self.data_mb();
        let (arena_mb, limit) = match self.arena_mb {
            Some(mb) => (mb, format!("{mb} MiB is too small")),
            None => (
                ARENA_MB_MAX,
                "more than the largest area, 1 TiB, is needed".into(),
            ),
        };
        if data_mb > arena_mb {
            return bad(
                "arena-mb",
                &format!(
                    "{limit} for the applications' data: {data_mb} MiB for --mica-keys {}, \
                     --value-size {}, --btree-keys {} and --records {}",
                    self.mica_keys, self.value_size, self.btree_keys, self.records
                ),
            );
        }
        // The data are built, so resident: more than the machine's memory and swap would
        // have the kernel kill this process (or a neighbour) half-way (probe 10: 256 GiB of
        // records on a 23 GiB machine were accepted and filled at 100 MB/s).
        if let Some(mem_mb) = machine_memory_mb().filter(|&m| data_mb > m) {
            let keys = if self.records > self.mica_keys.max(self.btree_keys) {
                "records"
            } else if self.mica_keys >= self.btree_keys {
                "mica-keys"
            } else {
                "btree-keys"
            };
            return bad(
                keys,
                &format!(
                    "the applications' data need {data_mb} MiB (--mica-keys {}, --value-size \
                     {}, --btree-keys {}, --records {}), more than this machine's memory and \
                     swap ({mem_mb} MiB)",
                    self.mica_keys, self.value_size, self.btree_keys, self.records
                ),
            );
        }
        if let (Some(persist), Some(snapshot)) = (&self.persist, &self.snapshot) {
            // The shutdown's snapshot would be renamed over the live area.
            if persist == snapshot || same_file(persist, snapshot) {
                return bad(
                    "snapshot",
                    &format!(
                        "{} is also the persisted area (--persist): name two files",
                        snapshot.display()
                    ),
                );
            }
        }
        if let Some(path) = &self.snapshot {
            // Found out at start, not at shutdown, when the snapshot could not be written.
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            if !dir.is_dir() {
                return bad(
                    "snapshot",
                    &format!("its directory {} does not exist", dir.display()),
                );
            }
            // A FIFO or a device would block the start (opening a FIFO waits for a writer)
            // or be read without end.
            if let Ok(m) = std::fs::metadata(path) {
                if !m.is_file() {
                    return bad(
                        "snapshot",
                        &format!("{} is not a regular file", path.display()),
                    );
                }
            }
        }
        Ok(())
    }

    pub fn link_socket(&self) -> PathBuf {
        self.run_dir.join(run_dir::LINK_SOCKET)
    }

    pub fn control_socket(&self) -> PathBuf {
        self.run_dir.join(run_dir::CONTROL_SOCKET)
    }
}

/// Whether `a` and `b` are one existing file (by device and inode: through a symlink, or
/// spelled differently).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_keys_mirror_the_flags() {
        let c = Config::from_toml(
            "workers = 2\nnic-workers = 4\narena-mb = 8\nbackoff = \"spin\"\n\
             handler = [\"a.o:naam/x\", \"b.o\"]\nsnapshot = \"/tmp/s\"\n",
        )
        .unwrap();
        assert_eq!((c.workers, c.nic_workers, c.arena_mb), (2, 4, Some(8)));
        assert_eq!(c.backoff, BackoffMode::Spin);
        assert_eq!(c.handler[0].section.as_deref(), Some("naam/x"));
        assert_eq!(c.handler[1].section, None);
        assert_eq!(c.snapshot.as_deref(), Some(Path::new("/tmp/s")));
        assert_eq!(c.mica_keys, Config::default().mica_keys);
        assert!(Config::from_toml("no-such-key = 1").is_err());
    }

    #[test]
    fn handler_spec_splits_the_section() {
        let h = HandlerSpec::parse("/x/y.bpf.o:naam/record");
        assert_eq!(h.path, Path::new("/x/y.bpf.o"));
        assert_eq!(h.section.as_deref(), Some("naam/record"));
        assert_eq!(HandlerSpec::parse("z.o").section, None);
        assert_eq!(HandlerSpec::parse("z.o:").section, None);
        assert_eq!(HandlerSpec::parse("z.o:").path, Path::new("z.o"));
    }

    /// Settings a config file can give that the flags could not (probe 10): empty paths
    /// (the snapshot was then lost at shutdown, a key file left in the current directory) and
    /// more queue pairs than an area holds (refused later, without naming the setting).
    #[test]
    fn empty_paths_and_too_many_queue_pairs_are_refused_by_name() {
        for (toml, key) in [
            ("snapshot = \"\"", "snapshot"),
            ("persist = \"\"", "persist"),
            ("credentials = \"\"", "credentials"),
            ("run-dir = \"\"", "run-dir"),
            ("handler = [\"\"]", "handler"),
            ("nic-workers = 121\nworkers = 1", "nic-workers"),
        ] {
            let c = Config::from_toml(toml).unwrap();
            assert!(refused(&c).starts_with(key), "{toml}: {}", refused(&c));
        }
        let c = Config::from_toml("nic-workers = 120").unwrap();
        assert!(c.validate().is_ok());
    }

    /// Why `c` is refused, as "key: reason".
    fn refused(c: &Config) -> String {
        match c.validate() {
            Err(ConfigError::Invalid { key, reason }) => format!("{key}: {reason}"),
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn data_past_any_area_or_the_configured_one_is_refused_naming_the_setting() {
        for (set, key) in [
            (
                &(|c: &mut Config| c.records = u64::MAX) as &dyn Fn(&mut Config),
                "records",
            ),
            (&|c: &mut Config| c.mica_keys = u64::MAX, "mica-keys"),
            (&|c: &mut Config| c.btree_keys = 1 << 40, "btree-keys"),
            (&|c: &mut Config| c.arena_mb = Some(u64::MAX), "arena-mb"),
            (&|c: &mut Config| c.arena_mb = Some(0), "arena-mb"),
        ] {
            let mut c = Config::default();
            set(&mut c);
            assert!(refused(&c).starts_with(key), "{}", refused(&c));
        }
        let mut c = Config {
            mica_keys: 10_000_000,
            arena_mb: Some(64),
            ..Config::default()
        };
        let why = refused(&c);
        assert!(
            why.starts_with("arena-mb") && why.contains("--mica-keys 10000000"),
            "{why}"
        );
        c.arena_mb = Some(4096);
        assert!(c.validate().is_ok());
        // Unset, the area is sized by the data (the README's `--mica-keys 1000000` was
        // refused with the 64 MiB default), and is never smaller than the default.
        c.arena_mb = None;
        assert!(c.validate().is_ok());
        assert!(c.arena_bytes() >= 10_000_000 * 64, "{}", c.arena_bytes());
        assert_eq!(Config::default().arena_bytes(), ARENA_MB_DEFAULT << 20);
        // Data past this machine's memory are refused by what sizes them (when that is less
        // than the largest area).
        if let Some(mem_mb) = machine_memory_mb().filter(|&m| m < 512 << 10) {
            let c = Config {
                records: (mem_mb + 1024) << 20 >> 6, // 64-byte records
                ..Config::default()
            };
            let why = refused(&c);
            assert!(
                why.starts_with("records") && why.contains("memory"),
                "{why}"
            );
        }
        // Data past the largest area are refused by what sizes them.
        c.mica_keys = 1 << 32;
        c.value_size = 1024;
        let why = refused(&c);
        assert!(
            why.starts_with("arena-mb") && why.contains("1 TiB"),
            "{why}"
        );
    }

    #[test]
    fn the_snapshot_cannot_be_the_persisted_area() {
        let dir = tempfile::tempdir().unwrap();
        let area = dir.path().join("area");
        let mut c = Config {
            persist: Some(area.clone()),
            snapshot: Some(area.clone()),
            ..Config::default()
        };
        assert!(refused(&c).starts_with("snapshot"), "{}", refused(&c));
        // The same file by another name.
        std::fs::write(&area, b"").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&area, &link).unwrap();
        c.snapshot = Some(link);
        assert!(
            refused(&c).contains("also the persisted area"),
            "{}",
            refused(&c)
        );
        c.snapshot = Some(dir.path().join("snap"));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validate_refuses_impossible_geometry() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        c.workers = 3;
        assert!(c.validate().is_err());
        c.workers = 1;
        c.ring_slots = 100;
        assert!(c.validate().is_err());
    }
}
