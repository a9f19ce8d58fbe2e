//! The one place errors become responses: `ApiError` for the control plane,
//! `render_gateway_error` for the data plane (in the caller's protocol).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::adapters::{anthropic, openai, Protocol};
use crate::gateway::GatewayError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_s: u64 },
    /// Details go to the log; the body stays generic.
    #[error("internal error; see relay's log")]
    Internal(String),
}

impl ApiError {
    /// Short static label, for metrics and the body's `code`.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TooManyRequests { .. } => "rate_limited",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        // Down, not broken: a 503 the caller may retry (the log has it).
        if e.is_unreachable() {
            tracing::warn!(error = %e, "control plane request: runtime database unreachable");
            return ApiError::Unavailable(
                "the runtime database is unreachable; try again shortly (/readyz and /healthz name the cause)"
                    .into(),
            );
        }
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "control plane request failed");
        }
        let status = self.status();
        let body = Protocol::OpenAi.error_body(status.as_u16(), &self.to_string(), self.kind());
        let mut resp = json_response(status, body);
        match &self {
            ApiError::Unauthorized(_) => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after_s, .. } => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            _ => {}
        }
        resp
    }
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `retry-after` while the key table is not loaded (the store is retried
/// at least this often once its backoff is at its longest).
const NOT_READY_RETRY_MS: u64 = 5_000;

/// A gateway error in the caller's protocol. Upstream errors keep their
/// status and message; relay's own errors say what to do next.
pub fn render_gateway_error(client: Protocol, err: GatewayError) -> Response {
    if let GatewayError::UpstreamStatus {
        status,
        protocol,
        body,
        retry_after,
    } = &err
    {
        let mut resp = upstream_error(client, *status, *protocol, body);
        // Clients (and the official SDKs) wait as long as the upstream asked.
        if let Some(v) = retry_after
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let status = err.status();
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), code = err.code(), error = %err, "request failed");
    }
    let mut resp = json_response(
        status,
        client.error_body(status.as_u16(), &err.to_string(), err.code()),
    );
    // Tell clients (and SDKs, which honour it) when trying again can work.
    let wait_ms = match &err {
        GatewayError::RateLimited { retry_after_ms, .. }
        | GatewayError::BudgetExceeded { retry_after_ms, .. } => Some(*retry_after_ms),
        GatewayError::NoHealthyKeys { retry_after_ms, .. } => *retry_after_ms,
        GatewayError::Auth(a) => a.retry_after_s().map(|s| s * 1000),
        GatewayError::NotReady => Some(NOT_READY_RETRY_MS),
        _ => None,
    };
    if let Some(ms) = wait_ms {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(ms.div_ceil(1000).max(1)),
        );
    }
    resp
}

/// A request body relay did not read (too large, over the body budget,
/// too slow, broken), in the caller's protocol; a 503 says when to retry.
pub fn render_body_error(client: Protocol, err: &super::body::BodyError) -> Response {
    let status = err.status();
    let mut resp = json_response(
        status,
        client.error_body(status.as_u16(), &err.message(), err.code()),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// An upstream's error status and body, in the client's protocol
/// (wire-formats §3.10): the upstream's status and message are kept.
fn upstream_error(client: Protocol, status: u16, upstream: Protocol, body: &Bytes) -> Response {
    let (status, body) = upstream_error_body(client, status, upstream, body);
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        body,
    )
}

#[derive(serde::Deserialize)]
struct UpstreamErrorBody {
    error: Option<UpstreamErrorInner>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(serde::Deserialize)]
struct UpstreamErrorInner {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<serde_json::Value>,
}

/// Status and body for the client; separate from the response for tests.
pub(crate) fn upstream_error_body(
    client: Protocol,
    status: u16,
    upstream: Protocol,
    body: &Bytes,
) -> (u16, Bytes) {
    let parsed = serde_json::from_slice::<UpstreamErrorBody>(body).ok();
    let inner = parsed.as_ref().and_then(|p| p.error.as_ref());
    // Same protocol and a well-formed error: pass it through untouched.
    let well_formed = match upstream {
        Protocol::OpenAi => inner.is_some_and(|e| e.message.is_some()),
        Protocol::Anthropic => parsed
            .as_ref()
            .is_some_and(|p| p.kind.as_deref() == Some("error")),
    };
    if client == upstream && well_formed {
        return (status, body.clone());
    }
    // §5.30: non-JSON bodies (CDN pages) get a generic message.
    let message = inner
        .and_then(|e| e.message.clone())
        .unwrap_or_else(|| format!("the upstream answered {status} without a usable error body"));
    match client {
        // OpenAI clients do not know 529; both retry any 5xx.
        Protocol::OpenAi => {
            let s = if status == 529 { 503 } else { status };
            let kind = inner
                .and_then(|e| e.kind.clone())
                .unwrap_or_else(|| openai::error_type(s).to_string());
            let code = inner
                .and_then(|e| e.code.clone())
                .unwrap_or(serde_json::Value::Null);
            let body = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
            (s, Bytes::from(body.to_string()))
        }
        Protocol::Anthropic => {
            let lower = message.to_ascii_lowercase();
            let s = if upstream == Protocol::OpenAi
                && status == 503
                && (lower.contains("overloaded") || lower.contains("slow down"))
            {
                529
            } else {
                status
            };
            (s, anthropic::error_body(s, &message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(
        client: Protocol,
        status: u16,
        upstream: Protocol,
        b: &str,
    ) -> (u16, serde_json::Value) {
        let (s, out) = upstream_error_body(client, status, upstream, &Bytes::from(b.to_string()));
        (s, serde_json::from_slice(&out).unwrap())
    }

    /// §3.10, one row per case: (client, upstream status, upstream, body) →
    /// (status, type, message).
    #[test]
    fn upstream_errors_in_the_clients_shape() {
        use Protocol::{Anthropic as A, OpenAi as O};
        let ant = |t: &str, m: &str| {
            format!(r#"{{"type":"error","error":{{"type":"{t}","message":"{m}"}}}}"#)
        };
        let oai = |t: &str, m: &str, c: &str| {
            format!(r#"{{"error":{{"message":"{m}","type":"{t}","param":null,"code":{c}}}}}"#)
        };
        let cases: Vec<(Protocol, u16, Protocol, String, u16, &str, &str)> = vec![
            (
                O,
                529,
                A,
                ant("overloaded_error", "Overloaded"),
                503,
                "overloaded_error",
                "Overloaded",
            ),
            (
                O,
                429,
                A,
                ant("rate_limit_error", "slow"),
                429,
                "rate_limit_error",
                "slow",
            ),
            (
                O,
                400,
                A,
                ant("invalid_request_error", "prompt is too long"),
                400,
                "invalid_request_error",
                "prompt is too long",
            ),
            (
                O,
                500,
                A,
                ant("api_error", "Internal"),
                500,
                "api_error",
                "Internal",
            ),
            (
                A,
                503,
                O,
                oai("server_error", "The engine is currently overloaded", "null"),
                529,
                "overloaded_error",
                "The engine is currently overloaded",
            ),
            (
                A,
                503,
                O,
                oai("server_error", "Slow Down", "null"),
                529,
                "overloaded_error",
                "Slow Down",
            ),
            (
                A,
                429,
                O,
                oai("requests", "Rate limit reached", "\"rate_limit_exceeded\""),
                429,
                "rate_limit_error",
                "Rate limit reached",
            ),
            (
                A,
                400,
                O,
                oai(
                    "invalid_request_error",
                    "too long",
                    "\"context_length_exceeded\"",
                ),
                400,
                "invalid_request_error",
                "too long",
            ),
            (
                A,
                401,
                O,
                oai("invalid_request_error", "bad key", "null"),
                401,
                "authentication_error",
                "bad key",
            ),
            (
                A,
                402,
                O,
                oai("x", "pay", "null"),
                402,
                "billing_error",
                "pay",
            ),
            (
                A,
                403,
                O,
                oai("x", "no", "null"),
                403,
                "permission_error",
                "no",
            ),
            (
                A,
                404,
                O,
                oai("invalid_request_error", "no model", "\"model_not_found\""),
                404,
                "not_found_error",
                "no model",
            ),
            (
                A,
                413,
                O,
                oai("x", "big", "null"),
                413,
                "request_too_large",
                "big",
            ),
            (
                A,
                504,
                O,
                oai("x", "slow", "null"),
                504,
                "timeout_error",
                "slow",
            ),
            (
                A,
                500,
                O,
                oai("server_error", "oops", "null"),
                500,
                "api_error",
                "oops",
            ),
        ];
        for (client, st, upstream, b, want_st, want_type, want_msg) in cases {
            let (s, v) = body(client, st, upstream, &b);
            assert_eq!(s, want_st, "{b}");
            match client {
                Protocol::OpenAi => {
                    assert_eq!(v["error"]["type"], want_type, "{v}");
                    assert_eq!(v["error"]["message"], want_msg);
                    assert!(v["error"]["param"].is_null());
                }
                Protocol::Anthropic => {
                    assert_eq!(v["type"], "error");
                    assert_eq!(v["error"]["type"], want_type, "{v}");
                    assert_eq!(v["error"]["message"], want_msg);
                }
            }
        }
        // The OpenAI code survives.
        let (_, v) = body(
            O,
            400,
            O,
            r#"{"error":{"message":"m","type":"t","code":"c"}}"#,
        );
        assert_eq!(v["error"]["code"], "c");
    }

    #[test]
    fn edge_29_billing_errors_keep_their_message() {
        let (s, v) = body(
            Protocol::OpenAi,
            400,
            Protocol::Anthropic,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}"#,
        );
        assert_eq!(s, 400);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("credit balance is too low"));
        let (s, v) = body(
            Protocol::Anthropic,
            429,
            Protocol::OpenAi,
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
        );
        assert_eq!(s, 429);
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeded your current quota"));
    }

    #[test]
    fn edge_30_non_json_error_bodies() {
        for client in [Protocol::OpenAi, Protocol::Anthropic] {
            for upstream in [Protocol::OpenAi, Protocol::Anthropic] {
                let (s, v) = body(client, 502, upstream, "<html>502 Bad Gateway</html>");
                assert_eq!(s, 502);
                let msg = match client {
                    Protocol::OpenAi => v["error"]["message"].as_str().unwrap().to_string(),
                    Protocol::Anthropic => v["error"]["message"].as_str().unwrap().to_string(),
                };
                assert!(msg.contains("without a usable error body"), "{msg}");
                let (s, _) = body(client, 500, upstream, "");
                assert_eq!(s, 500);
            }
        }
    }
}
