//! Cross-protocol calls end to end: an OpenAI client calling `claude-test`
//! (anthropic adapter) and an Anthropic client calling `gpt-test` (openai
//! adapter), through a real relay in front of the mock upstream.

use serde_json::{json, Value};

use crate::support::*;

fn chat(content: &str) -> Value {
    json!({"model": "claude-test", "messages": [{"role": "user", "content": content}]})
}

fn message(content: &str) -> Value {
    json!({"model": "gpt-test", "max_tokens": 50, "messages": [{"role": "user", "content": content}]})
}

fn openai_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

fn anthropic_tool() -> Value {
    json!([{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
}

/// `data:` payloads of an SSE body, parsed (`[DONE]` as the string).
fn data(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_string())))
        .collect()
}

#[tokio::test]
async fn openai_client_to_anthropic_binding() {
    let s = Stack::start(Db::Sqlite).await;
    // Plain.
    let r = s
        .post("/v1/chat/completions", Some(&s.key), chat("hello"))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude-test");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Mock: input 10, cache read 2, cache write 1, output 5.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 13, "completion_tokens": 5, "total_tokens": 18, "prompt_tokens_details": {"cached_tokens": 2}})
    );
    let up = s.mock.requests().pop().unwrap();
    assert_eq!(up.path, "/v1/messages");
    assert_eq!(up.body["model"], "claude-upstream-v1");
    assert_eq!(up.body["max_tokens"], 4096);
    assert_eq!(up.headers["x-api-key"], "sk-upstream-anthropic");
    assert!(up.headers.get("authorization").is_none());

    // Streamed, with usage.
    let mut body = chat("hello there");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = s.post("/v1/chat/completions", Some(&s.key), body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let d = data(&r.text().await.unwrap());
    assert_eq!(d.last().unwrap(), "[DONE]");
    let text: String = d
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: hello there");
    let usage = &d[d.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert!(d[..d.len() - 2]
        .iter()
        .all(|c| c["usage"].is_null() && c["model"] == "claude-test"));

    // Tools, whole and streamed: index 0 although a text block came first.
    let mut body = chat("weather?");
    body["tools"] = openai_tool();
    let v: Value = s
        .post("/v1/chat/completions", Some(&s.key), body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["choices"][0]["message"]["content"], "Let me check.");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_mock1");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    body["stream"] = json!(true);
    let d = data(
        &s.post("/v1/chat/completions", Some(&s.key), body)
            .await
            .text()
            .await
            .unwrap(),
    );
    let frags: Vec<&Value> = d
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert!(frags.iter().all(|f| f["index"] == 0));
    let args: String = frags
        .iter()
        .filter_map(|f| f["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    assert!(d
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    assert!(d.iter().all(|c| c.get("usage").is_none() || c == "[DONE]"));

    // Tool result round trip.
    let v: Value = s
        .post("/v1/chat/completions", Some(&s.key), json!({"model": "claude-test", "tools": openai_tool(), "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_mock1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_mock1", "content": "sunny"}]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "tool said: sunny");

    // Usage recorded for translated calls, in relay's normalised counts.
    let u = usage_for(&s.relay, &s.key_id, 5).await;
    let recs = u["records"].as_array().unwrap();
    assert_eq!(recs.len(), 5);
    for r in recs {
        assert_eq!(
            (r["model"].as_str(), r["status"].as_i64()),
            (Some("claude-test"), Some(200)),
            "{r}"
        );
        assert_eq!(
            (r["input_tokens"].as_i64(), r["output_tokens"].as_i64()),
            (Some(10), Some(5)),
            "{r}"
        );
        assert_eq!(
            (
                r["cache_read_tokens"].as_i64(),
                r["cache_write_tokens"].as_i64()
            ),
            (Some(2), Some(1)),
            "{r}"
        );
    }
    assert_eq!(recs.iter().filter(|r| r["streamed"] == true).count(), 2);
}

#[tokio::test]
async fn anthropic_client_to_openai_binding() {
    let s = Stack::start(Db::Sqlite).await;
    let r = s.post("/v1/messages", Some(&s.key), message("hello")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "gpt-test");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "echo: hello"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    // Mock: prompt 12 (2 cached), completion 5.
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 2, "cache_creation_input_tokens": 0})
    );
    let up = s.mock.requests().pop().unwrap();
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(up.body["model"], "gpt-upstream-v1");
    assert_eq!(up.body["max_completion_tokens"], 50);
    assert!(up.body.get("stream_options").is_none());

    // Streamed: usage held for message_delta.
    let mut body = message("hello there");
    body["stream"] = json!(true);
    let text = s
        .post("/v1/messages", Some(&s.key), body)
        .await
        .text()
        .await
        .unwrap();
    let ev = sse_events(&text);
    assert_eq!(ev.first().unwrap(), "message_start");
    assert_eq!(ev[ev.len() - 2..], ["message_delta", "message_stop"]);
    let d = data(&text);
    let t: String = d
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(t, "echo: hello there");
    let delta = d.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 5);
    assert_eq!(delta["usage"]["input_tokens"], 10);
    assert_eq!(
        s.mock.requests().pop().unwrap().body["stream_options"],
        json!({"include_usage": true})
    );

    // Tools, whole and streamed.
    let mut body = message("weather?");
    body["tools"] = anthropic_tool();
    let v: Value = s
        .post("/v1/messages", Some(&s.key), body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["content"],
        json!([{"type": "tool_use", "id": "call_mock1", "name": "get_weather", "input": {"city": "Paris"}}])
    );
    body["stream"] = json!(true);
    let text = s
        .post("/v1/messages", Some(&s.key), body)
        .await
        .text()
        .await
        .unwrap();
    let d = data(&text);
    let start = d
        .iter()
        .find(|e| e["type"] == "content_block_start")
        .unwrap();
    assert_eq!(start["content_block"]["type"], "tool_use");
    let args: String = d
        .iter()
        .filter_map(|e| e["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(
        d.iter().find(|e| e["type"] == "message_delta").unwrap()["delta"]["stop_reason"],
        "tool_use"
    );

    let u = usage_for(&s.relay, &s.key_id, 4).await;
    for r in u["records"].as_array().unwrap() {
        assert_eq!(
            (r["model"].as_str(), r["status"].as_i64()),
            (Some("gpt-test"), Some(200)),
            "{r}"
        );
        assert_eq!(
            (
                r["input_tokens"].as_i64(),
                r["output_tokens"].as_i64(),
                r["cache_read_tokens"].as_i64()
            ),
            (Some(10), Some(5), Some(2)),
            "{r}"
        );
    }
}

#[tokio::test]
async fn errors_arrive_in_the_clients_shape() {
    let s = Stack::start(Db::Sqlite).await;
    // OpenAI client ← Anthropic upstream.
    // (A 429 is the host key's fault: with no other key, relay's own 503.)
    for (fault, status, kind) in [
        ("400", 400, "invalid_request_error"),
        ("429", 503, "server_error"),
        ("529", 503, "overloaded_error"),
        ("500", 500, "api_error"),
    ] {
        s.reset_breakers().await;
        let r = s
            .post(
                "/v1/chat/completions",
                Some(&s.key),
                chat(&format!("hi [[fault:{fault}]]")),
            )
            .await;
        assert_eq!(r.status(), status, "{fault}");
        if fault == "429" {
            let wait = r.headers()["retry-after"].to_str().unwrap().to_string();
            assert!(
                wait == "7" || wait == "8",
                "the upstream's 7 s hint: {wait}"
            );
        }
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 3);
    }
    // Anthropic client ← OpenAI upstream.
    for (fault, status, kind) in [
        ("400", 400, "invalid_request_error"),
        ("429", 503, "overloaded_error"),
        ("529", 529, "overloaded_error"),
        ("503", 529, "overloaded_error"),
        ("500", 500, "api_error"),
        ("html-502", 502, "api_error"),
    ] {
        s.reset_breakers().await;
        let r = s
            .post(
                "/v1/messages",
                Some(&s.key),
                message(&format!("hi [[fault:{fault}]]")),
            )
            .await;
        assert_eq!(r.status(), status, "{fault}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (v["type"].as_str(), v["error"]["type"].as_str()),
            (Some("error"), Some(kind)),
            "{fault}: {v}"
        );
    }
    // Upstream key rejections are relay's own problem: 503, no healthy keys.
    s.reset_breakers().await;
    let r = s
        .post("/v1/messages", Some(&s.key), message("hi [[fault:401]]"))
        .await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("no healthy keys in pool"));
    // Untranslatable requests: 400 before any upstream call.
    let before = s.mock.requests().len();
    let mut body = chat("hi");
    body["n"] = json!(2);
    let r = s.post("/v1/chat/completions", Some(&s.key), body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`n`"),
        "{v}"
    );
    let mut body = message("hi");
    body["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
    let r = s.post("/v1/messages", Some(&s.key), body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(s.mock.requests().len(), before);
}

#[tokio::test]
async fn mid_stream_errors_and_cuts() {
    let s = Stack::start(Db::Sqlite).await;
    for fault in ["stream-error", "break-stream"] {
        let mut body = chat(&format!("hi [[fault:{fault}]]"));
        body["stream"] = json!(true);
        let text = s
            .post("/v1/chat/completions", Some(&s.key), body)
            .await
            .text()
            .await
            .unwrap();
        let d = data(&text);
        assert!(
            d.last().unwrap()["error"]["message"].is_string(),
            "{fault}: {text}"
        );
        assert!(
            !text.contains("[DONE]") && !text.contains("finish_reason\":\"stop"),
            "{text}"
        );

        let mut body = message(&format!("hi [[fault:{fault}]]"));
        body["stream"] = json!(true);
        let text = s
            .post("/v1/messages", Some(&s.key), body)
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(
            sse_events(&text).last().unwrap(),
            "error",
            "{fault}: {text}"
        );
        assert!(
            !text.contains("message_stop") && !text.contains("message_delta"),
            "{text}"
        );
    }
    let u = usage_for(&s.relay, &s.key_id, 4).await;
    assert!(
        u["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == 502),
        "{u}"
    );
}

/// A request shaped like Claude Code's (wire-formats §2.7) over several
/// turns, to a model on the openai adapter.
#[tokio::test]
async fn claude_code_session() {
    let s = Stack::start(Db::Sqlite).await;
    let tools = json!([
        {"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}},
        {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let system = json!([{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
        {"type": "text", "text": "Be concise.", "cache_control": {"type": "ephemeral"}}]);
    let mut messages = vec![
        json!({"role": "user", "content": [{"type": "text", "text": "what's in main.rs?"}]}),
        json!({"role": "system", "content": "<env>Working directory: /repo\nPlatform: linux</env>"}),
    ];
    let send = |messages: Vec<Value>| {
        let body = json!({"model": "gpt-test", "max_tokens": 32000, "stream": true, "system": system, "tools": tools,
            "messages": messages, "metadata": {"user_id": "user_0f3a_account__session_9"},
            "thinking": {"type": "enabled", "budget_tokens": 31999}, "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
            "output_config": {"effort": "high"}});
        s.relay
            .http
            .post(s.relay.data("/v1/messages?beta=true"))
            .header("x-api-key", &s.key)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27")
            .header("anthropic-dangerous-direct-browser-access", "true")
            .json(&body)
            .send()
    };

    // Turn 1: the model calls the first tool.
    let r = send(messages.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let d = data(&text);
    let start = d
        .iter()
        .find(|e| e["type"] == "content_block_start")
        .unwrap();
    assert_eq!(start["content_block"]["name"], "Read");
    let id = start["content_block"]["id"].as_str().unwrap().to_string();
    let args: String = d
        .iter()
        .filter_map(|e| e["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(sse_events(&text).last().unwrap(), "message_stop");

    let up = s.mock.requests().pop().unwrap();
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(up.headers["authorization"], "Bearer sk-upstream-openai");
    for h in [
        "anthropic-beta",
        "x-api-key",
        "anthropic-version",
        "anthropic-dangerous-direct-browser-access",
    ] {
        assert!(
            up.headers.get(h).is_none(),
            "{h} must not reach an OpenAI upstream"
        );
    }
    let roles: Vec<&str> = up.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "system"]);
    assert_eq!(
        up.body["messages"][0]["content"],
        "You are Claude Code, Anthropic's official CLI for Claude.\n\nBe concise."
    );
    assert_eq!(
        up.body["messages"][2]["content"],
        "<env>Working directory: /repo\nPlatform: linux</env>"
    );
    assert_eq!(up.body["user"], "user_0f3a_account__session_9");
    assert_eq!(up.body["max_completion_tokens"], 32000);
    assert_eq!(up.body["stream_options"], json!({"include_usage": true}));
    assert_eq!(up.body["tools"].as_array().unwrap().len(), 2);
    for gone in [
        "thinking",
        "context_management",
        "output_config",
        "metadata",
        "system",
        "max_tokens",
    ] {
        assert!(up.body.get(gone).is_none(), "{gone} forwarded");
    }

    // Turn 2: the tool result (Claude Code sends thinking back too); the model answers.
    messages.push(json!({"role": "assistant", "content": [
        {"type": "thinking", "thinking": "I should read it.", "signature": "sig"},
        {"type": "tool_use", "id": id, "name": "Read", "input": serde_json::from_str::<Value>(&args).unwrap()}]}));
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": id, "content": [{"type": "text", "text": "fn main() {}"}]},
        {"type": "text", "text": "and summarise", "cache_control": {"type": "ephemeral"}}]}));
    let text = send(messages.clone()).await.unwrap().text().await.unwrap();
    let d = data(&text);
    // With tools and a user text last, the mock calls the first tool again.
    let start = d
        .iter()
        .find(|e| e["type"] == "content_block_start")
        .unwrap();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(
        d.iter().find(|e| e["type"] == "message_delta").unwrap()["delta"]["stop_reason"],
        "tool_use"
    );
    let up = s.mock.requests().pop().unwrap();
    let m = up.body["messages"].as_array().unwrap();
    let roles: Vec<&str> = m.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["system", "user", "system", "assistant", "tool", "user"]
    );
    assert_eq!(m[3]["content"], Value::Null);
    assert_eq!(m[3]["tool_calls"][0]["id"], id.as_str());
    assert_eq!(m[3]["tool_calls"][0]["function"]["name"], "Read");
    assert_eq!(
        m[4],
        json!({"role": "tool", "tool_call_id": id, "content": "fn main() {}"})
    );

    // Turn 3: only a tool result; the model reads it.
    messages.push(
        json!({"role": "assistant", "content": [{"type": "text", "text": "Checking weather too."},
        {"type": "tool_use", "id": "call_w", "name": "get_weather", "input": {"city": "Paris"}}]}),
    );
    messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_w", "content": "sunny"}]}));
    let text = send(messages).await.unwrap().text().await.unwrap();
    let t: String = data(&text)
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(t, "tool said: sunny");
    let ev = sse_events(&text);
    assert_eq!(ev[ev.len() - 2..], ["message_delta", "message_stop"]);
    let up = s.mock.requests().pop().unwrap();
    let last = up.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .take(2)
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        last[0],
        json!({"role": "tool", "tool_call_id": "call_w", "content": "sunny"})
    );
    assert_eq!(last[1]["content"], "Checking weather too.");

    let u = usage_for(&s.relay, &s.key_id, 3).await;
    assert!(u["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == 200 && r["streamed"] == true && r["output_tokens"] == 5));
}

#[tokio::test]
async fn models_list_for_anthropic_clients() {
    // §5.31: OpenAI list format for every client.
    let s = Stack::start(Db::Sqlite).await;
    let v: Value = s
        .relay
        .http
        .get(s.relay.data("/v1/models"))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "claude-test"));
}
