//! The offloads registered at run time, kept beside the host agent's data (issue 14 item 4).
//!
//! With `--persist` or `--snapshot` the data outlives the host agent; so must the offloads
//! registered over the control socket, or a restarted host agent would serve the data
//! without the handlers its clients registered for it (and the dataplane would have to drop
//! them). The file sits next to the persisted area (or the snapshot): its name with
//! `.offloads` appended (`node.a` keeps `node.a.offloads`), and is rewritten (to
//! `….offloads.tmp`, then renamed) after every REGISTER and UNREGISTER. Offloads of `--handler`
//! flags are not in it: each start registers those from its flags. It holds each offload's verified instructions, not its ELF object: what runs is
//! what was verified, and it is verified again when loaded.
//!
//! Format: a header line `naam-offloads 2`; `next ID`, the id the host agent gives next (a
//! restart must not give a removed offload's id to another program while clients may still
//! call it); `flags ID:DIGEST_HEX…`, the ids and program digests of the `--handler` flags'
//! offloads, in the flags' order (a restart with the same flags gives them the same ids, and
//! another program none of them); one offload per line,
//! `ID TENANT CLASS READ_ONLY NAME_HEX INSNS_HEX DIGEST_HEX` (the digest is
//! `wire::program_digest` of the instructions); and a last line
//! `end COUNT DIGEST_HEX`, the number of offloads and the digest of every byte before that
//! line: a file cut short, or with any field changed (an owner, a class), is refused whole,
//! not run. Files of format 1 (no `next`, no `end`: before 2026-12-08) are still read.

use crate::apps::offload::FIRST_DYNAMIC;
use naam_core::elf::Program;
use naam_core::pool::{OffloadSpec, Registry};
use naam_core::verifier::{verify, VerifierConfig};
use naam_core::wire::{program_digest, WireError};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const HEADER: &str = "naam-offloads 2";
/// The format before the `next` and `end` lines, still read.
const HEADER_V1: &str = "naam-offloads 1";

/// What [`OffloadStore::load`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Offloads registered.
    pub count: usize,
    /// The id to give next, when the file says (format 2).
    pub next: Option<u32>,
    /// The ids and program digests of the `--handler` flags' offloads, in the flags' order
    /// (format 2).
    pub flags: FlagIds,
}

/// `(id, program digest)` of each `--handler` flag's offload, in the flags' order.
pub type FlagIds = Vec<(u32, u64)>;

/// Where the run-time offloads are kept: beside the persisted area and beside the snapshot
/// (a reboot loses the area on its tmpfs, not the snapshot: the offloads must come back with
/// the data it restores).
#[derive(Debug, Clone)]
pub struct OffloadStore {
    /// Written in this order at every change; read from the first that exists.
    paths: Vec<PathBuf>,
    /// Offloads not kept here: registered from this start's flags (`--handler`).
    from_flags: Vec<u32>,
}

/// The largest offloads file read: every offload the registry holds at the verifier's largest
/// program, in hex, with room to spare.
const STORE_MAX: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("offloads file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("offloads file {path}, line {line}: {reason}")]
    Bad {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl OffloadStore {
    /// The store of a host agent whose data lives in `persist` (preferred) or `snapshot`;
    /// `None` when its data does not outlive it.
    pub fn beside(persist: Option<&Path>, snapshot: Option<&Path>) -> Option<OffloadStore> {
        let paths: Vec<PathBuf> = [persist, snapshot]
            .into_iter()
            .flatten()
            .map(|data| naam_core::run_dir::beside(data, ".offloads"))
            .collect();
        // Before 2026-12-07 the file replaced the data file's extension instead, so that
        // `node.a` and `node.b` shared `node.offloads`. Such a file is not read (it may be
        // another deployment's); the operator hears of it.
        for data in [persist, snapshot].into_iter().flatten() {
            let old = data.with_extension("offloads");
            let new = naam_core::run_dir::beside(data, ".offloads");
            if old != new && old.is_file() && !new.exists() {
                tracing::warn!(
                    old = %old.display(),
                    new = %new.display(),
                    "an offloads file of the old name is not read (data files differing only by \
                     extension shared it); if it holds this deployment's offloads, rename it"
                );
            }
        }
        (!paths.is_empty()).then_some(OffloadStore {
            paths,
            from_flags: Vec::new(),
        })
    }

    /// Offloads registered from this start's flags: not kept in the file (the next start
    /// registers them from its own flags, after the file's).
    pub fn set_from_flags(&mut self, ids: Vec<u32>) {
        self.from_flags = ids;
    }

    /// The file read at start: the first of the files that exists (the persisted area's
    /// before the snapshot's), else the first.
    pub fn path(&self) -> &Path {
        self.paths
            .iter()
            .find(|p| p.exists())
            .unwrap_or(&self.paths[0])
    }

    /// Writes every run-time offload of `registry` (ids from [`FIRST_DYNAMIC`]) but `without`
    /// (one about to be removed: saved first, so that a failure leaves it registered), and
    /// `next`, the id the host agent gives next.
    pub fn save(
        &self,
        registry: &Registry,
        without: Option<u32>,
        next: u32,
    ) -> Result<(), StoreError> {
        let mut text = format!("{HEADER}\nnext {next}\nflags");
        for id in &self.from_flags {
            let digest = registry
                .get(*id)
                .map_or(0, |o| program_digest(o.program.insns()));
            let _ = write!(text, " {id}:{digest:016x}");
        }
        text.push('\n');
        let mut count = 0;
        let kept = registry.list().into_iter().filter(|o| {
            o.id >= FIRST_DYNAMIC && !self.from_flags.contains(&o.id) && Some(o.id) != without
        });
        for o in kept {
            let insns = o.program.insns();
            let _ = writeln!(
                text,
                "{} {} {} {} {} {} {:016x}",
                o.id,
                o.tenant,
                o.class,
                o.read_only as u8,
                hex(o.name.as_bytes()),
                hex(insns),
                program_digest(insns)
            );
            count += 1;
        }
        let digest = program_digest(text.as_bytes());
        let _ = writeln!(text, "end {count} {digest:016x}");
        for path in &self.paths {
            let io = |source| StoreError::Io {
                path: path.clone(),
                source,
            };
            let tmp = naam_core::run_dir::beside(path, ".tmp");
            crate::private_file::replace(path, &tmp, text.as_bytes()).map_err(io)?;
        }
        Ok(())
    }

    /// Registers the offloads of the file (if there is one) under their ids, each verified
    /// again; returns how many and the id to give next. A damaged or unverifiable entry, or
    /// a file cut short or changed, fails the whole load (the operator decides; nothing
    /// half-loaded runs).
    pub fn load(
        &self,
        registry: &Registry,
        verifier: &VerifierConfig,
    ) -> Result<Loaded, StoreError> {
        let path = self.path().to_owned();
        let bytes = match naam_core::run_dir::read_regular(&path, STORE_MAX, "an offloads file") {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        load_bytes(bytes, registry, verifier).map_err(|(line, reason)| StoreError::Bad {
            path,
            line,
            reason,
        })
    }
}

/// [`OffloadStore::load`] of the file's bytes: the offloads registered, or the line and what
/// is wrong with it (nothing registered then). Never panics, on any input (fuzzed:
/// `fuzz/fuzz_targets/offloads_load.rs`).
pub fn load_bytes(
    bytes: Vec<u8>,
    registry: &Registry,
    verifier: &VerifierConfig,
) -> Result<Loaded, (usize, String)> {
    let bad = |line: usize, reason: String| (line, reason);
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        bad(line, "not UTF-8 text".into())
    })?;
    // Format 2: its `next` and `flags` lines (format 1 has neither).
    let (body, format2) = match text.split_once('\n') {
        Some((HEADER, _)) => {
            let (body, next, flags) = checked(&text)?;
            (body, Some((next, flags)))
        }
        Some((HEADER_V1, _)) => (text.as_str(), None),
        _ => return Err(bad(1, format!("the first line is not {HEADER:?}"))),
    };
    let mut entries = Vec::new();
    // After the header (and `next` and `flags`); blank lines (an editor's last newline) are
    // nothing.
    let skip = if format2.is_some() { 3 } else { 1 };
    let lines = body.lines().enumerate().skip(skip);
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        let f: Vec<&str> = line.split(' ').collect();
        let [id, tenant, class, ro, name, insns, digest] = f[..] else {
            return Err(bad(n, format!("{} fields, 7 expected", f.len())));
        };
        let num = |s: &str, what: &str| -> Result<u64, (usize, String)> {
            s.parse()
                .map_err(|_| bad(n, format!("{what} {s:?} is not a number")))
        };
        let id = u32::try_from(num(id, "id")?).map_err(|_| bad(n, "id too large".into()))?;
        if id < FIRST_DYNAMIC {
            return Err(bad(n, format!("id {id} is a bundled offload's")));
        }
        // Checked before anything is registered, so that a refused file leaves nothing.
        if id as usize >= naam_core::pool::MAX_OFFLOADS {
            return Err(bad(n, format!("id {id} is past the registry's ids")));
        }
        if entries
            .iter()
            .any(|e: &(usize, u32, OffloadSpec, _)| e.1 == id)
        {
            return Err(bad(n, format!("id {id} appears twice")));
        }
        let name = String::from_utf8(unhex(name).ok_or_else(|| bad(n, "name not hex".into()))?)
            .map_err(|_| bad(n, "name not UTF-8".into()))?;
        // What a REGISTER would have been refused is refused here too; but a name with an
        // invisible or reordering character, which REGISTER took until 2026-12-08, is kept
        // (listings escape them): refusing it would refuse the whole file at the start.
        match naam_core::wire::check_offload_name(&name) {
            Err(WireError::ControlChar { .. }) if !name.chars().any(char::is_control) => {}
            r => r.map_err(|e| bad(n, e.to_string()))?,
        }
        let insns = unhex(insns).ok_or_else(|| bad(n, "instructions not hex".into()))?;
        let digest =
            u64::from_str_radix(digest, 16).map_err(|_| bad(n, "digest not hex".into()))?;
        if program_digest(&insns) != digest {
            return Err(bad(n, "the instructions do not match their digest".into()));
        }
        let tenant = u32::try_from(num(tenant, "tenant")?)
            .ok()
            .filter(|&t| t != naam_core::auth::ANY_TENANT)
            .ok_or_else(|| {
                bad(
                    n,
                    "tenant out of range (or the admin's reserved one)".into(),
                )
            })?;
        let spec = OffloadSpec {
            name: name.clone(),
            tenant,
            class: u16::try_from(num(class, "class")?)
                .map_err(|_| bad(n, "class too large".into()))?,
            read_only: match ro {
                "0" => false,
                "1" => true,
                _ => return Err(bad(n, format!("read-only flag {ro:?}"))),
            },
        };
        let program = verify(&Program::from_insns(name, insns), verifier)
            .map_err(|e| bad(n, format!("does not verify: {e}")))?;
        entries.push((n, id, spec, Arc::new(program)));
    }
    let count = entries.len();
    let mut registered = Vec::with_capacity(count);
    for (n, id, spec, program) in entries {
        if let Err(e) = registry.register_as(id, spec, program) {
            // Whole or nothing: an id taken already, or a program this engine cannot run.
            for id in registered {
                let _ = registry.unregister(id);
            }
            return Err(bad(n, e.to_string()));
        }
        registered.push(id);
    }
    let (next, flags) = format2.map_or((None, Vec::new()), |(n, f)| (Some(n), f));
    Ok(Loaded { count, next, flags })
}

/// A format-2 file's text up to its `end` line, its `next` id and its `flags` ids, once the
/// `end` line's count and digest match what precedes it; else the line and what is wrong.
fn checked(text: &str) -> Result<(&str, u32, FlagIds), (usize, String)> {
    let lines = text.lines().count();
    let trimmed = text.trim_end_matches(['\n', ' ']);
    let (body, end) = match trimmed.rfind('\n') {
        Some(at) => (&trimmed[..at + 1], &trimmed[at + 1..]),
        None => return Err((1, "no `end` line: cut short".into())),
    };
    let end_line = body.lines().count() + 1;
    let f: Vec<&str> = end.split(' ').collect();
    let ["end", count, digest] = f[..] else {
        return Err((
            lines,
            "the last line is not `end COUNT DIGEST`: cut short".into(),
        ));
    };
    if u64::from_str_radix(digest, 16).ok() != Some(program_digest(body.as_bytes())) {
        return Err((
            end_line,
            "the file does not match its digest: changed or damaged".into(),
        ));
    }
    let entries = body
        .lines()
        .skip(3)
        .filter(|l| !l.trim().is_empty())
        .count();
    if count.parse::<usize>().ok() != Some(entries) {
        return Err((
            end_line,
            format!("{entries} offloads, the end line says {count}"),
        ));
    }
    let next = body
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("next "))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or((2, "the second line is not `next ID`".to_string()))?;
    let flags = body
        .lines()
        .nth(2)
        .and_then(|l| match l {
            "flags" => Some(""),
            l => l.strip_prefix("flags "),
        })
        .and_then(|flags| {
            flags
                .split_whitespace()
                .map(|f| {
                    let (id, digest) = f.split_once(':')?;
                    Some((id.parse().ok()?, u64::from_str_radix(digest, 16).ok()?))
                })
                .collect()
        })
        .ok_or((3, "the third line is not `flags ID:DIGEST…`".to_string()))?;
    Ok((body, next, flags))
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use naam_core::pool::Registry;

    fn program() -> Arc<naam_core::verifier::VerifiedProgram> {
        // r0 = 7; exit
        let insns = [[0xb7, 0, 0, 0, 7, 0, 0, 0], [0x95, 0, 0, 0, 0, 0, 0, 0]].concat();
        Arc::new(
            verify(
                &Program::from_insns("seven", insns),
                &VerifierConfig::default(),
            )
            .unwrap(),
        )
    }

    fn spec(name: &str) -> OffloadSpec {
        OffloadSpec {
            name: name.into(),
            tenant: 2,
            class: 3,
            read_only: true,
        }
    }

    #[test]
    fn run_time_offloads_come_back_under_their_ids_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffloadStore::beside(Some(&dir.path().join("area")), None).unwrap();
        assert_eq!(store.path(), dir.path().join("area.offloads"));
        let r = Registry::new();
        r.register_as(3, spec("bundled"), program()).unwrap();
        r.register_as(17, spec("mine ünï"), program()).unwrap();
        r.register_as(21, spec("other"), program()).unwrap();
        store.save(&r, None, 22).unwrap();

        let back = Registry::new();
        assert_eq!(
            store.load(&back, &VerifierConfig::default()).unwrap().count,
            2
        );
        let ids: Vec<(u32, String, u32, u16, bool)> = back
            .list()
            .iter()
            .map(|o| (o.id, o.name.clone(), o.tenant, o.class, o.read_only))
            .collect();
        assert_eq!(
            ids,
            vec![
                (17, "mine ünï".into(), 2, 3, true),
                (21, "other".into(), 2, 3, true)
            ]
        );
        assert_eq!(back.get(17).unwrap().program.insns(), program().insns());

        // One flipped instruction byte: refused by its digest, nothing registered.
        let text = std::fs::read_to_string(store.path()).unwrap();
        let damaged = text.replacen("b700000007", "b700000008", 1);
        assert_ne!(damaged, text);
        std::fs::write(store.path(), damaged).unwrap();
        let none = Registry::new();
        let e = store.load(&none, &VerifierConfig::default()).unwrap_err();
        assert!(e.to_string().contains("digest"), "{e}");
        assert!(none.is_empty());
        // Garbage of every kind is an error, never a panic.
        for junk in [
            "",
            "naam-offloads 1\n1 2",
            "naam-offloads 1\nx y z w v u t",
            "hello",
        ] {
            std::fs::write(store.path(), junk).unwrap();
            let r = Registry::new();
            let _ = store.load(&r, &VerifierConfig::default());
        }
        // No file: nothing to load.
        std::fs::remove_file(store.path()).unwrap();
        assert_eq!(
            store
                .load(&Registry::new(), &VerifierConfig::default())
                .unwrap(),
            Loaded::default()
        );
    }

    /// Found by probing (2026-12-07): data files differing only by extension shared one
    /// offloads file; a FIFO or /dev/zero in its place hung the start or ate memory; a
    /// blank last line or a name a REGISTER would refuse were taken as they came.
    #[test]
    fn each_data_file_has_its_own_store_and_odd_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("node.a"), dir.path().join("node.b"));
        let (sa, sb) = (
            OffloadStore::beside(Some(&a), None).unwrap(),
            OffloadStore::beside(Some(&b), None).unwrap(),
        );
        assert_eq!(sa.path(), dir.path().join("node.a.offloads"));
        assert_ne!(sa.path(), sb.path());
        let r = Registry::new();
        r.register_as(17, spec("only-a"), program()).unwrap();
        sa.save(&r, None, 22).unwrap();
        assert_eq!(
            sb.load(&Registry::new(), &VerifierConfig::default())
                .unwrap()
                .count,
            0
        );

        // Not regular files: refused at once, never read.
        let fifo = dir.path().join("fifo.offloads");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        let zero = dir.path().join("zero.offloads");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        for data in ["fifo", "zero"] {
            let store = OffloadStore::beside(Some(&dir.path().join(data)), None).unwrap();
            let e = store
                .load(&Registry::new(), &VerifierConfig::default())
                .unwrap_err();
            assert!(
                with_sources_of(&e).contains("not a regular file"),
                "{data}: {e}"
            );
        }

        // A blank last line is nothing; a name or tenant a REGISTER refuses is refused.
        let text = std::fs::read_to_string(sa.path()).unwrap();
        std::fs::write(sa.path(), format!("{text}\n  \n")).unwrap();
        assert_eq!(
            sa.load(&Registry::new(), &VerifierConfig::default())
                .unwrap()
                .count,
            1
        );
        // Each line checked as it is (in a file of format 1, which has no digest over all).
        let line = text.lines().nth(3).unwrap().to_owned();
        let name_hex = hex(b"only-a");
        for (from, to, why) in [
            (name_hex.clone(), String::new(), "empty"),
            (name_hex.clone(), hex(b"bad\x07name"), "control character"),
            (" 2 3 1 ".into(), " 4294967295 3 1 ".into(), "tenant"),
        ] {
            let edited = line.replacen(&from, &to, 1);
            assert_ne!(edited, line);
            std::fs::write(sa.path(), format!("{HEADER_V1}\n{edited}\n")).unwrap();
            let e = sa
                .load(&Registry::new(), &VerifierConfig::default())
                .unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
        // A name REGISTER took before invisible characters were refused is kept.
        let edited = line.replacen(&name_hex, &hex("zw\u{200b}sp".as_bytes()), 1);
        std::fs::write(sa.path(), format!("{HEADER_V1}\n{edited}\n")).unwrap();
        let back = Registry::new();
        assert_eq!(sa.load(&back, &VerifierConfig::default()).unwrap().count, 1);
        assert_eq!(back.list()[0].name, "zw\u{200b}sp");
    }

    #[test]
    fn offloads_of_the_flags_and_one_being_removed_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = OffloadStore::beside(Some(&dir.path().join("area")), None).unwrap();
        let r = Registry::new();
        for id in [16, 17, 18] {
            r.register_as(id, spec(&format!("o{id}")), program())
                .unwrap();
        }
        store.set_from_flags(vec![16]);
        store.save(&r, Some(18), 19).unwrap();
        let back = Registry::new();
        assert_eq!(
            store.load(&back, &VerifierConfig::default()).unwrap().count,
            1
        );
        assert_eq!(
            back.list().iter().map(|o| o.id).collect::<Vec<_>>(),
            vec![17]
        );
    }

    fn with_sources_of(e: &StoreError) -> String {
        naam_core::with_sources(e)
    }

    #[test]
    fn the_offloads_are_kept_beside_the_snapshot_too_and_privately() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (area, snap) = (dir.path().join("area"), dir.path().join("snap"));
        let store = OffloadStore::beside(Some(&area), Some(&snap)).unwrap();
        let r = Registry::new();
        r.register_as(17, spec("mine"), program()).unwrap();
        store.save(&r, None, 22).unwrap();
        for p in [
            naam_core::run_dir::beside(&area, ".offloads"),
            naam_core::run_dir::beside(&snap, ".offloads"),
        ] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", p.display());
        }
        // A reboot: the area (on a tmpfs) is gone, the snapshot is not.
        std::fs::remove_file(naam_core::run_dir::beside(&area, ".offloads")).unwrap();
        let restarted = OffloadStore::beside(None, Some(&snap)).unwrap();
        let back = Registry::new();
        assert_eq!(
            restarted
                .load(&back, &VerifierConfig::default())
                .unwrap()
                .count,
            1
        );
        assert_eq!(back.get(17).unwrap().name, "mine");
    }

    /// Probe 20: a restart gave the ids of removed offloads again (the next id was not kept),
    /// a file cut after a whole line lost that offload silently (and its id was given to the
    /// next registration), and an offload's owner or class could be changed in the file.
    #[test]
    fn the_next_id_is_kept_and_a_file_cut_short_or_changed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = OffloadStore::beside(Some(&dir.path().join("area")), None).unwrap();
        let r = Registry::new();
        for id in [16, 17, 18, 20] {
            r.register_as(id, spec(&format!("o{id}")), program())
                .unwrap();
        }
        // 20 is a `--handler` flag's: its id is kept, not its program.
        store.set_from_flags(vec![20]);
        store.save(&r, Some(18), 21).unwrap();
        let load = || store.load(&Registry::new(), &VerifierConfig::default());
        assert_eq!(
            load().unwrap(),
            Loaded {
                count: 2,
                next: Some(21),
                flags: vec![(20, program_digest(program().insns()))],
            }
        );
        let text = std::fs::read_to_string(store.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        let write = |t: &str| std::fs::write(store.path(), t).unwrap();
        // Cut after each whole line, and in the middle of the last.
        for keep in 1..lines.len() {
            write(&(lines[..keep].join("\n") + "\n"));
            let e = load().unwrap_err().to_string();
            assert!(
                e.contains("cut short") || e.contains("digest"),
                "{keep}: {e}"
            );
        }
        write(&text[..text.len() - 3]);
        assert!(load().is_err());
        // An owner, a class, the next id, a flag's id changed: refused whole.
        for (from, to) in [
            (" 2 3 1 ", " 1 3 1 "),
            (" 2 3 1 ", " 2 9 1 "),
            ("next 21", "next 17"),
            ("flags 20", "flags 18"),
        ] {
            let changed = text.replacen(from, to, 1);
            assert_ne!(changed, text);
            write(&changed);
            let e = load().unwrap_err().to_string();
            assert!(e.contains("digest"), "{from} -> {to}: {e}");
        }
        // A file of format 1 (before the next id was kept) is read as before.
        let v1: String = [HEADER_V1, lines[3], lines[4]].join("\n") + "\n";
        write(&v1);
        assert_eq!(
            load().unwrap(),
            Loaded {
                count: 2,
                next: None,
                flags: vec![],
            }
        );
    }

    /// A file that cannot be registered whole (an id taken already) registers nothing.
    #[test]
    fn a_file_that_cannot_be_registered_whole_registers_nothing() {
        let r = Registry::new();
        r.register_as(17, spec("taken"), program()).unwrap();
        let e = load_bytes(valid_file(), &r, &VerifierConfig::default()).unwrap_err();
        assert!(e.1.contains("already registered"), "{e:?}");
        let left: Vec<(u32, String)> = r.list().iter().map(|o| (o.id, o.name.clone())).collect();
        assert_eq!(left, [(17, "taken".to_string())]);
    }

    /// A file as a host agent writes it: two offloads.
    fn valid_file() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let store = OffloadStore::beside(Some(&dir.path().join("area")), None).unwrap();
        let r = Registry::new();
        for id in [16, 17] {
            r.register_as(id, spec(&format!("o{id}")), program())
                .unwrap();
        }
        store.save(&r, None, 18).unwrap();
        std::fs::read(store.path()).unwrap()
    }

    fn loads_whole_or_nothing(bytes: Vec<u8>) {
        let r = Registry::new();
        match load_bytes(bytes, &r, &VerifierConfig::default()) {
            Ok(l) => assert_eq!(l.count, r.len()),
            Err(_) => assert!(r.is_empty(), "a refused file left offloads"),
        }
    }

    // The loader refuses what it does not take whole and never panics, on any bytes and on
    // a valid file with one byte changed, cut or inserted (the fuzz target
    // `fuzz/fuzz_targets/offloads_load.rs` runs the same for longer).
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn any_bytes_load_whole_or_not_at_all(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            loads_whole_or_nothing(bytes);
        }

        #[test]
        fn a_changed_valid_file_loads_whole_or_not_at_all(at in 0usize..2000, byte in proptest::prelude::any::<u8>(), how in 0u8..3) {
            let mut f = valid_file();
            let at = at % f.len();
            match how {
                0 => f[at] = byte,
                1 => f.truncate(at),
                _ => f.insert(at, byte),
            }
            loads_whole_or_nothing(f);
        }
    }
}
