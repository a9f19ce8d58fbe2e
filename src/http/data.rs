//! Data plane: the inference API and `/healthz`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let snap = state.config.snapshot();
    Json(json!({
        "status": "ok",
        "config": { "revision": snap.revision, "loaded_at": crate::config::reload::timestamp(snap.loaded_at) },
    }))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {}; see the README for relay's endpoints",
        uri.path()
    ))
}
