use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::DataDirArg;
use crate::config::{load_dir, Problem, SecretMode};
use crate::secrets::MasterKey;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Config directory to check.
    #[arg(env = "RELAY_CONFIG_DIR", default_value = "./config.d")]
    pub dir: PathBuf,
    /// Output format: `text` (`file:line:col: kind/name: field: message`) or `json`.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Also prove every sealed secret decrypts with the master key
    /// (RELAY_MASTER_KEY, or the one in RELAY_DATA_DIR).
    #[arg(long)]
    pub decrypt: bool,
    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub data: DataDirArg,
    #[arg(long, env = "RELAY_MASTER_KEY", hide_env_values = true, hide = true)]
    pub master_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// A problem with its file shown relative to the working directory.
pub fn display_path(dir: &Path, p: &Problem) -> Problem {
    let mut p = p.clone();
    if dir != Path::new(".") {
        p.file = dir.join(&p.file);
    }
    p
}

pub fn run(args: ValidateArgs) -> ExitCode {
    let master = if args.decrypt {
        let key = match &args.master_key {
            Some(text) => MasterKey::parse(text, "RELAY_MASTER_KEY").map(Some).map_err(|e| e.to_string()),
            None => MasterKey::read(&args.data.data_dir).map_err(|e| e.to_string()).and_then(|k| {
                k.ok_or_else(|| {
                    format!(
                        "--decrypt needs the master key: set RELAY_MASTER_KEY, or RELAY_DATA_DIR to a directory holding {}",
                        crate::secrets::MASTER_KEY_FILE
                    )
                })
                .map(Some)
            }),
        };
        match key {
            Ok(k) => k,
            Err(e) => return super::fail(e),
        }
    } else {
        None
    };
    let mode = match &master {
        Some(k) => SecretMode::Decrypt(k),
        None => SecretMode::CheckOnly,
    };
    let loaded = match load_dir(&args.dir, mode) {
        Ok(l) => l,
        Err(e) => return super::fail(e),
    };
    let problems: Vec<Problem> = loaded
        .problems
        .iter()
        .map(|p| display_path(&args.dir, p))
        .collect();
    let errors = problems.iter().filter(|p| p.is_error()).count();
    let warnings = problems.len() - errors;
    let invalid = errors > 0 || (args.strict && warnings > 0);
    match args.format {
        Format::Json => {
            let out = serde_json::json!({
                "valid": !invalid,
                "revision": loaded.revision,
                "errors": errors,
                "warnings": warnings,
                "problems": problems,
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Text => {
            for p in &problems {
                println!("{p}");
            }
            let counts = loaded
                .snapshot
                .as_ref()
                .map(|s| {
                    let c = s.counts();
                    format!(
                        "{} Host, {} Model, {} Binding, {} Policy, {} User; ",
                        c.hosts, c.models, c.bindings, c.policies, c.users
                    )
                })
                .unwrap_or_default();
            let verdict = if invalid { "invalid" } else { "valid" };
            eprintln!(
                "{}: {verdict} ({counts}{errors} error(s), {warnings} warning(s)) at revision {}",
                args.dir.display(),
                loaded.revision
            );
        }
    }
    if invalid {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
