//! Usage records: written in batches by the usage writer, read by the admin
//! API.

use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::{with_pool, Store, StoreError};

/// One upstream call (or a request refused before one), as recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, sqlx::FromRow, PartialEq)]
pub struct UsageRow {
    pub at: i64,
    pub request_id: String,
    pub key_id: Option<String>,
    pub model: String,
    pub binding: Option<String>,
    pub host: Option<String>,
    pub status: i32,
    pub latency_ms: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_usd: f64,
    pub streamed: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct UsageQuery {
    pub key_id: Option<String>,
    pub model: Option<String>,
    /// Unix milliseconds, inclusive.
    pub from: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub to: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow, PartialEq)]
pub struct UsageTotals {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_usd: f64,
}

const COLUMNS: &str =
    "at, request_id, key_id, model, binding, host, status, latency_ms, input_tokens, \
                       output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, streamed";

/// Most rows one usage INSERT carries (14 parameters each, well inside
/// SQLite's and PostgreSQL's limits).
const INSERT_CHUNK: usize = 128;

/// `rows` split into chunks whose sizes are powers of two, largest first.
fn usage_chunks(mut rows: &[UsageRow]) -> impl Iterator<Item = &[UsageRow]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let n = INSERT_CHUNK.min(1 << rows.len().ilog2());
        let (chunk, rest) = rows.split_at(n);
        rows = rest;
        Some(chunk)
    })
}

impl Store {
    /// Inserts a batch in one transaction. Rows go in chunks of a few fixed
    /// sizes (powers of two up to [`INSERT_CHUNK`]), so the statements stay
    /// few and the database reuses their prepared form instead of parsing a
    /// new statement for every batch size.
    pub async fn insert_usage(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        with_pool!(self, p => async {
            let mut tx = p.begin().await?;
            for chunk in usage_chunks(rows) {
                let mut qb = QueryBuilder::new(format!("INSERT INTO usage_records ({COLUMNS}) "));
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.at)
                        .push_bind(&r.request_id)
                        .push_bind(&r.key_id)
                        .push_bind(&r.model)
                        .push_bind(&r.binding)
                        .push_bind(&r.host)
                        .push_bind(r.status)
                        .push_bind(r.latency_ms)
                        .push_bind(r.input_tokens)
                        .push_bind(r.output_tokens)
                        .push_bind(r.cache_read_tokens)
                        .push_bind(r.cache_write_tokens)
                        .push_bind(r.cost_usd)
                        .push_bind(r.streamed);
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }.await)?;
        Ok(())
    }

    fn usage_filter<'a, DB: sqlx::Database>(qb: &mut QueryBuilder<'a, DB>, q: &'a UsageQuery)
    where
        String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    {
        qb.push(" WHERE 1=1");
        if let Some(k) = &q.key_id {
            qb.push(" AND key_id = ").push_bind(k.clone());
        }
        if let Some(m) = &q.model {
            qb.push(" AND model = ").push_bind(m.clone());
        }
        if let Some(f) = q.from {
            qb.push(" AND at >= ").push_bind(f);
        }
        if let Some(t) = q.to {
            qb.push(" AND at < ").push_bind(t);
        }
    }

    /// Matching records, newest first.
    pub async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
        Ok(with_pool!(self, p => {
            let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM usage_records"));
            Self::usage_filter(&mut qb, q);
            qb.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(limit);
            qb.build_query_as::<UsageRow>().fetch_all(p).await
        })?)
    }

    pub async fn usage_totals(&self, q: &UsageQuery) -> Result<UsageTotals, StoreError> {
        Ok(with_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "SELECT COUNT(*) AS requests, \
                 CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
                 CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
                 CAST(COALESCE(SUM(cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens, \
                 CAST(COALESCE(SUM(cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens, \
                 CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost_usd FROM usage_records",
            );
            Self::usage_filter(&mut qb, q);
            qb.build_query_as::<UsageTotals>().fetch_one(p).await
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_chunks_cover_the_batch_in_few_sizes() {
        let rows = vec![UsageRow::default(); 500];
        let sizes: Vec<usize> = usage_chunks(&rows).map(<[UsageRow]>::len).collect();
        assert_eq!(sizes, [128, 128, 128, 64, 32, 16, 4]);
        assert_eq!(usage_chunks(&rows[..1]).count(), 1);
        assert_eq!(usage_chunks(&rows[..0]).count(), 0);
    }
}
