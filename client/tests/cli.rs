//! The `naam` binary against a real deployment (see `common`).

mod common;

use common::start_server;
use std::process::Command;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(out: &std::process::Output) -> Run {
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn naam(s: &common::TestServer, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_naam"))
        .arg("--server")
        .arg(s.data.to_string())
        .arg("--control")
        .arg(s.control.to_string())
        .args(s.key_args())
        .args(args)
        .output()
        .expect("naam runs");
    Run::of(&out)
}

/// A failed run: non-zero exit, nothing on stdout, one line on stderr naming the problem.
fn assert_one_line_error(r: &Run, needle: &str) {
    assert!(!r.ok, "expected failure: {}", r.stdout);
    assert!(r.stdout.is_empty(), "stdout: {}", r.stdout);
    assert_eq!(r.stderr.lines().count(), 1, "stderr: {}", r.stderr);
    assert!(r.stderr.starts_with("naam: "), "stderr: {}", r.stderr);
    assert!(r.stderr.contains(needle), "{needle:?} not in {}", r.stderr);
}

const THREE_STEP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../handlers/test/three_step.bpf.o"
);

#[test]
fn offload_add_ls_rm() {
    let s = start_server();
    let add = naam(&s, &["offload", "add", THREE_STEP, "--class", "6"]);
    assert!(add.ok, "{}", add.stderr);
    let id: u32 = add.stdout.trim().parse().expect("add prints the id");
    assert!(id >= 16);
    let ls = naam(&s, &["offload", "ls"]);
    assert!(ls.ok, "{}", ls.stderr);
    let mut lines = ls.stdout.lines();
    assert_eq!(lines.next(), Some("id\tclass\ttenant\tro\tinsns\tname"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    let row = rows
        .iter()
        .find(|r| r[0] == id.to_string())
        .expect("the new offload is listed");
    assert_eq!(row[1], "6");
    assert_eq!(row[3], "no");
    assert_eq!(row[5], "three_step");
    assert!(row[4].parse::<u32>().unwrap() > 0);
    assert!(
        rows.iter().any(|r| r[5] == "record"),
        "bundled offloads listed"
    );
    let rm = naam(&s, &["offload", "rm", &id.to_string()]);
    assert!(rm.ok, "{}", rm.stderr);
    assert!(rm.stdout.is_empty());
    let ls = naam(&s, &["offload", "ls"]);
    assert!(!ls.stdout.lines().any(|l| l.starts_with(&format!("{id}\t"))));
    assert_one_line_error(
        &naam(&s, &["offload", "rm", &id.to_string()]),
        "unknown_offload",
    );
}

#[test]
fn offload_add_with_section_and_bad_objects() {
    let s = start_server();
    let add = naam(
        &s,
        &[
            "offload",
            "add",
            THREE_STEP,
            "--section",
            "naam/three_step",
            "--read-only",
        ],
    );
    assert!(add.ok, "{}", add.stderr);
    // Accepted (its CAS steps are refused when they run), but the operator is told now.
    assert!(
        add.stderr
            .contains("warning: three_step: may write (instruction "),
        "{}",
        add.stderr
    );
    let bad = naam(
        &s,
        &["offload", "add", THREE_STEP, "--section", "naam/nope"],
    );
    assert_one_line_error(&bad, "invalid_program");
    let missing = naam(&s, &["offload", "add", "/no/such/file.o"]);
    assert_one_line_error(&missing, "reading /no/such/file.o");
    assert!(
        !missing.stderr.contains("server "),
        "a missing file is not the server's fault: {}",
        missing.stderr
    );
    // Not a regular file: refused at once (it was read without end, 4 GB in 5 s).
    let zero = naam(&s, &["offload", "add", "/dev/zero"]);
    assert_one_line_error(&zero, "not a regular file");
    // A name that would forge rows of `offload ls`, and a server's refusal said once.
    let forged = naam(&s, &["offload", "add", THREE_STEP, "--name", "a\tb\nc"]);
    assert_one_line_error(&forged, "register.name holds a control character");
    assert_eq!(
        forged.stderr.matches("control character").count(),
        1,
        "{}",
        forged.stderr
    );
}

#[test]
fn stats_prints_name_value_lines() {
    let s = start_server();
    let r = naam(&s, &["stats"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(!r.stdout.is_empty());
    for line in r.stdout.lines() {
        let (name, value) = line.split_once(' ').expect("name value");
        assert!(!name.is_empty());
        value.parse::<u64>().expect("a number");
    }
}

#[test]
fn an_unreachable_server_is_one_clear_line() {
    // Nothing listens on these ports (bound and released above, so they were free).
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let out = Command::new(env!("CARGO_BIN_EXE_naam"))
        .args(["--server", &addr.to_string(), "--timeout-ms", "5", "stats"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains(&addr.to_string()), "names the server: {err}");
    // The port the request went to, and what it waited for: STATS goes to the control port.
    let mut control = addr;
    control.set_port(addr.port() - 1);
    assert!(err.contains(&format!("to {control} timed out")), "{err}");
    assert!(err.contains("no stats reply in 6 attempts"), "{err}");
}

/// A command that changes something and timed out may have been applied: it exits 3, not
/// 1, so that a script reads back before running it again (probe 12: writes parked at a
/// stalled host timed out "nothing answered" and were applied later, exit 1 like any
/// failure). A query that timed out is a plain failure.
#[test]
fn a_write_whose_outcome_is_unknown_exits_3() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_naam"))
            .args([
                "--server",
                &addr.to_string(),
                "--timeout-ms",
                "5",
                "--retries",
                "1",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let rm = run(&["offload", "rm", "99"]);
    assert_eq!(rm.status.code(), Some(3), "{rm:?}");
    let err = String::from_utf8_lossy(&rm.stderr);
    assert!(err.contains("a write may still be applied"), "{err}");
    // `call` first reads the offload's entry (its class, whether it is read-only).
    let call = run(&["call", "16", "--class", "0", "u32:1"]);
    assert_eq!(call.status.code(), Some(1), "{call:?}");
    let stats = run(&["stats"]);
    assert_eq!(stats.status.code(), Some(1), "{stats:?}");
    // A query changes nothing: its timeout speaks of no write (probe 20).
    let err = String::from_utf8_lossy(&stats.stderr);
    assert!(
        err.contains("nothing answered") && !err.contains("write"),
        "{err}"
    );
    // `put` first reads the table's geometry: when that query times out, nothing was sent.
    let put = run(&["put", "k", "v"]);
    assert_eq!(put.status.code(), Some(1), "{put:?}");
}

#[test]
fn timeouts_and_retries_bound_the_wait() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_naam"))
        .args([
            "--server",
            &addr.to_string(),
            "--timeout-ms",
            "40",
            "--retries",
            "2",
        ])
        .arg("stats")
        .output()
        .unwrap();
    let waited = started.elapsed();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // 40 + 80 + 160 ms of waiting, then the error.
    assert!(err.contains("in 3 attempts"), "{err}");
    assert!(
        waited >= std::time::Duration::from_millis(280),
        "{waited:?}"
    );
}

#[test]
fn addresses_and_timings_no_server_can_have_are_refused_at_once() {
    for args in [
        &["--server", "127.0.0.1:0"][..],
        &["--server", "127.0.0.1:1"],
        &["--server", "0.0.0.0:7000"],
        &["--server", "127.0.0.1:7000", "--control", "127.0.0.1:0"],
        &["--timeout-ms", "0"],
        &["--retries", "1000"],
    ] {
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_naam"))
            .args(args)
            .arg("stats")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(!err.contains("timed out"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{args:?}"
        );
        // A control port nobody named is said to be the data port's neighbour (probe 20:
        // "address 127.0.0.1:0" for `--server 127.0.0.1:1`, an address never given).
        if args == ["--server", "127.0.0.1:1"] {
            assert!(err.contains("the data port 1 minus one"), "{err}");
        }
    }
}

#[test]
fn usage_errors_exit_non_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_naam"))
        .args(["btree", "lookup", "not-a-number"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn put_get_delete() {
    let s = start_server();
    let put = naam(&s, &["put", "greeting", "hello world"]);
    assert!(put.ok, "{}", put.stderr);
    assert!(put.stdout.is_empty());
    let get = naam(&s, &["get", "greeting"]);
    assert!(get.ok, "{}", get.stderr);
    assert_eq!(get.stdout, "hello world\n");
    assert_eq!(
        naam(&s, &["--local", "get", "greeting"]).stdout,
        "hello world\n"
    );
    let put = naam(&s, &["--local", "put", "greeting", "bye"]);
    assert!(put.ok, "{}", put.stderr);
    assert_eq!(naam(&s, &["get", "greeting"]).stdout, "bye\n");
    let del = naam(&s, &["delete", "greeting"]);
    assert!(del.ok, "{}", del.stderr);
    assert_one_line_error(&naam(&s, &["get", "greeting"]), "key not found: greeting");
    assert_one_line_error(
        &naam(&s, &["delete", "greeting"]),
        "key not found: greeting",
    );
    // Refused here, before anything is sent: not said to be the server's error.
    let long = naam(&s, &["put", "a-key-longer-than-sixteen-bytes", "v"]);
    assert_one_line_error(&long, "naam: mica: key of 31 bytes");
    assert!(!long.stderr.contains("server"), "{}", long.stderr);
}

#[test]
fn keys_and_values_that_are_not_text_go_through_hex() {
    let s = start_server();
    // A key and a value with a zero byte and bytes that are not UTF-8, as the bundled data's.
    let put = naam(&s, &["put", "--hex", "00ff6b", "c3289f00"]);
    assert!(put.ok, "{}", put.stderr);
    let get = naam(&s, &["get", "--hex", "00FF6B"]);
    assert!(get.ok, "{}", get.stderr);
    assert_eq!(get.stdout, "c3289f00\n");
    assert_eq!(
        naam(&s, &["--local", "get", "--hex", "00ff6b"]).stdout,
        "c3289f00\n"
    );
    // Printed as text it would be changed: refused, with the way to read it.
    let text = naam(&s, &["put", "--hex", "6b", "c328"]);
    assert!(text.ok, "{}", text.stderr);
    assert_one_line_error(
        &naam(&s, &["get", "k"]),
        "not UTF-8 text (2 bytes); print it with --hex",
    );
    // Terminal escapes stored in a value are not written to the terminal (JSON escapes them).
    assert!(naam(&s, &["put", "esc", "red\x1b[31m\rover"]).ok);
    assert_one_line_error(&naam(&s, &["get", "esc"]), "holds control characters");
    let json = naam(&s, &["--json", "get", "esc"]);
    assert!(
        json.ok && json.stdout.contains("\\u001b[31m\\r"),
        "{}",
        json.stdout
    );
    assert!(naam(&s, &["put", "tab", "a\tb"]).ok);
    assert_eq!(naam(&s, &["get", "tab"]).stdout, "a\tb\n");
    // A text value read with --hex is its bytes.
    assert!(naam(&s, &["put", "t", "hi"]).ok);
    assert_eq!(naam(&s, &["get", "--hex", "74"]).stdout, "6869\n");
    assert_one_line_error(
        &naam(&s, &["get", "--hex", "0g"]),
        "key \"0g\" (--hex): not hex",
    );
    assert_one_line_error(
        &naam(&s, &["put", "--hex", "00", "abc"]),
        "value \"abc\" (--hex): odd number of hex digits",
    );
    let del = naam(&s, &["delete", "--hex", "00ff6b"]);
    assert!(del.ok, "{}", del.stderr);
    assert_one_line_error(
        &naam(&s, &["get", "--hex", "00ff6b"]),
        "key not found: 00ff6b",
    );
}

#[test]
fn a_reader_that_goes_away_is_not_an_error() {
    // `naam btree scan 1 1000 | head -0`: the output's reader is gone before it is written.
    // That ends the command quietly, as for other command-line tools, instead of a
    // "Broken pipe" error (or a panic with stderr closed too).
    let s = start_server();
    for close_stderr in [false, true] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_naam"))
            .arg("--server")
            .arg(s.data.to_string())
            .arg("--control")
            .arg(s.control.to_string())
            .args(s.key_args())
            .args(["btree", "scan", "1", "1000"])
            .stdout(std::process::Stdio::piped())
            .stderr(if close_stderr {
                std::process::Stdio::null()
            } else {
                std::process::Stdio::piped()
            })
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn an_object_too_large_for_a_sealed_register_is_refused_here_with_the_limit() {
    let s = start_server();
    let dir = std::env::temp_dir().join(format!("naam-cli-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let max = naam_core::wire::sealed_object_max("big", None);
    for len in [max + 1, naam_core::wire::OBJECT_MAX, 0] {
        let f = dir.join(format!("obj{len}.o"));
        std::fs::write(&f, vec![0u8; len]).unwrap();
        let r = naam(
            &s,
            &["offload", "add", f.to_str().unwrap(), "--name", "big"],
        );
        let needle = if len == 0 {
            // Named (the wire format's "register.object must not be empty" was not).
            "obj0.o: empty file"
        } else {
            "fit in one sealed REGISTER"
        };
        assert_one_line_error(&r, needle);
        // Refused before anything was sent: not said to be the server's.
        assert!(!r.stderr.contains("server "), "{}", r.stderr);
    }
    // One byte under the limit reaches the server (and its loader says what is wrong).
    let f = dir.join("fits.o");
    std::fs::write(&f, vec![0u8; max]).unwrap();
    let r = naam(
        &s,
        &["offload", "add", f.to_str().unwrap(), "--name", "big"],
    );
    assert_one_line_error(&r, "invalid_program");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn describe_prints_parameters_and_runs_admin_commands() {
    let s = start_server();
    let r = naam(&s, &["describe", "mica"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.lines().any(|l| l.starts_with("buckets ")),
        "{}",
        r.stdout
    );
    let r = naam(&s, &["describe", "host"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.lines().any(|l| l.starts_with("pid ")),
        "{}",
        r.stdout
    );
    let r = naam(&s, &["--json", "describe", "congest-nic:0"]);
    assert!(r.ok, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["congest_ms"], 0);
    assert_one_line_error(&naam(&s, &["describe", "nosuch"]), "unknown_app");
}

/// A server's error text is the server's: printed with its control characters escaped, so
/// a hostile server cannot forge lines of output or colour the terminal (the second probe
/// of 2026-12-06: `naam stats` printed a detail with a newline and escape codes raw).
#[test]
fn a_servers_error_text_cannot_forge_output() {
    use naam_core::wire::{Body, ErrorCode, ErrorRepr, Message};
    let server = common::scripted_server(|d| {
        let req = Message::parse(d).ok()?;
        let e = ErrorRepr::new(ErrorCode::Internal, "oops\nnaam: all is well\u{1b}[31m");
        Some(common::reply_to(&req, Body::Error(e)))
    });
    let addr = server.addr.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_naam"))
        .args(["--server", &addr, "--control", &addr])
        .args(["--timeout-ms", "2000", "stats"])
        .env_remove("NAAM_KEY_FILE")
        .output()
        .unwrap();
    let r = Run::of(&out);
    assert_one_line_error(&r, "oops\\nnaam: all is well\\u{1b}[31m");
}
