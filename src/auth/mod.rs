//! Relay keys (format, the in-memory key table, and the checks a request
//! passes before it is routed) and dashboard passwords.

pub mod cache;
pub mod key;
pub mod manage;
pub mod password;

use std::sync::Arc;

pub use cache::{KeyCache, KeyEntry, Lookup, MissOutcome};

/// Why a presented relay key was refused (401, except the 503s: the key
/// could not be checked, which says nothing about the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing relay key: send the header `Authorization: Bearer <relay-key>`")]
    Missing,
    #[error(
        "malformed relay key: use the plaintext `rk_…` value returned when the key was created, not its id or \
         prefix; if you lost it, mint a new one (plaintext is never retrievable)"
    )]
    Malformed,
    #[error("unknown relay key: it was deleted or never existed; mint a new one (plaintext is never retrievable)")]
    Unknown,
    #[error("relay key is disabled; enable it in the dashboard (or `relay keys enable`) or mint a new one")]
    Disabled,
    #[error("relay key expired; mint a new one")]
    Expired,
    /// A well-formed key missing from the in-memory table could not be
    /// looked up now: too many unknown keys at once, or the store failed.
    #[error(
        "relay key not checked: it is not among the keys this replica knows yet and the key store cannot be asked \
         right now; retry in a second"
    )]
    LookupUnavailable,
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_api_key",
            AuthError::Malformed | AuthError::Unknown => "invalid_api_key",
            AuthError::Disabled => "api_key_disabled",
            AuthError::Expired => "api_key_expired",
            AuthError::LookupUnavailable => "key_lookup_unavailable",
        }
    }

    /// The HTTP status: 401, or 503 when the key could not be checked.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::LookupUnavailable => 503,
            _ => 401,
        }
    }

    /// Seconds after which trying again can work (503s only).
    pub fn retry_after_s(&self) -> Option<u64> {
        matches!(self, AuthError::LookupUnavailable).then_some(1)
    }
}

/// Checks a presented key: shape and checksum first (no lookup for typos),
/// then one hash-map probe; a well-formed key the table lacks is looked up
/// in the store (a key minted on another replica a moment ago). `on_miss`
/// hears what a miss cost (for the lookup metric).
pub async fn authenticate(
    cache: &KeyCache,
    presented: Option<&str>,
    now_ms: i64,
    on_miss: impl FnOnce(MissOutcome),
) -> Result<Arc<KeyEntry>, AuthError> {
    let key = presented
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(AuthError::Missing)?;
    if !key::is_well_formed(key) {
        return Err(AuthError::Malformed);
    }
    let (found, miss) = cache.find(key).await;
    if let Some(m) = miss {
        on_miss(m);
    }
    let entry = match found {
        Lookup::Found(e) => e,
        Lookup::Absent => return Err(AuthError::Unknown),
        Lookup::Limited | Lookup::Failed => return Err(AuthError::LookupUnavailable),
    };
    if !entry.enabled {
        return Err(AuthError::Disabled);
    }
    if entry.expires_at.is_some_and(|at| at <= now_ms) {
        return Err(AuthError::Expired);
    }
    entry.mark_used(now_ms);
    Ok(entry)
}
