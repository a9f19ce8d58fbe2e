//! Command line: parse, set up logging, dispatch. Each subcommand lives in
//! its own module and returns an exit code.

mod breakers;
mod control;
mod keys;
mod migrate;
mod plan;
mod probe;
mod schema;
mod secret;
mod serve;
mod user;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::{self, LogFormat};

/// relay: a self-hosted LLM API gateway whose configuration lives in git.
///
/// Every flag can also be set with the `RELAY_*` variable shown next to it;
/// a flag wins over its variable.
#[derive(Debug, Parser)]
#[command(name = "relay", version, about, long_about)]
pub struct Cli {
    /// Log filter (`info`, `debug`, `relay=debug,tower=warn`, …).
    #[arg(long, env = "RELAY_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log format.
    #[arg(
        long,
        env = "RELAY_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; boxing `Serve` would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the data plane (inference API, /healthz) and the control plane.
    Serve(serve::ServeArgs),
    /// Load and check a config directory exactly as `serve` would, without
    /// starting anything. Exit 0 valid, 1 invalid, 2 usage or I/O error.
    Validate(validate::ValidateArgs),
    /// Show what changing config from one version to another does to
    /// routes, grants, hosts, keys and users. Exit 0 no change, 1 a side is
    /// invalid, 2 usage or I/O error, 3 changes.
    Plan(plan::PlanArgs),
    /// Print a new master key (an age identity) and its public recipient.
    Keygen,
    /// Seal or unseal host key values for the config repository.
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Write the JSON Schemas of the config kinds (what `schemas/` holds).
    Schema(schema::SchemaArgs),
    /// Manage relay keys in the runtime store.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Apply database migrations (`serve` also applies them at start), or
    /// report on them with --status / --dry-run.
    Migrate(migrate::MigrateArgs),
    /// Inspect or clear circuit-breaker state.
    #[command(subcommand)]
    Breakers(breakers::BreakersCommand),
    /// Probe a running relay's `/livez` (the container healthcheck): exit 0
    /// when it answers 2xx, 1 otherwise.
    Probe(probe::ProbeArgs),
    /// Dashboard users (defined in config as `kind: User`).
    #[command(subcommand)]
    User(user::UserCommand),
}

/// Shared flag: where the config lives.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArg {
    /// Embedded-mode home: generated master key, SQLite database.
    #[arg(long, env = "RELAY_DATA_DIR", default_value = "./relay-data")]
    pub data_dir: PathBuf,
}

/// Shared flag: the master key, given directly or as a mounted file.
#[derive(Debug, Clone, clap::Args)]
pub struct MasterKeyArg {
    /// The age identity that decrypts sealed host keys; generated into the
    /// data dir on first boot when unset. Must be stable across restarts.
    #[arg(long, env = "RELAY_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// A file holding the master key (a mounted secret); instead of
    /// RELAY_MASTER_KEY.
    #[arg(long, env = "RELAY_MASTER_KEY_FILE", value_name = "PATH", value_parser = secret_file, conflicts_with = "master_key")]
    pub master_key_file: Option<String>,
}

impl MasterKeyArg {
    pub fn value(&self) -> Option<&str> {
        self.master_key
            .as_deref()
            .or(self.master_key_file.as_deref())
            .filter(|k| !k.is_empty())
    }
}

/// Shared flag: where runtime state lives.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArg {
    /// `postgres://…` selects PostgreSQL for runtime state; unset means
    /// SQLite in RELAY_DATA_DIR.
    #[arg(long, env = "RELAY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A file holding the database URL (a mounted secret); instead of
    /// RELAY_DATABASE_URL.
    #[arg(long, env = "RELAY_DATABASE_URL_FILE", value_name = "PATH", value_parser = secret_file, conflicts_with = "database_url")]
    pub database_url_file: Option<String>,
}

/// Shared flag: where breakers and counters live.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArg {
    /// `redis://…` selects Redis as the shared state backend (breakers,
    /// rate-limit counters); unset means in-process state.
    #[arg(long, env = "RELAY_STATE_URL", hide_env_values = true)]
    pub state_url: Option<String>,
    /// A file holding the state URL (a mounted secret); instead of
    /// RELAY_STATE_URL.
    #[arg(long, env = "RELAY_STATE_URL_FILE", value_name = "PATH", value_parser = secret_file, conflicts_with = "state_url")]
    pub state_url_file: Option<String>,
}

impl StateArg {
    pub fn url(&self) -> Option<crate::secrets::Secret> {
        self.state_url
            .clone()
            .or_else(|| self.state_url_file.clone())
            .filter(|u| !u.is_empty())
            .map(crate::secrets::Secret::new)
    }
}

impl DatabaseArg {
    pub fn url(&self) -> Option<crate::secrets::Secret> {
        self.database_url
            .clone()
            .or_else(|| self.database_url_file.clone())
            .filter(|u| !u.is_empty())
            .map(crate::secrets::Secret::new)
    }
}

pub fn run(cli: Cli) -> ExitCode {
    telemetry::init(&cli.log, cli.log_format);
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Keygen => secret::keygen(),
        Command::Secret(cmd) => secret::run(cmd),
        Command::Schema(args) => schema::run(args),
        Command::Keys(cmd) => keys::run(cmd),
        Command::Migrate(args) => migrate::run(args),
        Command::Breakers(cmd) => breakers::run(cmd),
        Command::User(cmd) => user::run(cmd),
        Command::Probe(args) => probe::run(args),
    }
}

/// The value of a `*_FILE` variable or flag: the file's contents, less one
/// trailing newline (how `kubectl create secret --from-file` and editors
/// leave them). Read when the command line is parsed, so a missing file is
/// a usage error naming the path.
fn secret_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the secret file {path}: {e}"))?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(format!("the secret file {path} is empty"));
    }
    Ok(text.to_string())
}

/// Exit code for usage and I/O errors (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_USAGE)
}

/// `30d`, `12h`, `90m` → milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    humantime::parse_duration(s.trim())
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .map_err(|e| format!("`{s}` is not a duration like `30d`, `12h` or `90m`: {e}"))
}
