//! Both daemons' logs: to stderr, filtered by `RUST_LOG` (default `info`), coloured only on a
//! terminal. A log redirected to a file or a pipe (the deployment's `--log-dir`, a collector)
//! is plain text, so that `grep 'placement decision'` finds what the docs show.

use std::io::IsTerminal as _;

/// Installs the process's logger. Call once, first thing in `main`.
pub fn init() {
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        // A closed log pipe (`| head`, a collector restarting) loses lines, not the process:
        // reporting the failed write would print to the same closed stderr, and panic.
        .log_internal_errors(false)
        .init();
}

/// A daemon's or tool's end: its error on one line of stderr (`PROGRAM: what: why: ...`, the
/// causes joined as `anyhow`'s `{:#}` prints them) and exit status 1; success is 0. Not the
/// multi-line `Error: ... Caused by:` (and, with `RUST_BACKTRACE` set, a backtrace) that
/// `main` returning an error prints.
pub fn exit_status<E: std::fmt::Display>(
    program: &str,
    r: Result<(), E>,
) -> std::process::ExitCode {
    use std::io::Write as _;
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{program}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
