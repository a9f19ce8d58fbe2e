//! Spend per relay key since the start of the current day, week and month,
//! for policy budgets.

use super::{with_pool, Store, StoreError};

/// USD spent by one relay key in each current period.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct KeySpend {
    pub key_id: String,
    pub day: f64,
    pub week: f64,
    pub month: f64,
}

impl Store {
    /// Spend per key since each period start (unix ms). One pass over the
    /// records since the earliest start, through the `(key_id, at)` index.
    pub async fn spend_by_key(
        &self,
        day_start: i64,
        week_start: i64,
        month_start: i64,
    ) -> Result<Vec<KeySpend>, StoreError> {
        let earliest = day_start.min(week_start).min(month_start);
        let sql = "SELECT key_id, \
             CAST(COALESCE(SUM(CASE WHEN at >= $1 THEN cost_usd ELSE 0 END), 0) AS DOUBLE PRECISION) AS day, \
             CAST(COALESCE(SUM(CASE WHEN at >= $2 THEN cost_usd ELSE 0 END), 0) AS DOUBLE PRECISION) AS week, \
             CAST(COALESCE(SUM(CASE WHEN at >= $3 THEN cost_usd ELSE 0 END), 0) AS DOUBLE PRECISION) AS month \
             FROM usage_records WHERE key_id IS NOT NULL AND at >= $4 AND cost_usd > 0 GROUP BY key_id";
        Ok(with_pool!(self, p => sqlx::query_as::<_, KeySpend>(sql)
            .bind(day_start)
            .bind(week_start)
            .bind(month_start)
            .bind(earliest)
            .fetch_all(p)
            .await)?)
    }
}
