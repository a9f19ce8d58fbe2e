//! Connections of both planes: accepting, each plane's connection cap, and
//! serving one connection with hyper under relay's timeouts.
//!
//! - **Header timeout**: a new connection, or one whose next request has
//!   begun to arrive, must deliver the whole request head in
//!   `header_timeout`, else it is closed (a client that sends nothing, or a
//!   byte a second, holds a socket for that long at most).
//! - **Idle timeout**: a keep-alive connection with no request in flight is
//!   closed after `idle_timeout`.
//! - **Body timeout**: a request body must arrive within `body_timeout` of
//!   its head; only while relay reads it, so a long streamed *response* is
//!   never cut.
//! - **Connection cap**: beyond `max_connections` open connections, a new
//!   one is answered `503` with `retry-after` and `connection: close`
//!   without being served.
//!
//! The timers are checked lazily: one sleep per connection that, when it
//! fires, recomputes the deadline from atomics the I/O and the request path
//! update, so a request costs no timer operation.
//!
//! After an early answer (401, 413, 503…) sent while a request body is
//! still unread, an HTTP/1 response carries `connection: close`: hyper
//! closes such a connection, and the header tells the client not to reuse
//! it (it would otherwise get a broken pipe).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, Request, Response, Version};
use axum::Router;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long each phase of a connection may take, and how many connections a
/// plane holds at once.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(20),
            max_connections: 10_000,
        }
    }
}

/// Connections refused politely at once; beyond, a refused connection is
/// simply closed.
const MAX_REFUSING: usize = 256;

/// One plane (data or control): its router, limits and connection slots.
/// Cheap to clone.
#[derive(Clone)]
pub struct Plane(Arc<PlaneInner>);

struct PlaneInner {
    /// `data` or `control`, for logs.
    name: &'static str,
    /// The variable that sets the cap, named in refusals and logs.
    cap_var: &'static str,
    limits: ConnLimits,
    app: Router,
    slots: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    /// When the last "at the cap" warning was logged (ms since `started`).
    last_warned: AtomicU64,
    started: Instant,
}

/// A connection's place under the cap; given back when it closes.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Plane {
    pub fn new(name: &'static str, cap_var: &'static str, limits: ConnLimits, app: Router) -> Self {
        let max = limits.max_connections.max(1);
        Plane(Arc::new(PlaneInner {
            name,
            cap_var,
            limits: ConnLimits {
                max_connections: max,
                ..limits
            },
            app,
            slots: Arc::new(Semaphore::new(max as usize)),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            last_warned: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        }))
    }

    /// A slot for a new connection, or `None` after refusing it (a 503 on a
    /// task of its own, or a plain close when many refusals are under way).
    pub fn admit(&self, tcp: TcpStream) -> Option<(TcpStream, Slot)> {
        match self.0.slots.clone().try_acquire_owned() {
            Ok(permit) => Some((tcp, Slot(permit))),
            Err(_) => {
                self.warn_at_cap();
                if let Ok(permit) = self.0.refusing.clone().try_acquire_owned() {
                    let cap_var = self.0.cap_var;
                    tokio::spawn(async move {
                        refuse(tcp, cap_var).await;
                        drop(permit);
                    });
                }
                None
            }
        }
    }

    fn warn_at_cap(&self) {
        let now = self.0.started.elapsed().as_millis() as u64;
        let last = self.0.last_warned.load(Ordering::Relaxed);
        if last == u64::MAX || now.saturating_sub(last) >= 10_000 {
            self.0.last_warned.store(now, Ordering::Relaxed);
            tracing::warn!(
                plane = self.0.name,
                max = self.0.limits.max_connections,
                "{} plane at its connection cap ({}); refusing new connections with 503",
                self.0.name,
                self.0.cap_var
            );
        }
    }

    /// Serves an admitted connection on a task of the current runtime until
    /// it closes; `shutdown` finishes its in-flight requests and closes it.
    pub fn spawn(&self, tcp: TcpStream, peer: SocketAddr, slot: Slot, shutdown: CancellationToken) {
        let plane = self.clone();
        tokio::spawn(async move {
            plane.serve(tcp, peer, shutdown).await;
            drop(slot);
        });
    }

    /// Resolves once every admitted connection has closed.
    pub async fn drained(&self) {
        let _all = self
            .0
            .slots
            .acquire_many(self.0.limits.max_connections)
            .await;
    }

    async fn serve(&self, tcp: TcpStream, peer: SocketAddr, shutdown: CancellationToken) {
        let limits = self.0.limits;
        let watch = Arc::new(Watch::new());
        let io = TokioIo::new(Watched {
            inner: tcp,
            watch: watch.clone(),
        });
        let service = ConnService {
            app: self.0.app.clone(),
            peer,
            watch: watch.clone(),
            body_timeout: limits.body_timeout,
        };
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // relay's own header and idle timeouts apply (hyper's header timer
        // would also run while a connection is idle, cutting keep-alive).
        builder.http1().header_read_timeout(None);
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let check = tokio::time::sleep(limits.header_timeout);
        tokio::pin!(check);
        let mut closing = false;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::trace!(error = %e, plane = self.0.name, "connection ended with an error");
                    }
                    break;
                }
                () = shutdown.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = &mut check => match watch.deadline(&limits) {
                    Deadline::At(at, _) if at > watch.now_ms() => {
                        let wait = Duration::from_millis(at - watch.now_ms());
                        check.as_mut().reset(tokio::time::Instant::now() + wait);
                    }
                    Deadline::At(_, why) => {
                        tracing::debug!(plane = self.0.name, %peer, "closing connection: {why}");
                        break;
                    }
                    Deadline::Busy => {
                        let again = limits.header_timeout.min(limits.idle_timeout);
                        check.as_mut().reset(tokio::time::Instant::now() + again);
                    }
                },
            }
        }
    }
}

/// Accepts connections until `shutdown`, handing each admitted one to
/// `hand` (with TCP_NODELAY set). Errors that concern one queued
/// connection are skipped; others (out of descriptors) wait a second.
pub async fn accept(
    listener: &TcpListener,
    plane: &Plane,
    shutdown: &CancellationToken,
    mut hand: impl FnMut(TcpStream, SocketAddr, Slot),
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                ) {
                    tracing::error!(error = %e, plane = plane.0.name, "accepting a connection failed");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                continue;
            }
        };
        // Without TCP_NODELAY a response written in two pieces waits out the
        // peer's delayed ACK (~40 ms).
        let _ = tcp.set_nodelay(true);
        if let Some((tcp, slot)) = plane.admit(tcp) {
            hand(tcp, peer, slot);
        }
    }
}

/// A plane served on the current runtime: accept until `shutdown`, then
/// wait for the open connections to finish.
pub async fn run(listener: TcpListener, plane: Plane, shutdown: CancellationToken) {
    accept(&listener, &plane, &shutdown, |tcp, peer, slot| {
        plane.spawn(tcp, peer, slot, shutdown.clone());
    })
    .await;
    drop(listener);
    plane.drained().await;
}

/// The answer to a connection beyond the cap: a 503 readable by both
/// OpenAI and Anthropic clients, then close. Bounded in time; the request
/// (if any) is read and discarded briefly so closing does not reset the
/// connection before the client has read the answer.
async fn refuse(mut tcp: TcpStream, cap_var: &str) {
    let body = format!(
        r#"{{"type":"error","error":{{"type":"overloaded_error","message":"relay is at its connection limit ({cap_var}); retry shortly","param":null,"code":"too_many_connections"}}}}"#
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let polite = async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024;
        while left > 0 {
            let n = tcp.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left -= n.min(left);
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), polite).await;
}

/// What a connection is doing, as far as its timeouts care. Times are
/// milliseconds since the connection was accepted.
struct Watch {
    accepted: Instant,
    /// Requests whose response has not finished.
    in_flight: AtomicU32,
    /// When the connection last went idle (its last response finished).
    idle_since: AtomicU64,
    /// When the head of the next request began to arrive; [`NONE`] while
    /// a request is in flight or the connection sits idle. A fresh
    /// connection counts as having begun its first head.
    head_since: AtomicU64,
    /// HTTP/1: the current request's body has been read to its end.
    body_done: AtomicBool,
}

const NONE: u64 = u64::MAX;

enum Deadline {
    /// Close at this time (ms) unless something happens before.
    At(u64, &'static str),
    /// A request is in flight: its own timeouts apply.
    Busy,
}

impl Watch {
    fn new() -> Self {
        Watch {
            accepted: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            body_done: AtomicBool::new(true),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn deadline(&self, limits: &ConnLimits) -> Deadline {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Deadline::Busy;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2);
        match self.head_since.load(Ordering::Acquire) {
            NONE => Deadline::At(
                self.idle_since
                    .load(Ordering::Acquire)
                    .saturating_add(ms(limits.idle_timeout)),
                "idle keep-alive connection (RELAY_IDLE_TIMEOUT)",
            ),
            since => Deadline::At(
                since.saturating_add(ms(limits.header_timeout)),
                "request head not received in time (RELAY_HEADER_TIMEOUT)",
            ),
        }
    }

    /// Bytes arrived: on an idle connection, a new request head begins.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == NONE
        {
            self.head_since.store(self.now_ms(), Ordering::Release);
        }
    }

    fn request_started(&self, body_done: bool) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NONE, Ordering::Release);
        self.body_done.store(body_done, Ordering::Release);
    }

    fn request_finished(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket, telling the watch when bytes arrive.
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.on_read();
        }
        res
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's service for one connection: wraps the request body in its
/// timeout, adds the peer address (`ConnectInfo`), and tracks the response
/// until its body is done.
#[derive(Clone)]
struct ConnService {
    app: Router,
    peer: SocketAddr,
    watch: Arc<Watch>,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = ServeFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let http1 = req.version() <= Version::HTTP_11;
        let empty = req.body().is_end_stream();
        self.watch.request_started(empty);
        let guard = InFlight(self.watch.clone());
        let mut req = req.map(|body| TimedBody {
            inner: body,
            deadline: tokio::time::Instant::now() + self.body_timeout,
            sleep: None,
            watch: self.watch.clone(),
        });
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let future = tower_service::Service::call(&mut self.app.clone(), req);
        ServeFuture {
            future,
            guard: Some(guard),
            http1,
        }
    }
}

/// A request in flight; its end (response body done, or the request
/// abandoned) makes the connection idle.
struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

struct ServeFuture {
    future: axum::routing::future::RouteFuture<Infallible>,
    guard: Option<InFlight>,
    http1: bool,
}

impl Future for ServeFuture {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Poll::Ready(Ok(resp)) = Pin::new(&mut this.future).poll(cx) else {
            return Poll::Pending;
        };
        let Some(guard) = this.guard.take() else {
            return Poll::Pending;
        };
        let mut resp = resp;
        if this.http1 && !guard.0.body_done.load(Ordering::Acquire) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(resp.map(|body| Tracked {
            inner: body,
            _guard: guard,
        })))
    }
}

/// A response body that keeps its request counted in flight until done.
pub struct Tracked {
    inner: axum::body::Body,
    _guard: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body could not be read within `RELAY_BODY_TIMEOUT`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within RELAY_BODY_TIMEOUT")]
pub struct BodyTimeout;

/// Whether a body-reading error (anywhere in its chain) is [`BodyTimeout`].
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<BodyTimeout>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The request body under its read deadline. The timer is created only
/// when the body is not all there yet (most bodies arrive with the head).
struct TimedBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    watch: Arc<Watch>,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.watch.body_done.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(Some(res)) => {
                if this.inner.is_end_stream() {
                    this.watch.body_done.store(true, Ordering::Release);
                }
                Poll::Ready(Some(res.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Raises the open-file soft limit to the hard limit (each connection is a
/// descriptor); logs what it got.
pub fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_connection_state() {
        let limits = ConnLimits {
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(1000),
            ..ConnLimits::default()
        };
        let w = Watch::new();
        // Fresh: the head is due within the header timeout.
        assert!(matches!(w.deadline(&limits), Deadline::At(100, _)));
        w.request_started(true);
        assert!(matches!(w.deadline(&limits), Deadline::Busy));
        // Bytes while busy do not start a head.
        w.on_read();
        assert_eq!(w.head_since.load(Ordering::Relaxed), NONE);
        w.request_finished();
        let idle = w.idle_since.load(Ordering::Relaxed);
        assert!(matches!(w.deadline(&limits), Deadline::At(at, _) if at == idle + 1000));
        // The next head begins: the header timeout applies again.
        w.on_read();
        let since = w.head_since.load(Ordering::Relaxed);
        assert!(matches!(w.deadline(&limits), Deadline::At(at, _) if at == since + 100));
    }

    #[test]
    fn body_timeouts_are_found_in_error_chains() {
        let direct: Box<dyn std::error::Error + Send + Sync> = Box::new(BodyTimeout);
        assert!(is_body_timeout(direct.as_ref()));
        let wrapped = axum::Error::new(BodyTimeout);
        assert!(is_body_timeout(&wrapped));
        let other = std::io::Error::other("x");
        assert!(!is_body_timeout(&other));
    }
}
