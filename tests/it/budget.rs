//! Policy budgets: a relay key that has spent its policy's USD for the
//! period gets 429 `budget_exceeded` until the period ends; spend comes
//! from the usage records, so it survives a restart.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

const CAPPED: &str =
    "kind: Policy\nname: capped\nmodels: [\"*\"]\nbudget: { usd: 0.00001, period: day }\n";

fn chat() -> Value {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": "spend a little"}]})
}

/// Sends calls until one is refused (10 s at most); the refusal.
async fn until_refused(s: &Stack, key: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.post("/v1/chat/completions", Some(key), chat()).await;
        if r.status() != 200 {
            return r;
        }
        assert!(Instant::now() < deadline, "budget never enforced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn budget_is_enforced(db: Db) {
    let s = Stack::start(db).await;
    s.cfg.write("capped.yaml", CAPPED);
    s.relay
        .wait_status("capped policy loaded", |st| st["objects"]["policies"] == 3)
        .await;
    let (capped_id, capped) = s.mint("capped").await;

    let first = s.post("/v1/chat/completions", Some(&capped), chat()).await;
    assert_eq!(first.status(), 200, "under budget");
    let spent = usage_for(&s.relay, &capped_id, 1).await["totals"]["cost_usd"]
        .as_f64()
        .unwrap();
    assert!(spent > 0.0, "the mock's usage has a cost");

    let refused = until_refused(&s, &capped).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=86_400).contains(&retry),
        "until the end of the UTC day: {retry}"
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("policy `capped` budget") && msg.contains("this day"),
        "{msg}"
    );
    assert!(msg.contains("raise `budget.usd`"), "{msg}");
    // Anthropic callers get it in their shape.
    let r = s
        .post(
            "/v1/messages",
            Some(&capped),
            json!({"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // Keys of other policies are untouched.
    let other = s.post("/v1/chat/completions", Some(&s.key), chat()).await;
    assert_eq!(other.status(), 200);

    // Spend is read back from the store: a restarted relay still refuses.
    let Stack {
        relay,
        cfg,
        db,
        mock,
        ..
    } = s;
    drop(relay);
    let mut b = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_TEST_OPENAI_KEY", "sk-upstream-openai")
        .env("RELAY_TEST_ANTHROPIC_KEY", "sk-upstream-anthropic");
    if let Some(url) = db.url() {
        b = b.env("RELAY_DATABASE_URL", url);
    }
    let relay = b.start();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = relay
            .http
            .post(relay.data("/v1/chat/completions"))
            .bearer_auth(&capped)
            .json(&chat())
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            break;
        }
        assert!(Instant::now() < deadline, "restart forgot the spend");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(mock);
}

#[tokio::test]
async fn budget_is_enforced_on_sqlite() {
    budget_is_enforced(Db::Sqlite).await;
}

#[tokio::test]
async fn budget_is_enforced_on_postgres() {
    budget_is_enforced(Db::Postgres(PgDatabase::create())).await;
}
