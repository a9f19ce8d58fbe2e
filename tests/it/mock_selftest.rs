//! Self-test of the mock upstream (`tests/common/mock_upstream.rs`): hits it directly with
//! reqwest, without relay in between.

use std::time::{Duration, Instant, SystemTime};

use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

use crate::mock_upstream::{rfc3339, spawn_on_thread, MockUpstream};

const OPENAI_KEY: &str = "sk-test-123";
const ANTHROPIC_KEY: &str = "sk-ant-test-123";

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn openai(mock: &MockUpstream, key: &str, body: &Value) -> RequestBuilder {
    client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth(key)
        .json(body)
}

fn anthropic(mock: &MockUpstream, key: &str, body: &Value) -> RequestBuilder {
    client()
        .post(format!("{}/messages", mock.base_url()))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
}

fn chat(text: &str) -> Value {
    json!({"model": "gpt-test", "messages": [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": text}]})
}

fn msg(text: &str) -> Value {
    json!({"model": "claude-test", "max_tokens": 100, "messages": [
        {"role": "user", "content": text}]})
}

fn streaming(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

/// One parsed SSE event: the `event:` name (if any) and the `data:` payload.
#[derive(Debug)]
struct Sse {
    event: Option<String>,
    data: String,
}

impl Sse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

fn parse_sse(text: &str) -> Vec<Sse> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut sse = Sse {
                event: None,
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    sse.event = Some(name.to_owned());
                } else if let Some(data) = line.strip_prefix("data: ") {
                    sse.data.push_str(data);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            sse
        })
        .collect()
}

/// Reads a streamed body until it ends or fails: (text received, whether it failed).
async fn read_until_error(mut resp: Response) -> (String, bool) {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) => return (String::from_utf8(buf).unwrap(), false),
            Err(_) => return (String::from_utf8(buf).unwrap(), true),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mock_openai_non_stream() {
    let mock = MockUpstream::start().await;
    let resp = openai(&mock, OPENAI_KEY, &chat("hello there world"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-mock"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-test");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "echo: hello there world");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
               "prompt_tokens_details": {"cached_tokens": 2}})
    );

    // Content as an array of parts: the text parts are joined.
    let parts = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "one "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
        {"type": "text", "text": "two"}]}]});
    let body: Value = openai(&mock, OPENAI_KEY, &parts)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "echo: one two");
}

#[tokio::test]
async fn mock_openai_stream_without_usage() {
    let mock = MockUpstream::start().await;
    let resp = openai(
        &mock,
        OPENAI_KEY,
        &streaming(chat("alpha beta gamma delta")),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = parse_sse(&resp.text().await.unwrap());
    assert!(events.iter().all(|e| e.event.is_none()));
    let (done, chunks) = events.split_last().unwrap();
    assert_eq!(done.data, "[DONE]");
    let chunks: Vec<Value> = chunks.iter().map(Sse::json).collect();

    // role chunk, 3 content chunks, finish chunk; no usage anywhere.
    assert_eq!(chunks.len(), 5, "{chunks:#?}");
    let id = &chunks[0]["id"];
    assert!(id.as_str().unwrap().starts_with("chatcmpl-mock"));
    for c in &chunks {
        assert_eq!(&c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-test");
        assert!(c.get("usage").is_none(), "usage without include_usage: {c}");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: alpha beta gamma delta");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
}

#[tokio::test]
async fn mock_openai_stream_with_usage() {
    let mock = MockUpstream::start().await;
    let mut body = streaming(chat("hi"));
    body["stream_options"] = json!({"include_usage": true});
    let text = openai(&mock, OPENAI_KEY, &body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = parse_sse(&text);
    let (done, chunks) = events.split_last().unwrap();
    assert_eq!(done.data, "[DONE]");
    let chunks: Vec<Value> = chunks.iter().map(Sse::json).collect();
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["total_tokens"], 17);
    assert_eq!(
        usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"],
        2
    );
    for c in rest {
        assert_eq!(c["usage"], Value::Null);
        assert!(
            c.get("usage").is_some(),
            "usage must be an explicit null: {c}"
        );
    }
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn mock_openai_tools() {
    let mock = MockUpstream::start().await;
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "other"}}]);
    let mut body = chat("weather?");
    body["tools"] = tools.clone();

    // Non-streaming: one call of the first tool.
    let resp: Value = openai(&mock, OPENAI_KEY, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let choice = &resp["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_mock1");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);

    // Streaming: fragments concatenate to the arguments.
    let text = openai(&mock, OPENAI_KEY, &streaming(body.clone()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(Sse::json).collect();
    let fragments: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(fragments.len(), 3);
    assert_eq!(fragments[0]["id"], "call_mock1");
    assert_eq!(fragments[0]["function"]["name"], "get_weather");
    assert_eq!(fragments[0]["function"]["arguments"], "");
    assert!(fragments.iter().all(|f| f["index"] == 0));
    let args: String = fragments
        .iter()
        .map(|f| f["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(args, r#"{"city":"Paris"}"#);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // tool_choice "none": plain echo.
    let mut none = body.clone();
    none["tool_choice"] = json!("none");
    let resp: Value = openai(&mock, OPENAI_KEY, &none)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["choices"][0]["message"]["content"], "echo: weather?");

    // A trailing tool message: the model reports what the tool said.
    let mut follow_up = body;
    let messages = follow_up["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    messages.push(json!({"role": "tool", "tool_call_id": "call_mock1", "content": "18C"}));
    let resp: Value = openai(&mock, OPENAI_KEY, &follow_up)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["choices"][0]["finish_reason"], "stop");
    assert_eq!(resp["choices"][0]["message"]["content"], "tool said: 18C");
}

// ---------------------------------------------------------------------------------------------
// Anthropic
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mock_anthropic_non_stream() {
    let mock = MockUpstream::start().await;
    let body = json!({"model": "claude-test", "max_tokens": 100, "messages": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]}]});
    let resp = anthropic(&mock, ANTHROPIC_KEY, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("msg_mock"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-test");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "echo: second"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 10, "output_tokens": 5,
               "cache_creation_input_tokens": 1, "cache_read_input_tokens": 2})
    );
}

#[tokio::test]
async fn mock_anthropic_stream() {
    let mock = MockUpstream::start().await;
    let resp = anthropic(&mock, ANTHROPIC_KEY, &streaming(msg("one two three")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = parse_sse(&resp.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = events.iter().map(Sse::json).collect();
    for (e, d) in events.iter().zip(&data) {
        assert_eq!(d["type"], e.event.as_deref().unwrap());
    }
    let start = &data[0]["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_mock"));
    assert_eq!(start["model"], "claude-test");
    assert_eq!(start["content"], json!([]));
    assert_eq!(
        start["usage"],
        json!({"input_tokens": 10, "cache_creation_input_tokens": 1,
               "cache_read_input_tokens": 2, "output_tokens": 1})
    );
    let text: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, "echo: one two three");
    assert_eq!(data[7]["delta"]["stop_reason"], "end_turn");
    assert_eq!(data[7]["usage"]["output_tokens"], 5);
}

#[tokio::test]
async fn mock_anthropic_tools() {
    let mock = MockUpstream::start().await;
    let mut body = msg("weather?");
    body["tools"] = json!([
        {"name": "get_weather", "input_schema": {"type": "object"}},
        {"name": "other", "input_schema": {"type": "object"}}]);

    let resp: Value = anthropic(&mock, ANTHROPIC_KEY, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["stop_reason"], "tool_use");
    assert_eq!(
        resp["content"],
        json!([{"type": "text", "text": "Let me check."},
               {"type": "tool_use", "id": "toolu_mock1", "name": "get_weather",
                "input": {"city": "Paris"}}])
    );

    // Streaming: text block 0, tool_use block 1 with input_json_delta fragments.
    let text = anthropic(&mock, ANTHROPIC_KEY, &streaming(body.clone()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data: Vec<Value> = parse_sse(&text).iter().map(Sse::json).collect();
    let tool_start = data
        .iter()
        .find(|d| d["type"] == "content_block_start" && d["index"] == 1)
        .unwrap();
    assert_eq!(
        tool_start["content_block"],
        json!({"type": "tool_use", "id": "toolu_mock1", "name": "get_weather", "input": {}})
    );
    let preamble: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta" && d["index"] == 0)
        .map(|d| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(preamble, "Let me check.");
    let json_pieces: Vec<&str> = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta" && d["index"] == 1)
        .map(|d| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert_eq!(json_pieces[0], "");
    let input: Value = serde_json::from_str(&json_pieces.concat()).unwrap();
    assert_eq!(input, json!({"city": "Paris"}));
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(data.last().unwrap()["type"], "message_stop");

    // tool_choice none: plain echo.
    let mut none = body.clone();
    none["tool_choice"] = json!({"type": "none"});
    let resp: Value = anthropic(&mock, ANTHROPIC_KEY, &none)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["content"][0]["text"], "echo: weather?");

    // A tool_result in the last user turn.
    let mut follow_up = body;
    let messages = follow_up["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": resp["content"]}));
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_mock1",
         "content": [{"type": "text", "text": "18C"}]}]}));
    let resp: Value = anthropic(&mock, ANTHROPIC_KEY, &follow_up)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["stop_reason"], "end_turn");
    assert_eq!(resp["content"][0]["text"], "tool said: 18C");
}

// ---------------------------------------------------------------------------------------------
// Auth, other routes, recording
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mock_auth_rejection() {
    let mock = MockUpstream::start().await;
    let resp = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                         "param": null, "code": "invalid_api_key"}})
    );

    // x-api-key without anthropic-version.
    let resp = client()
        .post(format!("{}/messages", mock.base_url()))
        .header("x-api-key", ANTHROPIC_KEY)
        .json(&msg("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["error"]["message"], "invalid x-api-key");

    // A Bearer token is not enough for /v1/messages.
    let resp = client()
        .post(format!("{}/messages", mock.base_url()))
        .bearer_auth(ANTHROPIC_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&msg("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn mock_embeddings_models_and_404() {
    let mock = MockUpstream::start().await;
    let c = client();
    let resp: Value = c
        .post(format!("{}/embeddings", mock.base_url()))
        .bearer_auth(OPENAI_KEY)
        .json(&json!({"model": "emb", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["object"], "list");
    assert_eq!(resp["model"], "emb");
    assert_eq!(resp["data"].as_array().unwrap().len(), 2);
    assert_eq!(resp["data"][1]["index"], 1);
    assert_eq!(resp["data"][0]["embedding"], json!([0.1, 0.2, 0.3]));
    assert_eq!(resp["usage"]["total_tokens"], 3);

    let resp: Value = c
        .post(format!("{}/embeddings", mock.base_url()))
        .bearer_auth(OPENAI_KEY)
        .json(&json!({"model": "emb", "input": "single"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["data"].as_array().unwrap().len(), 1);

    let resp: Value = c
        .get(format!("{}/models", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["object"], "list");
    assert_eq!(resp["data"][0]["id"], "mock-model");

    for req in [
        c.get(format!("{}/nope", mock.base_url())),
        c.get(format!("{}/chat/completions", mock.base_url())),
        c.post(format!("http://{}/other", mock.addr)),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unknown_url");
    }
}

#[tokio::test]
async fn mock_records_requests() {
    let mock = MockUpstream::start().await;
    openai(&mock, OPENAI_KEY, &chat("one"))
        .header("x-custom", "yes")
        .send()
        .await
        .unwrap();
    client()
        .post(format!("{}/messages?beta=true", mock.base_url()))
        .header("x-api-key", ANTHROPIC_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "a,b")
        .json(&msg("two"))
        .send()
        .await
        .unwrap();
    client()
        .post(format!("{}/messages", mock.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();

    let log = mock.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, "/v1/chat/completions");
    assert_eq!(log[0].headers["authorization"], "Bearer sk-test-123");
    assert_eq!(log[0].headers["x-custom"], "yes");
    assert_eq!(log[0].body, chat("one"));
    assert_eq!(log[1].path, "/v1/messages?beta=true");
    assert_eq!(log[1].headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(log[1].headers["anthropic-beta"], "a,b");
    assert_eq!(log[1].body["messages"][0]["content"], "two");
    assert_eq!(log[2].body, Value::Null);

    mock.clear();
    assert!(mock.requests().is_empty());
    mock.set_recording(false);
    openai(&mock, OPENAI_KEY, &chat("unrecorded"))
        .send()
        .await
        .unwrap();
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn mock_spawn_on_thread_and_drop() {
    let addr = spawn_on_thread(1);
    let resp: Value = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(OPENAI_KEY)
        .json(&chat("threaded"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["choices"][0]["message"]["content"], "echo: threaded");

    // A dropped mock stops listening.
    let mock = MockUpstream::start().await;
    let url = format!("{}/models", mock.base_url());
    client().get(&url).send().await.unwrap();
    drop(mock);
    let deadline = Instant::now() + Duration::from_secs(5);
    while client().get(&url).send().await.is_ok() {
        assert!(Instant::now() < deadline, "mock still answering after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mock_fault_rate_limits() {
    let mock = MockUpstream::start().await;

    // Via the credential.
    let resp = openai(&mock, "fault-429", &chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    let resp = anthropic(&mock, "fault-429", &msg("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // Via the marker.
    let resp = openai(&mock, OPENAI_KEY, &chat("x [[fault:429-noretry]] y"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_none());

    let resp = openai(&mock, OPENAI_KEY, &chat("[[fault:429-reset]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "0");
    assert_eq!(resp.headers()["x-ratelimit-reset-requests"], "6m0s");

    let resp = anthropic(&mock, ANTHROPIC_KEY, &msg("[[fault:429-reset]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()["anthropic-ratelimit-requests-remaining"],
        "0"
    );
    let reset = resp.headers()["anthropic-ratelimit-requests-reset"]
        .to_str()
        .unwrap()
        .to_owned();
    let now = SystemTime::now();
    let candidates = [85, 90, 95].map(|s| rfc3339(now + Duration::from_secs(s)));
    assert!(
        candidates[0] <= reset && reset <= candidates[2],
        "{reset} not ~90s after {}",
        rfc3339(now)
    );
}

#[test]
fn mock_rfc3339_format() {
    let t = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    assert_eq!(rfc3339(t(0)), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(t(951_782_400)), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(t(1_735_689_599)), "2024-12-31T23:59:59Z");
    assert_eq!(rfc3339(t(1_767_225_600 + 3_723)), "2026-01-01T01:02:03Z");
}

#[tokio::test]
async fn mock_fault_quota_and_overload() {
    let mock = MockUpstream::start().await;

    let resp = openai(&mock, "fault-quota", &chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exceeded your current quota"));

    let resp = anthropic(&mock, "fault-quota", &msg("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("credit balance is too low"));

    let resp = anthropic(&mock, ANTHROPIC_KEY, &msg("[[fault:529]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 529);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");

    let resp = openai(&mock, OPENAI_KEY, &chat("[[fault:529]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("engine is currently overloaded"));

    // A selection of plain error statuses and their types.
    for (spec, status, openai_code, anthropic_type) in [
        ("401", 401, "invalid_api_key", "authentication_error"),
        ("403", 403, "permission_denied", "permission_error"),
        ("404", 404, "model_not_found", "not_found_error"),
        (
            "400",
            400,
            "context_length_exceeded",
            "invalid_request_error",
        ),
        ("500", 500, "", "api_error"),
    ] {
        let key = format!("fault-{spec}");
        let resp = openai(&mock, &key, &chat("hi")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "openai {spec}");
        let body: Value = resp.json().await.unwrap();
        if !openai_code.is_empty() {
            assert_eq!(body["error"]["code"], openai_code, "openai {spec}");
        }
        let resp = anthropic(&mock, &key, &msg("hi")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "anthropic {spec}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], anthropic_type, "anthropic {spec}");
    }
}

#[tokio::test]
async fn mock_fault_break_stream() {
    let mock = MockUpstream::start().await;

    let resp = openai(
        &mock,
        OPENAI_KEY,
        &streaming(chat("a b c [[fault:break-stream]]")),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let (text, failed) = read_until_error(resp).await;
    assert!(failed, "the body must end in an error");
    let events = parse_sse(&text);
    assert_eq!(events.len(), 2, "{text}");
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("finish_reason\":\"stop"));

    let resp = anthropic(&mock, "fault-break-stream", &streaming(msg("a b c")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (text, failed) = read_until_error(resp).await;
    assert!(failed, "the body must end in an error");
    let names: Vec<String> = parse_sse(&text)
        .into_iter()
        .map(|e| e.event.unwrap())
        .collect();
    assert_eq!(names, ["message_start", "ping"]);

    // Non-streaming request: truncated JSON, then the cut.
    let resp = openai(&mock, "fault-break-stream", &chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (text, failed) = read_until_error(resp).await;
    assert!(failed);
    assert!(text.starts_with("{\"") && serde_json::from_str::<Value>(&text).is_err());
}

#[tokio::test]
async fn mock_fault_stream_error() {
    let mock = MockUpstream::start().await;

    let text = openai(&mock, "fault-stream-error", &streaming(chat("hi")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = parse_sse(&text);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].json()["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        events[1].json(),
        json!({"error": {"message": "overloaded", "type": "server_error", "code": null}})
    );

    let text = anthropic(
        &mock,
        ANTHROPIC_KEY,
        &streaming(msg("[[fault:stream-error]]")),
    )
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let events = parse_sse(&text);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event.as_deref(), Some("message_start"));
    assert_eq!(events[1].event.as_deref(), Some("error"));
    assert_eq!(events[1].json()["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn mock_fault_transport_and_garbage() {
    let mock = MockUpstream::start().await;

    // reset: no HTTP response at all.
    let err = openai(&mock, "fault-reset", &chat("hi"))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    let err = anthropic(&mock, ANTHROPIC_KEY, &msg("[[fault:reset]]"))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "{err:?}");
    // The mock keeps serving other connections.
    let resp = openai(&mock, OPENAI_KEY, &chat("still alive"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // timeout: nothing arrives within the client's timeout.
    let started = Instant::now();
    let err = openai(&mock, "fault-timeout", &chat("hi"))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // slow:<ms> then the normal answer.
    let started = Instant::now();
    let resp: Value = anthropic(&mock, ANTHROPIC_KEY, &msg("[[fault:slow:200]] hi"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(resp["content"][0]["text"], "echo: [[fault:slow:200]] hi");

    // html-502 and bad-json.
    let resp = openai(&mock, "fault-html-502", &chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(resp.text().await.unwrap().contains("<html>"));

    let resp = anthropic(&mock, "fault-bad-json", &msg("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), "this is not json");

    // Unknown specs are rejected loudly rather than ignored.
    let resp = openai(&mock, OPENAI_KEY, &chat("[[fault:bogus]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("bogus"));
}

#[tokio::test]
async fn mock_fault_reset_sends_no_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mock = MockUpstream::start().await;
    let body = chat("hi").to_string();
    let mut tcp = tokio::net::TcpStream::connect(mock.addr).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer fault-reset\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        mock.addr,
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    // EOF (Ok) or a reset (Err) are both fine; any byte of a response is not.
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut received))
        .await
        .expect("connection not closed");
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
}
