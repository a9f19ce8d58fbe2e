//! Control plane: `/version` (public) and the admin API.

use axum::extract::{FromRequestParts, State};
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
        .route("/api/config/status", get(config_status))
        .route("/api/config/reload", post(config_reload))
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
