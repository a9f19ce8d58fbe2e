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

/// Width of one bucket of a usage series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    #[default]
    Hour,
    Day,
}

impl Bucket {
    pub fn millis(self) -> i64 {
        match self {
            Bucket::Hour => 3_600_000,
            Bucket::Day => 86_400_000,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }
}

/// Most buckets one series may span (a year of hours would be 8,760).
pub const MAX_BUCKETS: i64 = 2_000;

/// One bucket of a usage series: the calls whose `at` falls in
/// `[start, start + bucket)` (UTC-aligned).
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow, PartialEq)]
pub struct UsagePoint {
    /// Unix milliseconds, a multiple of the bucket width.
    pub start: i64,
    pub requests: i64,
    /// Calls answered with a status of 400 or more.
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

const COLUMNS: &str =
    "at, request_id, key_id, model, binding, host, status, latency_ms, input_tokens, \
                       output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, streamed";

impl Store {
    /// Inserts a batch in one statement.
    pub async fn insert_usage(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(format!("INSERT INTO usage_records ({COLUMNS}) "));
            qb.push_values(rows, |mut b, r| {
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
            qb.build().execute(p).await.map(|_| ())
        })?;
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

    /// Usage per bucket over `[from, to)`, every bucket present (empty ones
    /// as zeros), oldest first. `from` is rounded down to a bucket boundary;
    /// the range is cut to its last [`MAX_BUCKETS`] buckets.
    pub async fn usage_series(
        &self,
        bucket: Bucket,
        q: &UsageQuery,
    ) -> Result<Vec<UsagePoint>, StoreError> {
        let width = bucket.millis();
        let to = q.to.unwrap_or_else(super::now_ms);
        let from = q.from.unwrap_or(to - 24 * width);
        if to <= from {
            return Ok(Vec::new());
        }
        let last = (to - 1).div_euclid(width) * width;
        let first = from.div_euclid(width) * width;
        let first = first.max(last - (MAX_BUCKETS - 1) * width);
        let range = UsageQuery {
            from: Some(first.max(from)),
            to: Some(to),
            ..q.clone()
        };
        // Integer division buckets the same way in SQLite and PostgreSQL
        // (`at` is a BIGINT of milliseconds); `GROUP BY 1` avoids repeating
        // the expression with a second placeholder.
        let rows: Vec<UsagePoint> = with_pool!(self, p => {
            let mut qb = QueryBuilder::new("SELECT CAST((at / ");
            qb.push_bind(width).push(") * ").push_bind(width).push(
                " AS BIGINT) AS start, COUNT(*) AS requests, \
                 CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors, \
                 CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
                 CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
                 CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost_usd FROM usage_records",
            );
            Self::usage_filter(&mut qb, &range);
            qb.push(" GROUP BY 1 ORDER BY 1");
            qb.build_query_as::<UsagePoint>().fetch_all(p).await
        })?;
        let mut out = Vec::with_capacity(((last - first) / width + 1) as usize);
        let mut rows = rows.into_iter().peekable();
        let mut start = first;
        while start <= last {
            match rows.peek() {
                Some(r) if r.start == start => out.extend(rows.next()),
                _ => out.push(UsagePoint {
                    start,
                    ..UsagePoint::default()
                }),
            }
            start += width;
        }
        Ok(out)
    }
}
