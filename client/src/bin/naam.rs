//! The `naam` command line. Client commands live in `naam_client::cli`; this file only parses
//! arguments and reports errors (one line on stderr, exit status 1).

use clap::{Parser, Subcommand};
use naam_client::cli::{self, ClientCommand, GlobalArgs};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "naam",
    about = "NAAM client: key-value and B-tree operations, offloads, stats"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Client(ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let result = match &cli.command {
        Command::Client(c) => cli::run(&cli.global, c, &mut out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, separated by ": ".
            eprintln!("naam: {e:#}");
            ExitCode::FAILURE
        }
    }
}
