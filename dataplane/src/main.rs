//! The `naam-dataplane` program: the dataplane (see `naam_dataplane::program`).

fn main() -> anyhow::Result<()> {
    naam_dataplane::program::run(std::env::args_os().collect())
}
