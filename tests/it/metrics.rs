//! `GET /metrics`: real calls through relay (a success after failover, a
//! stream, an upstream 500), a rejected and an unchanged reload, then the
//! scrape, asserted series by series.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::failover::redis_url;
use crate::mock_upstream::MockUpstream;
use crate::support::*;

/// A unique label so tests sharing Redis never share a breaker.
fn label() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "metrics-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Host `pool`: key `limited` (always 429) before key `good`; host
/// `broken`: key `only` (always 500) and key `missing` (variable unset).
fn config(base: &str) -> String {
    format!(
        "kind: Host\nname: pool\nbase_url: {base}\ntimeout: 2s\nkeys:\n  - name: limited\n    env: RELAY_TEST_M_LIMITED\n  - name: good\n    env: RELAY_TEST_M_GOOD\n---\n\
         kind: Host\nname: broken\nbase_url: {base}\ntimeout: 2s\nkeys:\n  - name: only\n    env: RELAY_TEST_M_BROKEN\n  - name: missing\n    env: RELAY_TEST_M_UNSET\n---\n\
         kind: Model\nname: m\n---\nkind: Binding\nname: m-pool\nmodel: m\nhost: pool\nadapter: openai\nupstream: up\n---\n\
         kind: Model\nname: b\n---\nkind: Binding\nname: b-broken\nmodel: b\nhost: broken\nadapter: openai\nupstream: up\n---\n\
         kind: Policy\nname: default\nmodels: [\"*\"]\n"
    )
}

/// A scrape: every sample as series → value.
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(meta) = line.strip_prefix('#') {
                let words: Vec<&str> = meta.split_whitespace().collect();
                assert!(
                    matches!(words.first(), Some(&"HELP") | Some(&"TYPE")),
                    "unexpected comment line {line:?}"
                );
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("sample {line:?} has no numeric value"));
            assert!(
                series.starts_with("relay_"),
                "{series} is not a relay metric"
            );
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "{series} appears twice"
            );
        }
        Scrape { text, samples }
    }

    fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    #[track_caller]
    fn assert(&self, series: &str, want: f64) {
        assert_eq!(
            self.get(series),
            Some(want),
            "{series}\nscrape:\n{}",
            self.text
        );
    }
}

async fn scrape(relay: &Relay) -> Scrape {
    let r = relay
        .http
        .get(relay.control("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Scrape::parse(r.text().await.unwrap())
}

/// Scrapes until `series` reaches `want` (a stream's call is recorded when
/// its reply ends, just after the client has read it).
async fn scrape_until(relay: &Relay, series: &str, want: f64) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(relay).await;
        if s.get(series) == Some(want) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scenario(state_url: Option<String>) {
    let mock = MockUpstream::start().await;
    let tag = label();
    let cfg = TempConfig::new(&[("all.yaml", &config(&mock.base_url()))]);
    let (_, key) = mint_key(&cfg.data_dir(), &Db::Sqlite, "default");
    let secrets = [
        ("RELAY_TEST_M_LIMITED", format!("fault-429#{tag}")),
        ("RELAY_TEST_M_GOOD", format!("sk-good#{tag}")),
        ("RELAY_TEST_M_BROKEN", format!("fault-500#{tag}")),
    ];
    let mut b = RelayBuilder::new(&cfg.dir(), &cfg.data_dir()).env_remove("RELAY_TEST_M_UNSET");
    for (var, value) in &secrets {
        b = b.env(var, value);
    }
    if let Some(url) = &state_url {
        b = b.env("RELAY_STATE_URL", url);
    }
    let relay = b.start();
    let chat = |body: serde_json::Value| {
        relay
            .http
            .post(relay.data("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let msgs = json!([{"role": "user", "content": "hi"}]);

    // `limited` answers 429 (its breaker opens), `good` serves the call.
    let r = chat(json!({"model": "m", "messages": msgs})).await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    // A stream, on `good` alone now.
    let r = chat(json!({"model": "m", "messages": msgs, "stream": true}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    // An upstream 500 on the only usable key of `broken` goes to the client.
    let r = chat(json!({"model": "b", "messages": msgs})).await.unwrap();
    assert_eq!(r.status(), 500);
    r.bytes().await.unwrap();

    let s = scrape_until(
        &relay,
        r#"relay_requests_total{model="m",binding="m-pool",status="200"}"#,
        2.0,
    )
    .await;
    s.assert(
        r#"relay_requests_total{model="m",binding="m-pool",status="200"}"#,
        2.0,
    );
    s.assert(
        r#"relay_requests_total{model="b",binding="b-broken",status="500"}"#,
        1.0,
    );
    let requests: Vec<_> = s
        .samples
        .keys()
        .filter(|k| k.starts_with("relay_requests_total"))
        .collect();
    assert_eq!(requests.len(), 2, "{requests:?}");

    // Latency: two calls on m; three upstream attempts answered for m
    // (the 429, then `good` twice), one for b.
    s.assert(
        r#"relay_request_duration_seconds_count{model="m",binding="m-pool"}"#,
        2.0,
    );
    s.assert(
        r#"relay_request_duration_seconds_bucket{model="m",binding="m-pool",le="+Inf"}"#,
        2.0,
    );
    assert!(
        s.get(r#"relay_request_duration_seconds_sum{model="m",binding="m-pool"}"#)
            .unwrap()
            > 0.0
    );
    s.assert(
        r#"relay_upstream_duration_seconds_count{model="m",binding="m-pool"}"#,
        3.0,
    );
    s.assert(
        r#"relay_upstream_duration_seconds_count{model="b",binding="b-broken"}"#,
        1.0,
    );

    // Tokens: the mock reports 12 prompt tokens (2 cached) and 5 completion
    // tokens per call; input excludes the cached ones.
    for (kind, per_call) in [("input", 10.0), ("output", 5.0), ("cache_read", 2.0)] {
        s.assert(
            &format!(r#"relay_tokens_total{{model="m",binding="m-pool",kind="{kind}"}}"#),
            2.0 * per_call,
        );
    }
    assert_eq!(
        s.get(r#"relay_tokens_total{model="m",binding="m-pool",kind="cache_write"}"#),
        None
    );

    // Upstream errors by key name and class.
    s.assert(
        r#"relay_upstream_errors_total{host="pool",key="limited",class="rate_limit"}"#,
        1.0,
    );
    s.assert(
        r#"relay_upstream_errors_total{host="broken",key="only",class="server_error"}"#,
        1.0,
    );
    let errors = s
        .samples
        .keys()
        .filter(|k| k.starts_with("relay_upstream_errors_total"))
        .count();
    assert_eq!(errors, 2);

    // Breakers: the 429 opened `limited`; one 500 stays under the threshold.
    let breaker = |host: &str, key: &str, state: &str| {
        format!(r#"relay_breaker_state{{host="{host}",key="{key}",state="{state}"}}"#)
    };
    s.assert(&breaker("pool", "limited", "open"), 1.0);
    s.assert(&breaker("pool", "limited", "closed"), 0.0);
    s.assert(&breaker("pool", "limited", "half_open"), 0.0);
    s.assert(&breaker("pool", "good", "closed"), 1.0);
    s.assert(&breaker("pool", "good", "open"), 0.0);
    s.assert(&breaker("broken", "only", "closed"), 1.0);
    s.assert(&breaker("broken", "missing", "unavailable"), 1.0);
    s.assert(&breaker("broken", "missing", "closed"), 0.0);

    // Key names only: no value, no hash of one.
    for (_, value) in &secrets {
        assert!(!s.text.contains(value.as_str()), "a key value leaked");
    }
    assert!(!s.text.contains("fault-") && !s.text.contains("sk-"));

    // Config: nothing reloaded yet; the served revision.
    let status = relay.status().await;
    let revision = status["revision"]["content_hash"].as_str().unwrap();
    s.assert(
        &format!(r#"relay_config_info{{revision="{revision}"}}"#),
        1.0,
    );
    for outcome in ["applied", "rejected", "unchanged"] {
        s.assert(
            &format!(r#"relay_config_reloads_total{{outcome="{outcome}"}}"#),
            0.0,
        );
    }
    s.assert("relay_config_last_reload_rejected", 0.0);
    assert!(s.text.contains(r#"relay_build_info{version=""#));

    // A rejected reload (a binding to a host that does not exist).
    cfg.write(
        "bad.yaml",
        "kind: Binding\nname: m-nowhere\nmodel: m\nhost: nowhere\nadapter: openai\nupstream: up\n",
    );
    assert_eq!(relay.admin_post("/api/config/reload").await.status(), 422);
    let s = scrape(&relay).await;
    s.assert(r#"relay_config_reloads_total{outcome="rejected"}"#, 1.0);
    s.assert(r#"relay_config_reloads_total{outcome="applied"}"#, 0.0);
    s.assert("relay_config_last_reload_rejected", 1.0);
    s.assert(
        &format!(r#"relay_config_info{{revision="{revision}"}}"#),
        1.0,
    );

    // Undone: the watcher finds what is already served (unchanged).
    cfg.remove("bad.yaml");
    let status = relay
        .wait_status("the unchanged reload", |s| {
            s["reloads_unchanged"].as_u64() >= Some(1) && s["last_attempt_failed"] == false
        })
        .await;
    let unchanged = status["reloads_unchanged"].as_u64().unwrap() as f64;
    // A forced reload swaps in the same content (applied).
    assert_eq!(relay.admin_post("/api/config/reload").await.status(), 200);
    let s = scrape(&relay).await;
    s.assert(r#"relay_config_reloads_total{outcome="applied"}"#, 1.0);
    s.assert(r#"relay_config_reloads_total{outcome="rejected"}"#, 1.0);
    s.assert(
        r#"relay_config_reloads_total{outcome="unchanged"}"#,
        unchanged,
    );
    s.assert("relay_config_last_reload_rejected", 0.0);
    s.assert(
        &format!(r#"relay_config_info{{revision="{revision}"}}"#),
        1.0,
    );
}

#[tokio::test]
async fn metrics_report_calls_errors_breakers_and_reloads_in_process() {
    scenario(None).await;
}

#[tokio::test]
async fn metrics_report_calls_errors_breakers_and_reloads_with_redis() {
    scenario(Some(redis_url())).await;
}

#[tokio::test]
async fn metrics_need_the_admin_token() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    let url = relay.control("/metrics");
    let r = relay.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = relay
        .http
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let s = scrape(&relay).await;
    // No calls yet: only what is observed at scrape time.
    assert!(!s.text.contains("relay_requests_total"), "{}", s.text);
    s.assert(
        r#"relay_breaker_state{host="mock",key="primary",state="closed"}"#,
        1.0,
    );
    assert!(s
        .text
        .contains("# TYPE relay_config_reloads_total counter\n"));
    assert!(s.text.contains("# TYPE relay_breaker_state gauge\n"));
}
