//! Dashboard sessions: created at login, looked up per control-plane
//! request, deleted at logout or when expired.

use super::{with_pool, Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id_hash: String,
    pub user_name: String,
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// A digest of the User's `password_hash` at login: the session ends
    /// when the hash in config no longer matches.
    pub credential: String,
}

impl Store {
    /// Stores a new session and drops expired ones (logins are rare, so
    /// this is where the table is kept small).
    pub async fn insert_session(&self, s: &SessionRow) -> Result<(), StoreError> {
        with_pool!(self, p => async {
            sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
                .bind(s.created_at)
                .execute(p)
                .await?;
            sqlx::query(
                "INSERT INTO dashboard_sessions (id_hash, user_name, csrf, created_at, expires_at, credential) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&s.id_hash)
            .bind(&s.user_name)
            .bind(&s.csrf)
            .bind(s.created_at)
            .bind(s.expires_at)
            .bind(&s.credential)
            .execute(p)
            .await
            .map(|_| ())
        }.await)?;
        Ok(())
    }

    /// The unexpired session with this id hash.
    pub async fn session(
        &self,
        id_hash: &str,
        now_ms: i64,
    ) -> Result<Option<SessionRow>, StoreError> {
        Ok(with_pool!(self, p => sqlx::query_as::<_, SessionRow>(
            "SELECT id_hash, user_name, csrf, created_at, expires_at, credential FROM dashboard_sessions \
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now_ms)
        .fetch_optional(p)
        .await)?)
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        with_pool!(self, p => sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }
}
