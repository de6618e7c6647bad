//! The loader never panics (issue 13): `load_program`, the re-layout pass and the verifier
//! return errors for every input. Bounded property test of what the `load_program` fuzz target
//! checks without bound: arbitrary bytes, real handler objects with bytes flipped, cut or
//! replaced, and raw instruction streams through the re-layout pass.

use naam_core::elf::{load_program, ElfObject, Program, INSN_SIZE};
use naam_core::relayout::{forward_layout, RelayoutError};
use naam_core::verifier::{verify, VerifierConfig};
use object::{Object, ObjectSection};
use proptest::prelude::*;

const OBJECTS: &[&[u8]] = &[
    include_bytes!("../../handlers/mica.bpf.o"),
    include_bytes!("../../handlers/btree.bpf.o"),
    include_bytes!("../../handlers/record.bpf.o"),
    include_bytes!("../../handlers/test/three_step.bpf.o"),
    include_bytes!("../../handlers/test/elf_calls.bpf.o"),
];

/// What `naam verify` and REGISTER do with an object: load every entry section, verify it.
fn load_and_verify(bytes: &[u8]) {
    if let Ok(obj) = ElfObject::parse(bytes) {
        for name in obj.program_names() {
            if let Ok(p) = obj.program(Some(&name)) {
                let _ = verify(&p, &VerifierConfig::default());
            }
        }
    }
    if let Ok(p) = load_program(bytes, None) {
        let _ = verify(&p, &VerifierConfig::default());
    }
}

/// The file range of `section` in an object's bytes.
fn section_range(obj: &[u8], section: &str) -> std::ops::Range<usize> {
    let file = object::File::parse(obj).unwrap();
    let (start, len) = file
        .section_by_name(section)
        .and_then(|s| s.file_range())
        .unwrap();
    start as usize..(start + len) as usize
}

// The crafted program of issue 13: a jump into the second half of an `lddw` whose second
// half decodes as a jump to an instruction that starts no block.
const JEQ_R1_0_PLUS3: [u8; 8] = [0x15, 0x01, 3, 0, 0, 0, 0, 0]; // 0: if r1 == 0 goto 4
const JA_PLUS1: [u8; 8] = [0x05, 0, 1, 0, 0, 0, 0, 0]; // 1: goto 3 (inside the lddw)
const LDDW_R0: [u8; 8] = [0x18, 0, 0, 0, 7, 0, 0, 0]; // 2: r0 = ...
const HALF_AS_JA: [u8; 8] = [0x05, 0, 1, 0, 0, 0, 0, 0]; // 3: second half, reads as goto 5
const MOV_R0_0: [u8; 8] = [0xb7, 0, 0, 0, 0, 0, 0, 0]; // 4: r0 = 0
const EXIT: [u8; 8] = [0x95, 0, 0, 0, 0, 0, 0, 0]; // 5: exit

fn crafted() -> Vec<u8> {
    [
        JEQ_R1_0_PLUS3,
        JA_PLUS1,
        LDDW_R0,
        HALF_AS_JA,
        MOV_R0_0,
        EXIT,
    ]
    .concat()
}

#[test]
fn a_jump_into_an_lddw_is_an_error_not_a_panic() {
    let p = Program::from_insns("crafted", crafted());
    assert_eq!(forward_layout(&p), Err(RelayoutError::IntoLddw { insn: 1 }));
    let e = verify(&p, &VerifierConfig::default()).expect_err("rejected");
    assert!(e.reason.contains("lddw"), "{e:?}");
}

#[test]
fn the_crafted_elf_loads_and_is_rejected_by_the_verifier() {
    // three_step's entry section with the crafted program written over its start and `exit`
    // over the rest: an object that parses, whose program the verifier must reject.
    let mut obj = OBJECTS[3].to_vec();
    let r = section_range(&obj, "naam/three_step");
    let mut insns = crafted();
    assert!(r.len() >= insns.len());
    while insns.len() < r.len() {
        insns.extend_from_slice(&EXIT);
    }
    obj[r].copy_from_slice(&insns);
    let p = load_program(&obj, None).expect("the object itself is well formed");
    assert!(verify(&p, &VerifierConfig::default()).is_err());
}

#[test]
fn a_truncated_lddw_and_falling_off_the_end_are_errors() {
    let p = Program::from_insns("t", [MOV_R0_0, LDDW_R0].concat());
    assert_eq!(
        forward_layout(&p),
        Err(RelayoutError::TruncatedLddw { insn: 1 })
    );
    let p = Program::from_insns("t", [JA_PLUS1, EXIT, MOV_R0_0].concat());
    assert_eq!(
        forward_layout(&p),
        Err(RelayoutError::FallsOffEnd { insn: 2 })
    );
}

/// An instruction biased towards the opcodes that make control flow.
fn insn() -> impl Strategy<Value = [u8; 8]> {
    let op = prop_oneof![
        Just(0x05u8), // ja
        Just(0x15),   // jeq imm
        Just(0x1d),   // jeq reg
        Just(0x18),   // lddw
        Just(0x95),   // exit
        Just(0x85),   // call
        Just(0xb7),   // mov imm
        Just(0x00),
        any::<u8>(),
    ];
    (op, any::<u8>(), -8i16..8, any::<i32>()).prop_map(|(op, regs, off, imm)| {
        let o = off.to_le_bytes();
        let i = imm.to_le_bytes();
        [op, regs, o[0], o[1], i[0], i[1], i[2], i[3]]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn relayout_and_verify_never_panic(insns in prop::collection::vec(insn(), 0..24)) {
        let p = Program::from_insns("gen", insns.concat());
        if let Ok(q) = forward_layout(&p) {
            prop_assert_eq!(q.insns.len() % INSN_SIZE, 0);
        }
        let _ = verify(&p, &VerifierConfig::default());
    }

    #[test]
    fn load_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        load_and_verify(&bytes);
    }

    #[test]
    fn load_never_panics_on_mutated_handler_objects(
        which in 0..OBJECTS.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut obj = OBJECTS[which].to_vec();
        for (at, byte) in edits {
            let i = at.index(obj.len());
            obj[i] = byte;
        }
        if truncate {
            obj.truncate(cut.index(obj.len()));
        }
        load_and_verify(&obj);
    }
}

#[test]
fn mutating_instruction_bytes_only_never_panics() {
    // Edits confined to the entry sections reach the re-layout pass and the verifier (random
    // edits over the whole file mostly break the ELF headers first).
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 3000,
        ..ProptestConfig::default()
    });
    let strategy = (
        0..3usize,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    );
    runner
        .run(&strategy, |(which, edits)| {
            let mut obj = OBJECTS[which].to_vec();
            let file = object::File::parse(OBJECTS[which]).unwrap();
            let ranges: Vec<_> = file
                .sections()
                .filter(|s| s.name().is_ok_and(|n| n.starts_with("naam/")))
                .filter_map(|s| s.file_range())
                .collect();
            for (at, byte) in edits {
                let (start, len) = ranges[at.index(ranges.len())];
                let i = start as usize + at.index(len as usize);
                obj[i] = byte;
            }
            load_and_verify(&obj);
            Ok(())
        })
        .unwrap();
}
