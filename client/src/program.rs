//! The `naam` command line. Client commands live in `crate::cli`; this file parses
//! arguments, runs `verify` itself, and reports client errors (one line on stderr, exit 1, or
//! 3 when a command that changes something may have been applied: [`OUTCOME_UNKNOWN`]).
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
    /// Runs the static verifier on a handler object: exit 0 accepted, 1 rejected, 2 unreadable
    /// (or its result could not be written).
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
                    if cli::outcome_unknown(c, &e) {
                        ExitCode::from(OUTCOME_UNKNOWN)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

/// The exit status of a command that changes something and failed with its outcome
/// unknown (timed out, or answered `outcome_unknown`): it may have been applied; read back
/// before running it again. Other failures exit 1.
pub const OUTCOME_UNKNOWN: u8 = 3;

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn verify_cmd(file: &std::path::Path, section: Option<&str>, json: bool) -> ExitCode {
    use std::io::Write as _;
    // Not `println!`/`eprintln!`, which panic when the output is closed or full.
    let fail = |what: String| {
        let _ = writeln!(std::io::stderr(), "naam verify: {what}");
        ExitCode::from(2)
    };
    let (line, code) = match verify_file(file, section, json) {
        Ok(v) => v,
        Err(what) => return fail(what),
    };
    match writeln!(std::io::stdout(), "{line}") {
        Ok(()) => code,
        // The reader went away (`| head`, `| true`): the exit status still says the result.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => fail(format!("cannot write the result: {e}")),
    }
}

/// The result line of `naam verify` and its exit status (0 accepted, 1 rejected), or why the
/// file could not be read (exit 2).
fn verify_file(
    file: &std::path::Path,
    section: Option<&str>,
    json: bool,
) -> Result<(String, ExitCode), String> {
    let bytes = read_object(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let program = load_program(&bytes, section)
        .map_err(|e| format!("{}: {}", file.display(), printable(&e.to_string())))?;
    Ok(match verify(&program, &VerifierConfig::default()) {
        Ok(v) => {
            let line = if json {
                serde_json::json!({
                    "accepted": true,
                    "name": v.name(),
                    "insns": v.insn_count(),
                    "worst_case": v.worst_case_insns(),
                    "reads_only": v.first_mutating_op().is_none(),
                    "first_mutating_insn": v.first_mutating_op(),
                })
                .to_string()
            } else {
                format!(
                    "accepted: {}: {} instructions, worst case {}, {}",
                    printable(v.name()),
                    v.insn_count(),
                    v.worst_case_insns(),
                    op_kinds(&v)
                )
            };
            (line, ExitCode::SUCCESS)
        }
        Err(e) => {
            let line = if json {
                let line = e.line.as_ref().map(|l| {
                    serde_json::json!({
                        "file": l.file,
                        "line": l.line,
                        "column": l.column,
                        "text": l.text.trim(),
                    })
                });
                serde_json::json!({
                    "accepted": false,
                    "name": program.name,
                    "insn": e.insn,
                    "kind": format!("{:?}", e.kind),
                    "reason": e.reason,
                    "line": line,
                })
                .to_string()
            } else {
                // "instruction N (file.c:LINE:COL `source`): reason"
                format!("rejected: {}", printable(&format!("{}: {e}", program.name)))
            };
            (line, ExitCode::from(1))
        }
    })
}

/// What a verified program may ask for, as `naam verify` and `offload add --read-only` say it.
pub(crate) fn op_kinds(v: &naam_core::verifier::VerifiedProgram) -> String {
    match v.first_mutating_op() {
        None => "reads only (may be registered --read-only)".into(),
        Some(i) => format!(
            "may write (instruction {i} may ask for a WRITE, CAS or FAA: registered \
             --read-only, such steps are refused)"
        ),
    }
}

/// Reads an object file: a regular file (symlinks followed) of at most
/// [`naam_core::elf::OBJECT_FILE_MAX`] bytes, so `/dev/zero` or a FIFO is refused at once
/// instead of read without end.
pub(crate) fn read_object(file: &std::path::Path) -> std::io::Result<Vec<u8>> {
    naam_core::run_dir::read_regular(file, naam_core::elf::OBJECT_FILE_MAX, "an object file")
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`), and those that are invisible
/// or reorder the text (`\u{202e}`, [`naam_core::wire::hides_text`]): names and source lines
/// come from the object, and must not move the cursor, colour the terminal or read as other
/// text.
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if naam_core::wire::hides_text(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
