//! In-process state for single-node use. Reads are lock-free (an immutable
//! map behind `ArcSwap`, replaced on the rare write); counters are atomics,
//! so the per-request round-robin counter never takes a lock either.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;

use super::StateHealth;
use crate::store::now_ms;

#[derive(Clone)]
struct Entry {
    value: Arc<str>,
    expires_ms: i64,
}

struct Counter {
    value: AtomicI64,
    /// Window end; the counter restarts after it.
    expires_ms: AtomicI64,
}

#[derive(Default)]
pub struct MemoryState {
    values: ArcSwap<FxHashMap<String, Entry>>,
    counters: ArcSwap<FxHashMap<String, Arc<Counter>>>,
    /// Budget reservations per subject; a plain lock, held for a few map
    /// operations and never across an `.await`.
    budgets: Mutex<FxHashMap<String, BudgetBook>>,
}

/// One subject's budget reservations.
#[derive(Default)]
struct BudgetBook {
    reserved: i64,
    /// (second, nano-USD) of calls settled in the last seconds.
    settled: Vec<(i64, i64)>,
}

fn expiry(ttl_ms: u64) -> i64 {
    now_ms().saturating_add(ttl_ms.min(i64::MAX as u64) as i64)
}

impl MemoryState {
    pub async fn get_many(&self, keys: &[String]) -> Vec<Option<String>> {
        let now = now_ms();
        let map = self.values.load();
        // Counters live apart from values here, but Redis has one key
        // space: a counter made by `incr` reads back as its number.
        let counters = self.counters.load();
        keys.iter()
            .map(|k| {
                map.get(k)
                    .filter(|e| e.expires_ms > now)
                    .map(|e| e.value.to_string())
                    .or_else(|| {
                        counters
                            .get(k)
                            .filter(|c| c.expires_ms.load(Ordering::Relaxed) > now)
                            .map(|c| c.value.load(Ordering::Relaxed).to_string())
                    })
            })
            .collect()
    }

    fn write(&self, f: impl Fn(&mut FxHashMap<String, Entry>) -> bool) -> bool {
        let now = now_ms();
        let mut changed = false;
        self.values.rcu(|old| {
            let mut m = FxHashMap::clone(old);
            m.retain(|_, e| e.expires_ms > now);
            changed = f(&mut m);
            m
        });
        changed
    }

    pub async fn set(&self, key: &str, value: &str, ttl_ms: u64) {
        let e = Entry {
            value: value.into(),
            expires_ms: expiry(ttl_ms),
        };
        self.write(|m| {
            m.insert(key.to_string(), e.clone());
            true
        });
    }

    pub async fn set_nx(&self, key: &str, value: &str, ttl_ms: u64) -> bool {
        let e = Entry {
            value: value.into(),
            expires_ms: expiry(ttl_ms),
        };
        self.write(|m| {
            if m.contains_key(key) {
                return false;
            }
            m.insert(key.to_string(), e.clone());
            true
        })
    }

    pub async fn del(&self, keys: &[String]) {
        if keys.iter().any(|k| self.values.load().contains_key(k)) {
            self.write(|m| {
                keys.iter().for_each(|k| {
                    m.remove(k);
                });
                true
            });
        }
        let counters = self.counters.load();
        for k in keys {
            if let Some(c) = counters.get(k) {
                c.expires_ms.store(0, Ordering::Relaxed);
            }
        }
    }

    pub async fn incr(&self, key: &str, by: i64, ttl_ms: u64) -> i64 {
        let now = now_ms();
        let counter = match self.counters.load().get(key) {
            Some(c) => c.clone(),
            None => {
                let fresh = Arc::new(Counter {
                    value: AtomicI64::new(0),
                    expires_ms: AtomicI64::new(expiry(ttl_ms)),
                });
                self.counters.rcu(|old| {
                    let mut m = FxHashMap::clone(old);
                    m.retain(|_, c| c.expires_ms.load(Ordering::Relaxed) > now);
                    m.entry(key.to_string()).or_insert_with(|| fresh.clone());
                    m
                });
                self.counters.load().get(key).cloned().unwrap_or(fresh)
            }
        };
        // An expired window restarts (racing restarters agree via the swap).
        let exp = counter.expires_ms.load(Ordering::Relaxed);
        if exp <= now
            && counter
                .expires_ms
                .compare_exchange(exp, expiry(ttl_ms), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            counter.value.store(0, Ordering::Release);
        }
        counter.value.fetch_add(by, Ordering::AcqRel) + by
    }

    pub async fn decr_floor(&self, key: &str) {
        if let Some(c) = self.counters.load().get(key) {
            let _ = c
                .value
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                    (v > 0).then_some(v - 1)
                });
        }
    }

    pub async fn scan(&self, prefix: &str) -> Vec<(String, String)> {
        let now = now_ms();
        self.values
            .load()
            .iter()
            .filter(|(k, e)| k.starts_with(prefix) && e.expires_ms > now)
            .map(|(k, e)| (k.clone(), e.value.to_string()))
            .collect()
    }

    /// Same semantics as the Redis script: check concurrency, then requests,
    /// then tokens, undoing earlier counts when a later one refuses.
    pub async fn admit(&self, a: &super::Admission) -> super::Admitted {
        let now = now_ms();
        let [rpm, tpm, cc] = super::admission_keys(a, now);
        let window = super::window_left_ms(now);
        if let Some(max) = a.max_concurrent {
            if self.incr(&cc, 1, super::CONCURRENCY_TTL_MS).await > super::count(max) {
                self.incr(&cc, -1, super::CONCURRENCY_TTL_MS).await;
                return super::Admitted::No {
                    limit: "max_concurrent_requests",
                    retry_after_ms: 1000,
                };
            }
        }
        let undo_cc = || async {
            if a.max_concurrent.is_some() {
                self.incr(&cc, -1, super::CONCURRENCY_TTL_MS).await;
            }
        };
        if let Some(max) = a.requests_per_minute {
            if self.incr(&rpm, 1, 61_000).await > super::count(max) {
                self.incr(&rpm, -1, 61_000).await;
                undo_cc().await;
                return super::Admitted::No {
                    limit: "requests_per_minute",
                    retry_after_ms: window,
                };
            }
        }
        if let Some(max) = a.tokens_per_minute {
            let by = super::count(a.token_estimate);
            if self.incr(&tpm, by, 61_000).await > super::count(max) {
                self.incr(&tpm, -by, 61_000).await;
                if a.requests_per_minute.is_some() {
                    self.incr(&rpm, -1, 61_000).await;
                }
                undo_cc().await;
                return super::Admitted::No {
                    limit: "tokens_per_minute",
                    retry_after_ms: window,
                };
            }
        }
        super::Admitted::Yes
    }

    pub async fn budget_reserve(
        &self,
        subject: &str,
        remaining: i64,
        estimate: i64,
        read_at_ms: i64,
    ) -> super::BudgetReserved {
        let now_s = now_ms().div_euclid(1000);
        let slots = super::budget_slots(now_s, read_at_ms.div_euclid(1000));
        let mut books = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        let book = books.entry(subject.to_string()).or_default();
        book.settled
            .retain(|(s, _)| *s > now_s - super::BUDGET_SETTLED_WINDOW_S);
        let pending: i64 = book
            .settled
            .iter()
            .filter(|(s, _)| slots.contains(s))
            .map(|(_, a)| *a)
            .fold(0, i64::saturating_add);
        let held = book.reserved.max(0).saturating_add(pending);
        let left = remaining.saturating_sub(held);
        if left <= 0 {
            return super::BudgetReserved::No { held };
        }
        let take = estimate.clamp(0, left);
        book.reserved = book.reserved.saturating_add(take);
        super::BudgetReserved::Yes(take)
    }

    pub async fn budget_settle(&self, subject: &str, reserved: i64, actual: i64) {
        let now_s = now_ms().div_euclid(1000);
        let mut books = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        let book = books.entry(subject.to_string()).or_default();
        book.reserved = book.reserved.saturating_sub(reserved).max(0);
        book.settled
            .retain(|(s, _)| *s > now_s - super::BUDGET_SETTLED_WINDOW_S);
        if actual > 0 {
            match book.settled.last_mut() {
                Some((s, a)) if *s == now_s => *a = a.saturating_add(actual),
                _ => book.settled.push((now_s, actual)),
            }
        }
        if book.reserved == 0 && book.settled.is_empty() {
            books.remove(subject);
        }
    }

    pub async fn health(&self) -> StateHealth {
        StateHealth {
            backend: "memory",
            status: "ok",
            detail: None,
        }
    }
}
