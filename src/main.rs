use std::process::ExitCode;

use clap::Parser;

// The request path allocates many small, short-lived buffers; mimalloc
// serves those markedly faster than glibc's malloc under concurrency.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = relay::cli::Cli::parse();
    relay::cli::run(cli)
}
