//! Control plane: `/version` (public) and the admin API.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::AppState;
use crate::config::ReloadOutcome;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/metrics", get(super::metrics::metrics))
        .route("/api/config/status", get(config_status))
        .route("/api/config/reload", post(config_reload))
        .route("/api/keys", post(create_key).get(list_keys))
        .route("/api/keys/{id}", axum::routing::delete(delete_key))
        .route("/api/keys/{id}/disable", post(disable_key))
        .route("/api/keys/{id}/enable", post(enable_key))
        .route("/api/usage", get(usage))
        .route("/api/breakers", get(list_breakers))
        .route("/api/breakers/reset", post(reset_breakers))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::NotFound(format!("no control-plane route for {}", uri.path()))
        })
        .with_state(state)
}

async fn version(State(state): State<AppState>) -> Json<serde_json::Value> {
    let snap = state.config.snapshot();
    Json(json!({
        "version": crate::VERSION,
        "git_sha": crate::GIT_SHA,
        "config_revision": snap.revision,
    }))
}

async fn config_status(_: Admin, State(state): State<AppState>) -> impl IntoResponse {
    Json(state.config.status())
}

async fn config_reload(
    _: Admin,
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
    _: Admin,
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
        Some(serde_json::Value::Number(n)) => Some(
            n.as_i64().filter(|s| *s > 0).ok_or_else(|| {
                ApiError::BadRequest(
                    "`expires_in` must be a positive number of seconds or a duration like `30d`"
                        .into(),
                )
            })? * 1000,
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
    let minted = crate::auth::manage::mint(
        &state.store,
        state.gateway.keys.hasher(),
        &req.policy,
        req.name,
        expires_in_ms,
    )
    .await?;
    state.gateway.keys.refresh().await?;
    let mut body = serde_json::to_value(&minted.row).unwrap_or_default();
    body["key"] = serde_json::Value::from(minted.plaintext.expose());
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list_keys(_: Admin, State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
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
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_enabled(&state, &id, false).await
}

async fn enable_key(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_enabled(&state, &id, true).await
}

async fn delete_key(
    _: Admin,
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
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<crate::store::UsageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let totals = state.store.usage_totals(&q).await?;
    let records = state.store.usage(&q).await?;
    Ok(Json(json!({ "totals": totals, "records": records })))
}

/// `GET /api/breakers`: every configured host key with its breaker state
/// (by key name; never values), plus records of keys no longer configured.
async fn list_breakers(
    _: Admin,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(breaker_report(&state).await))
}

pub async fn breaker_report(state: &AppState) -> serde_json::Value {
    use crate::upstream::breaker::Health;
    let snap = state.config.snapshot();
    let records = state.breakers.list().await;
    let now = crate::store::now_ms();
    let mut seen = std::collections::HashSet::new();
    let mut keys = Vec::new();
    for host in &snap.hosts {
        for k in &host.keys {
            let rec = records
                .iter()
                .find(|(fp, _)| *fp == k.fingerprint)
                .map(|(_, r)| r);
            seen.insert(k.fingerprint.as_str());
            let (st, until) = match rec.map(|r| r.health(now)) {
                None | Some(Health::Closed) => ("closed", None),
                Some(Health::Open { until_ms }) => ("open", Some(until_ms)),
                Some(Health::HalfOpen) => ("half_open", None),
            };
            keys.push(json!({
                "host": host.name,
                "key": k.name,
                "state": st,
                "class": rec.map(|r| r.class.as_str()),
                "open_until": until,
                "failures": rec.map_or(0, |r| r.failures),
                "trips": rec.map_or(0, |r| r.trips),
            }));
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
    _: Admin,
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

/// Extractor that admits only requests bearing `RELAY_ADMIN_TOKEN`.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = &state.admin_token else {
            return Err(ApiError::Unauthorized(
                "the admin API is disabled: set RELAY_ADMIN_TOKEN and send it as `Authorization: Bearer <token>`",
            ));
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(p) if token.ct_eq(p.as_bytes()) => Ok(Admin),
            Some(_) => Err(ApiError::Unauthorized(
                "admin token is wrong; use the value of RELAY_ADMIN_TOKEN",
            )),
            None => Err(ApiError::Unauthorized(
                "missing admin credentials: send `Authorization: Bearer <RELAY_ADMIN_TOKEN>`",
            )),
        }
    }
}
