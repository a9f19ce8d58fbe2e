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
    Unauthorized(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    /// Details go to the log; the body stays generic.
    #[error("internal error; see relay's log")]
    Internal(String),
}

impl ApiError {
    /// Short static label, for metrics and the body's `code`.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
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
        if matches!(self, ApiError::Unauthorized(_)) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
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
    json_response(
        status,
        client.error_body(status.as_u16(), &err.to_string(), err.code()),
    )
}

/// An upstream's error status and body, in the client's protocol.
fn upstream_error(client: Protocol, status: u16, upstream: Protocol, body: &Bytes) -> Response {
    let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
        .map(str::to_string);
    // Same protocol and a well-formed error: pass it through untouched.
    let well_formed = match upstream {
        Protocol::OpenAi => parsed
            .as_ref()
            .is_some_and(|v| v.pointer("/error/message").is_some()),
        Protocol::Anthropic => parsed
            .as_ref()
            .is_some_and(|v| v.get("type").is_some_and(|t| t == "error")),
    };
    if client == upstream && well_formed {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return json_response(status, body.clone());
    }
    let message = message
        .unwrap_or_else(|| format!("the upstream answered {status} without a usable error body"));
    let (status, body) = match client {
        // OpenAI clients do not know 529; both retry any 5xx.
        Protocol::OpenAi => {
            let s = if status == 529 { 503 } else { status };
            (s, openai::error_body(s, &message, "upstream_error"))
        }
        Protocol::Anthropic => (status, anthropic::error_body(status, &message)),
    };
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        body,
    )
}
