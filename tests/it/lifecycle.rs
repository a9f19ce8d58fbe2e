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
