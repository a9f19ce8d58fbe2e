//! Per-key circuit breakers. Each host key has one, stored in the state
//! backend under `secret_health:<sha256 of the host's name and the key's
//! value>` — never the value — so every replica shares it, the same value
//! used by two hosts has two independent breakers, and a rotated key (new
//! value, new hash) starts clean while the old record simply expires.
//!
//! States: closed (no record, or server errors below the threshold) → open
//! (a key-fault failure, or the threshold reached; skipped until the
//! cooldown passes) → half-open (cooldown passed: one request probes the key;
//! success deletes the record, failure reopens it with a longer cooldown for
//! auth failures). A record's TTL is twice its cooldown: the second half is
//! the half-open memory, after which it is gone — healing needs no sweeper.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::classify::{Failure, FailureClass};
use crate::config::snapshot::BreakerSettings;
use crate::state::StateBackend;

pub const PREFIX: &str = "secret_health:";
const PROBE_PREFIX: &str = "secret_probe:";
/// How long one half-open probe owns the key.
const PROBE_TTL_MS: u64 = 30_000;
/// How long consecutive server errors are remembered below the threshold.
const SERVER_ERROR_WINDOW_MS: u64 = 60_000;
/// Upper bound of any cooldown, whatever an upstream asks for.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 3600);
const MIN_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerRecord {
    pub class: FailureClass,
    /// Unix ms until which the key is skipped; 0 while only counting.
    pub open_until_ms: i64,
    /// Consecutive failures.
    pub failures: u32,
    /// How often it opened while remembered (auth cooldowns double).
    pub trips: u32,
    pub updated_ms: i64,
    /// Host and key names, for listing and reset (never the value).
    pub host: String,
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Closed,
    Open { until_ms: i64 },
    HalfOpen,
}

impl BreakerRecord {
    pub fn health(&self, now_ms: i64) -> Health {
        if self.open_until_ms == 0 {
            Health::Closed
        } else if self.open_until_ms > now_ms {
            Health::Open {
                until_ms: self.open_until_ms,
            }
        } else {
            Health::HalfOpen
        }
    }
}

/// The record after a failure and its TTL; `None` when the failure does not
/// count against the key (a client error).
pub fn after_failure(
    prev: Option<&BreakerRecord>,
    failure: &Failure,
    settings: &BreakerSettings,
    names: (&str, &str),
    now_ms: i64,
) -> Option<(BreakerRecord, u64)> {
    let (host, key) = names;
    let trips = prev.map_or(0, |p| p.trips);
    let open = |class: FailureClass, cooldown: Duration, failures: u32| {
        let cooldown = cooldown.min(MAX_COOLDOWN);
        let ms = cooldown.as_millis() as i64;
        let rec = BreakerRecord {
            class,
            open_until_ms: now_ms + ms,
            failures,
            trips: trips + 1,
            updated_ms: now_ms,
            host: host.to_string(),
            key: key.to_string(),
        };
        (rec, (2 * ms).max(1) as u64)
    };
    match failure.class {
        FailureClass::ClientError => None,
        FailureClass::Auth => {
            // A bad key stays bad until rotated: back off harder each time.
            let grown = settings.auth_cooldown.saturating_mul(1u32 << trips.min(10));
            Some(open(FailureClass::Auth, grown, 1))
        }
        FailureClass::Quota => Some(open(FailureClass::Quota, settings.quota_cooldown, 1)),
        FailureClass::RateLimit => {
            let base = failure
                .retry_after
                .map(|d| d.clamp(MIN_RATE_LIMIT_COOLDOWN, MAX_COOLDOWN))
                .unwrap_or(settings.rate_limit_cooldown);
            // A little jitter so replicas do not all retry at the same instant.
            let jitter = rand::thread_rng().gen_range(0..=base.as_millis() as u64 / 20);
            Some(open(
                FailureClass::RateLimit,
                base + Duration::from_millis(jitter),
                1,
            ))
        }
        FailureClass::ServerError => {
            let failures = match prev {
                Some(p) if p.health(now_ms) == Health::Closed => p.failures + 1,
                _ => 1,
            };
            // A half-open probe that fails reopens at once.
            let probing = prev.is_some_and(|p| p.health(now_ms) == Health::HalfOpen);
            if failures >= settings.server_error_threshold || probing {
                Some(open(
                    FailureClass::ServerError,
                    settings.server_error_cooldown,
                    failures,
                ))
            } else {
                let rec = BreakerRecord {
                    class: FailureClass::ServerError,
                    open_until_ms: 0,
                    failures,
                    trips,
                    updated_ms: now_ms,
                    host: host.to_string(),
                    key: key.to_string(),
                };
                Some((rec, SERVER_ERROR_WINDOW_MS))
            }
        }
    }
}

fn parse(values: Vec<Option<String>>) -> Vec<Option<BreakerRecord>> {
    values
        .into_iter()
        .map(|v| v.and_then(|s| serde_json::from_str(&s).ok()))
        .collect()
}

/// Breakers over a state backend.
#[derive(Clone)]
pub struct Breakers {
    state: StateBackend,
}

impl Breakers {
    pub fn new(state: StateBackend) -> Breakers {
        Breakers { state }
    }

    pub fn state(&self) -> &StateBackend {
        &self.state
    }

    fn key(fingerprint: &str) -> String {
        format!("{PREFIX}{fingerprint}")
    }

    /// Records for a pool of keys, in one round trip.
    pub async fn records(&self, fingerprints: &[&str]) -> Vec<Option<BreakerRecord>> {
        let keys: Vec<String> = fingerprints.iter().map(|f| Self::key(f)).collect();
        parse(self.state.get_many(&keys).await)
    }

    /// Records for a pool of keys and a policy admission, together in one
    /// round trip.
    pub async fn records_admitting(
        &self,
        fingerprints: &[&str],
        admission: &crate::state::Admission,
    ) -> (crate::state::Admitted, Vec<Option<BreakerRecord>>) {
        let keys: Vec<String> = fingerprints.iter().map(|f| Self::key(f)).collect();
        let (admitted, values) = self.state.admit_reading(admission, &keys).await;
        (admitted, parse(values))
    }

    /// Claims the single half-open probe of a key; false if another request
    /// (on any replica) already has it.
    pub async fn claim_probe(&self, fingerprint: &str) -> bool {
        self.state
            .set_nx(&format!("{PROBE_PREFIX}{fingerprint}"), "1", PROBE_TTL_MS)
            .await
    }

    /// Records a failure against the key's current record (re-read now: the
    /// one the request planned with may be stale, e.g. another request has
    /// opened the breaker meanwhile). An open breaker is never shortened.
    pub async fn record_failure(
        &self,
        fingerprint: &str,
        failure: &Failure,
        settings: &BreakerSettings,
        names: (&str, &str),
    ) -> Option<BreakerRecord> {
        let now = crate::store::now_ms();
        let current = self.records(&[fingerprint]).await.pop().flatten();
        let (rec, ttl) = after_failure(current.as_ref(), failure, settings, names, now)?;
        if let Some(cur) =
            current.filter(|c| c.open_until_ms > now && c.open_until_ms >= rec.open_until_ms)
        {
            return Some(cur);
        }
        if let Ok(json) = serde_json::to_string(&rec) {
            self.state.set(&Self::key(fingerprint), &json, ttl).await;
        }
        self.state
            .del(&[format!("{PROBE_PREFIX}{fingerprint}")])
            .await;
        Some(rec)
    }

    /// A success closes the breaker (only touches the backend if there was
    /// a record).
    pub async fn record_success(&self, fingerprint: &str, had_record: bool) {
        if had_record {
            self.state
                .del(&[
                    Self::key(fingerprint),
                    format!("{PROBE_PREFIX}{fingerprint}"),
                ])
                .await;
        }
    }

    /// Every live record: (fingerprint, record).
    pub async fn list(&self) -> Vec<(String, BreakerRecord)> {
        let mut out: Vec<(String, BreakerRecord)> = self
            .state
            .scan(PREFIX)
            .await
            .into_iter()
            .filter_map(|(k, v)| {
                Some((
                    k.strip_prefix(PREFIX)?.to_string(),
                    serde_json::from_str(&v).ok()?,
                ))
            })
            .collect();
        out.sort_by(|a, b| (&a.1.host, &a.1.key).cmp(&(&b.1.host, &b.1.key)));
        out
    }

    /// Deletes every record (of one host, when given); how many.
    pub async fn reset(&self, host: Option<&str>) -> usize {
        let doomed: Vec<String> = self
            .list()
            .await
            .into_iter()
            .filter(|(_, r)| host.is_none_or(|h| r.host == h))
            .flat_map(|(fp, _)| [Self::key(&fp), format!("{PROBE_PREFIX}{fp}")])
            .collect();
        self.state.del(&doomed).await;
        doomed.len() / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(class: FailureClass, retry_after: Option<Duration>) -> Failure {
        Failure { class, retry_after }
    }

    const N: (&str, &str) = ("h", "k");

    #[test]
    fn key_faults_open_at_once_with_their_class_cooldown() {
        let s = BreakerSettings::default();
        let (r, ttl) = after_failure(None, &fail(FailureClass::Auth, None), &s, N, 1000).unwrap();
        assert_eq!(
            r.health(1000),
            Health::Open {
                until_ms: 1000 + 300_000
            }
        );
        assert_eq!(ttl, 600_000, "TTL is twice the cooldown");
        let (q, _) = after_failure(None, &fail(FailureClass::Quota, None), &s, N, 0).unwrap();
        assert_eq!(q.open_until_ms, 3_600_000);
        assert!(after_failure(None, &fail(FailureClass::ClientError, None), &s, N, 0).is_none());
    }

    #[test]
    fn rate_limits_honour_the_hint_clamped() {
        let s = BreakerSettings::default();
        let (r, _) = after_failure(
            None,
            &fail(FailureClass::RateLimit, Some(Duration::from_secs(7))),
            &s,
            N,
            0,
        )
        .unwrap();
        assert!(
            (7000..=7350).contains(&r.open_until_ms),
            "{}",
            r.open_until_ms
        );
        let (r, _) = after_failure(
            None,
            &fail(FailureClass::RateLimit, Some(Duration::ZERO)),
            &s,
            N,
            0,
        )
        .unwrap();
        assert!(r.open_until_ms >= 1000, "at least 1 s");
        let (r, _) = after_failure(None, &fail(FailureClass::RateLimit, None), &s, N, 0).unwrap();
        assert!(
            (60_000..=63_000).contains(&r.open_until_ms),
            "the host's default"
        );
    }

    #[test]
    fn server_errors_open_after_the_threshold_and_probes_reopen() {
        let s = BreakerSettings::default(); // threshold 3
        let e = fail(FailureClass::ServerError, None);
        let (r1, _) = after_failure(None, &e, &s, N, 0).unwrap();
        assert_eq!(r1.health(0), Health::Closed);
        let (r2, _) = after_failure(Some(&r1), &e, &s, N, 1).unwrap();
        assert_eq!((r2.failures, r2.health(1)), (2, Health::Closed));
        let (r3, _) = after_failure(Some(&r2), &e, &s, N, 2).unwrap();
        assert_eq!(r3.health(2), Health::Open { until_ms: 10_002 });
        assert_eq!(r3.health(10_003), Health::HalfOpen);
        let (r4, _) = after_failure(Some(&r3), &e, &s, N, 10_003).unwrap();
        assert!(
            matches!(r4.health(10_004), Health::Open { .. }),
            "a failed probe reopens at once"
        );
    }

    #[test]
    fn repeated_auth_failures_back_off_exponentially() {
        let s = BreakerSettings::default();
        let a = fail(FailureClass::Auth, None);
        let (r1, _) = after_failure(None, &a, &s, N, 0).unwrap();
        let half_open = r1.open_until_ms + 1;
        let (r2, _) = after_failure(Some(&r1), &a, &s, N, half_open).unwrap();
        assert_eq!(r2.open_until_ms - half_open, 600_000);
        let (r3, _) = after_failure(Some(&r2), &a, &s, N, r2.open_until_ms + 1).unwrap();
        assert_eq!(r3.open_until_ms - (r2.open_until_ms + 1), 1_200_000);
        let huge = BreakerRecord { trips: 30, ..r3 };
        let (r, _) = after_failure(Some(&huge), &a, &s, N, 0).unwrap();
        assert!(r.open_until_ms as u128 <= MAX_COOLDOWN.as_millis());
    }

    #[tokio::test]
    async fn records_live_in_the_backend_under_the_value_hash() {
        let b = Breakers::new(StateBackend::memory());
        let s = BreakerSettings::default();
        let fp = "ab12";
        assert_eq!(b.records(&[fp]).await, vec![None]);
        b.record_failure(
            fp,
            &fail(FailureClass::Auth, None),
            &s,
            ("openai", "primary"),
        )
        .await;
        // A later, shorter failure (a server error) never shortens it.
        let kept = b
            .record_failure(
                fp,
                &fail(FailureClass::ServerError, None),
                &s,
                ("openai", "primary"),
            )
            .await;
        assert_eq!(kept.unwrap().class, FailureClass::Auth);
        let rec = b.records(&[fp]).await.pop().unwrap().unwrap();
        assert_eq!(
            (rec.host.as_str(), rec.key.as_str(), rec.class),
            ("openai", "primary", FailureClass::Auth)
        );
        let listed = b.list().await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, fp);
        assert!(b.state().scan("secret_health:ab12").await.len() == 1);
        assert!(b.claim_probe(fp).await);
        assert!(!b.claim_probe(fp).await, "one probe at a time");
        assert_eq!(b.reset(Some("anthropic")).await, 0);
        assert_eq!(b.reset(Some("openai")).await, 1);
        assert_eq!(b.records(&[fp]).await, vec![None]);
        assert!(b.claim_probe(fp).await, "reset clears the probe too");
    }
}
