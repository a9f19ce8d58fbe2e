//! Relaying a streamed reply: upstream SSE events are forwarded as they
//! complete (never buffering more than an unfinished event), watched for
//! usage and for the protocol's terminal event. A stream that breaks or ends
//! without its terminal event gets the client protocol's error event instead
//! of a clean finish. Usage is recorded exactly once, when the stream ends or
//! the client goes away (which drops the stream and with it the upstream
//! request).

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};

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
}

/// Status recorded for a stream cut before its terminal event (the client
/// already has a 200; this is for usage records and metrics).
pub(super) const BROKEN_STREAM: u16 = 502;
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
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.finished {
                return None;
            }
            match st.upstream.next().await {
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
