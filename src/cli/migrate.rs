//! `relay migrate`: apply the database migrations, or report on them
//! (`--status`) or on what applying would do (`--dry-run`) without
//! changing anything.

use std::process::ExitCode;

use super::keys::{check_database, runtime, Create, StoreArgs};
use crate::store::{MigrationState, Store};

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// List every migration this binary knows and whether the database
    /// has it; changes nothing.
    #[arg(long, conflicts_with = "dry_run")]
    pub status: bool,
    /// List the migrations that `relay migrate` would apply; changes nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the list as JSON (with --status or --dry-run).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: MigrateArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    let reporting = args.status || args.dry_run;
    let created = match check_database(&args.store, Create::Allowed) {
        Ok(c) => c,
        Err(e) => return super::fail(e),
    };
    if let (true, Some(path)) = (reporting, &created) {
        // Reporting never creates the database: everything is pending.
        eprintln!(
            "no database at {} yet (RELAY_DATA_DIR); `relay migrate` would create it",
            path.display()
        );
        return print(Store::sqlite_migrations_unapplied(), "sqlite", &args);
    }
    rt.block_on(async {
        let url = args.store.database.url();
        let store =
            match Store::connect(url.as_ref().map(|u| u.expose()), &args.store.data.data_dir).await
            {
                Ok(s) => s,
                Err(e) => return super::fail(e),
            };
        let code = if reporting {
            report(&store, &args).await
        } else {
            match store.migrate().await {
                Ok(()) => {
                    if let Some(path) = &created {
                        eprintln!("created a new SQLite database at {}", path.display());
                    }
                    eprintln!("{} database is up to date", store.backend());
                    ExitCode::SUCCESS
                }
                Err(e) => super::fail(e),
            }
        };
        store.close().await;
        code
    })
}

async fn report(store: &Store, args: &MigrateArgs) -> ExitCode {
    match store.migration_status().await {
        Ok(all) => print(all, store.backend(), args),
        Err(e) => super::fail(e),
    }
}

fn print(all: Vec<MigrationState>, backend: &str, args: &MigrateArgs) -> ExitCode {
    let shown: Vec<&MigrationState> = all.iter().filter(|m| args.status || !m.applied).collect();
    if args.json {
        match serde_json::to_string_pretty(&shown) {
            Ok(s) => println!("{s}"),
            Err(e) => return super::fail(e),
        }
        return ExitCode::SUCCESS;
    }
    if args.dry_run && shown.is_empty() {
        println!("nothing to apply: the {backend} database is up to date");
        return ExitCode::SUCCESS;
    }
    println!("{:<8} {:<10} DESCRIPTION", "VERSION", "STATE");
    for m in &shown {
        let state = if m.applied { "applied" } else { "pending" };
        println!("{:<8} {:<10} {}", m.version, state, m.description);
    }
    ExitCode::SUCCESS
}
