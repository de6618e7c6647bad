//! Shared by the naam-core integration tests: a tiny eBPF assembler, a JIT-versus-interpreter
//! runner (verifier tests), the three-step handler and a small world of regions (executor and
//! pool tests).
#![allow(dead_code)]

pub mod gen;

use naam_core::abi::{Ctx, CTX_SIZE};
use naam_core::elf::Program;
use naam_core::verifier::VerifiedProgram;
use naam_core::vm::{CompiledVm, Engine};
use std::sync::Arc;

pub type I = [u8; 8];

pub const W: u8 = 0x00;
pub const H: u8 = 0x08;
pub const B: u8 = 0x10;
pub const DW: u8 = 0x18;

// ALU and jump operation codes (high nibble).
pub const ADD: u8 = 0x0;
pub const SUB: u8 = 0x1;
pub const MUL: u8 = 0x2;
pub const DIV: u8 = 0x3;
pub const OR: u8 = 0x4;
pub const AND: u8 = 0x5;
pub const LSH: u8 = 0x6;
pub const RSH: u8 = 0x7;
pub const NEG: u8 = 0x8;
pub const MOD: u8 = 0x9;
pub const XOR: u8 = 0xa;
pub const MOV: u8 = 0xb;
pub const ARSH: u8 = 0xc;
pub const JEQ: u8 = 0x1;
pub const JGT: u8 = 0x2;
pub const JGE: u8 = 0x3;
pub const JSET: u8 = 0x4;
pub const JNE: u8 = 0x5;
pub const JSGT: u8 = 0x6;
pub const JSGE: u8 = 0x7;
pub const JLT: u8 = 0xa;
pub const JLE: u8 = 0xb;
pub const JSLT: u8 = 0xc;
pub const JSLE: u8 = 0xd;

pub fn raw(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> I {
    let o = off.to_le_bytes();
    let m = imm.to_le_bytes();
    [op, dst | (src << 4), o[0], o[1], m[0], m[1], m[2], m[3]]
}

pub fn alu64_imm(code: u8, dst: u8, imm: i32) -> I {
    raw((code << 4) | 0x07, dst, 0, 0, imm)
}
pub fn alu64_reg(code: u8, dst: u8, src: u8) -> I {
    raw((code << 4) | 0x0f, dst, src, 0, 0)
}
pub fn alu32_imm(code: u8, dst: u8, imm: i32) -> I {
    raw((code << 4) | 0x04, dst, 0, 0, imm)
}
pub fn alu32_reg(code: u8, dst: u8, src: u8) -> I {
    raw((code << 4) | 0x0c, dst, src, 0, 0)
}
pub fn mov_imm(dst: u8, imm: i32) -> I {
    alu64_imm(MOV, dst, imm)
}
pub fn mov_reg(dst: u8, src: u8) -> I {
    alu64_reg(MOV, dst, src)
}
pub fn ldx(size: u8, dst: u8, src: u8, off: i16) -> I {
    raw(0x61 | size, dst, src, off, 0)
}
pub fn st(size: u8, dst: u8, off: i16, imm: i32) -> I {
    raw(0x62 | size, dst, 0, off, imm)
}
pub fn stx(size: u8, dst: u8, src: u8, off: i16) -> I {
    raw(0x63 | size, dst, src, off, 0)
}
pub fn jmp_imm(code: u8, dst: u8, imm: i32, off: i16) -> I {
    raw((code << 4) | 0x05, dst, 0, off, imm)
}
pub fn jmp_reg(code: u8, dst: u8, src: u8, off: i16) -> I {
    raw((code << 4) | 0x0d, dst, src, off, 0)
}
pub fn jmp32_imm(code: u8, dst: u8, imm: i32, off: i16) -> I {
    raw((code << 4) | 0x06, dst, 0, off, imm)
}
pub fn ja(off: i16) -> I {
    raw(0x05, 0, 0, off, 0)
}
pub fn call(id: i32) -> I {
    raw(0x85, 0, 0, 0, id)
}
pub fn exit() -> I {
    raw(0x95, 0, 0, 0, 0)
}
pub fn lddw(dst: u8, v: u64) -> [I; 2] {
    [
        raw(0x18, dst, 0, 0, v as u32 as i32),
        raw(0, 0, 0, 0, (v >> 32) as u32 as i32),
    ]
}

pub fn program(name: &str, insns: &[I]) -> Program {
    Program::from_insns(name, insns.iter().flatten().copied().collect())
}

/// r0 and the final context bytes of one run.
pub type Outcome = (u64, Vec<u8>);

/// `prog` compiled for the native JIT and loaded into the interpreter; `None` (after printing
/// why) when this machine has no JIT.
pub fn engines(prog: &Arc<VerifiedProgram>) -> Option<(CompiledVm, CompiledVm)> {
    let native = Engine::native();
    if native == Engine::Interpreter {
        println!("skipped: no JIT engine on this architecture");
        return None;
    }
    let jit = CompiledVm::new(prog.clone(), native).expect("a verified program compiles");
    let interp =
        CompiledVm::new(prog.clone(), Engine::Interpreter).expect("a verified program loads");
    Some((jit, interp))
}

pub fn run_one(vm: &CompiledVm, ctx: &Ctx) -> Outcome {
    let mut c = Box::new(ctx.clone());
    let r0 = vm
        .run(&mut c)
        .unwrap_or_else(|e| panic!("{}: run failed: {e:?}", vm.program().name()));
    (r0, c.as_bytes()[..CTX_SIZE].to_vec())
}

/// A context whose bytes are random, small, or zero, so both sides of typical bound checks run.
pub fn random_ctx(rng: &mut impl rand::Rng) -> Box<Ctx> {
    let mut c = Ctx::boxed();
    let style = rng.gen_range(0..3);
    for b in c.as_bytes_mut().iter_mut() {
        *b = match style {
            0 => rng.gen(),
            1 => rng.gen_range(0..4),
            _ => 0,
        };
    }
    if style == 1 {
        // A plausible header: short args, a small step.
        let len: u32 = rng.gen_range(0..64);
        c.as_bytes_mut()[8..12].copy_from_slice(&len.to_le_bytes());
    }
    c
}

use naam_core::elf::load_program;
use naam_core::memory::{LocalMemory, OwnedRegion};
use naam_core::region::{Perms, RegionDesc, RegionTable};
use naam_core::verifier::{verify, VerifierConfig};

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
