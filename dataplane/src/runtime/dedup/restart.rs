//! A restart with another layout: the reply-cache files (`RUN_DIR/reply-cache.W`) an earlier
//! dataplane left can be taken over only by one with the same workers and capacity: the
//! kernel spreads client flows over the workers' sockets by a hash of the worker count, so
//! with another count a client's retransmission reaches a worker whose file never saw its
//! request, and would run it again. Rather than serve meanwhile, the new dataplane waits until
//! no entry of the old files can be retransmitted any more (the cache's retention, 3 s by
//! default, is longer than any client retries), then starts them empty. The wait is bounded by
//! the retention and logged with its reason.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Entry, State, ENTRY, HEADER, MAGIC, WAYS};
use crate::port::MAX_PAYLOAD;

/// The first header word of files written before the header held the worker count.
const MAGIC_V1: u64 = u64::from_le_bytes(*b"NAAMRPC1");

/// What a reply-cache file holds, read without taking it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Survey {
    /// The layout it was written for, `(entries, workers)`; `None` for a file this version
    /// cannot take over (written before the worker count was kept, torn, or foreign).
    pub layout: Option<(usize, usize)>,
    /// Entries whose request a client may still retransmit: in progress or lost (it may
    /// have run), or completed less than the retention ago.
    pub live: usize,
    /// When the last of them stops mattering (CLOCK_MONOTONIC ns, as the entries' times).
    pub settled_ns: u64,
}

fn word(bytes: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Reads the file's contents `bytes` as of `now_ns`. An entry in progress has no time (its
/// request began at most a retention ago): it counts as live for a whole retention from now.
/// A file whose header is not a reply cache's counts likewise as one live entry, unless it is
/// all zeros (created, never written).
pub fn survey(bytes: &[u8], retain_ns: u64, now_ns: u64) -> Survey {
    let header: [u64; 5] = std::array::from_fn(|k| word(bytes, 8 * k as u64).unwrap_or(0));
    let unknown = Survey {
        layout: None,
        live: 1,
        settled_ns: now_ns.saturating_add(retain_ns),
    };
    let (magic, sets, ways, payload) = (header[0], header[1], header[2], header[3]);
    if magic != MAGIC && magic != MAGIC_V1 {
        let blank = bytes.iter().take(HEADER as usize).all(|&b| b == 0);
        return if blank {
            Survey {
                layout: None,
                live: 0,
                settled_ns: now_ns,
            }
        } else {
            unknown
        };
    }
    let entries = sets.saturating_mul(WAYS as u64);
    let fits = entries
        .checked_mul(ENTRY)
        .and_then(|e| e.checked_add(HEADER))
        .is_some_and(|end| end <= bytes.len() as u64);
    if ways != WAYS as u64 || payload != MAX_PAYLOAD as u64 || !fits {
        return unknown;
    }
    let mut s = Survey {
        layout: (magic == MAGIC).then_some((entries as usize, header[4] as usize)),
        live: 0,
        settled_ns: now_ns,
    };
    // Never past one retention from now: a time ahead of this clock was taken by another
    // boot's (a run directory kept across a reboot), and means nothing here.
    let horizon = now_ns.saturating_add(retain_ns);
    for i in 0..entries {
        let at = HEADER + i * ENTRY;
        let e = Entry::from_words(std::array::from_fn(|k| {
            word(bytes, at + 8 * k as u64).unwrap_or(0)
        }));
        let until = match e.state {
            State::Empty => continue,
            State::InProgress => horizon,
            State::Done | State::Lost => e.done_ns.saturating_add(retain_ns).min(horizon),
        };
        if until > now_ns {
            s.live += 1;
            s.settled_ns = s.settled_ns.max(until);
        }
    }
    s
}

/// Why a dataplane must wait before serving, and how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub duration: Duration,
    /// The file that decided it, and what it was written for.
    pub file: PathBuf,
    pub reason: String,
}

/// What [`survey`] needs of the file at `path`: its header and entries, not the replies
/// after them (most of the file: 16 of its 16.3 MiB by default).
pub fn read_entries(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // As the reply cache opens it (`MappedFile::open`): no symlink, nothing but a regular
    // file (a FIFO would block the start).
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    (&mut file).take(HEADER).read_to_end(&mut bytes)?;
    // A header that is not a reply cache's is judged on itself; one that claims more entries
    // than the file holds gets what there is (and [`survey`] finds it short).
    if word(&bytes, 0).is_some_and(|m| m == MAGIC || m == MAGIC_V1) {
        let sets = word(&bytes, 8).unwrap_or(0);
        let rest = sets.saturating_mul(WAYS as u64).saturating_mul(ENTRY);
        file.take(rest).read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

/// The reply-cache files in `dir`, by worker index.
pub fn files(dir: &Path) -> std::io::Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let Some(w) = name
            .to_str()
            .and_then(|n| n.strip_prefix("reply-cache."))
            .and_then(|w| w.parse::<usize>().ok())
        else {
            continue;
        };
        out.push((w, e.path()));
    }
    out.sort();
    Ok(out)
}

/// How long a dataplane of `workers` workers with `entries` entries each must wait before it
/// serves, given the reply-cache `files` an earlier one left ([`files`]; none when every file
/// with live entries is one it takes over as it is).
pub fn wait_before_serving(
    files: &[(usize, PathBuf)],
    (entries, workers): (usize, usize),
    retain_ns: u64,
    now_ns: u64,
) -> std::io::Result<Option<Wait>> {
    let want = entries.div_ceil(WAYS) * WAYS;
    let mut longest: Option<Wait> = None;
    for (w, path) in files {
        let s = survey(&read_entries(path)?, retain_ns, now_ns);
        if s.live == 0 || (*w < workers && s.layout == Some((want, workers))) {
            continue;
        }
        let duration = Duration::from_nanos(s.settled_ns.saturating_sub(now_ns));
        if longest.as_ref().is_some_and(|l| l.duration >= duration) {
            continue;
        }
        let written = match s.layout {
            Some((e, n)) => format!("{n} workers with {e} entries each"),
            None => "a layout this version cannot read".into(),
        };
        longest = Some(Wait {
            duration,
            file: path.clone(),
            reason: format!(
                "it remembers {} requests that may still be retransmitted, written by a dataplane of \
                 {written}; this one has {workers} workers with {want} entries each, so their \
                 retransmissions could reach a worker that never saw them",
                s.live
            ),
        });
    }
    Ok(longest)
}

#[cfg(test)]
mod tests {
    use super::super::{ReplyCache, WAYS};
    use super::*;
    use std::net::SocketAddrV4;

    const RETAIN: u64 = 1_000_000;

    fn client() -> SocketAddrV4 {
        "10.0.0.1:5000".parse().unwrap()
    }

    /// A file for worker `w` of `workers`, with one completed request (done at `t`) and one
    /// in progress, left as a killed dataplane leaves it.
    fn left_behind(dir: &Path, w: usize, workers: usize, t: u64) {
        let path = dir.join(format!("reply-cache.{w}"));
        let (mut c, _) = ReplyCache::open(&path, (64, workers), RETAIN, t).unwrap();
        assert_eq!(
            c.begin(client(), 1, 1, naam_core::wire::Kind::AmRequest as u8, t),
            super::super::Begin::Started
        );
        c.complete(client(), 1, b"reply", t);
        assert_eq!(
            c.begin(client(), 2, 1, naam_core::wire::Kind::AmRequest as u8, t),
            super::super::Begin::Started
        );
    }

    /// A FIFO or a symlink in a reply cache's place is refused when the caches are looked
    /// at before serving (the FIFO blocked the start for good).
    #[test]
    #[allow(unsafe_code)]
    fn a_fifo_or_a_symlink_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("reply-cache.0");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path that lives through the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_entries(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let link = dir.path().join("reply-cache.1");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        assert!(read_entries(&link).is_err());
    }

    #[test]
    fn the_same_layout_is_taken_over_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        left_behind(dir.path(), 0, 2, 10);
        left_behind(dir.path(), 1, 2, 10);
        assert_eq!(
            wait_before_serving(&files(dir.path()).unwrap(), (64, 2), RETAIN, 20).unwrap(),
            None
        );
    }

    #[test]
    fn another_worker_count_waits_out_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        left_behind(dir.path(), 0, 2, 10);
        left_behind(dir.path(), 1, 2, 10);
        // Fewer workers, more, or another capacity: the retransmissions could land elsewhere.
        for layout in [(64, 1), (64, 3), (128, 2)] {
            let w = wait_before_serving(&files(dir.path()).unwrap(), layout, RETAIN, 20)
                .unwrap()
                .expect("a wait");
            // The request in progress may be retransmitted for a whole retention from now.
            assert_eq!(w.duration, Duration::from_nanos(RETAIN), "{layout:?}");
            assert!(w.reason.contains("2 workers"), "{}", w.reason);
        }
    }

    #[test]
    fn expired_entries_need_no_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reply-cache.3");
        let (mut c, _) = ReplyCache::open(&path, (64, 4), RETAIN, 10).unwrap();
        assert_eq!(
            c.begin(client(), 1, 1, naam_core::wire::Kind::AmRequest as u8, 10),
            super::super::Begin::Started
        );
        c.complete(client(), 1, b"reply", 10);
        drop(c);
        let s = survey(&std::fs::read(&path).unwrap(), RETAIN, 20);
        assert_eq!((s.live, s.settled_ns), (1, 10 + RETAIN));
        // What is read of the file for it: the header and the entries, not the replies.
        let head = read_entries(&path).unwrap();
        assert_eq!(head.len() as u64, HEADER + 64 * ENTRY);
        assert_eq!(survey(&head, RETAIN, 20), s);
        assert_eq!(
            wait_before_serving(&files(dir.path()).unwrap(), (64, 1), RETAIN, 10 + RETAIN).unwrap(),
            None,
            "completed a retention ago: no client retries it any more"
        );
    }

    #[test]
    fn times_from_another_boot_wait_at_most_one_retention() {
        let dir = tempfile::tempdir().unwrap();
        // Written by a dataplane whose clock read far ahead of this one's (a reboot since).
        left_behind(dir.path(), 0, 2, 1 << 50);
        let w = wait_before_serving(&files(dir.path()).unwrap(), (64, 1), RETAIN, 1_000)
            .unwrap()
            .expect("a wait");
        assert_eq!(w.duration, Duration::from_nanos(RETAIN));
        // Taken over as it is, its entries expire one retention from now too.
        let path = dir.path().join("reply-cache.0");
        let (c, r) = ReplyCache::open(&path, (64, 2), RETAIN, 1_000).unwrap();
        assert_eq!((r.done, r.lost), (1, 1));
        drop(c);
        let s = survey(&std::fs::read(&path).unwrap(), RETAIN, 2_000);
        assert_eq!((s.live, s.settled_ns), (2, 1_000 + RETAIN));
    }

    #[test]
    fn unreadable_files_wait_and_blank_ones_do_not() {
        assert_eq!(survey(&[0u8; 100], RETAIN, 5).live, 0);
        for junk in [&b"garbage"[..], &[0xff; 4096][..]] {
            let s = survey(junk, RETAIN, 5);
            assert_eq!((s.layout, s.live, s.settled_ns), (None, 1, 5 + RETAIN));
        }
        // A header claiming more entries than the file holds is not read past its end.
        let mut b = vec![0u8; 64];
        b[..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        b[16..24].copy_from_slice(&(WAYS as u64).to_le_bytes());
        b[24..32].copy_from_slice(&(MAX_PAYLOAD as u64).to_le_bytes());
        assert_eq!(survey(&b, RETAIN, 5).layout, None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn no_file_content_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), now in 0u64..u64::MAX) {
            let s = survey(&bytes, RETAIN, now);
            proptest::prop_assert!(s.settled_ns >= now || s.live == 0);
        }
    }
}
