//! Relay key records. Every change bumps `key_epoch` in the same
//! transaction, which is how other processes notice it.

use super::{with_pool, Store, StoreError};

/// A stored relay key (never the plaintext).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct KeyRow {
    pub id: String,
    /// First 12 characters of the plaintext, for display.
    pub prefix: String,
    #[serde(skip)]
    pub hash: Vec<u8>,
    pub policy: String,
    pub name: Option<String>,
    pub enabled: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
}

pub struct NewKey {
    pub id: String,
    pub prefix: String,
    pub hash: Vec<u8>,
    pub policy: String,
    pub name: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

const COLUMNS: &str =
    "id, prefix, hash, policy, name, enabled, created_at, last_used_at, expires_at";
const BUMP_EPOCH: &str =
    "UPDATE relay_meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) WHERE key = 'key_epoch'";

impl Store {
    pub async fn insert_key(&self, k: &NewKey) -> Result<(), StoreError> {
        with_pool!(self, p => async {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO relay_keys (id, prefix, hash, policy, name, enabled, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, TRUE, $6, $7)",
            )
            .bind(&k.id)
            .bind(&k.prefix)
            .bind(&k.hash)
            .bind(&k.policy)
            .bind(&k.name)
            .bind(k.created_at)
            .bind(k.expires_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(BUMP_EPOCH).execute(&mut *tx).await?;
            tx.commit().await
        }.await)?;
        Ok(())
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM relay_keys ORDER BY created_at, id");
        Ok(with_pool!(self, p => sqlx::query_as::<_, KeyRow>(&sql).fetch_all(p).await)?)
    }

    /// The key with this lookup hash: how a replica finds a key minted
    /// elsewhere before its table has caught up.
    pub async fn key_by_hash(&self, hash: &[u8]) -> Result<Option<KeyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM relay_keys WHERE hash = $1");
        Ok(
            with_pool!(self, p => sqlx::query_as::<_, KeyRow>(&sql).bind(hash).fetch_optional(p).await)?,
        )
    }

    pub async fn get_key(&self, id: &str) -> Result<Option<KeyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM relay_keys WHERE id = $1");
        Ok(
            with_pool!(self, p => sqlx::query_as::<_, KeyRow>(&sql).bind(id).fetch_optional(p).await)?,
        )
    }

    /// Enables or disables a key; `false` when no such key exists.
    pub async fn set_key_enabled(&self, id: &str, enabled: bool) -> Result<bool, StoreError> {
        self.change_key(
            "UPDATE relay_keys SET enabled = $2 WHERE id = $1",
            id,
            Some(enabled),
        )
        .await
    }

    /// Deletes a key; `false` when no such key exists.
    pub async fn delete_key(&self, id: &str) -> Result<bool, StoreError> {
        self.change_key("DELETE FROM relay_keys WHERE id = $1", id, None)
            .await
    }

    async fn change_key(
        &self,
        sql: &str,
        id: &str,
        flag: Option<bool>,
    ) -> Result<bool, StoreError> {
        let changed = with_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let mut q = sqlx::query(sql).bind(id);
            if let Some(f) = flag {
                q = q.bind(f);
            }
            let n = q.execute(&mut *tx).await?.rows_affected();
            if n > 0 {
                sqlx::query(BUMP_EPOCH).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n > 0)
        }.await)?;
        Ok(changed)
    }

    /// The key-change counter; equal values mean an unchanged key table.
    pub async fn key_epoch(&self) -> Result<i64, StoreError> {
        Ok(self
            .meta("key_epoch")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Records when keys were last used (batched, off the request path).
    /// Not an epoch change: it does not affect authentication.
    pub async fn touch_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        with_pool!(self, p => async {
            let mut tx = p.begin().await?;
            for (id, at) in used {
                sqlx::query("UPDATE relay_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)")
                    .bind(id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }.await)?;
        Ok(())
    }

    /// The secret that keys relay-key hashes, shared by every replica through
    /// the database and created by the first one.
    pub async fn key_pepper(&self) -> Result<Vec<u8>, StoreError> {
        use rand::RngCore;
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        let value = self
            .meta_get_or_init("key_pepper", &hex::encode(fresh))
            .await?;
        Ok(hex::decode(value).unwrap_or_else(|_| fresh.to_vec()))
    }
}
