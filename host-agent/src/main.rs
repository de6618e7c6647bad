//! The `naam-host-agent` program: the host agent (see `naam_host_agent::program`).

fn main() -> anyhow::Result<()> {
    naam_host_agent::program::run(std::env::args_os().collect())
}
