//! Shared setup for the naam-core integration tests.
#![allow(dead_code)]

use naam_core::elf::load_program;
use naam_core::memory::{LocalMemory, OwnedRegion};
use naam_core::region::{Perms, RegionDesc, RegionTable};
use naam_core::verifier::{verify, VerifiedProgram, VerifierConfig};
use std::sync::Arc;

pub const THREE_STEP: &[u8] = include_bytes!("../../../handlers/test/three_step.bpf.o");

pub fn three_step() -> Arc<VerifiedProgram> {
    let prog = load_program(THREE_STEP, None).expect("load three_step");
    Arc::new(verify(&prog, &VerifierConfig::default()).expect("three_step verifies"))
}

/// Arguments of the three-step handler.
pub fn three_step_args(region: u32, offset: u64, add: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(24);
    a.extend_from_slice(&region.to_le_bytes());
    a.extend_from_slice(&0u32.to_le_bytes());
    a.extend_from_slice(&offset.to_le_bytes());
    a.extend_from_slice(&add.to_le_bytes());
    a
}

/// A memory with regions: 1 (tenant 1, all perms, 4 KiB), 2 (tenant 1, read only),
/// 3 (tenant 2, all perms).
pub struct World {
    pub regions: RegionTable,
    pub mem: LocalMemory,
    pub owned: Vec<OwnedRegion>,
}

impl World {
    pub fn new() -> Self {
        let mut w = World {
            regions: RegionTable::new(),
            mem: LocalMemory::new(),
            owned: Vec::new(),
        };
        w.add(RegionDesc {
            id: 1,
            tenant: 1,
            len: 4096,
            perms: Perms::ALL,
            key: 11,
        });
        w.add(RegionDesc {
            id: 2,
            tenant: 1,
            len: 4096,
            perms: Perms::READ,
            key: 22,
        });
        w.add(RegionDesc {
            id: 3,
            tenant: 2,
            len: 4096,
            perms: Perms::ALL,
            key: 33,
        });
        w
    }

    pub fn add(&mut self, desc: RegionDesc) {
        let r = OwnedRegion::zeroed(desc.len as usize);
        self.mem.map(desc.id, r.mem());
        self.owned.push(r);
        self.regions.insert(desc).unwrap();
    }
}
