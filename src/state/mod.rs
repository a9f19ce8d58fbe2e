//! The shared state backend: a small key-value store with expiry, in
//! process (embedded default) or in Redis (`RELAY_STATE_URL`), so that every
//! replica sees the same breakers and counters. Breaker logic lives in
//! `upstream::breaker`; this module only stores.

mod memory;
mod redis;

use std::sync::Arc;

pub use memory::MemoryState;
pub use redis::RedisState;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("RELAY_STATE_URL must be redis://… or rediss://…: {0}")]
    Url(String),
    #[error("cannot reach Redis at {target}: {err}")]
    Connect { target: String, err: String },
}

/// Where shared state lives. Cheap to clone.
#[derive(Clone)]
pub enum StateBackend {
    Memory(Arc<MemoryState>),
    Redis(Arc<RedisState>),
}

/// What `/healthz` and `relay breakers` report about the backend.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct StateHealth {
    pub backend: &'static str,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

macro_rules! dispatch {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            StateBackend::Memory($s) => $e,
            StateBackend::Redis($s) => $e,
        }
    };
}

impl StateBackend {
    /// In-process state, or Redis when `url` is set.
    pub async fn open(url: Option<&str>) -> Result<StateBackend, StateError> {
        match url {
            None => Ok(StateBackend::Memory(Arc::new(MemoryState::default()))),
            Some(u) => Ok(StateBackend::Redis(RedisState::open(u).await?)),
        }
    }

    pub fn memory() -> StateBackend {
        StateBackend::Memory(Arc::new(MemoryState::default()))
    }

    pub fn name(&self) -> &'static str {
        match self {
            StateBackend::Memory(_) => "memory",
            StateBackend::Redis(_) => "redis",
        }
    }

    /// Values of `keys`, in order (`None` for missing or expired).
    pub async fn get_many(&self, keys: &[String]) -> Vec<Option<String>> {
        dispatch!(self, s => s.get_many(keys).await)
    }

    pub async fn set(&self, key: &str, value: &str, ttl_ms: u64) {
        dispatch!(self, s => s.set(key, value, ttl_ms).await)
    }

    /// Sets `key` only if absent; whether it was set.
    pub async fn set_nx(&self, key: &str, value: &str, ttl_ms: u64) -> bool {
        dispatch!(self, s => s.set_nx(key, value, ttl_ms).await)
    }

    pub async fn del(&self, keys: &[String]) {
        dispatch!(self, s => s.del(keys).await)
    }

    /// Adds `by` to a counter (created with `ttl_ms` when absent); the new value.
    pub async fn incr(&self, key: &str, by: i64, ttl_ms: u64) -> i64 {
        dispatch!(self, s => s.incr(key, by, ttl_ms).await)
    }

    /// Every live key starting with `prefix`, with its value.
    pub async fn scan(&self, prefix: &str) -> Vec<(String, String)> {
        dispatch!(self, s => s.scan(prefix).await)
    }

    pub async fn health(&self) -> StateHealth {
        dispatch!(self, s => s.health().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract both backends meet; run against the real Redis in
    /// `tests/it/state.rs`.
    pub async fn contract(s: &StateBackend, ns: &str) {
        let k = |n: &str| format!("{ns}:{n}");
        assert_eq!(s.get_many(&[k("a"), k("b")]).await, vec![None, None]);
        s.set(&k("a"), "1", 10_000).await;
        assert_eq!(
            s.get_many(&[k("a"), k("b")]).await,
            vec![Some("1".into()), None]
        );
        assert!(s.set_nx(&k("b"), "x", 10_000).await);
        assert!(!s.set_nx(&k("b"), "y", 10_000).await);
        assert_eq!(s.get_many(&[k("b")]).await, vec![Some("x".into())]);
        let mut found = s.scan(&format!("{ns}:")).await;
        found.sort();
        assert_eq!(found, vec![(k("a"), "1".into()), (k("b"), "x".into())]);
        s.del(&[k("a")]).await;
        assert_eq!(s.get_many(&[k("a")]).await, vec![None]);
        assert_eq!(s.incr(&k("c"), 1, 10_000).await, 1);
        assert_eq!(s.incr(&k("c"), 2, 10_000).await, 3);
        assert_eq!(
            s.get_many(&[k("c")]).await,
            vec![Some("3".into())],
            "counters read back"
        );
        s.del(&[k("c")]).await;
        assert_eq!(s.get_many(&[k("c")]).await, vec![None], "counters delete");
        assert_eq!(s.incr(&k("c"), 1, 10_000).await, 1);
        s.set(&k("short"), "v", 30).await;
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        assert_eq!(s.get_many(&[k("short")]).await, vec![None], "expired");
        assert_eq!(s.incr(&k("shortc"), 5, 30).await, 5);
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        assert_eq!(s.incr(&k("shortc"), 1, 30).await, 1, "counters expire too");
        s.del(&[k("b"), k("c"), k("shortc")]).await;
    }

    pub async fn admission_contract(s: &StateBackend, subject: &str) {
        let now = crate::store::now_ms();
        // Far from a minute boundary, so all counts land in one window.
        if super::window_left_ms(now) < 2_000 {
            tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
        }
        let a = Admission {
            subject: subject.to_string(),
            requests_per_minute: Some(3),
            tokens_per_minute: Some(100),
            token_estimate: 40,
            max_concurrent: Some(1),
        };
        let t0 = crate::store::now_ms();
        assert_eq!(s.admit(&a).await, Admitted::Yes);
        match s.admit(&a).await {
            Admitted::No { limit, .. } => assert_eq!(limit, "max_concurrent_requests"),
            other => panic!("{other:?}"),
        }
        // Settles 40 reserved tokens down to 10 actually used.
        s.release(&a, Some(10), t0).await;
        assert_eq!(
            s.admit(&a).await,
            Admitted::Yes,
            "slot given back; tokens 10+40 = 50"
        );
        s.release(&a, None, t0).await;
        assert_eq!(s.admit(&a).await, Admitted::Yes, "tokens 90");
        s.release(&a, None, t0).await;
        match s.admit(&a).await {
            Admitted::No {
                limit,
                retry_after_ms,
            } => {
                assert_eq!(limit, "requests_per_minute");
                assert!(retry_after_ms <= 60_000);
            }
            other => panic!("{other:?}"),
        }
        // Slots given back that were never held (the counter expired) do
        // not turn into extra slots.
        let c = Admission {
            subject: format!("{subject}-c"),
            requests_per_minute: None,
            tokens_per_minute: None,
            token_estimate: 0,
            max_concurrent: Some(1),
        };
        s.release(&c, None, t0).await;
        s.release(&c, None, t0).await;
        assert_eq!(s.admit(&c).await, Admitted::Yes);
        assert!(matches!(
            s.admit(&c).await,
            Admitted::No {
                limit: "max_concurrent_requests",
                ..
            }
        ));
        let tokens = Admission {
            subject: format!("{subject}-t"),
            requests_per_minute: None,
            max_concurrent: None,
            ..a
        };
        assert_eq!(s.admit(&tokens).await, Admitted::Yes);
        assert_eq!(s.admit(&tokens).await, Admitted::Yes);
        match s.admit(&tokens).await {
            Admitted::No { limit, .. } => assert_eq!(limit, "tokens_per_minute", "120 > 100"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn memory_backend_meets_the_contract() {
        contract(&StateBackend::memory(), "t").await;
        admission_contract(&StateBackend::memory(), "key_a").await;
    }

    /// Against the real Redis: fails loudly when it is not running
    /// (`ci/services.sh` starts it).
    #[tokio::test]
    async fn redis_backend_meets_the_contract() {
        let url = std::env::var("RELAY_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let s = StateBackend::open(Some(&url)).await.unwrap_or_else(|e| {
            panic!("this test needs Redis at {url} (ci/services.sh starts it): {e}")
        });
        assert_eq!(s.health().await.status, "ok");
        contract(
            &s,
            &format!("relaytest:{}:{}", std::process::id(), now_ms_for_tests()),
        )
        .await;
    }

    fn now_ms_for_tests() -> i64 {
        crate::store::now_ms()
    }
}

/// One request's admission against its key's limits. Counters are per
/// relay key; a limit of `None` is not checked.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Counter namespace, e.g. the relay key id.
    pub subject: String,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    /// Tokens reserved for this request before it runs.
    pub token_estimate: u64,
    pub max_concurrent: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    Yes,
    /// Over `limit` (`requests_per_minute`, `tokens_per_minute` or
    /// `max_concurrent_requests`); retry after this long.
    No {
        limit: &'static str,
        retry_after_ms: u64,
    },
}

/// Counter keys of an admission (the minute window is part of the name, so
/// old windows simply expire).
pub(crate) fn admission_keys(a: &Admission, now_ms: i64) -> [String; 3] {
    let window = now_ms.div_euclid(60_000);
    [
        format!("limit:{}:rpm:{window}", a.subject),
        format!("limit:{}:tpm:{window}", a.subject),
        format!("limit:{}:concurrent", a.subject),
    ]
}

/// A count as the counters' `i64`, saturating.
pub(crate) fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Milliseconds until the current minute window ends.
pub(crate) fn window_left_ms(now_ms: i64) -> u64 {
    (60_000 - now_ms.rem_euclid(60_000)) as u64
}

/// Safety expiry of a concurrency counter, should a process die mid-request.
pub(crate) const CONCURRENCY_TTL_MS: u64 = 15 * 60_000;

impl StateBackend {
    /// Checks and counts one request in a single step (one Redis round trip).
    pub async fn admit(&self, a: &Admission) -> Admitted {
        self.admit_reading(a, &[]).await.0
    }

    /// Admission plus reading `read` (the request's breaker records), still
    /// one round trip with Redis.
    pub async fn admit_reading(
        &self,
        a: &Admission,
        read: &[String],
    ) -> (Admitted, Vec<Option<String>>) {
        match self {
            StateBackend::Memory(s) => (s.admit(a).await, s.get_many(read).await),
            StateBackend::Redis(s) => s.admit_reading(a, read).await,
        }
    }

    /// Gives back a concurrency slot and settles the token reservation with
    /// the actual count.
    pub async fn release(&self, a: &Admission, actual_tokens: Option<u64>, admitted_at_ms: i64) {
        let keys = admission_keys(a, admitted_at_ms);
        if a.max_concurrent.is_some() {
            dispatch!(self, s => s.decr_floor(&keys[2]).await);
        }
        if let (Some(_), Some(actual)) = (a.tokens_per_minute, actual_tokens) {
            let delta = count(actual).saturating_sub(count(a.token_estimate));
            if delta != 0 {
                self.incr(&keys[1], delta, 61_000).await;
            }
        }
    }
}

/// Budget reservations (amounts in nano-USD): what running calls reserved
/// and what settled calls cost in the last seconds, before the usage
/// records that carry it are read back into the budget's spend table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetReserved {
    /// Reserved this much (the estimate, or what was left when less).
    Yes(i64),
    /// Nothing left once `held` (reserved by running calls plus settled
    /// but not yet read back) is counted.
    No { held: i64 },
}

/// How long a settled call's cost is counted on top of the spend read from
/// the usage records (longer than a refresh plus a usage write).
pub const BUDGET_SETTLED_WINDOW_S: i64 = 10;

pub(crate) fn budget_reserved_key(subject: &str) -> String {
    format!("budget:{subject}:reserved")
}

pub(crate) fn budget_settled_key(subject: &str, sec: i64) -> String {
    format!("budget:{subject}:settled:{sec}")
}

/// The settled slots (seconds) still counted at `now_s` for a spend table
/// read at `read_at_s`: records settled a second or more before the read
/// are in it.
pub(crate) fn budget_slots(now_s: i64, read_at_s: i64) -> std::ops::RangeInclusive<i64> {
    let from = (now_s - BUDGET_SETTLED_WINDOW_S + 1).max(read_at_s - 1);
    from.min(now_s + 1)..=now_s
}

impl StateBackend {
    /// Reserves up to `estimate` of `remaining` (the budget minus the spend
    /// read at `read_at_ms`) for `subject`, atomically across replicas;
    /// refuses when nothing is left.
    pub async fn budget_reserve(
        &self,
        subject: &str,
        remaining: i64,
        estimate: i64,
        read_at_ms: i64,
    ) -> BudgetReserved {
        dispatch!(self, s => s.budget_reserve(subject, remaining, estimate, read_at_ms).await)
    }

    /// Gives back `reserved` and counts `actual` as settled spend.
    pub async fn budget_settle(&self, subject: &str, reserved: i64, actual: i64) {
        dispatch!(self, s => s.budget_settle(subject, reserved, actual).await)
    }
}

#[cfg(test)]
pub(crate) mod budget_tests {
    use super::*;

    /// The contract both backends meet (Redis in `tests/it/state.rs`-style
    /// unit test below).
    pub async fn budget_contract(s: &StateBackend, subject: &str) {
        let read_at = crate::store::now_ms() - 60_000;
        assert_eq!(
            s.budget_reserve(subject, 100, 40, read_at).await,
            BudgetReserved::Yes(40)
        );
        assert_eq!(
            s.budget_reserve(subject, 100, 40, read_at).await,
            BudgetReserved::Yes(40)
        );
        assert_eq!(
            s.budget_reserve(subject, 100, 40, read_at).await,
            BudgetReserved::Yes(20),
            "what is left"
        );
        assert_eq!(
            s.budget_reserve(subject, 100, 40, read_at).await,
            BudgetReserved::No { held: 100 }
        );
        // One call settles at 10: 30 comes back, 10 stays counted as spend
        // the table has not read yet.
        s.budget_settle(subject, 40, 10).await;
        assert_eq!(
            s.budget_reserve(subject, 100, 50, read_at).await,
            BudgetReserved::Yes(30)
        );
        // A table read after the settle already has it.
        let later = crate::store::now_ms() + 2_000;
        assert_eq!(
            s.budget_reserve(subject, 100, 50, later).await,
            BudgetReserved::Yes(10)
        );
        for r in [40, 20, 30, 10] {
            s.budget_settle(subject, r, 0).await;
        }
        assert_eq!(
            s.budget_reserve(subject, 5, 50, later).await,
            BudgetReserved::Yes(5)
        );
        s.budget_settle(subject, 5, 0).await;
        // Giving back more than is held never creates room.
        s.budget_settle(subject, 1_000, 0).await;
        assert_eq!(
            s.budget_reserve(subject, 10, 50, later).await,
            BudgetReserved::Yes(10)
        );
        s.budget_settle(subject, 10, 0).await;
    }

    #[tokio::test]
    async fn memory_backend_meets_the_budget_contract() {
        budget_contract(&StateBackend::memory(), "key_b").await;
    }

    #[tokio::test]
    async fn redis_backend_meets_the_budget_contract() {
        let url = std::env::var("RELAY_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let s = StateBackend::open(Some(&url)).await.unwrap_or_else(|e| {
            panic!("this test needs Redis at {url} (ci/services.sh starts it): {e}")
        });
        let subject = format!(
            "relaytest-budget-{}-{}",
            std::process::id(),
            crate::store::now_ms()
        );
        budget_contract(&s, &subject).await;
    }
}
