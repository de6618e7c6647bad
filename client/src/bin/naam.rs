//! The `naam` program: the `naam` command line (see `naam_client::program`).

fn main() -> std::process::ExitCode {
    naam_client::program::run(std::env::args_os().collect())
}
