//! Relay keys (format, the in-memory key table, and the checks a request
//! passes before it is routed) and dashboard passwords.

pub mod cache;
pub mod key;
pub mod manage;
pub mod password;

use std::sync::Arc;

pub use cache::{KeyCache, KeyEntry};

/// Why a presented relay key was refused (all 401).
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
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_api_key",
            AuthError::Malformed | AuthError::Unknown => "invalid_api_key",
            AuthError::Disabled => "api_key_disabled",
            AuthError::Expired => "api_key_expired",
        }
    }
}

/// Checks a presented key against the table: shape and checksum first (no
/// lookup for typos), then one hash-map probe.
pub fn authenticate(
    cache: &KeyCache,
    presented: Option<&str>,
    now_ms: i64,
) -> Result<Arc<KeyEntry>, AuthError> {
    let key = presented
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(AuthError::Missing)?;
    if !key::is_well_formed(key) {
        return Err(AuthError::Malformed);
    }
    let entry = cache.lookup(key).ok_or(AuthError::Unknown)?;
    if !entry.enabled {
        return Err(AuthError::Disabled);
    }
    if entry.expires_at.is_some_and(|at| at <= now_ms) {
        return Err(AuthError::Expired);
    }
    entry.mark_used(now_ms);
    Ok(entry)
}
