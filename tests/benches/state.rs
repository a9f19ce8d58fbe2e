//! What breaker and limit checks add to a request (`cargo bench --bench
//! state`): the per-request state traffic — breaker records of a 3-key pool
//! read in one call and a policy admission (rpm + tpm + concurrency, one
//! scripted round trip on Redis) — against the in-process backend and the real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use relay::state::{Admission, StateBackend};
use relay::upstream::breaker::Breakers;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6
}

async fn run(label: &str, state: StateBackend, n: usize) {
    let breakers = Breakers::new(state.clone());
    let fps = ["a1b2c3", "d4e5f6", "a7b8c9"];
    let subject = format!("bench-{}-{label}", std::process::id());
    let admission = Admission {
        subject,
        requests_per_minute: Some(u64::MAX / 4),
        tokens_per_minute: Some(u64::MAX / 4),
        token_estimate: 100,
        max_concurrent: Some(1_000_000),
    };
    let mut checks = Vec::with_capacity(n);
    let mut breaker_only = Vec::with_capacity(n);
    for i in 0..n + 200 {
        // A call without limits: the breaker read alone.
        let t = Instant::now();
        let recs = breakers.records(&fps).await;
        let b = t.elapsed();
        assert_eq!(recs.len(), 3);
        // A call with limits: breaker read and admission together.
        let t = Instant::now();
        let (admitted, recs) = breakers.records_admitting(&fps, &admission).await;
        let all = t.elapsed();
        assert_eq!(recs.len(), 3);
        assert_eq!(admitted, relay::state::Admitted::Yes);
        // Released off the request path in relay (a spawned task).
        state
            .release(&admission, Some(120), relay::store::now_ms())
            .await;
        if i >= 200 {
            breaker_only.push(b);
            checks.push(all);
        }
    }
    checks.sort();
    breaker_only.sort();
    println!(
        "state_bench: {label:<8} breaker read p50 {:>6.1} µs p99 {:>6.1} µs | breaker read with admission (one call) p50 {:>6.1} µs p99 {:>6.1} µs ({n} requests)",
        pct(&breaker_only, 0.5),
        pct(&breaker_only, 0.99),
        pct(&checks, 0.5),
        pct(&checks, 0.99)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        run("memory", StateBackend::memory(), 20_000).await;
        let url = std::env::var("RELAY_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        match StateBackend::open(Some(&url)).await {
            Ok(redis) => run("redis", redis, 5_000).await,
            Err(e) => println!("state_bench: redis   skipped: {e}"),
        }
    });
}
