//! Redis state, shared by every replica. Every call has a short deadline;
//! when Redis is unreachable relay keeps serving on in-process state, logs
//! that once, reports it on `/healthz`, and goes back to Redis as soon as a
//! call succeeds again (tried at most once a second while down).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::{MemoryState, StateError, StateHealth};
use crate::store::{now_ms, redact_url};

/// KEYS: rpm, tpm, concurrency counters, then any keys to read. ARGV: rpm
/// limit, tpm limit, concurrency limit (0 = none), token estimate, window
/// TTL, concurrency TTL. Counts in order and undoes earlier counts when a
/// later limit refuses; returns {status, values of the keys to read}.
static ADMIT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local function take(key, by, limit, ttl)
  local v = redis.call('INCRBY', key, by)
  if v == by then redis.call('PEXPIRE', key, ttl) end
  if v > limit then redis.call('DECRBY', key, by); return false end
  return true
end
local rpm, tpm, cc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local est, wttl, cttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local function admit()
if cc > 0 then
  if not take(KEYS[3], 1, cc, cttl) then return 'concurrency' end
  -- Long-lived load keeps the slot counter alive.
  redis.call('PEXPIRE', KEYS[3], cttl)
end
if rpm > 0 and not take(KEYS[1], 1, rpm, wttl) then
  if cc > 0 then redis.call('DECRBY', KEYS[3], 1) end
  return 'requests'
end
if tpm > 0 and not take(KEYS[2], est, tpm, wttl) then
  if rpm > 0 then redis.call('DECRBY', KEYS[1], 1) end
  if cc > 0 then redis.call('DECRBY', KEYS[3], 1) end
  return 'tokens'
end
return 'ok'
end
local status = admit()
-- KEYS[4..]: values to read in the same round trip (breaker records).
if #KEYS > 3 then
  return {status, redis.call('MGET', unpack(KEYS, 4))}
end
return {status, {}}
",
    )
});

/// INCRBY with an expiry set when the counter is created (works on every
/// Redis version, unlike `PEXPIRE … NX`).
static INCR: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
",
    )
});

/// DECR that never goes below zero (a slot given back after its counter
/// expired must not create negative slots).
static DECR_FLOOR: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v > 0 then return redis.call('DECR', KEYS[1]) end
return 0
",
    )
});

/// Budget reservation. KEYS: the reserved counter, then the settled slots
/// to count. ARGV: remaining (nano-USD), estimate, TTL of the reserved
/// counter. Returns {1, taken} or {0, held}.
static BUDGET_RESERVE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local reserved = tonumber(redis.call('GET', KEYS[1]) or '0')
if reserved < 0 then reserved = 0 end
local held = reserved
for i = 2, #KEYS do held = held + tonumber(redis.call('GET', KEYS[i]) or '0') end
local left = tonumber(ARGV[1]) - held
if left <= 0 then return {0, held} end
local take = math.max(0, math.min(tonumber(ARGV[2]), left))
if take > 0 then redis.call('INCRBY', KEYS[1], take) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, take}
",
    )
});

/// Budget settlement. KEYS: the reserved counter, this second's settled
/// slot. ARGV: reserved amount given back, actual cost, slot TTL.
static BUDGET_SETTLE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('DECRBY', KEYS[1], ARGV[1])
if v <= 0 then redis.call('DEL', KEYS[1]) end
if tonumber(ARGV[2]) > 0 then
  redis.call('INCRBY', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 0
",
    )
});

const DEADLINE: Duration = Duration::from_millis(250);
const RETRY_EVERY_MS: i64 = 1000;

pub struct RedisState {
    /// Set once the first connection succeeded (at start, or later when
    /// Redis was down at start); the manager reconnects by itself after.
    conn: OnceLock<ConnectionManager>,
    client: redis::Client,
    target: String,
    fallback: MemoryState,
    down: AtomicBool,
    last_try_ms: AtomicI64,
    /// Why the first connection failed, while it has not succeeded.
    connect_error: std::sync::Mutex<Option<String>>,
}

/// First reconnect after this long when Redis was down at start; doubled
/// after each failure up to `CONNECT_RETRY_MAX`.
const CONNECT_RETRY_FIRST: Duration = Duration::from_millis(500);
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(10);

impl RedisState {
    /// Connects now; when Redis is down relay still starts, on in-process
    /// state, and a background task keeps connecting with backoff.
    pub async fn open(url: &str) -> Result<Arc<RedisState>, StateError> {
        let client = redis::Client::open(url).map_err(|e| StateError::Url(e.to_string()))?;
        let state = Arc::new(RedisState {
            conn: OnceLock::new(),
            client,
            target: redact_url(url),
            fallback: MemoryState::default(),
            down: AtomicBool::new(false),
            last_try_ms: AtomicI64::new(0),
            connect_error: std::sync::Mutex::new(None),
        });
        if let Err(e) = state.try_connect().await {
            tracing::error!(
                error = %e,
                "Redis is unreachable at start; serving on in-process state (breakers and limits are per replica) \
                 and connecting in the background"
            );
            state.down.store(true, Ordering::Relaxed);
            state.set_connect_error(Some(e.to_string()));
            let s = state.clone();
            tokio::spawn(async move {
                let mut wait = CONNECT_RETRY_FIRST;
                loop {
                    tokio::time::sleep(wait).await;
                    match s.try_connect().await {
                        Ok(()) => {
                            s.set_connect_error(None);
                            s.down.store(false, Ordering::Relaxed);
                            tracing::info!(target = %s.target, "Redis is reachable; shared state resumed");
                            return;
                        }
                        Err(e) => s.set_connect_error(Some(e.to_string())),
                    }
                    wait = (wait * 2).min(CONNECT_RETRY_MAX);
                }
            });
        }
        Ok(state)
    }

    fn set_connect_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.connect_error.lock() {
            *g = e;
        }
    }

    async fn try_connect(&self) -> Result<(), StateError> {
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(DEADLINE)
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            Duration::from_secs(3),
            ConnectionManager::new_with_config(self.client.clone(), cfg),
        )
        .await
        .map_err(|_| StateError::Connect {
            target: self.target.clone(),
            err: "timed out".into(),
        })?
        .map_err(|e| StateError::Connect {
            target: self.target.clone(),
            err: e.to_string(),
        })?;
        let _ = self.conn.set(conn);
        Ok(())
    }

    /// Runs `op` against Redis unless it is known down (and not due for a
    /// retry); `None` means "use the fallback".
    async fn try_redis<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn.get()?;
        let now = now_ms();
        if self.down.load(Ordering::Relaxed)
            && now - self.last_try_ms.load(Ordering::Relaxed) < RETRY_EVERY_MS
        {
            return None;
        }
        self.last_try_ms.store(now, Ordering::Relaxed);
        match tokio::time::timeout(DEADLINE, op(conn.clone())).await {
            Ok(Ok(v)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(target = %self.target, "Redis is reachable again; shared state resumed");
                }
                Some(v)
            }
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                None
            }
            Err(_) => {
                self.mark_down("timed out");
                None
            }
        }
    }

    fn mark_down(&self, err: &str) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(
                target = %self.target, error = err,
                "Redis is unreachable; serving on in-process state (breakers and limits are per replica until it returns)"
            );
        }
    }

    pub async fn get_many(&self, keys: &[String]) -> Vec<Option<String>> {
        if keys.is_empty() {
            return Vec::new();
        }
        let owned = keys.to_vec();
        match self
            .try_redis(|mut c| async move { c.mget::<_, Vec<Option<String>>>(owned).await })
            .await
        {
            Some(v) if v.len() == keys.len() => v,
            _ => self.fallback.get_many(keys).await,
        }
    }

    pub async fn set(&self, key: &str, value: &str, ttl_ms: u64) {
        let (k, v) = (key.to_string(), value.to_string());
        let ok = self
            .try_redis(|mut c| async move { c.pset_ex::<_, _, ()>(k, v, ttl_ms.max(1)).await })
            .await;
        if ok.is_none() {
            self.fallback.set(key, value, ttl_ms).await;
        }
    }

    pub async fn set_nx(&self, key: &str, value: &str, ttl_ms: u64) -> bool {
        let (k, v) = (key.to_string(), value.to_string());
        let r = self
            .try_redis(|mut c| async move {
                redis::cmd("SET")
                    .arg(k)
                    .arg(v)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms.max(1))
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await;
        match r {
            Some(v) => v.is_some(),
            None => self.fallback.set_nx(key, value, ttl_ms).await,
        }
    }

    pub async fn del(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let owned = keys.to_vec();
        let _ = self
            .try_redis(|mut c| async move { c.del::<_, ()>(owned).await })
            .await;
        // Clear the fallback too, so a reset during an outage sticks.
        self.fallback.del(keys).await;
    }

    pub async fn incr(&self, key: &str, by: i64, ttl_ms: u64) -> i64 {
        let k = key.to_string();
        let r = self
            .try_redis(|mut c| async move {
                INCR.key(&k)
                    .arg(by)
                    .arg(ttl_ms.max(1))
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        match r {
            Some(v) => v,
            None => self.fallback.incr(key, by, ttl_ms).await,
        }
    }

    pub async fn decr_floor(&self, key: &str) {
        let k = key.to_string();
        let r = self
            .try_redis(|mut c| async move { DECR_FLOOR.key(&k).invoke_async::<i64>(&mut c).await })
            .await;
        if r.is_none() {
            self.fallback.decr_floor(key).await;
        }
    }

    pub async fn scan(&self, prefix: &str) -> Vec<(String, String)> {
        let pattern = format!("{}*", prefix.replace('*', "\\*"));
        let r = self
            .try_redis(|mut c| async move {
                let mut keys: Vec<String> = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let values: Vec<Option<String>> = c.mget(&keys).await?;
                Ok(keys
                    .into_iter()
                    .zip(values)
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect())
            })
            .await;
        match r {
            Some(v) => v,
            None => self.fallback.scan(prefix).await,
        }
    }

    /// All limit checks of one request in one scripted round trip.
    /// All limit checks of one request, plus reading `read`, in one scripted
    /// round trip.
    pub async fn admit_reading(
        &self,
        a: &super::Admission,
        read: &[String],
    ) -> (super::Admitted, Vec<Option<String>>) {
        let now = now_ms();
        let keys = super::admission_keys(a, now);
        let window = super::window_left_ms(now);
        let args = [
            a.requests_per_minute.unwrap_or(0),
            a.tokens_per_minute.unwrap_or(0),
            a.max_concurrent.unwrap_or(0),
            a.token_estimate,
            61_000,
            super::CONCURRENCY_TTL_MS,
        ];
        let extra = read.to_vec();
        let r = self
            .try_redis(|mut c| async move {
                let mut inv = ADMIT.prepare_invoke();
                for k in keys.iter().chain(&extra) {
                    inv.key(k);
                }
                for v in args {
                    inv.arg(v);
                }
                inv.invoke_async::<(String, Vec<Option<String>>)>(&mut c)
                    .await
            })
            .await;
        let admitted = match r.as_ref().map(|(s, _)| s.as_str()) {
            Some("ok") => super::Admitted::Yes,
            Some("concurrency") => super::Admitted::No {
                limit: "max_concurrent_requests",
                retry_after_ms: 1000,
            },
            Some("requests") => super::Admitted::No {
                limit: "requests_per_minute",
                retry_after_ms: window,
            },
            Some("tokens") => super::Admitted::No {
                limit: "tokens_per_minute",
                retry_after_ms: window,
            },
            _ => {
                return (
                    self.fallback.admit(a).await,
                    self.fallback.get_many(read).await,
                )
            }
        };
        let values = r
            .map(|(_, v)| v)
            .filter(|v| v.len() == read.len())
            .unwrap_or_else(|| vec![None; read.len()]);
        (admitted, values)
    }

    pub async fn budget_reserve(
        &self,
        subject: &str,
        remaining: i64,
        estimate: i64,
        read_at_ms: i64,
    ) -> super::BudgetReserved {
        let now_s = now_ms().div_euclid(1000);
        let mut keys = vec![super::budget_reserved_key(subject)];
        keys.extend(
            super::budget_slots(now_s, read_at_ms.div_euclid(1000))
                .map(|s| super::budget_settled_key(subject, s)),
        );
        let r = self
            .try_redis(|mut c| async move {
                let mut inv = BUDGET_RESERVE.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(remaining)
                    .arg(estimate)
                    .arg(super::CONCURRENCY_TTL_MS);
                inv.invoke_async::<(i64, i64)>(&mut c).await
            })
            .await;
        match r {
            Some((1, taken)) => super::BudgetReserved::Yes(taken),
            Some((_, held)) => super::BudgetReserved::No { held },
            None => {
                self.fallback
                    .budget_reserve(subject, remaining, estimate, read_at_ms)
                    .await
            }
        }
    }

    pub async fn budget_settle(&self, subject: &str, reserved: i64, actual: i64) {
        let now_s = now_ms().div_euclid(1000);
        let keys = [
            super::budget_reserved_key(subject),
            super::budget_settled_key(subject, now_s),
        ];
        let ttl = super::BUDGET_SETTLED_WINDOW_S * 1000 + 1000;
        let r = self
            .try_redis(|mut c| async move {
                BUDGET_SETTLE
                    .key(&keys[0])
                    .key(&keys[1])
                    .arg(reserved)
                    .arg(actual)
                    .arg(ttl)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        if r.is_none() {
            self.fallback.budget_settle(subject, reserved, actual).await;
        }
    }

    pub async fn health(&self) -> StateHealth {
        let ok = self
            .try_redis(
                |mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await },
            )
            .await;
        match ok {
            Some(_) => StateHealth {
                backend: "redis",
                status: "ok",
                detail: None,
            },
            None => {
                let cause = self
                    .connect_error
                    .lock()
                    .ok()
                    .and_then(|g| g.clone())
                    .map_or_else(String::new, |e| format!(" ({e})"));
                StateHealth {
                    backend: "redis",
                    status: "degraded",
                    detail: Some(format!(
                        "Redis at {} is unreachable{cause}; serving on in-process state",
                        self.target
                    )),
                }
            }
        }
    }
}
