use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = relay::cli::Cli::parse();
    relay::cli::run(cli)
}
