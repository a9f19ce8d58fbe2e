//! `relay breakers list|reset`: against Redis directly when
//! `RELAY_STATE_URL` is set, else through the running server's control plane
//! (in-process state lives only there).

use std::process::ExitCode;

use super::StateArg;
use crate::state::StateBackend;
use crate::upstream::breaker::{Breakers, Health};

#[derive(Debug, clap::Args)]
pub struct BreakerArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// Control plane of the running relay (used with the in-process backend).
    #[arg(
        long,
        env = "RELAY_CONTROL_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub control_url: String,
    /// Admin token for the control plane.
    #[arg(long, env = "RELAY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum BreakersCommand {
    /// Show breaker state.
    List {
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
            BreakersCommand::List { args } => list(&args).await,
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

async fn list(args: &BreakerArgs) -> Result<(), String> {
    if let Some(b) = redis(args).await? {
        let now = crate::store::now_ms();
        let records = b.list().await;
        if records.is_empty() {
            println!("no breaker records: every key is closed");
        }
        for (_, r) in records {
            let state = match r.health(now) {
                Health::Closed => format!("closed ({} recent server errors)", r.failures),
                Health::Open { until_ms } => {
                    format!("open for {}s more", (until_ms - now).max(0) / 1000)
                }
                Health::HalfOpen => "half-open (next request probes it)".into(),
            };
            println!("{}/{}: {} [{}]", r.host, r.key, state, r.class.as_str());
        }
        return Ok(());
    }
    let v = control(args, reqwest::Method::GET, "/api/breakers", None).await?;
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

async fn reset(args: &BreakerArgs, host: Option<&str>) -> Result<(), String> {
    let cleared = match redis(args).await? {
        Some(b) => b.reset(host).await as u64,
        None => {
            let body = serde_json::json!({ "host": host });
            let v = control(
                args,
                reqwest::Method::POST,
                "/api/breakers/reset",
                Some(body),
            )
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

async fn control(
    args: &BreakerArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let token = args.admin_token.as_deref().filter(|t| !t.is_empty()).ok_or(
        "with the in-process state backend this asks the running relay: set RELAY_ADMIN_TOKEN (and RELAY_CONTROL_URL \
         if the control plane is not on 127.0.0.1:8081), or set RELAY_STATE_URL to reach Redis directly",
    )?;
    let url = format!("{}{path}", args.control_url.trim_end_matches('/'));
    let mut req = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("cannot reach the control plane at {url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{url} answered with invalid JSON: {e}"))
}
