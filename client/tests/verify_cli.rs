//! `naam verify`: accepted (exit 0), rejected (exit 1), unreadable or not an eBPF object (2).

use std::process::Command;

fn naam_verify(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_naam"))
        .arg("verify")
        .args(args)
        .output()
        .expect("naam runs");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn handler(path: &str) -> String {
    format!("{}/../handlers/test/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn accepted_program_exits_0_with_worst_case() {
    let (code, out, _) = naam_verify(&[&handler("three_step.bpf.o")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("accepted: three_step: "), "{out}");
    assert!(out.contains("instructions, worst case "), "{out}");
}

#[test]
fn rejected_program_exits_1_with_instruction_and_reason() {
    let (code, out, _) = naam_verify(&[
        &handler("verifier/write_step.bpf.o"),
        "--section",
        "naam/write_step",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("rejected: write_step: instruction "),
        "{out}"
    );
    assert!(out.contains("read-only"), "{out}");
}

#[test]
fn unreadable_input_exits_2_with_one_line() {
    let (code, out, err) = naam_verify(&["/nonexistent/x.bpf.o"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, err) = naam_verify(&[concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")]);
    assert_eq!(code, 2);
    assert!(err.contains("not a valid ELF object"), "{err}");
    let (code, _, err) = naam_verify(&[&handler("three_step.bpf.o"), "--section", "naam/nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("no section"), "{err}");
}
