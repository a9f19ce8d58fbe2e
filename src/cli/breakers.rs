//! `relay breakers list|reset`: against Redis directly when
//! `RELAY_STATE_URL` is set, else through the running server's control plane
//! (in-process state lives only there), found and authenticated as
//! `control.rs` describes.

use std::process::ExitCode;

use super::control::ControlArgs;
use super::StateArg;
use crate::state::StateBackend;
use crate::upstream::breaker::{Breakers, Health};

#[derive(Debug, clap::Args)]
pub struct BreakerArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// How to reach the running relay (used with the in-process backend).
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum BreakersCommand {
    /// Show breaker state.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        args: BreakerArgs,
    },
    /// Clear breaker state (all hosts, or one) so fixed keys are tried again.
    Reset {
        /// Only this host's keys.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        args: BreakerArgs,
    },
}

pub fn run(cmd: BreakersCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return super::fail(format!("cannot start the async runtime: {e}")),
    };
    rt.block_on(async {
        let result = match cmd {
            BreakersCommand::List { args, json } => list(&args, json).await,
            BreakersCommand::Reset { host, args } => reset(&args, host.as_deref()).await,
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::fail(e),
        }
    })
}

async fn redis(args: &BreakerArgs) -> Result<Option<Breakers>, String> {
    match args.state.url() {
        Some(url) => {
            let backend = StateBackend::open(Some(url.expose()))
                .await
                .map_err(|e| e.to_string())?;
            Ok(Some(Breakers::new(backend)))
        }
        None => Ok(None),
    }
}

async fn list(args: &BreakerArgs, json: bool) -> Result<(), String> {
    let report = match redis(args).await? {
        Some(b) => {
            let now = crate::store::now_ms();
            let keys: Vec<serde_json::Value> = b
                .list()
                .await
                .into_iter()
                .map(|(_, r)| {
                    let (state, until) = match r.health(now) {
                        Health::Closed => ("closed", None),
                        Health::Open { until_ms } => ("open", Some(until_ms)),
                        Health::HalfOpen => ("half_open", None),
                    };
                    serde_json::json!({
                        "host": r.host, "key": r.key, "state": state, "class": r.class.as_str(),
                        "open_until": until, "failures": r.failures, "trips": r.trips,
                    })
                })
                .collect();
            serde_json::json!({ "backend": "redis", "keys": keys })
        }
        None => {
            args.control
                .call(reqwest::Method::GET, "/api/breakers", None)
                .await?
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_table(&report);
    }
    Ok(())
}

/// `HOST KEY STATE CLASS FAILURES DETAIL`, one row per key, like `keys list`.
fn print_table(report: &serde_json::Value) {
    let now = crate::store::now_ms();
    let empty = Vec::new();
    let keys = report["keys"].as_array().unwrap_or(&empty);
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    println!(
        "{:<20} {:<20} {:<12} {:<14} {:<9} DETAIL",
        "HOST", "KEY", "STATE", "CLASS", "FAILURES"
    );
    for k in keys {
        let detail = match (k["state"].as_str(), k["open_until"].as_i64()) {
            (Some("open"), Some(until)) => {
                format!("retried in {}s", ((until - now).max(0) + 999) / 1000)
            }
            (Some("half_open"), _) => "next request probes it".into(),
            (Some("unavailable"), _) => s(&k["reason"]),
            _ => String::new(),
        };
        println!(
            "{:<20} {:<20} {:<12} {:<14} {:<9} {}",
            s(&k["host"]),
            s(&k["key"]),
            s(&k["state"]),
            s(&k["class"]),
            k["failures"].as_u64().unwrap_or(0),
            detail
        );
    }
    if keys.is_empty() {
        eprintln!("no breaker records: every key is closed");
    }
}

async fn reset(args: &BreakerArgs, host: Option<&str>) -> Result<(), String> {
    let cleared = match redis(args).await? {
        Some(b) => b.reset(host).await as u64,
        None => {
            let body = serde_json::json!({ "host": host });
            let v = args
                .control
                .call(reqwest::Method::POST, "/api/breakers/reset", Some(body))
                .await?;
            v["cleared"].as_u64().unwrap_or(0)
        }
    };
    eprintln!(
        "cleared {cleared} breaker record(s){}",
        host.map(|h| format!(" of host `{h}`")).unwrap_or_default()
    );
    Ok(())
}
