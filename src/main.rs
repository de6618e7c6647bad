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
//! Each role is the same code as its own program (each crate's `program` module, which its own
//! binary runs too), so `cargo run --release -- demo` builds one binary, and the demo starts
//! the host agent and the dataplane as separate processes of this same binary.

use naam_core::arg::positive;
use naam_core::wire::CONGEST_MAX_MS;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The demo: a local deployment, YCSB-B, host congestion half-way, a live view.
#[derive(clap::Parser)]
struct DemoArgs {
    /// Seconds to run (Ctrl-C stops earlier; at most a day).
    #[arg(long, default_value_t = 20.0, value_parser = positive(86_400.0))]
    seconds: f64,
    /// Offered load, operations per second.
    #[arg(long, default_value_t = 10_000.0, value_parser = positive(1e9))]
    rate: f64,
    /// Milliseconds of host congestion, injected half-way [default: a quarter of the run, at
    /// most a minute].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=CONGEST_MAX_MS))]
    congest_ms: Option<u64>,
    /// Keys of MICA and of the B-tree (the load reads and writes both: at least 1).
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
    keys: u64,
    /// Write the processes' logs to this folder.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Folder for the summary's JSON, CSV and plot [default: runs/<UTC time>-<pid>, git-ignored].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs the demo until its time is up or Ctrl-C.
fn demo(args: Vec<OsString>) -> anyhow::Result<()> {
    use clap::Parser;
    use std::sync::atomic::{AtomicBool, Ordering};
    let a = DemoArgs::parse_from(args);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))?;
    let cfg = naam_rs::demo::DemoConfig {
        seconds: a.seconds,
        rate: a.rate,
        congest_ms: a
            .congest_ms
            .unwrap_or(((a.seconds * 250.0) as u64).clamp(100, CONGEST_MAX_MS)),
        mica_keys: a.keys,
        btree_keys: a.keys,
        out: a.out.unwrap_or_else(naam_bench::report::run_folder),
        log_dir: a.log_dir,
        ..naam_rs::demo::DemoConfig::default()
    };
    let r = naam_rs::demo::run(naam_bench::shift::binaries()?, &cfg, stop)?;
    // A closed stdout (`| head`) only loses these lines.
    if r.phases.is_empty() {
        let _ = writeln!(
            std::io::stdout(),
            "interrupted before the load started: nothing measured; host agent and dataplane \
             stopped, run directory removed"
        );
        return Ok(());
    }
    naam_rs::demo::print_summary(&r);
    let mut o = std::io::stdout().lock();
    for p in &r.files {
        let _ = writeln!(o, "wrote {}", p.display());
    }
    let _ = writeln!(
        o,
        "{}host agent and dataplane stopped{}, run directory removed",
        if r.interrupted { "interrupted: " } else { "" },
        if r.clean_stop {
            " cleanly"
        } else {
            " (forced)"
        }
    );
    Ok(())
}

const USAGE: &str =
    "usage: naam-rs demo | host-agent | dataplane | naam | bench [ARGS...] (--help on each)";

// Not `println!`/`eprintln!` in this file: they panic when the output is closed or full.
use std::io::Write as _;

fn report(r: anyhow::Result<()>) -> ExitCode {
    naam_link::log::exit_status("naam-rs", r)
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.len() < 2 {
        let _ = writeln!(std::io::stderr(), "{USAGE}");
        return ExitCode::from(2);
    }
    let role = args.remove(1);
    // What each role's parser sees as its program name.
    let with_name = |name: &str, mut rest: Vec<OsString>| {
        rest[0] = format!("naam-rs {name}").into();
        rest
    };
    match role.to_str() {
        Some("host-agent") => report(naam_host_agent::program::run(with_name("host-agent", args))),
        Some("dataplane") => report(naam_dataplane::program::run(with_name("dataplane", args))),
        Some("naam") => naam_client::program::run(with_name("naam", args)),
        Some("bench") => report(naam_bench::program::run(with_name("bench", args))),
        Some("demo") => report(demo(with_name("demo", args))),
        Some("-h" | "--help" | "help") => {
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            let _ = writeln!(std::io::stderr(), "naam-rs: unknown role {role:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
