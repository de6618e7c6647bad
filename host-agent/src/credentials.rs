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
    for k in keys.iter() {
        let name = match k.principal {
            Principal::Admin => ADMIN_KEY.to_owned(),
            Principal::Tenant(t) => tenant_key(t),
        };
        write_secret(&run_dir.join(name), &format!("{}\n", k.to_line()))?;
    }
    Ok(keys)
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
}
