//! MICA (Lim et al., NSDI'14) on NAAM: the table layout ([`layout`]), the native
//! implementation and table builder ([`table`]), and the compiled handlers
//! (`handlers/mica.bpf.c`: `naam/mica_get`, `naam/mica_put`, `naam/mica_delete`).
//!
//! Layout, in short (details in `include/mica.h`): an index region of 64-byte buckets (a
//! version word, six tagged slots pointing into the log, a link to an overflow bucket) and a
//! log region holding a circular log of immutable items. Writers append an item (FAA on the
//! tail, WRITE), then CAS the slot; readers check the tail after reading an item, so they never
//! return a torn value, and a slot more than a log size behind the tail is a miss.

pub mod layout;
pub mod table;
pub mod vm;

pub use layout::{MicaArgs, MicaGeometry, MicaReply};
pub use table::{key_for, value_for, MicaTable};
pub use vm::{MicaVm, RunError};

use naam_core::elf::{ElfError, ElfObject};
use naam_core::verifier::{self, VerifiedProgram, VerifierConfig, VerifyError};
use std::sync::Arc;

/// The compiled handlers (built by `handlers/build.sh`, committed), 8-byte aligned as the ELF
/// parser requires.
pub const MICA_OBJECT: &[u8] = &ALIGNED.0;

#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);
const ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../../mica.bpf.o"));

/// Section names of the three handlers.
pub const GET_SECTION: &str = "naam/mica_get";
pub const PUT_SECTION: &str = "naam/mica_put";
pub const DELETE_SECTION: &str = "naam/mica_delete";

/// Errors of the MICA API (native operations, argument encoding, handler replies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MicaError {
    #[error("key of {len} bytes: keys are 1 to {max} bytes", max = layout::KEY_MAX)]
    KeyLength { len: usize },
    #[error("empty value: values are 1 to {max} bytes", max = layout::VALUE_MAX)]
    EmptyValue,
    #[error("value of {len} bytes is larger than the {max}-byte maximum (one op window / reply)")]
    ValueTooLarge { len: usize, max: usize },
    #[error("value of {len} bytes does not fit the {have}-byte buffer")]
    BufferTooSmall { len: usize, have: usize },
    #[error("no overflow bucket left for a full bucket chain")]
    TableFull,
    #[error("the log is full: the table is lossless, so a PUT evicts nothing and is refused")]
    LogFull,
    #[error("the key's slot changed under every retry")]
    Contended,
    #[error("bad table geometry: {reason}")]
    BadGeometry { reason: &'static str },
    #[error("{which} region is {have} bytes, the geometry needs {need}")]
    RegionTooSmall {
        which: &'static str,
        need: u64,
        have: u64,
    },
    #[error("malformed reply of {len} bytes")]
    BadReply { len: usize },
    /// `MICA_E_ARGS` (1), `MICA_E_VALUE` (2) or `MICA_E_STATE` (5): arguments the Rust API
    /// would have refused, or a handler bug.
    #[error("handler aborted with code {code}")]
    Aborted { code: u32 },
}

impl MicaError {
    /// The error a handler's abort code stands for.
    pub fn from_abort(code: u32) -> Self {
        match code {
            layout::E_VALUE => MicaError::ValueTooLarge {
                len: 0,
                max: layout::VALUE_MAX,
            },
            layout::E_FULL => MicaError::TableFull,
            layout::E_LOG_FULL => MicaError::LogFull,
            layout::E_CONTENDED => MicaError::Contended,
            code => MicaError::Aborted { code },
        }
    }
}

/// Why the bundled handlers could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading the MICA object")]
    Elf(#[from] ElfError),
    #[error("{section} could not be laid out with forward jumps")]
    Relayout {
        section: &'static str,
        #[source]
        source: crate::relayout::RelayoutError,
    },
    #[error("the verifier rejected {section}")]
    Verify {
        section: &'static str,
        #[source]
        source: VerifyError,
    },
}

/// The three handlers, verified.
#[derive(Debug, Clone)]
pub struct MicaPrograms {
    pub get: Arc<VerifiedProgram>,
    pub put: Arc<VerifiedProgram>,
    pub delete: Arc<VerifiedProgram>,
}

impl MicaPrograms {
    /// Loads the bundled handlers, lays their blocks out with forward jumps only
    /// ([`crate::relayout`]) and verifies them under `cfg`.
    pub fn load(cfg: &VerifierConfig) -> Result<Self, LoadError> {
        let obj = ElfObject::parse(MICA_OBJECT)?;
        let one = |section: &'static str| -> Result<Arc<VerifiedProgram>, LoadError> {
            let p = obj.program(Some(section))?;
            let p = crate::relayout::forward_layout(&p)
                .map_err(|source| LoadError::Relayout { section, source })?;
            verifier::verify(&p, cfg)
                .map(Arc::new)
                .map_err(|source| LoadError::Verify { section, source })
        };
        Ok(Self {
            get: one(GET_SECTION)?,
            put: one(PUT_SECTION)?,
            delete: one(DELETE_SECTION)?,
        })
    }
}
