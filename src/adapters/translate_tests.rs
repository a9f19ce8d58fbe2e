//! Table-driven tests for wire-formats.md §3.1–3.6 and every numbered
//! edge case of §5 (`edge_NN_*`), plus the golden stream conversations in
//! `tests/fixtures/streams/` (set `UPDATE_GOLDEN=1` to rewrite them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use serde_json::{json, Value};

use super::*;

const OPTS: Options<'static> = Options {
    upstream_model: "up-model",
    default_max_tokens: 4096,
};

/// OpenAI client body → Anthropic upstream body.
fn o2a(body: Value) -> Value {
    let (b, _) = translate_request(
        Protocol::OpenAi,
        Protocol::Anthropic,
        body.to_string().as_bytes(),
        "claude",
        OPTS,
    )
    .unwrap();
    serde_json::from_slice(&b).unwrap()
}

fn o2a_err(body: Value) -> String {
    translate_request(
        Protocol::OpenAi,
        Protocol::Anthropic,
        body.to_string().as_bytes(),
        "claude",
        OPTS,
    )
    .unwrap_err()
    .to_string()
}

/// Anthropic client body → OpenAI upstream body.
fn a2o(body: Value) -> Value {
    let (b, _) = translate_request(
        Protocol::Anthropic,
        Protocol::OpenAi,
        body.to_string().as_bytes(),
        "gpt",
        OPTS,
    )
    .unwrap();
    serde_json::from_slice(&b).unwrap()
}

fn a2o_err(body: Value) -> String {
    translate_request(
        Protocol::Anthropic,
        Protocol::OpenAi,
        body.to_string().as_bytes(),
        "gpt",
        OPTS,
    )
    .unwrap_err()
    .to_string()
}

fn user(c: Value) -> Value {
    json!({"role": "user", "content": c})
}

/// An OpenAI request declaring tool `f` (tool blocks in history need tools, §5.10).
fn oreq(messages: Value) -> Value {
    json!({"model": "claude", "messages": messages, "tools": [{"type": "function", "function": {"name": "f"}}]})
}

fn areq(messages: Value) -> Value {
    json!({"model": "gpt", "max_tokens": 100, "messages": messages})
}

/// Translates a whole upstream response for a client.
fn response(client: Protocol, upstream: Protocol, req: Value, body: Value) -> Value {
    let (_, t) = translate_request(
        client,
        upstream,
        req.to_string().as_bytes(),
        "catalog-name",
        OPTS,
    )
    .unwrap();
    serde_json::from_slice(&t.response(body.to_string().as_bytes(), 7).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// §3.1 Request O→A
// ---------------------------------------------------------------------------------------------

#[test]
fn map_3_1_worked_example() {
    let out = o2a(
        json!({"model":"claude","max_tokens":300,"temperature":0.2,"stop":"END","parallel_tool_calls":false,
     "messages":[{"role":"system","content":"Be brief."},
       {"role":"user","content":"Weather in Paris?"},
       {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
       {"role":"tool","tool_call_id":"call_1","content":"18C"}],
     "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
     "tool_choice":"auto"}),
    );
    assert_eq!(
        out,
        json!({"model":"up-model","max_tokens":300,"temperature":0.2,"stop_sequences":["END"],
         "system":[{"type":"text","text":"Be brief."}],
         "messages":[{"role":"user","content":[{"type":"text","text":"Weather in Paris?"}]},
           {"role":"assistant","content":[{"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}}]},
           {"role":"user","content":[{"type":"tool_result","tool_use_id":"call_1","content":"18C"}]}],
         "tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],
         "tool_choice":{"type":"auto","disable_parallel_tool_use":true}})
    );
}

#[test]
fn map_3_1_rows() {
    // (OpenAI request fragment, JSON pointer in the Anthropic body, expected value)
    let tool = json!([{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"},"strict":true}}]);
    let cases: Vec<(Value, &str, Value)> = vec![
        (
            json!({"messages":[user(json!("hi"))]}),
            "/model",
            json!("up-model"),
        ),
        (
            json!({"messages":[user(json!("hi"))]}),
            "/messages/0/content",
            json!([{"type":"text","text":"hi"}]),
        ),
        (
            json!({"messages":[user(json!([{"type":"text","text":"a"},{"type":"text","text":"b","cache_control":{"type":"ephemeral"}}]))]}),
            "/messages/0/content",
            json!([{"type":"text","text":"a"},{"type":"text","text":"b","cache_control":{"type":"ephemeral"}}]),
        ),
        (
            json!({"messages":[{"role":"system","content":[{"type":"text","text":"s1"},{"type":"text","text":"s2","cache_control":{"type":"ephemeral"}}]},user(json!("hi"))]}),
            "/system",
            json!([{"type":"text","text":"s1"},{"type":"text","text":"s2","cache_control":{"type":"ephemeral"}}]),
        ),
        (
            json!({"messages":[user(json!([{"type":"image_url","image_url":{"url":"data:image/png;base64,AAA","detail":"high"}}]))]}),
            "/messages/0/content/0",
            json!({"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAA"}}),
        ),
        (
            json!({"messages":[user(json!([{"type":"image_url","image_url":{"url":"https://x/cat.jpg"}}]))]}),
            "/messages/0/content/0",
            json!({"type":"image","source":{"type":"url","url":"https://x/cat.jpg"}}),
        ),
        (
            json!({"messages":[user(json!([{"type":"file","file":{"file_data":"data:application/pdf;base64,JVB","filename":"a.pdf"}}]))]}),
            "/messages/0/content/0",
            json!({"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVB"},"title":"a.pdf"}),
        ),
        (
            json!({"messages":[user(json!("q")),{"role":"assistant","content":[{"type":"text","text":"x"},{"type":"text","text":"y"}]}]}),
            "/messages/1/content",
            json!([{"type":"text","text":"x"},{"type":"text","text":"y"}]),
        ),
        (
            json!({"messages":[user(json!("q")),{"role":"assistant","content":"a1"},{"role":"assistant","content":"a2"}]}),
            "/messages/1/content",
            json!([{"type":"text","text":"a1"},{"type":"text","text":"a2"}]),
        ),
        (
            json!({"messages":[user(json!("hi")), {"role":"user","content":"more","name":"bob"}]}),
            "/messages/0/content/1",
            json!({"type":"text","text":"more"}),
        ),
        (
            json!({"max_tokens":10,"max_completion_tokens":20,"messages":[user(json!("hi"))]}),
            "/max_tokens",
            json!(20),
        ),
        (
            json!({"max_tokens":10,"messages":[user(json!("hi"))]}),
            "/max_tokens",
            json!(10),
        ),
        (
            json!({"temperature":1.7,"messages":[user(json!("hi"))]}),
            "/temperature",
            json!(1.0),
        ),
        (
            json!({"top_p":0.5,"messages":[user(json!("hi"))]}),
            "/top_p",
            json!(0.5),
        ),
        (
            json!({"top_k":5,"messages":[user(json!("hi"))]}),
            "/top_k",
            json!(5),
        ),
        (
            json!({"stop":["a"," ","b"],"messages":[user(json!("hi"))]}),
            "/stop_sequences",
            json!(["a", "b"]),
        ),
        (
            json!({"stream":true,"stream_options":{"include_usage":true},"messages":[user(json!("hi"))]}),
            "/stream",
            json!(true),
        ),
        (
            json!({"tools":tool,"messages":[user(json!("hi"))]}),
            "/tools",
            json!([{"name":"f","description":"d","input_schema":{"type":"object"}}]),
        ),
        (
            json!({"tools":tool,"tool_choice":"auto","messages":[user(json!("hi"))]}),
            "/tool_choice",
            json!({"type":"auto"}),
        ),
        (
            json!({"tools":tool,"tool_choice":"required","messages":[user(json!("hi"))]}),
            "/tool_choice",
            json!({"type":"any"}),
        ),
        (
            json!({"tools":tool,"tool_choice":"none","messages":[user(json!("hi"))]}),
            "/tool_choice",
            json!({"type":"none"}),
        ),
        (
            json!({"tools":tool,"tool_choice":{"type":"function","function":{"name":"f"}},"messages":[user(json!("hi"))]}),
            "/tool_choice",
            json!({"type":"tool","name":"f"}),
        ),
        (
            json!({"tools":tool,"parallel_tool_calls":false,"tool_choice":"required","messages":[user(json!("hi"))]}),
            "/tool_choice",
            json!({"type":"any","disable_parallel_tool_use":true}),
        ),
        (
            json!({"user":"u-42","messages":[user(json!("hi"))]}),
            "/metadata",
            json!({"user_id":"u-42"}),
        ),
        (
            json!({"reasoning_effort":"low","max_tokens":100,"messages":[user(json!("hi"))]}),
            "/thinking",
            json!({"type":"enabled","budget_tokens":1024}),
        ),
        (
            json!({"reasoning_effort":"low","max_tokens":100,"messages":[user(json!("hi"))]}),
            "/max_tokens",
            json!(1024 + 4096),
        ),
        (
            json!({"response_format":{"type":"json_object"},"messages":[user(json!("hi"))]}),
            "/tool_choice",
            json!({"type":"tool","name":"json_tool_call"}),
        ),
        (
            json!({"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"a":{"type":"string"}}}}},"messages":[user(json!("hi"))]}),
            "/tools/0/input_schema",
            json!({"type":"object","properties":{"a":{"type":"string"}}}),
        ),
    ];
    for (mut req, ptr, want) in cases {
        req["model"] = json!("claude");
        let out = o2a(req.clone());
        assert_eq!(out.pointer(ptr), Some(&want), "{req} → {out}");
    }
    // Dropped silently: absent from the output.
    let dropped = o2a(
        json!({"model":"claude","messages":[user(json!("hi"))],"seed":1,"logprobs":false,"top_logprobs":0,
        "logit_bias":{"1":2},"frequency_penalty":0.1,"presence_penalty":0.1,"store":true,"metadata":{"a":"b"},
        "modalities":["text"],"prediction":{"type":"content","content":"x"},"service_tier":"auto",
        "stream_options":{"include_usage":true},"response_format":{"type":"text"},"user":"a@b.c"}),
    );
    let keys: Vec<&String> = dropped.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["max_tokens", "messages", "model"], "{dropped}");
    // Rejected.
    for (req, needle) in [
        (json!({"n":2}), "`n`"),
        (json!({"logprobs":true}), "logprobs"),
        (json!({"audio":{"voice":"x"}}), "audio"),
        (json!({"functions":[]}), "functions"),
        (json!({"web_search_options":{}}), "web_search_options"),
        (
            json!({"tools":[{"type":"custom","custom":{}}]}),
            "tool type",
        ),
        (
            json!({"messages":[user(json!([{"type":"file","file":{"file_id":"file-1"}}]))]}),
            "file_id",
        ),
        (
            json!({"messages":[user(json!([{"type":"input_audio","input_audio":{}}]))]}),
            "audio",
        ),
        (
            json!({"response_format":{"type":"json_object"},"tools":tool}),
            "response_format",
        ),
    ] {
        let mut r = req.clone();
        r["model"] = json!("claude");
        if r.get("messages").is_none() {
            r["messages"] = json!([user(json!("hi"))]);
        }
        let e = o2a_err(r);
        assert!(e.contains(needle), "{req}: {e}");
    }
}

#[test]
fn map_3_1_legacy_function_messages() {
    let out = o2a(oreq(json!([user(json!("q")),
        {"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{}"}},
        {"role":"function","name":"f","content":"r"}])));
    assert_eq!(out["messages"][1]["content"][0]["id"], "call_fn1");
    assert_eq!(out["messages"][2]["content"][0]["tool_use_id"], "call_fn1");
}

// ---------------------------------------------------------------------------------------------
// §3.2 Request A→O
// ---------------------------------------------------------------------------------------------

#[test]
fn map_3_2_rows() {
    let tool = json!([{"name":"f","description":"d","input_schema":{"type":"object"}}]);
    let cases: Vec<(Value, &str, Value)> = vec![
        (
            json!({"system":"S","messages":[user(json!("hi"))]}),
            "/messages/0",
            json!({"role":"system","content":"S"}),
        ),
        (
            json!({"system":[{"type":"text","text":"A"},{"type":"text","text":"B","cache_control":{"type":"ephemeral"}}],"messages":[user(json!("hi"))]}),
            "/messages/0",
            json!({"role":"system","content":"A\n\nB"}),
        ),
        (
            json!({"messages":[user(json!("hi"))]}),
            "/messages/0",
            json!({"role":"user","content":"hi"}),
        ),
        (
            json!({"messages":[user(json!([{"type":"text","text":"a"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAA"}}]))]}),
            "/messages/0/content",
            json!([{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAA"}}]),
        ),
        (
            json!({"messages":[user(json!([{"type":"image","source":{"type":"url","url":"https://x/c.jpg"}}]))]}),
            "/messages/0/content/0",
            json!({"type":"image_url","image_url":{"url":"https://x/c.jpg"}}),
        ),
        (
            json!({"messages":[user(json!([{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVB"}}]))]}),
            "/messages/0/content/0",
            json!({"type":"file","file":{"file_data":"data:application/pdf;base64,JVB","filename":"document.pdf"}}),
        ),
        (
            json!({"messages":[user(json!("q")),{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{"a": 1}}]},
            user(json!([{"type":"text","text":"also"},{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"r1"},{"type":"text","text":"r2"}]}]))],"tools":tool}),
            "/messages",
            json!([{"role":"user","content":"q"},
              {"role":"assistant","content":null,"tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
              {"role":"tool","content":"r1\nr2","tool_call_id":"toolu_1"},
              {"role":"user","content":"also"}]),
        ),
        (
            json!({"messages":[user(json!([{"type":"tool_result","tool_use_id":"t","content":"boom","is_error":true}]))]}),
            "/messages/0",
            json!({"role":"tool","content":"Error: boom","tool_call_id":"t"}),
        ),
        (
            json!({"messages":[user(json!("q")),{"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"s"},{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}),
            "/messages/1",
            json!({"role":"assistant","content":"ab"}),
        ),
        (
            json!({"messages":[user(json!("hi"))]}),
            "/max_completion_tokens",
            json!(100),
        ),
        (
            json!({"temperature":0.3,"top_p":0.9,"top_k":4,"messages":[user(json!("hi"))]}),
            "/temperature",
            json!(0.3),
        ),
        (
            json!({"temperature":0.3,"top_p":0.9,"top_k":4,"messages":[user(json!("hi"))]}),
            "/top_p",
            json!(0.9),
        ),
        (
            json!({"stop_sequences":["x","y"],"messages":[user(json!("hi"))]}),
            "/stop",
            json!(["x", "y"]),
        ),
        (
            json!({"stream":true,"messages":[user(json!("hi"))]}),
            "/stream_options",
            json!({"include_usage":true}),
        ),
        (
            json!({"tools":tool,"messages":[user(json!("hi"))]}),
            "/tools",
            json!([{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"}}}]),
        ),
        (
            json!({"tools":tool,"tool_choice":{"type":"auto"},"messages":[user(json!("hi"))]}),
            "/tool_choice",
            json!("auto"),
        ),
        (
            json!({"tools":tool,"tool_choice":{"type":"any"},"messages":[user(json!("hi"))]}),
            "/tool_choice",
            json!("required"),
        ),
        (
            json!({"tools":tool,"tool_choice":{"type":"none"},"messages":[user(json!("hi"))]}),
            "/tool_choice",
            json!("none"),
        ),
        (
            json!({"tools":tool,"tool_choice":{"type":"tool","name":"f"},"messages":[user(json!("hi"))]}),
            "/tool_choice",
            json!({"type":"function","function":{"name":"f"}}),
        ),
        (
            json!({"tools":tool,"tool_choice":{"type":"auto","disable_parallel_tool_use":true},"messages":[user(json!("hi"))]}),
            "/parallel_tool_calls",
            json!(false),
        ),
        (
            json!({"metadata":{"user_id":"u1"},"messages":[user(json!("hi"))]}),
            "/user",
            json!("u1"),
        ),
    ];
    for (mut req, ptr, want) in cases {
        req["model"] = json!("gpt");
        if req.get("max_tokens").is_none() {
            req["max_tokens"] = json!(100);
        }
        let out = a2o(req.clone());
        assert_eq!(out.pointer(ptr), Some(&want), "{req} → {out}");
    }
    let out = a2o(
        json!({"model":"gpt","max_tokens":5,"top_k":3,"thinking":{"type":"enabled","budget_tokens":2048},
        "context_management":{"edits":[]},"output_config":{"effort":"high"},"service_tier":"auto","messages":[user(json!("hi"))]}),
    );
    let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["max_completion_tokens", "messages", "model"],
        "{out}"
    );
    // parallel_tool_calls only with tools.
    let out = a2o(areq(json!([user(json!("hi"))])));
    assert!(out.get("parallel_tool_calls").is_none());
    for (req, needle) in [
        (
            json!({"tools":[{"type":"web_search_20250305","name":"web_search"}]}),
            "web_search",
        ),
        (json!({"stop_sequences":["a","b","c","d","e"]}), "at most 4"),
        (
            json!({"messages":[user(json!([{"type":"image","source":{"type":"file","file_id":"f"}}]))]}),
            "Files API",
        ),
        (
            json!({"messages":[user(json!([{"type":"server_tool_use","id":"x","name":"web_search","input":{}}]))]}),
            "block type",
        ),
        (
            json!({"output_config":{"format":{"type":"json_schema"}}}),
            "output_config.format",
        ),
        (json!({"mcp_servers":[]}), "mcp_servers"),
    ] {
        let mut r = areq(json!([user(json!("hi"))]));
        for (k, v) in req.as_object().unwrap() {
            r[k] = v.clone();
        }
        let e = a2o_err(r);
        assert!(e.contains(needle), "{req}: {e}");
    }
}

#[test]
fn map_2_7_claude_code_system_turns_stay_in_place() {
    let out = a2o(json!({"model":"gpt","max_tokens":32000,"stream":true,
        "system":[{"type":"text","text":"You are Claude Code."},{"type":"text","text":"Be careful.","cache_control":{"type":"ephemeral"}}],
        "metadata":{"user_id":"user_abc"},"thinking":{"type":"enabled","budget_tokens":1024},"context_management":{},
        "messages":[user(json!("fix the bug")),{"role":"system","content":"<env>cwd=/x</env>"},
            {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"Read","input":{"path":"a"}}]},
            user(json!([{"type":"tool_result","tool_use_id":"toolu_1","content":"code"}]))],
        "tools":[{"name":"Read","input_schema":{"type":"object","properties":{"path":{"type":"string"}}}}]}));
    let roles: Vec<&str> = out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "system", "assistant", "tool"]);
    assert_eq!(out["messages"][2]["content"], "<env>cwd=/x</env>");
    assert_eq!(out["user"], "user_abc");
    assert!(out.get("thinking").is_none() && out.get("context_management").is_none());
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
}

// ---------------------------------------------------------------------------------------------
// §3.3 / §3.4 responses, §3.5 stop reasons, §3.6 usage
// ---------------------------------------------------------------------------------------------

#[test]
fn map_3_3_response_a_to_o() {
    let out = response(
        Protocol::OpenAi,
        Protocol::Anthropic,
        oreq(json!([user(json!("q"))])),
        json!(
        {"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet",
         "content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":"Let me "},{"type":"text","text":"check."},
                    {"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{"city": "Paris"}}],
         "stop_reason":"tool_use","stop_sequence":null,
         "usage":{"input_tokens":26,"output_tokens":48,"cache_creation_input_tokens":3,"cache_read_input_tokens":1024}}),
    );
    assert_eq!(
        out,
        json!({"id":"msg_01","object":"chat.completion","created":7,"model":"catalog-name",
        "choices":[{"index":0,"message":{"role":"assistant","content":"Let me check.","refusal":null,
            "tool_calls":[{"id":"toolu_01A","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
            "logprobs":null,"finish_reason":"tool_calls"}],
        "usage":{"prompt_tokens":1053,"completion_tokens":48,"total_tokens":1101,"prompt_tokens_details":{"cached_tokens":1024}}})
    );
    let out = response(
        Protocol::OpenAi,
        Protocol::Anthropic,
        oreq(json!([user(json!("q"))])),
        json!(
        {"id":"m","content":[],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":0}}),
    );
    assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
}

#[test]
fn map_3_4_response_o_to_a() {
    let out = response(
        Protocol::Anthropic,
        Protocol::OpenAi,
        areq(json!([user(json!("q"))])),
        json!(
        {"id":"chatcmpl-AB12","object":"chat.completion","created":1,"model":"gpt-4o",
         "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"Checking.","refusal":null,
            "tool_calls":[{"id":"call_9","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                          {"id":"call_10","type":"function","function":{"name":"noop","arguments":""}}]}}],
         "usage":{"prompt_tokens":1200,"completion_tokens":40,"total_tokens":1240,"prompt_tokens_details":{"cached_tokens":1024}}}),
    );
    assert_eq!(
        out,
        json!({"id":"msg_chatcmpl-AB12","type":"message","role":"assistant","model":"catalog-name",
        "content":[{"type":"text","text":"Checking."},
            {"type":"tool_use","id":"call_9","name":"get_weather","input":{"city":"Paris"}},
            {"type":"tool_use","id":"call_10","name":"noop","input":{}}],
        "stop_reason":"tool_use","stop_sequence":null,
        "usage":{"input_tokens":176,"output_tokens":40,"cache_read_input_tokens":1024,"cache_creation_input_tokens":0}})
    );
}

#[test]
fn map_3_5_stop_reasons() {
    use crate::adapters::anthropic_wire::{stop_from_reason, stop_reason};
    use crate::adapters::openai_wire::{finish_reason, stop_from_finish};
    for (anthropic, openai) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("something_new", "stop"),
    ] {
        assert_eq!(
            finish_reason(stop_from_reason(Some(anthropic))),
            openai,
            "{anthropic}"
        );
    }
    assert_eq!(finish_reason(stop_from_reason(None)), "stop");
    for (openai, tools, anthropic) in [
        ("stop", false, "end_turn"),
        ("stop", true, "tool_use"),
        ("length", false, "max_tokens"),
        ("tool_calls", true, "tool_use"),
        ("function_call", true, "tool_use"),
        ("content_filter", false, "refusal"),
        ("weird", false, "end_turn"),
    ] {
        assert_eq!(
            stop_reason(stop_from_finish(Some(openai), tools)),
            anthropic,
            "{openai}"
        );
    }
    assert_eq!(stop_reason(stop_from_finish(None, false)), "end_turn");
}

#[test]
fn map_3_6_usage() {
    use crate::adapters::anthropic_wire::OutUsage as AUsage;
    use crate::adapters::openai::WireUsage;
    use crate::adapters::openai_wire::OutUsage as OUsage;
    let u = Usage {
        input_tokens: 26,
        output_tokens: 48,
        cache_read_tokens: 1024,
        cache_write_tokens: 3,
    };
    let o = OUsage::from(u);
    assert_eq!(
        (
            o.prompt_tokens,
            o.completion_tokens,
            o.total_tokens,
            o.prompt_tokens_details.cached_tokens
        ),
        (1053, 48, 1101, 1024)
    );
    let a = AUsage::from(u);
    assert_eq!(
        (
            a.input_tokens,
            a.output_tokens,
            a.cache_read_input_tokens,
            a.cache_creation_input_tokens
        ),
        (26, 48, 1024, 3)
    );
    for (wire, want) in [
        (
            json!({"prompt_tokens":1200,"completion_tokens":40,"prompt_tokens_details":{"cached_tokens":1024}}),
            (176, 40, 1024, 0),
        ),
        (
            json!({"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":20}}),
            (0, 1, 20, 0),
        ),
        (
            json!({"prompt_tokens":100,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":20,"cache_write_tokens":30}}),
            (50, 1, 20, 30),
        ),
        (
            json!({"prompt_tokens":9,"completion_tokens":2}),
            (9, 2, 0, 0),
        ),
    ] {
        let u = Usage::from(serde_json::from_value::<WireUsage>(wire.clone()).unwrap());
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cache_read_tokens,
                u.cache_write_tokens
            ),
            want,
            "{wire}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// §5 edge cases
// ---------------------------------------------------------------------------------------------

#[test]
fn edge_01_system_messages_anywhere() {
    let out = o2a(oreq(
        json!([{"role":"system","content":"a"},user(json!("q")),{"role":"developer","content":"b"},
        {"role":"assistant","content":"r"},{"role":"system","content":"c"},user(json!("q2"))]),
    ));
    assert_eq!(
        out["system"],
        json!([{"type":"text","text":"a"},{"type":"text","text":"b"},{"type":"text","text":"c"}])
    );
    assert!(out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["role"] != "system"));
    assert_eq!(out["messages"].as_array().unwrap().len(), 3);
}

#[test]
fn edge_02_consecutive_same_role_turns() {
    let out = o2a(oreq(json!([user(json!("q")),
        {"role":"assistant","content":null,"tool_calls":[
            {"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}},
            {"id":"c2","type":"function","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"c1","content":"r1"},
        user(json!("interjection")),
        {"role":"tool","tool_call_id":"c2","content":"r2"}])));
    let m = out["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    let kinds: Vec<&str> = m[2]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["tool_result", "tool_result", "text"]);
    assert_eq!(m[2]["content"][1]["tool_use_id"], "c2");
}

#[test]
fn edge_03_history_starting_with_assistant() {
    let out = o2a(oreq(
        json!([{"role":"system","content":"s"},{"role":"assistant","content":"Hello!"},user(json!("hi"))]),
    ));
    assert_eq!(
        out["messages"][0],
        json!({"role":"user","content":[{"type":"text","text":"."}]})
    );
    assert_eq!(out["messages"][1]["role"], "assistant");
    let e = o2a_err(oreq(json!([{"role":"system","content":"only system"}])));
    assert!(e.contains("no user or assistant messages"), "{e}");
}

#[test]
fn edge_04_trailing_assistant_prefill() {
    let out = o2a(oreq(
        json!([user(json!("q")),{"role":"assistant","content":"The answer is  \n"}]),
    ));
    assert_eq!(
        out["messages"][1]["content"],
        json!([{"type":"text","text":"The answer is"}])
    );
}

#[test]
fn edge_05_empty_text() {
    let out = o2a(oreq(
        json!([user(json!([{"type":"text","text":""},{"type":"text","text":"q"},{"type":"text","text":"  "}])),
        {"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"c1","content":"r"},
        {"role":"assistant","content":" "},
        user(json!("next"))]),
    ));
    let m = out["messages"].as_array().unwrap();
    assert_eq!(m[0]["content"], json!([{"type":"text","text":"q"}]));
    assert_eq!(m[1]["content"].as_array().unwrap().len(), 1);
    assert_eq!(m[1]["content"][0]["type"], "tool_use");
    // The whitespace-only assistant turn is gone, the users merged.
    assert_eq!(m.len(), 3);
    assert_eq!(m[2]["content"][1], json!({"type":"text","text":"next"}));
}

#[test]
fn edge_06_tool_call_ids() {
    // Unchanged when valid both ways.
    let out = o2a(oreq(json!([user(json!("q")),
        {"role":"assistant","tool_calls":[{"id":"call_abc","type":"function","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"call_abc","content":"r"}])));
    assert_eq!(out["messages"][1]["content"][0]["id"], "call_abc");
    // Foreign characters → `_`, same for the result.
    let out = o2a(oreq(json!([user(json!("q")),
        {"role":"assistant","tool_calls":[{"id":"fn:1/a.b","type":"function","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"fn:1/a.b","content":"r"}])));
    assert_eq!(out["messages"][1]["content"][0]["id"], "fn_1_a_b");
    assert_eq!(out["messages"][2]["content"][0]["tool_use_id"], "fn_1_a_b");
    // >40 chars for OpenAI → deterministic short hash, same for the result.
    let long = "toolu_".to_string() + &"x".repeat(50);
    let req = areq(json!([user(json!("q")),
        {"role":"assistant","content":[{"type":"tool_use","id":long,"name":"f","input":{}}]},
        user(json!([{"type":"tool_result","tool_use_id":long,"content":"r"}]))]));
    let a = a2o(req.clone());
    let id = a["messages"][1]["tool_calls"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.len() <= 40 && id.starts_with("call_"), "{id}");
    assert_eq!(a["messages"][2]["tool_call_id"], id.as_str());
    assert_eq!(a2o(req)["messages"][1]["tool_calls"][0]["id"], id.as_str());
    let out = a2o(areq(json!([user(json!("q")),
        {"role":"assistant","content":[{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"f","input":{}}]}])));
    assert_eq!(
        out["messages"][1]["tool_calls"][0]["id"],
        "toolu_01A09q90qw90lq917835lq9"
    );
}

#[test]
fn edge_07_tool_names_mapped_and_restored() {
    let bad = "my.tool/with spaces";
    let req = json!({"model":"claude","messages":[user(json!("q"))],
        "tools":[{"type":"function","function":{"name":bad,"parameters":{"type":"object"}}}],
        "tool_choice":{"type":"function","function":{"name":bad}}});
    let out = o2a(req.clone());
    let mapped = out["tools"][0]["name"].as_str().unwrap().to_string();
    assert!(crate::adapters::canonical::valid_tool_name(&mapped));
    assert_eq!(out["tool_choice"]["name"], mapped.as_str());
    // The response carries the original name again, whole and streamed.
    let r = response(
        Protocol::OpenAi,
        Protocol::Anthropic,
        req.clone(),
        json!({"id":"m","content":[
        {"type":"tool_use","id":"t1","name":mapped,"input":{}}],"stop_reason":"tool_use","usage":{}}),
    );
    assert_eq!(
        r["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        bad
    );
    let (_, t) = translate_request(
        Protocol::OpenAi,
        Protocol::Anthropic,
        req.to_string().as_bytes(),
        "c",
        OPTS,
    )
    .unwrap();
    let mut st = t.stream(1);
    let mut out = BytesMut::new();
    st.feed(format!("event: content_block_start\ndata: {}\n\n", json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t1","name":mapped,"input":{}}})).as_bytes(), &mut out);
    assert!(String::from_utf8_lossy(&out).contains(bad), "{out:?}");
}

#[test]
fn edge_08_tool_arguments() {
    for (args, input) in [
        ("", json!({})),
        ("{bad", json!({})),
        ("[1]", json!({})),
        ("{\"a\":1}", json!({"a":1})),
    ] {
        let out = o2a(oreq(json!([user(json!("q")),
            {"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":args}}]}])));
        assert_eq!(out["messages"][1]["content"][0]["input"], input, "{args}");
    }
    let out = a2o(areq(json!([user(json!("q")),
        {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"b": [1, 2], "a": "x"}}]}])));
    // Compact; object keys come out sorted (serde_json's map), which is the same JSON.
    assert_eq!(
        out["messages"][1]["tool_calls"][0]["function"]["arguments"],
        "{\"a\":\"x\",\"b\":[1,2]}"
    );
}

#[test]
fn edge_09_parameterless_tools() {
    let out = o2a(
        json!({"model":"claude","messages":[user(json!("q"))],"tools":[{"type":"function","function":{"name":"now"}}]}),
    );
    assert_eq!(
        out["tools"][0]["input_schema"],
        json!({"type":"object","properties":{}})
    );
    let out = a2o(
        json!({"model":"gpt","max_tokens":1,"messages":[user(json!("q"))],"tools":[{"name":"now"}]}),
    );
    assert_eq!(
        out["tools"][0]["function"]["parameters"],
        json!({"type":"object","properties":{}})
    );
}

#[test]
fn edge_10_tool_blocks_without_tools_are_flattened() {
    let out = o2a(
        json!({"model": "claude", "messages": json!([user(json!("q")),
        {"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
        {"role":"tool","tool_call_id":"c","content":"42"}])}),
    );
    assert!(out.get("tools").is_none());
    assert_eq!(
        out["messages"][1]["content"],
        json!([{"type":"text","text":"[called tool f with {\"a\":1}]"}])
    );
    assert_eq!(
        out["messages"][2]["content"],
        json!([{"type":"text","text":"[tool result: 42]"}])
    );
}

#[test]
fn edge_11_unanswered_tool_use_is_left_to_the_upstream() {
    // No synthesised result: the upstream's 400 reaches the client as a client error.
    let out = o2a(
        json!({"model":"claude","tools":[{"type":"function","function":{"name":"f"}}],"messages":[user(json!("q")),
        {"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
        user(json!("never mind"))]}),
    );
    assert_eq!(
        out["messages"][2]["content"],
        json!([{"type":"text","text":"never mind"}])
    );
}

#[test]
fn edge_12_tool_choice_none_and_forced_stop() {
    let out = o2a(
        json!({"model":"claude","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none","messages":[user(json!("q"))]}),
    );
    assert_eq!(out["tool_choice"], json!({"type":"none"}));
    assert_eq!(out["tools"][0]["name"], "f");
    let out = response(
        Protocol::Anthropic,
        Protocol::OpenAi,
        areq(json!([user(json!("q"))])),
        json!(
        {"id":"x","choices":[{"finish_reason":"stop","message":{"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}),
    );
    assert_eq!(out["stop_reason"], "tool_use");
}

#[test]
fn edge_13_images() {
    for (url, ok) in [
        ("data:image/jpeg;base64,AA", true),
        ("data:image/webp;base64,AA", true),
        ("data:image/gif;base64,AA", true),
        ("data:image/bmp;base64,AA", false),
        ("data:image/svg+xml;base64,AA", false),
        ("http://x/y.png", true),
        ("ftp://x/y.png", false),
    ] {
        let req = oreq(json!([user(
            json!([{"type":"image_url","image_url":{"url":url}}])
        )]));
        let r = translate_request(
            Protocol::OpenAi,
            Protocol::Anthropic,
            req.to_string().as_bytes(),
            "c",
            OPTS,
        );
        assert_eq!(r.is_ok(), ok, "{url}");
    }
    let out = o2a(oreq(json!([user(
        json!([{"type":"image_url","image_url":{"url":"data:application/pdf;base64,JV"}}])
    )])));
    assert_eq!(out["messages"][0]["content"][0]["type"], "document");
}

#[test]
fn edge_14_max_tokens_default() {
    assert_eq!(o2a(oreq(json!([user(json!("q"))])))["max_tokens"], 4096);
    let (b, _) = translate_request(
        Protocol::OpenAi,
        Protocol::Anthropic,
        oreq(json!([user(json!("q"))])).to_string().as_bytes(),
        "c",
        Options {
            upstream_model: "m",
            default_max_tokens: 8192,
        },
    )
    .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["max_tokens"],
        8192
    );
    // With thinking it must exceed the budget.
    let out = o2a(
        json!({"model":"c","reasoning_effort":"high","max_tokens":1000,"messages":[user(json!("q"))]}),
    );
    assert!(
        out["max_tokens"].as_u64().unwrap() > out["thinking"]["budget_tokens"].as_u64().unwrap()
    );
}

#[test]
fn edge_15_sampling() {
    let out = o2a(json!({"model":"c","temperature":2.0,"top_p":0.5,"messages":[user(json!("q"))]}));
    assert_eq!(out["temperature"], 1.0);
    assert!(out.get("top_p").is_none());
    let out = o2a(
        json!({"model":"c","reasoning_effort":"medium","temperature":0.5,"top_k":3,"messages":[user(json!("q"))]}),
    );
    assert!(out.get("temperature").is_none() && out.get("top_k").is_none());
    let out = o2a(json!({"model":"c","stop":["\n"," ","END"],"messages":[user(json!("q"))]}));
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert!(a2o_err(json!({"model":"g","max_tokens":1,"stop_sequences":["1","2","3","4","5"],"messages":[user(json!("q"))]})).contains("at most 4"));
    assert!(a2o(json!({"model":"g","max_tokens":1,"stop_sequences":["1","2","3","4"],"messages":[user(json!("q"))]}))["stop"].as_array().unwrap().len() == 4);
    assert!(o2a_err(json!({"model":"c","n":3,"messages":[user(json!("q"))]})).contains("`n`"));
    assert!(
        o2a(json!({"model":"c","n":1,"messages":[user(json!("q"))]}))
            .get("n")
            .is_none()
    );
}

#[test]
fn edge_16_openai_upstream_usage() {
    assert_eq!(
        a2o(json!({"model":"g","max_tokens":1,"stream":true,"messages":[user(json!("q"))]}))
            ["stream_options"],
        json!({"include_usage":true})
    );
    assert!(
        a2o(json!({"model":"g","max_tokens":1,"messages":[user(json!("q"))]}))
            .get("stream_options")
            .is_none()
    );
    // The usage chunk fills the held message_delta (see golden `o2a-*`).
    let evs = run(Protocol::Anthropic, false, &[
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    ]);
    assert!(!evs.contains("message_delta"), "held: {evs}");
    let evs = run(Protocol::Anthropic, false, &[
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n",
    ]);
    assert!(
        evs.contains("\"usage\":{\"input_tokens\":9,\"output_tokens\":2"),
        "{evs}"
    );
}

/// Feeds raw upstream events to a translator for `client`; returns the output.
fn run(client: Protocol, include_usage: bool, events: &[&str]) -> String {
    let upstream = match client {
        Protocol::OpenAi => Protocol::Anthropic,
        Protocol::Anthropic => Protocol::OpenAi,
    };
    let t = Translation {
        client,
        upstream,
        model: "m".into(),
        stream: true,
        include_usage,
        json_mode: false,
        names: Vec::new(),
    };
    let mut st = t.stream(1);
    let mut out = BytesMut::new();
    for e in events {
        st.feed(e.as_bytes(), &mut out);
    }
    String::from_utf8(out.to_vec()).unwrap()
}

fn aev(v: Value) -> String {
    format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap())
}

#[test]
fn edge_17_content_and_finish_in_one_chunk() {
    let out = run(Protocol::Anthropic, false, &[
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"all at once\",\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: [DONE]\n\n",
    ]);
    let order: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        order,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(out.contains("\"stop_reason\":\"tool_use\""));
}

#[test]
fn edge_18_tool_index_bookkeeping() {
    let out = run(
        Protocol::OpenAi,
        false,
        &[
            &aev(
                json!({"type":"message_start","message":{"id":"m","model":"x","usage":{"input_tokens":1}}}),
            ),
            &aev(
                json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}),
            ),
            &aev(json!({"type":"content_block_stop","index":0})),
            &aev(
                json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
            ),
            &aev(json!({"type":"content_block_stop","index":1})),
            &aev(
                json!({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"a","name":"f","input":{}}}),
            ),
            &aev(
                json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{}"}}),
            ),
            &aev(json!({"type":"content_block_stop","index":2})),
            &aev(
                json!({"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"b","name":"g","input":{}}}),
            ),
            &aev(
                json!({"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{}"}}),
            ),
            &aev(json!({"type":"content_block_stop","index":3})),
        ],
    );
    let idx: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|v| v["choices"][0]["delta"]["tool_calls"][0]["index"].as_u64())
        .collect();
    assert_eq!(idx, [0, 0, 1, 1]);
}

#[test]
fn edge_19_no_argument_tool_in_an_anthropic_stream() {
    let out = run(
        Protocol::OpenAi,
        false,
        &[
            &aev(
                json!({"type":"message_start","message":{"id":"m","model":"x","usage":{"input_tokens":1}}}),
            ),
            &aev(
                json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"a","name":"now","input":{}}}),
            ),
            &aev(
                json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}),
            ),
            &aev(json!({"type":"content_block_stop","index":0})),
        ],
    );
    assert!(
        out.contains("{\"index\":0,\"function\":{\"arguments\":\"{}\"}}"),
        "{out}"
    );
}

#[test]
fn edge_20_pings_and_unknown_events() {
    let out = run(
        Protocol::OpenAi,
        false,
        &[
            &aev(
                json!({"type":"message_start","message":{"id":"m","model":"x","usage":{"input_tokens":1}}}),
            ),
            &aev(json!({"type":"ping"})),
            &aev(json!({"type":"brand_new_event","x":1})),
            &aev(
                json!({"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"s","name":"web_search"}}),
            ),
            &aev(
                json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"q\":1}"}}),
            ),
            &aev(json!({"type":"content_block_stop","index":0})),
            &aev(
                json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
            ),
            &aev(
                json!({"type":"content_block_delta","index":1,"delta":{"type":"citations_delta","citation":{}}}),
            ),
            &aev(
                json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"ok"}}),
            ),
            ": keep-alive\n\n",
        ],
    );
    assert_eq!(out.matches("data: ").count(), 2, "{out}");
    let out = run(Protocol::Anthropic, false, &[": keep-alive\n\n", "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"x\"}}]}\n\n"]);
    assert_eq!(out.matches("event: ").count(), 1, "{out}");
}

#[test]
fn edge_21_mid_stream_error() {
    let mut st = Translation {
        client: Protocol::OpenAi,
        upstream: Protocol::Anthropic,
        model: "m".into(),
        stream: true,
        include_usage: true,
        json_mode: false,
        names: Vec::new(),
    }
    .stream(1);
    let mut out = BytesMut::new();
    assert_eq!(st.feed(aev(json!({"type":"message_start","message":{"id":"m","model":"x","usage":{"input_tokens":5}}})).as_bytes(), &mut out), Seen::Forward);
    let seen = st.feed(
        aev(json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}))
            .as_bytes(),
        &mut out,
    );
    assert_eq!(seen, Seen::Error);
    let s = String::from_utf8(out.to_vec()).unwrap();
    assert!(s.ends_with("data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\",\"code\":null}}\n\n"), "{s}");
    assert!(!s.contains("[DONE]") && !s.contains("finish_reason\":\"stop"));
    assert_eq!(st.usage().unwrap().input_tokens, 5);
    let s = run(Protocol::Anthropic, false, &["data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n",
        "data: {\"error\":{\"message\":\"The engine is currently overloaded\",\"type\":\"server_error\"}}\n\n"]);
    assert!(s.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"The engine is currently overloaded\"}}\n\n"), "{s}");
    assert!(!s.contains("message_stop") && !s.contains("message_delta"));
}

#[test]
fn edge_22_first_byte_stall_sends_nothing_early() {
    // Until the first upstream event the client has nothing, so the
    // gateway can still answer (or, next issue, retry) with a status.
    let t = Translation {
        client: Protocol::Anthropic,
        upstream: Protocol::OpenAi,
        model: "m".into(),
        stream: true,
        include_usage: false,
        json_mode: false,
        names: Vec::new(),
    };
    let mut st = t.stream(1);
    let mut out = BytesMut::new();
    assert!(!st.finish_at_eof(&mut out));
    assert!(out.is_empty());
}

#[test]
fn edge_23_partial_usage_on_disconnect() {
    let mut st = Translation {
        client: Protocol::OpenAi,
        upstream: Protocol::Anthropic,
        model: "m".into(),
        stream: true,
        include_usage: false,
        json_mode: false,
        names: Vec::new(),
    }
    .stream(1);
    let mut out = BytesMut::new();
    st.feed(aev(json!({"type":"message_start","message":{"id":"m","model":"x","usage":{"input_tokens":412,"cache_read_input_tokens":7,"output_tokens":1}}})).as_bytes(), &mut out);
    let u = st.usage().unwrap();
    assert_eq!((u.input_tokens, u.cache_read_tokens), (412, 7));
    // OpenAI upstreams report nothing until the final chunk.
    let st = Translation {
        client: Protocol::Anthropic,
        upstream: Protocol::OpenAi,
        model: "m".into(),
        stream: true,
        include_usage: false,
        json_mode: false,
        names: Vec::new(),
    }
    .stream(1);
    assert_eq!(st.usage(), None);
}

#[test]
fn edge_24_ids_and_model() {
    let out = run(
        Protocol::OpenAi,
        false,
        &[
            &aev(
                json!({"type":"message_start","message":{"id":"msg_1","model":"claude-upstream","usage":{}}}),
            ),
            &aev(
                json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            ),
            &aev(
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}),
            ),
        ],
    );
    for d in out.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let v: Value = serde_json::from_str(d).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["created"].as_u64(), v["model"].as_str()),
            (Some("msg_1"), Some(1), Some("m"))
        );
    }
    let out = run(Protocol::Anthropic, false, &["data: {\"id\":\"chatcmpl-9\",\"model\":\"gpt-up\",\"choices\":[{\"index\":0,\"delta\":{}}]}\n\n"]);
    assert!(
        out.contains("\"id\":\"msg_chatcmpl-9\"") && out.contains("\"model\":\"m\""),
        "{out}"
    );
}

#[test]
fn edge_25_thinking() {
    // Thinking is dropped from responses and never enabled with tools.
    let out = response(
        Protocol::OpenAi,
        Protocol::Anthropic,
        oreq(json!([user(json!("q"))])),
        json!(
        {"id":"m","content":[{"type":"thinking","thinking":"secret","signature":"s"},{"type":"redacted_thinking","data":"x"},{"type":"text","text":"hi"}],
         "stop_reason":"end_turn","usage":{}}),
    );
    assert_eq!(out["choices"][0]["message"]["content"], "hi");
    let out = o2a(
        json!({"model":"c","reasoning_effort":"high","tools":[{"type":"function","function":{"name":"f"}}],"messages":[user(json!("q"))]}),
    );
    assert!(out.get("thinking").is_none());
}

#[test]
fn edge_26_json_mode() {
    let req =
        json!({"model":"c","response_format":{"type":"json_object"},"messages":[user(json!("q"))]});
    let out = response(
        Protocol::OpenAi,
        Protocol::Anthropic,
        req.clone(),
        json!({"id":"m","content":[
        {"type":"tool_use","id":"t","name":"json_tool_call","input":{"a": 1}}],"stop_reason":"tool_use","usage":{}}),
    );
    assert_eq!(out["choices"][0]["message"]["content"], "{\"a\":1}");
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert!(out["choices"][0]["message"].get("tool_calls").is_none());
    let (_, t) = translate_request(
        Protocol::OpenAi,
        Protocol::Anthropic,
        req.to_string().as_bytes(),
        "c",
        OPTS,
    )
    .unwrap();
    let mut st = t.stream(1);
    let mut out = BytesMut::new();
    for e in [
        aev(json!({"type":"message_start","message":{"id":"m","model":"x","usage":{}}})),
        aev(
            json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"json_tool_call","input":{}}}),
        ),
        aev(
            json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}),
        ),
        aev(
            json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"1}"}}),
        ),
        aev(json!({"type":"content_block_stop","index":0})),
        aev(
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":3}}),
        ),
    ] {
        st.feed(e.as_bytes(), &mut out);
    }
    let s = String::from_utf8(out.to_vec()).unwrap();
    assert!(!s.contains("tool_calls"), "{s}");
    assert!(
        s.contains("\"content\":\"{\\\"a\\\":\"") && s.contains("\"finish_reason\":\"stop\""),
        "{s}"
    );
}

#[test]
fn edge_27_refusals() {
    let out = response(
        Protocol::OpenAi,
        Protocol::Anthropic,
        oreq(json!([user(json!("q"))])),
        json!(
        {"id":"m","content":[{"type":"text","text":"I can't help with that."}],"stop_reason":"refusal","usage":{}}),
    );
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(
        out["choices"][0]["message"]["refusal"],
        "I can't help with that."
    );
    let out = response(
        Protocol::Anthropic,
        Protocol::OpenAi,
        areq(json!([user(json!("q"))])),
        json!(
        {"id":"x","choices":[{"finish_reason":"stop","message":{"content":null,"refusal":"No."}}]}),
    );
    assert_eq!(out["stop_reason"], "refusal");
    assert_eq!(out["content"], json!([{"type":"text","text":"No."}]));
    let s = run(Protocol::Anthropic, false, &[
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"No.\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n"]);
    assert!(
        s.contains("\"text\":\"No.\"") && s.contains("\"stop_reason\":\"refusal\""),
        "{s}"
    );
}

#[test]
fn edge_28_no_client_credentials_in_translated_bodies() {
    // Headers are set by the gateway (the e2e test `claude_code_session`
    // checks them upstream); the body never carries client auth or betas.
    let out = a2o(
        json!({"model":"g","max_tokens":1,"betas":["x"],"api_key":"k","messages":[user(json!("q"))]}),
    );
    assert!(out.get("betas").is_none() && out.get("api_key").is_none());
}

#[test]
fn edge_31_models_list_is_not_translated() {
    // `/v1/models` answers in OpenAI format for every client (http/data.rs);
    // nothing here translates it. The e2e test `models_list_for_anthropic_clients` checks it.
    assert_eq!(Protocol::Anthropic.as_str(), "anthropic");
}

#[test]
fn deferred_parallel_calls_are_never_interleaved() {
    // §3.8: fragments of call 0 after call 1 opened → call 1 held until the finish.
    let s = run(Protocol::Anthropic, false, &[
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{\\\"y\\\":\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"2}\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: [DONE]\n\n"]);
    let evs: Vec<Value> = s
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let mut open: Option<u64> = None;
    let mut args = std::collections::BTreeMap::new();
    for e in &evs {
        match e["type"].as_str().unwrap() {
            "content_block_start" => {
                assert!(open.is_none(), "{s}");
                open = e["index"].as_u64();
            }
            "content_block_delta" => {
                assert_eq!(open, e["index"].as_u64(), "{s}");
                args.entry(e["index"].as_u64().unwrap())
                    .or_insert_with(String::new)
                    .push_str(e["delta"]["partial_json"].as_str().unwrap());
            }
            "content_block_stop" => {
                assert_eq!(open, e["index"].as_u64());
                open = None;
            }
            _ => {}
        }
    }
    assert_eq!(
        args.into_values().collect::<Vec<_>>(),
        ["{\"x\":1}", "{\"y\":2}"]
    );
}

#[test]
fn cut_openai_stream_after_finish_is_completed() {
    let t = Translation {
        client: Protocol::Anthropic,
        upstream: Protocol::OpenAi,
        model: "m".into(),
        stream: true,
        include_usage: false,
        json_mode: false,
        names: Vec::new(),
    };
    let mut st = t.stream(1);
    let mut out = BytesMut::new();
    st.feed(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\n\n", &mut out);
    assert!(st.finish_at_eof(&mut out));
    let s = String::from_utf8(out.to_vec()).unwrap();
    assert!(
        s.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{s}"
    );
    // Anthropic upstream: a cut is a cut.
    let t = Translation {
        client: Protocol::OpenAi,
        upstream: Protocol::Anthropic,
        model: "m".into(),
        stream: true,
        include_usage: false,
        json_mode: false,
        names: Vec::new(),
    };
    let mut st = t.stream(1);
    st.feed(aev(json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1}})).as_bytes(), &mut out);
    assert!(!st.finish_at_eof(&mut out));
}

// ---------------------------------------------------------------------------------------------
// Golden stream conversations
// ---------------------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct Case {
    /// "openai" or "anthropic": the client's protocol (the upstream is the other).
    client: String,
    #[serde(default)]
    include_usage: bool,
    /// "eof" (default: the upstream ends after its events) or "none".
    #[serde(default)]
    model: Option<String>,
}

#[test]
fn golden_streams() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/streams");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 14,
        "golden cases missing in {}",
        root.display()
    );
    for dir in dirs {
        let case: Case =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let client = if case.client == "openai" {
            Protocol::OpenAi
        } else {
            Protocol::Anthropic
        };
        let t = Translation {
            client,
            upstream: if client == Protocol::OpenAi {
                Protocol::Anthropic
            } else {
                Protocol::OpenAi
            },
            model: case.model.unwrap_or_else(|| "relay-model".into()),
            stream: true,
            include_usage: case.include_usage,
            json_mode: false,
            names: Vec::new(),
        };
        let mut st = t.stream(1_700_000_000);
        let upstream = std::fs::read(dir.join("upstream.sse")).unwrap();
        let mut split = crate::adapters::sse::Splitter::default();
        split.push(&upstream);
        let mut out = BytesMut::new();
        let mut ended = false;
        while let Some(ev) = split.next_event() {
            if st.feed(&ev, &mut out) != Seen::Forward {
                ended = true;
                break;
            }
        }
        // What the gateway does at EOF (gateway/stream.rs).
        if !ended && !st.finish_at_eof(&mut out) {
            out.extend_from_slice(
                &client.error_event("the upstream stream ended before its final event"),
            );
        }
        let got = String::from_utf8(out.to_vec()).unwrap();
        let path = dir.join("expected.sse");
        if update {
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(got, want, "golden case {}", dir.display());
    }
}

#[test]
fn absurd_stream_indices_from_an_upstream_are_ignored_not_allocated() {
    for (client, upstream, event) in [
        (
            Protocol::OpenAi,
            Protocol::Anthropic,
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":18446744073709551615,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        ),
        (
            Protocol::Anthropic,
            Protocol::OpenAi,
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":4000000000,\"id\":\"call_x\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        ),
    ] {
        let t = Translation {
            client,
            upstream,
            model: "m".into(),
            stream: true,
            include_usage: false,
            json_mode: false,
            names: Vec::new(),
        };
        let mut st = t.stream(1);
        let mut out = BytesMut::new();
        // Must neither panic nor try to allocate gigabytes.
        assert_eq!(st.feed(event.as_bytes(), &mut out), Seen::Forward);
    }
}

#[test]
fn done_without_a_finish_chunk_still_finishes_the_anthropic_message() {
    let t = Translation {
        client: Protocol::Anthropic,
        upstream: Protocol::OpenAi,
        model: "m".into(),
        stream: true,
        include_usage: false,
        json_mode: false,
        names: Vec::new(),
    };
    let mut st = t.stream(1);
    let mut out = BytesMut::new();
    let chunks = [
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: [DONE]\n\n",
    ];
    for c in chunks {
        st.feed(c.as_bytes(), &mut out);
    }
    let text = String::from_utf8(out.to_vec()).unwrap();
    assert!(text.contains("\"type\":\"tool_use\""), "{text}");
    assert!(
        text.contains("\"stop_reason\":\"tool_use\""),
        "a stop_reason even without finish_reason: {text}"
    );
    assert!(
        text.trim_end().ends_with("{\"type\":\"message_stop\"}"),
        "{text}"
    );
}
