//! The upstream HTTP client: hyper's pooled client directly (no reqwest
//! layers on the hot path), one per connect timeout, keep-alive, HTTP/1.1
//! and HTTP/2 (ALPN), rustls with webpki roots, TCP_NODELAY, and no
//! redirects (a redirect would carry the host key to wherever it points).
//! A request's budget covers sending it and reading its whole body.

pub mod breaker;
pub mod classify;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustc_hash::FxHashMap;
use tokio::time::Sleep;

/// Largest non-streamed upstream response relay reads.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

type Client = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An upstream request: method POST, absolute URI, headers, whole body.
pub type Request = http::Request<Full<Bytes>>;

/// Clients by connect timeout; read lock-free, copied on the rare insert.
#[derive(Clone, Default)]
pub struct Upstreams {
    clients: Arc<ArcSwap<FxHashMap<Duration, Client>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// How talking to the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The request's budget ran out (sending, or reading the body).
    #[error("the upstream did not answer within the request timeout")]
    Timeout,
    /// Connecting, TLS, writing the request or reading the response head.
    #[error(transparent)]
    Request(#[from] hyper_util::client::legacy::Error),
    /// Reading the response body.
    #[error(transparent)]
    Body(#[from] hyper::Error),
}

impl TransportError {
    /// The budget ran out, or connecting took longer than the host's
    /// connect timeout.
    pub fn is_timeout(&self) -> bool {
        let mut src: Option<&(dyn std::error::Error + 'static)> = match self {
            TransportError::Timeout => return true,
            TransportError::Request(e) => Some(e),
            TransportError::Body(e) => Some(e),
        };
        while let Some(e) = src {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return true;
            }
            src = e.source();
        }
        false
    }
}

/// An upstream response whose head has arrived.
pub struct Response {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Body,
}

/// A response body, chunk by chunk, still under the request's budget.
pub struct Body {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
}

impl Body {
    /// The body's declared length, when it has one.
    pub fn content_length(&self) -> Option<u64> {
        self.inner.size_hint().exact()
    }
}

impl futures_util::Stream for Body {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                    // Empty data and trailers carry nothing relay forwards.
                    _ => continue,
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    return match self.deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(TransportError::Timeout))),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

impl Upstreams {
    /// Sends `req` with the client for `connect_timeout`; `budget` bounds
    /// everything up to the end of the response body.
    pub async fn send(
        &self,
        connect_timeout: Duration,
        req: Request,
        budget: Duration,
    ) -> Result<Result<Response, TransportError>, UpstreamError> {
        let mut pending = {
            let clients = self.clients.load();
            if let Some(c) = clients.get(&connect_timeout) {
                c.request(req)
            } else {
                self.insert(connect_timeout)?.request(req)
            }
        };
        let mut deadline = Box::pin(tokio::time::sleep(budget));
        let sent = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut pending).poll(cx) {
                return Poll::Ready(r.map_err(TransportError::from));
            }
            match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(TransportError::Timeout)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        Ok(sent.map(|resp| {
            let (head, inner) = resp.into_parts();
            Response {
                status: head.status,
                headers: head.headers,
                body: Body { inner, deadline },
            }
        }))
    }

    /// Builds the client for a connect timeout (first use only).
    fn insert(&self, connect_timeout: Duration) -> Result<Client, UpstreamError> {
        let client = build(connect_timeout)?;
        self.clients.rcu(|old| {
            let mut m = FxHashMap::clone(old);
            m.entry(connect_timeout).or_insert_with(|| client.clone());
            m
        });
        Ok(self
            .clients
            .load()
            .get(&connect_timeout)
            .cloned()
            .unwrap_or(client))
    }
}

fn build(connect_timeout: Duration) -> Result<Client, UpstreamError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(30)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| UpstreamError::Build(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https),
    )
}

/// The `user-agent` relay sends upstream.
pub const USER_AGENT: &str = concat!("relay/", env!("CARGO_PKG_VERSION"));
