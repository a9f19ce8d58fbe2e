//! The in-memory table of relay keys that authentication reads.
//!
//! The whole table (keyed by hash) is held in memory and replaced as a unit
//! through `ArcSwap`, so a lookup is one HMAC and one hash-map probe, with no
//! database round trip, also for unknown keys. A background task polls the
//! store's `key_epoch` every 250 ms and reloads the table when any process
//! (another replica, the `relay keys` CLI) changed a key, so disabling or
//! deleting a key takes effect everywhere within a second.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;

use super::key::KeyHasher;
use crate::store::{now_ms, KeyRow, Store, StoreError};

pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
const LAST_USED_FLUSH: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct KeyEntry {
    pub id: String,
    pub prefix: String,
    pub policy: String,
    pub name: Option<String>,
    pub enabled: bool,
    pub expires_at: Option<i64>,
    /// Set on every use; flushed to the store in batches.
    last_used: AtomicI64,
    flushed: AtomicI64,
}

impl KeyEntry {
    fn from_row(r: KeyRow) -> KeyEntry {
        let last = r.last_used_at.unwrap_or(0);
        KeyEntry {
            id: r.id,
            prefix: r.prefix,
            policy: r.policy,
            name: r.name,
            enabled: r.enabled,
            expires_at: r.expires_at,
            last_used: AtomicI64::new(last),
            flushed: AtomicI64::new(last),
        }
    }

    pub fn mark_used(&self, at_ms: i64) {
        self.last_used.fetch_max(at_ms, Ordering::Relaxed);
    }
}

type Table = FxHashMap<[u8; 32], Arc<KeyEntry>>;

pub struct KeyCache {
    table: ArcSwap<Table>,
    /// Set once the store has answered (the pepper lives there).
    hasher: OnceLock<KeyHasher>,
    /// `i64::MIN` until the table was loaded once.
    epoch: AtomicI64,
    store: Store,
}

impl KeyCache {
    pub async fn load(store: Store) -> Result<KeyCache, StoreError> {
        let cache = KeyCache::unloaded(store);
        cache.init().await?;
        Ok(cache)
    }

    /// An empty table that answers nothing until [`KeyCache::init`]
    /// succeeds (relay started while the store was down).
    pub fn unloaded(store: Store) -> KeyCache {
        KeyCache {
            table: ArcSwap::from_pointee(Table::default()),
            hasher: OnceLock::new(),
            epoch: AtomicI64::new(i64::MIN),
            store,
        }
    }

    /// Reads the pepper and loads the table.
    pub async fn init(&self) -> Result<(), StoreError> {
        if self.hasher.get().is_none() {
            let pepper = self.store.key_pepper().await?;
            let _ = self.hasher.set(KeyHasher::new(&pepper));
        }
        self.refresh().await?;
        Ok(())
    }

    /// Whether the table was loaded from the store at least once: until
    /// then every key would look unknown, so callers answer 503, not 401.
    pub fn is_loaded(&self) -> bool {
        self.epoch.load(Ordering::Acquire) != i64::MIN
    }

    /// `None` until the store has answered once.
    pub fn hasher(&self) -> Option<&KeyHasher> {
        self.hasher.get()
    }

    /// The entry for a plaintext key, if one exists.
    pub fn lookup(&self, plaintext: &str) -> Option<Arc<KeyEntry>> {
        let hash = self.hasher.get()?.hash(plaintext);
        self.table.load().get(&hash).cloned()
    }

    /// Reloads the table if the store's epoch moved.
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let epoch = self.store.key_epoch().await?;
        if epoch == self.epoch.load(Ordering::Acquire) {
            return Ok(false);
        }
        let rows = self.store.list_keys().await?;
        let old = self.table.load();
        let mut table = Table::with_capacity_and_hasher(rows.len(), Default::default());
        for row in rows {
            let Ok(hash) = <[u8; 32]>::try_from(row.hash.as_slice()) else {
                continue;
            };
            let entry = KeyEntry::from_row(row);
            // Keep usage times not yet flushed.
            if let Some(prev) = old.get(&hash) {
                entry.mark_used(prev.last_used.load(Ordering::Relaxed));
                entry
                    .flushed
                    .store(prev.flushed.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            table.insert(hash, Arc::new(entry));
        }
        self.table.store(Arc::new(table));
        self.epoch.store(epoch, Ordering::Release);
        Ok(true)
    }

    /// Writes last-used times that changed since the previous flush.
    pub async fn flush_last_used(&self) -> Result<(), StoreError> {
        let table = self.table.load_full();
        let used: Vec<(String, i64)> = table
            .values()
            .filter_map(|e| {
                let last = e.last_used.load(Ordering::Relaxed);
                (last > e.flushed.load(Ordering::Relaxed)).then(|| (e.id.clone(), last))
            })
            .collect();
        self.store.touch_keys(&used).await?;
        for e in table.values() {
            e.flushed
                .fetch_max(e.last_used.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Polls for key changes and flushes last-used times until shutdown.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut poll = tokio::time::interval(POLL_INTERVAL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_flush = tokio::time::Instant::now();
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = poll.tick() => {}
                }
                // Until serve's store task has loaded it once.
                if !cache.is_loaded() {
                    continue;
                }
                match cache.refresh().await {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("relay key table refresh recovered");
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot refresh relay keys; authenticating with the last loaded table");
                    }
                    Err(_) => {}
                }
                if last_flush.elapsed() >= LAST_USED_FLUSH {
                    last_flush = tokio::time::Instant::now();
                    if let Err(e) = cache.flush_last_used().await {
                        tracing::debug!(error = %e, "cannot record key last-used times");
                    }
                }
            }
            let _ = cache.flush_last_used().await;
        })
    }
}

/// Unix milliseconds now; re-exported for callers of `mark_used`.
pub fn now() -> i64 {
    now_ms()
}
