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
    /// Why relay itself refused the call (a [`ThrottleReason`] name), `None`
    /// for every call that was not throttled.
    pub reason: Option<String>,
    /// How many calls this row stands for: 1, except for throttled calls
    /// merged per key, reason and minute by the usage writer.
    pub calls: Calls,
    /// Tokens (and cost) are relay's estimate, not the upstream's count:
    /// the client went away and no usage arrived within the grace read.
    #[serde(default)]
    pub estimated: bool,
    /// The client's own `x-request-id`, when it sent a valid one (not
    /// unique); `request_id` is relay's.
    pub client_request_id: Option<String>,
}

/// The number of calls a usage row stands for; 1 unless merged.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct Calls(pub i64);

impl Default for Calls {
    fn default() -> Calls {
        Calls(1)
    }
}

/// Why a call was throttled (429 from relay's own limits): the fixed
/// vocabulary of the usage records' `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleReason {
    /// The policy's `requests_per_minute`.
    RateLimitRequests,
    /// The policy's `tokens_per_minute`.
    RateLimitTokens,
    /// The policy's `max_concurrent_requests`.
    Concurrency,
    /// The policy's `budget` is spent for the period.
    Budget,
}

impl ThrottleReason {
    pub const ALL: [ThrottleReason; 4] = [
        ThrottleReason::RateLimitRequests,
        ThrottleReason::RateLimitTokens,
        ThrottleReason::Concurrency,
        ThrottleReason::Budget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleReason::RateLimitRequests => "rate_limit_requests",
            ThrottleReason::RateLimitTokens => "rate_limit_tokens",
            ThrottleReason::Concurrency => "concurrency",
            ThrottleReason::Budget => "budget",
        }
    }

    /// The reason for a refused admission, by the limit's policy field name
    /// (`state::Admitted::No`'s `limit`).
    pub fn from_limit(limit: &str) -> Option<ThrottleReason> {
        match limit {
            "requests_per_minute" => Some(ThrottleReason::RateLimitRequests),
            "tokens_per_minute" => Some(ThrottleReason::RateLimitTokens),
            "max_concurrent_requests" => Some(ThrottleReason::Concurrency),
            _ => None,
        }
    }
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
    /// Of `requests`, those relay throttled (429 with a `reason`).
    pub throttled: i64,
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

    /// `(from, to)` covering the last `n` buckets up to and including the
    /// one `now` falls in.
    pub fn last(self, n: i64, now: i64) -> (i64, i64) {
        let w = self.millis();
        let now = clamp_ms(now);
        (
            now.div_euclid(w) * w - (n.clamp(1, MAX_BUCKETS) - 1) * w,
            now + 1,
        )
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

/// The earliest time a usage query may name: 2000-01-01T00:00:00Z.
pub const EARLIEST_MS: i64 = 946_684_800_000;

/// How far past now a usage query's range may reach.
pub const FUTURE_SLACK_MS: i64 = 86_400_000;

/// Most records one usage query returns.
pub const MAX_LIMIT: i64 = 10_000;

/// Times far outside any real range (about ±142,000 years) are pulled in
/// before bucket arithmetic, so no client-supplied number can overflow it.
/// The control plane refuses such values earlier ([`UsageQuery::check`]).
fn clamp_ms(ms: i64) -> i64 {
    ms.clamp(-(1 << 52), 1 << 52)
}

impl UsageQuery {
    /// Checks what a client sent before anything computes with it: `from`
    /// and `to` between 2000-01-01 and a day after `now_ms`, `from` not
    /// after `to`, `limit` within 1..=[`MAX_LIMIT`]. The message says what
    /// is allowed.
    pub fn check(&self, now_ms: i64) -> Result<(), String> {
        let latest = now_ms.saturating_add(FUTURE_SLACK_MS);
        for (name, value) in [("from", self.from), ("to", self.to)] {
            if let Some(v) = value {
                if !(EARLIEST_MS..=latest).contains(&v) {
                    return Err(format!(
                        "`{name}` must be Unix milliseconds between {EARLIEST_MS} (2000-01-01) and \
                         {latest} (a day from now); got {v}"
                    ));
                }
            }
        }
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from > to {
                return Err(format!(
                    "`from` ({from}) is after `to` ({to}); the range is [from, to)"
                ));
            }
        }
        if let Some(l) = self.limit {
            if !(1..=MAX_LIMIT).contains(&l) {
                return Err(format!(
                    "`limit` must be between 1 and {MAX_LIMIT}; got {l}"
                ));
            }
        }
        Ok(())
    }
}

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
                       output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, streamed, \
                       reason, calls, estimated, client_request_id";

/// Most rows one usage INSERT carries (18 parameters each, well inside
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
                        .push_bind(r.streamed)
                        .push_bind(&r.reason)
                        .push_bind(r.calls.0.max(1))
                        .push_bind(r.estimated)
                        .push_bind(&r.client_request_id);
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
    fn records_query<'a, DB: sqlx::Database>(q: &'a UsageQuery) -> QueryBuilder<'a, DB>
    where
        String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    {
        let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
        let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM usage_records"));
        Self::usage_filter(&mut qb, q);
        qb.push(" ORDER BY at DESC, id DESC LIMIT ")
            .push_bind(limit);
        qb
    }

    fn totals_query<'a, DB: sqlx::Database>(q: &'a UsageQuery) -> QueryBuilder<'a, DB>
    where
        String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    {
        let mut qb = QueryBuilder::new(
            "SELECT CAST(COALESCE(SUM(calls), 0) AS BIGINT) AS requests, \
             CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
             CAST(COALESCE(SUM(cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens, \
             CAST(COALESCE(SUM(cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens, \
             CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost_usd, \
             CAST(COALESCE(SUM(CASE WHEN reason IS NULL THEN 0 ELSE calls END), 0) AS BIGINT) AS throttled \
             FROM usage_records",
        );
        Self::usage_filter(&mut qb, q);
        qb
    }

    pub async fn usage_totals(&self, q: &UsageQuery) -> Result<UsageTotals, StoreError> {
        Ok(
            with_pool!(self, p => Self::totals_query(q).build_query_as::<UsageTotals>().fetch_one(p).await)?,
        )
    }

    /// Totals and the newest records from one snapshot of the table, so a
    /// batch written in between cannot make them disagree.
    pub async fn usage_report(
        &self,
        q: &UsageQuery,
    ) -> Result<(UsageTotals, Vec<UsageRow>), StoreError> {
        let repeatable = matches!(self, Store::Postgres(_));
        Ok(with_pool!(self, p => async {
            let mut tx = p.begin().await?;
            if repeatable {
                // SQLite's read transaction is a snapshot already.
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .execute(&mut *tx)
                    .await?;
            }
            let totals = Self::totals_query(q)
                .build_query_as::<UsageTotals>()
                .fetch_one(&mut *tx)
                .await?;
            let records = Self::records_query(q)
                .build_query_as::<UsageRow>()
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>((totals, records))
        }.await)?)
    }

    /// Usage per bucket over `[from, to)`, every bucket present (empty ones
    /// as zeros), oldest first. `from` is rounded down to a bucket boundary;
    /// the range is cut to its last [`MAX_BUCKETS`] buckets. Without `from`,
    /// the last 24 buckets up to `to` (default now).
    pub async fn usage_series(
        &self,
        bucket: Bucket,
        q: &UsageQuery,
    ) -> Result<Vec<UsagePoint>, StoreError> {
        let width = bucket.millis();
        let to = clamp_ms(q.to.unwrap_or_else(super::now_ms));
        let from = clamp_ms(q.from.unwrap_or_else(|| bucket.last(24, to - 1).0));
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
                " AS BIGINT) AS start, CAST(COALESCE(SUM(calls), 0) AS BIGINT) AS requests, \
                 CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN calls ELSE 0 END), 0) AS BIGINT) AS errors, \
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
        debug_assert!(out.len() as i64 <= MAX_BUCKETS);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    const T0: i64 = 3_000 * HOUR;

    fn row(at: i64, model: &str, status: i32, tokens: i64, cost: f64) -> UsageRow {
        UsageRow {
            at,
            request_id: format!("req-{at}-{model}"),
            key_id: Some("k1".into()),
            model: model.into(),
            status,
            input_tokens: tokens,
            output_tokens: tokens * 2,
            cost_usd: cost,
            ..UsageRow::default()
        }
    }

    async fn series_are_bucketed(store: &Store) {
        store
            .insert_usage(&[
                row(T0 + 1, "a", 200, 10, 0.5),
                row(T0 + HOUR - 1, "a", 200, 5, 0.25),
                row(T0 + 2 * HOUR + 7, "a", 502, 0, 0.0),
                row(T0 + 2 * HOUR + 9, "b", 200, 100, 1.0),
                row(T0 + 3 * HOUR, "a", 200, 1, 0.0), // at `to`: excluded
            ])
            .await
            .unwrap();
        let q = UsageQuery {
            from: Some(T0),
            to: Some(T0 + 3 * HOUR),
            ..UsageQuery::default()
        };
        let s = store.usage_series(Bucket::Hour, &q).await.unwrap();
        let starts: Vec<i64> = s.iter().map(|p| p.start).collect();
        assert_eq!(starts, [T0, T0 + HOUR, T0 + 2 * HOUR]);
        let requests: Vec<i64> = s.iter().map(|p| p.requests).collect();
        assert_eq!(requests, [2, 0, 2], "empty buckets are zeros: {s:?}");
        assert_eq!(s[0].input_tokens, 15);
        assert_eq!(s[0].output_tokens, 30);
        assert!((s[0].cost_usd - 0.75).abs() < 1e-9);
        assert_eq!(s[2].errors, 1);

        let only_a = UsageQuery {
            model: Some("a".into()),
            ..q.clone()
        };
        let s = store.usage_series(Bucket::Hour, &only_a).await.unwrap();
        assert_eq!(s.iter().map(|p| p.requests).collect::<Vec<_>>(), [2, 0, 1]);

        let other_key = UsageQuery {
            key_id: Some("k2".into()),
            ..q.clone()
        };
        let s = store.usage_series(Bucket::Hour, &other_key).await.unwrap();
        assert!(s.iter().all(|p| p.requests == 0));

        // Days are UTC-aligned; T0 (3,000 h) is exactly day 125.
        let s = store.usage_series(Bucket::Day, &q).await.unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].start, 125 * 24 * HOUR);
        assert_eq!(s[0].requests, 4);

        // A from that is not on a boundary keeps its bucket, counted from `from`.
        let mid = UsageQuery {
            from: Some(T0 + 30 * 60_000),
            ..q.clone()
        };
        let s = store.usage_series(Bucket::Hour, &mid).await.unwrap();
        assert_eq!(s[0].start, T0);
        assert_eq!(s[0].requests, 1);

        // Long ranges keep the latest buckets only.
        let long = UsageQuery {
            from: Some(0),
            to: Some(T0 + 3 * HOUR),
            ..UsageQuery::default()
        };
        let s = store.usage_series(Bucket::Hour, &long).await.unwrap();
        assert_eq!(s.len() as i64, MAX_BUCKETS);
        assert_eq!(s.last().unwrap().start, T0 + 2 * HOUR);
        assert_eq!(s.iter().map(|p| p.requests).sum::<i64>(), 4);

        let empty = UsageQuery {
            from: Some(T0),
            to: Some(T0),
            ..UsageQuery::default()
        };
        assert!(store
            .usage_series(Bucket::Hour, &empty)
            .await
            .unwrap()
            .is_empty());
    }

    /// `reason` and `calls` are stored and read back, and totals and series
    /// count a merged row as the calls it stands for.
    async fn throttled_rows_round_trip(store: &Store) {
        let t = T0 + 10 * HOUR;
        let normal = UsageRow {
            key_id: Some("k-throttled".into()),
            ..row(t, "a", 200, 10, 0.5)
        };
        let merged = UsageRow {
            request_id: "req-merged".into(),
            status: 429,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            reason: Some(ThrottleReason::RateLimitRequests.as_str().into()),
            calls: Calls(199),
            ..normal.clone()
        };
        let single = UsageRow {
            request_id: "req-single".into(),
            at: t + 1,
            reason: Some(ThrottleReason::Budget.as_str().into()),
            calls: Calls::default(),
            ..merged.clone()
        };
        assert_eq!(normal.reason, None);
        assert_eq!(normal.calls, Calls(1), "a row is one call by default");
        store
            .insert_usage(&[normal.clone(), merged.clone(), single.clone()])
            .await
            .unwrap();
        let q = UsageQuery {
            key_id: Some("k-throttled".into()),
            ..UsageQuery::default()
        };
        let (totals, records) = store.usage_report(&q).await.unwrap();
        assert_eq!(records, [single, merged, normal]);
        assert_eq!(totals.requests, 201);
        assert_eq!(totals.throttled, 200);
        assert_eq!(totals.input_tokens, 10);
        let s = store
            .usage_series(
                Bucket::Hour,
                &UsageQuery {
                    from: Some(t),
                    to: Some(t + HOUR),
                    ..q
                },
            )
            .await
            .unwrap();
        assert_eq!((s[0].requests, s[0].errors), (201, 200));
    }

    #[test]
    fn ranges_are_checked_before_any_arithmetic() {
        let now = 1_764_000_000_000; // late 2025
        let q = |from: Option<i64>, to: Option<i64>, limit: Option<i64>| UsageQuery {
            from,
            to,
            limit,
            ..UsageQuery::default()
        };
        assert!(q(None, None, None).check(now).is_ok());
        assert!(q(
            Some(EARLIEST_MS),
            Some(now + FUTURE_SLACK_MS),
            Some(MAX_LIMIT)
        )
        .check(now)
        .is_ok());
        assert!(q(Some(now), Some(now), Some(1)).check(now).is_ok());
        for (bad, names) in [
            (q(None, Some(i64::MAX), None), "`to`"),
            (q(None, Some(i64::MIN), None), "`to`"),
            (q(Some(EARLIEST_MS - 1), None, None), "`from`"),
            (q(Some(now + FUTURE_SLACK_MS + 1), None, None), "`from`"),
            (q(Some(-1), None, None), "`from`"),
            (q(Some(now), Some(now - 1), None), "after `to`"),
            (q(None, None, Some(0)), "`limit`"),
            (q(None, None, Some(MAX_LIMIT + 1)), "`limit`"),
            (q(None, None, Some(i64::MIN)), "`limit`"),
        ] {
            let err = bad.check(now).unwrap_err();
            assert!(err.contains(names), "{err}");
        }
        // No overflow even at the extremes of `now`.
        assert!(q(Some(EARLIEST_MS), None, None).check(i64::MAX).is_ok());
    }

    #[test]
    fn bucket_arithmetic_cannot_overflow() {
        for n in [i64::MIN, -1, 0, 1, i64::MAX] {
            for now in [i64::MIN, 0, i64::MAX] {
                let (from, to) = Bucket::Day.last(n, now);
                assert!(from < to);
            }
        }
    }

    #[tokio::test]
    async fn series_of_extreme_ranges_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(None, dir.path()).await.unwrap();
        for (from, to) in [
            (None, Some(i64::MAX)),
            (Some(i64::MIN), Some(i64::MAX)),
            (Some(i64::MIN), None),
            (None, Some(i64::MIN)),
            (Some(i64::MAX - 1), Some(i64::MAX)),
        ] {
            for bucket in [Bucket::Hour, Bucket::Day] {
                let q = UsageQuery {
                    from,
                    to,
                    ..UsageQuery::default()
                };
                let s = store.usage_series(bucket, &q).await.unwrap();
                assert!(s.len() as i64 <= MAX_BUCKETS, "{from:?}..{to:?}");
                assert!(s.windows(2).all(|w| w[0].start < w[1].start));
            }
        }
    }

    #[test]
    fn last_buckets_end_with_the_current_one() {
        assert_eq!(Bucket::Hour.last(24, T0 + 5), (T0 - 23 * HOUR, T0 + 6));
        assert_eq!(Bucket::Day.last(1, T0 + 5), (T0, T0 + 6));
    }

    #[tokio::test]
    async fn usage_series_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(None, dir.path()).await.unwrap();
        series_are_bucketed(&store).await;
        throttled_rows_round_trip(&store).await;
    }

    /// Needs the PostgreSQL that `ci/services.sh` starts; fails (never
    /// skips) without it.
    #[tokio::test]
    async fn usage_series_on_postgres() {
        use sqlx::Executor;
        let admin_url = std::env::var("RELAY_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .expect("PostgreSQL is required (ci/services.sh starts it)");
        let name = format!(
            "relay_u_{}_{}",
            std::process::id(),
            super::super::now_ms() % 1_000_000_000
        );
        // Identifiers cannot be bound; `name` is built from numbers above.
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
        let store = Store::open(Some(&url), std::path::Path::new("/nonexistent"))
            .await
            .unwrap();
        series_are_bucketed(&store).await;
        throttled_rows_round_trip(&store).await;
        store.close().await;
        admin
            .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
            .await
            .unwrap();
    }

    #[test]
    fn usage_chunks_cover_the_batch_in_few_sizes() {
        let rows = vec![UsageRow::default(); 500];
        let sizes: Vec<usize> = usage_chunks(&rows).map(<[UsageRow]>::len).collect();
        assert_eq!(sizes, [128, 128, 128, 64, 32, 16, 4]);
        assert_eq!(usage_chunks(&rows[..1]).count(), 1);
        assert_eq!(usage_chunks(&rows[..0]).count(), 0);
    }
}
