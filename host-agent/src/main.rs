//! The `naam-host-agent` program: the host agent (see `naam_host_agent::program`).

fn main() -> std::process::ExitCode {
    let r = naam_host_agent::program::run(std::env::args_os().collect());
    naam_link::log::exit_status("naam-host-agent", r)
}
