use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::DataDirArg;
use crate::config::problem::Severity;
use crate::config::{load_dir, Problem, SecretMode};
use crate::secrets::MasterKey;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Config directory to check.
    #[arg(env = "RELAY_CONFIG_DIR", default_value = "./config.d")]
    pub dir: PathBuf,
    /// Output format: `text` (`file:line:col: kind/name: field: message`),
    /// `json`, or `github` (workflow annotations `::error file=…,line=…,col=…::…`
    /// with paths relative to the working directory).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Also prove every sealed secret decrypts with the master key
    /// (RELAY_MASTER_KEY, or the one in RELAY_DATA_DIR).
    #[arg(long)]
    pub decrypt: bool,
    /// Treat warnings as errors (they are then reported as errors).
    #[arg(long)]
    pub strict: bool,
    /// Check everything except what exists only at run time: environment
    /// variables (and files) that key sources name are not required. For CI,
    /// where `--strict` then fails only on real mistakes.
    #[arg(long, conflicts_with = "decrypt")]
    pub offline: bool,
    #[command(flatten)]
    pub data: DataDirArg,
    #[arg(long, env = "RELAY_MASTER_KEY", hide_env_values = true, hide = true)]
    pub master_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Github,
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
        None if args.offline => SecretMode::Offline,
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
        .map(|mut p| {
            // Under --strict a warning is an error, and is reported as one.
            if args.strict {
                p.severity = Severity::Error;
            }
            p
        })
        .collect();
    let errors = problems.iter().filter(|p| p.is_error()).count();
    let warnings = problems.len() - errors;
    let invalid = errors > 0;
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
        Format::Text | Format::Github => {
            let cwd = std::env::current_dir().unwrap_or_default();
            for p in &problems {
                if args.format == Format::Github {
                    println!("{}", annotation(p, &cwd));
                } else {
                    println!("{p}");
                }
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

/// A GitHub Actions workflow command for one problem:
/// `::error file=F,line=L,col=C,title=relay validate::Kind/name: field: message`,
/// `F` relative to `cwd` (the repository root in a workflow) so the
/// annotation lands on the pull request's line.
pub fn annotation(p: &Problem, cwd: &Path) -> String {
    let level = if p.is_error() { "error" } else { "warning" };
    let file = relative(&p.file, cwd);
    let mut props = format!("file={}", escape_property(&file));
    if p.line > 0 {
        props.push_str(&format!(",line={},col={}", p.line, p.column.max(1)));
    }
    props.push_str(",title=relay validate");
    let mut message = String::new();
    match (&p.kind, &p.name) {
        (Some(k), Some(n)) => message.push_str(&format!("{k}/{n}: ")),
        (Some(k), None) => message.push_str(&format!("{k}: ")),
        _ => {}
    }
    if let Some(field) = &p.field {
        message.push_str(&format!("{field}: "));
    }
    message.push_str(&p.message);
    format!("::{level} {props}::{}", escape_data(&message))
}

/// `path` relative to `cwd` when it lies below it, without `./` parts.
fn relative(path: &Path, cwd: &Path) -> String {
    let path = if path.is_absolute() {
        path.strip_prefix(cwd).unwrap_or(path)
    } else {
        path
    };
    let clean: PathBuf = path
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    clean.to_string_lossy().replace('\\', "/")
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_escape_and_relativise() {
        let p = Problem {
            severity: Severity::Warning,
            file: PathBuf::from("/repo/./config.d/a,b.yaml"),
            line: 3,
            column: 0,
            kind: None,
            name: None,
            field: Some("models[1]".into()),
            message: "50% off\nnext: line".into(),
        };
        assert_eq!(
            annotation(&p, Path::new("/repo")),
            "::warning file=config.d/a%2Cb.yaml,line=3,col=1,title=relay validate::models[1]: 50%25 off%0Anext: line"
        );
        let whole = Problem {
            line: 0,
            file: PathBuf::from("./config.d/."),
            ..p
        };
        assert!(annotation(&whole, Path::new("/elsewhere"))
            .starts_with("::warning file=config.d,title="));
    }
}
