//! The run directory: where a host agent and its dataplane meet, and where clients of a
//! local deployment find its keys (docs/runtime.md). One owner for its default place and the
//! name of every file in it.

use std::path::{Path, PathBuf};

/// The host agent's link socket (mode 0600): hands the shared area to a dataplane.
pub const LINK_SOCKET: &str = "link.sock";
/// The host agent's control socket (mode 0600).
pub const CONTROL_SOCKET: &str = "control.sock";
/// Locked by the host agent serving the run directory (one at a time).
pub const HOST_AGENT_LOCK: &str = "host-agent.lock";
/// The key file of the admin and the tenants (docs/security.md).
pub const CREDENTIALS: &str = "credentials";
/// The largest `--config` file the servers read (TOML of a few flags).
pub const CONFIG_FILE_MAX: u64 = 1 << 20;
/// The admin's key alone.
pub const ADMIN_KEY: &str = "admin.key";

/// The key file of tenant `t` alone.
pub fn tenant_key(t: u32) -> String {
    format!("tenant-{t}.key")
}

/// `$XDG_RUNTIME_DIR/naam`, else `/tmp/naam-$UID` (the owner of `/proc/self` is this
/// process's user).
pub fn default_run_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("naam");
    }
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    PathBuf::from(format!("/tmp/naam-{uid}"))
}

/// This process's user (the owner of `/proc/self`).
fn my_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The longest path a Unix socket can be bound or connected at (`sun_path` is 108 bytes on
/// Linux, the last one a NUL).
pub const SOCKET_PATH_MAX: usize = 107;

/// Refuses a run directory whose sockets' paths would be too long for a Unix socket, with
/// the lengths (the system's own error says only "path must be shorter than SUN_LEN").
pub fn check_socket_room(dir: &Path) -> Result<(), String> {
    let longest = [LINK_SOCKET, CONTROL_SOCKET]
        .iter()
        .map(|name| dir.join(name).as_os_str().len())
        .max()
        .unwrap_or(0);
    if longest > SOCKET_PATH_MAX {
        return Err(format!(
            "run directory {} is {} bytes long: its sockets' paths would be {longest} bytes, past the {SOCKET_PATH_MAX} a Unix socket path may have; choose a shorter one",
            dir.display(),
            dir.as_os_str().len()
        ));
    }
    Ok(())
}

/// Creates the run directory if needed and makes sure only this user can use it: it must be
/// a real directory (not a symlink) owned by this user; its group and other permission bits
/// are cleared (mode 0700). A predictable `/tmp/naam-$UID` made by someone else first, with
/// their keys and sockets in it, is refused (docs/security.md).
pub fn prepare(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    check_socket_room(dir)?;
    let not_a_dir = |m: &std::fs::Metadata| {
        let what = if m.file_type().is_symlink() {
            "a symlink"
        } else {
            "a file"
        };
        format!("{} is not a directory ({what})", dir.display())
    };
    // Something already there that is no directory is named as such ("File exists" said
    // nothing about what was wrong).
    if let Ok(m) = std::fs::symlink_metadata(dir) {
        if !m.file_type().is_dir() {
            return Err(not_a_dir(&m));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let m = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !m.file_type().is_dir() {
        return Err(not_a_dir(&m));
    }
    if Some(m.uid()) != my_uid() {
        return Err(format!(
            "{} belongs to user {}, not to this one: refusing to keep keys or sockets there",
            dir.display(),
            m.uid()
        ));
    }
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod 0700 {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// The largest key file read (a key line is about 100 bytes; a thousand tenants' keys fit).
pub const KEY_FILE_MAX: u64 = 256 * 1024;

/// Reads a key file, bounded: [`read_regular`] of at most [`KEY_FILE_MAX`] bytes of text.
/// `NotFound` stays `NotFound` (a host agent creates its file then).
pub fn read_key_file(path: &Path) -> std::io::Result<String> {
    let bytes = read_regular(path, KEY_FILE_MAX, "a key file")?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Reads a file a server takes at start (a key file, the run-time offloads), bounded: a
/// regular file (symlinks followed) of at most `max` bytes (`what` names the kind in the
/// error). A device (`/dev/zero`), a FIFO or a directory is refused before it is opened, so
/// reading never blocks or grows without end. `NotFound` stays `NotFound`.
pub fn read_regular(path: &Path, max: u64, what: &str) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let regular = |m: &std::fs::Metadata| {
        if !m.is_file() {
            return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
        }
        if m.len() > max {
            let d = format!("{} bytes, more than {what}'s {max}", m.len());
            return Err(Error::new(ErrorKind::InvalidData, d));
        }
        Ok(())
    };
    regular(&std::fs::metadata(path)?)?;
    let f = std::fs::File::open(path)?;
    // The file opened may not be the one looked at: look again.
    regular(&f.metadata()?)?;
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("grew past {what}'s size"),
        ));
    }
    Ok(bytes)
}

/// A file's identity (device, inode): what a process made, told apart from a file another
/// one made later under the same name.
pub type FileId = (u64, u64);

/// The identity of what is at `path` now (a symlink's own).
pub fn file_id(path: &Path) -> std::io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino()))
}

/// Removes `path` if it is still the file `id` names: a process stopping after its run
/// directory was deleted and taken by another must not remove that one's sockets.
pub fn remove_own(path: &Path, id: FileId) {
    if file_id(path).is_ok_and(|now| now == id) {
        let _ = std::fs::remove_file(path);
    }
}

/// Checks that a key file can be trusted: a regular file owned by this user that nobody else
/// can write.
pub fn check_key_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !m.file_type().is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if Some(m.uid()) != my_uid() {
        return Err(format!(
            "{} belongs to user {}, not to this one",
            path.display(),
            m.uid()
        ));
    }
    not_writable_by_others(m.mode()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Why the key file at `path` should be looked at, if it should: readable by other users,
/// who can then act as its principals (`ssh` refuses such a private key; the CLI and both
/// servers warn, since test setups and provisioning tools often write keys 0644).
pub fn exposed(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(path).ok()?.mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "key file {} is readable by others (mode {:o}): anyone who reads it can act as its principal; chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

/// Refuses the mode of a key file that users other than its owner may write: whoever can
/// write it chooses the keys.
pub fn not_writable_by_others(mode: u32) -> Result<(), String> {
    if mode & 0o022 != 0 {
        return Err(format!(
            "writable by others (mode {:o}): anyone could plant a key; chmod 600 it",
            mode & 0o777
        ));
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name (`data/node.a` + `.tmp` = `data/node.a.tmp`).
/// Not `Path::with_extension`, which replaces an extension: `node.a` and `node.b` would share
/// `node.tmp`, and a `--snapshot s.tmp` would be its own temporary file.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_run_dir_is_made_private_and_writable_key_files_are_refused() {
        let base = std::env::temp_dir().join(format!("naam-rundir-{}", std::process::id()));
        let dir = base.join("run");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        prepare(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let key = dir.join("credentials");
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_key_file(&key).unwrap();
        assert_eq!(exposed(&key), None);
        // Readable by the group or by everyone: accepted, with a reason to look at it.
        for mode in [0o640, 0o604, 0o644] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            check_key_file(&key).unwrap();
            let why = exposed(&key).expect("a readable key file is pointed out");
            assert!(why.contains("readable by others"), "{why}");
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(check_key_file(&key)
            .unwrap_err()
            .contains("writable by others"));
        let link = base.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let deep = base.join("d".repeat(120));
        let e = prepare(&deep).unwrap_err();
        assert!(e.contains("past the 107"), "{e}");
        assert!(!deep.exists(), "refused before anything is created");
        let e = prepare(&link).unwrap_err();
        assert!(e.ends_with("is not a directory (a symlink)"), "{e}");
        let file = base.join("a-file");
        std::fs::write(&file, b"").unwrap();
        let e = prepare(&file).unwrap_err();
        assert!(e.ends_with("a-file is not a directory (a file)"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
