//! The in-memory table of relay keys that authentication reads.
//!
//! The whole table (keyed by hash) is held in memory and replaced as a unit
//! through `ArcSwap`, so a lookup is one HMAC and one hash-map probe, with no
//! database round trip, also for unknown keys. A background task polls the
//! store's `key_epoch` every 250 ms and reloads the table when any process
//! (another replica, the `relay keys` CLI) changed a key, so disabling or
//! deleting a key takes effect everywhere within a second.
//!
//! A key minted on another replica is in the store before this table has
//! polled it in, so a well-formed key (valid checksum) missing from the table
//! is looked up in the store before it is refused: one query per key however
//! many requests wait for it (single flight), a short negative cache for keys
//! the store does not have, and a bounded rate of lookups (a token bucket)
//! so a flood of well-formed fakes cannot turn into a flood of queries. Past
//! the bound the caller is told to retry (503), not that the key is wrong.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;

use super::key::KeyHasher;
use crate::store::{now_ms, KeyRow, Store, StoreError};

pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
const LAST_USED_FLUSH: Duration = Duration::from_secs(5);
/// How long "not in the store" is believed for a key.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Most keys remembered as absent; past it the oldest half is forgotten.
const NEGATIVE_CAP: usize = 10_000;
/// Default bound on store lookups of unknown keys, per second (also the burst).
pub const DEFAULT_LOOKUP_RATE: u32 = 50;

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
    misses: Misses,
}

/// What a lookup of a key missing from the table found.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Arc<KeyEntry>),
    /// Not in the store either (or remembered as absent).
    Absent,
    /// The lookup rate bound was hit: try again in a second.
    Limited,
    /// The store could not be asked.
    Failed,
}

/// What a miss cost, for the lookup metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissOutcome {
    /// A store query was made (found, absent or failed).
    Queried(&'static str),
    /// Answered without a query: the negative cache, or the rate bound.
    NotQueried(&'static str),
}

type Flight = Arc<tokio::sync::OnceCell<Lookup>>;

/// State for keys missing from the table.
struct Misses {
    inflight: Mutex<FxHashMap<[u8; 32], Flight>>,
    absent: Mutex<FxHashMap<[u8; 32], Instant>>,
    bucket: Mutex<Bucket>,
}

/// A token bucket: `rate` tokens per second, at most `rate` banked.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        let rate = f64::from(rate.max(1));
        Bucket {
            rate,
            tokens: rate,
            at: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
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
            misses: Misses {
                inflight: Mutex::default(),
                absent: Mutex::default(),
                bucket: Mutex::new(Bucket::new(DEFAULT_LOOKUP_RATE)),
            },
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

    /// Bounds store lookups of keys missing from the table to `per_second`
    /// (also the burst).
    pub fn set_lookup_rate(&self, per_second: u32) {
        *lock(&self.misses.bucket) = Bucket::new(per_second);
    }

    /// The entry for a plaintext key, if the table has it.
    pub fn lookup(&self, plaintext: &str) -> Option<Arc<KeyEntry>> {
        let hash = self.hasher.get()?.hash(plaintext);
        self.table.load().get(&hash).cloned()
    }

    /// The entry for a plaintext key: the table, else the store (see the
    /// module docs). Call only for well-formed keys: the checksum is what
    /// keeps typos and garbage from costing a query.
    pub async fn find(&self, plaintext: &str) -> (Lookup, Option<MissOutcome>) {
        // No pepper yet: the store was never reached (callers check first).
        let Some(hasher) = self.hasher.get() else {
            return (Lookup::Failed, None);
        };
        let hash = hasher.hash(plaintext);
        if let Some(e) = self.table.load().get(&hash) {
            return (Lookup::Found(e.clone()), None);
        }
        let now = Instant::now();
        {
            let mut absent = lock(&self.misses.absent);
            match absent.get(&hash) {
                Some(until) if *until > now => {
                    return (Lookup::Absent, Some(MissOutcome::NotQueried("cached")))
                }
                Some(_) => {
                    absent.remove(&hash);
                }
                None => {}
            }
        }
        // Join the lookup already running for this key, or start one.
        let flight = {
            let mut inflight = lock(&self.misses.inflight);
            match inflight.get(&hash) {
                Some(f) => f.clone(),
                None => {
                    if !lock(&self.misses.bucket).take(now) {
                        return (Lookup::Limited, Some(MissOutcome::NotQueried("limited")));
                    }
                    let f = Flight::default();
                    inflight.insert(hash, f.clone());
                    f
                }
            }
        };
        // Every waiter can run the query, but only one does: a waiter takes
        // over if the request that started it goes away mid-query.
        let mut queried = false;
        let found = flight
            .get_or_init(|| {
                queried = true;
                self.fetch(&hash)
            })
            .await
            .clone();
        {
            let mut inflight = lock(&self.misses.inflight);
            if inflight.get(&hash).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                inflight.remove(&hash);
            }
        }
        if !queried {
            return (found, None);
        }
        let outcome = match &found {
            Lookup::Found(_) => "found",
            Lookup::Absent => "absent",
            _ => "error",
        };
        (found, Some(MissOutcome::Queried(outcome)))
    }

    async fn fetch(&self, hash: &[u8; 32]) -> Lookup {
        match self.store.key_by_hash(hash).await {
            Ok(Some(row)) => {
                let entry = Arc::new(KeyEntry::from_row(row));
                // Into the table until the next refresh rebuilds it (which
                // will have it too: minting moved the epoch).
                self.table.rcu(|t| {
                    let mut t = Table::clone(t);
                    t.insert(*hash, entry.clone());
                    t
                });
                Lookup::Found(entry)
            }
            Ok(None) => {
                let mut absent = lock(&self.misses.absent);
                if absent.len() >= NEGATIVE_CAP {
                    let now = Instant::now();
                    absent.retain(|_, until| *until > now);
                    if absent.len() >= NEGATIVE_CAP {
                        absent.clear();
                    }
                }
                absent.insert(*hash, Instant::now() + NEGATIVE_TTL);
                Lookup::Absent
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up a relay key in the store");
                Lookup::Failed
            }
        }
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unix milliseconds now; re-exported for callers of `mark_used`.
pub fn now() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::Bucket;
    use std::time::{Duration, Instant};

    #[test]
    fn the_lookup_bound_is_a_token_bucket() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3);
        b.at = t0;
        assert!((0..3).all(|_| b.take(t0)), "a full burst");
        assert!(!b.take(t0), "then nothing");
        assert!(!b.take(t0 + Duration::from_millis(300)));
        assert!(
            b.take(t0 + Duration::from_millis(400)),
            "one token per 1/3 s"
        );
        // Idle time banks at most one second's worth.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(later)).count(), 3);
    }
}
