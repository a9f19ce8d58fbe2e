//! Request ids (the client's `x-request-id` when acceptable, else minted)
//! on every data-plane response, passed upstream and kept in usage; the
//! access log.

use serde_json::{json, Value};

use crate::support::{mint_key, mock_config, usage_for, Db, Relay, RelayBuilder, TempConfig};

/// A policy limited to one request a minute, and a model whose only key
/// needs a variable nobody sets (a 503).
const EXTRA: &str = r#"
kind: Policy
name: one-a-minute
models: ["*"]
limits: { requests_per_minute: 1 }
---
kind: Host
name: keyless
base_url: http://127.0.0.1:9/v1
keys:
  - name: missing
    env: RELAY_TEST_NEVER_SET
---
kind: Model
name: keyless-model
---
kind: Binding
name: keyless-binding
model: keyless-model
host: keyless
adapter: openai
upstream: x
"#;

struct Setup {
    mock: crate::mock_upstream::MockUpstream,
    _cfg: TempConfig,
    relay: Relay,
    key: String,
    key_id: String,
    limited: String,
}

async fn setup(tweak: impl FnOnce(RelayBuilder) -> RelayBuilder) -> Setup {
    let mock = crate::mock_upstream::MockUpstream::start().await;
    let cfg = TempConfig::new(&[
        ("all.yaml", &mock_config(&mock.base_url())),
        ("extra.yaml", EXTRA),
    ]);
    let (key_id, key) = mint_key(&cfg.data_dir(), &Db::Sqlite, "default");
    let (_, limited) = mint_key(&cfg.data_dir(), &Db::Sqlite, "one-a-minute");
    let b = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_TEST_OPENAI_KEY", "sk-upstream-openai")
        .env("RELAY_TEST_ANTHROPIC_KEY", "sk-upstream-anthropic");
    let relay = tweak(b).start();
    Setup {
        mock,
        _cfg: cfg,
        relay,
        key,
        key_id,
        limited,
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

impl Setup {
    async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        id: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut r = self.relay.http.post(self.relay.data(path)).json(body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(id) = id {
            r = r.header("x-request-id", id);
        }
        r.send().await.unwrap()
    }
}

fn id_of(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on a {}", r.status()))
        .to_str()
        .unwrap()
        .to_string()
}

fn upstream_ids(mock: &crate::mock_upstream::MockUpstream) -> Vec<String> {
    mock.requests()
        .iter()
        .filter_map(|r| r.headers.get("x-request-id"))
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_request_id_is_on_every_response_upstream_and_in_usage() {
    let s = setup(|b| b).await;
    let key = Some(s.key.as_str());
    let cases: Vec<(u16, &str, Option<&str>, Value)> = vec![
        (200, "/v1/chat/completions", key, chat("gpt-test")),
        (401, "/v1/chat/completions", None, chat("gpt-test")),
        (401, "/v1/messages", Some("rk_wrong"), chat("claude-test")),
        (404, "/v1/chat/completions", key, chat("no-such-model")),
        (404, "/v1/no-such-route", key, chat("gpt-test")),
        (503, "/v1/chat/completions", key, chat("keyless-model")),
    ];
    for (i, (want, path, key, body)) in cases.into_iter().enumerate() {
        let id = format!("client-id-{i}");
        let r = s.post(path, key, Some(&id), &body).await;
        assert_eq!(r.status(), want, "{path}: {}", r.text().await.unwrap());
        assert_eq!(id_of(&r), id, "{want} on {path}");
    }
    // 429 (the second call of a one-a-minute key).
    crate::support::clear_of_minute_boundary().await;
    let limited = Some(s.limited.as_str());
    let first = s
        .post(
            "/v1/chat/completions",
            limited,
            Some("lim-1"),
            &chat("gpt-test"),
        )
        .await;
    assert_eq!(first.status(), 200);
    let r = s
        .post(
            "/v1/chat/completions",
            limited,
            Some("lim-2"),
            &chat("gpt-test"),
        )
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(id_of(&r), "lim-2");

    // Streams too.
    let mut body = chat("gpt-test");
    body["stream"] = json!(true);
    let r = s
        .post("/v1/chat/completions", key, Some("stream-id-1"), &body)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(id_of(&r), "stream-id-1");
    assert!(r.text().await.unwrap().contains("[DONE]"));

    // The upstream saw the client's ids.
    let seen = upstream_ids(&s.mock);
    for id in ["client-id-0", "lim-1", "stream-id-1"] {
        assert!(
            seen.iter().any(|s| s == id),
            "{id} not sent upstream: {seen:?}"
        );
    }

    // Usage keeps relay's unique id beside the client's.
    let usage = usage_for(&s.relay, &s.key_id, 3).await;
    let records = usage["records"].as_array().unwrap();
    let mine = records
        .iter()
        .find(|r| r["client_request_id"] == "client-id-0")
        .unwrap_or_else(|| panic!("{usage:#}"));
    let own = mine["request_id"].as_str().unwrap();
    assert!(own.starts_with("req_") && own != "client-id-0", "{mine}");
    assert!(
        records
            .iter()
            .any(|r| r["client_request_id"] == "stream-id-1"),
        "{usage:#}"
    );
}

#[tokio::test]
async fn a_missing_or_unacceptable_id_is_replaced_by_a_minted_one() {
    let s = setup(|b| b).await;
    let key = Some(s.key.as_str());
    let too_long = "x".repeat(129);
    let mut minted = Vec::new();
    for id in [None, Some("has space"), Some(too_long.as_str())] {
        let r = s
            .post("/v1/chat/completions", key, id, &chat("gpt-test"))
            .await;
        assert_eq!(r.status(), 200);
        let got = id_of(&r);
        assert!(got.starts_with("req_") && got.len() == 24, "{got}");
        minted.push(got);
    }
    // 128 visible characters are kept.
    let at_limit = "y".repeat(128);
    let r = s
        .post(
            "/v1/chat/completions",
            key,
            Some(&at_limit),
            &chat("gpt-test"),
        )
        .await;
    assert_eq!(id_of(&r), at_limit);
    // Unauthenticated calls get one as well.
    let r = s
        .post("/v1/chat/completions", None, None, &chat("gpt-test"))
        .await;
    assert_eq!(r.status(), 401);
    assert!(id_of(&r).starts_with("req_"));

    minted.sort();
    minted.dedup();
    assert_eq!(minted.len(), 3, "minted ids repeat");
    // The minted id is what went upstream, and relay's own id in usage.
    let seen = upstream_ids(&s.mock);
    for id in &minted {
        assert!(seen.contains(id), "{id} not sent upstream: {seen:?}");
    }
    let usage = usage_for(&s.relay, &s.key_id, 4).await;
    let records = usage["records"].as_array().unwrap();
    for id in &minted {
        let r = records
            .iter()
            .find(|r| r["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id}: {usage:#}"));
        assert_eq!(r["client_request_id"], Value::Null, "{r}");
    }
}

fn access_lines(relay: &Relay) -> Vec<String> {
    relay
        .logs()
        .lines()
        .filter(|l| l.contains("relay::access"))
        .map(str::to_string)
        .collect()
}

/// Waits (5 s at most) for an access line containing `needle`.
async fn access_line(relay: &Relay, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Some(l) = access_lines(relay).into_iter().find(|l| l.contains(needle)) {
            return l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access line with {needle}:\n{}",
            relay.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_access_line_per_request_with_its_fields() {
    let s = setup(|b| b).await;
    let key = Some(s.key.as_str());
    let r = s
        .post(
            "/v1/chat/completions",
            key,
            Some("log-ok-1"),
            &chat("gpt-test"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let line = access_line(&s.relay, "log-ok-1").await;
    for field in [
        "request_id=req_",
        "client_request_id=\"log-ok-1\"",
        &format!("key_id=\"{}\"", s.key_id),
        "model=\"gpt-test\"",
        "binding=\"gpt-test-openai\"",
        "host=\"openai\"",
        "host_key=\"primary\"",
        "status=200",
        "attempts=1",
        "latency_ms=",
        "upstream_ms=",
        "input_tokens=",
        "output_tokens=",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(!line.contains("input_tokens=0 "), "{line}");

    // A stream's line is written when it ends, with its tokens.
    let mut body = chat("gpt-test");
    body["stream"] = json!(true);
    let r = s
        .post("/v1/chat/completions", key, Some("log-stream-1"), &body)
        .await;
    r.text().await.unwrap();
    let line = access_line(&s.relay, "log-stream-1").await;
    assert!(
        line.contains("streamed=true") && line.contains("status=200"),
        "{line}"
    );

    // Refused before any call: still one line each, with the status.
    let r = s
        .post(
            "/v1/chat/completions",
            None,
            Some("log-401"),
            &chat("gpt-test"),
        )
        .await;
    assert_eq!(r.status(), 401);
    let line = access_line(&s.relay, "log-401").await;
    assert!(line.contains("status=401"), "{line}");
    let r = s
        .post("/v1/chat/completions", key, Some("log-404"), &chat("nope"))
        .await;
    assert_eq!(r.status(), 404);
    let line = access_line(&s.relay, "log-404").await;
    assert!(
        line.contains("status=404") && line.contains("model=\"nope\""),
        "{line}"
    );
    assert!(line.contains(&s.key_id), "{line}");

    // Exactly one line per request.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for id in ["log-ok-1", "log-stream-1", "log-401", "log-404"] {
        let n = access_lines(&s.relay)
            .iter()
            .filter(|l| l.contains(&format!("\"{id}\"")))
            .count();
        assert_eq!(n, 1, "{id}:\n{}", s.relay.logs());
    }
    // Probes get none.
    reqwest::get(s.relay.data("/readyz")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!access_lines(&s.relay).iter().any(|l| l.contains("/readyz")));
}

#[tokio::test]
async fn the_access_log_can_be_turned_off_or_sampled() {
    let off = setup(|b| b.env("RELAY_ACCESS_LOG", "off")).await;
    let key = Some(off.key.as_str());
    assert_eq!(
        off.post("/v1/chat/completions", key, None, &chat("gpt-test"))
            .await
            .status(),
        200
    );
    assert_eq!(
        off.post("/v1/chat/completions", None, None, &chat("gpt-test"))
            .await
            .status(),
        401
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(access_lines(&off.relay), Vec::<String>::new());

    // Sampled at 0: successes are not logged, errors are.
    let sampled = setup(|b| b.env("RELAY_ACCESS_LOG_SAMPLE", "0")).await;
    let key = Some(sampled.key.as_str());
    let r = sampled
        .post(
            "/v1/chat/completions",
            key,
            Some("sampled-ok"),
            &chat("gpt-test"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = sampled
        .post(
            "/v1/chat/completions",
            key,
            Some("sampled-404"),
            &chat("nope"),
        )
        .await;
    assert_eq!(r.status(), 404);
    access_line(&sampled.relay, "sampled-404").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !sampled.relay.logs().contains("sampled-ok"),
        "{}",
        sampled.relay.logs()
    );

    // A bad value is a usage error naming the variable.
    let bad = crate::support::relay()
        .args(["serve"])
        .env("RELAY_ACCESS_LOG_SAMPLE", "1.5")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--access-log-sample"));
}

#[tokio::test]
async fn an_oversized_body_refused_before_upload_carries_the_id_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup(|b| b).await;
    let addr = s.relay.data_url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Declares 40 MB and sends none of it: refused from the header alone.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 40000000\r\nx-request-id: big-body-1\r\n\r\n",
        s.key
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(text.starts_with("http/1.1 413"), "{text}");
    assert!(text.contains("x-request-id: big-body-1"), "{text}");
}
