//! Checks the Rust mirror (`naam_handlers::mica::layout`) against `include/mica.h`: static
//! assertions generated from the Rust constants are compiled with the header by the host C
//! compiler.

use naam_handlers::mica::layout::{self, args};
use std::path::PathBuf;
use std::process::Command;

#[test]
fn rust_layout_matches_mica_h() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if !Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("skipped: no C compiler (set CC) to check mica.h against the Rust mirror");
        return;
    }
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include");
    let mut src = String::from("#include <stddef.h>\n#include \"mica.h\"\n");
    let mut check = |expr: &str, value: u64| {
        src += &format!("_Static_assert(({expr}) == {value}ULL, \"{expr} != {value}\");\n");
    };
    check("MICA_MAGIC", layout::MAGIC);
    check("MICA_LINE", layout::LINE);
    check("MICA_HDR", layout::HDR);
    check("MICA_SLOTS", layout::SLOTS as u64);
    check("MICA_LINK_SLOT", layout::LINK_SLOT as u64);
    check("MICA_INDEX_OVF_NEXT", layout::INDEX_OVF_NEXT);
    check("MICA_LOG_TAIL", layout::LOG_TAIL);
    check("MICA_LOG_FLAGS", layout::LOG_FLAGS);
    check("MICA_FLAG_LOSSLESS", layout::FLAG_LOSSLESS as u64);
    check("MICA_KEY_MAX", layout::KEY_MAX as u64);
    check("MICA_VALUE_MIN", layout::VALUE_MIN as u64);
    check("MICA_VALUE_MAX", layout::VALUE_MAX as u64);
    check("MICA_ITEM_HDR", layout::ITEM_HDR as u64);
    check("MICA_ITEM_MAX", layout::ITEM_MAX as u64);
    check("MICA_OFFSET_MASK", layout::OFFSET_MASK);
    check("MICA_ARGS_FIXED", layout::ARGS_FIXED as u64);
    check("MICA_REPLY_HDR", layout::REPLY_HDR as u64);
    check("MICA_OK", layout::STATUS_OK as u64);
    check("MICA_NOT_FOUND", layout::STATUS_NOT_FOUND as u64);
    check("MICA_E_ARGS", layout::E_ARGS as u64);
    check("MICA_E_VALUE", layout::E_VALUE as u64);
    check("MICA_E_FULL", layout::E_FULL as u64);
    check("MICA_E_CONTENDED", layout::E_CONTENDED as u64);
    check("MICA_E_STATE", layout::E_STATE as u64);
    check("MICA_E_LOG_FULL", layout::E_LOG_FULL as u64);
    check("MICA_MAX_RETRIES", layout::MAX_RETRIES as u64);
    for (field, off) in [
        ("index_region", args::INDEX_REGION),
        ("log_region", args::LOG_REGION),
        ("bucket_mask", args::BUCKET_MASK),
        ("overflow_count", args::OVERFLOW_COUNT),
        ("log_mask", args::LOG_MASK),
        ("key_len", args::KEY_LEN),
        ("value_len", args::VALUE_LEN),
        ("flags", args::FLAGS),
        ("key", args::KEY),
        ("value", args::VALUE),
    ] {
        check(&format!("offsetof(struct mica_args, {field})"), off as u64);
    }
    check(
        "sizeof(struct mica_args)",
        (args::VALUE + layout::VALUE_MAX) as u64,
    );
    let dir = std::env::temp_dir().join(format!("naam-mica-h-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("check.c");
    std::fs::write(&file, &src).unwrap();
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
        "mica.h and the Rust mirror disagree:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
