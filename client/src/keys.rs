//! Where a client finds the credential it seals control requests with (docs/security.md):
//! `--key-file FILE`, else the environment variable `NAAM_KEY_FILE`, else `admin.key` in the
//! run directory of a local deployment when it exists there. A key file holds key lines
//! (`naam_core::auth`); the first one is used.

use std::path::{Path, PathBuf};

use naam_core::auth::{Credential, Keyring};
use naam_core::run_dir;

use crate::{ClientError, Result};

/// The environment variable naming a key file.
pub const KEY_FILE_ENV: &str = "NAAM_KEY_FILE";

/// Reads the first credential of a key file: a regular file of at most
/// [`naam_core::run_dir::KEY_FILE_MAX`] bytes that no other user can write (one that could
/// would let them choose who this client speaks as).
pub fn load(path: &Path) -> Result<Credential> {
    use std::os::unix::fs::MetadataExt;
    let fail = |reason: String| ClientError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let text = naam_core::run_dir::read_key_file(path).map_err(|e| fail(e.to_string()))?;
    let mode = std::fs::metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .mode();
    naam_core::run_dir::not_writable_by_others(mode).map_err(fail)?;
    let ring = Keyring::parse(&text).map_err(|e| fail(e.to_string()))?;
    let first = ring.iter().next().cloned();
    first.ok_or_else(|| fail("no key".into()))
}

/// Why the key file at `path` should be looked at, if it should
/// ([`naam_core::run_dir::exposed`]: readable by other users).
pub use naam_core::run_dir::exposed;

/// The key file to use: `explicit`, else `NAAM_KEY_FILE`, else the default run directory's
/// `admin.key` if there is one; `None` when none of them applies.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os(KEY_FILE_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let local = run_dir::default_run_dir().join(run_dir::ADMIN_KEY);
    local.exists().then_some(local)
}

/// The credential of the key file [`locate`] picks; `None` when none applies.
pub fn find(explicit: Option<&Path>) -> Result<Option<Credential>> {
    locate(explicit).map(|p| load(&p)).transpose()
}
