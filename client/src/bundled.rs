//! The bundled applications' fixed ids (docs/runtime.md): every process agrees on them
//! without a negotiation.

use crate::client::Client;
use crate::error::{ClientError, Result};

/// Tenant of the bundled applications.
pub const TENANT: u32 = 1;

/// Region ids.
pub mod region {
    pub const MICA_INDEX: u32 = 1;
    pub const MICA_LOG: u32 = 2;
    pub const BTREE: u32 = 3;
    pub const RECORD: u32 = 4;
}

/// A bundled offload: id, ELF section, steering class, read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundledOffload {
    pub id: u32,
    pub section: &'static str,
    pub class: u16,
    pub read_only: bool,
}

pub const MICA_GET: BundledOffload = BundledOffload {
    id: 0,
    section: "naam/mica_get",
    class: 0,
    read_only: true,
};
pub const MICA_PUT: BundledOffload = BundledOffload {
    id: 1,
    section: "naam/mica_put",
    class: 1,
    read_only: false,
};
pub const MICA_DELETE: BundledOffload = BundledOffload {
    id: 2,
    section: "naam/mica_delete",
    class: 2,
    read_only: false,
};
pub const BTREE_LOOKUP: BundledOffload = BundledOffload {
    id: 3,
    section: "naam/btree_lookup",
    class: 3,
    read_only: true,
};
pub const BTREE_SCAN: BundledOffload = BundledOffload {
    id: 4,
    section: "naam/btree_scan",
    class: 4,
    read_only: true,
};
pub const RECORD: BundledOffload = BundledOffload {
    id: 5,
    section: "naam/record",
    class: 5,
    read_only: true,
};

/// The ELF object holding a bundled handler, if this build has it.
pub fn object(o: BundledOffload) -> Option<&'static [u8]> {
    match o.section {
        "naam/record" => Some(naam_handlers::RECORD_OBJECT),
        "naam/btree_lookup" | "naam/btree_scan" => Some(naam_handlers::btree::program::OBJECT),
        "naam/mica_get" | "naam/mica_put" | "naam/mica_delete" => {
            Some(naam_handlers::mica::MICA_OBJECT)
        }
        _ => None,
    }
}

/// The applications a host agent builds at start; their DESCRIBE gives the region keys a
/// client needs to run handlers over their regions itself.
pub const APPS: [&str; 3] = ["mica", "btree", "record"];

/// Offload ids registered at run time start here.
pub const FIRST_DYNAMIC_ID: u32 = 16;

/// Makes the bundled handlers runnable in `client`'s own VM pool (for local execution).
pub fn load_local(client: &mut Client) -> Result<()> {
    load_local_btree(client)?;
    load_local_mica(client)?;
    let o = RECORD;
    client.load_local(
        o.id,
        naam_handlers::RECORD_OBJECT,
        Some(o.section),
        o.class,
        o.read_only,
    )?;
    Ok(())
}

/// Makes the bundled MICA handlers runnable locally.
pub fn load_local_mica(client: &mut Client) -> Result<()> {
    let p =
        naam_handlers::mica::MicaPrograms::load(&naam_core::verifier::VerifierConfig::default())
            .map_err(|e| ClientError::InvalidProgram {
                detail: e.to_string(),
            })?;
    for (o, prog) in [
        (MICA_GET, p.get),
        (MICA_PUT, p.put),
        (MICA_DELETE, p.delete),
    ] {
        client.load_local_verified(o.id, prog, o.class, o.read_only)?;
    }
    Ok(())
}

/// Makes the bundled B-tree handlers runnable locally.
pub fn load_local_btree(client: &mut Client) -> Result<()> {
    let p = naam_handlers::btree::programs().map_err(|e| ClientError::InvalidProgram {
        detail: e.to_string(),
    })?;
    for (o, prog) in [(BTREE_LOOKUP, p.lookup), (BTREE_SCAN, p.scan)] {
        client.load_local_verified(o.id, prog, o.class, o.read_only)?;
    }
    Ok(())
}
