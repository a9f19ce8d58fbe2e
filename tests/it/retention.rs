//! Usage retention: `RELAY_USAGE_RETENTION` prunes old usage records, never
//! below the longest budget period in use.

use std::time::{Duration, Instant};

use relay::store::{Store, UsageQuery, UsageRow};

use crate::support::{RelayBuilder, TempConfig, MINIMAL};

const DAY: i64 = 86_400_000;

async fn seeded(cfg: &TempConfig) -> Store {
    let store = Store::open(None, &cfg.data_dir()).await.unwrap();
    let now = relay::store::now_ms();
    let rows: Vec<UsageRow> = [100, 10, 0]
        .iter()
        .map(|days| UsageRow {
            at: now - days * DAY,
            request_id: format!("r-{days}"),
            model: "m1".into(),
            ..UsageRow::default()
        })
        .collect();
    store.insert_usage(&rows).await.unwrap();
    store
}

async fn wait_for_count(store: &Store, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = store
            .usage_totals(&UsageQuery::default())
            .await
            .unwrap()
            .requests;
        if n == want {
            return;
        }
        assert!(Instant::now() < deadline, "{n} usage records, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn old_usage_records_are_pruned_at_start() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let store = seeded(&cfg).await;
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_USAGE_RETENTION", "7d")
        .start();
    wait_for_count(&store, 1).await;
    relay.wait_log("pruned old usage records");
}

#[tokio::test]
async fn retention_never_drops_records_a_budget_still_counts() {
    let policy = "kind: Policy\nname: capped\nmodels: [\"*\"]\nbudget: { usd: 5, period: month }\n";
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL), ("budget.yaml", policy)]);
    let store = seeded(&cfg).await;
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_USAGE_RETENTION", "1d")
        .start();
    relay.wait_log("shorter than the longest budget period");
    // The 100-day-old record goes; the 10-day-old one is still this month's.
    wait_for_count(&store, 2).await;
}

#[tokio::test]
async fn without_retention_nothing_is_deleted() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let store = seeded(&cfg).await;
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir()).start();
    assert_eq!(
        reqwest::get(relay.data("/readyz")).await.unwrap().status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for_count(&store, 3).await;
}
