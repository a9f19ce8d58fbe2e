//! The JSON Schemas in `schemas/` are generated from the Rust kinds; this
//! fails whenever the two disagree (run `make schemas` to regenerate).

use std::path::Path;

use relay::config::schema::schema_for;
use relay::config::Kind;

#[test]
fn committed_schemas_match_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    for kind in Kind::ALL {
        let path = dir.join(kind.schema_file());
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let committed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            committed,
            schema_for(kind),
            "{} is out of date with src/config/kinds.rs; run `make schemas`",
            path.display()
        );
    }
}

#[test]
fn every_schema_field_is_documented() {
    fn walk(v: &serde_json::Value, at: &str, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (name, sub) in props {
                if sub.get("description").is_none() {
                    missing.push(format!("{at}.{name}"));
                }
                walk(sub, &format!("{at}.{name}"), missing);
            }
        }
        if let Some(items) = v.get("items") {
            walk(items, &format!("{at}[]"), missing);
        }
    }
    let mut missing = Vec::new();
    for kind in Kind::ALL {
        walk(&schema_for(kind), kind.as_str(), &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a doc comment: {missing:?}"
    );
}

#[test]
fn a_full_document_of_every_kind_round_trips_through_schema_and_types() {
    // Every documented field, set: the schema must accept it and the typed
    // loader must produce a snapshot that carries each value.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("all.yaml"),
        r#"
kind: Host
name: h
description: d
base_url: http://127.0.0.1:9/v1/
timeout: 30s
connect_timeout: 2s
headers: { x-extra: "1" }
selection: round_robin
keys:
  - { name: k, env: RELAY_TEST_ROUNDTRIP_KEY }
breaker:
  auth_cooldown: 1m
  quota_cooldown: 2h
  rate_limit_cooldown: 45s
  server_error_cooldown: 5s
  server_error_threshold: 4
---
kind: Model
name: m
aliases: [m2]
description: d
context_window: 1000
max_output_tokens: 100
pricing: { input_per_mtok: 1, output_per_mtok: 2, cache_read_per_mtok: 0.1, cache_write_per_mtok: 1.25 }
---
kind: Binding
name: b
model: m
host: h
adapter: anthropic
upstream: u
enabled: true
priority: 3
weight: 7
---
kind: Policy
name: p
description: d
models: ["m*"]
limits: { requests_per_minute: 1, tokens_per_minute: 2, max_concurrent_requests: 3 }
budget: { usd: 10, period: month }
---
kind: User
name: u
role: viewer
password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
"#,
    )
    .unwrap();
    std::env::set_var("RELAY_TEST_ROUNDTRIP_KEY", "sk-roundtrip");
    let loaded = relay::config::load_dir(dir.path(), relay::config::SecretMode::CheckOnly).unwrap();
    assert!(loaded.problems.is_empty(), "{:#?}", loaded.problems);
    let s = loaded.snapshot.unwrap();
    let h = s.host("h").unwrap();
    assert_eq!(h.base_url, "http://127.0.0.1:9/v1");
    assert_eq!(h.timeout.as_secs(), 30);
    assert_eq!(h.connect_timeout.as_secs(), 2);
    assert_eq!(h.headers, vec![("x-extra".to_string(), "1".to_string())]);
    assert_eq!(h.selection, relay::config::kinds::Selection::RoundRobin);
    assert_eq!(h.keys[0].secret.expose(), "sk-roundtrip");
    assert_eq!(h.breaker.auth_cooldown.as_secs(), 60);
    assert_eq!(h.breaker.quota_cooldown.as_secs(), 7200);
    assert_eq!(h.breaker.rate_limit_cooldown.as_secs(), 45);
    assert_eq!(h.breaker.server_error_cooldown.as_secs(), 5);
    assert_eq!(h.breaker.server_error_threshold, 4);
    let m = s.model("m2").unwrap();
    assert_eq!(
        (m.context_window, m.max_output_tokens),
        (Some(1000), Some(100))
    );
    assert_eq!(m.pricing.unwrap().cache_write_per_mtok, 1.25);
    let b = s.routes(m).next().unwrap();
    assert_eq!(
        (
            b.priority,
            b.weight,
            b.adapter.as_str(),
            b.upstream.as_str()
        ),
        (3, 7, "anthropic", "u")
    );
    let p = s.policy("p").unwrap();
    assert!(p.grants("m") && !p.grants("x"));
    assert_eq!(p.limits.max_concurrent_requests, Some(3));
    assert_eq!(p.budget.unwrap().usd, 10.0);
    assert_eq!(
        s.user("u").unwrap().role,
        relay::config::kinds::Role::Viewer
    );
}
