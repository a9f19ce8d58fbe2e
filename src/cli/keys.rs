//! `relay keys …` and `relay migrate`: runtime state, straight against the
//! database (a running server notices key changes within a second). Only
//! `keys create` and `migrate` may create a missing SQLite database; the
//! others refuse and name the path they looked at.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{DataDirArg, DatabaseArg};
use crate::config::{load_dir, SecretMode};
use crate::store::{KeyRow, Store};

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    #[command(flatten)]
    pub database: DatabaseArg,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Mint a relay key; prints the plaintext once (it is never stored).
    Create {
        /// Policy (from config) that decides what the key may do.
        #[arg(long)]
        policy: String,
        /// Free text to recognise the key by.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. `30d` or `12h`; never expires when absent.
        #[arg(long)]
        expires: Option<String>,
        /// Print `{"id","prefix","key","policy",…}` instead of the bare key.
        #[arg(long)]
        json: bool,
        /// Config directory used to check that the policy exists.
        #[arg(long, env = "RELAY_CONFIG_DIR", default_value = "./config.d")]
        config_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List relay keys (never plaintext or hashes).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Disable a key: requests with it get 401 within a second, everywhere.
    Disable {
        /// The key's id, name or display prefix (when unambiguous).
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Enable a disabled key.
    Enable {
        /// The key's id, name or display prefix (when unambiguous).
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a key for good.
    Delete {
        /// The key's id, name or display prefix (when unambiguous).
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| super::fail(format!("cannot start the async runtime: {e}")))
}

/// Whether a command may create the SQLite database when it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Create {
    /// Refuse: a missing file means RELAY_DATA_DIR points at the wrong place.
    Never,
    /// `relay migrate` and `relay keys create`: create it, and say where.
    Allowed,
}

/// Refuses a missing SQLite file unless `create` allows it; returns the path
/// when the command is about to create it.
pub(super) fn check_database(args: &StoreArgs, create: Create) -> Result<Option<PathBuf>, String> {
    if args.database.url().is_some() {
        return Ok(None);
    }
    let path = args.data.data_dir.join(crate::store::SQLITE_FILE);
    if path.exists() {
        return Ok(None);
    }
    match create {
        Create::Allowed => Ok(Some(path)),
        Create::Never => Err(format!(
            "no database at {} (RELAY_DATA_DIR={}, RELAY_DATABASE_URL unset); refusing to create an empty one. \
             Set RELAY_DATA_DIR (or --data-dir) to the running relay's data directory, or RELAY_DATABASE_URL to its \
             database; `relay migrate` or `relay keys create` create a new one deliberately",
            path.display(),
            args.data.data_dir.display()
        )),
    }
}

async fn open(args: &StoreArgs, create: Create) -> Result<Store, ExitCode> {
    let created = check_database(args, create).map_err(super::fail)?;
    let url = args.database.url();
    let store = Store::open(url.as_ref().map(|u| u.expose()), &args.data.data_dir)
        .await
        .map_err(super::fail)?;
    if let Some(path) = created {
        eprintln!("created a new SQLite database at {}", path.display());
    }
    Ok(store)
}

pub fn run(cmd: KeysCommand) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: KeysCommand) -> ExitCode {
    match cmd {
        KeysCommand::Create {
            policy,
            name,
            expires,
            json,
            config_dir,
            store,
        } => {
            if let Err(msg) = check_policy(&config_dir, &policy) {
                return super::fail(msg);
            }
            let expires_in = match expires.as_deref().map(super::parse_duration_ms).transpose() {
                Ok(e) => e,
                Err(e) => return super::fail(e),
            };
            let store = match open(&store, Create::Allowed).await {
                Ok(s) => s,
                Err(c) => return c,
            };
            let hasher = match crate::auth::manage::hasher(&store).await {
                Ok(h) => h,
                Err(e) => return super::fail(e),
            };
            match crate::auth::manage::mint(&store, &hasher, &policy, name, expires_in).await {
                Ok(m) if json => {
                    let mut v = serde_json::to_value(&m.row).unwrap_or_default();
                    v["key"] = serde_json::Value::from(m.plaintext.expose());
                    println!("{v}");
                    ExitCode::SUCCESS
                }
                Ok(m) => {
                    println!("{}", m.plaintext.expose());
                    eprintln!(
                        "created {} ({}) for policy `{policy}`; the key is shown only now",
                        m.row.id, m.row.prefix
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => super::fail(e),
            }
        }
        KeysCommand::List { json, store } => {
            let store = match open(&store, Create::Never).await {
                Ok(s) => s,
                Err(c) => return c,
            };
            match store.list_keys().await {
                Ok(rows) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&rows).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Ok(rows) => {
                    print_table(&rows);
                    ExitCode::SUCCESS
                }
                Err(e) => super::fail(e),
            }
        }
        KeysCommand::Disable { id, store } => {
            change(store, &id, "disabled", |s, id| {
                Box::pin(s.set_key_enabled(id, false))
            })
            .await
        }
        KeysCommand::Enable { id, store } => {
            change(store, &id, "enabled", |s, id| {
                Box::pin(s.set_key_enabled(id, true))
            })
            .await
        }
        KeysCommand::Delete { id, store } => {
            change(store, &id, "deleted", |s, id| Box::pin(s.delete_key(id))).await
        }
    }
}

type Change<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<bool, crate::store::StoreError>> + Send + 'a>,
>;

async fn change(
    args: StoreArgs,
    arg: &str,
    done: &str,
    op: impl for<'a> Fn(&'a Store, &'a str) -> Change<'a>,
) -> ExitCode {
    let store = match open(&args, Create::Never).await {
        Ok(s) => s,
        Err(c) => return c,
    };
    let id = match resolve(&store, arg).await {
        Ok(id) => id,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match op(&store, &id).await {
        Ok(true) => {
            eprintln!("{done} {id}");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("error: no relay key with id `{id}`; `relay keys list` shows them");
            ExitCode::FAILURE
        }
        Err(e) => super::fail(e),
    }
}

/// A key's id, name or display prefix → its id, when exactly one key
/// matches (an id always wins).
async fn resolve(store: &Store, arg: &str) -> Result<String, String> {
    let rows = store.list_keys().await.map_err(|e| e.to_string())?;
    resolve_in(&rows, arg)
}

fn resolve_in(rows: &[KeyRow], arg: &str) -> Result<String, String> {
    if rows.iter().any(|r| r.id == arg) {
        return Ok(arg.to_string());
    }
    let hits: Vec<&KeyRow> = rows
        .iter()
        .filter(|r| r.prefix == arg || r.name.as_deref() == Some(arg))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(format!(
            "no relay key with id, name or prefix `{arg}`; `relay keys list` shows them"
        )),
        many => Err(format!(
            "`{arg}` is ambiguous: it names {} keys; use one of their ids: {}",
            many.len(),
            many.iter()
                .map(|r| format!(
                    "{} ({} {})",
                    r.id,
                    r.prefix,
                    r.name.as_deref().unwrap_or("-")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Refuses a policy the config does not define; a config that cannot be
/// read is only a warning (keys can be minted before config is in place).
fn check_policy(dir: &std::path::Path, policy: &str) -> Result<(), String> {
    match load_dir(dir, SecretMode::CheckOnly) {
        Ok(loaded) => match loaded.snapshot {
            Some(s) if s.policy(policy).is_none() => {
                let known: Vec<&str> = s.policies.iter().map(|p| p.name.as_str()).collect();
                Err(format!(
                    "policy `{policy}` is not defined in {}; defined: {}",
                    dir.display(),
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ))
            }
            Some(_) => Ok(()),
            None => {
                eprintln!(
                    "warning: {} is invalid; cannot check that policy `{policy}` exists",
                    dir.display()
                );
                Ok(())
            }
        },
        Err(e) => {
            eprintln!("warning: {e}; cannot check that policy `{policy}` exists");
            Ok(())
        }
    }
}

fn print_table(rows: &[KeyRow]) {
    let time = |ms: Option<i64>| {
        ms.map(|ms| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
            humantime::format_rfc3339_seconds(t).to_string()
        })
        .unwrap_or_else(|| "-".into())
    };
    println!(
        "{:<22} {:<13} {:<16} {:<8} {:<21} {:<21} {:<21} NAME",
        "ID", "PREFIX", "POLICY", "ENABLED", "CREATED", "LAST USED", "EXPIRES"
    );
    for r in rows {
        println!(
            "{:<22} {:<13} {:<16} {:<8} {:<21} {:<21} {:<21} {}",
            r.id,
            r.prefix,
            r.policy,
            r.enabled,
            time(Some(r.created_at)),
            time(r.last_used_at),
            time(r.expires_at),
            r.name.as_deref().unwrap_or("")
        );
    }
}
