//! What an orchestrator sees: `/livez` and `/readyz`, draining on SIGTERM,
//! the deadline for in-flight requests, `relay probe`, secrets from mounted
//! files, the metrics-only token and a separate control-plane address.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{relay, Db, Relay, Stack, TempConfig, ADMIN_TOKEN, MINIMAL};

fn chat(content: &str) -> Value {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": content}]})
}

async fn status(url: String) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

/// Waits for the process to exit (at most `within`), returning how long it took.
fn wait_exit(relay: &mut Relay, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(s) = relay.child.try_wait().unwrap() {
            assert!(s.success(), "relay exited with {s}:\n{}", relay.logs());
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "relay still running after {within:?}:\n{}",
            relay.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn probes_report_alive_and_ready() {
    let s = Stack::start(Db::Sqlite).await;
    assert_eq!(status(s.relay.data("/livez")).await, 200);
    let r = reqwest::get(s.relay.data("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn sigterm_turns_unready_keeps_serving_through_the_delay_then_finishes_in_flight() {
    let mut s = Stack::start_with(Db::Sqlite, |b| {
        b.env("RELAY_DRAIN_DELAY", "1500ms")
            .env("RELAY_SHUTDOWN_TIMEOUT", "10s")
    })
    .await;
    // A call still running when the signal arrives, streamed and slow.
    let mut body = chat("[[fault:slow:2000]] long one");
    body["stream"] = json!(true);
    let in_flight = {
        let req = s
            .relay
            .http
            .post(s.relay.data("/v1/chat/completions"))
            .bearer_auth(&s.key)
            .json(&body);
        tokio::spawn(async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.relay.signal("TERM");
    s.relay.wait_log("draining");

    // Unready at once, still alive, still serving new connections and calls.
    let ready = reqwest::Client::new()
        .get(s.relay.data("/readyz"))
        .header("connection", "close")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["reason"], "draining");
    assert_eq!(status(s.relay.data("/livez")).await, 200);
    let fresh = reqwest::Client::new()
        .post(s.relay.data("/v1/chat/completions"))
        .bearer_auth(&s.key)
        .json(&chat("during the drain delay"))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200, "{}", fresh.text().await.unwrap());

    // The in-flight stream completes, then relay exits on its own.
    let (code, text) = in_flight.await.unwrap();
    assert_eq!(code, 200);
    assert!(text.contains("[DONE]"), "stream cut short: {text}");
    let took = wait_exit(&mut s.relay, Duration::from_secs(8));
    assert!(took < Duration::from_secs(8));
}

#[tokio::test]
async fn in_flight_requests_past_the_shutdown_timeout_are_closed() {
    let mut s = Stack::start_with(Db::Sqlite, |b| {
        b.env("RELAY_DRAIN_DELAY", "0s")
            .env("RELAY_SHUTDOWN_TIMEOUT", "500ms")
    })
    .await;
    let req = s
        .relay
        .http
        .post(s.relay.data("/v1/chat/completions"))
        .bearer_auth(&s.key)
        .json(&chat("[[fault:slow:30000]] never finishes in time"));
    let in_flight = tokio::spawn(async move { req.send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.relay.signal("TERM");
    let took = wait_exit(&mut s.relay, Duration::from_secs(5));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    s.relay
        .wait_log("did not finish within RELAY_SHUTDOWN_TIMEOUT");
    // The client sees its connection end rather than hanging for 30 s.
    let r = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("client still waiting after relay exited")
        .unwrap();
    match r {
        Err(_) => {}
        Ok(resp) => assert_ne!(resp.status(), 200),
    }
}

#[tokio::test]
async fn probe_command_exits_zero_against_a_live_relay_and_one_otherwise() {
    let s = Stack::start(Db::Sqlite).await;
    let port = s.relay.data_url.rsplit(':').next().unwrap().to_string();
    let ok = relay()
        .args(["probe"])
        .env("RELAY_PORT", &port)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let url = s.relay.data("/readyz");
    let ok = relay().args(["probe", "--url", &url]).output().unwrap();
    assert!(ok.status.success());
    // Nothing listens on port 9 (discard) here.
    let down = relay()
        .args(["probe", "--port", "9", "--timeout", "1s"])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("127.0.0.1:9/livez"));
}

#[tokio::test]
async fn secrets_come_from_mounted_files() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let secrets = tempfile::tempdir().unwrap();
    let key = relay().arg("keygen").output().unwrap();
    let key = String::from_utf8(key.stdout).unwrap();
    let identity = key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    let (mk, token, metrics) = (
        secrets.path().join("master.key"),
        secrets.path().join("admin.token"),
        secrets.path().join("metrics.token"),
    );
    // Trailing newlines, as `kubectl create secret --from-file` leaves them.
    std::fs::write(&mk, format!("{identity}\n")).unwrap();
    std::fs::write(&token, "file-admin-token-0123456789abcdef\n").unwrap();
    std::fs::write(&metrics, "scrape-only-token-0123456789abcdef\n").unwrap();
    let r = crate::support::RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env_remove("RELAY_ADMIN_TOKEN")
        .env("RELAY_MASTER_KEY_FILE", &mk)
        .env("RELAY_ADMIN_TOKEN_FILE", &token)
        .env("RELAY_METRICS_TOKEN_FILE", &metrics)
        .start();
    // The master key came from the file: nothing was generated.
    assert!(!cfg.data_dir().join("master.key").exists());
    let get = |path: &str, bearer: &str| r.http.get(r.control(path)).bearer_auth(bearer).send();
    assert_eq!(
        get("/api/config/status", "file-admin-token-0123456789abcdef")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get("/api/config/status", ADMIN_TOKEN)
            .await
            .unwrap()
            .status(),
        401
    );
    // The metrics token opens /metrics and nothing else.
    let m = get("/metrics", "scrape-only-token-0123456789abcdef")
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    assert!(m.text().await.unwrap().contains("relay_"));
    assert_eq!(get("/metrics", "wrong-token").await.unwrap().status(), 401);
    assert_eq!(
        get("/api/config/status", "scrape-only-token-0123456789abcdef")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get("/api/keys", "scrape-only-token-0123456789abcdef")
            .await
            .unwrap()
            .status(),
        401
    );

    // A value and its file at once, or a missing file, is a usage error naming it.
    let both = relay()
        .args(["serve"])
        .env("RELAY_CONFIG_DIR", cfg.dir())
        .env("RELAY_ADMIN_TOKEN", "x")
        .env("RELAY_ADMIN_TOKEN_FILE", &token)
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
    let missing = relay()
        .args(["serve"])
        .env("RELAY_CONFIG_DIR", cfg.dir())
        .env("RELAY_MASTER_KEY_FILE", "/nonexistent/master.key")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/master.key"));
}

#[tokio::test]
async fn control_plane_listens_on_its_own_address() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let r = crate::support::RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_BIND", "127.0.0.1")
        .env("RELAY_CONTROL_BIND", "127.0.0.2")
        .start();
    assert!(r.data_url.contains("127.0.0.1:"), "{}", r.data_url);
    let control = r.control_url.clone().unwrap();
    assert!(control.contains("127.0.0.2:"), "{control}");
    assert_eq!(status(r.control("/version")).await, 200);
}

#[test]
fn migrate_reports_status_and_dry_run_without_changing_anything() {
    let data = tempfile::tempdir().unwrap();
    let migrate = |args: &[&str]| {
        let out = relay()
            .arg("migrate")
            .args(args)
            .env("RELAY_DATA_DIR", data.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let pending: Value = serde_json::from_str(&migrate(&["--dry-run", "--json"])).unwrap();
    let pending = pending.as_array().unwrap();
    assert!(pending.len() >= 2, "{pending:?}");
    assert!(pending.iter().all(|m| m["applied"] == false));
    // A dry run applied nothing.
    assert!(migrate(&["--status"]).contains("pending"));
    migrate(&[]);
    let status = migrate(&["--status"]);
    assert!(
        status.contains("applied") && !status.contains("pending"),
        "{status}"
    );
    assert!(migrate(&["--dry-run"]).contains("nothing to apply"));
}

/// A port nothing listens on yet (connections are refused) until `open`
/// starts forwarding it to `target`: a dependency that is down at start
/// and comes up later.
struct LateProxy {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LateProxy {
    fn closed() -> LateProxy {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        LateProxy { port, task: None }
    }

    async fn open(&mut self, target: String) {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind(format!("127.0.0.1:{}", self.port).parse().unwrap())
            .unwrap();
        let listener = sock.listen(64).unwrap();
        self.task = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        }));
    }
}

impl Drop for LateProxy {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// `host:port` of a `scheme://[user@]host:port/…` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_postgres_is_down_and_turns_ready_when_it_appears() {
    let db = crate::support::PgDatabase::create();
    let real = db.url.clone();
    let mut proxy = LateProxy::closed();
    // Trust authentication ignores the password; it must never be shown.
    let name = real.rsplit('/').next().unwrap();
    let via_proxy = format!(
        "postgres://postgres:s3cret-pw@127.0.0.1:{}/{name}",
        proxy.port
    );
    // The key is minted (and the schema created) before relay starts.
    let s = Stack::start_with(Db::Postgres(db), |b| {
        b.env("RELAY_DATABASE_URL", &via_proxy)
    })
    .await;

    assert_eq!(status(s.relay.data("/livez")).await, 200);
    let r = reqwest::get(s.relay.data("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "store_unreached", "{body}");
    assert_eq!(body["dependency"], "store", "{body}");
    let error = body["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(error.contains("connection refused"), "{body}");
    assert!(
        error.contains(&format!("127.0.0.1:{}", proxy.port)),
        "{body}"
    );
    assert!(!body.to_string().contains("s3cret-pw"), "{body}");
    let h = reqwest::get(s.relay.data("/healthz")).await.unwrap();
    assert_eq!(h.status(), 503);
    let h: Value = h.json().await.unwrap();
    assert!(
        h["database"]["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{h}"
    );

    // Inference: 503 with retry-after in the caller's protocol, never a 401.
    let r = s
        .post("/v1/chat/completions", Some(&s.key), chat("hi"))
        .await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_ready", "{v}");
    let r = s
        .post(
            "/v1/messages",
            Some(&s.key),
            json!({"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    // Control-plane reads that need the store: 503, not 500.
    let r = s
        .relay
        .http
        .get(s.relay.control("/api/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);

    proxy.open(host_port(&real)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while status(s.relay.data("/readyz")).await != 200 {
        assert!(
            Instant::now() < deadline,
            "never turned ready:\n{}",
            s.relay.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = s
        .post("/v1/chat/completions", Some(&s.key), chat("hi"))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_redis_is_down_on_local_state_and_connects_later() {
    let mut proxy = LateProxy::closed();
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let s = Stack::start_with(Db::Sqlite, |b| b.env("RELAY_STATE_URL", &url)).await;
    let health = || async {
        reqwest::get(s.relay.data("/healthz"))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(status(s.relay.data("/readyz")).await, 200);
    let h = health().await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["state"]["status"], "degraded", "{h}");
    assert!(
        h["state"]["detail"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{h}"
    );
    let r = s
        .post("/v1/chat/completions", Some(&s.key), chat("hi"))
        .await;
    assert_eq!(r.status(), 200);

    let target = crate::failover::redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    proxy.open(target).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h = health().await;
        if h["state"]["status"] == "ok" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reconnected: {h}\n{}",
            s.relay.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.relay.wait_log("Redis is reachable; shared state resumed");
    let r = s
        .post("/v1/chat/completions", Some(&s.key), chat("hi"))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_shutdown_deadline_end_with_an_error_event_and_are_recorded() {
    let mut s = Stack::start_with(Db::Sqlite, |b| {
        b.env("RELAY_DRAIN_DELAY", "0s")
            .env("RELAY_SHUTDOWN_TIMEOUT", "700ms")
    })
    .await;
    let mut openai = chat("[[fault:stall-stream:30000]] a long generation");
    openai["stream"] = json!(true);
    let anthropic = json!({
        "model": "claude-test", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "[[fault:stall-stream:30000]] a long generation"}]
    });
    let mut streams = Vec::new();
    for (path, body) in [
        ("/v1/chat/completions", openai),
        ("/v1/messages", anthropic),
    ] {
        let r = s
            .relay
            .http
            .post(s.relay.data(path))
            .bearer_auth(&s.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        streams.push(tokio::spawn(async move { r.text().await.unwrap() }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.relay.signal("TERM");
    let openai = tokio::time::timeout(Duration::from_secs(5), streams.remove(0))
        .await
        .expect("the OpenAI stream was not ended")
        .unwrap();
    let anthropic = tokio::time::timeout(Duration::from_secs(5), streams.remove(0))
        .await
        .expect("the Anthropic stream was not ended")
        .unwrap();
    assert!(!openai.contains("[DONE]"), "{openai}");
    let last = openai.trim_end().rsplit("\n\n").next().unwrap();
    assert!(
        last.starts_with("data: {\"error\"") && last.contains("shutting down"),
        "{openai}"
    );
    let events = crate::support::sse_events(&anthropic);
    assert_eq!(
        events.last().map(String::as_str),
        Some("error"),
        "{anthropic}"
    );
    assert!(!events.iter().any(|e| e == "message_stop"), "{anthropic}");
    wait_exit(&mut s.relay, Duration::from_secs(5));

    // Both were written to the store before relay exited.
    let store = relay::store::Store::open(None, &s.cfg.data_dir())
        .await
        .unwrap();
    let (totals, records) = store
        .usage_report(&relay::store::UsageQuery::default())
        .await
        .unwrap();
    assert_eq!(totals.requests, 2, "{records:?}\n{}", s.relay.logs());
    assert!(
        records.iter().all(|r| r.status == 503 && r.streamed),
        "{records:?}"
    );
}
