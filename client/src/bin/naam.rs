//! The `naam` command line.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("naam: no commands yet")
}
