//! Usage records leave the request path through a bounded channel; one task
//! writes them in batches. Nothing is lost on graceful shutdown: the writer
//! drains the channel before it exits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::adapters::{anthropic, openai, Protocol, Usage};
use crate::config::snapshot::Pricing;
use crate::store::{Store, UsageRow};

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
                        batch.push(row);
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
            write(&store, &mut batch).await;
            if closed {
                break;
            }
        }
        // Drain what is queued, then write it all.
        rx.close();
        while let Some(row) = rx.recv().await {
            batch.push(row);
            if batch.len() >= BATCH {
                write(&store, &mut batch).await;
            }
        }
        write(&store, &mut batch).await;
    });
    (sink, handle)
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
