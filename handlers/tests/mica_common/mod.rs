//! Shared setup of the MICA tests: a table in two owned regions, registered for one tenant.
#![allow(dead_code)]

use naam_core::memory::{LocalMemory, OwnedRegion};
use naam_core::region::{Perms, RegionDesc, RegionTable};
use naam_core::verifier::VerifierConfig;
use naam_core::vm::Engine;
use naam_handlers::mica::{MicaGeometry, MicaPrograms, MicaTable, MicaVm};

pub const TENANT: u32 = 7;

pub struct Store {
    _index: OwnedRegion,
    _log: OwnedRegion,
    pub geom: MicaGeometry,
    pub table: MicaTable,
    pub regions: RegionTable,
    pub mem: LocalMemory,
}

impl Store {
    pub fn new(geom: MicaGeometry) -> Self {
        let index = OwnedRegion::zeroed(geom.index_len() as usize);
        let log = OwnedRegion::zeroed(geom.log_len() as usize);
        let table = MicaTable::format(geom, index.mem(), log.mem()).expect("format");
        let mut regions = RegionTable::new();
        let mut mem = LocalMemory::new();
        for (id, r) in [(geom.index_region, &index), (geom.log_region, &log)] {
            regions
                .insert(RegionDesc {
                    id,
                    tenant: TENANT,
                    len: r.mem().len() as u64,
                    perms: Perms::ALL,
                    key: 0x5eed ^ id as u64,
                })
                .expect("region");
            mem.map(id, r.mem());
        }
        Self {
            _index: index,
            _log: log,
            geom,
            table,
            regions,
            mem,
        }
    }
}

pub fn programs() -> MicaPrograms {
    MicaPrograms::load(&VerifierConfig::default()).expect("MICA handlers load and verify")
}

/// Engines this machine runs, compiled first.
pub fn engines() -> Vec<Engine> {
    [Engine::Jit, Engine::Cranelift, Engine::Interpreter]
        .into_iter()
        .filter(|e| e.available())
        .collect()
}

pub fn vm(progs: &MicaPrograms, engine: Engine) -> MicaVm {
    MicaVm::new(progs, engine, TENANT).expect("compile MICA handlers")
}
