//! Hostile clients and operators' mistakes at the edge: admin query ranges,
//! slow and idle connections, connection caps, the request-body budget,
//! early answers that close the connection, saturating estimates, and
//! config files that are not regular files. Each test is bounded in time
//! (well under 20 s) and in sockets (a handful).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn host_of(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

async fn connect(url: &str) -> TcpStream {
    TcpStream::connect(host_of(url)).await.unwrap()
}

/// Reads until the peer closes (`true`) or `limit` passes (`false`).
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response (head and a `content-length` body) within `limit`.
async fn read_response(s: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return text;
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("no complete response within {limit:?}; got {text:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return text,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

fn json_of(response: &str) -> Value {
    let b = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(b).unwrap_or_else(|e| panic!("{e}: {response:?}"))
}

#[tokio::test]
async fn absurd_admin_ranges_are_refused_and_relay_stays_up() {
    let cfg = TempConfig::new(&[("c.yaml", MINIMAL)]);
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for path in [
        "/api/usage/series?bucket=day&to=9223372036854775807",
        "/api/usage/series?bucket=hour&from=-9223372036854775808",
        "/api/usage/series?bucket=hour&from=1700000000000&to=1600000000000",
        "/api/usage/series?from=0",
        "/api/usage?to=9223372036854775807",
        "/api/usage?limit=0",
        "/api/usage?limit=-5",
        "/api/usage?from=abc",
    ] {
        let r = http
            .get(relay.control(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", relay.logs()));
        assert_eq!(r.status(), 400, "{path}");
        let v: Value = r.json().await.unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(!msg.is_empty(), "{path}: {v}");
        assert_eq!(v["error"]["code"], "bad_request", "{path}: {v}");
    }
    // A sane range still answers, and the process is alive.
    let r = http
        .get(relay.control("/api/usage/series?bucket=day"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        http.get(relay.data("/livez"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

fn timed(b: RelayBuilder, header: &str, idle: &str, body: &str) -> RelayBuilder {
    b.env("RELAY_HEADER_TIMEOUT", header)
        .env("RELAY_IDLE_TIMEOUT", idle)
        .env("RELAY_BODY_TIMEOUT", body)
}

#[tokio::test]
async fn slow_and_silent_heads_are_closed_after_the_header_timeout() {
    let cfg = TempConfig::new(&[("c.yaml", MINIMAL)]);
    let relay = timed(
        RelayBuilder::new(&cfg.dir(), &cfg.data_dir()),
        "1s",
        "30s",
        "30s",
    )
    .start();
    for url in [relay.data_url.clone(), relay.control_url.clone().unwrap()] {
        // Sends nothing at all.
        let started = Instant::now();
        let mut silent = connect(&url).await;
        let (_, closed) = read_to_close(&mut silent, Duration::from_secs(6)).await;
        assert!(closed, "{url}: a silent connection stayed open");
        assert!(started.elapsed() >= Duration::from_millis(800));

        // A partial head, one byte every 200 ms (slowloris).
        let started = Instant::now();
        let mut slow = connect(&url).await;
        slow.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let (mut rd, mut wr) = slow.into_split();
        let drip = async move {
            for _ in 0..40 {
                if wr.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let closed = async move {
            let mut buf = [0u8; 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::select! {
            () = closed => {}
            () = drip => panic!("{url}: a dripping head was kept for 8 s"),
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(5),
            "{url}: closed after {took:?}"
        );
    }
}

#[tokio::test]
async fn idle_keep_alive_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let cfg = TempConfig::new(&[("c.yaml", MINIMAL)]);
    let relay = timed(
        RelayBuilder::new(&cfg.dir(), &cfg.data_dir()),
        "1s",
        "3s",
        "30s",
    )
    .start();
    let mut s = connect(&relay.data_url).await;
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s, Duration::from_secs(5)).await;
    assert_eq!(status(&r), 200);
    let idle = Instant::now();
    // Still open past the header timeout: idle is not a slow head...
    let (_, closed) = read_to_close(&mut s, Duration::from_millis(2000)).await;
    assert!(
        !closed,
        "an idle keep-alive connection was cut at the header timeout"
    );
    // ...and reusable.
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        status(&read_response(&mut s, Duration::from_secs(5)).await),
        200
    );
    let idle_again = Instant::now();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(8)).await;
    assert!(closed, "an idle connection was kept past the idle timeout");
    let took = idle_again.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(7),
        "closed after {took:?} idle"
    );
    assert!(idle.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn a_slow_request_body_is_cut_after_the_body_timeout() {
    let s = Stack::start_with(Db::Sqlite, |b| timed(b, "5s", "30s", "1s")).await;
    let mut c = connect(&s.relay.data_url).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":",
        s.key
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let r = read_response(&mut c, Duration::from_secs(6)).await;
    let took = started.elapsed();
    assert_eq!(status(&r), 408, "{r}");
    assert_eq!(header(&r, "connection"), Some("close"), "{r}");
    assert_eq!(json_of(&r)["error"]["code"], "request_body_timeout", "{r}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let (_, closed) = read_to_close(&mut c, Duration::from_secs(3)).await;
    assert!(closed, "the connection stays open after the body timeout");
}

/// An upstream that streams an OpenAI chat completion slowly: `events`
/// chunks `gap` apart.
async fn slow_stream_upstream(events: usize, gap: Duration) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || async move {
            let chunks = futures_util::stream::unfold(0usize, move |i| async move {
                if i > events {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                let data = if i == events {
                    "data: [DONE]\n\n".to_string()
                } else {
                    let finish = if i + 1 == events { "\"stop\"" } else { "null" };
                    format!(
                        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"part{i} \"}},\"finish_reason\":{finish}}}]}}\n\n"
                    )
                };
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(data)), i + 1))
            });
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(chunks),
            )
                .into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn a_long_streamed_response_is_not_cut_by_any_timeout() {
    let upstream = slow_stream_upstream(6, Duration::from_millis(600)).await;
    let config = format!(
        r#"
kind: Host
name: slow
base_url: {upstream}
timeout: 30s
keys:
  - name: primary
    env: RELAY_TEST_HOST_KEY
---
kind: Model
name: m1
---
kind: Binding
name: m1-slow
model: m1
host: slow
adapter: openai
upstream: m
---
kind: Policy
name: default
models: ["*"]
"#
    );
    let cfg = TempConfig::new(&[("c.yaml", &config)]);
    let (_, key) = mint_key(&cfg.data_dir(), &Db::Sqlite, "default");
    let relay = timed(
        RelayBuilder::new(&cfg.dir(), &cfg.data_dir()),
        "1s",
        "1s",
        "1s",
    )
    .start();
    let started = Instant::now();
    let r = relay
        .http
        .post(relay.data("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "m1", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(3000),
        "the stream was meant to outlast every timeout"
    );
    for i in 0..6 {
        assert!(
            text.contains(&format!("part{i} ")),
            "part{i} missing: {text}"
        );
    }
    assert!(text.contains("[DONE]"), "{text}");
}

#[tokio::test]
async fn each_plane_has_its_own_connection_cap() {
    let cfg = TempConfig::new(&[("c.yaml", MINIMAL)]);
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_MAX_CONNECTIONS", "3")
        .env("RELAY_CONTROL_MAX_CONNECTIONS", "2")
        .start();
    let get = |url: String| async move {
        let mut s = connect(&url).await;
        s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut s, Duration::from_secs(5)).await
    };
    let (data, control) = (relay.data_url.clone(), relay.control_url.clone().unwrap());

    // Fill the data plane with connections that send nothing (yet).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&data).await;
        s.write_all(b"GET /livez HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = get(data.clone()).await;
    assert_eq!(status(&r), 503, "{r}");
    assert_eq!(header(&r, "retry-after"), Some("1"), "{r}");
    assert_eq!(header(&r, "connection"), Some("close"), "{r}");
    assert_eq!(json_of(&r)["error"]["code"], "too_many_connections", "{r}");
    assert!(r.contains("RELAY_MAX_CONNECTIONS"), "{r}");
    // The control plane still answers.
    let c = get(control.clone()).await;
    assert_ne!(status(&c), 503, "{c}");
    // Its connection's slot comes back once relay sees it closed.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Fill the control plane; the data plane serves again once a slot frees.
    let mut held_control = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&control).await;
        s.write_all(b"GET /version HTTP/1.1\r\n").await.unwrap();
        held_control.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = get(control.clone()).await;
    assert_eq!(status(&c), 503, "{c}");
    assert!(c.contains("RELAY_CONTROL_MAX_CONNECTIONS"), "{c}");
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(data.clone()).await;
        if status(&r) == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a freed data slot was not reused: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        relay.logs().contains("at its connection cap"),
        "{}",
        relay.logs()
    );
}

/// A chat request body of exactly `len` bytes.
fn chat_body(len: usize) -> Vec<u8> {
    let base =
        json!({"model": "gpt-test", "messages": [{"role": "user", "content": ""}]}).to_string();
    let pad = len - base.len();
    let text = "x".repeat(pad);
    let b = json!({"model": "gpt-test", "messages": [{"role": "user", "content": text}]})
        .to_string()
        .into_bytes();
    assert_eq!(b.len(), len);
    b
}

fn post_head(path: &str, key: &str, len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nx-api-key: {key}\r\n\
         anthropic-version: 2023-06-01\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

#[tokio::test]
async fn request_bodies_share_a_memory_budget() {
    let s = Stack::start_with(Db::Sqlite, |b| b.env("RELAY_BODY_BUDGET", "64KiB")).await;
    let body = chat_body(40_000);
    // A holds 40,000 of the 65,536 bytes while its body trickles in.
    let mut a = connect(&s.relay.data_url).await;
    a.write_all(post_head("/v1/chat/completions", &s.key, body.len()).as_bytes())
        .await
        .unwrap();
    a.write_all(&body[..1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // B does not fit beside it: 503 with retry-after, in B's protocol.
    for (path, anthropic) in [("/v1/messages", true), ("/v1/chat/completions", false)] {
        let mut b = connect(&s.relay.data_url).await;
        b.write_all(post_head(path, &s.key, body.len()).as_bytes())
            .await
            .unwrap();
        let r = read_response(&mut b, Duration::from_secs(5)).await;
        assert_eq!(status(&r), 503, "{r}");
        assert_eq!(header(&r, "retry-after"), Some("1"), "{r}");
        assert_eq!(header(&r, "connection"), Some("close"), "{r}");
        let v = json_of(&r);
        if anthropic {
            assert_eq!(v["type"], "error", "{v}");
        } else {
            assert_eq!(v["error"]["code"], "body_budget_exhausted", "{v}");
        }
    }
    // One body larger than the whole budget can never fit: 413, not 503.
    let mut c = connect(&s.relay.data_url).await;
    c.write_all(post_head("/v1/chat/completions", &s.key, 70_000).as_bytes())
        .await
        .unwrap();
    let r = read_response(&mut c, Duration::from_secs(5)).await;
    assert_eq!(status(&r), 413, "{r}");
    assert_eq!(header(&r, "connection"), Some("close"), "{r}");

    // A finishes and is served; its bytes are given back.
    a.write_all(&body[1000..]).await.unwrap();
    let r = read_response(&mut a, Duration::from_secs(10)).await;
    assert_eq!(status(&r), 200, "{r}");
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = s
            .relay
            .http
            .post(s.relay.data("/v1/chat/completions"))
            .bearer_auth(&s.key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(Instant::now() < deadline, "the budget was not given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn early_answers_close_the_connection() {
    let s = Stack::start(Db::Sqlite).await;
    // 401 before the body is read.
    let mut c = connect(&s.relay.data_url).await;
    c.write_all(post_head("/v1/chat/completions", "rk-wrong", 1000).as_bytes())
        .await
        .unwrap();
    let r = read_response(&mut c, Duration::from_secs(5)).await;
    assert_eq!(status(&r), 401, "{r}");
    assert_eq!(header(&r, "connection"), Some("close"), "{r}");
    let (_, closed) = read_to_close(&mut c, Duration::from_secs(3)).await;
    assert!(closed);
    // 413 from the declared length alone.
    let mut c = connect(&s.relay.data_url).await;
    c.write_all(post_head("/v1/chat/completions", &s.key, 64 << 20).as_bytes())
        .await
        .unwrap();
    let r = read_response(&mut c, Duration::from_secs(5)).await;
    assert_eq!(status(&r), 413, "{r}");
    assert_eq!(header(&r, "connection"), Some("close"), "{r}");
    // A request whose body was read keeps its connection.
    let body = chat_body(200);
    let mut c = connect(&s.relay.data_url).await;
    c.write_all(post_head("/v1/chat/completions", &s.key, body.len()).as_bytes())
        .await
        .unwrap();
    c.write_all(&body).await.unwrap();
    let r = read_response(&mut c, Duration::from_secs(5)).await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(header(&r, "connection"), None, "{r}");
}

#[tokio::test]
async fn a_max_tokens_near_u64_max_saturates_the_estimate() {
    let s = Stack::start(Db::Sqlite).await;
    s.cfg.write(
        "tpm.yaml",
        "kind: Policy\nname: tpm\nmodels: [\"*\"]\nlimits: { tokens_per_minute: 1000 }\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let key = loop {
        let r = s
            .relay
            .http
            .post(s.relay.control("/api/keys"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"policy": "tpm"}))
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            let v: Value = r.json().await.unwrap();
            break v["key"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "policy tpm never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    clear_of_minute_boundary().await;
    // The first call asks for u64::MAX tokens: the estimate saturates and
    // takes the whole minute (it is admitted, then settled at its real
    // count); meanwhile nothing else fits.
    let huge = json!({
        "model": "gpt-test",
        "max_tokens": u64::MAX,
        "messages": [{"role": "user", "content": "hold [[fault:slow:1500]]"}],
    });
    let first = {
        let (http, url, key) = (
            s.relay.http.clone(),
            s.relay.data("/v1/chat/completions"),
            key.clone(),
        );
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(key)
                .json(&huge)
                .timeout(Duration::from_secs(10))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = s
        .post(
            "/v1/chat/completions",
            Some(&key),
            json!({"model": "gpt-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(second.status(), 429);
    let v: Value = second.json().await.unwrap();
    assert!(v.to_string().contains("tokens_per_minute"), "{v}");
    let first = first
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", s.relay.logs()));
    assert_eq!(first.status(), 200, "{}", s.relay.logs());
}

#[tokio::test]
async fn config_files_that_are_not_regular_or_too_large_are_refused_fast() {
    let cfg = TempConfig::new(&[("c.yaml", MINIMAL)]);
    let dir = cfg.dir();
    let fifo = dir.join("fifo.yaml");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.yaml")).unwrap();
    let big = "# padding\n".repeat(17 * 1024 * 1024 / 10 + 1);
    std::fs::write(dir.join("big.yaml"), big).unwrap();
    let started = Instant::now();
    let mut child = relay()
        .arg("validate")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("relay validate hung on a FIFO or a device");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("fifo.yaml") && text.contains("FIFO"),
        "{text}"
    );
    assert!(
        text.contains("zero.yaml") && text.contains("character device"),
        "{text}"
    );
    assert!(
        text.contains("big.yaml") && text.contains("16 MiB"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_fifo_does_not_freeze_hot_reload() {
    let cfg = TempConfig::new(&[("c.yaml", MINIMAL)]);
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    let fifo = cfg.dir().join("fifo.yaml");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // Bounded: before, the reload blocked on opening the FIFO for good.
    let r = relay
        .http
        .post(relay.control("/api/config/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("the reload answers instead of blocking on the FIFO");
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(v.to_string().contains("fifo.yaml"), "{v}");
    // Once it is gone, the next reload goes through.
    std::fs::remove_file(&fifo).unwrap();
    let r = relay.admin_post("/api/config/reload").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}
