//! Deleting old usage records in small batches, oldest first, so a prune
//! never holds a long lock on a table the usage writer appends to.

use super::{with_pool, Store, StoreError};

impl Store {
    /// Deletes at most `batch` usage records older than `before` (Unix ms)
    /// and returns how many went.
    pub async fn prune_usage_batch(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        // The subquery walks the `at` index; both backends accept it.
        const SQL: &str = "DELETE FROM usage_records WHERE id IN \
             (SELECT id FROM usage_records WHERE at < $1 ORDER BY at LIMIT $2)";
        with_pool!(self, p => async {
            let done = sqlx::query(SQL).bind(before).bind(batch).execute(p).await?;
            Ok(done.rows_affected())
        }
        .await)
    }
}
