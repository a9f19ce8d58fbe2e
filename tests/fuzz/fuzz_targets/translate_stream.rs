//! The stream translator: upstream SSE bytes in either protocol, cut into
//! chunks, translated for the other protocol's client. The first byte picks
//! the direction, JSON mode and the chunk size. Output stays within a fixed
//! multiple of the input.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use relay::adapters::sse::Splitter;
use relay::adapters::translate::{translate_request, Options};
use relay::adapters::{Protocol, Seen};

const OPENAI_REQUEST: &str = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"get weather","parameters":{"type":"object"}}}]}"#;
const OPENAI_JSON_REQUEST: &str = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#;
const ANTHROPIC_REQUEST: &str = r#"{"model":"m","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"get weather","input_schema":{"type":"object"}}]}"#;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, data)) = data.split_first() else {
        return;
    };
    let (client, upstream, request) = match sel % 3 {
        0 => (Protocol::OpenAi, Protocol::Anthropic, OPENAI_REQUEST),
        1 => (Protocol::OpenAi, Protocol::Anthropic, OPENAI_JSON_REQUEST),
        _ => (Protocol::Anthropic, Protocol::OpenAi, ANTHROPIC_REQUEST),
    };
    let opts = Options {
        upstream_model: "up",
        default_max_tokens: 4096,
    };
    let Ok((_, t)) = translate_request(client, upstream, request.as_bytes(), "m", opts) else {
        panic!("the fixed request must translate");
    };
    let mut tr = t.stream(1_700_000_000);
    let mut s = Splitter::default();
    let mut out = BytesMut::new();
    let mut events = 0usize;
    let mut over = false;
    for chunk in data.chunks(usize::from(sel / 3).max(1)) {
        s.push(chunk);
        while let Some(e) = s.next_event() {
            events += 1;
            if !over {
                over = matches!(tr.feed(&e, &mut out), Seen::Done | Seen::Error);
            }
        }
    }
    if !over {
        let _ = tr.finish_at_eof(&mut out);
    }
    if let Some(u) = tr.usage() {
        let _ = u.total();
    }
    assert!(
        out.len() <= 4 * data.len() + 1024 * (events + 1),
        "{} bytes in {events} events became {} bytes out",
        data.len(),
        out.len()
    );
});
