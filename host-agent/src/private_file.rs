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
/// so a reader never sees half of it.
pub(crate) fn replace(path: &Path, tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = create(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}
