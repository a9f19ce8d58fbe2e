//! The inference path end to end: a real relay in front of the mock
//! upstream, on SQLite and on the real PostgreSQL.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

fn chat(content: &str) -> Value {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": content}]})
}

fn message(content: &str) -> Value {
    json!({"model": "claude-test", "max_tokens": 50, "messages": [{"role": "user", "content": content}]})
}

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        ct.as_deref(),
        Some("application/json"),
        "error bodies are JSON"
    );
    (status, r.json().await.unwrap())
}

/// SSE `data:` payloads of a whole response body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn access_checks_follow_the_seed_in_both_protocols() {
    let s = Stack::start(Db::Sqlite).await;
    // 401: missing, malformed, unknown.
    let (st, body) = error_of(s.post("/v1/chat/completions", None, chat("hi")).await).await;
    assert_eq!(st, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer <relay-key>"),
        "{body}"
    );
    let (st, body) = error_of(
        s.post("/v1/chat/completions", Some("key_123"), chat("hi"))
            .await,
    )
    .await;
    assert_eq!(st, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not its id or prefix"),
        "{body}"
    );
    let mut forged = s.key.clone();
    forged.replace_range(5..6, if &forged[5..6] == "a" { "b" } else { "a" });
    assert_eq!(
        s.post("/v1/chat/completions", Some(&forged), chat("hi"))
            .await
            .status(),
        401,
        "checksum"
    );
    // A well-formed key that was never minted (from another database).
    let other = TempConfig::new(&[]);
    let (_, foreign) = mint_key(&other.data_dir(), &Db::Sqlite, "default");
    let (st, body) = error_of(
        s.post("/v1/chat/completions", Some(&foreign), chat("hi"))
            .await,
    )
    .await;
    assert_eq!(st, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown relay key"),
        "{body}"
    );

    // 403: the policy does not grant the model (an alias is checked as its model).
    let (_, gpt_only) = s.mint("gpt-only").await;
    let (st, body) = error_of(s.post("/v1/messages", Some(&gpt_only), message("hi")).await).await;
    assert_eq!(st, 403);
    assert_eq!(
        body["type"], "error",
        "Anthropic shape on /v1/messages: {body}"
    );
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not granted by policy `gpt-only`"),
        "{body}"
    );
    let ok = s
        .post(
            "/v1/chat/completions",
            Some(&gpt_only),
            json!({"model":"gpt-latest","messages":[{"role":"user","content":"x"}]}),
        )
        .await;
    assert_eq!(ok.status(), 200);

    // 404: unknown model vs no enabled binding, told apart.
    let (st, body) = error_of(
        s.post(
            "/v1/chat/completions",
            Some(&s.key),
            json!({"model":"nope","messages":[]}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
    let (st, body) = error_of(
        s.post(
            "/v1/chat/completions",
            Some(&s.key),
            json!({"model":"unbound","messages":[]}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has no enabled binding"),
        "{body}"
    );

    // Garbage bodies: 400 in the caller's protocol, after authentication.
    let r = s
        .relay
        .http
        .post(s.relay.data("/v1/messages"))
        .header("x-api-key", &s.key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (st, body) = error_of(r).await;
    assert_eq!(st, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );
    let (st, _) = error_of(
        s.post(
            "/v1/chat/completions",
            Some(&s.key),
            json!({"messages": []}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 400, "missing model");
    let (st, _) = error_of(
        s.post("/v1/chat/completions", Some(&s.key), json!([1, 2]))
            .await,
    )
    .await;
    assert_eq!(st, 400, "not an object");
    let r = s
        .relay
        .http
        .post(s.relay.data("/v1/chat/completions"))
        .bearer_auth(&s.key)
        .body(r#"{"model":"gpt-test","stream":false,"messages":[],"stream":true}"#)
        .send()
        .await
        .unwrap();
    let (st, body) = error_of(r).await;
    assert_eq!(st, 400, "duplicate field");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate top-level field `stream`"),
        "{body}"
    );

    // Oversized bodies: 413 in the caller's protocol, whether the length
    // is declared up front or only found while reading a chunked body.
    // A declared length is refused before any of the body is read.
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: relay\r\nx-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        s.key,
        (32u64 << 20) + 1
    );
    let mut tcp = tokio::net::TcpStream::connect(s.relay.data_url.trim_start_matches("http://"))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, head.as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut answer)
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""type":"request_too_large""#), "{answer}");
    let big = vec![b' '; (32 << 20) + 1];
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let r = s
        .relay
        .http
        .post(s.relay.data("/v1/chat/completions"))
        .bearer_auth(&s.key)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    let (st, body) = error_of(r).await;
    assert_eq!(st, 413);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than relay accepts (32 MiB)"),
        "{body}"
    );
    assert!(
        s.mock.requests().iter().all(|r| r.body["model"] != "nope"),
        "refused calls never reach upstream"
    );
}

#[tokio::test]
async fn models_lists_exactly_what_the_key_can_reach() {
    let s = Stack::start(Db::Sqlite).await;
    let ids = |v: Value| -> Vec<String> {
        let mut ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let all: Value = s
        .relay
        .http
        .get(s.relay.data("/v1/models"))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["object"], "list");
    assert_eq!(
        ids(all),
        ["claude-test", "embed-test", "gpt-test"],
        "unbound is not routable"
    );
    let (_, gpt_only) = s.mint("gpt-only").await;
    let some: Value = s
        .relay
        .http
        .get(s.relay.data("/v1/models"))
        .bearer_auth(&gpt_only)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(some), ["gpt-test"]);
    let r = s
        .relay
        .http
        .get(s.relay.data("/anthropic/v1/models"))
        .header("x-api-key", &s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.relay
            .http
            .get(s.relay.data("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn openai_calls_reach_the_upstream_with_its_key_and_name() {
    let s = Stack::start(Db::Sqlite).await;
    let mut body = chat("hello");
    body["x_vendor_field"] = json!({"kept": [1, 2.5, "three"]});
    let r = s.post("/v1/chat/completions", Some(&s.key), body).await;
    assert_eq!(r.status(), 200);
    assert!(r
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("req_"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello");

    let req = s.mock.requests().pop().unwrap();
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(
        req.body["model"], "gpt-upstream-v1",
        "the binding's upstream name"
    );
    assert_eq!(
        req.body["x_vendor_field"],
        json!({"kept": [1, 2.5, "three"]}),
        "unknown fields pass through"
    );
    assert_eq!(req.headers["authorization"], "Bearer sk-upstream-openai");
    let all_headers = format!("{:?}", req.headers);
    assert!(
        !all_headers.contains(&s.key),
        "the relay key never reaches the upstream"
    );

    // The provider-prefixed path works the same.
    let r = s
        .post("/openai/v1/chat/completions", Some(&s.key), chat("again"))
        .await;
    assert_eq!(r.status(), 200);

    // Embeddings.
    let r = s
        .post(
            "/v1/embeddings",
            Some(&s.key),
            json!({"model":"embed-test","input":["a","b"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        s.mock.requests().pop().unwrap().body["model"],
        "embed-upstream-v1"
    );
}

#[tokio::test]
async fn anthropic_calls_use_x_api_key_both_ways() {
    let s = Stack::start(Db::Sqlite).await;
    let r = s
        .relay
        .http
        .post(s.relay.data("/anthropic/v1/messages?beta=true"))
        .header("x-api-key", &s.key)
        .header("anthropic-beta", "tools-2024-04-04")
        .json(&message("hi there"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "echo: hi there");
    let req = s.mock.requests().pop().unwrap();
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.body["model"], "claude-upstream-v1");
    assert_eq!(req.headers["x-api-key"], "sk-upstream-anthropic");
    assert_eq!(req.headers["anthropic-version"], "2023-06-01");
    assert_eq!(req.headers["anthropic-beta"], "tools-2024-04-04");
    assert!(req.headers.get("authorization").is_none());

    // Bearer works on /v1/messages too (auth-token mode).
    let r = s
        .post("/v1/messages", Some(&s.key), message("bearer"))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn streams_are_relayed_with_usage_only_when_asked() {
    let s = Stack::start(Db::Sqlite).await;
    let mut body = chat("one two three");
    body["stream"] = json!(true);
    let r = s
        .post("/v1/chat/completions", Some(&s.key), body.clone())
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(
        data.iter().all(|d| !d.contains("\"usage\":{")),
        "no usage chunk unless asked: {text}"
    );
    let content: String = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(content, "echo: one two three");
    // Upstream was asked for usage anyway (relay records it).
    assert_eq!(
        s.mock.requests().pop().unwrap().body["stream_options"],
        json!({"include_usage": true})
    );

    body["stream_options"] = json!({"include_usage": true});
    let text = s
        .post("/v1/chat/completions", Some(&s.key), body)
        .await
        .text()
        .await
        .unwrap();
    let data = sse_data(&text);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 12, "{text}");
    assert_eq!(usage["choices"], json!([]));

    let mut m = message("stream me");
    m["stream"] = json!(true);
    let text = s
        .post("/v1/messages", Some(&s.key), m)
        .await
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    assert_eq!(events.first().unwrap(), "message_start");
    assert_eq!(events.last().unwrap(), "message_stop");
    assert!(events.contains(&"ping".to_string()));
}

#[tokio::test]
async fn broken_streams_end_with_an_error_event_not_a_clean_finish() {
    let s = Stack::start(Db::Sqlite).await;
    let mut body = chat("[[fault:break-stream]] hi");
    body["stream"] = json!(true);
    let r = s.post("/v1/chat/completions", Some(&s.key), body).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let data = sse_data(&text);
    assert!(!data.contains(&"[DONE]".to_string()), "{text}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream stream"),
        "{text}"
    );

    let mut m = message("[[fault:break-stream]] hi");
    m["stream"] = json!(true);
    let text = s
        .post("/v1/messages", Some(&s.key), m)
        .await
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    assert_eq!(events.last().unwrap(), "error", "{text}");
    assert!(!events.contains(&"message_stop".to_string()));

    // An in-band upstream error is passed on as is, and ends the stream.
    let mut m = message("[[fault:stream-error]] hi");
    m["stream"] = json!(true);
    let text = s
        .post("/v1/messages", Some(&s.key), m)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("overloaded_error"), "{text}");
    assert_eq!(sse_events(&text).last().unwrap(), "error");
}

#[tokio::test]
async fn upstream_errors_come_back_in_the_callers_protocol() {
    let s = Stack::start(Db::Sqlite).await;
    // The request's own fault: passed through untouched, no breaker tripped.
    let (st, body) = error_of(
        s.post("/v1/chat/completions", Some(&s.key), chat("[[fault:400]]"))
            .await,
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(
        body["error"]["code"], "context_length_exceeded",
        "passed through: {body}"
    );
    // An unhealthy upstream's error is passed on in the caller's shape.
    let (st, body) = error_of(
        s.post("/v1/messages", Some(&s.key), message("[[fault:html-502]]"))
            .await,
    )
    .await;
    assert_eq!(st, 502, "non-JSON upstream errors are wrapped");
    assert_eq!(body["type"], "error");
    // A 2xx that is not JSON is a protocol error.
    let (st, body) = error_of(
        s.post(
            "/v1/chat/completions",
            Some(&s.key),
            chat("[[fault:bad-json]]"),
        )
        .await,
    )
    .await;
    assert_eq!(st, 502);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("adapter"),
        "{body}"
    );

    // Key faults are relay's problem: with no other key left, the caller
    // gets the seed's 503, with the upstream's retry hint.
    let r = s
        .post("/v1/messages", Some(&s.key), message("[[fault:429]]"))
        .await;
    let wait = r.headers()["retry-after"].to_str().unwrap().to_string();
    assert!(
        wait == "7" || wait == "8",
        "the 7 s hint (plus jitter): {wait}"
    );
    let (st, body) = error_of(r).await;
    assert_eq!(st, 503);
    assert_eq!(
        body["error"]["type"], "overloaded_error",
        "Anthropic shape: {body}"
    );
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("no healthy keys in pool") && msg.contains("anthropic/primary (rate_limit)"),
        "{msg}"
    );
    // The upstream refusing relay's credential is not the caller's 401.
    let (st, body) = error_of(
        s.post("/v1/chat/completions", Some(&s.key), chat("[[fault:401]]"))
            .await,
    )
    .await;
    assert_eq!(st, 503);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openai/primary (auth)"),
        "{body}"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_and_a_missing_env_key_a_503() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = TempConfig::new(&[("all.yaml", &mock_config(&format!("http://{dead}/v1")))]);
    let (_, key) = mint_key(&cfg.data_dir(), &Db::Sqlite, "default");
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_TEST_OPENAI_KEY", "sk-x")
        .start();
    let r = relay
        .http
        .post(relay.data("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat("x"))
        .send()
        .await
        .unwrap();
    let (st, body) = error_of(r).await;
    assert_eq!(st, 502);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream host `openai` is unreachable"),
        "{body}"
    );
    // RELAY_TEST_ANTHROPIC_KEY is unset: the seed's 503, naming the variable.
    let r = relay
        .http
        .post(relay.data("/v1/messages"))
        .header("x-api-key", &key)
        .json(&message("x"))
        .send()
        .await
        .unwrap();
    let (st, body) = error_of(r).await;
    assert_eq!(st, 503);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("no healthy keys in pool") && msg.contains("RELAY_TEST_ANTHROPIC_KEY"),
        "{msg}"
    );
}

async fn usage_is_recorded_with_tokens_and_cost(db: Db) {
    let s = Stack::start(db).await;
    assert_eq!(
        s.post("/v1/chat/completions", Some(&s.key), chat("a"))
            .await
            .status(),
        200
    );
    let mut m = message("b");
    m["stream"] = json!(true);
    let _ = s
        .post("/v1/messages", Some(&s.key), m)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        s.post("/v1/chat/completions", Some(&s.key), chat("[[fault:500]]"))
            .await
            .status(),
        500
    );

    let v = usage_for(&s.relay, &s.key_id, 3).await;
    let recs = v["records"].as_array().unwrap();
    let openai = recs
        .iter()
        .find(|r| r["model"] == "gpt-test" && r["status"] == 200)
        .unwrap();
    // Mock: prompt 12 (2 cached), completion 5; price 1.0/2.0/0.5 per Mtok.
    assert_eq!(openai["input_tokens"], 10);
    assert_eq!(openai["cache_read_tokens"], 2);
    assert_eq!(openai["output_tokens"], 5);
    assert_eq!(openai["binding"], "gpt-test-openai");
    assert_eq!(openai["host"], "openai");
    assert_eq!(openai["streamed"], false);
    let cost = openai["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (10.0 * 1.0 + 5.0 * 2.0 + 2.0 * 0.5) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    let anth = recs.iter().find(|r| r["model"] == "claude-test").unwrap();
    assert_eq!(anth["streamed"], true);
    assert_eq!(anth["status"], 200);
    assert_eq!(
        (
            anth["input_tokens"].as_i64(),
            anth["output_tokens"].as_i64()
        ),
        (Some(10), Some(5))
    );
    assert_eq!(
        (
            anth["cache_read_tokens"].as_i64(),
            anth["cache_write_tokens"].as_i64()
        ),
        (Some(2), Some(1))
    );
    assert!(recs.iter().any(|r| r["status"] == 500));
    assert_eq!(v["totals"]["requests"], 3);
    assert_eq!(v["totals"]["output_tokens"], 10);

    // Queries filter by model and time.
    let only = s
        .relay
        .admin_get(&format!("/api/usage?key_id={}&model=claude-test", s.key_id))
        .await;
    assert_eq!(only["totals"]["requests"], 1);
    // Within the accepted window (up to a day ahead) but after every record.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 3_600_000;
    let future = s.relay.admin_get(&format!("/api/usage?from={soon}")).await;
    assert_eq!(future["totals"]["requests"], 0);
}

#[tokio::test]
async fn usage_is_recorded_on_sqlite() {
    usage_is_recorded_with_tokens_and_cost(Db::Sqlite).await;
}

#[tokio::test]
async fn usage_is_recorded_on_postgres() {
    usage_is_recorded_with_tokens_and_cost(Db::Postgres(PgDatabase::create())).await;
}

#[tokio::test]
async fn no_usage_is_lost_on_graceful_shutdown() {
    let s = Stack::start(Db::Sqlite).await;
    for i in 0..20 {
        assert_eq!(
            s.post("/v1/chat/completions", Some(&s.key), chat(&format!("n{i}")))
                .await
                .status(),
            200
        );
    }
    let Stack {
        relay,
        cfg,
        key_id,
        mock,
        ..
    } = s;
    assert!(relay.stop().success());
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_TEST_OPENAI_KEY", "x")
        .env("RELAY_TEST_ANTHROPIC_KEY", "x")
        .start();
    let v = relay
        .admin_get(&format!("/api/usage?key_id={key_id}"))
        .await;
    assert_eq!(v["totals"]["requests"], 20, "{v}");
    drop(mock);
}

async fn key_lifecycle(db: Db) {
    let s = Stack::start(db).await;
    let ok = || async {
        s.post("/v1/chat/completions", Some(&s.key), chat("x"))
            .await
            .status()
            .as_u16()
    };
    assert_eq!(ok().await, 200);
    // Disabled through the CLI (another process): refused within a second.
    let out = keys_cmd(&s.cfg.data_dir(), &s.db, &["disable", &s.key_id]);
    assert!(out.status.success(), "{out:?}");
    let t = Instant::now();
    while ok().await != 401 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "disabled key still accepted after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_, body) = error_of(
        s.post("/v1/chat/completions", Some(&s.key), chat("x"))
            .await,
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{body}"
    );
    // Enabled again through the admin API (takes effect at once).
    let r = s
        .relay
        .admin_post(&format!("/api/keys/{}/enable", s.key_id))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(ok().await, 200);
    // Listing never shows plaintext or hashes; last use is recorded.
    let list = keys_cmd(&s.cfg.data_dir(), &s.db, &["list", "--json"]);
    let text = String::from_utf8(list.stdout).unwrap();
    assert!(!text.contains(&s.key) && !text.contains("hash"), "{text}");
    assert!(text.contains(&s.key[..12]), "the display prefix is listed");
    // Deleted: unknown from then on.
    let r = s
        .relay
        .admin_delete(&format!("/api/keys/{}", s.key_id))
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(ok().await, 401);
    let r = s
        .relay
        .admin_delete(&format!("/api/keys/{}", s.key_id))
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn key_lifecycle_on_sqlite() {
    key_lifecycle(Db::Sqlite).await;
}

#[tokio::test]
async fn key_lifecycle_on_postgres() {
    key_lifecycle(Db::Postgres(PgDatabase::create())).await;
}

#[tokio::test]
async fn admin_api_mints_keys_once_and_validates_input() {
    let s = Stack::start(Db::Sqlite).await;
    let post = |body: Value| {
        s.relay
            .http
            .post(s.relay.control("/api/keys"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let r = post(json!({"policy": "gpt-only", "name": "ci", "expires_in": "1h"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let key = v["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("rk_") && v["prefix"] == key[..12]);
    assert!(v["expires_at"].as_i64().unwrap() > v["created_at"].as_i64().unwrap());
    assert_eq!(
        s.post("/v1/chat/completions", Some(&key), chat("x"))
            .await
            .status(),
        200,
        "usable at once"
    );
    let list: Value = s.relay.admin_get("/api/keys").await;
    assert!(
        !list.to_string().contains(&key),
        "plaintext is returned once only"
    );
    let r = post(json!({"policy": "nope"})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("defined: default, gpt-only"));
    assert_eq!(post(json!({"name": "x"})).await.unwrap().status(), 400);
    assert_eq!(
        post(json!({"policy": "default", "expires_in": "soon"}))
            .await
            .unwrap()
            .status(),
        400
    );
    let r = s
        .relay
        .http
        .post(s.relay.control("/api/keys"))
        .json(&json!({"policy":"default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s.relay.admin_post("/api/keys/key_nope/disable").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn expired_keys_are_refused() {
    let s = Stack::start(Db::Sqlite).await;
    let out = keys_cmd(
        &s.cfg.data_dir(),
        &s.db,
        &[
            "create",
            "--policy",
            "default",
            "--expires",
            "1s",
            "--config-dir",
            "/nonexistent",
        ],
    );
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let t = Instant::now();
    while s
        .post("/v1/chat/completions", Some(&key), chat("x"))
        .await
        .status()
        != 200
    {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "new key not picked up"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, body) = error_of(s.post("/v1/chat/completions", Some(&key), chat("x")).await).await;
    assert_eq!(st, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn a_key_disabled_on_one_replica_is_refused_by_another_within_a_second() {
    let db = Db::Postgres(PgDatabase::create());
    let a = Stack::start(db).await;
    let url = a.db.url().unwrap();
    let b = RelayBuilder::new(&a.cfg.dir(), &a.cfg.root.path().join("data-b"))
        .env("RELAY_DATABASE_URL", &url)
        .env("RELAY_TEST_OPENAI_KEY", "sk-upstream-openai")
        .start();
    let call_b = || async {
        b.http
            .post(b.data("/v1/chat/completions"))
            .bearer_auth(&a.key)
            .json(&chat("x"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(call_b().await, 200);
    let r = a
        .relay
        .admin_post(&format!("/api/keys/{}/disable", a.key_id))
        .await;
    assert_eq!(r.status(), 200);
    let t = Instant::now();
    while call_b().await != 401 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "replica B still accepts the disabled key"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn healthz_names_a_failing_database() {
    let pg = PgDatabase::create();
    let s = Stack::start(Db::Postgres(pg)).await;
    let ok: Value = reqwest::get(s.relay.data("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["database"]["backend"], "postgres");
    assert_eq!(ok["database"]["status"], "ok");
    // Pull the database out from under it.
    let Db::Postgres(pg) = &s.db else {
        unreachable!()
    };
    psql(
        &postgres_admin_url(),
        &format!(
            "DROP DATABASE {} WITH (FORCE)",
            pg.url.rsplit('/').next().unwrap()
        ),
    );
    let r = reqwest::get(s.relay.data("/healthz")).await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["failing"], json!(["database"]));
    assert_eq!(v["database"]["status"], "error");
}
