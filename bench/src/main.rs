//! `naam-bench`: the experiments of DESIGN §8. Each prints a table and writes JSON and CSV
//! under `--out` (default `results/`).

use clap::{Parser, Subcommand};
use naam_bench::load::Backoff;
use naam_bench::{report, scale};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "naam-bench", about = "NAAM-rs experiments")]
struct Cli {
    /// Folder for JSON, CSV and plots.
    #[arg(long, global = true, default_value = "results")]
    out: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N distinct offloads: NAAM's shared VM pool vs an iPipe-style actor per offload.
    Scale {
        /// Offload counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,8,16,64,256,1024")]
        offloads: Vec<usize>,
        /// Offered load, messages per second.
        #[arg(long, default_value_t = 100_000.0)]
        rate: f64,
        /// Also measure saturation throughput (no rate limit).
        #[arg(long)]
        saturate: bool,
        /// Seconds per point.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// NAAM worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Idle workers spin instead of yielding (for dedicated cores).
        #[arg(long)]
        spin: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Scale {
            offloads,
            rate,
            saturate,
            seconds,
            workers,
            spin,
        } => {
            let mut cfg = scale::ScaleConfig {
                offloads,
                rate: Some(rate),
                duration: Duration::from_secs_f64(seconds),
                naam_workers: workers,
                backoff: if spin { Backoff::Spin } else { Backoff::Yield },
            };
            println!(
                "scale: in-process open-loop generator, {workers} NAAM worker(s), back-off {:?}",
                cfg.backoff
            );
            let mut rows = Vec::new();
            let mut modes = vec![Some(rate)];
            if saturate {
                modes.push(None);
            }
            for mode in modes {
                cfg.rate = mode;
                println!(
                    "{:>6} {:>8} {:>12} {:>10} {:>9} {:>9} {:>9} {:>12}",
                    "system",
                    "offloads",
                    "offered/s",
                    "done/s",
                    "p50 us",
                    "p99 us",
                    "p99.9 us",
                    "mem/offload"
                );
                rows.extend(scale::run(&cfg, |p| {
                    println!(
                        "{:>6} {:>8} {:>12} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>10.1}KiB",
                        p.system,
                        p.offloads,
                        p.offered_per_s
                            .map_or("saturate".into(), |r| format!("{r:.0}")),
                        p.throughput_per_s,
                        p.latency.p50_us,
                        p.latency.p99_us,
                        p.latency.p999_us,
                        p.memory_per_offload_bytes / 1024.0
                    );
                })?);
            }
            for p in report::write_rows(&cli.out, "scale", &rows)? {
                println!("wrote {}", p.display());
            }
        }
    }
    Ok(())
}
