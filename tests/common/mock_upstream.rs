//! A mock LLM upstream: a real HTTP server on `127.0.0.1` that speaks both the OpenAI Chat
//! Completions and the Anthropic Messages wire formats (see `wire-formats.md` §1 and §2), records
//! every request, and injects faults on demand.
//!
//! Used by relay's integration tests (relay proxies to it) and by benchmarks, so the happy path is
//! kept cheap: no sleeps, no logging, responses built straight from the parsed request.
//!
//! # Routes (all under `/v1`)
//!
//! | route | auth | reply |
//! |---|---|---|
//! | `POST /v1/chat/completions` | `Authorization: Bearer <key>` | `echo: <last user text>`, or a tool call |
//! | `POST /v1/messages` | `x-api-key` + `anthropic-version` | same, Anthropic shape |
//! | `POST /v1/embeddings` | `Authorization: Bearer <key>` | `[0.1, 0.2, 0.3]` per input |
//! | `GET /v1/models` | none | one model, `mock-model` |
//! | anything else | | 404, OpenAI error shape |
//!
//! # Faults
//!
//! Selected by the credential (`Authorization: Bearer fault-<spec>[#label]` or `x-api-key: fault-<spec>`,
//! so a whole relay host key can be made faulty) or per request by a `[[fault:<spec>]]` marker in
//! the text of the last `user` message (for embeddings: in any input string). The credential wins
//! when both are present. An unknown spec is answered with a 400 naming it. See [`Fault::parse`]
//! for the list; errors use the route's own error shape (`/v1/messages` → Anthropic, every other
//! route → OpenAI).

#![allow(dead_code)] // Each test binary that includes this file uses a different subset.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running mock upstream. Stops accepting (and closes idle connections) when dropped.
pub struct MockUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping the sender is the shutdown signal (server loop and sleeping handlers watch it).
    _shutdown: watch::Sender<()>,
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path plus query string, e.g. `/v1/messages?beta=true`.
    pub path: String,
    pub headers: HeaderMap,
    /// The parsed JSON body; `Null` when the body is empty or not JSON.
    pub body: Value,
}

impl MockUpstream {
    /// Starts on 127.0.0.1:0 on the current tokio runtime; stops when dropped.
    pub async fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("mock upstream: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("mock upstream: no local address: {e}"));
        let (tx, rx) = watch::channel(());
        let shared = Arc::new(Shared::new(true, rx.clone()));
        tokio::spawn(serve(listener, shared.clone(), rx));
        MockUpstream {
            addr,
            shared,
            _shutdown: tx,
        }
    }

    /// `http://127.0.0.1:PORT/v1` — what a relay Host's base_url points at.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log().clone()
    }

    pub fn clear(&self) {
        self.shared.log().clear();
    }

    /// Turns request recording on or off (on by default). Turn it off when a benchmark drives
    /// this instance, so the log does not grow without bound.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }
}

/// Runs the mock on a dedicated OS thread with its own runtime (for benchmarks where the mock
/// must not share the load generator's runtime); returns its address. The mock lives until the
/// process exits and does not record requests (nobody could read them).
pub fn spawn_on_thread(worker_threads: usize) -> SocketAddr {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("mock-upstream".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(worker_threads.max(1))
                .thread_name("mock-upstream-worker")
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("mock upstream: cannot build runtime: {e}"));
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .unwrap_or_else(|e| panic!("mock upstream: cannot bind 127.0.0.1:0: {e}"));
                let addr = listener
                    .local_addr()
                    .unwrap_or_else(|e| panic!("mock upstream: no local address: {e}"));
                // Held for the life of the thread: the shutdown signal never fires.
                let (_tx, rx) = watch::channel(());
                let shared = Arc::new(Shared::new(false, rx.clone()));
                let _ = addr_tx.send(addr);
                serve(listener, shared, rx).await;
            });
        })
        .unwrap_or_else(|e| panic!("mock upstream: cannot spawn thread: {e}"));
    addr_rx
        .recv()
        .unwrap_or_else(|e| panic!("mock upstream thread died before binding: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Server plumbing
// ---------------------------------------------------------------------------------------------

/// State shared by all handlers of one mock.
struct Shared {
    recording: AtomicBool,
    log: Mutex<Vec<Recorded>>,
    /// Source of the `<N>` in `chatcmpl-mock<N>` / `msg_mock<N>`.
    next_id: AtomicU64,
    shutdown: watch::Receiver<()>,
}

impl Shared {
    fn new(recording: bool, shutdown: watch::Receiver<()>) -> Shared {
        Shared {
            recording: AtomicBool::new(recording),
            log: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            shutdown,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Vec<Recorded>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Value) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        let path = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
        self.log().push(Recorded {
            method: method.as_str().to_owned(),
            path,
            headers: headers.clone(),
            body: body.clone(),
        });
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sleeps for `d`, or less if the mock shuts down meanwhile. Returns false on shutdown.
    async fn pause(&self, d: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = shutdown.changed() => false,
        }
    }
}

type AppState = State<Arc<Shared>>;

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<()>) {
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(chat_completions).fallback(not_found),
        )
        .route("/v1/messages", post(messages).fallback(not_found))
        .route("/v1/embeddings", post(embeddings).fallback(not_found))
        .route("/v1/models", get(models).fallback(not_found))
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .with_state(shared);
    let make_service = app.into_make_service_with_connect_info::<Conn>();
    let _ = axum::serve(KillableListener(listener), make_service)
        .with_graceful_shutdown(async move {
            // Resolves (with an error) once the sender is dropped.
            let _ = shutdown.changed().await;
        })
        .await;
}

/// Accepts TCP connections wrapped in [`KillableStream`], so a handler can cut its own
/// connection without sending a response (the `reset` fault).
struct KillableListener(TcpListener);

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((inner, addr)) => {
                    let _ = inner.set_nodelay(true);
                    let kill = Arc::new(AtomicBool::new(false));
                    return (KillableStream { inner, kill }, addr);
                }
                // EMFILE and friends: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A TCP stream whose every read and write fails once `kill` is set, which makes hyper drop the
/// connection on its next I/O — before it has written a single byte of the pending response.
struct KillableStream {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

impl KillableStream {
    fn killed(&self) -> bool {
        self.kill.load(Ordering::Relaxed)
    }
}

fn reset_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "mock upstream: connection reset",
    )
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killed() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.killed() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Per-connection handle given to handlers (as `ConnectInfo`), able to kill the connection.
#[derive(Clone)]
struct Conn(Arc<AtomicBool>);

impl Conn {
    /// Cuts the connection: the returned (dummy) response is never written.
    fn kill(&self) -> Response {
        self.0.store(true, Ordering::Relaxed);
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        Conn(stream.io().kill.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// An injected fault. Spec strings (after `fault-` or inside `[[fault:…]]`):
///
/// | spec | OpenAI routes | `/v1/messages` |
/// |---|---|---|
/// | `400` | 400 `invalid_request_error` / `context_length_exceeded` | 400 `invalid_request_error` ("prompt is too long") |
/// | `401` | 401 `invalid_api_key` | 401 `authentication_error` |
/// | `403` | 403 `permission_denied` (the project may not use the model: request-scoped) | 403 `permission_error` (no permission for the resource: request-scoped) |
/// | `403-key` | 403 "Your API key has been revoked." | 403 `permission_error` "This API key has been disabled." |
/// | `echo-key-<status>` | `<status>` with an error message that repeats the credential it was sent | same, Anthropic shape |
/// | `404` | 404 `model_not_found` | 404 `not_found_error` |
/// | `429` | 429 `rate_limit_exceeded` + `retry-after: 7` | 429 `rate_limit_error` + `retry-after: 7` |
/// | `429-noretry` | as `429`, no `retry-after` | as `429`, no `retry-after` |
/// | `429-reset` | 429 + `x-ratelimit-remaining-requests: 0`, `x-ratelimit-reset-requests: 6m0s` | 429 + `anthropic-ratelimit-requests-remaining: 0`, `anthropic-ratelimit-requests-reset: <now+90s RFC 3339>` |
/// | `quota` | 429 `insufficient_quota` | 400 `invalid_request_error` "Your credit balance is too low…" |
/// | `500` | 500 `server_error` | 500 `api_error` |
/// | `503` | 503 `server_error` "Slow Down" | 503 `api_error` |
/// | `529` | 503 `server_error` "The engine is currently overloaded…" | 529 `overloaded_error` |
/// | `html-502` | 502, `text/html` body | same |
/// | `bad-json` | 200, `application/json`, body `this is not json` | same |
/// | `timeout` | nothing for 60 s (then a 504); cut early if the mock is dropped | same |
/// | `slow:<ms>` | wait `<ms>` ms, then the normal answer | same |
/// | `reset` | connection closed before any response byte | same |
/// | `break-stream` | 200, first 2 events (non-stream: first half of the JSON), then the connection is cut | same |
/// | `stall-stream:<ms>` | the normal answer, but an SSE stream pauses `<ms>` ms after its first 2 events (a long generation) | same |
/// | `usage-late:<ms>` | 200 SSE: every event but the last two (the usage chunk and `[DONE]`) at once, then a `<ms>` pause, then those two (non-stream: normal) | same; the last two are `message_delta` (final usage) and `message_stop` |
/// | `stream-error` | 200 SSE: first event, then `data: {"error":…}`, end (non-stream: 200 JSON `{"error":…}`) | 200 SSE: first event, then `event: error` `overloaded_error`, end (non-stream: 200 JSON error) |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Error(ErrorFault),
    Html502,
    BadJson,
    Timeout,
    Slow(u64),
    Reset,
    BreakStream,
    StreamError,
    /// A stream that pauses this many ms after its first two events.
    StallStream(u64),
    /// Stream: the last two events (the final usage and the end) after a pause.
    UsageLate(u64),
    /// An error with this status whose message echoes the credential.
    EchoKey(u16),
}

/// Faults answered with an error status and a protocol-shaped error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorFault {
    BadRequest,
    Unauthorized,
    Forbidden,
    ForbiddenKey,
    NotFound,
    RateLimited,
    RateLimitedNoRetry,
    RateLimitedReset,
    Quota,
    Internal,
    Unavailable,
    Overloaded,
}

impl Fault {
    fn parse(spec: &str) -> Option<Fault> {
        use ErrorFault::*;
        Some(match spec {
            "400" => Fault::Error(BadRequest),
            "401" => Fault::Error(Unauthorized),
            "403" => Fault::Error(Forbidden),
            "403-key" => Fault::Error(ForbiddenKey),
            "404" => Fault::Error(NotFound),
            "429" => Fault::Error(RateLimited),
            "429-noretry" => Fault::Error(RateLimitedNoRetry),
            "429-reset" => Fault::Error(RateLimitedReset),
            "quota" => Fault::Error(Quota),
            "500" => Fault::Error(Internal),
            "503" => Fault::Error(Unavailable),
            "529" => Fault::Error(Overloaded),
            "html-502" => Fault::Html502,
            "bad-json" => Fault::BadJson,
            "timeout" => Fault::Timeout,
            "reset" => Fault::Reset,
            "break-stream" => Fault::BreakStream,
            "stream-error" => Fault::StreamError,
            _ if spec.starts_with("usage-late:") => {
                Fault::UsageLate(spec.strip_prefix("usage-late:")?.parse().ok()?)
            }
            _ => match spec.strip_prefix("echo-key-") {
                Some(code) => Fault::EchoKey(code.parse().ok().filter(|c| (400..600).contains(c))?),
                None => match spec.strip_prefix("stall-stream:") {
                    Some(ms) => Fault::StallStream(ms.parse().ok()?),
                    None => Fault::Slow(spec.strip_prefix("slow:")?.parse().ok()?),
                },
            },
        })
    }
}

/// The fault a request asks for: `Ok(None)` = none, `Err(spec)` = an unknown spec.
type FaultChoice<'a> = Result<Option<Fault>, &'a str>;

/// A fault selected by a `fault-<spec>` credential.
fn credential_fault(credential: &str) -> FaultChoice<'_> {
    // Anything after `#` is a label (`fault-401#a`) so tests sharing a
    // state backend can give each key a value of its own.
    match credential.strip_prefix("fault-") {
        None => Ok(None),
        Some(spec) => {
            let spec = spec.split_once('#').map_or(spec, |(s, _)| s);
            Fault::parse(spec).map(Some).ok_or(spec)
        }
    }
}

/// A fault selected by a `[[fault:<spec>]]` marker in `text`.
fn marker_fault(text: &str) -> FaultChoice<'_> {
    const OPEN: &str = "[[fault:";
    let Some(start) = text.find(OPEN) else {
        return Ok(None);
    };
    let rest = &text[start + OPEN.len()..];
    let spec = rest.find("]]").map_or(rest, |end| &rest[..end]);
    Fault::parse(spec).map(Some).ok_or(spec)
}

/// Which wire format a route speaks (decides the error shape).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    OpenAi,
    Anthropic,
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn json_value(status: StatusCode, body: &Value) -> Response {
    json_bytes(status, body.to_string().into_bytes())
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `{"error":{…}}` — OpenAI's error body (§1.5).
fn openai_error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

fn openai_error(code: u16, message: &str, kind: &str, err_code: Option<&str>) -> Response {
    json_value(
        status(code),
        &openai_error_body(message, kind, None, err_code),
    )
}

/// `{"type":"error","error":{…}}` — Anthropic's error body (§2.5).
fn anthropic_error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"})
}

fn anthropic_error(code: u16, kind: &str, message: &str) -> Response {
    json_value(status(code), &anthropic_error_body(kind, message))
}

/// A 400 for requests the mock cannot make sense of (bad JSON, unknown fault spec).
fn bad_request(proto: Proto, message: &str) -> Response {
    match proto {
        Proto::OpenAi => openai_error(400, message, "invalid_request_error", None),
        Proto::Anthropic => anthropic_error(400, "invalid_request_error", message),
    }
}

fn unauthorized(proto: Proto) -> Response {
    error_fault_response(proto, ErrorFault::Unauthorized, "")
}

/// The error response for `fault` on a route speaking `proto`.
fn error_fault_response(proto: Proto, fault: ErrorFault, model: &str) -> Response {
    use ErrorFault::*;
    let mut resp = match proto {
        Proto::OpenAi => match fault {
            BadRequest => json_value(
                StatusCode::BAD_REQUEST,
                &openai_error_body(
                    "This model's maximum context length is 128000 tokens. However, your messages resulted in 210000 tokens. Please reduce the length of the messages.",
                    "invalid_request_error",
                    Some("messages"),
                    Some("context_length_exceeded"),
                ),
            ),
            Unauthorized => openai_error(
                401,
                "Incorrect API key provided",
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            Forbidden => openai_error(
                403,
                "You do not have permission to access this resource: project does not have access to this model.",
                "invalid_request_error",
                Some("permission_denied"),
            ),
            ForbiddenKey => openai_error(
                403,
                "Your API key has been revoked.",
                "invalid_request_error",
                None,
            ),
            NotFound => openai_error(
                404,
                &format!("The model `{model}` does not exist or you do not have access to it."),
                "invalid_request_error",
                Some("model_not_found"),
            ),
            RateLimited | RateLimitedNoRetry | RateLimitedReset => openai_error(
                429,
                "Rate limit reached for requests on mock-model in organization org-mock: Limit 60, Used 60, Requested 1. Please try again in 7s.",
                "requests",
                Some("rate_limit_exceeded"),
            ),
            Quota => openai_error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                Some("insufficient_quota"),
            ),
            Internal => openai_error(
                500,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            ),
            Unavailable => openai_error(503, "Slow Down", "server_error", None),
            Overloaded => openai_error(
                503,
                "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
            ),
        },
        Proto::Anthropic => match fault {
            BadRequest => anthropic_error(
                400,
                "invalid_request_error",
                "prompt is too long: 210000 tokens > 200000 maximum",
            ),
            Unauthorized => anthropic_error(401, "authentication_error", "invalid x-api-key"),
            Forbidden => anthropic_error(
                403,
                "permission_error",
                "Your API key does not have permission to use the specified resource.",
            ),
            ForbiddenKey => anthropic_error(403, "permission_error", "This API key has been disabled."),
            NotFound => anthropic_error(404, "not_found_error", &format!("model: {model}")),
            RateLimited | RateLimitedNoRetry | RateLimitedReset => anthropic_error(
                429,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 requests per minute.",
            ),
            Quota => anthropic_error(
                400,
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
            ),
            Internal => anthropic_error(500, "api_error", "Internal server error"),
            Unavailable => anthropic_error(503, "api_error", "Service Unavailable"),
            Overloaded => anthropic_error(529, "overloaded_error", "Overloaded"),
        },
    };
    let headers = resp.headers_mut();
    match (fault, proto) {
        (RateLimited, _) => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        }
        (RateLimitedReset, Proto::OpenAi) => {
            headers.insert(
                "x-ratelimit-remaining-requests",
                HeaderValue::from_static("0"),
            );
            headers.insert(
                "x-ratelimit-reset-requests",
                HeaderValue::from_static("6m0s"),
            );
        }
        (RateLimitedReset, Proto::Anthropic) => {
            let reset = rfc3339(SystemTime::now() + Duration::from_secs(90));
            headers.insert(
                "anthropic-ratelimit-requests-remaining",
                HeaderValue::from_static("0"),
            );
            if let Ok(v) = HeaderValue::from_str(&reset) {
                headers.insert("anthropic-ratelimit-requests-reset", v);
            }
        }
        _ => {}
    }
    resp
}

/// Handles a fault that replaces the normal answer. Returns `None` for faults that alter the
/// normal answer instead (`slow:` after its sleep, `break-stream`, `stream-error`).
async fn early_fault(
    shared: &Shared,
    conn: &Conn,
    proto: Proto,
    fault: Fault,
    model: &str,
    key: &str,
) -> Option<Response> {
    match fault {
        Fault::EchoKey(code) => {
            let message = format!("request rejected; the API key provided was {key}");
            Some(match proto {
                Proto::OpenAi => openai_error(code, &message, "invalid_request_error", None),
                Proto::Anthropic => anthropic_error(code, "invalid_request_error", &message),
            })
        }
        Fault::Error(e) => Some(error_fault_response(proto, e, model)),
        Fault::Html502 => Some(
            (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "text/html")],
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
            )
                .into_response(),
        ),
        Fault::BadJson => Some(json_bytes(StatusCode::OK, b"this is not json".to_vec())),
        Fault::Timeout => Some(if shared.pause(Duration::from_secs(60)).await {
            StatusCode::GATEWAY_TIMEOUT.into_response()
        } else {
            conn.kill()
        }),
        Fault::Slow(ms) => {
            if shared.pause(Duration::from_millis(ms)).await {
                None
            } else {
                Some(conn.kill())
            }
        }
        Fault::Reset => Some(conn.kill()),
        Fault::BreakStream | Fault::StreamError | Fault::StallStream(_) | Fault::UsageLate(_) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Normal answers and how faults reshape them
// ---------------------------------------------------------------------------------------------

/// A normal answer, before any `break-stream` / `stream-error` reshaping.
enum Output {
    Json(Vec<u8>),
    /// Complete SSE events (`data: …\n\n` or `event: …\ndata: …\n\n`), one body frame each.
    Sse(Vec<Bytes>),
}

fn render(output: Output, fault: Option<Fault>, proto: Proto) -> Response {
    match (output, fault) {
        (Output::Json(body), Some(Fault::BreakStream)) => {
            // Headers and the first half of the JSON, then the connection is cut.
            let half = body.len() / 2;
            cut_after(vec![Bytes::from(body).slice(..half)], "application/json")
        }
        (Output::Json(_), Some(Fault::StreamError)) => {
            // A 200 whose body is an error object.
            let body = match proto {
                Proto::OpenAi => openai_error_body("overloaded", "server_error", None, None),
                Proto::Anthropic => anthropic_error_body("overloaded_error", "Overloaded"),
            };
            json_value(StatusCode::OK, &body)
        }
        (Output::Json(body), _) => json_bytes(StatusCode::OK, body),
        (Output::Sse(mut events), Some(Fault::BreakStream)) => {
            events.truncate(2);
            cut_after(events, "text/event-stream")
        }
        (Output::Sse(mut events), Some(Fault::StreamError)) => {
            events.truncate(1);
            events.push(match proto {
                Proto::OpenAi => Bytes::from_static(
                    b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"code\":null}}\n\n",
                ),
                Proto::Anthropic => Bytes::from_static(
                    b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
                ),
            });
            sse_response(stream::iter(events.into_iter().map(Ok)))
        }
        (Output::Sse(mut events), Some(Fault::StallStream(ms))) => {
            let rest = events.split_off(events.len().min(2));
            let pause = stream::once(tokio::time::sleep(Duration::from_millis(ms)))
                .filter_map(|()| async { None::<Result<Bytes, io::Error>> });
            sse_response(
                stream::iter(events.into_iter().map(Ok))
                    .chain(pause)
                    .chain(stream::iter(rest.into_iter().map(Ok))),
            )
        }
        (Output::Sse(mut events), Some(Fault::UsageLate(ms))) => {
            let tail = events.split_off(events.len().saturating_sub(2));
            let late = stream::once(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                stream::iter(tail.into_iter().map(Ok))
            })
            .flatten();
            sse_response(stream::iter(events.into_iter().map(Ok)).chain(late))
        }
        (Output::Sse(events), _) => sse_response(stream::iter(events.into_iter().map(Ok))),
    }
}

fn sse_response<S>(body: S) -> Response
where
    S: futures_util::Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
{
    let mut resp = Response::new(Body::from_stream(body));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A 200 that sends `frames`, then fails the body stream: hyper drops the connection without
/// the terminating chunk, so the client sees a truncated body. The short pause lets hyper flush
/// the frames before the error (otherwise they could be discarded along with the connection).
fn cut_after(frames: Vec<Bytes>, content_type: &'static str) -> Response {
    let cut = stream::once(async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "mock upstream: break-stream",
        ))
    });
    let mut resp = sse_response(stream::iter(frames.into_iter().map(Ok)).chain(cut));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Splits `text` at spaces into `min(3, words)` pieces of about equal word counts (spaces stay
/// attached to the preceding word), so the pieces concatenate back to `text`.
fn split_reply(text: &str) -> Vec<&str> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let pieces = words.len().clamp(1, 3);
    let (base, extra) = (words.len() / pieces, words.len() % pieces);
    let mut out = Vec::with_capacity(pieces);
    let (mut start, mut word) = (0, 0);
    for i in 0..pieces {
        let count = base + usize::from(i < extra);
        let len: usize = words[word..word + count].iter().map(|w| w.len()).sum();
        out.push(&text[start..start + len]);
        (start, word) = (start + len, word + count);
    }
    out
}

/// Text of an OpenAI or Anthropic `content`: the string itself, or the concatenated `text` of
/// every `text` part/block.
fn content_text(content: &Value) -> Cow<'_, str> {
    match content {
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(parts) => {
            let mut texts = parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str());
            match (texts.next(), texts.next()) {
                (None, _) => Cow::Borrowed(""),
                (Some(only), None) => Cow::Borrowed(only),
                (Some(a), Some(b)) => {
                    let mut s = String::from(a);
                    s.push_str(b);
                    texts.for_each(|t| s.push_str(t));
                    Cow::Owned(s)
                }
            }
        }
        _ => Cow::Borrowed(""),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC), as in Anthropic's rate-limit reset headers.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let key = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!key.is_empty()).then_some(key)
}

fn parse_body(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// What the model "says": plain text, or a call of the named tool with `{"city":"Paris"}`.
enum Reply<'a> {
    Text(String),
    Tool(&'a str),
}

// ---------------------------------------------------------------------------------------------
// OpenAI: POST /v1/chat/completions
// ---------------------------------------------------------------------------------------------

const OPENAI_TOOL_ARGS: &str = r#"{"city":"Paris"}"#;
const OPENAI_TOOL_ARG_PIECES: [&str; 2] = [r#"{"city":"#, r#""Paris"}"#];

/// Marker in the last user text: the OpenAI usage also reports 3 cache-write
/// tokens, as some OpenAI-compatible servers do (`cache_write_tokens`).
pub const CACHE_WRITE_MARKER: &str = "[[cache-write]]";

fn openai_usage(cache_write: bool) -> Value {
    if cache_write {
        return json!({"prompt_tokens": 15, "completion_tokens": 5, "total_tokens": 20,
                      "prompt_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 3}});
    }
    json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
           "prompt_tokens_details": {"cached_tokens": 2}})
}

async fn chat_completions(
    State(shared): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = parse_body(&body);
    shared.record(&method, &uri, &headers, &req);

    let Some(key) = bearer(&headers) else {
        return unauthorized(Proto::OpenAi);
    };
    let model = req["model"].as_str().unwrap_or("");
    let messages: &[Value] = req["messages"].as_array().map_or(&[], Vec::as_slice);
    let last_user_text = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map_or(Cow::Borrowed(""), |m| content_text(&m["content"]));

    let fault = match credential_fault(key) {
        Ok(None) if req.is_null() => return bad_request(Proto::OpenAi, "mock: body is not JSON"),
        Ok(None) => marker_fault(&last_user_text),
        other => other,
    };
    let fault = match fault {
        Ok(f) => f,
        Err(spec) => {
            return bad_request(Proto::OpenAi, &format!("mock: unknown fault spec `{spec}`"))
        }
    };
    if let Some(f) = fault {
        if let Some(resp) = early_fault(&shared, &conn, Proto::OpenAi, f, model, key).await {
            return resp;
        }
    }

    let last = messages.last();
    let has_tools = req["tools"].as_array().is_some_and(|t| !t.is_empty());
    let reply = if last.is_some_and(|m| m["role"] == "tool") {
        let said = last.map_or(Cow::Borrowed(""), |m| content_text(&m["content"]));
        Reply::Text(format!("tool said: {said}"))
    } else if has_tools && req["tool_choice"] != "none" {
        Reply::Tool(req["tools"][0]["function"]["name"].as_str().unwrap_or(""))
    } else {
        Reply::Text(format!("echo: {last_user_text}"))
    };

    let id = format!("chatcmpl-mock{}", shared.next_id());
    let created = unix_now();
    let cache_write = last_user_text.contains(CACHE_WRITE_MARKER);
    let output = if req["stream"] == true {
        let include_usage = req["stream_options"]["include_usage"] == true;
        let usage = include_usage.then(|| openai_usage(cache_write));
        Output::Sse(openai_stream(&id, created, model, &reply, usage))
    } else {
        Output::Json(openai_completion(&id, created, model, &reply, cache_write))
    };
    render(output, fault, Proto::OpenAi)
}

fn openai_completion(
    id: &str,
    created: u64,
    model: &str,
    reply: &Reply<'_>,
    cache_write: bool,
) -> Vec<u8> {
    let (message, finish_reason) = match reply {
        Reply::Text(text) => (
            json!({"role": "assistant", "content": text, "refusal": null}),
            "stop",
        ),
        Reply::Tool(name) => (
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_mock1", "type": "function",
                 "function": {"name": name, "arguments": OPENAI_TOOL_ARGS}}]}),
            "tool_calls",
        ),
    };
    let body = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "logprobs": null, "finish_reason": finish_reason, "message": message}],
        "usage": openai_usage(cache_write),
    });
    body.to_string().into_bytes()
}

fn openai_stream(
    id: &str,
    created: u64,
    model: &str,
    reply: &Reply<'_>,
    usage: Option<Value>,
) -> Vec<Bytes> {
    let include_usage = usage.is_some();
    // Every chunk shares id/created/model; `usage` is present (null) only with include_usage.
    let chunk = |choices: Value, usage: Value| -> Bytes {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                           "model": model, "system_fingerprint": "fp_mock", "choices": choices});
        if include_usage {
            c["usage"] = usage;
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let delta = |delta: Value, finish_reason: Value| -> Bytes {
        chunk(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]),
            Value::Null,
        )
    };

    let mut events = Vec::with_capacity(7);
    let finish_reason = match reply {
        Reply::Text(text) => {
            events.push(delta(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
            for piece in split_reply(text) {
                events.push(delta(json!({"content": piece}), Value::Null));
            }
            "stop"
        }
        Reply::Tool(name) => {
            events.push(delta(
                json!({"role": "assistant", "content": null}),
                Value::Null,
            ));
            events.push(delta(
                json!({"tool_calls": [{"index": 0, "id": "call_mock1", "type": "function",
                                       "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            for piece in OPENAI_TOOL_ARG_PIECES {
                events.push(delta(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
            "tool_calls"
        }
    };
    events.push(delta(json!({}), json!(finish_reason)));
    if let Some(usage) = usage {
        events.push(chunk(json!([]), usage));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

// ---------------------------------------------------------------------------------------------
// Anthropic: POST /v1/messages
// ---------------------------------------------------------------------------------------------

const ANTHROPIC_TOOL_PREAMBLE: &str = "Let me check.";
const ANTHROPIC_TOOL_JSON_PIECES: [&str; 3] = ["", r#"{"city": "Pa"#, r#"ris"}"#];

async fn messages(
    State(shared): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = parse_body(&body);
    shared.record(&method, &uri, &headers, &req);

    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty());
    let (Some(key), true) = (key, headers.contains_key("anthropic-version")) else {
        return unauthorized(Proto::Anthropic);
    };
    let model = req["model"].as_str().unwrap_or("");
    let messages: &[Value] = req["messages"].as_array().map_or(&[], Vec::as_slice);
    let last_user = messages.iter().rev().find(|m| m["role"] == "user");
    let last_user_text = last_user.map_or(Cow::Borrowed(""), |m| content_text(&m["content"]));

    let fault = match credential_fault(key) {
        Ok(None) if req.is_null() => {
            return bad_request(Proto::Anthropic, "mock: body is not JSON")
        }
        Ok(None) => marker_fault(&last_user_text),
        other => other,
    };
    let fault = match fault {
        Ok(f) => f,
        Err(spec) => {
            return bad_request(
                Proto::Anthropic,
                &format!("mock: unknown fault spec `{spec}`"),
            )
        }
    };
    if let Some(f) = fault {
        if let Some(resp) = early_fault(&shared, &conn, Proto::Anthropic, f, model, key).await {
            return resp;
        }
    }

    let tool_result = last_user
        .and_then(|m| m["content"].as_array())
        .and_then(|blocks| blocks.iter().find(|b| b["type"] == "tool_result"));
    let has_tools = req["tools"].as_array().is_some_and(|t| !t.is_empty());
    let reply = if let Some(result) = tool_result {
        Reply::Text(format!("tool said: {}", content_text(&result["content"])))
    } else if has_tools && req["tool_choice"]["type"] != "none" {
        Reply::Tool(req["tools"][0]["name"].as_str().unwrap_or(""))
    } else {
        Reply::Text(format!("echo: {last_user_text}"))
    };

    let id = format!("msg_mock{}", shared.next_id());
    let output = if req["stream"] == true {
        Output::Sse(anthropic_stream(&id, model, &reply))
    } else {
        Output::Json(anthropic_message(&id, model, &reply))
    };
    render(output, fault, Proto::Anthropic)
}

fn anthropic_message(id: &str, model: &str, reply: &Reply<'_>) -> Vec<u8> {
    let (content, stop_reason) = match reply {
        Reply::Text(text) => (json!([{"type": "text", "text": text}]), "end_turn"),
        Reply::Tool(name) => (
            json!([{"type": "text", "text": ANTHROPIC_TOOL_PREAMBLE},
                   {"type": "tool_use", "id": "toolu_mock1", "name": name,
                    "input": {"city": "Paris"}}]),
            "tool_use",
        ),
    };
    let body = json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5,
                  "cache_creation_input_tokens": 1, "cache_read_input_tokens": 2},
    });
    body.to_string().into_bytes()
}

fn anthropic_event(data: &Value) -> Bytes {
    // The event name always equals the data's `type`.
    let name = data["type"].as_str().unwrap_or("");
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn anthropic_stream(id: &str, model: &str, reply: &Reply<'_>) -> Vec<Bytes> {
    let mut events = Vec::with_capacity(12);
    events.push(anthropic_event(
        &json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 1,
                  "cache_read_input_tokens": 2, "output_tokens": 1}}}),
    ));
    events.push(anthropic_event(&json!({"type": "ping"})));

    let text_block = |events: &mut Vec<Bytes>, text: &str| {
        events.push(anthropic_event(
            &json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in split_reply(text) {
            events.push(anthropic_event(
                &json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        events.push(anthropic_event(
            &json!({"type": "content_block_stop", "index": 0}),
        ));
    };
    let stop_reason = match reply {
        Reply::Text(text) => {
            text_block(&mut events, text);
            "end_turn"
        }
        Reply::Tool(name) => {
            text_block(&mut events, ANTHROPIC_TOOL_PREAMBLE);
            events.push(anthropic_event(
                &json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_mock1", "name": name,
                                  "input": {}}}),
            ));
            for piece in ANTHROPIC_TOOL_JSON_PIECES {
                events.push(anthropic_event(
                    &json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
            events.push(anthropic_event(
                &json!({"type": "content_block_stop", "index": 1}),
            ));
            "tool_use"
        }
    };
    events.push(anthropic_event(&json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": 5}})));
    events.push(anthropic_event(&json!({"type": "message_stop"})));
    events
}

// ---------------------------------------------------------------------------------------------
// OpenAI: POST /v1/embeddings, GET /v1/models; 404 for the rest
// ---------------------------------------------------------------------------------------------

async fn embeddings(
    State(shared): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = parse_body(&body);
    shared.record(&method, &uri, &headers, &req);

    let Some(key) = bearer(&headers) else {
        return unauthorized(Proto::OpenAi);
    };
    let model = req["model"].as_str().unwrap_or("");
    let input = &req["input"];
    let fault = match credential_fault(key) {
        Ok(None) => match input {
            Value::String(s) => marker_fault(s),
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .map(marker_fault)
                .find(|f| !matches!(f, Ok(None)))
                .unwrap_or(Ok(None)),
            _ => Ok(None),
        },
        other => other,
    };
    let fault = match fault {
        Ok(f) => f,
        Err(spec) => {
            return bad_request(Proto::OpenAi, &format!("mock: unknown fault spec `{spec}`"))
        }
    };
    if let Some(f) = fault {
        if let Some(resp) = early_fault(&shared, &conn, Proto::OpenAi, f, model, key).await {
            return resp;
        }
    }

    // A string, or an array of strings / token arrays (one embedding each); a bare array of
    // token ids is a single input.
    let count = match input {
        Value::Array(items) if items.first().is_some_and(Value::is_number) => 1,
        Value::Array(items) => items.len(),
        Value::Null => 0,
        _ => 1,
    };
    let data: Vec<Value> = (0..count)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}))
        .collect();
    let body = json!({"object": "list", "data": data, "model": model,
                      "usage": {"prompt_tokens": 3, "total_tokens": 3}});
    render(
        Output::Json(body.to_string().into_bytes()),
        fault,
        Proto::OpenAi,
    )
}

async fn models(State(shared): AppState, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    shared.record(&method, &uri, &headers, &Value::Null);
    json_value(
        StatusCode::OK,
        &json!({"object": "list", "data": [
            {"id": "mock-model", "object": "model", "created": 1_700_000_000u64, "owned_by": "mock"}]}),
    )
}

async fn not_found(
    State(shared): AppState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.record(&method, &uri, &headers, &parse_body(&body));
    openai_error(
        404,
        &format!("Unknown request URL: {method} {}", uri.path()),
        "invalid_request_error",
        Some("unknown_url"),
    )
}
