//! Loads arbitrary bytes as a handler object and verifies every program it holds: the loader,
//! the re-layout pass and the verifier must return errors, never panic (issue 13). Seed the
//! corpus with the committed handler objects (`handlers/*.bpf.o`, `handlers/test/*.bpf.o`) so
//! mutations start from real ELF files.

#![no_main]

use libfuzzer_sys::fuzz_target;
use naam_core::elf::{load_program, ElfObject};
use naam_core::verifier::{verify, VerifierConfig};

fuzz_target!(|data: &[u8]| {
    let cfg = VerifierConfig::default();
    if let Ok(obj) = ElfObject::parse(data) {
        for name in obj.program_names() {
            if let Ok(p) = obj.program(Some(&name)) {
                let _ = verify(&p, &cfg);
            }
        }
    }
    if let Ok(p) = load_program(data, None) {
        let _ = verify(&p, &cfg);
    }
});
