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
    // Its second step asks for a CAS: not a program to register --read-only.
    assert!(out.contains("may write (instruction "), "{out}");
    let (code, out, _) = naam_verify(&[&handler("three_step.bpf.o"), "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["reads_only"], false, "{out}");
    assert!(v["first_mutating_insn"].is_u64(), "{out}");
}

#[test]
fn a_program_that_only_reads_is_said_to() {
    let sum = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../handlers/examples/sum.bpf.o"
    );
    let (code, out, _) = naam_verify(&[sum]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reads only"), "{out}");
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

/// `three_step.bpf.o` with `insns` written over the start of its entry section and `exit`
/// over the rest of it.
fn patched_three_step(insns: &[u8]) -> Vec<u8> {
    let obj = std::fs::read(handler("three_step.bpf.o")).unwrap();
    let prog = naam_core::elf::load_program(&obj, None).unwrap();
    let at = obj
        .windows(prog.insns.len())
        .position(|w| w == prog.insns.as_slice())
        .expect("the entry section's bytes are in the object as loaded");
    let mut out = obj.clone();
    let exit = [0x95u8, 0, 0, 0, 0, 0, 0, 0];
    for (k, chunk) in out[at..at + prog.insns.len()].chunks_mut(8).enumerate() {
        let src = insns.get(k * 8..k * 8 + 8).unwrap_or(&exit);
        chunk.copy_from_slice(src);
    }
    out
}

/// A file holding `bytes`, removed when the guard drops.
fn write_temp(name: &str, bytes: &[u8]) -> tempfile::TempPath {
    let file = tempfile::Builder::new()
        .prefix("naam-verify-cli-")
        .suffix(&format!("-{name}"))
        .tempfile()
        .unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    file.into_temp_path()
}

#[test]
fn a_jump_into_an_lddw_is_rejected_not_a_crash() {
    // Issue 13's crafted object: a jump into the second half of an lddw whose second half
    // decodes as a jump. It used to panic the loader (exit 101).
    let insns = [
        [0x15u8, 0x01, 3, 0, 0, 0, 0, 0], // if r1 == 0 goto 4
        [0x05, 0, 1, 0, 0, 0, 0, 0],      // goto 3: inside the lddw
        [0x18, 0, 0, 0, 7, 0, 0, 0],      // lddw r0, ...
        [0x05, 0, 1, 0, 0, 0, 0, 0],      // its second half, which reads as goto 5
        [0xb7, 0, 0, 0, 0, 0, 0, 0],      // r0 = 0
        [0x95, 0, 0, 0, 0, 0, 0, 0],      // exit
    ]
    .concat();
    let p = write_temp("lddw_jump.bpf.o", &patched_three_step(&insns));
    let (code, out, err) = naam_verify(&[p.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with("rejected: three_step: instruction "),
        "{out}"
    );
    assert!(out.contains("lddw"), "{out}");
}

#[test]
fn mutated_objects_exit_0_1_or_2_never_another_code() {
    let obj = std::fs::read(handler("three_step.bpf.o")).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..60 {
        let mut m = obj.clone();
        for _ in 0..1 + next() % 6 {
            let i = (next() % m.len() as u64) as usize;
            m[i] = next() as u8;
        }
        if round % 5 == 0 {
            m.truncate((next() % m.len() as u64) as usize);
        }
        let p = write_temp("mutated.bpf.o", &m);
        let (code, out, err) = naam_verify(&[p.to_str().unwrap()]);
        assert!(
            (0..=2).contains(&code),
            "round {round}: exit {code}: {out}{err}"
        );
    }
}

#[test]
fn verify_prints_json_on_request() {
    let (code, out, _) = naam_verify(&[&handler("three_step.bpf.o"), "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accepted"], true);
    assert_eq!(v["name"], "three_step");
    let (code, out, _) = naam_verify(&[
        &handler("verifier/write_step.bpf.o"),
        "--section",
        "naam/write_step",
        "--json",
    ]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accepted"], false);
    assert!(v["reason"].as_str().unwrap().contains("read-only"), "{v}");
}

/// `three_step.bpf.o` with its entry section's name (15 bytes) replaced by `name`.
fn renamed_three_step(name: &[u8; 15]) -> Vec<u8> {
    let mut obj = std::fs::read(handler("three_step.bpf.o")).unwrap();
    let old = b"naam/three_step";
    let at = obj.windows(15).position(|w| w == old).expect("the name");
    obj[at..at + 15].copy_from_slice(name);
    obj
}

#[test]
fn what_comes_from_the_object_is_printed_harmlessly_and_errors_say_what_is_wrong() {
    // A section name with a newline and a terminal escape: printed escaped, on one line.
    let p = write_temp("ansi.bpf.o", &renamed_three_step(b"naam/a\nb\x1b[31mre"));
    let (code, out, err) = naam_verify(&[p.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(out.contains(r"a\nb\u{1b}[31mre"), "{out:?}");
    // A name that is not UTF-8: said so, not "holds no program".
    let p = write_temp(
        "nonutf8.bpf.o",
        &renamed_three_step(b"naam/\xff\xfe\x80xxxxxxx"),
    );
    let (code, _, err) = naam_verify(&[p.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("name that cannot be read"), "{err}");
    // A 32-bit ELF header for eBPF: named as such, not "machine 0".
    let mut elf32 = vec![0u8; 52];
    elf32[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
    elf32[16] = 1; // ET_REL
    elf32[18] = 247; // EM_BPF
    elf32[20] = 1; // EV_CURRENT
    elf32[40] = 52; // e_ehsize
    elf32[46] = 40; // e_shentsize
    let p = write_temp("elf32.bpf.o", &elf32);
    let (code, _, err) = naam_verify(&[p.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("32-bit ELF"), "{err}");
    assert!(!err.contains("machine 0"), "{err}");
    // Not a file to read to its end.
    let started = std::time::Instant::now();
    let (code, _, err) = naam_verify(&["/dev/zero"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

/// An output that cannot be written (full, or its reader gone) is an error or nothing, never
/// a panic (exit 101 before); a reader that went away still gets the verdict's exit status.
#[test]
fn closed_or_full_outputs_do_not_panic() {
    use std::process::Stdio;
    let run = |stdout: Stdio, stderr: Stdio, file: &str| {
        let full = Command::new(env!("CARGO_BIN_EXE_naam"))
            .args(["verify", file])
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .expect("naam runs");
        full.code().expect("exit code")
    };
    let dev_full = || Stdio::from(std::fs::File::create("/dev/full").unwrap());
    let good = handler("three_step.bpf.o");
    let bad = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    assert_eq!(run(dev_full(), Stdio::null(), &good), 2, "stdout full");
    assert_eq!(run(Stdio::null(), dev_full(), bad), 2, "stderr full");
    // A reader gone before the verdict is written: `naam verify x | true`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_naam"))
        .args(["verify", &good])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
