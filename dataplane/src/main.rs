//! The `naam-dataplane` program: the dataplane (see `naam_dataplane::program`).

fn main() -> std::process::ExitCode {
    let r = naam_dataplane::program::run(std::env::args_os().collect());
    naam_link::log::exit_status("naam-dataplane", r)
}
