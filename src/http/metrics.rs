//! `GET /metrics`: Prometheus text exposition of `telemetry::metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::control::Admin;
use super::AppState;
use crate::telemetry::metrics::CONTENT_TYPE;

/// Admin-only for now, like the rest of the control plane but `/version`.
pub async fn metrics(_: Admin, State(state): State<AppState>) -> impl IntoResponse {
    let body = state
        .gateway
        .metrics
        .render(&state.config, &state.breakers)
        .await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}
