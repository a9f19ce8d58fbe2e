//! `relay probe`: the container healthcheck. Asks a running relay's
//! `/livez` (or any URL) and exits 0 on a 2xx, 1 otherwise, so images
//! without a shell or curl can still declare a HEALTHCHECK.

use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// URL to probe. Default: `/livez` on 127.0.0.1 at RELAY_PORT.
    #[arg(long, env = "RELAY_PROBE_URL")]
    pub url: Option<String>,
    /// The data plane port, when `--url` is not given.
    #[arg(long, env = "RELAY_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub fn run(args: ProbeArgs) -> ExitCode {
    let url = args
        .url
        .unwrap_or_else(|| format!("http://127.0.0.1:{}/livez", args.port));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return super::fail(format!("cannot start the async runtime: {e}")),
    };
    let client = match reqwest::Client::builder().timeout(args.timeout).build() {
        Ok(c) => c,
        Err(e) => return super::fail(format!("cannot build an HTTP client: {e}")),
    };
    // The request future needs the runtime's timer from its first poll.
    match runtime.block_on(async { client.get(&url).send().await }) {
        Ok(r) if r.status().is_success() => {
            println!("{url}: {}", r.status());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("{url}: {}", r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}
