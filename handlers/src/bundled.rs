//! The bundled applications' fixed ids (docs/runtime.md), in one table every process and test
//! uses: the host agent registers these offloads and regions, the dataplane registers the same
//! offloads, clients load them to run them locally. Every process agrees on them without a
//! negotiation.

use naam_core::elf::{ElfError, ElfObject};
use naam_core::verifier::{verify, VerifiedProgram, VerifierConfig, VerifyError};

/// Tenant of the bundled applications.
pub const TENANT: u32 = 1;

/// The bundled applications (the `app` of their offloads, what DESCRIBE knows).
pub const APPS: [&str; 3] = ["mica", "btree", "record"];

/// Offloads registered at run time get ids from here up.
pub const FIRST_DYNAMIC_ID: u32 = 16;

/// Region ids of the bundled applications.
pub mod region {
    pub const MICA_INDEX: u32 = 1;
    pub const MICA_LOG: u32 = 2;
    pub const BTREE: u32 = 3;
    pub const RECORD: u32 = 4;
}

/// A bundled offload: section `section` of `object`, under a fixed id (its class equals it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundledOffload {
    pub id: u32,
    pub name: &'static str,
    /// The application it belongs to (`mica`, `btree`, `record`): registered when the host
    /// agent builds that application.
    pub app: &'static str,
    pub section: &'static str,
    pub class: u16,
    pub read_only: bool,
    pub object: &'static [u8],
}

pub const MICA_GET: BundledOffload = BundledOffload {
    id: 0,
    name: "mica_get",
    app: "mica",
    section: crate::mica::GET_SECTION,
    class: 0,
    read_only: true,
    object: crate::mica::MICA_OBJECT,
};
pub const MICA_PUT: BundledOffload = BundledOffload {
    id: 1,
    name: "mica_put",
    app: "mica",
    section: crate::mica::PUT_SECTION,
    class: 1,
    read_only: false,
    object: crate::mica::MICA_OBJECT,
};
pub const MICA_DELETE: BundledOffload = BundledOffload {
    id: 2,
    name: "mica_delete",
    app: "mica",
    section: crate::mica::DELETE_SECTION,
    class: 2,
    read_only: false,
    object: crate::mica::MICA_OBJECT,
};
pub const BTREE_LOOKUP: BundledOffload = BundledOffload {
    id: 3,
    name: "btree_lookup",
    app: "btree",
    section: crate::btree::program::LOOKUP_SECTION,
    class: 3,
    read_only: true,
    object: crate::btree::program::OBJECT,
};
pub const BTREE_SCAN: BundledOffload = BundledOffload {
    id: 4,
    name: "btree_scan",
    app: "btree",
    section: crate::btree::program::SCAN_SECTION,
    class: 4,
    read_only: true,
    object: crate::btree::program::OBJECT,
};
pub const RECORD: BundledOffload = BundledOffload {
    id: 5,
    name: "record",
    app: "record",
    section: "naam/record",
    class: 5,
    read_only: true,
    object: crate::RECORD_OBJECT,
};

/// Every bundled offload, by id.
pub const ALL: [BundledOffload; 6] = [
    MICA_GET,
    MICA_PUT,
    MICA_DELETE,
    BTREE_LOOKUP,
    BTREE_SCAN,
    RECORD,
];

/// Why a bundled offload did not load.
#[derive(Debug, thiserror::Error)]
pub enum BundledError {
    #[error("{name}")]
    Elf {
        name: &'static str,
        #[source]
        source: ElfError,
    },
    #[error("{name}")]
    Verify {
        name: &'static str,
        #[source]
        source: VerifyError,
    },
}

impl BundledOffload {
    /// Its program, loaded (and laid out, as every program is) and verified under `cfg`.
    pub fn load(&self, cfg: &VerifierConfig) -> Result<VerifiedProgram, BundledError> {
        // A copy: `include_bytes!` promises no alignment, the ELF parser wants its headers
        // aligned.
        let object = self.object.to_vec();
        let name = self.name;
        let program = ElfObject::parse(&object)
            .and_then(|o| o.program(Some(self.section)))
            .map_err(|source| BundledError::Elf { name, source })?;
        verify(&program, cfg).map_err(|source| BundledError::Verify { name, source })
    }

    /// The offload with id `id`, if it is a bundled one.
    pub fn by_id(id: u32) -> Option<&'static BundledOffload> {
        ALL.iter().find(|o| o.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_offload_loads_and_ids_are_their_index_and_class() {
        for (i, o) in ALL.iter().enumerate() {
            assert_eq!(o.id as usize, i);
            assert_eq!(o.class as u32, o.id);
            assert!(o.id < FIRST_DYNAMIC_ID);
            o.load(&VerifierConfig::default())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(BundledOffload::by_id(3), Some(&BTREE_LOOKUP));
    }

    /// The verifier proves what the table says: each read-only offload's program never asks
    /// for a WRITE, CAS or FAA, and each other one may (else it should be read-only).
    #[test]
    fn read_only_offloads_are_proven_to_only_read() {
        for o in ALL {
            let p = o
                .load(&VerifierConfig::default())
                .expect("bundled offloads verify");
            assert_eq!(
                p.first_mutating_op().is_none(),
                o.read_only,
                "{}: first mutating op at {:?}",
                o.name,
                p.first_mutating_op()
            );
        }
    }
}
