//! Data plane: the inference API (OpenAI and Anthropic surfaces, also under
//! the provider-prefixed paths older clients use) and `/healthz`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use std::sync::Arc;

use axum::middleware::Next;

use super::error::{json_response, render_body_error, render_gateway_error};
use super::AppState;
use crate::adapters::Protocol;
use crate::gateway::{access, Endpoint, Reply, ReplyBody, RequestCtx};

const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

pub use super::body::MAX_REQUEST_BYTES;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/v1/chat/completions", post(chat))
        .route("/openai/v1/chat/completions", post(chat))
        .route("/v1/messages", post(messages))
        .route("/anthropic/v1/messages", post(messages))
        .route("/v1/embeddings", post(embeddings))
        .route("/openai/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/openai/v1/models", get(models))
        .route("/anthropic/v1/models", get(models))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_id,
        ))
        .with_state(state)
}

/// Every data-plane response carries `x-request-id` (the client's own when
/// acceptable, else one relay minted), errors included; requests that never
/// reached a call (401, 413, unknown routes, not ready) get their access
/// line here.
async fn request_id(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let ctx = Arc::new(RequestCtx::new(req.headers().get(REQUEST_ID)));
    // Probes are polled every few seconds: no access line for them.
    let probe = matches!(req.uri().path(), "/livez" | "/readyz" | "/healthz");
    // A `Uri` clone shares its bytes: nothing is copied per request.
    let uri = (!probe && s.gateway.access_log.enabled).then(|| req.uri().clone());
    req.extensions_mut().insert(ctx.clone());
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(REQUEST_ID, ctx.header.clone());
    let status = resp.status().as_u16();
    if let Some(uri) = uri {
        if s.gateway.access_log.wants(status) && ctx.claim_log() {
            access::emit(
                &ctx,
                &access::Line {
                    status,
                    latency: ctx.started.elapsed(),
                    path: Some(uri.path()),
                    ..Default::default()
                },
            );
        }
    }
    resp
}

async fn chat(State(s): State<AppState>, req: Request) -> Response {
    inference(s, Endpoint::ChatCompletions, req).await
}

async fn messages(State(s): State<AppState>, req: Request) -> Response {
    inference(s, Endpoint::Messages, req).await
}

async fn embeddings(State(s): State<AppState>, req: Request) -> Response {
    inference(s, Endpoint::Embeddings, req).await
}

/// Takes the request whole (extracting `HeaderMap` would copy the headers
/// on every call) and reads the body itself, so an oversized or broken body
/// is answered in the caller's protocol.
async fn inference(s: AppState, endpoint: Endpoint, req: Request) -> Response {
    let protocol = endpoint.protocol();
    let (parts, body) = req.into_parts();
    let key = match s
        .gateway
        .authenticate(presented_key(&parts.headers, protocol))
        .await
    {
        Ok(k) => k,
        Err(e) => return render_gateway_error(protocol, e),
    };
    let body = match super::body::read(&s.body_budget, &parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return render_body_error(protocol, &e),
    };
    let ctx = match parts.extensions.get::<Arc<RequestCtx>>() {
        Some(c) => c.clone(),
        None => Arc::new(RequestCtx::new(parts.headers.get(REQUEST_ID))),
    };
    match s
        .gateway
        .call(endpoint, key, &parts.headers, body, &ctx)
        .await
    {
        Ok(reply) => reply_response(reply),
        Err(e) => render_gateway_error(protocol, e),
    }
}

/// The relay key: `Authorization: Bearer`, or on the Anthropic surface also
/// `x-api-key`, as Anthropic SDKs send it.
fn presented_key(headers: &HeaderMap, protocol: Protocol) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match protocol {
        Protocol::Anthropic => {
            bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        }
        Protocol::OpenAi => bearer,
    }
}

fn reply_response(reply: Reply) -> Response {
    let body = match reply.body {
        ReplyBody::Full(b) => Body::from(b),
        ReplyBody::Stream(s) => Body::from_stream(s),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = reply.status;
    *resp.headers_mut() = reply.headers;
    resp
}

/// `GET /v1/models`: the catalog models this key can reach, OpenAI format.
async fn models(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let key = match s
        .gateway
        .authenticate(presented_key(&headers, Protocol::Anthropic))
        .await
    {
        Ok(k) => k,
        Err(e) => return render_gateway_error(Protocol::OpenAi, e),
    };
    let snap = s.config.snapshot();
    let created = snap
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let data: Vec<_> = s
        .gateway
        .reachable_models(&snap, &key)
        .into_iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": created, "owned_by": "relay"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// The process is up and serving HTTP; never fails because a dependency is
/// down (an orchestrator restarting relay cannot fix Postgres).
async fn livez() -> Response {
    Json(json!({"status": "alive"})).into_response()
}

/// Whether this replica should get traffic (see `lifecycle`).
async fn readyz(State(s): State<AppState>) -> Response {
    match s.lifecycle.readiness() {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(why) => {
            let mut body =
                json!({"status": "not_ready", "reason": why.label(), "message": why.message()});
            if why == crate::lifecycle::NotReady::Store {
                body["dependency"] = json!("store");
                if let Some(e) = s.lifecycle.store_error() {
                    body["error"] = json!(e.as_str());
                }
            }
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// Liveness plus a database round trip; 503 names the failing dependency.
async fn healthz(State(s): State<AppState>) -> Response {
    let snap = s.config.snapshot();
    let config = json!({ "revision": snap.current_revision(), "loaded_at": crate::config::reload::timestamp(snap.loaded_at) });
    // Not reached since start: the retry task's last error says why (a
    // ping would only time out in the pool).
    if !s.lifecycle.is_store_reached() {
        let error = s
            .lifecycle
            .store_error()
            .map_or_else(|| "not reached yet".to_string(), |e| e.as_str().to_string());
        let body = json!({
            "status": "unavailable",
            "failing": ["database"],
            "database": {"status": "error", "backend": s.store.backend(), "error": error},
            "state": s.breakers.state().health().await,
            "config": config,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let db = tokio::time::timeout(Duration::from_secs(2), s.store.ping()).await;
    let database = match &db {
        Ok(Ok(())) => json!({"status": "ok", "backend": s.store.backend()}),
        Ok(Err(e)) => {
            json!({"status": "error", "backend": s.store.backend(), "error": e.to_string()})
        }
        Err(_) => {
            json!({"status": "error", "backend": s.store.backend(), "error": "ping timed out after 2s"})
        }
    };
    // A degraded state backend is reported but not fatal: relay serves on
    // in-process state meanwhile.
    let state = s.breakers.state().health().await;
    if matches!(db, Ok(Ok(()))) {
        let body = json!({"status": "ok", "database": database, "state": state, "config": config});
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let body = json!({
            "status": "unavailable",
            "failing": ["database"],
            "database": database,
            "state": state,
            "config": config,
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let msg = format!(
        "no route for {}; relay serves /v1/chat/completions, /v1/messages, /v1/embeddings, /v1/models, /healthz, /livez and /readyz",
        uri.path()
    );
    json_response(
        StatusCode::NOT_FOUND,
        Protocol::OpenAi.error_body(404, &msg, "unknown_route"),
    )
}
