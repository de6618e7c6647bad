//! A file mapped shared, as [`RegionMem`]: state one process keeps across its own restarts
//! (the dataplane's reply cache, `RUN_DIR/reply-cache.W`). Like the shared area, it lives on
//! tmpfs: it survives the process, not a reboot.

use crate::error::LinkError;
use crate::sys;
use naam_core::memory::RegionMem;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// What [`MappedFile::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A new, zeroed file.
    Created,
    /// The file was there with this length: its contents are as the last user left them.
    Reopened,
    /// The file was there with another length: it was emptied and resized (zeroed).
    Resized,
}

/// A whole file mapped read-write and shared. The view holds the mapping, so it stays valid
/// for as long as it is used, even past the `MappedFile`.
pub struct MappedFile {
    mem: RegionMem,
    _fd: OwnedFd,
}

impl MappedFile {
    /// Opens `path` (creating it) as `len` bytes, locks it (a second process opening it gets
    /// an error until this one exits) and maps it. Only a regular file is taken, and not
    /// through a symlink: the file is resized and written, and a link could name any file of
    /// this user's (a FIFO or a device would block the open or not map).
    pub fn open(path: &Path, len: u64) -> Result<(MappedFile, Opened), LinkError> {
        let io = |what| LinkError::io(what);
        let refuse = |why: &str| {
            LinkError::io("open a mapped file")(std::io::Error::other(format!(
                "{}: {why}",
                path.display()
            )))
        };
        let file =
            sys::open_private(path, libc::O_NOFOLLOW | libc::O_NONBLOCK).map_err(|e| {
                match e.raw_os_error() {
                    Some(libc::ELOOP) => refuse("a symbolic link, not followed"),
                    _ => io("open a mapped file")(e),
                }
            })?;
        if !file.metadata().map_err(io("stat a mapped file"))?.is_file() {
            return Err(refuse("not a regular file"));
        }
        // One user at a time (the lock goes with the descriptor, so with the process).
        if !sys::try_lock_exclusive(file.as_fd()).map_err(io("lock a mapped file"))? {
            return Err(LinkError::io("lock a mapped file")(std::io::Error::other(
                format!("{} is in use by another process", path.display()),
            )));
        }
        let had = file.metadata().map_err(io("stat a mapped file"))?.len();
        let opened = match had {
            0 => Opened::Created,
            n if n == len => Opened::Reopened,
            _ => Opened::Resized,
        };
        if opened != Opened::Reopened {
            file.set_len(0)
                .and_then(|_| file.set_len(len))
                .map_err(io("size a mapped file"))?;
        }
        // Also a file reopened: an earlier version left it sparse.
        sys::allocate(file.as_fd(), len).map_err(|e| {
            LinkError::io("allocate a mapped file")(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ))
        })?;
        let fd = OwnedFd::from(file);
        let len_usize = usize::try_from(len).map_err(|_| LinkError::Layout {
            reason: "mapped file larger than the address space",
        })?;
        let map = sys::Mapping::map(fd.as_fd(), len_usize, false).map_err(io("mmap a file"))?;
        let mem = map.view(0, len).ok_or(LinkError::Layout {
            reason: "mapped file view",
        })?;
        Ok((MappedFile { mem, _fd: fd }, opened))
    }

    /// The file's bytes.
    pub fn mem(&self) -> &RegionMem {
        &self.mem
    }

    pub fn len(&self) -> usize {
        self.mem.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("len", &self.len())
            .field("mem", &self.mem)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_survive_a_reopen_and_a_new_length_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let (f, o) = MappedFile::open(&path, 4096).unwrap();
        assert_eq!(o, Opened::Created);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only its user may read it: {mode:o}");
        f.mem().store_u64(8, 42).unwrap();
        drop(f);
        let (f, o) = MappedFile::open(&path, 4096).unwrap();
        assert_eq!(o, Opened::Reopened);
        assert_eq!(f.mem().load_u64(8), Some(42));
        assert!(MappedFile::open(&path, 4096).is_err(), "locked while open");
        drop(f);
        let (f, o) = MappedFile::open(&path, 8192).unwrap();
        assert_eq!(o, Opened::Resized);
        assert_eq!(f.mem().load_u64(8), Some(0));
        assert_eq!(f.len(), 8192);
    }

    /// Found by probing (2026-12-07): a symlink in a reply cache's place made the dataplane
    /// resize and overwrite the file it named; a FIFO there blocked its start for good.
    #[test]
    #[allow(unsafe_code)]
    fn a_symlink_or_a_fifo_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"someone's").unwrap();
        let link = dir.path().join("state");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = MappedFile::open(&link, 4096).unwrap_err();
        assert!(naam_core::with_sources(&e).contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"someone's");
        let fifo = dir.path().join("fifo");
        // Not `mkfifo` the program: a fork while another test holds a file's lock makes the
        // child hold it too until it execs (the other test's reopen would be refused).
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path that lives through the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = MappedFile::open(&fifo, 4096).unwrap_err();
        assert!(
            naam_core::with_sources(&e).contains("not a regular file"),
            "{e}"
        );
    }
}
