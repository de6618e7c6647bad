//! The `naam-dataplane` binary as a process, against the in-process stand-in host agent:
//! it serves a NIC-executed request over UDP and exits cleanly on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{call, record_request, run_dir, TestHost};
use naam_core::wire::{Body, Location, Message, PageRequestRepr};

#[test]
fn binary_serves_udp_and_stops_on_sigterm() {
    let tmp = run_dir("bin");
    let dir = tmp.path().to_owned();
    let host = TestHost::start(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_naam-dataplane"))
        .args([
            "--port",
            "udp:127.0.0.1:0",
            "--classes",
            "8",
            "--workers",
            "2",
        ])
        .arg("--run-dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // "naam-dataplane serving data 127.0.0.1:P control 127.0.0.1:Q"
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.get(2), Some(&"data"), "unexpected banner {line:?}");
    let data: SocketAddr = words[3].parse().unwrap();
    let control: SocketAddr = words[5].parse().unwrap();
    assert_eq!(
        control.port(),
        data.port() - 1,
        "control port defaults to base - 1"
    );

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let class5 = SocketAddr::new(data.ip(), data.port() + 5);
    let reply = call(&client, class5, &record_request(7));
    match Message::parse(&reply).unwrap().body {
        Body::AmReply(r) => assert_eq!(r.executed_at, Location::Nic),
        other => panic!("expected an AM reply, got {other:?}"),
    }
    let stats = call(
        &client,
        control,
        &Message::new(8, 0, Body::Stats(PageRequestRepr { start: 0, max: 0 })),
    );
    assert!(matches!(
        Message::parse(&stats).unwrap().body,
        Body::StatsReply(_)
    ));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("did not stop within 5 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit:?}");
    drop(out);
    host.kill();
}

#[test]
fn a_config_file_sets_flags_and_the_command_line_wins() {
    let tmp = run_dir("cfg");
    let dir = tmp.path().to_owned();
    let host = TestHost::start(&dir);
    let file = dir.join("dataplane.toml");
    std::fs::write(
        &file,
        format!(
            "port = \"udp:127.0.0.1:0\"\nclasses = 8\nworkers = 2\nrun-dir = \"{}\"\nno-client-hints = true\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_naam-dataplane"))
        .args(["--workers", "1", "--config"])
        .arg(&file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.get(2), Some(&"data"), "unexpected banner {line:?}");
    let control: SocketAddr = words[5].parse().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let stats = call(
        &client,
        control,
        &Message::new(8, 0, Body::Stats(PageRequestRepr { start: 0, max: 0 })),
    );
    let Body::StatsReply(page) = Message::parse(&stats).unwrap().body else {
        panic!("expected stats");
    };
    let workers = page
        .entries
        .iter()
        .find(|e| e.name == "dp.workers")
        .unwrap();
    assert_eq!(
        workers.value, 1,
        "--workers on the command line beats the file's 2"
    );
    assert!(page.entries.iter().any(|e| e.name == "w0.rx"));
    let _ = child.kill();
    let _ = child.wait();
    host.kill();
    // An unknown key is refused, naming it.
    std::fs::write(&file, "no-such-flag = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_naam-dataplane"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-flag"), "{err}");
    assert!(
        err.contains("config file") && err.contains("unknown key"),
        "{err}"
    );
    // A value of the wrong type or form is the file's mistake too, named with its key (it
    // read as an unexpected command-line argument: `-1` as a flag, `1` after a switch).
    for (text, needle) in [
        ("workers = -1\n", "'-1' for '--workers"),
        ("pin = 1\n", "'1' for '--pin'"),
        ("engine = \"--pin\"\n", "'--pin' for '--engine"),
        ("port = \"bogus:1\"\n", "'bogus:1' for '--port"),
        // A list for a flag of one value: the last item won, without a word (probe 10).
        ("workers = [1, 3]\n", "workers takes one value"),
        // A flag's alias is a key too (`control-addr` was refused as unknown, probe 20),
        // but not beside its flag's name (the later won without a word, probe 21).
        ("control-addr = \"nonsense\"\n", "'nonsense' for '--control"),
        (
            "control = \"127.0.0.1:1\"\ncontrol-addr = \"127.0.0.1:2\"\n",
            "are one setting",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_naam-dataplane"))
            .arg("--config")
            .arg(&file)
            .args(["--run-dir", "/nonexistent/naam-run"])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("config file") && err.contains(needle),
            "{text}: {err}"
        );
    }
    // The command line wins over the file for a flag taken several times too: the two lists
    // were joined (probe 21), and this file's own duplicate would be refused.
    std::fs::write(&file, "tenant-weight = [\"2=3\", \"2=4\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_naam-dataplane"))
        .arg("--config")
        .arg(&file)
        .args([
            "--tenant-weight",
            "2=5",
            "--run-dir",
            "/nonexistent/naam-run",
            "--connect-wait-ms",
            "100",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        !err.contains("twice") && err.contains("/nonexistent/naam-run"),
        "{err}"
    );
}

#[test]
fn settings_that_could_not_serve_are_refused_before_anything_starts() {
    // Zero workers, slots, classes or steps would serve nothing, zero de-duplication entries
    // or retention would break at-most-once (or fall back to a default
    // without saying so); a calm threshold above the congested one would flap. Each is one
    // line naming the flag, and no host agent is needed to hear it.
    for (args, needle) in [
        (&["--workers", "0"][..], "--workers"),
        (&["--slots", "0"][..], "--slots"),
        (&["--burst", "0"][..], "--burst"),
        (&["--classes", "0"][..], "--classes"),
        // Fewer than the bundled applications' classes (their commands timed out).
        (&["--classes", "2"][..], "--classes 2"),
        // Below data port 1 is no control port (it was bound anywhere, and clients looked
        // at port 0).
        (&["--port", "udp:127.0.0.1:1"][..], "would be port 0"),
        // A control port among the data ports failed later with a bare "address in use".
        (
            &[
                "--port",
                "udp:127.0.0.1:7430",
                "--control",
                "127.0.0.1:7435",
            ][..],
            "one of the data ports",
        ),
        (&["--max-steps", "0"][..], "--max-steps"),
        (&["--port", "udp:255.255.255.255:45300"][..], "broadcast"),
        (&["--control", "224.0.0.1:45299"][..], "multicast"),
        // The reserved tenant, and a tenant weighed twice (the last won, probe 20).
        (&["--tenant-weight", "4294967295=5"][..], "reserved"),
        (
            &["--tenant-weight", "1=2", "--tenant-weight", "1=3"][..],
            "tenant 1 is given a weight twice (2 and 3)",
        ),
        // No de-duplication would let a retransmitted mutation run twice.
        (&["--dedup", "0"][..], "--dedup"),
        (&["--dedup-retain-ms", "0"][..], "--dedup-retain-ms"),
        // A wait without end for the host agent.
        (
            &["--connect-wait-ms", "9223372036854775807"][..],
            "--connect-wait-ms",
        ),
        (
            &["--nic-high", "0.2", "--nic-low", "0.5"][..],
            "--nic-low 0.5",
        ),
        (&["--host-low=-1"][..], "--host-low -1"),
        // Milliseconds turned into nanoseconds overflowed (a panic in a debug build, a
        // wrapped, tiny dwell in a release build); a speed-up of 0 or NaN broke the cost model.
        (
            &["--min-dwell-ms", "18446744073709551615"][..],
            "--min-dwell-ms",
        ),
        (
            &["--client-lease-ms", "18446744073709551615"][..],
            "--client-lease-ms",
        ),
        (
            &["--poll-budget-us", "18446744073709551615"][..],
            "--poll-budget-us",
        ),
        (&["--poll-budget-us", "0"][..], "--poll-budget-us"),
        (&["--stale-ms", "0"][..], "--stale-ms"),
        (&["--queue-high", "0"][..], "--queue-high"),
        (&["--host-speedup", "nan"][..], "--host-speedup"),
        (&["--host-speedup", "0"][..], "--host-speedup"),
        // Read until memory ran out (probe 9).
        (&["--config", "/dev/zero"][..], "not a regular file"),
        // A port of no known form (it was found out only after connecting to the host).
        (&["--port", "bogus:1"][..], "--port"),
        (&["--port", "udp:1.2.3:5"][..], "udp:IPV4:PORT"),
        (&["--port", "udp:127.0.0.1:65500"][..], "past 65535"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_naam-dataplane"))
            .args(args)
            .args(["--run-dir", "/nonexistent/naam-run"])
            // A backtrace would be printed by `main` returning the error: it is not.
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("the binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
        // The parser's refusals exit 2 with its usage; the program's own are one line.
        if out.status.code() == Some(1) {
            let last = err.lines().last().unwrap_or_default();
            assert!(
                last.starts_with("naam-dataplane: ") && last.contains(needle),
                "{args:?}: not one line: {err}"
            );
            assert!(
                !err.contains("Caused by") && !err.contains("backtrace"),
                "{err}"
            );
        }
        assert!(
            !err.contains("link socket"),
            "{args:?} got as far as the link: {err}"
        );
    }
}

/// A run directory too deep for the host agent's sockets' paths: said with the lengths, not
/// as the system's "path must be shorter than SUN_LEN" after a wait for the host agent.
#[test]
fn a_run_directory_too_long_for_its_sockets_is_refused_with_the_lengths() {
    // Refused within 5 s (not after the wait for a host agent), saying `why`.
    let refused_at_once = |run: &std::path::Path, why: &str| {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_naam-dataplane"))
            .args(["--port", "udp:127.0.0.1:0", "--connect-wait-ms", "20000"])
            .arg("--run-dir")
            .arg(run)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("the binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(why), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    };
    let run = format!("/nonexistent/{}", "r".repeat(110));
    refused_at_once(run.as_ref(), "past the 107");
    // A run directory that is a file can never hold the host agent's sockets: said at once,
    // not after the whole wait for a host agent (10 s by default, probe 10).
    let file = tempfile::NamedTempFile::new().unwrap();
    refused_at_once(file.path(), "Not a directory");
}

/// A dataplane still waiting for its host agent stops as promptly as one serving: on
/// SIGTERM (not on SIGUSR1 or SIGUSR2, which it ignores), and when its starter is gone (`--parent-pid` naming a process that is not its
/// parent). It waited out `--connect-wait-ms` (10 s here) before.
#[test]
fn a_dataplane_waiting_for_its_host_agent_stops_at_once_when_asked() {
    let tmp = run_dir("wait");
    let start = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_naam-dataplane"))
            .args(["--port", "udp:127.0.0.1:0", "--connect-wait-ms", "10000"])
            .arg("--run-dir")
            .arg(tmp.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs")
    };
    let waited = |child: &mut std::process::Child| {
        let t = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(8) {
                let _ = child.kill();
                panic!("still waiting for the host agent 8 s later");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut child = start(&[]);
    std::thread::sleep(Duration::from_millis(300));
    // SIGUSR1 and SIGUSR2 are ignored: by default they ended it, silently (probe 22).
    for sig in ["-USR1", "-USR2"] {
        let _ = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "a user signal ended it"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let (status, after) = waited(&mut child);
    assert!(status.success(), "{status}");
    assert!(after < Duration::from_secs(2), "{after:?}");
    // Its starter gone before it looked (a pid of no process now).
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let mut orphan = start(&["--parent-pid", &gone.id().to_string()]);
    let (status, after) = waited(&mut orphan);
    assert!(status.success(), "{status}");
    assert!(after < Duration::from_secs(2), "{after:?}");
    // A live process that is not its parent is a mistake, said at once (it stopped, exit 0).
    let out = Command::new(env!("CARGO_BIN_EXE_naam-dataplane"))
        .args(["--port", "udp:127.0.0.1:0", "--parent-pid", "1"])
        .arg("--run-dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--parent-pid 1: that process is not this one's parent"),
        "{err}"
    );
}

/// The log of a dataplane started with `extra` that waits for a host agent (there is none)
/// until it is stopped half a second later; stderr is a file.
fn log_of_a_waiting_dataplane(name: &str, extra: &[&str]) -> String {
    let tmp = run_dir(name);
    let log_path = tmp.path().join("dp.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_naam-dataplane"))
        .args(["--port", "udp:127.0.0.1:0", "--connect-wait-ms", "10000"])
        .arg("--run-dir")
        .arg(tmp.path().join("run"))
        .args(extra)
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the binary runs");
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(&log_path).unwrap()
}

/// A log written to a file is plain text: no terminal colour codes around the levels and
/// fields, so `grep` finds the lines the docs show (it had them whenever stderr was a file,
/// as in a deployment's `--log-dir`).
#[test]
fn a_log_to_a_file_has_no_colour_codes() {
    let text = log_of_a_waiting_dataplane("plainlog", &[]);
    assert!(text.contains(" INFO "), "{text}");
    assert!(
        text.contains("stopped while waiting for the host agent"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(!text.contains("dedup-retain-ms"), "{text}");
}

/// A reply retention shorter than the clients' retries is accepted (tests use it) but said:
/// with it, a late retransmission of a mutation runs again (probe 12: FAAs applied twice
/// with `--dedup-retain-ms 5`, without a word at start).
#[test]
fn a_reply_retention_shorter_than_the_clients_retries_is_warned_about() {
    let text = log_of_a_waiting_dataplane("retain", &["--dedup-retain-ms", "5"]);
    let warning = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("--dedup-retain-ms is shorter"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(warning.contains("dedup_retain_ms=5"), "{warning}");
}
