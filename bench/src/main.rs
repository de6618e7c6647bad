//! The `naam-bench` program: the experiments (see `naam_bench::program`).

fn main() -> anyhow::Result<()> {
    naam_bench::program::run(std::env::args_os().collect())
}
