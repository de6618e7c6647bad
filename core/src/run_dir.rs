//! The run directory: where a host agent and its dataplane meet, and where clients of a
//! local deployment find its keys (docs/runtime.md). One owner for its default place and the
//! name of every file in it.

use std::path::PathBuf;

/// The host agent's link socket (mode 0600): hands the shared area to a dataplane.
pub const LINK_SOCKET: &str = "link.sock";
/// The host agent's control socket (mode 0600).
pub const CONTROL_SOCKET: &str = "control.sock";
/// The key file of the admin and the tenants (docs/security.md).
pub const CREDENTIALS: &str = "credentials";
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
