//! The runtime store: relay keys, dashboard sessions and usage records, in SQLite (embedded
//! default, a file in `RELAY_DATA_DIR`) or PostgreSQL (`RELAY_DATABASE_URL`).
//! Only this module runs SQL. Queries are runtime-checked with bound
//! parameters (`$1` works in both dialects), so building never needs a
//! database. Config never lives here.

mod keys;
mod migrations;
mod retention;
mod sessions;
mod spend;
#[cfg(test)]
pub(crate) mod testing;
mod usage;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

pub use keys::{KeyRow, NewKey};
pub use migrations::MigrationState;
pub use sessions::SessionRow;
pub use spend::KeySpend;
pub use usage::{
    Bucket, Calls, ThrottleReason, UsagePoint, UsageQuery, UsageRow, UsageTotals, MAX_BUCKETS,
    MAX_LIMIT,
};

/// File name of the embedded database inside `RELAY_DATA_DIR`.
pub const SQLITE_FILE: &str = "relay.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {target}: {err}")]
    Connect { target: String, err: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("RELAY_DATABASE_URL must start with postgres:// or postgresql:// (unset it to use the embedded SQLite)")]
    UnsupportedUrl,
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("the database holds damaged data: {0}; restore it from a backup")]
    Corrupt(String),
}

impl StoreError {
    /// The database could not be reached (refused, reset, timed out): worth
    /// retrying, and a 503 rather than a 500 for whoever asked.
    pub fn is_unreachable(&self) -> bool {
        fn transient(e: &sqlx::Error) -> bool {
            matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        }
        match self {
            StoreError::Connect { .. } => true,
            StoreError::Query(e) => transient(e),
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => transient(e),
            _ => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Connect { .. } => "connect",
            StoreError::Migrate(_) => "migrate",
            StoreError::Query(_) => "query",
            StoreError::UnsupportedUrl => "config",
            StoreError::DataDir(..) => "data_dir",
            StoreError::Corrupt(_) => "corrupt",
        }
    }
}

#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool this store has; the
/// generic sqlx query types infer the database from it.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

impl Store {
    /// Opens the store: PostgreSQL when `database_url` is set, else SQLite in
    /// `data_dir`. Applies migrations.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Store, StoreError> {
        let store = match database_url {
            Some(url) => Store::connect_postgres(url).await?,
            None => Store::open_sqlite(data_dir).await?,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Like `open`, but for PostgreSQL the pool connects on first use and
    /// nothing is migrated yet: `relay serve` starts while the database is
    /// down and calls [`Store::reach`] and [`Store::migrate`] until they
    /// succeed. SQLite (a local file) is opened now.
    pub async fn open_lazy(
        database_url: Option<&str>,
        data_dir: &Path,
    ) -> Result<Store, StoreError> {
        match database_url {
            Some(url) => {
                let (opts, _) = Self::postgres_options(url)?;
                Ok(Store::Postgres(Self::pg_pool().connect_lazy_with(opts)))
            }
            None => Store::open_sqlite(data_dir).await,
        }
    }

    /// One fresh connection, opened and closed, so that an unreachable
    /// database is reported with its own cause ("connection refused")
    /// rather than the pool's "timed out".
    pub async fn reach(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(p) => {
                sqlx::query("SELECT 1").execute(p).await?;
            }
            Store::Postgres(p) => {
                use sqlx::{ConnectOptions, Connection};
                let opts = p.connect_options();
                let target = format!(
                    "postgres://{}@{}:{}/{}",
                    opts.get_username(),
                    opts.get_host(),
                    opts.get_port(),
                    opts.get_database().unwrap_or_default()
                );
                let conn = tokio::time::timeout(Duration::from_secs(5), opts.connect())
                    .await
                    .map_err(|_| StoreError::Connect {
                        target: target.clone(),
                        err: sqlx::Error::PoolTimedOut,
                    })?
                    .map_err(|err| StoreError::Connect { target, err })?;
                let _ = conn.close().await;
            }
        }
        Ok(())
    }

    fn postgres_options(url: &str) -> Result<(PgConnectOptions, String), StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::UnsupportedUrl);
        }
        let target = redact_url(url);
        let opts = PgConnectOptions::from_str(url).map_err(|err| StoreError::Connect {
            target: target.clone(),
            err,
        })?;
        Ok((opts, target))
    }

    fn pg_pool() -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
    }

    async fn connect_postgres(url: &str) -> Result<Store, StoreError> {
        let (opts, target) = Self::postgres_options(url)?;
        let pool = Self::pg_pool()
            .connect_with(opts)
            .await
            .map_err(|err| StoreError::Connect { target, err })?;
        Ok(Store::Postgres(pool))
    }

    async fn open_sqlite(data_dir: &Path) -> Result<Store, StoreError> {
        crate::secrets::create_private_dir(data_dir)
            .map_err(|e| StoreError::DataDir(data_dir.display().to_string(), e))?;
        let path = data_dir.join(SQLITE_FILE);
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|err| StoreError::Connect {
                target: path.display().to_string(),
                err,
            })?;
        Ok(Store::Sqlite(pool))
    }

    /// Applies pending migrations (also done by `open`).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(p) => self.migrator().run(p).await?,
            Store::Postgres(p) => self.migrator().run(p).await?,
        }
        Ok(())
    }

    /// A round trip to the database, for `/healthz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }

    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let v: Option<(String,)> = with_pool!(self, p => sqlx::query_as("SELECT value FROM relay_meta WHERE key = $1").bind(key).fetch_optional(p).await)?;
        Ok(v.map(|(v,)| v))
    }

    /// Returns the value of a meta key, setting it to `init` if absent; the
    /// first writer wins, so every replica sees the same value.
    async fn meta_get_or_init(&self, key: &str, init: &str) -> Result<String, StoreError> {
        with_pool!(self, p => sqlx::query("INSERT INTO relay_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(init)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(self.meta(key).await?.unwrap_or_else(|| init.to_string()))
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }
}
