//! The compiled handlers, embedded: `handlers/btree.bpf.o` (built by `handlers/build.sh` from
//! `handlers/btree.bpf.c`).

use naam_core::elf::{ElfError, ElfObject};
use naam_core::verifier::{verify, VerifiedProgram, VerifierConfig, VerifyError};
use std::sync::Arc;

/// The object file, as committed.
pub static OBJECT: &[u8] = include_bytes!("../../btree.bpf.o");

/// Entry section of LOOKUP.
pub const LOOKUP_SECTION: &str = "naam/btree_lookup";
/// Entry section of SCAN.
pub const SCAN_SECTION: &str = "naam/btree_scan";

/// Why the embedded programs could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("cannot load section {section} of btree.bpf.o")]
    Elf {
        section: &'static str,
        #[source]
        source: ElfError,
    },
    #[error("the verifier rejected {section}")]
    Verify {
        section: &'static str,
        #[source]
        source: VerifyError,
    },
}

/// Both handlers, verified.
#[derive(Debug, Clone)]
pub struct Programs {
    pub lookup: Arc<VerifiedProgram>,
    pub scan: Arc<VerifiedProgram>,
}

/// Loads and verifies one entry section of [`OBJECT`].
pub fn load(section: &'static str, cfg: &VerifierConfig) -> Result<VerifiedProgram, ProgramError> {
    // The ELF parser wants aligned headers; include_bytes! promises no alignment.
    let bytes = OBJECT.to_vec();
    let obj = ElfObject::parse(&bytes).map_err(|source| ProgramError::Elf { section, source })?;
    let prog = obj
        .program(Some(section))
        .map_err(|source| ProgramError::Elf { section, source })?;
    verify(&prog, cfg).map_err(|source| ProgramError::Verify { section, source })
}

/// Loads and verifies both handlers with the default verifier config.
pub fn programs() -> Result<Programs, ProgramError> {
    let cfg = VerifierConfig::default();
    Ok(Programs {
        lookup: Arc::new(load(LOOKUP_SECTION, &cfg)?),
        scan: Arc::new(load(SCAN_SECTION, &cfg)?),
    })
}
