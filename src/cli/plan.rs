//! `relay plan`: what a config change does to routes, grants, hosts and
//! users. Exit 0 no change, 1 a side is invalid, 2 usage or I/O error,
//! 3 changes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{load_dir, SecretMode, Snapshot};
use crate::plan::{self, git, render, View};

/// Exit code when the plan has changes.
pub const EXIT_CHANGES: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Compare the config directory with the same path at this git revision
    /// of its repository (`origin/main`, `HEAD~1`, a tag or commit id). Read
    /// without a `git` binary.
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// `OLD_DIR NEW_DIR` without --base; with --base, at most one: the
    /// config directory (default: RELAY_CONFIG_DIR, else ./config.d).
    #[arg(value_name = "DIR", num_args = 0..=2)]
    pub dirs: Vec<PathBuf>,
    /// `text`, `json`, or `markdown` (for a pull-request comment).
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlanFormat,
    #[arg(
        long,
        env = "RELAY_CONFIG_DIR",
        default_value = "./config.d",
        hide = true
    )]
    pub config_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    Markdown,
}

/// One side's snapshot, or the exit code after its problems were printed.
fn side(dir: &Path, shown_as: &str) -> Result<Snapshot, ExitCode> {
    let loaded = load_dir(dir, SecretMode::Offline).map_err(super::fail)?;
    match loaded.snapshot {
        Some(s) => Ok(s),
        None => {
            for p in loaded.errors() {
                let mut p = p.clone();
                p.file = Path::new(shown_as).join(&p.file);
                eprintln!("{p}");
            }
            eprintln!(
                "error: {shown_as} is invalid ({} error(s)); `relay validate` shows the same list",
                loaded.errors().count()
            );
            Err(ExitCode::FAILURE)
        }
    }
}

pub fn run(args: PlanArgs) -> ExitCode {
    let (old, new, _checkout, labels) = match (&args.base, args.dirs.as_slice()) {
        (Some(rev), dirs) if dirs.len() <= 1 => {
            let dir = dirs.first().cloned().unwrap_or_else(|| args.config_dir.clone());
            let checkout = match git::checkout(&dir, rev) {
                Ok(c) => c,
                Err(e) => return super::fail(e),
            };
            if !checkout.existed {
                eprintln!(
                    "note: {} does not exist at {rev}; planning against an empty configuration",
                    checkout.label
                );
            }
            let labels = (checkout.label.clone(), dir.display().to_string());
            (checkout.dir.clone(), dir, Some(checkout), labels)
        }
        (Some(_), _) => {
            return super::fail("with --base give at most one directory: the config directory to compare with REV")
        }
        (None, [old, new]) => {
            let labels = (old.display().to_string(), new.display().to_string());
            (old.clone(), new.clone(), None, labels)
        }
        (None, _) => {
            return super::fail(
                "give two directories (`relay plan OLD_DIR NEW_DIR`) or a revision (`relay plan --base origin/main [DIR]`)",
            )
        }
    };
    let old_snap = match side(&old, &labels.0) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let new_snap = match side(&new, &labels.1) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let plan = plan::diff(&View::of(&old_snap, &old), &View::of(&new_snap, &new));
    let sides = render::Sides {
        old: &labels.0,
        new: &labels.1,
    };
    match args.format {
        PlanFormat::Text => print!("{}", render::text(&plan, &sides)),
        PlanFormat::Markdown => print!("{}", render::markdown(&plan, &sides)),
        PlanFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&render::json(&plan, &sides)).unwrap_or_default()
        ),
    }
    if plan.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHANGES)
    }
}
