//! The bundled applications' fixed ids (docs/runtime.md): the one table lives in
//! `naam_handlers::bundled`; this module re-exports it for clients and loads the bundled
//! handlers into a client for local execution.

use crate::client::Client;
use crate::error::{ClientError, Result};
pub use naam_handlers::bundled::{
    region, BundledOffload, APPS, BTREE_LOOKUP, BTREE_SCAN, FIRST_DYNAMIC_ID, MICA_DELETE,
    MICA_GET, MICA_PUT, RECORD, TENANT,
};

/// The ELF object holding a bundled handler.
pub fn object(o: BundledOffload) -> Option<&'static [u8]> {
    Some(o.object)
}

/// Makes the bundled handlers runnable in `client`'s own VM pool (for local execution).
pub fn load_local(client: &mut Client) -> Result<()> {
    load_local_btree(client)?;
    load_local_mica(client)?;
    load_all(client, &[RECORD])
}

/// Makes the bundled MICA handlers runnable locally.
pub fn load_local_mica(client: &mut Client) -> Result<()> {
    load_all(client, &[MICA_GET, MICA_PUT, MICA_DELETE])
}

/// Makes the bundled B-tree handlers runnable locally.
pub fn load_local_btree(client: &mut Client) -> Result<()> {
    load_all(client, &[BTREE_LOOKUP, BTREE_SCAN])
}

fn load_all(client: &mut Client, offloads: &[BundledOffload]) -> Result<()> {
    let cfg = naam_core::verifier::VerifierConfig::default();
    for o in offloads {
        let prog = o.load(&cfg).map_err(|e| ClientError::InvalidProgram {
            detail: e.to_string(),
        })?;
        client.endpoint_mut().load_local_verified(
            o.id,
            std::sync::Arc::new(prog),
            o.class,
            o.read_only,
        )?;
    }
    Ok(())
}
