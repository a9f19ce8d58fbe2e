//! JSON views of the live configuration for the control plane: what git
//! configured, with each host key's breaker health, and never a secret
//! value, a password hash or a header value.

use serde_json::{json, Value};

use crate::config::reload::ReloadStatus;
use crate::config::Snapshot;
use crate::upstream::breaker::{BreakerRecord, Health};

/// Breaker health of one host key, by its fingerprint, from the state
/// backend's records.
pub fn key_health(records: &[(String, BreakerRecord)], fingerprint: &str, now_ms: i64) -> Value {
    let rec = records
        .iter()
        .find(|(fp, _)| fp == fingerprint)
        .map(|(_, r)| r);
    let (state, until) = match rec.map(|r| r.health(now_ms)) {
        None | Some(Health::Closed) => ("closed", None),
        Some(Health::Open { until_ms }) => ("open", Some(until_ms)),
        Some(Health::HalfOpen) => ("half_open", None),
    };
    json!({
        "state": state,
        "class": rec.map(|r| r.class.as_str()),
        "open_until": until,
        "failures": rec.map_or(0, |r| r.failures),
        "trips": rec.map_or(0, |r| r.trips),
    })
}

/// `GET /api/config`.
pub fn render(
    snap: &Snapshot,
    status: &ReloadStatus,
    records: &[(String, BreakerRecord)],
    now_ms: i64,
) -> Value {
    let hosts: Vec<Value> = snap
        .hosts
        .iter()
        .map(|h| {
            let keys: Vec<Value> = h
                .keys
                .iter()
                .map(|k| json!({ "name": k.name, "source": k.source, "breaker": key_health(records, &k.fingerprint, now_ms) }))
                .collect();
            json!({
                "name": h.name,
                "description": h.description,
                "base_url": h.base_url,
                "timeout_ms": h.timeout.as_millis() as u64,
                "connect_timeout_ms": h.connect_timeout.as_millis() as u64,
                "selection": h.selection,
                "max_keys_per_request": h.max_keys_per_request,
                // Header values may carry credentials: names only.
                "headers": h.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "keys": keys,
                "unavailable_keys": h.unavailable_keys,
                "breaker": {
                    "auth_cooldown_ms": h.breaker.auth_cooldown.as_millis() as u64,
                    "quota_cooldown_ms": h.breaker.quota_cooldown.as_millis() as u64,
                    "rate_limit_cooldown_ms": h.breaker.rate_limit_cooldown.as_millis() as u64,
                    "server_error_cooldown_ms": h.breaker.server_error_cooldown.as_millis() as u64,
                    "server_error_threshold": h.breaker.server_error_threshold,
                },
            })
        })
        .collect();
    let models: Vec<Value> = snap
        .models
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "aliases": m.aliases,
                "description": m.description,
                "context_window": m.context_window,
                "max_output_tokens": m.max_output_tokens,
                "pricing": m.pricing,
                "routes": snap.routes(m).map(|b| b.name.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let bindings: Vec<Value> = snap
        .bindings
        .iter()
        .map(|b| {
            json!({
                "name": b.name,
                "model": snap.models[b.model].name,
                "host": snap.hosts[b.host].name,
                "adapter": b.adapter,
                "upstream": b.upstream,
                "enabled": b.enabled,
                "priority": b.priority,
                "weight": b.weight,
            })
        })
        .collect();
    let policies: Vec<Value> = snap
        .policies
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "description": p.description,
                "models": p.patterns,
                "granted_models": snap.models.iter().filter(|m| p.grants(&m.name)).map(|m| m.name.as_str()).collect::<Vec<_>>(),
                "limits": p.limits,
                "budget": p.budget,
            })
        })
        .collect();
    let users: Vec<Value> = snap
        .users
        .iter()
        .map(|u| json!({ "name": u.name, "role": u.role }))
        .collect();
    json!({
        "revision": snap.current_revision(),
        "status": status,
        "hosts": hosts,
        "models": models,
        "bindings": bindings,
        "policies": policies,
        "users": users,
    })
}
