//! `GET /metrics`: Prometheus text exposition of `telemetry::metrics`.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::session::Principal;
use super::AppState;
use crate::telemetry::metrics::CONTENT_TYPE;

/// Any signed-in principal (viewers read metrics too), or Prometheus with
/// `Authorization: Bearer $RELAY_METRICS_TOKEN` — a token that opens this
/// one read-only route and nothing else.
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    principal: Result<Principal, ApiError>,
) -> Response {
    let scraper = state.metrics_token.as_deref().is_some_and(|token| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|presented| token.ct_eq(presented.as_bytes()))
    });
    if let (false, Err(e)) = (scraper, principal) {
        return e.into_response();
    }
    let body = state
        .gateway
        .metrics
        .render(&state.config, &state.breakers)
        .await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}
