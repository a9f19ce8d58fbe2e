//! Control plane: `/version` (public), login/logout, and the admin API.
//! Reads need any signed-in principal; changes need the admin role.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::session::{self, AdminOnly, Principal};
use super::AppState;
use crate::config::ReloadOutcome;

/// What the control plane says while the runtime store has not answered
/// since start.
pub const STORE_UNREACHED: &str =
    "the runtime database has not been reached since start; /readyz names the cause";

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/login", post(session::login))
        .route("/logout", post(session::logout))
        .route("/api/session", get(session::whoami))
        .route("/api/openapi.json", get(openapi))
        .route("/api/config", get(config_view))
        .route("/metrics", get(super::metrics::metrics))
        .route("/api/config/status", get(config_status))
        .route("/api/config/reload", post(config_reload))
        .route("/api/keys", post(create_key).get(list_keys))
        .route("/api/keys/{id}", axum::routing::delete(delete_key))
        .route("/api/keys/{id}/disable", post(disable_key))
        .route("/api/keys/{id}/enable", post(enable_key))
        .route("/api/usage", get(usage))
        .route("/api/usage/series", get(usage_series))
        .route("/api/breakers", get(list_breakers))
        .route("/api/breakers/reset", post(reset_breakers))
        .merge(crate::dashboard::routes())
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::NotFound(format!("no control-plane route for {}", uri.path()))
        })
        .with_state(state)
}

/// The admin API's OpenAPI 3.1 document (kept in `openapi.json` beside
/// this file; a test checks it lists every route). Viewers and up, like
/// every other control-plane read.
async fn openapi(_: Principal) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

/// `GET /api/config`: the live snapshot, every kind, with breaker health per
/// host key; never a secret value or password hash.
async fn config_view(_: Principal, State(state): State<AppState>) -> impl IntoResponse {
    let snap = state.config.snapshot();
    let records = state.breakers.list().await;
    Json(super::config_view::render(
        &snap,
        &state.config.status(),
        &records,
        crate::store::now_ms(),
    ))
}

async fn version(State(state): State<AppState>) -> Json<serde_json::Value> {
    let snap = state.config.snapshot();
    Json(json!({
        "version": crate::VERSION,
        "git_sha": crate::GIT_SHA,
        "config_revision": snap.current_revision(),
    }))
}

async fn config_status(_: Principal, State(state): State<AppState>) -> impl IntoResponse {
    Json(state.config.status())
}

async fn config_reload(
    _: AdminOnly,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let outcome = state.reloader.reload().await.ok_or_else(|| {
        ApiError::Unavailable("relay is shutting down; reload not performed".into())
    })?;
    let status = match outcome {
        ReloadOutcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    Ok((status, Json(outcome)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    policy: String,
    #[serde(default)]
    name: Option<String>,
    /// A duration (`30d`, `12h`) or a number of seconds.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

async fn create_key(
    _: AdminOnly,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req: CreateKey = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected a JSON body {{\"policy\", \"name\"?, \"expires_in\"?}}: {e}"
        ))
    })?;
    let snap = state.config.snapshot();
    if snap.policy(&req.policy).is_none() {
        let known: Vec<&str> = snap.policies.iter().map(|p| p.name.as_str()).collect();
        return Err(ApiError::BadRequest(format!(
            "policy `{}` is not defined in config; defined: {}",
            req.policy,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let expires_in_ms = match req.expires_in {
        None | Some(serde_json::Value::Null) => None,
        // Checked: a client-chosen number of seconds overflowed `* 1000`.
        Some(serde_json::Value::Number(n)) => Some(
            n.as_i64()
                .filter(|s| *s > 0)
                .and_then(|s| s.checked_mul(1000))
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "`expires_in` must be a positive number of seconds (at most 9223372036854775) \
                         or a duration like `30d`"
                            .into(),
                    )
                })?,
        ),
        Some(serde_json::Value::String(s)) => {
            Some(crate::cli::parse_duration_ms(&s).map_err(ApiError::BadRequest)?)
        }
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`expires_in` must be a number of seconds or a duration like `30d`".into(),
            ))
        }
    };
    let hasher = state
        .gateway
        .keys
        .hasher()
        .ok_or_else(|| ApiError::Unavailable(STORE_UNREACHED.into()))?;
    let minted =
        crate::auth::manage::mint(&state.store, hasher, &req.policy, req.name, expires_in_ms)
            .await?;
    state.gateway.keys.refresh().await?;
    let mut body = serde_json::to_value(&minted.row).unwrap_or_default();
    body["key"] = serde_json::Value::from(minted.plaintext.expose());
    // The only response that ever holds a key's plaintext: no cache (a
    // browser's, a proxy's) may keep a copy.
    Ok((
        StatusCode::CREATED,
        [(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        )],
        Json(body),
    ))
}

async fn list_keys(
    _: Principal,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(json!({ "keys": state.store.list_keys().await? })))
}

async fn set_enabled(
    state: &AppState,
    id: &str,
    enabled: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.store.set_key_enabled(id, enabled).await? {
        return Err(ApiError::NotFound(format!(
            "no relay key with id `{id}`; GET /api/keys lists them"
        )));
    }
    state.gateway.keys.refresh().await?;
    let row = state.store.get_key(id).await?;
    Ok(Json(serde_json::to_value(row).unwrap_or_default()))
}

async fn disable_key(
    _: AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_enabled(&state, &id, false).await
}

async fn enable_key(
    _: AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_enabled(&state, &id, true).await
}

async fn delete_key(
    _: AdminOnly,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    if !state.store.delete_key(&id).await? {
        return Err(ApiError::NotFound(format!(
            "no relay key with id `{id}`; GET /api/keys lists them"
        )));
    }
    state.gateway.keys.refresh().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/usage?key_id=&model=&from=&to=&limit=`: records and totals.
async fn usage(
    _: Principal,
    State(state): State<AppState>,
    q: Result<Query<crate::store::UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::BadRequest(format!(
            "{}; expected key_id, model, from/to in Unix milliseconds, limit",
            e.body_text()
        ))
    })?;
    q.check(crate::store::now_ms())
        .map_err(ApiError::BadRequest)?;
    let (totals, records) = state.store.usage_report(&q).await?;
    Ok(Json(json!({ "totals": totals, "records": records })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesQuery {
    #[serde(default)]
    bucket: crate::store::Bucket,
    from: Option<i64>,
    to: Option<i64>,
    key_id: Option<String>,
    model: Option<String>,
}

/// `GET /api/usage/series?bucket=hour|day&from=&to=&key_id=&model=`: usage
/// per UTC-aligned bucket, empty buckets included (any signed-in user).
async fn usage_series(
    _: Principal,
    State(state): State<AppState>,
    q: Result<Query<SeriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::BadRequest(format!(
            "{}; expected bucket=hour|day, from/to in Unix milliseconds, key_id, model",
            e.body_text()
        ))
    })?;
    let query = crate::store::UsageQuery {
        key_id: q.key_id,
        model: q.model,
        from: q.from,
        to: q.to,
        limit: None,
    };
    query
        .check(crate::store::now_ms())
        .map_err(ApiError::BadRequest)?;
    let points = state.store.usage_series(q.bucket, &query).await?;
    Ok(Json(json!({ "bucket": q.bucket, "points": points })))
}

/// `GET /api/breakers`: every configured host key with its breaker state
/// (by key name; never values), plus records of keys no longer configured.
async fn list_breakers(
    _: Principal,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(breaker_report(&state).await))
}

pub async fn breaker_report(state: &AppState) -> serde_json::Value {
    let snap = state.config.snapshot();
    let records = state.breakers.list().await;
    let now = crate::store::now_ms();
    let mut seen = std::collections::HashSet::new();
    let mut keys = Vec::new();
    for host in &snap.hosts {
        for k in &host.keys {
            seen.insert(k.fingerprint.as_str());
            let mut entry = super::config_view::key_health(&records, &k.fingerprint, now);
            entry["host"] = json!(host.name);
            entry["key"] = json!(k.name);
            keys.push(entry);
        }
        for k in &host.unavailable_keys {
            keys.push(json!({"host": host.name, "key": k.name, "state": "unavailable", "reason": k.reason}));
        }
    }
    let stale = records
        .iter()
        .filter(|(fp, _)| !seen.contains(fp.as_str()))
        .count();
    json!({
        "backend": state.breakers.state().name(),
        "keys": keys,
        "records_of_unconfigured_keys": stale,
    })
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResetBreakers {
    #[serde(default)]
    host: Option<String>,
}

/// `POST /api/breakers/reset` with an optional `{"host": "…"}`.
async fn reset_breakers(
    _: AdminOnly,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req: ResetBreakers = if body.is_empty() {
        ResetBreakers::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("expected {{\"host\"?: string}}: {e}")))?
    };
    let cleared = state.breakers.reset(req.host.as_deref()).await;
    tracing::info!(cleared, host = req.host.as_deref(), "breakers reset");
    Ok(Json(json!({ "cleared": cleared })))
}
