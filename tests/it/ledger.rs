//! The usage ledger through a real relay: the same upstream answer costs
//! the same whether relay passes it through or translates it, and throttled
//! calls are recorded with their reason, merged so a flood stays a few rows
//! (issue 10, items 6 and 7).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mock_upstream::CACHE_WRITE_MARKER;
use crate::support::*;

const POLICIES: &str = r#"
kind: Policy
name: rpm
models: ["*"]
limits: { requests_per_minute: 1 }
---
kind: Policy
name: tpm
models: ["*"]
limits: { tokens_per_minute: 100 }
---
kind: Policy
name: one-at-a-time
models: ["*"]
limits: { max_concurrent_requests: 1 }
---
kind: Policy
name: broke
models: ["*"]
budget: { usd: 0, period: day }
"#;

fn chat(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream,
           "messages": [{"role": "user", "content": text}]})
}

fn message(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 50,
           "messages": [{"role": "user", "content": text}]})
}

/// (streamed, input, output, cache read, cache write, cost) of each record,
/// sorted, so two keys' records compare as sets.
fn ledger(usage: &Value) -> Vec<(bool, i64, i64, i64, i64, String)> {
    let mut rows: Vec<_> = usage["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], 200, "{r}");
            (
                r["streamed"].as_bool().unwrap(),
                r["input_tokens"].as_i64().unwrap(),
                r["output_tokens"].as_i64().unwrap(),
                r["cache_read_tokens"].as_i64().unwrap(),
                r["cache_write_tokens"].as_i64().unwrap(),
                // Exact: the same counts at the same prices.
                format!("{:e}", r["cost_usd"].as_f64().unwrap()),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Calls `model` twice (whole and streamed) in each client protocol, each
/// protocol with its own key; returns the two keys' ledgers.
async fn both_ways(
    s: &Stack,
    model: &str,
    text: &str,
) -> [Vec<(bool, i64, i64, i64, i64, String)>; 2] {
    let (openai_id, openai_key) = s.mint("default").await;
    let (anthropic_id, anthropic_key) = s.mint("default").await;
    for stream in [false, true] {
        let r = s
            .post(
                "/v1/chat/completions",
                Some(&openai_key),
                chat(model, text, stream),
            )
            .await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        let r = s
            .post(
                "/v1/messages",
                Some(&anthropic_key),
                message(model, text, stream),
            )
            .await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    [
        ledger(&usage_for(&s.relay, &openai_id, 2).await),
        ledger(&usage_for(&s.relay, &anthropic_id, 2).await),
    ]
}

#[tokio::test]
async fn passthrough_and_translation_record_the_same_usage_and_cost() {
    let s = Stack::start(Db::Sqlite).await;

    // An anthropic binding: Anthropic clients pass through, OpenAI clients
    // are translated. Mock: input 10, cache read 2, cache write 1, output 5.
    let [translated, passed] = both_ways(&s, "claude-test", "hello").await;
    assert_eq!(translated, passed);
    assert_eq!((passed[0].1, passed[0].3, passed[0].4), (10, 2, 1));

    // An openai binding whose server also reports cache writes: OpenAI
    // clients pass through, Anthropic clients are translated. Mock: prompt
    // 15 of which 2 cache reads and 3 cache writes, output 5.
    let text = format!("hello {CACHE_WRITE_MARKER}");
    let [passed, translated] = both_ways(&s, "gpt-test", &text).await;
    assert_eq!(passed, translated);
    assert_eq!(
        passed
            .iter()
            .map(|r| (r.1, r.2, r.3, r.4))
            .collect::<Vec<_>>(),
        [(10, 5, 2, 3), (10, 5, 2, 3)],
        "cache writes are not billed as input"
    );
}

/// Polls the usage API until `key_id` has a throttled record; that record.
async fn throttled_record(relay: &Relay, key_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = relay
            .admin_get(&format!("/api/usage?key_id={key_id}"))
            .await;
        if let Some(r) = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| !r["reason"].is_null())
        {
            assert!(v["totals"]["throttled"].as_i64().unwrap() >= 1, "{v}");
            return r.clone();
        }
        assert!(Instant::now() < deadline, "no throttled record: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn throttled_calls_are_recorded_with_their_reason() {
    let s = Stack::start(Db::Sqlite).await;
    s.cfg.write("ledger.yaml", POLICIES);
    s.relay
        .wait_status("ledger policies loaded", |st| {
            st["objects"]["policies"] == 6
        })
        .await;
    let body = || chat("gpt-test", "hi", false);
    let mut cases = Vec::new();
    clear_of_minute_boundary().await;

    // requests_per_minute: the second call of the minute.
    let (id, key) = s.mint("rpm").await;
    assert_eq!(
        s.post("/v1/chat/completions", Some(&key), body())
            .await
            .status(),
        200
    );
    assert_eq!(
        s.post("/v1/chat/completions", Some(&key), body())
            .await
            .status(),
        429
    );
    cases.push((id, "rate_limit_requests"));

    // tokens_per_minute: the first call takes the minute's budget.
    let (id, key) = s.mint("tpm").await;
    let mut big = body();
    big["max_tokens"] = json!(1000);
    assert_eq!(
        s.post("/v1/chat/completions", Some(&key), big.clone())
            .await
            .status(),
        200
    );
    assert_eq!(
        s.post("/v1/chat/completions", Some(&key), big)
            .await
            .status(),
        429
    );
    cases.push((id, "rate_limit_tokens"));

    // max_concurrent_requests: a second call while a slow one runs.
    let (id, key) = s.mint("one-at-a-time").await;
    let slow = {
        let req = s
            .relay
            .http
            .post(s.relay.data("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat("gpt-test", "[[fault:slow:1500]]", false));
        tokio::spawn(async move { req.send().await.unwrap().status() })
    };
    // Once the upstream has the slow call, its slot is surely taken.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s
        .mock
        .requests()
        .iter()
        .any(|r| r.body.to_string().contains("fault:slow"))
    {
        assert!(Instant::now() < deadline, "the slow call never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = s.post("/v1/chat/completions", Some(&key), body()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(slow.await.unwrap(), 200);
    cases.push((id, "concurrency"));

    // budget: `usd: 0` refuses every call.
    let (id, key) = s.mint("broke").await;
    let r = s.post("/v1/chat/completions", Some(&key), body()).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "budget_exceeded");
    cases.push((id, "budget"));

    for (id, reason) in &cases {
        let r = throttled_record(&s.relay, id).await;
        assert_eq!(r["reason"], *reason, "{r}");
        assert_eq!(r["status"], 429, "{r}");
        assert_eq!(r["calls"], 1, "{r}");
        assert_eq!(r["model"], "gpt-test", "{r}");
        assert!(r["binding"].is_null() && r["host"].is_null(), "{r}");
        for f in [
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
        ] {
            assert_eq!(r[f], 0, "{f}: {r}");
        }
        assert_eq!(r["cost_usd"], 0.0, "{r}");
    }
    // The dashboard's usage page shows them, with their reasons.
    let page = s
        .relay
        .http
        .get(s.relay.control("/usage"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (_, reason) in &cases {
        assert!(
            page.contains(&format!(r#"<span class="muted reason">{reason}</span>"#)),
            "{reason} on /usage: {page}"
        );
    }
    assert!(page.contains("throttled"), "{page}");
    // Calls that were not throttled have no reason.
    let ok = usage_for(&s.relay, &cases[0].0, 2).await;
    let reasons: Vec<&Value> = ok["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["reason"])
        .collect();
    assert_eq!(reasons.iter().filter(|r| r.is_null()).count(), 1, "{ok}");
}

#[tokio::test]
async fn a_flood_of_throttled_calls_is_a_few_rows_on_sqlite() {
    flood_is_a_few_rows(Db::Sqlite).await;
}

#[tokio::test]
async fn a_flood_of_throttled_calls_is_a_few_rows_on_postgres() {
    flood_is_a_few_rows(Db::Postgres(PgDatabase::create())).await;
}

async fn flood_is_a_few_rows(db: Db) {
    let s = Stack::start(db).await;
    s.cfg.write("ledger.yaml", POLICIES);
    s.relay
        .wait_status("ledger policies loaded", |st| {
            st["objects"]["policies"] == 6
        })
        .await;
    let (id, key) = s.mint("rpm").await;
    clear_of_minute_boundary().await;
    let body = chat("gpt-test", "hi", false);
    assert_eq!(
        s.post("/v1/chat/completions", Some(&key), body.clone())
            .await
            .status(),
        200
    );
    let mut refused = 0;
    for _ in 0..20 {
        let burst = (0..10).map(|_| s.post("/v1/chat/completions", Some(&key), body.clone()));
        for r in futures_util::future::join_all(burst).await {
            if r.status() == 429 {
                refused += 1;
            }
        }
    }
    // Only a minute boundary in the middle lets one more through.
    assert!(refused >= 199, "{refused} of 200 refused");

    // Merged rows are written when their minute ends or at shutdown.
    let Stack { relay, cfg, db, .. } = s;
    assert!(relay.stop().success());
    let store = relay::store::Store::open(db.url().as_deref(), &cfg.data_dir())
        .await
        .unwrap();
    let q = relay::store::UsageQuery {
        key_id: Some(id),
        ..Default::default()
    };
    let (totals, records) = store.usage_report(&q).await.unwrap();
    let throttled: Vec<_> = records.iter().filter(|r| r.reason.is_some()).collect();
    assert!(
        (1..=4).contains(&throttled.len()),
        "one row per key, reason and minute (plus the first of each minute): {throttled:#?}"
    );
    assert!(throttled
        .iter()
        .all(|r| r.reason.as_deref() == Some("rate_limit_requests") && r.status == 429));
    assert_eq!(throttled.iter().map(|r| r.calls.0).sum::<i64>(), refused);
    assert_eq!(totals.throttled, refused);
    assert_eq!(totals.requests, 201);
    store.close().await;
}
