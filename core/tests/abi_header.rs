//! Checks the Rust ABI mirror against `handlers/include/naam.h`: static assertions generated
//! from `naam_core::abi` are compiled together with the header by the host C compiler.

use naam_core::abi::{self, ctx, op};
use std::path::PathBuf;
use std::process::Command;

fn header_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../handlers/include")
}

fn c_compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    Command::new(&cc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| cc)
}

#[test]
fn rust_mirror_matches_c_header() {
    let Some(cc) = c_compiler() else {
        println!("skipped: no C compiler (set CC) to check naam.h against the Rust mirror");
        return;
    };
    let mut src = String::from("#include <stddef.h>\n#include \"naam.h\"\n");
    let mut check = |expr: String, value: usize| {
        src += &format!("_Static_assert(({expr}) == {value}, \"{expr} != {value}\");\n");
    };
    check("NAAM_ABI_VERSION".into(), abi::ABI_VERSION as usize);
    check("NAAM_ARGS_MAX".into(), abi::ARGS_MAX);
    check("NAAM_STATE_SIZE".into(), abi::STATE_SIZE);
    check("NAAM_MAX_OPS".into(), abi::MAX_OPS);
    check("NAAM_DATA_SIZE".into(), abi::DATA_SIZE);
    check("NAAM_OUT_MAX".into(), abi::OUT_MAX);
    check("sizeof(struct naam_op)".into(), abi::OP_SIZE);
    check("sizeof(struct naam_ctx)".into(), abi::CTX_SIZE);
    check("NAAM_DONE".into(), abi::RET_DONE as usize);
    check("NAAM_NEXT".into(), abi::RET_NEXT as usize);
    check("NAAM_ABORT(5)".into(), abi::ret_abort(5) as usize);
    check("NAAM_OP_READ".into(), abi::OpKind::Read as usize);
    check("NAAM_OP_WRITE".into(), abi::OpKind::Write as usize);
    check("NAAM_OP_CAS".into(), abi::OpKind::Cas as usize);
    check("NAAM_OP_FAA".into(), abi::OpKind::Faa as usize);
    for (field, off) in [
        ("abi_version", ctx::ABI_VERSION),
        ("step", ctx::STEP),
        ("args_len", ctx::ARGS_LEN),
        ("reserved0", ctx::RESERVED0),
        ("n_ops", ctx::N_OPS),
        ("out_len", ctx::OUT_LEN),
        ("scratch", ctx::SCRATCH),
        ("args", ctx::ARGS),
        ("state", ctx::STATE),
        ("ops", ctx::OPS),
        ("data", ctx::DATA),
        ("out", ctx::OUT),
    ] {
        check(format!("offsetof(struct naam_ctx, {field})"), off);
    }
    for (field, off) in [
        ("kind", op::KIND),
        ("flags", op::FLAGS),
        ("reserved", op::RESERVED),
        ("region", op::REGION),
        ("offset", op::OFFSET),
        ("len", op::LEN),
        ("data_off", op::DATA_OFF),
        ("arg0", op::ARG0),
        ("arg1", op::ARG1),
        ("result", op::RESULT),
        ("status", op::STATUS),
        ("reserved2", op::RESERVED2),
    ] {
        check(format!("offsetof(struct naam_op, {field})"), off);
    }
    let dir = std::env::temp_dir().join(format!("naam-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("abi_check.c");
    std::fs::write(&file, &src).unwrap();
    let out = Command::new(&cc)
        .arg("-fsyntax-only")
        .arg("-I")
        .arg(header_dir())
        .arg(&file)
        .output()
        .expect("run the C compiler");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "naam.h and naam_core::abi disagree:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
