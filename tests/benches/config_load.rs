//! Config benchmarks (`cargo bench --bench config_load`):
//!
//! 1. load + compile a generated directory of 10,000 objects (hosts,
//!    models, bindings, policies) — the cost of every reload;
//! 2. snapshot reads while reloads swap snapshots — readers must never wait
//!    on the writer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::config::{load_dir, ConfigHandle, SecretMode};
use relay::secrets::MasterKey;

const HOSTS: usize = 500;
const MODELS: usize = 4000;
const BINDINGS: usize = 4500;
const POLICIES: usize = 1000;
const FILES: usize = 100;

fn generate(dir: &std::path::Path) {
    let mut files = vec![String::new(); FILES];
    let mut n = 0usize;
    let mut push = |doc: String| {
        let f = &mut files[n % FILES];
        f.push_str("---\n");
        f.push_str(&doc);
        n += 1;
    };
    for h in 0..HOSTS {
        push(format!(
            "kind: Host\nname: host-{h}\nbase_url: https://upstream-{h}.example/v1\ntimeout: 60s\nkeys:\n  - name: a\n    env: RELAY_BENCH_KEY\n  - name: b\n    env: RELAY_BENCH_KEY\nbreaker:\n  rate_limit_cooldown: 30s\n"
        ));
    }
    for m in 0..MODELS {
        push(format!(
            "kind: Model\nname: family{}-model-{m}\naliases: [alias-{m}]\ncontext_window: 128000\npricing: {{ input_per_mtok: 1.5, output_per_mtok: 6 }}\n",
            m % 50
        ));
    }
    for b in 0..BINDINGS {
        let m = b % MODELS;
        push(format!(
            "kind: Binding\nname: binding-{b}\nmodel: family{}-model-{m}\nhost: host-{}\nadapter: {}\nupstream: up-{m}\npriority: {}\n",
            m % 50,
            b % HOSTS,
            if b % 2 == 0 { "openai" } else { "anthropic" },
            b / MODELS
        ));
    }
    for p in 0..POLICIES {
        push(format!(
            "kind: Policy\nname: policy-{p}\nmodels: [\"family{}-*\", \"family{}-model-1*\", \"alias-none-{p}-*\"]\nlimits: {{ requests_per_minute: 600 }}\n",
            p % 50,
            (p + 1) % 50
        ));
    }
    for (i, text) in files.iter().enumerate() {
        let sub = dir.join(format!("part-{}", i % 10));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("file-{i}.yaml")), text).unwrap();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    std::env::set_var("RELAY_BENCH_KEY", "sk-bench");
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path());
    let objects = HOSTS + MODELS + BINDINGS + POLICIES;

    // 1. Load + compile.
    let mut times = Vec::new();
    for _ in 0..12 {
        let t = Instant::now();
        let loaded = load_dir(tmp.path(), SecretMode::CheckOnly).unwrap();
        times.push(t.elapsed());
        let errors: Vec<_> = loaded.errors().take(3).map(|p| p.to_string()).collect();
        assert!(
            errors.is_empty(),
            "generated config must be valid: {errors:?}"
        );
        assert_eq!(loaded.snapshot.as_ref().unwrap().models.len(), MODELS);
    }
    times.drain(..2); // warm the page cache
    times.sort();
    println!(
        "config_load: {objects} objects in {FILES} files: min {:.1} ms, median {:.1} ms, max {:.1} ms (target < 300 ms)",
        ms(times[0]),
        ms(percentile(&times, 0.5)),
        ms(times[times.len() - 1])
    );

    // 2. Reads while swapping.
    let handle = Arc::new(ConfigHandle::load(tmp.path(), Arc::new(MasterKey::generate())).unwrap());
    let idle = read_latencies(&handle, Duration::from_secs(2), false);
    let busy = read_latencies(&handle, Duration::from_secs(2), true);
    for (label, (lat, reads, reloads)) in [("idle", idle), ("during reloads", busy)] {
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "snapshot_read {label}: {reads} reads, {reloads} reloads swapped; p50 {} ns, p99 {} ns, p99.99 {} ns, \
             max {:.1} µs, reads over 50 µs: {}",
            pct(0.5),
            pct(0.99),
            pct(0.9999),
            lat[lat.len() - 1] as f64 / 1000.0,
            lat.iter().filter(|&&ns| ns > 50_000).count()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One reader thread (the machine has two cores: one for the reader, one
/// for the writer, so what is measured is contention, not preemption) takes
/// snapshot loads plus a model lookup for `duration`, timing each; when
/// `reload` is set, this thread reloads and swaps in a loop meanwhile.
fn read_latencies(
    handle: &Arc<ConfigHandle>,
    duration: Duration,
    reload: bool,
) -> (Vec<u32>, usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let h = handle.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut lat: Vec<u32> = Vec::with_capacity(20_000_000);
            while !stop.load(Ordering::Relaxed) && lat.len() < 20_000_000 {
                let t = Instant::now();
                let snap = h.snapshot();
                let found = snap.model("alias-7").is_some();
                lat.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                assert!(found);
            }
            lat
        })
    };
    let until = Instant::now() + duration;
    let mut reloads = 0;
    while Instant::now() < until {
        if reload {
            handle.reload(true);
            reloads += 1;
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = reader.join().unwrap();
    all.sort_unstable();
    let n = all.len();
    (all, n, reloads)
}
