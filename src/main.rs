//! `naam-rs`: the whole local deployment in one program.
//!
//! ```text
//! naam-rs demo [FLAGS]          the main job: host agent + dataplane + YCSB-B client, live view
//! naam-rs host-agent [FLAGS]    the host agent (as the naam-host-agent program)
//! naam-rs dataplane [FLAGS]     the dataplane (as the naam-dataplane program)
//! naam-rs naam [FLAGS] COMMAND  the client command line (as the naam program)
//! naam-rs bench EXPERIMENT      the experiments (as the naam-bench program)
//! ```
//!
//! Each role is the same code as its own program: the program files are included here, so
//! `cargo run --release -- demo` builds one binary, and the demo starts the host agent and the
//! dataplane as separate processes of this same binary.

use std::ffi::OsString;
use std::process::ExitCode;

#[allow(dead_code)]
#[path = "../host-agent/src/main.rs"]
mod host_agent;

#[allow(dead_code)]
#[path = "../dataplane/src/main.rs"]
mod dataplane;

#[allow(dead_code)]
#[path = "../client/src/bin/naam.rs"]
mod naam;

#[allow(dead_code)]
#[path = "../bench/src/main.rs"]
mod bench;

const USAGE: &str =
    "usage: naam-rs demo | host-agent | dataplane | naam | bench [ARGS...] (--help on each)";

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("naam-rs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.len() < 2 {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let role = args.remove(1);
    // What each role's parser sees as its program name.
    let with_name = |name: &str, mut rest: Vec<OsString>| {
        rest[0] = format!("naam-rs {name}").into();
        rest
    };
    match role.to_str() {
        Some("host-agent") => report(host_agent::run(with_name("host-agent", args))),
        Some("dataplane") => report(dataplane::run(with_name("dataplane", args))),
        Some("naam") => naam::run(with_name("naam", args)),
        Some("bench") => report(bench::run(with_name("bench", args))),
        Some("demo") => {
            let mut a = with_name("bench", args);
            a.insert(1, "demo".into());
            report(bench::run(a))
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("naam-rs: unknown role {role:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
