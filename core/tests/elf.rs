//! The ELF loader on objects compiled by clang: entry-section choice, `.text` calls patched,
//! and globals / externs / unknown sections rejected with the symbol and instruction named.

use naam_core::elf::{load_program, ElfError, ElfObject};

const CALLS: &[u8] = include_bytes!("../../handlers/test/elf_calls.bpf.o");
const GLOBAL: &[u8] = include_bytes!("../../handlers/test/elf_global.bpf.o");
const EXTERN: &[u8] = include_bytes!("../../handlers/test/elf_extern.bpf.o");
const THREE_STEP: &[u8] = include_bytes!("../../handlers/test/three_step.bpf.o");

/// Runs a loaded program with rbpf directly (our verifier rejects bpf-to-bpf calls, but the
/// loader must still link them right) with `arg` as the first argument word. rbpf's
/// interpreter overflows on backward calls in debug builds, so programs that call backwards
/// run under its JIT.
fn run_raw(insns: &[u8], arg: u64, jit: bool) -> u64 {
    let mut vm = rbpf::EbpfVmRaw::new(Some(insns)).expect("rbpf accepts the linked program");
    let mut ctx = vec![0u8; naam_core::abi::CTX_SIZE];
    ctx[naam_core::abi::ctx::ARGS..][..8].copy_from_slice(&arg.to_le_bytes());
    if jit {
        vm.jit_compile().unwrap();
        // SAFETY: the program is our own test handler, which only touches its context.
        unsafe { vm.execute_program_jit(&mut ctx).expect("runs") };
    } else {
        vm.execute_program(&mut ctx).expect("runs");
    }
    let out = naam_core::abi::ctx::OUT;
    u64::from_le_bytes(ctx[out..out + 8].try_into().unwrap())
}

#[test]
fn lists_entry_sections_and_picks_the_first_by_default() {
    let obj = ElfObject::parse(CALLS).unwrap();
    assert_eq!(obj.program_names(), ["naam/calls_a", "naam/calls_b"]);
    assert_eq!(load_program(CALLS, None).unwrap().name, "calls_a");
    assert_eq!(load_program(THREE_STEP, None).unwrap().name, "three_step");
}

#[test]
fn text_functions_are_appended_and_calls_patched() {
    let a = load_program(CALLS, Some("naam/calls_a")).unwrap();
    let b = load_program(CALLS, Some("naam/calls_b")).unwrap();
    assert_eq!(a.insn_count(), 8 + 6, "entry section plus .text");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(run_raw(&a.insns, 20, true), 43);
    }
    assert_eq!(run_raw(&b.insns, 20, false), 40);
    // plus_three (.text insn 3, now 8 + 3) calls twice (now 8 + 0) backwards: imm = 8 - 12.
    let call = &a.insns[11 * 8..12 * 8];
    assert_eq!(
        (call[0], i32::from_le_bytes(call[4..8].try_into().unwrap())),
        (0x85, -4)
    );
}

#[test]
fn unknown_section_names_the_available_ones() {
    match load_program(CALLS, Some("naam/nope")) {
        Err(ElfError::NoSuchSection { name, available }) => {
            assert_eq!(name, "naam/nope");
            assert_eq!(available.len(), 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn globals_are_rejected_naming_symbol_and_instruction() {
    match load_program(GLOBAL, None) {
        Err(e @ ElfError::GlobalData { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("counter") && msg.contains("instruction 0"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn externs_are_rejected_naming_the_symbol() {
    match load_program(EXTERN, None) {
        Err(ElfError::Extern { symbol, insn, .. }) => {
            assert_eq!(symbol, "not_defined_anywhere");
            assert_eq!(insn, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_and_foreign_objects_are_errors() {
    assert!(matches!(
        load_program(b"not an elf", None),
        Err(ElfError::Parse(_))
    ));
    assert!(matches!(load_program(&[], None), Err(ElfError::Parse(_))));
    // A truncated object never panics.
    for n in 0..THREE_STEP.len() {
        let _ = load_program(&THREE_STEP[..n], None);
    }
    // This test binary itself is an ELF, but not eBPF.
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert!(matches!(
        load_program(&me, None),
        Err(ElfError::NotBpf { .. })
    ));
}
