//! `GET /metrics`: Prometheus text exposition of `telemetry::metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::session::Principal;
use super::AppState;
use crate::telemetry::metrics::CONTENT_TYPE;

/// Any signed-in principal (viewers read metrics too); Prometheus scrapes
/// with `Authorization: Bearer $RELAY_ADMIN_TOKEN`.
pub async fn metrics(_: Principal, State(state): State<AppState>) -> impl IntoResponse {
    let body = state
        .gateway
        .metrics
        .render(&state.config, &state.breakers)
        .await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}
