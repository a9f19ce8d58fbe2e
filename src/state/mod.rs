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
            Some(u) => Ok(StateBackend::Redis(Arc::new(RedisState::connect(u).await?))),
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
        s.set(&k("short"), "v", 30).await;
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        assert_eq!(s.get_many(&[k("short")]).await, vec![None], "expired");
        assert_eq!(s.incr(&k("shortc"), 5, 30).await, 5);
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        assert_eq!(s.incr(&k("shortc"), 1, 30).await, 1, "counters expire too");
        s.del(&[k("b"), k("c"), k("shortc")]).await;
    }

    #[tokio::test]
    async fn memory_backend_meets_the_contract() {
        contract(&StateBackend::memory(), "t").await;
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
