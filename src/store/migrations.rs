//! Which of the embedded migrations a database has applied, for
//! `relay migrate --status` and `--dry-run`.

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{with_pool, Store, StoreError};

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// One embedded migration and whether this database has it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrationState {
    pub version: i64,
    pub description: String,
    pub applied: bool,
}

impl Store {
    /// Opens the store without applying migrations (to report on them).
    pub async fn connect(database_url: Option<&str>, data_dir: &Path) -> Result<Store, StoreError> {
        match database_url {
            Some(url) => Store::connect_postgres(url).await,
            None => Store::open_sqlite(data_dir).await,
        }
    }

    /// Every embedded SQLite migration as pending: the report for a
    /// database that does not exist yet (without creating it).
    pub fn sqlite_migrations_unapplied() -> Vec<MigrationState> {
        SQLITE
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| MigrationState {
                version: m.version,
                description: m.description.to_string(),
                applied: false,
            })
            .collect()
    }

    pub(super) fn migrator(&self) -> &'static Migrator {
        match self {
            Store::Sqlite(_) => &SQLITE,
            Store::Postgres(_) => &POSTGRES,
        }
    }

    /// Every embedded migration, oldest first, with whether it is applied.
    pub async fn migration_status(&self) -> Result<Vec<MigrationState>, StoreError> {
        let exists = match self {
            Store::Sqlite(p) => sqlx::query(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_optional(p)
            .await?
            .is_some(),
            Store::Postgres(p) => sqlx::query("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(p)
                .await?
                .try_get::<bool, _>(0)?,
        };
        let applied: Vec<i64> = if exists {
            with_pool!(self, p => sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(p)
                .await)?
        } else {
            Vec::new()
        };
        Ok(self
            .migrator()
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| MigrationState {
                version: m.version,
                description: m.description.to_string(),
                applied: applied.contains(&m.version),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn reports_pending_then_applied(store: &Store) {
        let before = store.migration_status().await.unwrap();
        assert!(before.len() >= 2);
        assert!(before.iter().all(|m| !m.applied), "{before:?}");
        store.migrate().await.unwrap();
        let after = store.migration_status().await.unwrap();
        assert!(after.iter().all(|m| m.applied), "{after:?}");
        assert_eq!(after[0].version, 1);
    }

    #[tokio::test]
    async fn status_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(None, dir.path()).await.unwrap();
        reports_pending_then_applied(&store).await;
    }

    #[tokio::test]
    async fn status_on_postgres() {
        let (store, db) = crate::store::testing::postgres_unmigrated().await;
        reports_pending_then_applied(&store).await;
        db.drop(store).await;
    }
}
