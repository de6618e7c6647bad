//! Checks the Rust mirror (`naam_handlers::btree::layout`) against `handlers/include/btree.h`:
//! static assertions generated from the Rust constants are compiled with the header by the host
//! C compiler.

use naam_handlers::btree::layout::{self, node, sup, AbortCode};
use std::path::PathBuf;
use std::process::Command;

#[test]
fn rust_mirror_matches_btree_h() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if !Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("skipped: no C compiler (set CC) to check btree.h against the Rust mirror");
        return;
    }
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include");
    let mut src = String::from("#include <stddef.h>\n#include \"btree.h\"\n");
    let mut check = |expr: &str, value: u64| {
        src += &format!("_Static_assert(({expr}) == {value}ULL, \"{expr} != {value}\");\n");
    };
    check("BTREE_FANOUT", layout::FANOUT as u64);
    check("BTREE_NODE_SIZE", layout::NODE_SIZE as u64);
    check("sizeof(struct btree_node)", layout::NODE_SIZE as u64);
    check("BTREE_SUPER_SIZE", layout::SUPER_SIZE as u64);
    check("BTREE_MAGIC", layout::MAGIC);
    for (name, off) in [
        ("MAGIC", sup::MAGIC),
        ("ROOT", sup::ROOT),
        ("ALLOC", sup::ALLOC),
        ("NODE_SIZE", sup::NODE_SIZE),
        ("FANOUT", sup::FANOUT),
        ("HEIGHT", sup::HEIGHT),
        ("N_KEYS", sup::N_KEYS),
    ] {
        check(&format!("BTREE_SUPER_{name}"), off as u64);
    }
    for (name, field, off) in [
        ("VERSION", "version", node::VERSION),
        ("LEVEL", "level", node::LEVEL),
        ("COUNT", "count", node::COUNT),
        ("HIGH", "high", node::HIGH),
        ("NEXT", "next", node::NEXT),
        ("KEYS", "keys", node::KEYS),
        ("VALS", "vals", node::VALS),
    ] {
        check(&format!("BTREE_NODE_{name}"), off as u64);
        check(&format!("offsetof(struct btree_node, {field})"), off as u64);
    }
    check("sizeof(struct btree_args)", layout::ARGS_LEN as u64);
    check("offsetof(struct btree_args, region)", 0);
    check("offsetof(struct btree_args, count)", 4);
    check("offsetof(struct btree_args, root)", 8);
    check("offsetof(struct btree_args, key)", 16);
    check("BTREE_SCAN_MAX", layout::SCAN_MAX as u64);
    check("BTREE_SCAN_END", layout::SCAN_END as u64);
    check("BTREE_MAX_STEPS", layout::MAX_STEPS as u64);
    check("BTREE_LEVEL_ANY", layout::LEVEL_ANY as u64);
    check(
        "sizeof(struct btree_lookup_reply)",
        layout::LOOKUP_REPLY_LEN as u64,
    );
    check(
        "sizeof(struct btree_scan_reply)",
        layout::SCAN_HEADER_LEN as u64,
    );
    check(
        "BTREE_DATA_VERSION_AFTER",
        layout::DATA_VERSION_AFTER as u64,
    );
    check("BTREE_E_ARGS", AbortCode::Args as u64);
    check("BTREE_E_CORRUPT", AbortCode::Corrupt as u64);
    check("BTREE_E_BUSY", AbortCode::Busy as u64);
    check("BTREE_MAX_STEPS", naam_core::exec::DEFAULT_MAX_STEPS as u64);

    let dir = std::env::temp_dir().join(format!("naam-btree-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("check.c");
    std::fs::write(&file, &src).expect("write check.c");
    let out = Command::new(&cc)
        .arg("-fsyntax-only")
        .arg("-I")
        .arg(&include)
        .arg(&file)
        .output()
        .expect("run the C compiler");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "btree.h and the Rust mirror disagree:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
