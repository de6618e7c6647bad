//! The `naam` command line. Client commands live in `crate::cli`; this file parses
//! arguments, runs `verify` itself, and reports client errors (one line on stderr, exit 1).
//!
//! The `naam` command line's program body (arguments, start-up, exit status), in the library so
//! that its own binary (`src/bin/naam.rs`, a one-line `main`) and the `naam-rs` program of the
//! repository root run the same code; errors end here, as `anyhow` reports or an exit code.

use crate::cli::{self, ClientCommand, GlobalArgs};
use clap::{Parser, Subcommand};
use naam_core::elf::load_program;
use naam_core::verifier::{verify, VerifierConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "naam", about = "NAAM: network-accelerated active messages")]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Client(ClientCommand),
    /// Runs the static verifier on a handler object: exit 0 accepted, 1 rejected, 2 unreadable.
    Verify {
        /// A `clang -target bpf` object.
        file: PathBuf,
        /// The program section (default: the first `naam/...` section).
        #[arg(long)]
        section: Option<String>,
    },
}

/// The program with these arguments (the first is the program name): what its own binary
/// runs, and what the `naam-rs` program of the repository root runs for this role.
pub fn run(args: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    match &cli.command {
        Command::Verify { file, section } => verify_cmd(file, section.as_deref(), cli.global.json),
        Command::Client(c) => {
            let mut out = std::io::stdout().lock();
            match cli::run(&cli.global, c, &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                // The reader of the output went away (`naam btree scan ... | head -1`): what
                // it wanted it got; nothing to report.
                Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
                Err(e) => {
                    // One line: the error and its causes, separated by ": ". Not `eprintln!`,
                    // which panics when stderr is closed too.
                    // Escaped: the detail of a server's error is the server's text, which
                    // must not move the cursor or forge lines of output.
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stderr(), "naam: {}", printable(&format!("{e:#}")));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn verify_cmd(file: &std::path::Path, section: Option<&str>, json: bool) -> ExitCode {
    let bytes = match read_object(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("naam verify: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let program = match load_program(&bytes, section) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "naam verify: {}: {}",
                file.display(),
                printable(&e.to_string())
            );
            return ExitCode::from(2);
        }
    };
    match verify(&program, &VerifierConfig::default()) {
        Ok(v) => {
            if json {
                let doc = serde_json::json!({
                    "accepted": true,
                    "name": v.name(),
                    "insns": v.insn_count(),
                    "worst_case": v.worst_case_insns(),
                });
                println!("{doc}");
            } else {
                println!(
                    "accepted: {}: {} instructions, worst case {}",
                    printable(v.name()),
                    v.insn_count(),
                    v.worst_case_insns()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                let line = e.line.as_ref().map(|l| {
                    serde_json::json!({
                        "file": l.file,
                        "line": l.line,
                        "column": l.column,
                        "text": l.text.trim(),
                    })
                });
                let doc = serde_json::json!({
                    "accepted": false,
                    "name": program.name,
                    "insn": e.insn,
                    "kind": format!("{:?}", e.kind),
                    "reason": e.reason,
                    "line": line,
                });
                println!("{doc}");
            } else {
                // "instruction N (file.c:LINE:COL `source`): reason"
                println!("rejected: {}", printable(&format!("{}: {e}", program.name)));
            }
            ExitCode::from(1)
        }
    }
}

/// Reads an object file: a regular file (symlinks followed) of at most
/// [`naam_core::elf::OBJECT_FILE_MAX`] bytes, so `/dev/zero` or a FIFO is refused at once
/// instead of read without end.
pub(crate) fn read_object(file: &std::path::Path) -> std::io::Result<Vec<u8>> {
    naam_core::run_dir::read_regular(file, naam_core::elf::OBJECT_FILE_MAX, "an object file")
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`): names and source lines come
/// from the object, and must not move the cursor or colour the terminal.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
