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
