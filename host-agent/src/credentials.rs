//! The host agent holds the credentials (docs/security.md): a key file, by default
//! `RUN_DIR/credentials`, created with fresh random keys when it does not exist (key 0 the
//! admin, key 1 the bundled tenant). At every start it writes `RUN_DIR/admin.key` (the admin
//! credential alone) and `RUN_DIR/tenant-N.key` (one per tenant), all mode 0600, for the CLI,
//! the client library and the dataplane (which reads the key file itself).

use std::path::{Path, PathBuf};

use naam_core::auth::{Credential, Keyring, Principal, SECRET_LEN};
use naam_core::run_dir::{tenant_key, ADMIN_KEY, CREDENTIALS};
use rand::RngCore;

use crate::apps::BUNDLED_TENANT;
use crate::AgentError;

fn fresh(key_id: u32, principal: Principal) -> Credential {
    let mut secret = [0u8; SECRET_LEN];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    Credential::new(key_id, principal, secret)
}

/// Writes `text` to `path` with mode 0600, replacing it (through a temporary file, so a
/// reader never sees half a key).
fn write_secret(path: &Path, text: &str) -> Result<(), AgentError> {
    let tmp = naam_core::run_dir::beside(path, ".tmp");
    crate::private_file::replace(path, &tmp, text.as_bytes()).map_err(crate::io_err(format!(
        "write {} (through {})",
        path.display(),
        tmp.display()
    )))
}

/// Loads the key file at `path` (created with fresh keys when absent) and writes the
/// per-principal key files into `run_dir`.
pub fn load_or_create(path: &Path, run_dir: &Path) -> Result<Keyring, AgentError> {
    let keys = match naam_core::run_dir::read_key_file(path) {
        Ok(text) => {
            naam_core::run_dir::check_key_file(path).map_err(|reason| AgentError::Credentials {
                path: path.to_owned(),
                reason,
            })?;
            if let Some(warning) = naam_core::run_dir::exposed(path) {
                tracing::warn!("{warning}");
            }
            Keyring::parse(&text).map_err(|e| AgentError::Credentials {
                path: path.to_owned(),
                reason: e.to_string(),
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keys = Keyring::new(vec![
                fresh(0, Principal::Admin),
                fresh(1, Principal::Tenant(BUNDLED_TENANT)),
            ])
            .map_err(|e| AgentError::Credentials {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            write_secret(path, &keys.to_text())?;
            tracing::info!(path = %path.display(), "credentials created (admin key 0, tenant 1 key 1)");
            keys
        }
        Err(e) => return Err(crate::io_err(format!("read {}", path.display()))(e)),
    };
    write_principal_files(&keys, run_dir, path)?;
    Ok(keys)
}

/// Whether `a` and `b` name the same file (both exist and have the same device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// The file of `principal`'s key in the run directory.
fn principal_file(principal: Principal) -> String {
    match principal {
        Principal::Admin => ADMIN_KEY.to_owned(),
        Principal::Tenant(t) => tenant_key(t),
    }
}

/// Writes one file per principal of `keys`, holding the key it signs with (its first, as
/// [`Keyring::of`] picks: a principal given two keys while they are rotated uses the first
/// listed), and removes the files of principals the key file no longer has: a stale
/// `admin.key` from an earlier key file was picked up by the CLI and refused. Never the key
/// file itself (`key_file`), whatever its name.
fn write_principal_files(
    keys: &Keyring,
    run_dir: &Path,
    key_file: &Path,
) -> Result<(), AgentError> {
    let mut written = Vec::new();
    for k in keys.iter() {
        let name = principal_file(k.principal);
        if written.contains(&name) {
            continue;
        }
        let first = keys.of(k.principal).unwrap_or(k);
        write_secret(&run_dir.join(&name), &format!("{}\n", first.to_line()))?;
        written.push(name);
    }
    if keys.of(Principal::Admin).is_none() {
        tracing::warn!("the key file has no admin key: no admin.key is written, and control requests that need the admin (REGISTER of another tenant's class, the admin commands) are refused");
    }
    let Ok(dir) = std::fs::read_dir(run_dir) else {
        return Ok(());
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_tenant_file = name
            .strip_prefix("tenant-")
            .and_then(|n| n.strip_suffix(".key"))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|t| tenant_key(t) == name);
        let stale = (name == ADMIN_KEY || is_tenant_file) && !written.contains(&name);
        if stale && !same_file(&entry.path(), key_file) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(
                    file = name,
                    "key file of a principal the key file no longer has removed"
                ),
                Err(e) => {
                    tracing::warn!(file = name, error = %e, "could not remove the key file of a principal the key file no longer has")
                }
            }
        }
    }
    Ok(())
}

/// Where the key file is when the configuration does not say.
pub fn default_path(run_dir: &Path) -> PathBuf {
    run_dir.join(CREDENTIALS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_with_secret_files_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_path(dir.path());
        let a = load_or_create(&path, dir.path()).unwrap();
        assert!(a.of(Principal::Admin).is_some());
        assert!(a.of(Principal::Tenant(BUNDLED_TENANT)).is_some());
        for f in [CREDENTIALS, ADMIN_KEY, "tenant-1.key"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let admin = std::fs::read_to_string(dir.path().join(ADMIN_KEY)).unwrap();
        assert_eq!(
            Keyring::parse(&admin).unwrap().of(Principal::Admin),
            a.of(Principal::Admin)
        );
        let b = load_or_create(&path, dir.path()).unwrap();
        assert_eq!(a, b, "the same keys after a restart");
        std::fs::write(&path, "not a key\n").unwrap();
        let e = load_or_create(&path, dir.path()).unwrap_err();
        assert!(e.to_string().contains("credentials"), "{e}");
    }

    /// The run directory holds a file for each principal of the key file, and only those:
    /// one left by an earlier key file (probe 15: a stale admin.key, picked up by the CLI and
    /// refused) is removed; a principal with two keys gets its first.
    #[test]
    fn the_run_directory_holds_the_files_of_the_key_files_principals_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_path(dir.path());
        load_or_create(&path, dir.path()).unwrap();
        assert!(dir.path().join(ADMIN_KEY).exists());
        let (t5a, t5b, t7) = (
            fresh(4, Principal::Tenant(5)),
            fresh(5, Principal::Tenant(5)),
            fresh(6, Principal::Tenant(7)),
        );
        let keys = Keyring::new(vec![t5a.clone(), t5b, t7]).unwrap();
        std::fs::write(&path, keys.to_text()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(dir.path().join("tenant-1x.key"), "not ours").unwrap();
        load_or_create(&path, dir.path()).unwrap();
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [CREDENTIALS, "tenant-1x.key", "tenant-5.key", "tenant-7.key"]
        );
        let five = std::fs::read_to_string(dir.path().join("tenant-5.key")).unwrap();
        assert_eq!(five, format!("{}\n", t5a.to_line()));
    }
}
