//! Relaying a streamed reply: upstream SSE events are forwarded as they
//! complete (never buffering more than an unfinished event), watched for
//! usage and for the protocol's terminal event. A stream that breaks or ends
//! without its terminal event gets the client protocol's error event instead
//! of a clean finish. Usage is recorded exactly once, when the stream ends or
//! the client goes away. In that case relay reads on briefly for the usage
//! (at most `GRACE_TIME` and `GRACE_BYTES`), then drops the upstream request;
//! without usage by then it charges an estimate, marked as such.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};

use tokio_util::sync::CancellationToken;

use super::estimate::{Estimate, OutputCounter};

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

/// How long and how much relay keeps reading an upstream stream for its
/// usage after the client went away (this amends SPEC §4's "client
/// disconnect cancels the upstream request"); then it cancels.
pub(super) const GRACE_TIME: Duration = Duration::from_secs(1);
pub(super) const GRACE_BYTES: usize = 64 << 10;

type Upstream = futures_util::stream::Chain<
    futures_util::stream::Once<std::future::Ready<Result<Bytes, TransportError>>>,
    upstream::Body,
>;

/// What the stream ends with: `done(status, usage, estimated)` is called
/// exactly once, when the stream finishes, breaks, or (after the grace
/// read) when the client has gone away.
struct State<F: FnOnce(u16, Option<Usage>, bool)> {
    upstream: Upstream,
    splitter: sse::Splitter,
    watch: Watch,
    done: Option<F>,
    status: u16,
    client: Protocol,
    /// The upstream's protocol (what `upstream` speaks).
    speaks: Protocol,
    finished: bool,
    /// The upstream's final usage figures have been seen.
    usage_final: bool,
    output: OutputCounter,
    estimate: Estimate,
    /// Cancelled at the shutdown deadline: the stream ends with the
    /// protocol's error event and its usage is recorded.
    cutoff: CancellationToken,
}

impl<F: FnOnce(u16, Option<Usage>, bool)> State<F> {
    /// Feeds one upstream event: what the client gets goes to `out`; output
    /// is counted and the final usage noticed.
    fn feed(&mut self, event: &Bytes, out: &mut BytesMut) -> Seen {
        if !self.usage_final {
            self.output.observe(event);
        }
        let seen = self.watch.feed(event, out);
        let final_now = match self.speaks {
            // OpenAI sends usage once, in the last chunk.
            Protocol::OpenAi => self.watch.usage().is_some(),
            // Anthropic's message_start has a provisional count; the final
            // one comes with message_delta.
            Protocol::Anthropic => {
                memchr::memmem::find(event, b"message_delta").is_some()
                    && memchr::memmem::find(event, b"\"usage\"").is_some()
            }
        };
        if final_now || seen == Seen::Done {
            self.usage_final = true;
        }
        seen
    }

    /// The usage to record: the upstream's when its final figures arrived,
    /// else an estimate (second value `true`): input as far as the upstream
    /// said (else estimated from the request), output as counted from the
    /// deltas read (else the request's bound).
    fn charge(&self) -> (Option<Usage>, bool) {
        let seen = self.watch.usage();
        if self.usage_final {
            return (seen, false);
        }
        let counted = self.output.tokens();
        let base = seen.unwrap_or(Usage {
            input_tokens: self.estimate.input_tokens,
            ..Usage::default()
        });
        let output_tokens = if counted > 0 {
            counted.max(base.output_tokens)
        } else {
            self.estimate.output_tokens
        };
        (
            Some(Usage {
                output_tokens,
                ..base
            }),
            true,
        )
    }

    /// After the client went away: reads on for the usage, within
    /// [`GRACE_TIME`] and [`GRACE_BYTES`]; dropping `self` afterwards
    /// cancels the upstream request.
    async fn grace_read(&mut self) {
        let deadline = tokio::time::Instant::now() + GRACE_TIME;
        let mut read = 0usize;
        let mut sink = BytesMut::new();
        while !self.usage_final && read < GRACE_BYTES {
            let chunk = match tokio::time::timeout_at(deadline, self.upstream.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                _ => return,
            };
            read += chunk.len();
            self.splitter.push(&chunk);
            while let Some(event) = self.splitter.next_event() {
                sink.clear();
                if matches!(self.feed(&event, &mut sink), Seen::Done | Seen::Error) {
                    return;
                }
            }
            if self.splitter.overflowed() {
                return;
            }
        }
    }
}

/// Owns the state; when dropped it settles the call: at once when the
/// stream finished (or its usage is already known), else after a grace
/// read on a task of its own.
struct Live<F: FnOnce(u16, Option<Usage>, bool) + Send + 'static>(Option<State<F>>);

impl<F: FnOnce(u16, Option<Usage>, bool) + Send + 'static> Drop for Live<F> {
    fn drop(&mut self) {
        let Some(mut st) = self.0.take() else {
            return;
        };
        let Some(done) = st.done.take() else {
            return;
        };
        if st.finished || st.usage_final {
            let (usage, estimated) = st.charge();
            return done(st.status, usage, estimated);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    st.grace_read().await;
                    let (usage, estimated) = st.charge();
                    drop(st.upstream);
                    done(CLIENT_CLOSED, usage, estimated);
                });
            }
            Err(_) => {
                let (usage, estimated) = st.charge();
                done(CLIENT_CLOSED, usage, estimated);
            }
        }
    }
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
/// byte can still be retried elsewhere). `speaks` is the upstream's
/// protocol; `estimate` is charged (in part) when the client goes away and
/// no usage arrives within the grace read.
#[allow(clippy::too_many_arguments)]
pub fn relay<F>(
    first: Bytes,
    upstream: upstream::Body,
    watch: Watch,
    client: Protocol,
    speaks: Protocol,
    estimate: Estimate,
    cutoff: CancellationToken,
    done: F,
) -> BoxStream<'static, Result<Bytes, std::io::Error>>
where
    F: FnOnce(u16, Option<Usage>, bool) + Send + 'static,
{
    let state = State {
        upstream: futures_util::stream::once(std::future::ready(Ok(first))).chain(upstream),
        splitter: sse::Splitter::default(),
        watch,
        done: Some(done),
        status: CLIENT_CLOSED,
        client,
        speaks,
        finished: false,
        usage_final: false,
        output: OutputCounter::default(),
        estimate,
        cutoff,
    };
    futures_util::stream::unfold(Live(Some(state)), |mut live| async move {
        let st = live.0.as_mut()?;
        let out = next(st).await?;
        Some((Ok(out), live))
    })
    .boxed()
}

/// The next bytes for the client; `None` once the stream is finished.
async fn next<F: FnOnce(u16, Option<Usage>, bool)>(st: &mut State<F>) -> Option<Bytes> {
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
                st,
                "relay is shutting down and this stream did not finish in time (RELAY_SHUTDOWN_TIMEOUT); retry the request",
            );
            // Finished: the Drop guard charges at once, without a grace read.
            st.status = SHUTDOWN_CUT;
            return Some(out);
        };
        match next {
            Some(Ok(chunk)) => {
                st.splitter.push(&chunk);
                let mut out = BytesMut::new();
                while let Some(event) = st.splitter.next_event() {
                    match st.feed(&event, &mut out) {
                        Seen::Forward | Seen::Skip => {}
                        Seen::Done => {
                            st.status = 200;
                            st.finished = true;
                            break;
                        }
                        Seen::Error => {
                            st.status = BROKEN_STREAM;
                            st.finished = true;
                            break;
                        }
                    }
                }
                if !st.finished && st.splitter.overflowed() {
                    out.extend_from_slice(&fail(
                        st,
                        "the upstream sent an event larger than relay accepts",
                    ));
                }
                if !out.is_empty() {
                    return Some(out.freeze());
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "upstream stream broke");
                return Some(fail(st, "the upstream stream broke before it finished"));
            }
            None => {
                let mut out = BytesMut::new();
                if st.watch.finish_at_eof(&mut out) {
                    st.status = 200;
                    st.finished = true;
                    return Some(out.freeze());
                }
                return Some(fail(st, "the upstream stream ended before its final event"));
            }
        }
    }
}

fn fail<F: FnOnce(u16, Option<Usage>, bool)>(st: &mut State<F>, message: &str) -> Bytes {
    st.finished = true;
    st.status = BROKEN_STREAM;
    st.splitter.clear();
    st.client.error_event(message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::{Path, PathBuf};

    use super::*;
    use crate::adapters::translate::{self, Translation};
    use crate::config::snapshot::Pricing;
    use crate::gateway::usage::{cost_usd, response_usage};

    const PRICING: Pricing = Pricing {
        input_per_mtok: 3.0,
        output_per_mtok: 15.0,
        cache_read_per_mtok: 0.3,
        cache_write_per_mtok: 3.75,
        cache_read_set: true,
        cache_write_set: true,
    };

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    /// A translation from the other protocol's client to `upstream`.
    fn translation(upstream: Protocol) -> Translation {
        let (client, body) = match upstream {
            Protocol::Anthropic => (
                Protocol::OpenAi,
                r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            ),
            Protocol::OpenAi => (
                Protocol::Anthropic,
                r#"{"model":"m","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#,
            ),
        };
        let opts = translate::Options {
            upstream_model: "up",
            default_max_tokens: 4096,
        };
        translate::translate_request(client, upstream, body.as_bytes(), "m", opts)
            .unwrap()
            .1
    }

    /// What the gateway records from an upstream stream through `watch`.
    fn stream_usage(mut watch: Watch, upstream: &[u8]) -> Option<Usage> {
        let mut split = sse::Splitter::default();
        split.push(upstream);
        let mut out = BytesMut::new();
        while let Some(ev) = split.next_event() {
            if matches!(watch.feed(&ev, &mut out), Seen::Done | Seen::Error) {
                break;
            }
        }
        watch.usage()
    }

    fn passthrough(upstream: Protocol) -> Watch {
        match upstream {
            Protocol::OpenAi => Watch::OpenAi(openai::StreamWatch {
                client_wants_usage: false,
                usage: None,
            }),
            Protocol::Anthropic => Watch::Anthropic(anthropic::StreamWatch::default()),
        }
    }

    fn translated(upstream: Protocol) -> Watch {
        Watch::Translate(Box::new(translation(upstream).stream(1_700_000_000)))
    }

    /// The same upstream bytes are recorded with the same usage and cost
    /// whether relay passes them through or translates them (issue 10 #6).
    #[test]
    fn passthrough_and_translation_record_identical_usage_and_cost() {
        let mut cases: Vec<(Protocol, PathBuf)> = vec![
            (Protocol::OpenAi, fixtures().join("usage/openai-cache.sse")),
            (
                Protocol::Anthropic,
                fixtures().join("usage/anthropic-cache.sse"),
            ),
        ];
        // Every golden stream's upstream side too.
        for e in std::fs::read_dir(fixtures().join("streams")).unwrap() {
            let dir = e.unwrap().path();
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            // `o2a-*`: OpenAI client, Anthropic upstream.
            let upstream = if name.starts_with("o2a") {
                Protocol::Anthropic
            } else {
                Protocol::OpenAi
            };
            cases.push((upstream, dir.join("upstream.sse")));
        }
        let mut with_cache = 0;
        for (upstream, path) in &cases {
            let bytes = std::fs::read(path).unwrap();
            let pass = stream_usage(passthrough(*upstream), &bytes);
            let trans = stream_usage(translated(*upstream), &bytes);
            assert_eq!(pass, trans, "{}", path.display());
            let (pass, trans) = (pass.unwrap_or_default(), trans.unwrap_or_default());
            assert_eq!(
                cost_usd(Some(&PRICING), &pass).to_bits(),
                cost_usd(Some(&PRICING), &trans).to_bits(),
                "{}",
                path.display()
            );
            if pass.cache_write_tokens > 0 {
                with_cache += 1;
            }
        }
        assert!(with_cache >= 2, "the cache-write fixtures were read");

        // Both protocols' fixtures describe the same call: 500 uncached
        // input tokens, 3,000 cache reads, 1,500 cache writes, 42 output.
        let want = Usage {
            input_tokens: 500,
            output_tokens: 42,
            cache_read_tokens: 3000,
            cache_write_tokens: 1500,
        };
        for (upstream, name) in [
            (Protocol::OpenAi, "openai-cache"),
            (Protocol::Anthropic, "anthropic-cache"),
        ] {
            let dir = fixtures().join("usage");
            let sse = std::fs::read(dir.join(format!("{name}.sse"))).unwrap();
            assert_eq!(stream_usage(passthrough(upstream), &sse), Some(want));
            let body = std::fs::read(dir.join(format!("{name}.json"))).unwrap();
            assert_eq!(response_usage(upstream, &body).unwrap(), Some(want));
        }
        // $0.0015 + $0.00063 + $0.0009 + $0.005625
        assert!((cost_usd(Some(&PRICING), &want) - 0.008655).abs() < 1e-12);
    }
}
