//! Translation cost in process (no network): a whole non-streamed call
//! (request + response) and one streamed event, both directions, next to
//! what same-protocol passthrough costs for the same request.
//!
//! `cargo bench --bench translate` (release). Targets: ≤ 20 µs p50 per
//! request+response translation, ≤ 5 µs per streamed event.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use relay::adapters::body::RawObject;
use relay::adapters::sse::Splitter;
use relay::adapters::translate::{translate_request, Options};
use relay::adapters::Protocol;

const OPTS: Options<'static> = Options {
    upstream_model: "upstream-model",
    default_max_tokens: 4096,
};

/// A mid-sized agent turn: system prompt, tools, a tool loop in history.
fn openai_request() -> String {
    serde_json::json!({"model": "claude-test", "max_tokens": 1024, "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. ".repeat(20)},
            {"role": "user", "content": "What's the weather in Paris and Rome?"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "22C, cloudy"},
            {"role": "user", "content": "Thanks. And tomorrow?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}],
        "tool_choice": "auto"})
    .to_string()
}

fn anthropic_request() -> String {
    serde_json::json!({"model": "gpt-test", "max_tokens": 1024, "temperature": 0.2,
        "system": [{"type": "text", "text": "You are a helpful assistant. ".repeat(20)}],
        "messages": [
            {"role": "user", "content": "What's the weather in Paris and Rome?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "22C, cloudy"},
                {"type": "text", "text": "Thanks. And tomorrow?"}]}],
        "tools": [{"name": "get_weather", "description": "Current weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}]})
    .to_string()
}

fn anthropic_response() -> String {
    serde_json::json!({"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Tomorrow looks similar. ".repeat(8)},
            {"type": "tool_use", "id": "toolu_3", "name": "get_weather", "input": {"city": "Paris", "unit": "c"}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 412, "output_tokens": 48, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1024}})
    .to_string()
}

fn openai_response() -> String {
    serde_json::json!({"id": "chatcmpl-AB12", "object": "chat.completion", "created": 1726012687, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null, "message": {"role": "assistant",
            "content": "Tomorrow looks similar. ".repeat(8), "refusal": null,
            "tool_calls": [{"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"c\"}"}}]}}],
        "usage": {"prompt_tokens": 1436, "completion_tokens": 48, "total_tokens": 1484, "prompt_tokens_details": {"cached_tokens": 1024}}})
    .to_string()
}

/// §3.9's conversation with a longer text part, as recorded events.
fn anthropic_stream() -> Vec<bytes::Bytes> {
    let mut s = String::from("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XY\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":412,\"cache_read_input_tokens\":0,\"cache_creation_input_tokens\":0,\"output_tokens\":2}}}\n\n");
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for _ in 0..20 {
        s.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me check \"}}\n\n");
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01A\",\"name\":\"get_weather\",\"input\":{}}}\n\n");
    for p in ["", "{\\\"city\\\": \\\"Pa", "ris\\\"}"] {
        s.push_str(&format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"{p}\"}}}}\n\n"));
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    );
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":48}}\n\n");
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    split(&s)
}

fn openai_stream() -> Vec<bytes::Bytes> {
    let head = "\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\"";
    let mut s = format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n");
    for _ in 0..20 {
        s.push_str(&format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"Let me check \"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"));
    }
    s.push_str(&format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{{\"name\":\"get_weather\",\"arguments\":\"\"}}}}]}},\"finish_reason\":null}}],\"usage\":null}}\n\n"));
    for p in ["{\\\"city\\\":", "\\\"Paris\\\"}"] {
        s.push_str(&format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"{p}\"}}}}]}},\"finish_reason\":null}}],\"usage\":null}}\n\n"));
    }
    s.push_str(&format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"tool_calls\"}}],\"usage\":null}}\n\n"));
    s.push_str(&format!("data: {{{head},\"choices\":[],\"usage\":{{\"prompt_tokens\":412,\"completion_tokens\":48,\"total_tokens\":460,\"prompt_tokens_details\":{{\"cached_tokens\":0}}}}}}\n\n"));
    s.push_str("data: [DONE]\n\n");
    split(&s)
}

fn split(s: &str) -> Vec<bytes::Bytes> {
    let mut sp = Splitter::default();
    sp.push(s.as_bytes());
    std::iter::from_fn(|| sp.next_event()).collect()
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn measure(iters: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..iters / 10 {
        f();
    }
    let mut v = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f();
        v.push(t.elapsed());
    }
    percentiles(v)
}

fn main() {
    const N: usize = 20_000;
    println!("translation cost, in process ({N} iterations each)");
    println!("{:<70} {:>10} {:>10}", "case", "p50", "p99");
    let row = |name: &str, (p50, p99): (Duration, Duration)| {
        println!(
            "{name:<70} {:>8.2}µs {:>8.2}µs",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    };

    for (name, client, upstream, req, resp) in [
        (
            "OpenAI client → anthropic binding",
            Protocol::OpenAi,
            Protocol::Anthropic,
            openai_request(),
            anthropic_response(),
        ),
        (
            "Anthropic client → openai binding",
            Protocol::Anthropic,
            Protocol::OpenAi,
            anthropic_request(),
            openai_response(),
        ),
    ] {
        row(
            &format!("{name}: passthrough parse+rewrite (baseline)"),
            measure(N, || {
                let obj = RawObject::parse(req.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
                black_box(obj.rewrite(&[("model", "\"upstream-model\"")]));
            }),
        );
        row(
            &format!("{name}: request + response"),
            measure(N, || {
                let (body, t) =
                    translate_request(client, upstream, req.as_bytes(), "catalog", OPTS)
                        .unwrap_or_else(|e| panic!("{e}"));
                black_box(body);
                black_box(
                    t.response(resp.as_bytes(), 1)
                        .unwrap_or_else(|e| panic!("{e}")),
                );
            }),
        );
    }

    for (name, client, upstream, events) in [
        (
            "Anthropic stream → OpenAI client",
            Protocol::OpenAi,
            Protocol::Anthropic,
            anthropic_stream(),
        ),
        (
            "OpenAI stream → Anthropic client",
            Protocol::Anthropic,
            Protocol::OpenAi,
            openai_stream(),
        ),
    ] {
        let req = match client {
            Protocol::OpenAi => {
                r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#
            }
            Protocol::Anthropic => {
                r#"{"model":"m","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#
            }
        };
        let (_, t) = translate_request(client, upstream, req.as_bytes(), "catalog", OPTS)
            .unwrap_or_else(|e| panic!("{e}"));
        let n = events.len() as u32;
        let (p50, p99) = measure(N / 10, || {
            let mut st = t.stream(1);
            let mut out = BytesMut::with_capacity(256);
            for e in &events {
                black_box(st.feed(e, &mut out));
                out.clear();
            }
        });
        row(
            &format!("{name}: per event ({n} events/stream)"),
            (p50 / n, p99 / n),
        );
    }
}
