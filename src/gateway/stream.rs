//! Relaying a streamed reply: upstream SSE events are forwarded as they
//! complete (never buffering more than an unfinished event), watched for
//! usage and for the protocol's terminal event. A stream that breaks or ends
//! without its terminal event gets the client protocol's error event instead
//! of a clean finish. Usage is recorded exactly once, when the stream ends or
//! the client goes away (which drops the stream and with it the upstream
//! request).

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};

use tokio_util::sync::CancellationToken;

use crate::adapters::translate::StreamTranslator;
use crate::adapters::{anthropic, openai, sse, Protocol, Seen, Usage};
use crate::upstream::{self, TransportError};

pub enum Watch {
    OpenAi(openai::StreamWatch),
    Anthropic(anthropic::StreamWatch),
    /// A cross-protocol stream: events are decoded and re-encoded for the
    /// client instead of forwarded.
    Translate(Box<StreamTranslator>),
}

impl Watch {
    /// Appends what the client gets for `event` to `out`.
    fn feed(&mut self, event: &Bytes, out: &mut BytesMut) -> Seen {
        let seen = match self {
            Watch::OpenAi(w) => w.observe(event),
            Watch::Anthropic(w) => w.observe(event),
            Watch::Translate(t) => return t.feed(event, out),
        };
        if seen != Seen::Skip {
            out.extend_from_slice(event);
        }
        seen
    }

    /// At EOF without a terminal event: true if the stream could still be
    /// finished cleanly (bytes appended to `out`).
    fn finish_at_eof(&mut self, out: &mut BytesMut) -> bool {
        match self {
            Watch::Translate(t) => t.finish_at_eof(out),
            _ => false,
        }
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            Watch::OpenAi(w) => w.usage,
            Watch::Anthropic(w) => w.usage,
            Watch::Translate(t) => t.usage(),
        }
    }
}

/// Calls `done(status, usage)` once, when dropped.
struct OnEnd<F: FnOnce(u16, Option<Usage>)> {
    done: Option<F>,
    status: u16,
    watch: Watch,
}

impl<F: FnOnce(u16, Option<Usage>)> Drop for OnEnd<F> {
    fn drop(&mut self) {
        if let Some(f) = self.done.take() {
            f(self.status, self.watch.usage());
        }
    }
}

struct State<F: FnOnce(u16, Option<Usage>)> {
    upstream: futures_util::stream::Chain<
        futures_util::stream::Once<std::future::Ready<Result<Bytes, TransportError>>>,
        upstream::Body,
    >,
    splitter: sse::Splitter,
    end: OnEnd<F>,
    client: Protocol,
    finished: bool,
    /// Cancelled at the shutdown deadline: the stream ends with the
    /// protocol's error event and its usage is recorded.
    cutoff: CancellationToken,
}

/// Status recorded for a stream cut before its terminal event (the client
/// already has a 200; this is for usage records and metrics).
pub(super) const BROKEN_STREAM: u16 = 502;
/// Status recorded for a stream cut at the shutdown deadline (not the
/// upstream's fault: no breaker failure).
pub(super) const SHUTDOWN_CUT: u16 = 503;
/// Status recorded when the client went away before the end.
const CLIENT_CLOSED: u16 = 499;

/// `first` is a chunk already read from `upstream` (the gateway reads one
/// before committing to a stream, so that a stream failing before its first
/// byte can still be retried elsewhere).
pub fn relay<F>(
    first: Bytes,
    upstream: upstream::Body,
    watch: Watch,
    client: Protocol,
    cutoff: CancellationToken,
    done: F,
) -> BoxStream<'static, Result<Bytes, std::io::Error>>
where
    F: FnOnce(u16, Option<Usage>) + Send + 'static,
{
    let state = State {
        upstream: futures_util::stream::once(std::future::ready(Ok(first))).chain(upstream),
        splitter: sse::Splitter::default(),
        end: OnEnd {
            done: Some(done),
            status: CLIENT_CLOSED,
            watch,
        },
        client,
        finished: false,
        cutoff,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.finished {
                return None;
            }
            let next = tokio::select! {
                biased;
                () = st.cutoff.cancelled() => None,
                n = st.upstream.next() => Some(n),
            };
            let Some(next) = next else {
                tracing::warn!("shutdown deadline: ending an in-flight stream with an error event");
                let out = fail(
                    &mut st,
                    "relay is shutting down and this stream did not finish in time (RELAY_SHUTDOWN_TIMEOUT); retry the request",
                );
                st.end.status = SHUTDOWN_CUT;
                return Some((Ok(out), st));
            };
            match next {
                Some(Ok(chunk)) => {
                    st.splitter.push(&chunk);
                    let mut out = BytesMut::new();
                    while let Some(event) = st.splitter.next_event() {
                        match st.end.watch.feed(&event, &mut out) {
                            Seen::Forward | Seen::Skip => {}
                            Seen::Done => {
                                st.end.status = 200;
                                st.finished = true;
                                break;
                            }
                            Seen::Error => {
                                st.end.status = BROKEN_STREAM;
                                st.finished = true;
                                break;
                            }
                        }
                    }
                    if !st.finished && st.splitter.overflowed() {
                        out.extend_from_slice(&fail(
                            &mut st,
                            "the upstream sent an event larger than relay accepts",
                        ));
                    }
                    if !out.is_empty() {
                        return Some((Ok(out.freeze()), st));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "upstream stream broke");
                    return Some((
                        Ok(fail(
                            &mut st,
                            "the upstream stream broke before it finished",
                        )),
                        st,
                    ));
                }
                None => {
                    let mut out = BytesMut::new();
                    if st.end.watch.finish_at_eof(&mut out) {
                        st.end.status = 200;
                        st.finished = true;
                        return Some((Ok(out.freeze()), st));
                    }
                    return Some((
                        Ok(fail(
                            &mut st,
                            "the upstream stream ended before its final event",
                        )),
                        st,
                    ));
                }
            }
        }
    })
    .boxed()
}

fn fail<F: FnOnce(u16, Option<Usage>)>(st: &mut State<F>, message: &str) -> Bytes {
    st.finished = true;
    st.end.status = BROKEN_STREAM;
    st.splitter.clear();
    st.client.error_event(message)
}
