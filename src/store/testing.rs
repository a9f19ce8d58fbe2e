//! Test support: a throwaway PostgreSQL database on the server that
//! `ci/services.sh` starts (tests fail, never skip, without it).

use sqlx::Executor;

use super::Store;

pub struct TempDb {
    admin: sqlx::PgPool,
    name: String,
}

/// A fresh database and a migrated store on it.
pub async fn postgres() -> (Store, TempDb) {
    let (store, db) = postgres_unmigrated().await;
    store.migrate().await.unwrap();
    (store, db)
}

/// A fresh database and a store on it, no migration applied.
pub async fn postgres_unmigrated() -> (Store, TempDb) {
    let admin_url = std::env::var("RELAY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let admin = sqlx::PgPool::connect(&admin_url)
        .await
        .expect("PostgreSQL is required (ci/services.sh starts it)");
    let name = format!("relay_t_{}_{}", std::process::id(), rand::random::<u32>());
    // Identifiers cannot be bound; `name` is built from numbers above.
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let store = Store::connect(Some(&url), std::path::Path::new("/nonexistent"))
        .await
        .unwrap();
    (store, TempDb { admin, name })
}

impl TempDb {
    pub async fn drop(self, store: Store) {
        store.close().await;
        self.admin
            .execute(format!("DROP DATABASE {} WITH (FORCE)", self.name).as_str())
            .await
            .unwrap();
    }
}
