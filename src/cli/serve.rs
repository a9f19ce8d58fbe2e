use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use super::{DataDirArg, DatabaseArg};
use crate::secrets::Secret;
use crate::serve::{run as serve, ServeError, ServeSettings};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory of YAML config, read recursively and watched for changes.
    #[arg(long, env = "RELAY_CONFIG_DIR", default_value = "./config.d")]
    pub config_dir: PathBuf,
    #[command(flatten)]
    pub data: DataDirArg,
    /// Listen address of the data plane (and of the control plane unless
    /// RELAY_CONTROL_BIND is set).
    #[arg(long, env = "RELAY_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Listen address of the control plane, e.g. `127.0.0.1` or a private
    /// interface, so the admin API and dashboard stay internal. Default:
    /// RELAY_BIND.
    #[arg(long, env = "RELAY_CONTROL_BIND")]
    pub control_bind: Option<IpAddr>,
    /// Data plane port (inference API, /healthz).
    #[arg(long, env = "RELAY_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Control plane port (admin API, dashboard, /version, /metrics); `off` disables it.
    #[arg(long, env = "RELAY_CONTROL_PORT", default_value = "8081")]
    pub control_port: ControlPort,
    #[command(flatten)]
    pub master_key: super::MasterKeyArg,
    /// Bearer token granting admin access to the control plane.
    #[arg(long, env = "RELAY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token (a mounted secret); instead of
    /// RELAY_ADMIN_TOKEN.
    #[arg(long, env = "RELAY_ADMIN_TOKEN_FILE", value_name = "PATH", value_parser = super::secret_file, conflicts_with = "admin_token")]
    pub admin_token_file: Option<String>,
    /// Bearer token that may scrape `/metrics` and nothing else (give it to
    /// Prometheus instead of the admin token).
    #[arg(long, env = "RELAY_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// A file holding the metrics token; instead of RELAY_METRICS_TOKEN.
    #[arg(long, env = "RELAY_METRICS_TOKEN_FILE", value_name = "PATH", value_parser = super::secret_file, conflicts_with = "metrics_token")]
    pub metrics_token_file: Option<String>,
    /// Mark the dashboard session cookie `Secure` (browsers then send it
    /// only over HTTPS). Default: true, or false in embedded mode (no
    /// RELAY_DATABASE_URL). Must be false for plain-HTTP use.
    #[arg(long, env = "RELAY_COOKIE_SECURE", action = clap::ArgAction::Set)]
    pub cookie_secure: Option<bool>,
    /// After SIGTERM, how long `/readyz` answers 503 while both planes keep
    /// serving (time for load balancers to stop sending), before relay stops
    /// accepting connections.
    #[arg(long, env = "RELAY_DRAIN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,
    /// Then, how long in-flight requests (long streams) get to finish before
    /// relay closes them and exits. Delay + timeout should stay under the
    /// orchestrator's grace period (Kubernetes: 30 s).
    #[arg(long, env = "RELAY_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Delete usage records older than this (e.g. `90d`), in batches every
    /// 10 minutes. Unset keeps them forever. Never shorter than the longest
    /// budget period a policy uses (raised, with a warning).
    #[arg(long, env = "RELAY_USAGE_RETENTION", value_parser = humantime::parse_duration)]
    pub usage_retention: Option<Duration>,
    /// Most store lookups per second of relay keys this replica does not
    /// know yet (minted on another replica a moment ago); also the burst.
    /// Past it such keys get 503 with `retry-after: 1`, never a false 401.
    #[arg(long, env = "RELAY_KEY_LOOKUP_RATE", default_value_t = crate::auth::cache::DEFAULT_LOOKUP_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    pub key_lookup_rate: u32,
    /// One structured line per data-plane request (target `relay::access`,
    /// level info): `on` or `off`.
    #[arg(long, env = "RELAY_ACCESS_LOG", default_value = "on", value_parser = on_off)]
    pub access_log: bool,
    /// Fraction of successful requests that get an access line (0.0–1.0);
    /// requests answered with an error status always do.
    #[arg(long, env = "RELAY_ACCESS_LOG_SAMPLE", default_value = "1.0", value_parser = fraction)]
    pub access_log_sample: f64,
    /// Comma-separated address ranges (`10.0.0.0/8,fd00::/8`) of load
    /// balancers whose `Forwarded` / `X-Forwarded-For` headers name the
    /// client on the control plane (login limits, logs). Default: none —
    /// the headers are ignored and the peer address counts.
    #[arg(long, env = "RELAY_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: crate::http::client_addr::TrustedProxies,
    /// How long a client has to send a request's head (a new connection, or
    /// the next request on a kept-alive one, once it has begun); then the
    /// connection is closed.
    #[arg(long, env = "RELAY_HEADER_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub header_timeout: Duration,
    /// How long a kept-alive connection with no request in flight stays
    /// open.
    #[arg(long, env = "RELAY_IDLE_TIMEOUT", default_value = "75s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// How long a client has to send a request body after its head; only
    /// while relay reads it (a long streamed response is never cut).
    #[arg(long, env = "RELAY_BODY_TIMEOUT", default_value = "20s", value_parser = positive_duration)]
    pub body_timeout: Duration,
    /// Open connections the data plane holds; beyond, new ones get 503 with
    /// `retry-after` and are closed.
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Open connections the control plane holds (separate from the data
    /// plane's, so a flood on one does not starve the other).
    #[arg(long, env = "RELAY_CONTROL_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub control_max_connections: u32,
    /// Bytes of request bodies the data plane holds in memory at once, all
    /// requests together (`256MiB`, `1GiB`, or a number of bytes); beyond,
    /// 503 with `retry-after`; one body larger than this gets 413.
    #[arg(long, env = "RELAY_BODY_BUDGET", default_value = "256MiB", value_parser = parse_bytes)]
    pub body_budget: usize,
    #[command(flatten)]
    pub database: DatabaseArg,
    #[command(flatten)]
    pub state: super::StateArg,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("`{s}` is neither `on` nor `off`")),
    }
}

fn fraction(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| {
            format!(
                "`{s}` is not a fraction between 0.0 and 1.0 (e.g. 0.1 logs one success in ten)"
            )
        })
}

/// A duration above zero, like `10s` or `500ms`.
fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s.trim()) {
        Ok(d) if d.is_zero() => Err("must be longer than 0s".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "`{s}` is not a duration like `10s` or `500ms`: {e}"
        )),
    }
}

/// A size in bytes: a number, or a number with `KiB`, `MiB`, `GiB` (also
/// `KB`/`MB`/`GB`, `K`/`M`/`G`, all powers of 1024).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "`{s}` is not a size like `256MiB`, `1GiB` or `1048576`"
            ))
        }
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1usize << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}` is not a size above zero like `256MiB` or `1GiB`"))
}

/// A port number, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct ControlPort(pub Option<u16>);

impl FromStr for ControlPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(ControlPort(None));
        }
        s.parse::<u16>()
            .map(|p| ControlPort(Some(p)))
            .map_err(|_| format!("`{s}` is neither a port number nor `off`"))
    }
}

pub fn run(args: ServeArgs) -> ExitCode {
    let settings = ServeSettings {
        config_dir: args.config_dir,
        data_dir: args.data.data_dir,
        bind: args.bind,
        control_bind: args.control_bind.unwrap_or(args.bind),
        port: args.port,
        control_port: args.control_port.0,
        master_key: args.master_key.value().map(Secret::new),
        admin_token: args
            .admin_token
            .or(args.admin_token_file)
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        metrics_token: args
            .metrics_token
            .or(args.metrics_token_file)
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        cookie_secure: args.cookie_secure,
        trusted_proxies: args.trusted_proxies,
        database_url: args.database.url(),
        state_url: args.state.url(),
        drain_delay: args.drain_delay,
        shutdown_timeout: args.shutdown_timeout,
        usage_retention: args.usage_retention,
        access_log: crate::gateway::AccessLog {
            enabled: args.access_log,
            sample: args.access_log_sample,
        },
        data_limits: crate::http::conn::ConnLimits {
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            body_timeout: args.body_timeout,
            max_connections: args.max_connections,
        },
        control_limits: crate::http::conn::ConnLimits {
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            body_timeout: args.body_timeout,
            max_connections: args.control_max_connections,
        },
        body_budget: args.body_budget,
        key_lookup_rate: args.key_lookup_rate,
    };
    let config_dir = settings.config_dir.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return super::fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ServeError::InvalidConfig(problems)) => {
            for p in &problems {
                eprintln!("{}", super::validate::display_path(&config_dir, p));
            }
            eprintln!("error: {}", ServeError::InvalidConfig(problems));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        for bad in ["", "0", "MiB", "12TB", "-1", "99999999999999999999GiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert_eq!(positive_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("soon").is_err());
    }
}
