//! Key pools, breakers and failover, against the in-process backend and the
//! real Redis: a mock upstream that fails per key value (`fault-<spec>#label`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mock_upstream::MockUpstream;
use crate::support::*;

/// A unique label so parallel tests sharing Redis never share a breaker.
fn label() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        Instant::now().elapsed().as_nanos()
    )
}

/// Host `pool` (openai adapter) with the given keys (name, value), a
/// second host `spare` (anthropic) serving the same model at a lower
/// priority when `spare` is set, and policy `default` with `limits`.
struct Pool {
    mock: MockUpstream,
    cfg: TempConfig,
    relay: Relay,
    key: String,
    key_id: String,
    /// (variable, value) per pool key in order, then the spare's.
    values: Vec<(String, String)>,
    names: Vec<String>,
}

struct PoolSpec<'a> {
    keys: &'a [(&'a str, &'a str)],
    breaker: &'a str,
    selection: &'a str,
    spare: bool,
    limits: &'a str,
    state_url: Option<String>,
    /// A PostgreSQL database for the key store (else SQLite in the data dir).
    database_url: Option<String>,
}

impl Default for PoolSpec<'_> {
    fn default() -> Self {
        PoolSpec {
            keys: &[],
            breaker: "",
            selection: "prioritized",
            spare: false,
            limits: "",
            state_url: None,
            database_url: None,
        }
    }
}

fn config(base: &str, spec: &PoolSpec, tag: &str) -> (String, Vec<(String, String)>) {
    let mut keys = String::new();
    let mut values = Vec::new();
    for (i, (name, value)) in spec.keys.iter().enumerate() {
        let var = format!("RELAY_TEST_POOL_KEY_{i}");
        keys.push_str(&format!("  - name: {name}\n    env: {var}\n"));
        // Labels make every value (so every breaker) unique to this test.
        values.push((var, format!("{value}#{tag}")));
    }
    let mut yaml = format!(
        "kind: Host\nname: pool\nbase_url: {base}\ntimeout: 2s\nselection: {}\nkeys:\n{keys}{}\n---\n\
         kind: Model\nname: m\n---\nkind: Binding\nname: m-pool\nmodel: m\nhost: pool\nadapter: openai\nupstream: up\n---\n\
         kind: Policy\nname: default\nmodels: [\"*\"]\n{}\n",
        spec.selection,
        if spec.breaker.is_empty() { String::new() } else { format!("breaker:\n{}", spec.breaker) },
        spec.limits
    );
    if spec.spare {
        yaml.push_str(&format!(
            "---\nkind: Host\nname: spare\nbase_url: {base}\nkeys:\n  - name: only\n    env: RELAY_TEST_SPARE_KEY\n---\n\
             kind: Binding\nname: m-spare\nmodel: m\nhost: spare\nadapter: openai\nupstream: up-spare\npriority: 10\n"
        ));
        values.push(("RELAY_TEST_SPARE_KEY".into(), format!("sk-spare#{tag}")));
    }
    (yaml, values)
}

impl Pool {
    async fn start(spec: PoolSpec<'_>) -> Pool {
        let mock = MockUpstream::start().await;
        let tag = label();
        let (yaml, values) = config(&mock.base_url(), &spec, &tag);
        let cfg = TempConfig::new(&[("all.yaml", &yaml)]);
        let db = match &spec.database_url {
            Some(url) => Db::Url(url.clone()),
            None => Db::Sqlite,
        };
        let (key_id, key) = mint_key(&cfg.data_dir(), &db, "default");
        let mut b = RelayBuilder::new(&cfg.dir(), &cfg.data_dir());
        for (k, v) in &values {
            b = b.env(k, v);
        }
        if let Some(url) = &spec.database_url {
            b = b.env("RELAY_DATABASE_URL", url);
        }
        if let Some(url) = &spec.state_url {
            b = b.env("RELAY_STATE_URL", url);
        }
        let relay = b.start();
        let names = spec.keys.iter().map(|(n, _)| n.to_string()).collect();
        Pool {
            mock,
            cfg,
            relay,
            key,
            key_id,
            values,
            names,
        }
    }

    async fn call(&self) -> reqwest::Response {
        self.call_with("hi").await
    }

    async fn call_with(&self, text: &str) -> reqwest::Response {
        self.chat(json!({"model": "m", "messages": [{"role": "user", "content": text}]}))
            .await
    }

    /// `POST /v1/chat/completions` with this pool's relay key.
    async fn chat(&self, body: Value) -> reqwest::Response {
        self.relay
            .http
            .post(self.relay.data("/v1/chat/completions"))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// How many upstream requests carried the pool key named `name`.
    fn hits(&self, name: &str) -> usize {
        let value = &self.values[self.names.iter().position(|n| n == name).unwrap()].1;
        let expected = format!("Bearer {value}");
        self.mock
            .requests()
            .iter()
            .filter(|r| {
                r.headers
                    .get("authorization")
                    .is_some_and(|v| v.to_str().unwrap() == expected)
            })
            .count()
    }

    async fn breaker(&self, key: &str) -> Value {
        let v = self.relay.admin_get("/api/breakers").await;
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["host"] == "pool" && k["key"] == key)
            .cloned()
            .unwrap()
    }
}

async fn fails_over_from_a_rejected_key(state_url: Option<String>) {
    let p = Pool::start(PoolSpec {
        keys: &[("bad", "fault-401"), ("good", "sk-good")],
        state_url,
        ..Default::default()
    })
    .await;
    let r = p.call().await;
    assert_eq!(r.status(), 200, "no client-visible error");
    assert_eq!((p.hits("bad"), p.hits("good")), (1, 1));
    let b = p.breaker("bad").await;
    assert_eq!(
        (b["state"].as_str(), b["class"].as_str()),
        (Some("open"), Some("auth")),
        "{b}"
    );
    assert_eq!(p.breaker("good").await["state"], "closed");
    // The open key is skipped from now on.
    assert_eq!(p.call().await.status(), 200);
    assert_eq!((p.hits("bad"), p.hits("good")), (1, 2));
}

#[tokio::test]
async fn fails_over_from_a_rejected_key_in_process() {
    fails_over_from_a_rejected_key(None).await;
}

#[tokio::test]
async fn fails_over_from_a_rejected_key_with_redis() {
    fails_over_from_a_rejected_key(Some(redis_url())).await;
}

pub fn redis_url() -> String {
    std::env::var("RELAY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test]
async fn each_failure_gets_its_class() {
    let p = Pool::start(PoolSpec {
        keys: &[
            ("quota", "fault-quota"),
            ("limited", "fault-429"),
            // A 403 that says the key itself is revoked (a request-scoped
            // 403 never counts: see isolation.rs).
            ("forbidden", "fault-403-key"),
            ("broken", "fault-500"),
            ("good", "sk-good"),
        ],
        breaker: "  server_error_threshold: 1\n",
        ..Default::default()
    })
    .await;
    // Up to 3 keys per request: quota, limited, forbidden fail; the next
    // request tries broken and good.
    assert_eq!(
        p.call().await.status(),
        503,
        "three key faults exhaust one request's attempts"
    );
    assert_eq!(p.call().await.status(), 200);
    for (key, class) in [
        ("quota", "quota"),
        ("limited", "rate_limit"),
        ("forbidden", "auth"),
        ("broken", "server_error"),
    ] {
        assert_eq!(p.breaker(key).await["class"], class, "{key}");
    }
    // 429 with retry-after: 7 → open for about 7 s, not the 60 s default.
    let limited = p.breaker("limited").await;
    let left = limited["open_until"].as_i64().unwrap() - relay::store::now_ms();
    assert!((5_000..=8_000).contains(&left), "{limited}");
}

#[tokio::test]
async fn client_errors_never_trip_a_breaker_and_are_returned_as_is() {
    let p = Pool::start(PoolSpec {
        keys: &[("a", "sk-a"), ("b", "sk-b")],
        ..Default::default()
    })
    .await;
    let r = p.call_with("[[fault:400]]").await;
    assert_eq!(r.status(), 400);
    assert_eq!((p.hits("a"), p.hits("b")), (1, 0), "not retried elsewhere");
    assert_eq!(p.breaker("a").await["state"], "closed");
}

async fn exhaustion_is_the_seeds_503_without_calling_upstream(state_url: Option<String>) {
    let p = Pool::start(PoolSpec {
        keys: &[("a", "fault-401"), ("b", "fault-quota")],
        state_url,
        ..Default::default()
    })
    .await;
    let r = p.call().await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("no healthy keys in pool") && msg.contains("`m`") && msg.contains("`pool`"),
        "{msg}"
    );
    let before = p.mock.requests().len();
    let r = p.call().await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        p.mock.requests().len(),
        before,
        "every key open: upstream not called"
    );
    // The Anthropic surface says the same in its own shape.
    let r = p
        .relay
        .http
        .post(p.relay.data("/v1/messages"))
        .header("x-api-key", &p.key)
        .json(&json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no healthy keys in pool"));
}

#[tokio::test]
async fn the_next_binding_serves_when_a_host_is_exhausted() {
    let p = Pool::start(PoolSpec {
        keys: &[("a", "fault-401")],
        spare: true,
        ..Default::default()
    })
    .await;
    let r = p.call().await;
    assert_eq!(r.status(), 200);
    let last = p.mock.requests().pop().unwrap();
    assert_eq!(
        last.body["model"], "up-spare",
        "served by the lower-priority binding"
    );
}

#[tokio::test]
async fn no_retry_once_streaming_began() {
    let p = Pool::start(PoolSpec {
        keys: &[("a", "sk-a"), ("b", "sk-b")],
        ..Default::default()
    })
    .await;
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "[[fault:break-stream]]"}]});
    let r = p.chat(body).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"error\"") && !text.contains("[DONE]"),
        "{text}"
    );
    assert_eq!(
        p.hits("a") + p.hits("b"),
        1,
        "no retry after the first byte"
    );
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_byte_is_retried() {
    let p = Pool::start(PoolSpec {
        keys: &[("a", "fault-reset"), ("b", "sk-b")],
        ..Default::default()
    })
    .await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hello"}]});
    let r = p.chat(body).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("[DONE]"));
    assert_eq!(p.hits("b"), 1);
}

#[tokio::test]
async fn timeouts_and_resets_are_server_errors() {
    let p = Pool::start(PoolSpec {
        keys: &[
            ("slow", "fault-timeout"),
            ("reset", "fault-reset"),
            ("good", "sk-good"),
        ],
        breaker: "  server_error_threshold: 1\n",
        ..Default::default()
    })
    .await;
    let t = Instant::now();
    assert_eq!(p.call().await.status(), 200);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "bounded by the host timeout (2 s)"
    );
    assert_eq!(p.breaker("slow").await["class"], "server_error");
    assert_eq!(p.breaker("reset").await["class"], "server_error");
}

async fn breakers_heal_after_the_cooldown(state_url: Option<String>) {
    let p = Pool::start(PoolSpec {
        keys: &[("flaky", "fault-500"), ("good", "sk-good")],
        breaker: "  server_error_threshold: 1\n  server_error_cooldown: 1s\n",
        state_url,
        ..Default::default()
    })
    .await;
    assert_eq!(p.call().await.status(), 200);
    assert_eq!(p.call().await.status(), 200);
    assert_eq!(p.hits("flaky"), 1, "open: skipped");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(p.breaker("flaky").await["state"], "half_open");
    assert_eq!(p.call().await.status(), 200);
    assert_eq!(p.hits("flaky"), 2, "half-open: probed again");
}

#[tokio::test]
async fn reset_clears_breakers_through_api_and_cli() {
    let p = Pool::start(PoolSpec {
        keys: &[("bad", "fault-401"), ("good", "sk-good")],
        ..Default::default()
    })
    .await;
    assert_eq!(p.call().await.status(), 200);
    assert_eq!(p.breaker("bad").await["state"], "open");
    let r = p.relay.admin_post("/api/breakers/reset").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["cleared"], 1);
    assert_eq!(p.breaker("bad").await["state"], "closed");
    assert_eq!(p.call().await.status(), 200);
    assert_eq!(p.hits("bad"), 2, "tried again after the reset");
    // The CLI asks the running server when state is in process.
    let out = relay()
        .args(["breakers", "reset", "--host", "pool"])
        .env("RELAY_CONTROL_URL", p.relay.control(""))
        .env("RELAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cleared 1"));
    assert_eq!(p.breaker("bad").await["state"], "closed");
    let out = relay()
        .args(["breakers", "list"])
        .env("RELAY_CONTROL_URL", p.relay.control(""))
        // Nor a per-boot token (that relay's data dir is elsewhere).
        .env("RELAY_DATA_DIR", "/nonexistent/relay-data")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "no admin token: a usage error that says so"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("RELAY_ADMIN_TOKEN"));
}

#[tokio::test]
async fn a_rotated_key_starts_clean_and_the_old_record_stays_in_redis_until_it_expires() {
    let redis = redis_url();
    let p = Pool::start(PoolSpec {
        keys: &[("primary", "fault-401"), ("good", "sk-good")],
        state_url: Some(redis.clone()),
        ..Default::default()
    })
    .await;
    assert_eq!(p.call().await.status(), 200);
    assert_eq!(p.breaker("primary").await["state"], "open");
    // Rotate: same key name, new value; restart on the same Redis.
    let Pool {
        cfg,
        relay: old,
        values,
        mock,
        key,
        ..
    } = p;
    drop(old);
    let mut b = RelayBuilder::new(&cfg.dir(), &cfg.data_dir()).env("RELAY_STATE_URL", &redis);
    for (var, value) in &values {
        let v = if value.starts_with("fault-401") {
            value.replace("fault-401", "sk-rotated")
        } else {
            value.clone()
        };
        b = b.env(var, v);
    }
    let relay = b.start();
    let v = relay.admin_get("/api/breakers").await;
    let primary = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "primary")
        .unwrap()
        .clone();
    assert_eq!(primary["state"], "closed", "new value, new breaker");
    assert!(
        v["records_of_unconfigured_keys"].as_u64().unwrap() >= 1,
        "the old record just waits to expire"
    );
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let r = relay
        .http
        .post(relay.data("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(mock.requests().last().unwrap().headers["authorization"]
        .to_str()
        .unwrap()
        .contains("sk-rotated"));
}

#[tokio::test]
async fn replicas_share_breakers_rate_limits_and_key_state() {
    // Two relays sharing one Redis and one PostgreSQL.
    let redis = redis_url();
    let pg = PgDatabase::create();
    let a = Pool::start(PoolSpec {
        keys: &[("bad", "fault-401"), ("good", "sk-good")],
        state_url: Some(redis.clone()),
        database_url: Some(pg.url.clone()),
        limits: "limits: { requests_per_minute: 4 }",
        ..Default::default()
    })
    .await;
    let b = RelayBuilder::new(&a.cfg.dir(), &a.cfg.root.path().join("data-b"))
        .env("RELAY_STATE_URL", &redis)
        .env("RELAY_DATABASE_URL", &pg.url);
    let b = a.values.iter().fold(b, |b, (k, v)| b.env(k, v)).start();
    clear_of_minute_boundary().await;
    assert_eq!(a.call().await.status(), 200, "A trips `bad`");
    assert_eq!(a.hits("bad"), 1);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let call_b = || async {
        b.http
            .post(b.data("/v1/chat/completions"))
            .bearer_auth(&a.key)
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(call_b().await.status(), 200);
    assert_eq!(a.hits("bad"), 1, "B skipped the key A tripped");
    // 4 requests per minute across both replicas: 2 used, 2 left.
    assert_eq!(call_b().await.status(), 200);
    assert_eq!(a.call().await.status(), 200);
    let r = call_b().await;
    assert_eq!(r.status(), 429, "the fifth request in the minute");
    assert!(r.headers().get("retry-after").is_some());
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests_per_minute"),
        "{v}"
    );
    // Disabled through A's admin API: B refuses it within a second.
    let r = a
        .relay
        .admin_post(&format!("/api/keys/{}/disable", a.key_id))
        .await;
    assert_eq!(r.status(), 200);
    let t = Instant::now();
    loop {
        let st = call_b().await.status();
        if st == 401 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "B still answers {st} for a disabled key"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn concurrency_and_token_limits_answer_429_in_the_callers_protocol(
    state_url: Option<String>,
) {
    let p = Pool::start(PoolSpec {
        keys: &[("a", "sk-a")],
        limits: "limits: { max_concurrent_requests: 1, tokens_per_minute: 1000 }",
        state_url,
        ..Default::default()
    })
    .await;
    // One slow request holds the only slot.
    let slow = p.call_with("[[fault:slow:1500]] hold");
    let (first, second) = tokio::join!(slow, async {
        // Once the upstream has the slow call, its slot is surely taken.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while p.hits("a") == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "slow call never arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        p.relay
            .http
            .post(p.relay.data("/v1/messages"))
            .header("x-api-key", &p.key)
            .json(&json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 429);
    assert!(second.headers().get("retry-after").is_some());
    let v: Value = second.json().await.unwrap();
    assert_eq!(
        v["error"]["type"], "rate_limit_error",
        "Anthropic shape: {v}"
    );
    // Tokens: a request reserving more than the minute's budget is refused.
    let big =
        json!({"model": "m", "max_tokens": 5000, "messages": [{"role": "user", "content": "x"}]});
    // (The slow call's slot is given back just after its reply: until then
    // the concurrency limit answers first. Windows are calendar minutes: a
    // call in a fresh minute gets the whole budget, and the next is refused.)
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut fresh_minutes = 0;
    loop {
        let r = p.chat(big.clone()).await;
        if r.status() == 200 {
            fresh_minutes += 1;
            assert!(fresh_minutes <= 1, "two fresh minutes in a row");
            continue;
        }
        assert_eq!(r.status(), 429);
        let text = r.text().await.unwrap();
        if text.contains("tokens_per_minute") {
            break;
        }
        assert!(text.contains("max_concurrent_requests"), "{text}");
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy to Redis that the test can cut and restore.
struct CuttableProxy {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl CuttableProxy {
    async fn start(port: u16) -> CuttableProxy {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind(format!("127.0.0.1:{port}").parse().unwrap())
            .unwrap();
        let listener = sock.listen(64).unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_string();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        CuttableProxy {
            port,
            task: Some(task),
        }
    }

    /// Closes the listener and every proxied connection.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_falls_back_to_local_state_and_recovers() {
    let mut proxy = CuttableProxy::start(0).await;
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let p = Pool::start(PoolSpec {
        keys: &[("bad", "fault-401"), ("good", "sk-good")],
        state_url: Some(url),
        ..Default::default()
    })
    .await;
    let health = || async {
        reqwest::get(p.relay.data("/healthz"))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(health().await["state"]["status"], "ok");
    assert_eq!(p.call().await.status(), 200);

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Still serving, on in-process state.
    for _ in 0..3 {
        assert_eq!(p.call().await.status(), 200);
    }
    let h = health().await;
    assert_eq!(h["status"], "ok", "the data plane stays healthy: {h}");
    assert_eq!(h["state"]["status"], "degraded", "{h}");
    assert_eq!(
        p.relay.logs().matches("Redis is unreachable").count(),
        1,
        "logged once:\n{}",
        p.relay.logs()
    );

    // Redis returns: relay goes back to it.
    let _back = CuttableProxy::start(proxy.port).await;
    let t = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if health().await["state"]["status"] == "ok" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "never reconnected:\n{}",
            p.relay.logs()
        );
    }
    assert_eq!(p.call().await.status(), 200);
    p.relay.wait_log("Redis is reachable again");
}

#[tokio::test]
async fn exhaustion_is_the_seeds_503_without_calling_upstream_in_process() {
    exhaustion_is_the_seeds_503_without_calling_upstream(None).await;
}

#[tokio::test]
async fn exhaustion_is_the_seeds_503_without_calling_upstream_with_redis() {
    exhaustion_is_the_seeds_503_without_calling_upstream(Some(redis_url())).await;
}

#[tokio::test]
async fn breakers_heal_after_the_cooldown_in_process() {
    breakers_heal_after_the_cooldown(None).await;
}

#[tokio::test]
async fn breakers_heal_after_the_cooldown_with_redis() {
    breakers_heal_after_the_cooldown(Some(redis_url())).await;
}

#[tokio::test]
async fn concurrency_and_token_limits_answer_429_in_the_callers_protocol_in_process() {
    concurrency_and_token_limits_answer_429_in_the_callers_protocol(None).await;
}

#[tokio::test]
async fn concurrency_and_token_limits_answer_429_in_the_callers_protocol_with_redis() {
    concurrency_and_token_limits_answer_429_in_the_callers_protocol(Some(redis_url())).await;
}

#[tokio::test]
async fn a_binding_that_cannot_express_the_request_is_skipped_for_one_that_can() {
    let mock = MockUpstream::start().await;
    let base = mock.base_url();
    let yaml = format!(
        "kind: Host\nname: ant\nbase_url: {base}\nkeys: [{{name: k, env: RELAY_TEST_A}}]\n---\n\
         kind: Host\nname: oai\nbase_url: {base}\nkeys: [{{name: k, env: RELAY_TEST_O}}]\n---\n\
         kind: Model\nname: m\n---\n\
         kind: Binding\nname: m-ant\nmodel: m\nhost: ant\nadapter: anthropic\nupstream: up-ant\npriority: 0\n---\n\
         kind: Binding\nname: m-oai\nmodel: m\nhost: oai\nadapter: openai\nupstream: up-oai\npriority: 1\n---\n\
         kind: Policy\nname: default\nmodels: [\"*\"]\n"
    );
    let cfg = TempConfig::new(&[("all.yaml", &yaml)]);
    let (_, key) = mint_key(&cfg.data_dir(), &Db::Sqlite, "default");
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_TEST_A", "sk-a")
        .env("RELAY_TEST_O", "sk-o")
        .start();
    // `n: 2` has no Anthropic equivalent: the openai binding serves it.
    let body = json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "hi"}]});
    let r = relay
        .http
        .post(relay.data("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.requests().last().unwrap().body["model"], "up-oai");
    // Without the openai binding it is the translation's 400.
    cfg.write(
        "all.yaml",
        &yaml.replace("priority: 1", "priority: 1\nenabled: false"),
    );
    let t = Instant::now();
    loop {
        let r = relay
            .http
            .post(relay.data("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        if r.status() == 400 {
            assert!(r.text().await.unwrap().contains("`n`"));
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "config change not applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
