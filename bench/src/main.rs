//! The `naam-bench` program: the experiments (see `naam_bench::program`).

fn main() -> std::process::ExitCode {
    let r = naam_bench::program::run(std::env::args_os().collect());
    naam_link::log::exit_status("naam-bench", r)
}
