//! Command line: parse, set up logging, dispatch. Each subcommand lives in
//! its own module and returns an exit code.

mod breakers;
mod keys;
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the data plane (inference API, /healthz) and the control plane.
    Serve(serve::ServeArgs),
    /// Load and check a config directory exactly as `serve` would, without
    /// starting anything. Exit 0 valid, 1 invalid, 2 usage or I/O error.
    Validate(validate::ValidateArgs),
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
    /// Apply database migrations (`serve` also applies them at start).
    Migrate(keys::StoreArgs),
    /// Inspect or clear circuit-breaker state.
    #[command(subcommand)]
    Breakers(breakers::BreakersCommand),
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

/// Shared flag: where runtime state lives.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArg {
    /// `postgres://…` selects PostgreSQL for runtime state; unset means
    /// SQLite in RELAY_DATA_DIR.
    #[arg(long, env = "RELAY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// Shared flag: where breakers and counters live.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArg {
    /// `redis://…` selects Redis as the shared state backend (breakers,
    /// rate-limit counters); unset means in-process state.
    #[arg(long, env = "RELAY_STATE_URL", hide_env_values = true)]
    pub state_url: Option<String>,
}

impl StateArg {
    pub fn url(&self) -> Option<crate::secrets::Secret> {
        self.state_url
            .clone()
            .filter(|u| !u.is_empty())
            .map(crate::secrets::Secret::new)
    }
}

impl DatabaseArg {
    pub fn url(&self) -> Option<crate::secrets::Secret> {
        self.database_url
            .clone()
            .filter(|u| !u.is_empty())
            .map(crate::secrets::Secret::new)
    }
}

pub fn run(cli: Cli) -> ExitCode {
    telemetry::init(&cli.log, cli.log_format);
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Keygen => secret::keygen(),
        Command::Secret(cmd) => secret::run(cmd),
        Command::Schema(args) => schema::run(args),
        Command::Keys(cmd) => keys::run(cmd),
        Command::Migrate(args) => keys::migrate(args),
        Command::Breakers(cmd) => breakers::run(cmd),
        Command::User(cmd) => user::run(cmd),
    }
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
