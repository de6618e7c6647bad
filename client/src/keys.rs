//! Where a client finds the credential it seals control requests with (docs/security.md):
//! `--key-file FILE`, else the environment variable `NAAM_KEY_FILE`, else `admin.key` in the
//! run directory of a local deployment when it exists there. A key file holds key lines
//! (`naam_core::auth`); the first one is used.

use std::path::Path;

use naam_core::auth::{Credential, Keyring};
use naam_core::run_dir;

use crate::{ClientError, Result};

/// The environment variable naming a key file.
pub const KEY_FILE_ENV: &str = "NAAM_KEY_FILE";

/// Reads the first credential of a key file.
pub fn load(path: &Path) -> Result<Credential> {
    let fail = |reason: String| ClientError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let ring = Keyring::parse(&text).map_err(|e| fail(e.to_string()))?;
    let first = ring.iter().next().cloned();
    first.ok_or_else(|| fail("no key".into()))
}

/// The credential to use: `explicit`, else `NAAM_KEY_FILE`, else the default run
/// directory's `admin.key` if there is one; `None` when none of them applies.
pub fn find(explicit: Option<&Path>) -> Result<Option<Credential>> {
    if let Some(p) = explicit {
        return load(p).map(Some);
    }
    if let Some(p) = std::env::var_os(KEY_FILE_ENV).filter(|p| !p.is_empty()) {
        return load(Path::new(&p)).map(Some);
    }
    let local = run_dir::default_run_dir().join(run_dir::ADMIN_KEY);
    if local.exists() {
        return load(&local).map(Some);
    }
    Ok(None)
}
