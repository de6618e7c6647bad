//! The loader puts clang's blocks in forward order: the bundled MICA programs (whose DAGs clang
//! lays out with backward jumps to shared tails) load with forward jumps only, and re-laying
//! out a forward program leaves it unchanged.

use naam_core::elf::ElfObject;
use naam_core::relayout::forward_layout;

#[test]
fn mica_programs_load_with_forward_jumps_only() {
    let obj = ElfObject::parse(naam_handlers::mica::MICA_OBJECT).unwrap();
    for s in [
        naam_handlers::mica::GET_SECTION,
        naam_handlers::mica::PUT_SECTION,
        naam_handlers::mica::DELETE_SECTION,
    ] {
        let p = obj.program(Some(s)).unwrap();
        for (i, c) in p.insns.chunks(8).enumerate() {
            let class = c[0] & 0x07;
            let is_jump = (class == 0x05 || class == 0x06) && c[0] != 0x85 && c[0] != 0x95;
            if is_jump {
                assert!(
                    i16::from_le_bytes([c[2], c[3]]) >= 0,
                    "{s}: insn {i} jumps backward"
                );
            }
        }
        assert_eq!(
            forward_layout(&p).unwrap().insns,
            p.insns,
            "{s}: a forward program is left alone"
        );
    }
}
