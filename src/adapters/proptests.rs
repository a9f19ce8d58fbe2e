//! Property tests for everything that reads bytes a client or an upstream
//! chose: the top-level body scanner, the SSE splitter and event parser, both
//! protocols' stream watchers, and both translators (requests, whole
//! responses, and streams cut at arbitrary points). Nothing may panic, and
//! what comes out stays within a fixed multiple of what went in. Generators
//! produce protocol-shaped JSON (the fields the code looks at, with hostile
//! values: `u64::MAX` token counts, absurd indices, long ids, odd tool names)
//! as well as raw bytes. Case counts are bounded so the module runs in
//! seconds.

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::body::RawObject;
use super::sse::{self, Splitter};
use super::translate::{translate_request, Options, Translation};
use super::{anthropic, openai, Protocol, Seen};

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No regression files written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const PAIRS: [(Protocol, Protocol); 4] = [
    (Protocol::OpenAi, Protocol::Anthropic),
    (Protocol::Anthropic, Protocol::OpenAi),
    (Protocol::OpenAi, Protocol::OpenAi),
    (Protocol::Anthropic, Protocol::Anthropic),
];

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z_]{0,8}",
        2 => "\\PC{0,16}",
        1 => prop::sample::select(vec![
            "", "{}", "{\"a\":", "[DONE]", "null", "get weather", "a.b/c d", "call_1", "toolu_01",
            "__json_output", "json_output", "\u{0}\n\r", "é🦀",
        ])
        .prop_map(String::from),
        // Long enough to show up any per-event echo of it.
        1 => "[a-z]{1500,2500}",
    ]
    .boxed()
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..5000,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX / 2 + 1),
        1 => any::<u64>(),
    ]
}

fn index() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..4,
        1 => Just(1023u64),
        1 => Just(1024u64),
        1 => any::<u64>(),
    ]
}

fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        count().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,10}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// An object from optional fields; absent ones are left out.
fn obj(fields: Vec<(&str, Option<Value>)>) -> Value {
    let mut m = Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

fn opt<S: Strategy<Value = Value>>(s: S) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(0.6, s)
}

fn one_of_str(words: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(words).prop_map(Value::from),
        1 => text().prop_map(Value::from),
    ]
}

fn oa_part() -> BoxedStrategy<Value> {
    prop_oneof![
        text().prop_map(|t| json!({"type": "text", "text": t})),
        prop::sample::select(vec![
            "data:image/png;base64,iVBORw0KGgo=",
            "data:image/tiff;base64,AAAA",
            "data:;base64,",
            "data:image/png,raw",
            "data:",
            "https://example.com/cat.png",
        ])
        .prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
        (opt(text().prop_map(Value::from)), opt(text().prop_map(Value::from))).prop_map(
            |(d, n)| json!({"type": "file", "file": obj(vec![("file_data", d), ("filename", n)])})
        ),
        text().prop_map(|t| json!({"type": "refusal", "refusal": t})),
        Just(json!({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}})),
        any_json(),
    ]
    .boxed()
}

fn oa_tool_call() -> impl Strategy<Value = Value> {
    (text(), text(), text()).prop_map(|(id, name, args)| {
        json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
    })
}

fn oa_message() -> BoxedStrategy<Value> {
    (
        one_of_str(&[
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "function",
        ]),
        opt(prop_oneof![
            text().prop_map(Value::from),
            prop::collection::vec(oa_part(), 0..4).prop_map(Value::Array),
            Just(Value::Null),
        ]),
        opt(prop::collection::vec(oa_tool_call(), 0..3).prop_map(Value::Array)),
        opt(text().prop_map(Value::from)),
    )
        .prop_map(|(role, content, calls, call_id)| {
            obj(vec![
                ("role", Some(role)),
                ("content", content),
                ("tool_calls", calls),
                ("tool_call_id", call_id),
            ])
        })
        .boxed()
}

fn oa_request() -> BoxedStrategy<Value> {
    (
        prop::collection::vec(oa_message(), 0..5),
        opt(count().prop_map(Value::from)),
        opt(count().prop_map(Value::from)),
        opt(any::<bool>().prop_map(Value::from)),
        opt(any::<bool>().prop_map(|u| json!({"include_usage": u}))),
        opt(prop::collection::vec(
            (text(), any_json()).prop_map(
                |(n, p)| json!({"type": "function", "function": {"name": n, "parameters": p}}),
            ),
            0..3,
        )
        .prop_map(Value::Array)),
        opt(prop_oneof![
            one_of_str(&["auto", "none", "required"]),
            text().prop_map(|n| json!({"type": "function", "function": {"name": n}})),
        ]),
        opt(prop_oneof![
            Just(json!({"type": "json_object"})),
            any_json().prop_map(
                |s| json!({"type": "json_schema", "json_schema": {"name": "x", "schema": s}})
            ),
            Just(json!({"type": "text"})),
        ]),
        opt(prop_oneof![
            text().prop_map(Value::from),
            prop::collection::vec(text(), 0..3).prop_map(Value::from),
        ]),
        opt(any_json()),
    )
        .prop_map(
            |(messages, max, max_c, stream, so, tools, choice, format, stop, extra)| {
                obj(vec![
                    ("model", Some(json!("m"))),
                    ("messages", Some(Value::Array(messages))),
                    ("max_tokens", max),
                    ("max_completion_tokens", max_c),
                    ("stream", stream),
                    ("stream_options", so),
                    ("tools", tools),
                    ("tool_choice", choice),
                    ("response_format", format),
                    ("stop", stop),
                    ("metadata", extra),
                ])
            },
        )
        .boxed()
}

fn an_source() -> impl Strategy<Value = Value> {
    prop_oneof![
        (
            one_of_str(&["image/png", "image/jpeg", "application/pdf", "text/plain"]),
            text()
        )
            .prop_map(|(m, d)| json!({"type": "base64", "media_type": m, "data": d})),
        text().prop_map(|u| json!({"type": "url", "url": u})),
        Just(json!({"type": "file", "file_id": "f"})),
    ]
}

fn an_block() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        text().prop_map(|t| json!({"type": "text", "text": t})),
        an_source().prop_map(|s| json!({"type": "image", "source": s})),
        an_source().prop_map(|s| json!({"type": "document", "source": s})),
        (text(), text(), any_json())
            .prop_map(|(id, n, i)| json!({"type": "tool_use", "id": id, "name": n, "input": i})),
        text().prop_map(|t| json!({"type": "thinking", "thinking": t, "signature": "s"})),
        Just(json!({"type": "redacted_thinking", "data": "x"})),
        any_json(),
    ];
    leaf.prop_recursive(1, 8, 3, |inner| {
        (text(), prop_oneof![
            text().prop_map(Value::from),
            prop::collection::vec(inner, 0..3).prop_map(Value::Array),
        ], any::<bool>())
            .prop_map(|(id, c, e)| json!({"type": "tool_result", "tool_use_id": id, "content": c, "is_error": e}))
    })
    .boxed()
}

fn an_request() -> BoxedStrategy<Value> {
    (
        prop::collection::vec(
            (
                one_of_str(&["user", "assistant"]),
                prop_oneof![
                    text().prop_map(Value::from),
                    prop::collection::vec(an_block(), 0..4).prop_map(Value::Array),
                ],
            )
                .prop_map(|(r, c)| json!({"role": r, "content": c})),
            0..5,
        ),
        opt(count().prop_map(Value::from)),
        opt(prop_oneof![
            text().prop_map(Value::from),
            prop::collection::vec(
                text().prop_map(|t| json!({"type": "text", "text": t})),
                0..3
            )
            .prop_map(Value::Array),
        ]),
        opt(any::<bool>().prop_map(Value::from)),
        opt(prop::collection::vec(
            (text(), any_json()).prop_map(|(n, s)| json!({"name": n, "input_schema": s})),
            0..3,
        )
        .prop_map(Value::Array)),
        opt((
            one_of_str(&["auto", "any", "tool", "none"]),
            opt(text().prop_map(Value::from)),
        )
            .prop_map(|(k, n)| obj(vec![("type", Some(k)), ("name", n)]))),
        opt(prop::collection::vec(text(), 0..3).prop_map(Value::from)),
        opt(any_json().prop_map(|f| json!({"format": f}))),
    )
        .prop_map(
            |(messages, max, system, stream, tools, choice, stops, oc)| {
                obj(vec![
                    ("model", Some(json!("m"))),
                    ("messages", Some(Value::Array(messages))),
                    ("max_tokens", max),
                    ("system", system),
                    ("stream", stream),
                    ("tools", tools),
                    ("tool_choice", choice),
                    ("stop_sequences", stops),
                    ("output_config", oc),
                ])
            },
        )
        .boxed()
}

fn request_for(p: Protocol) -> BoxedStrategy<Value> {
    match p {
        Protocol::OpenAi => oa_request().boxed(),
        Protocol::Anthropic => an_request().boxed(),
    }
}

fn oa_usage() -> BoxedStrategy<Value> {
    (
        count(),
        count(),
        opt((count(), count())
            .prop_map(|(c, w)| json!({"cached_tokens": c, "cache_write_tokens": w}))),
    )
        .prop_map(|(p, c, d)| {
            obj(vec![
                ("prompt_tokens", Some(p.into())),
                ("completion_tokens", Some(c.into())),
                ("prompt_tokens_details", d),
            ])
        })
        .boxed()
}

fn an_usage() -> BoxedStrategy<Value> {
    (
        opt(count().prop_map(Value::from)),
        opt(count().prop_map(Value::from)),
        opt(count().prop_map(Value::from)),
        opt(count().prop_map(Value::from)),
    )
        .prop_map(|(i, o, r, w)| {
            obj(vec![
                ("input_tokens", i),
                ("output_tokens", o),
                ("cache_read_input_tokens", r),
                ("cache_creation_input_tokens", w),
            ])
        })
        .boxed()
}

fn finish() -> impl Strategy<Value = Value> {
    one_of_str(&[
        "stop",
        "length",
        "tool_calls",
        "content_filter",
        "function_call",
    ])
}

fn stop_reason() -> impl Strategy<Value = Value> {
    one_of_str(&[
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
    ])
}

fn oa_response() -> BoxedStrategy<Value> {
    (
        text(),
        prop::collection::vec(
            (
                index(),
                opt(text().prop_map(Value::from)),
                opt(text().prop_map(Value::from)),
                opt(prop::collection::vec(oa_tool_call(), 0..3).prop_map(Value::Array)),
                opt(finish()),
            )
                .prop_map(|(i, content, refusal, calls, f)| {
                    json!({"index": i, "message": obj(vec![
                        ("role", Some(json!("assistant"))),
                        ("content", content),
                        ("refusal", refusal),
                        ("tool_calls", calls),
                    ]), "finish_reason": f})
                }),
            0..3,
        ),
        opt(oa_usage()),
    )
        .prop_map(|(id, choices, usage)| {
            obj(vec![
                ("id", Some(id.into())),
                ("object", Some(json!("chat.completion"))),
                ("model", Some(json!("up"))),
                ("choices", Some(Value::Array(choices))),
                ("usage", usage),
            ])
        })
        .boxed()
}

fn an_response() -> BoxedStrategy<Value> {
    (
        text(),
        prop::collection::vec(an_block(), 0..4),
        opt(stop_reason()),
        opt(an_usage()),
    )
        .prop_map(|(id, content, stop, usage)| {
            obj(vec![
                ("id", Some(id.into())),
                ("type", Some(json!("message"))),
                ("role", Some(json!("assistant"))),
                ("model", Some(json!("up"))),
                ("content", Some(Value::Array(content))),
                ("stop_reason", stop),
                ("usage", usage),
            ])
        })
        .boxed()
}

/// One upstream Chat Completions stream event, framed.
fn oa_event() -> BoxedStrategy<Vec<u8>> {
    let tool_delta = (
        index(),
        opt(text().prop_map(Value::from)),
        opt(text().prop_map(Value::from)),
        opt(text().prop_map(Value::from)),
    )
        .prop_map(|(i, id, name, args)| {
            obj(vec![
                ("index", Some(i.into())),
                ("id", id),
                ("type", Some(json!("function"))),
                (
                    "function",
                    Some(obj(vec![("name", name), ("arguments", args)])),
                ),
            ])
        });
    let chunk = (
        text(),
        prop::collection::vec(
            (
                prop_oneof![4 => Just(0u64), 1 => index()],
                opt(text().prop_map(Value::from)),
                opt(text().prop_map(Value::from)),
                opt(prop::collection::vec(tool_delta, 0..3).prop_map(Value::Array)),
                opt(finish()),
            )
                .prop_map(|(i, content, refusal, calls, f)| {
                    json!({"index": i, "delta": obj(vec![
                        ("role", Some(json!("assistant"))),
                        ("content", content),
                        ("refusal", refusal),
                        ("tool_calls", calls),
                    ]), "finish_reason": f})
                }),
            0..3,
        ),
        opt(oa_usage()),
    )
        .prop_map(|(id, choices, usage)| {
            obj(vec![
                ("id", Some(id.into())),
                ("object", Some(json!("chat.completion.chunk"))),
                ("model", Some(json!("up"))),
                ("choices", Some(Value::Array(choices))),
                ("usage", usage),
            ])
        });
    prop_oneof![
        8 => chunk.prop_map(|c| frame(None, &c.to_string())),
        1 => Just(frame(None, "[DONE]")),
        1 => (opt(text().prop_map(Value::from)), opt(text().prop_map(Value::from)))
            .prop_map(|(m, t)| frame(None, &json!({"error": obj(vec![("message", m), ("type", t)])}).to_string())),
        1 => Just(b": keep-alive\n\n".to_vec()),
        1 => any_json().prop_map(|v| frame(None, &v.to_string())),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
    .boxed()
}

/// One upstream Messages stream event, framed (with or without `event:`).
fn an_event() -> BoxedStrategy<Vec<u8>> {
    let data = prop_oneof![
        (text(), opt(an_usage())).prop_map(|(id, u)| json!({"type": "message_start", "message": obj(vec![
            ("id", Some(id.into())), ("model", Some(json!("up"))), ("usage", u),
        ])})),
        (index(), one_of_str(&["text", "tool_use", "thinking", "server_tool_use"]), opt(text().prop_map(Value::from)), opt(text().prop_map(Value::from)), opt(text().prop_map(Value::from)))
            .prop_map(|(i, k, t, id, n)| json!({"type": "content_block_start", "index": i, "content_block": obj(vec![
                ("type", Some(k)), ("text", t), ("id", id), ("name", n),
            ])})),
        (index(), one_of_str(&["text_delta", "input_json_delta", "thinking_delta", "signature_delta"]), opt(text().prop_map(Value::from)), opt(text().prop_map(Value::from)))
            .prop_map(|(i, k, t, j)| json!({"type": "content_block_delta", "index": i, "delta": obj(vec![
                ("type", Some(k)), ("text", t), ("partial_json", j),
            ])})),
        index().prop_map(|i| json!({"type": "content_block_stop", "index": i})),
        (opt(stop_reason()), opt(an_usage())).prop_map(|(s, u)| json!({"type": "message_delta", "delta": obj(vec![("stop_reason", s)]), "usage": u})),
        Just(json!({"type": "message_stop"})),
        Just(json!({"type": "ping"})),
        (opt(text().prop_map(Value::from)), opt(text().prop_map(Value::from)))
            .prop_map(|(k, m)| json!({"type": "error", "error": obj(vec![("type", k), ("message", m)])})),
        any_json(),
    ];
    prop_oneof![
        8 => (data, any::<bool>()).prop_map(|(d, named)| {
            let name = named.then(|| d.get("type").and_then(Value::as_str).unwrap_or("x").to_string());
            frame(name.as_deref(), &d.to_string())
        }),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
    .boxed()
}

fn events_for(p: Protocol) -> BoxedStrategy<Vec<Vec<u8>>> {
    match p {
        Protocol::OpenAi => prop::collection::vec(oa_event(), 0..24).boxed(),
        Protocol::Anthropic => prop::collection::vec(an_event(), 0..24).boxed(),
    }
}

fn frame(name: Option<&str>, data: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(n) = name {
        out.extend_from_slice(format!("event: {n}\n").as_bytes());
    }
    out.extend_from_slice(format!("data: {data}\n\n").as_bytes());
    out
}

/// `bytes` cut at the given points (taken modulo its length).
fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

fn split_events(chunks: &[Vec<u8>]) -> Vec<bytes::Bytes> {
    let mut s = Splitter::default();
    let mut out = Vec::new();
    for c in chunks {
        s.push(c);
        while let Some(e) = s.next_event() {
            out.push(e);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------------------------

/// Whole bodies: a translation re-serialises what it read (escapes may
/// change, field names differ, defaults are added), never more.
fn assert_body_bound(input: usize, output: usize) {
    assert!(
        output <= 4 * input + 4096,
        "{input} bytes in became {output} bytes out"
    );
}

/// Streams: each input event may become a few framed client events.
fn assert_stream_bound(input: usize, events: usize, output: usize) {
    assert!(
        output <= 4 * input + 1024 * (events + 1),
        "{input} bytes in {events} events became {output} bytes out"
    );
}

fn translation(client: Protocol, upstream: Protocol, json_mode: bool) -> Translation {
    let body = match client {
        Protocol::OpenAi => json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "stream": true, "stream_options": {"include_usage": true},
        }),
        Protocol::Anthropic => json!({
            "model": "m", "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "get weather", "input_schema": {"type": "object"}}],
        }),
    };
    let mut body = body;
    if json_mode && client == Protocol::OpenAi {
        // JSON mode rides on a forced tool, so it excludes client tools.
        body["response_format"] = json!({"type": "json_object"});
    } else if client == Protocol::OpenAi {
        body["tools"] = json!([{"type": "function", "function": {"name": "get weather", "parameters": {"type": "object"}}}]);
    }
    let opts = Options {
        upstream_model: "up",
        default_max_tokens: 4096,
    };
    translate_request(client, upstream, body.to_string().as_bytes(), "m", opts)
        .unwrap()
        .1
}

fn run_stream(t: &Translation, events: &[Vec<u8>], cuts: &[usize]) {
    let bytes: Vec<u8> = events.concat();
    let mut tr = t.stream(1_700_000_000);
    let mut out = BytesMut::new();
    let mut n = 0;
    let mut over = false;
    let mut s = Splitter::default();
    for c in chunks(&bytes, cuts) {
        s.push(&c);
        while let Some(e) = s.next_event() {
            n += 1;
            if !over {
                over = matches!(tr.feed(&e, &mut out), Seen::Done | Seen::Error);
            }
        }
    }
    if !over {
        tr.finish_at_eof(&mut out);
    }
    let _ = tr.usage();
    assert_stream_bound(bytes.len(), n, out.len());
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cfg(128))]

    #[test]
    fn body_scanner_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(o) = RawObject::parse(&bytes) {
            let _ = o.str("model");
            let _ = o.flag("stream");
            let _ = o.parse_field::<u64>("max_tokens", "an integer");
            let out = o.rewrite(&[("model", "\"m\"")]);
            let v: Value = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(v.get("model"), Some(&json!("m")));
        }
    }

    #[test]
    fn body_scanner_keeps_every_field_but_the_rewritten_ones(v in any_json(), extra in "[ \t\r\n]{0,3}") {
        let raw = format!("{extra}{v}{extra}");
        match RawObject::parse(raw.as_bytes()) {
            Ok(o) => {
                let Value::Object(mut m) = v else { panic!("a non-object parsed as an object") };
                let out = o.rewrite(&[("model", "\"m\""), ("stream_options", "{\"include_usage\":true}")]);
                assert_body_bound(raw.len(), out.len());
                m.insert("model".into(), json!("m"));
                m.insert("stream_options".into(), json!({"include_usage": true}));
                let back: Value = serde_json::from_slice(&out).unwrap();
                // Compared after a parse of the same raw bytes (float text
                // round trips are not the scanner's business).
                let want: Value = serde_json::from_str(&Value::Object(m).to_string()).unwrap();
                prop_assert_eq!(back, want);
            }
            Err(_) => prop_assert!(!v.is_object()),
        }
    }

    #[test]
    fn sse_splitting_does_not_depend_on_chunking(
        events in prop::collection::vec(prop_oneof![oa_event(), an_event()], 0..12),
        noise in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut bytes = events.concat();
        bytes.extend_from_slice(&noise);
        let whole = split_events(std::slice::from_ref(&bytes));
        let cut = split_events(&chunks(&bytes, &cuts));
        prop_assert_eq!(&whole, &cut);
        let total: usize = whole.iter().map(|e| e.len()).sum();
        prop_assert!(total <= bytes.len());
        for e in &whole {
            let (name, data) = sse::parse(e);
            prop_assert!(data.len() <= e.len());
            prop_assert!(name.is_none_or(|n| n.len() <= e.len()));
        }
    }

    #[test]
    fn passthrough_watchers_survive_any_event(
        oa in prop::collection::vec(oa_event(), 0..16),
        an in prop::collection::vec(an_event(), 0..16),
        wants_usage in any::<bool>(),
    ) {
        let mut w = openai::StreamWatch { client_wants_usage: wants_usage, usage: None };
        for e in split_events(&[oa.concat()]) {
            let _ = w.observe(&e);
        }
        if let Some(u) = w.usage {
            let _ = u.total();
        }
        let mut w = anthropic::StreamWatch::default();
        for e in split_events(&[an.concat()]) {
            let _ = w.observe(&e);
        }
        if let Some(u) = w.usage {
            let _ = u.total();
        }
        for e in oa.iter().chain(&an) {
            let _ = openai::response_usage(e);
            let _ = anthropic::response_usage(e);
        }
    }
}

proptest! {
    #![proptest_config(cfg(64))]

    #[test]
    fn requests_translate_or_refuse_for_every_pair(
        pair in prop::sample::select(PAIRS.to_vec()),
        oa in oa_request(),
        an in an_request(),
        default_max in count(),
    ) {
        let body = match pair.0 {
            Protocol::OpenAi => oa,
            Protocol::Anthropic => an,
        };
        let raw = body.to_string();
        let opts = Options { upstream_model: "up", default_max_tokens: default_max };
        if let Ok((out, _)) = translate_request(pair.0, pair.1, raw.as_bytes(), "m", opts) {
            let _: Value = serde_json::from_slice(&out).unwrap();
            assert_body_bound(raw.len(), out.len());
        }
    }

    #[test]
    fn requests_of_arbitrary_bytes_are_refused_not_panicked(
        pair in prop::sample::select(PAIRS.to_vec()),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        v in any_json(),
    ) {
        let opts = Options { upstream_model: "up", default_max_tokens: 4096 };
        for body in [bytes, v.to_string().into_bytes()] {
            if let Ok((out, _)) = translate_request(pair.0, pair.1, &body, "m", opts) {
                assert_body_bound(body.len(), out.len());
            }
        }
    }

    #[test]
    fn responses_translate_or_fail_cleanly(
        pair in prop::sample::select(PAIRS[..2].to_vec()),
        json_mode in any::<bool>(),
        oa in oa_response(),
        an in an_response(),
        noise in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let t = translation(pair.0, pair.1, json_mode);
        let body = match pair.1 {
            Protocol::OpenAi => oa,
            Protocol::Anthropic => an,
        }
        .to_string();
        if let Ok(out) = t.response(body.as_bytes(), 1_700_000_000) {
            let _: Value = serde_json::from_slice(&out).unwrap();
            assert_body_bound(body.len(), out.len());
        }
        let _ = t.response(&noise, 0);
    }

    #[test]
    fn streams_translate_whatever_the_events_and_cuts(
        pair in prop::sample::select(PAIRS[..2].to_vec()),
        json_mode in any::<bool>(),
        oa in events_for(Protocol::OpenAi),
        an in events_for(Protocol::Anthropic),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let t = translation(pair.0, pair.1, json_mode);
        let events = match pair.1 {
            Protocol::OpenAi => oa,
            Protocol::Anthropic => an,
        };
        run_stream(&t, &events, &cuts);
    }
}

#[test]
fn generators_reach_the_interesting_paths() {
    // A generator that only ever produced rejected requests would prove
    // nothing: at least some generated requests must translate.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    for (client, upstream) in PAIRS {
        let s = request_for(client);
        let ok = (0..64)
            .filter(|_| {
                let body = s.new_tree(&mut runner).unwrap().current().to_string();
                let opts = Options {
                    upstream_model: "up",
                    default_max_tokens: 4096,
                };
                translate_request(client, upstream, body.as_bytes(), "m", opts).is_ok()
            })
            .count();
        assert!(
            ok >= 4,
            "{client:?}→{upstream:?}: only {ok}/64 generated requests translated"
        );
    }
}

#[test]
fn a_long_upstream_id_is_not_repeated_in_every_chunk() {
    // Anthropic upstream, OpenAI client: every client chunk carries the
    // message id, so a 64 KiB id followed by a thousand one-letter deltas
    // would turn ~100 KB from the upstream into ~64 MB for the client.
    let t = translation(Protocol::OpenAi, Protocol::Anthropic, false);
    let id = "m".repeat(64 << 10);
    let mut events = vec![
        frame(
            Some("message_start"),
            &json!({"type": "message_start", "message": {"id": id, "model": "up", "usage": {"input_tokens": 1}}})
                .to_string(),
        ),
        frame(
            Some("content_block_start"),
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ),
    ];
    for _ in 0..1000 {
        events.push(frame(
            Some("content_block_delta"),
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}"#,
        ));
    }
    run_stream(&t, &events, &[]);
}
