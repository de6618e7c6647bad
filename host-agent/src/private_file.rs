//! Files only this user may read or write (mode 0600): the key files, the snapshot (every
//! tenant's data and the regions' keys), the offload store.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Creates `tmp` afresh with mode 0600 (one left by a crash is removed first: the mode only
/// applies to a file this call creates).
pub(crate) fn create(tmp: &Path) -> std::io::Result<File> {
    let _ = std::fs::remove_file(tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
}

/// Replaces `path` with `bytes`: written to `tmp` ([`create`]), synced, renamed over `path`,
/// so a reader never sees half of it. A failure removes `tmp` ([`discard_on_error`]).
pub(crate) fn replace(path: &Path, tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    discard_on_error(tmp, || {
        let mut f = create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    })
}

/// Runs `write`, which fills `tmp` and renames it into place; when it fails, removes what it
/// left of `tmp`: a half-written copy on a full filesystem holds the space every later
/// write needs (probe 22: a 2 MB snapshot's `.tmp` then failed every registration).
pub(crate) fn discard_on_error<T, E>(
    tmp: &Path,
    write: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    r
}

/// Opens (creating, mode 0600) and locks `path` for this process (`flock`, released when the
/// file is closed, so when the process is gone however it ended); `None` when another
/// process holds it.
pub(crate) fn try_lock(path: &Path) -> std::io::Result<Option<File>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(f)),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
        Err(e) => Err(e.into()),
    }
}
