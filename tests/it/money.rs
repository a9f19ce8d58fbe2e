//! Money and limits against clients who hang up, and under concurrency
//! (issue 10 item 5): a client that leaves mid-stream is charged the
//! upstream's usage when it arrives within the grace read (1 s, 64 KiB),
//! else an estimate marked `estimated`; budgets and `tokens_per_minute`
//! reserve an estimate at admission and settle it at the end, shared by
//! replicas through the state backend.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::failover::redis_url;
use crate::support::*;

/// Sends a streamed call, reads its first chunk, then hangs up.
async fn hang_up_after_first_chunk(relay: &Relay, path: &str, key: &str, body: &Value) {
    let mut r = relay
        .http
        .post(relay.data(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(r);
}

fn openai_stream(text: &str) -> Value {
    json!({"model": "gpt-test", "stream": true,
           "messages": [{"role": "user", "content": text}]})
}

fn anthropic_stream(text: &str) -> Value {
    json!({"model": "claude-test", "stream": true, "max_tokens": 300,
           "messages": [{"role": "user", "content": text}]})
}

/// Bytes / 4 rounded up: relay's input estimate for a body.
fn input_estimate(body: &Value) -> i64 {
    (serde_json::to_vec(body).unwrap().len() as i64 + 3) / 4
}

/// The only record of `key_id` once it is there.
async fn only_record(relay: &Relay, key_id: &str) -> Value {
    let v = usage_for(relay, key_id, 1).await;
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{v}");
    records[0].clone()
}

async fn usage_within_the_grace_is_recorded(s: &Stack) {
    // OpenAI: the usage chunk comes 300 ms after the client left.
    let (id, key) = s.mint("default").await;
    let body = openai_stream("[[fault:usage-late:300]] a few words here");
    hang_up_after_first_chunk(&s.relay, "/v1/chat/completions", &key, &body).await;
    let r = only_record(&s.relay, &id).await;
    assert_eq!(r["status"], 499, "{r}");
    assert_eq!(r["estimated"], false, "{r}");
    assert_eq!(r["output_tokens"], 5, "the upstream's count: {r}");
    assert!(r["input_tokens"].as_i64().unwrap() >= 10, "{r}");
    assert!(r["cost_usd"].as_f64().unwrap() > 0.0, "{r}");

    // Anthropic: message_delta (final output count) comes late.
    let (id, key) = s.mint("default").await;
    let body = anthropic_stream("[[fault:usage-late:300]] a few words here");
    hang_up_after_first_chunk(&s.relay, "/v1/messages", &key, &body).await;
    let r = only_record(&s.relay, &id).await;
    assert_eq!(r["status"], 499, "{r}");
    assert_eq!(r["estimated"], false, "{r}");
    assert_eq!(
        r["output_tokens"], 5,
        "message_delta's count, not message_start's 1: {r}"
    );
    assert_eq!(r["input_tokens"], 10, "{r}");
}

async fn without_usage_an_estimate_is_recorded(s: &Stack) {
    // OpenAI: the usage would come 5 s later; relay waits about 1 s.
    let (id, key) = s.mint("default").await;
    let body = openai_stream("[[fault:usage-late:5000]] a few words here");
    let left = Instant::now();
    hang_up_after_first_chunk(&s.relay, "/v1/chat/completions", &key, &body).await;
    let r = only_record(&s.relay, &id).await;
    assert!(
        left.elapsed() < Duration::from_millis(3_500),
        "the grace read is bounded: {:?}",
        left.elapsed()
    );
    assert_eq!(r["status"], 499, "{r}");
    assert_eq!(r["estimated"], true, "{r}");
    assert_eq!(r["input_tokens"], input_estimate(&body), "bytes / 4: {r}");
    let out = r["output_tokens"].as_i64().unwrap();
    // "echo: [[fault:usage-late:5000]] a few words here" in 3 deltas.
    assert!(
        (3..=20).contains(&out),
        "counted from the deltas relayed: {r}"
    );
    assert!(r["cost_usd"].as_f64().unwrap() > 0.0, "{r}");

    // Anthropic: input from message_start, output counted (not 1).
    let (id, key) = s.mint("default").await;
    let body = anthropic_stream("[[fault:usage-late:5000]] a few words here");
    hang_up_after_first_chunk(&s.relay, "/v1/messages", &key, &body).await;
    let r = only_record(&s.relay, &id).await;
    assert_eq!(r["estimated"], true, "{r}");
    assert_eq!(r["input_tokens"], 10, "message_start's count: {r}");
    let out = r["output_tokens"].as_i64().unwrap();
    assert!((3..=20).contains(&out), "{r}");

    // A stream that stalls before its first byte: nothing relayed, so the
    // request's bound is charged.
    let (id, key) = s.mint("default").await;
    let body = json!({"model": "gpt-test", "stream": true, "max_tokens": 77,
                      "messages": [{"role": "user", "content": "[[fault:slow:4000]] x"}]});
    let call = s
        .relay
        .http
        .post(s.relay.data("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(call.is_err(), "the client gave up");
    let r = only_record(&s.relay, &id).await;
    assert_eq!(r["status"], 499, "{r}");
    assert_eq!(r["estimated"], true, "{r}");
    assert_eq!(r["output_tokens"], 77, "max_tokens: {r}");
    assert_eq!(r["input_tokens"], input_estimate(&body), "{r}");
}

#[tokio::test]
async fn client_hang_ups_are_charged_on_sqlite() {
    let s = Stack::start(Db::Sqlite).await;
    usage_within_the_grace_is_recorded(&s).await;
    without_usage_an_estimate_is_recorded(&s).await;
}

/// Cross-protocol streams (an OpenAI client on an Anthropic binding and the
/// reverse) are charged by the same rules.
#[tokio::test]
async fn translated_stream_hang_ups_are_charged_the_same() {
    let s = Stack::start(Db::Sqlite).await;
    let openai_on_anthropic = |text: &str| {
        json!({"model": "claude-test", "stream": true,
               "messages": [{"role": "user", "content": text}]})
    };
    let anthropic_on_openai = |text: &str| {
        json!({"model": "gpt-test", "stream": true, "max_tokens": 300,
               "messages": [{"role": "user", "content": text}]})
    };
    let cases = [
        (
            "/v1/chat/completions",
            openai_on_anthropic("[[fault:usage-late:300]] a few words here"),
        ),
        (
            "/v1/messages",
            anthropic_on_openai("[[fault:usage-late:300]] a few words here"),
        ),
    ];
    for (path, body) in &cases {
        let (id, key) = s.mint("default").await;
        hang_up_after_first_chunk(&s.relay, path, &key, body).await;
        let r = only_record(&s.relay, &id).await;
        assert_eq!(r["status"], 499, "{path}: {r}");
        assert_eq!(r["estimated"], false, "{path}: {r}");
        assert_eq!(r["output_tokens"], 5, "{path}: the upstream's count: {r}");
    }
    let cases = [
        (
            "/v1/chat/completions",
            openai_on_anthropic("[[fault:usage-late:5000]] a few words here"),
        ),
        (
            "/v1/messages",
            anthropic_on_openai("[[fault:usage-late:5000]] a few words here"),
        ),
    ];
    for (path, body) in &cases {
        let (id, key) = s.mint("default").await;
        hang_up_after_first_chunk(&s.relay, path, &key, body).await;
        let r = only_record(&s.relay, &id).await;
        assert_eq!(r["estimated"], true, "{path}: {r}");
        let out = r["output_tokens"].as_i64().unwrap();
        assert!((3..=20).contains(&out), "{path}: counted: {r}");
        assert!(r["input_tokens"].as_i64().unwrap() >= 10, "{path}: {r}");
    }
}

#[tokio::test]
async fn client_hang_ups_are_charged_on_postgres_with_redis() {
    let redis = redis_url();
    let s = Stack::start_with(Db::Postgres(PgDatabase::create()), |b| {
        b.env("RELAY_STATE_URL", &redis)
    })
    .await;
    usage_within_the_grace_is_recorded(&s).await;
    without_usage_an_estimate_is_recorded(&s).await;
}

const POLICY: &str =
    "kind: Policy\nname: capped\nmodels: [\"*\"]\nbudget: { usd: USD, period: day }\n";

async fn capped(s: &Stack, usd: f64) {
    s.cfg
        .write("capped.yaml", &POLICY.replace("USD", &usd.to_string()));
    s.relay
        .wait_status("capped policy loaded", |st| st["objects"]["policies"] == 3)
        .await;
}

/// Total cost and the largest single cost of a key's records.
async fn spend(relay: &Relay, key_id: &str, want: usize) -> (f64, f64) {
    let v = usage_for(relay, key_id, want).await;
    let max = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .fold(0.0, f64::max);
    (v["totals"]["cost_usd"].as_f64().unwrap(), max)
}

/// Calls that hang up before the usage, one after another (alternating
/// between `relays`), are charged until the budget refuses them.
async fn hang_ups_against_a_budget(relays: &[&Relay], key: &str, key_id: &str) {
    let body = openai_stream("[[fault:usage-late:5000]] spend without paying");
    let mut calls = 0;
    loop {
        let relay = relays[calls % relays.len()];
        let mut r = relay
            .http
            .post(relay.data("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            break;
        }
        assert_eq!(r.status(), 200);
        r.chunk().await.unwrap();
        drop(r);
        calls += 1;
        assert!(
            calls <= 8,
            "8 hung-up calls and the $0.0001 budget still admits"
        );
        // Let the grace read finish and the charge settle.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
    }
    let (total, max) = spend(relays[0], key_id, calls).await;
    assert!(total >= 0.0001, "refused only once spent: {total}");
    assert!(total <= 0.0001 + max, "overshoot at most one call: {total}");
}

#[tokio::test]
async fn clients_that_hang_up_cannot_pass_a_budget_on_sqlite() {
    let s = Stack::start(Db::Sqlite).await;
    capped(&s, 0.0001).await;
    let (id, key) = s.mint("capped").await;
    hang_ups_against_a_budget(&[&s.relay], &key, &id).await;
}

#[tokio::test]
async fn clients_that_hang_up_cannot_pass_a_budget_across_replicas() {
    let (s, b) = two_replicas().await;
    capped(&s, 0.0001).await;
    let (id, key) = s.mint("capped").await;
    b_knows(&b, &key).await;
    hang_ups_against_a_budget(&[&s.relay, &b], &key, &id).await;
}

/// Relay A (the stack) and B on one PostgreSQL and one Redis.
async fn two_replicas() -> (Stack, Relay) {
    let redis = redis_url();
    let s = Stack::start_with(Db::Postgres(PgDatabase::create()), |b| {
        b.env("RELAY_STATE_URL", &redis)
    })
    .await;
    let b = RelayBuilder::new(&s.cfg.dir(), &s.cfg.root.path().join("data-b"))
        .env("RELAY_TEST_OPENAI_KEY", "sk-upstream-openai")
        .env("RELAY_TEST_ANTHROPIC_KEY", "sk-upstream-anthropic")
        .env("RELAY_STATE_URL", &redis)
        .env("RELAY_DATABASE_URL", s.db.url().unwrap())
        .start();
    (s, b)
}

/// Waits until B's key table has the key minted on A and B has the
/// `capped` policy.
async fn b_knows(b: &Relay, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = b
            .http
            .get(b.data("/v1/models"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "B never learned the key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.wait_status("capped policy loaded", |st| st["objects"]["policies"] == 3)
        .await;
}

/// K parallel slow calls against a budget of about three calls' cost: the
/// spend stays within the budget plus one call.
async fn parallel_calls(relays: &[&Relay], key: &str, key_id: &str, usd: f64) {
    let body = json!({"model": "gpt-test", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "[[fault:slow:800]] in parallel"}]});
    let calls = (0..8).map(|i| {
        let relay = relays[i % relays.len()];
        let body = body.clone();
        async move {
            let r = relay
                .http
                .post(relay.data("/v1/chat/completions"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert!(ok >= 1, "{statuses:?}");
    assert!(
        ok < 8,
        "the budget admitted every parallel call: {statuses:?}"
    );
    for (status, text) in &answers {
        assert!(*status == 200 || *status == 429, "{status} {text}");
        if *status == 429 {
            assert!(text.contains("budget_exceeded"), "{text}");
        }
    }
    let (total, max) = spend(relays[0], key_id, ok).await;
    assert!(
        total <= usd + max,
        "spent ${total} of ${usd} with {ok} of 8 admitted: more than one call over"
    );
}

#[tokio::test]
async fn parallel_calls_overshoot_a_budget_by_one_call_at_most_on_sqlite() {
    let s = Stack::start(Db::Sqlite).await;
    // The mock's usage costs $0.000021 on gpt-test: about three calls.
    let usd = 0.00006;
    capped(&s, usd).await;
    let (id, key) = s.mint("capped").await;
    parallel_calls(&[&s.relay], &key, &id, usd).await;
}

#[tokio::test]
async fn parallel_calls_overshoot_a_budget_by_one_call_at_most_across_replicas() {
    let (s, b) = two_replicas().await;
    let usd = 0.00006;
    capped(&s, usd).await;
    let (id, key) = s.mint("capped").await;
    b_knows(&b, &key).await;
    parallel_calls(&[&s.relay, &b], &key, &id, usd).await;
}

/// `tokens_per_minute` reserves the output bound too (max_tokens, else the
/// model's max_output_tokens, else 4096), so parallel calls without
/// `max_tokens` cannot all start on a small input estimate.
#[tokio::test]
async fn tokens_per_minute_reserves_the_output_bound() {
    let s = Stack::start(Db::Sqlite).await;
    s.cfg.write(
        "tpm.yaml",
        "kind: Policy\nname: tpm\nmodels: [\"*\"]\nlimits: { tokens_per_minute: 9000 }\n",
    );
    s.relay
        .wait_status("tpm policy loaded", |st| st["objects"]["policies"] == 3)
        .await;
    let (_, key) = s.mint("tpm").await;
    clear_of_minute_boundary().await;
    let body = json!({"model": "gpt-test",
                      "messages": [{"role": "user", "content": "[[fault:slow:800]] no max_tokens"}]});
    let calls = (0..5).map(|_| s.post("/v1/chat/completions", Some(&key), body.clone()));
    let statuses: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(
        ok, 2,
        "two reservations of about 4,100 fit in 9,000: {statuses:?}"
    );
}
