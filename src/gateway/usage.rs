//! Usage records leave the request path through a bounded channel; one task
//! writes them in batches. Nothing is lost on graceful shutdown: the writer
//! drains the channel before it exits.
//!
//! Throttled calls (429 with a `reason`) are recorded too, but a throttled
//! client must not flood the table: when they come faster than one a second
//! for one key, model and reason, the writer merges the rest of that minute
//! into one row whose `calls` counts them, written when the minute ends (or
//! at shutdown).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::adapters::{anthropic, openai, Protocol, Usage};
use crate::config::snapshot::Pricing;
use crate::store::{now_ms, Store, UsageRow};

/// What a call's tokens cost under its model's pricing (USD; 0 when the
/// model is not priced). Unset cache prices are already the input price in
/// `Pricing` (config/compile.rs).
pub fn cost_usd(pricing: Option<&Pricing>, u: &Usage) -> f64 {
    pricing.map_or(0.0, |p| {
        (u.input_tokens as f64 * p.input_per_mtok
            + u.output_tokens as f64 * p.output_per_mtok
            + u.cache_read_tokens as f64 * p.cache_read_per_mtok
            + u.cache_write_tokens as f64 * p.cache_write_per_mtok)
            / 1_000_000.0
    })
}

/// Usage of a whole (non-streamed) upstream body, by the upstream's
/// protocol: the same parser whether the reply is passed through or
/// translated for the client.
pub fn response_usage(upstream: Protocol, body: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    match upstream {
        Protocol::OpenAi => openai::response_usage(body),
        Protocol::Anthropic => anthropic::response_usage(body),
    }
}

const CHANNEL: usize = 65_536;
const BATCH: usize = 500;
/// The writer wakes on this tick and takes what has queued meanwhile, rather
/// than being woken by every record (a wakeup per request, often of another
/// thread, costs the request path more than the record itself).
const FLUSH_EVERY: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<UsageRow>,
    dropped: Arc<AtomicU64>,
}

impl UsageSink {
    /// Queues a record without waiting. If the writer has fallen this far
    /// behind (the database is down), the record is counted and dropped
    /// rather than slowing requests.
    pub fn record(&self, row: UsageRow) {
        if self.tx.try_send(row).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "usage queue full; records dropped (is the database reachable?)"
                );
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the writer. It stops when `shutdown` is cancelled, after writing
/// everything already queued.
pub fn spawn_writer(
    store: Store,
    shutdown: CancellationToken,
) -> (UsageSink, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<UsageRow>(CHANNEL);
    let sink = UsageSink {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    let handle = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        let mut throttled = Throttled::default();
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            // Everything queued since the last tick, a batch at a time.
            let mut closed = false;
            loop {
                match rx.try_recv() {
                    Ok(row) => {
                        throttled.admit(row, &mut batch);
                        if batch.len() >= BATCH {
                            write(&store, &mut batch).await;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            throttled.due(now_ms(), &mut batch);
            write(&store, &mut batch).await;
            if closed {
                break;
            }
        }
        // Drain what is queued, then write it all, merged rows included.
        rx.close();
        while let Some(row) = rx.recv().await {
            throttled.admit(row, &mut batch);
            if batch.len() >= BATCH {
                write(&store, &mut batch).await;
            }
        }
        throttled.drain(&mut batch);
        write(&store, &mut batch).await;
    });
    (sink, handle)
}

/// Throttled calls closer than this to the previous one of the same key,
/// model and reason are merged.
const MERGE_WITHIN_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60_000;

/// Merges throttled calls per (key, model, reason, minute); see the module
/// comment. Lives in the writer task only, so it needs no lock.
#[derive(Default)]
struct Throttled {
    open: HashMap<(Option<String>, String, String), Window>,
}

struct Window {
    minute: i64,
    last_at: i64,
    /// The merged row of this minute, once calls came too fast.
    merged: Option<UsageRow>,
}

impl Throttled {
    /// Passes `row` on to `out` now, or merges it into its minute's row.
    fn admit(&mut self, row: UsageRow, out: &mut Vec<UsageRow>) {
        let Some(reason) = row.reason.clone() else {
            out.push(row);
            return;
        };
        let minute = row.at.div_euclid(MINUTE_MS);
        let at = row.at;
        let key = (row.key_id.clone(), row.model.clone(), reason);
        match self.open.get_mut(&key) {
            Some(w) if w.minute == minute => {
                match &mut w.merged {
                    Some(m) => m.calls.0 = m.calls.0.saturating_add(row.calls.0.max(1)),
                    None if at - w.last_at < MERGE_WITHIN_MS => w.merged = Some(row),
                    None => out.push(row),
                }
                w.last_at = w.last_at.max(at);
            }
            other => {
                // A new minute (or a first call): the last minute's merged
                // row is complete.
                if let Some(old) = other.and_then(|w| w.merged.take()) {
                    out.push(old);
                }
                self.open.insert(
                    key,
                    Window {
                        minute,
                        last_at: at,
                        merged: None,
                    },
                );
                out.push(row);
            }
        }
    }

    /// Moves the merged rows of minutes that have ended to `out`, and
    /// forgets those minutes.
    fn due(&mut self, now_ms: i64, out: &mut Vec<UsageRow>) {
        let current = now_ms.div_euclid(MINUTE_MS);
        self.open.retain(|_, w| {
            if w.minute >= current {
                return true;
            }
            out.extend(w.merged.take());
            false
        });
    }

    /// Everything still merging (shutdown).
    fn drain(&mut self, out: &mut Vec<UsageRow>) {
        out.extend(self.open.drain().filter_map(|(_, w)| w.merged));
    }
}

async fn write(store: &Store, batch: &mut Vec<UsageRow>) {
    if batch.is_empty() {
        return;
    }
    for attempt in 0..3 {
        match store.insert_usage(batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) if attempt < 2 => {
                tracing::warn!(error = %e, rows = batch.len(), "writing usage failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, rows = batch.len(), "writing usage failed; records lost")
            }
        }
    }
    batch.clear();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::store::{Calls, ThrottleReason};

    const T0: i64 = 1_000 * MINUTE_MS;

    fn throttled(at: i64, key: &str, reason: ThrottleReason) -> UsageRow {
        UsageRow {
            at,
            key_id: Some(key.into()),
            model: "m".into(),
            status: 429,
            reason: Some(reason.as_str().into()),
            ..UsageRow::default()
        }
    }

    #[test]
    fn a_flood_of_throttled_calls_becomes_one_row_per_minute() {
        let mut t = Throttled::default();
        let mut out = Vec::new();
        // 200 calls 5 ms apart: the first is written at once, the rest merge.
        for i in 0..200 {
            t.admit(throttled(T0 + i * 5, "k", ThrottleReason::Budget), &mut out);
        }
        // Other keys and reasons are their own rows; normal calls pass.
        t.admit(throttled(T0 + 7, "k2", ThrottleReason::Budget), &mut out);
        t.admit(
            throttled(T0 + 8, "k", ThrottleReason::Concurrency),
            &mut out,
        );
        t.admit(
            UsageRow {
                at: T0 + 9,
                ..UsageRow::default()
            },
            &mut out,
        );
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(out.iter().all(|r| r.calls == Calls(1)));
        // Nothing is due before the minute ends.
        t.due(T0 + MINUTE_MS - 1, &mut out);
        assert_eq!(out.len(), 4);
        t.due(T0 + MINUTE_MS, &mut out);
        assert_eq!(out.len(), 5);
        let merged = &out[4];
        assert_eq!(merged.calls, Calls(199));
        assert_eq!(merged.at, T0 + 5, "the first merged call's time");
        assert_eq!(merged.reason.as_deref(), Some("budget"));
        let total: i64 = out
            .iter()
            .filter(|r| r.key_id.as_deref() == Some("k") && r.reason.as_deref() == Some("budget"))
            .map(|r| r.calls.0)
            .sum();
        assert_eq!(total, 200);
        assert!(t.open.is_empty(), "ended minutes are forgotten");
    }

    #[test]
    fn slow_throttled_calls_stay_one_row_each_and_shutdown_writes_merged_rows() {
        let mut t = Throttled::default();
        let mut out = Vec::new();
        for i in 0..5 {
            let r = throttled(T0 + i * 1_500, "k", ThrottleReason::RateLimitRequests);
            t.admit(r, &mut out);
        }
        assert_eq!(out.len(), 5, "one a 1.5 s: every call is its own row");
        // Then fast ones; a new minute closes the old minute's merged row.
        t.admit(
            throttled(T0 + 8_000, "k", ThrottleReason::RateLimitRequests),
            &mut out,
        );
        t.admit(
            throttled(T0 + 8_100, "k", ThrottleReason::RateLimitRequests),
            &mut out,
        );
        t.admit(
            throttled(T0 + 8_200, "k", ThrottleReason::RateLimitRequests),
            &mut out,
        );
        assert_eq!(out.len(), 6);
        t.admit(
            throttled(T0 + MINUTE_MS + 1, "k", ThrottleReason::RateLimitRequests),
            &mut out,
        );
        assert_eq!(out.len(), 8);
        assert_eq!(out[6].calls, Calls(2));
        t.admit(
            throttled(T0 + MINUTE_MS + 2, "k", ThrottleReason::RateLimitRequests),
            &mut out,
        );
        t.drain(&mut out);
        assert_eq!(out.len(), 9);
        assert_eq!(out[8].calls, Calls(1));
        assert_eq!(out.iter().map(|r| r.calls.0).sum::<i64>(), 10);
    }

    #[test]
    fn reasons_are_a_fixed_vocabulary() {
        let names: Vec<&str> = ThrottleReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "rate_limit_requests",
                "rate_limit_tokens",
                "concurrency",
                "budget"
            ]
        );
        for (limit, reason) in [
            ("requests_per_minute", ThrottleReason::RateLimitRequests),
            ("tokens_per_minute", ThrottleReason::RateLimitTokens),
            ("max_concurrent_requests", ThrottleReason::Concurrency),
        ] {
            assert_eq!(ThrottleReason::from_limit(limit), Some(reason));
        }
        assert_eq!(ThrottleReason::from_limit("other"), None);
    }
}
