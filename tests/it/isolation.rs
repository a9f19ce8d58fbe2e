//! Isolation between tenants, hosts and keys, and the smaller leaks
//! (issue 10, items 8–13 and 15): request-scoped upstream errors never open
//! a breaker, breakers are per host, login throttling cannot be raced or
//! turned against a name's owner, forwarded headers count only from trusted
//! proxies, password changes end sessions, key values never reach clients
//! or logs, client text cannot forge log lines, and the control plane's
//! small print (OpenAPI auth, `no-store`, start-up and validate warnings).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::control::{client, hash_password, login, login_json, message};
use crate::mock_upstream::MockUpstream;
use crate::support::*;

/// A value unique to this test process and call, so tests sharing a state
/// backend never share a breaker.
fn tag() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A relay serving `yaml` (plus policy `default` granting everything),
/// with `env` set, and a relay key for it.
fn start(yaml: &str, env: &[(&str, &str)]) -> (TempConfig, Relay, String) {
    let yaml = format!("{yaml}\n---\nkind: Policy\nname: default\nmodels: [\"*\"]\n");
    let cfg = TempConfig::new(&[("all.yaml", &yaml)]);
    let (_, key) = mint_key(&cfg.data_dir(), &Db::Sqlite, "default");
    let mut b = RelayBuilder::new(&cfg.dir(), &cfg.data_dir());
    for (k, v) in env {
        b = b.env(k, v);
    }
    (cfg, b.start(), key)
}

async fn chat(relay: &Relay, key: &str, model: &str, text: &str) -> reqwest::Response {
    relay
        .http
        .post(relay.data("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap()
}

async fn breaker(relay: &Relay, host: &str, key: &str) -> Value {
    let v = relay.admin_get("/api/breakers").await;
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["host"] == host && k["key"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("no breaker row for {host}/{key}: {v}"))
}

/// A 403 the upstream gives because of the request (a model the project
/// may not use) is that caller's answer: it reaches them as the upstream
/// said it, the key's breaker stays closed, and the next caller is served.
#[tokio::test]
async fn a_request_scoped_403_goes_back_to_its_caller_and_leaves_the_key_alone() {
    let mock = MockUpstream::start().await;
    let value = format!("sk-only-{}", tag());
    let yaml = format!(
        "kind: Host\nname: pool\nbase_url: {}\nkeys:\n  - name: only\n    env: ISO_KEY\n---\n\
         kind: Model\nname: m\n---\nkind: Binding\nname: m-pool\nmodel: m\nhost: pool\nadapter: openai\nupstream: up",
        mock.base_url()
    );
    let (_cfg, relay, key) = start(&yaml, &[("ISO_KEY", &value)]);

    let r = chat(&relay, &key, "m", "[[fault:403]]").await;
    assert_eq!(r.status(), 403, "the upstream's own status");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("project does not have access to this model"),
        "the upstream's own message: {body}"
    );
    assert_eq!(breaker(&relay, "pool", "only").await["state"], "closed");
    let r = chat(&relay, &key, "m", "hi").await;
    assert_eq!(r.status(), 200, "the next caller is served by the same key");

    // The Anthropic surface (translated to the openai upstream) too.
    let r = relay
        .http
        .post(relay.data("/v1/messages"))
        .header("x-api-key", &key)
        .json(&json!({"model": "m", "max_tokens": 5,
                      "messages": [{"role": "user", "content": "[[fault:403]]"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "permission_error"
    );
    assert_eq!(breaker(&relay, "pool", "only").await["state"], "closed");

    // A 403 that says the key itself is revoked still counts against it.
    let r = chat(&relay, &key, "m", "[[fault:403-key]]").await;
    assert_eq!(r.status(), 503, "the only key is out: no healthy keys");
    let b = breaker(&relay, "pool", "only").await;
    assert_eq!(
        (b["state"].as_str(), b["class"].as_str()),
        (Some("open"), Some("auth")),
        "{b}"
    );
}

/// An upstream that rejects every credential with a 401.
async fn always_401() -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(|| async {
        (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/json")],
            r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
        )
            .into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/v1")
}

/// Hosts `a` (at `refusing`) and `b` (at `serving`), each with a key named
/// `shared` read from the same variable, and models `on-a` / `on-b`.
fn two_hosts_one_value(refusing: &str, serving: &str) -> String {
    let host = |name: &str, url: &str| {
        format!(
            "kind: Host\nname: {name}\nbase_url: {url}\nkeys:\n  - name: shared\n    env: ISO_SHARED\n---\n\
             kind: Model\nname: on-{name}\n---\n\
             kind: Binding\nname: on-{name}\nmodel: on-{name}\nhost: {name}\nadapter: openai\nupstream: up\n"
        )
    };
    format!("{}---\n{}", host("a", refusing), host("b", serving))
}

/// Breakers are per host and value: the same key value refused by one
/// upstream stays usable on another.
#[tokio::test]
async fn a_401_on_one_host_does_not_block_the_same_value_on_another() {
    let mock = MockUpstream::start().await;
    let refusing = always_401().await;
    let shared = format!("sk-shared-{}", tag());
    let yaml = two_hosts_one_value(&refusing, &mock.base_url());
    let (_cfg, relay, key) = start(&yaml, &[("ISO_SHARED", &shared)]);
    assert_eq!(chat(&relay, &key, "on-a", "hi").await.status(), 503);
    let a = breaker(&relay, "a", "shared").await;
    assert_eq!(
        (a["state"].as_str(), a["class"].as_str()),
        (Some("open"), Some("auth")),
        "{a}"
    );
    assert_eq!(breaker(&relay, "b", "shared").await["state"], "closed");
    let r = chat(&relay, &key, "on-b", "hi").await;
    assert_eq!(
        r.status(),
        200,
        "host b still uses the value host a refused"
    );
    assert_eq!(chat(&relay, &key, "on-b", "again").await.status(), 200);
}

/// The same, with the breakers in Redis (shared by replicas).
#[tokio::test]
async fn breakers_in_redis_are_per_host_too() {
    let mock = MockUpstream::start().await;
    let refusing = always_401().await;
    let shared = format!("sk-shared-redis-{}", tag());
    let yaml = two_hosts_one_value(&refusing, &mock.base_url());
    let redis = crate::failover::redis_url();
    let (_cfg, relay, key) = start(
        &yaml,
        &[("ISO_SHARED", &shared), ("RELAY_STATE_URL", &redis)],
    );
    assert_eq!(chat(&relay, &key, "on-a", "hi").await.status(), 503);
    assert_eq!(breaker(&relay, "a", "shared").await["state"], "open");
    assert_eq!(chat(&relay, &key, "on-b", "hi").await.status(), 200);
    assert_eq!(breaker(&relay, "b", "shared").await["state"], "closed");
    // `relay breakers list` reads the same records straight from Redis.
    let out = crate::support::relay()
        .args(["breakers", "list"])
        .env("RELAY_STATE_URL", &redis)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A table like `keys list`: HOST KEY STATE CLASS FAILURES DETAIL.
    let row = |host: &str| {
        text.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() >= 3 && w[..3] == [host, "shared", "open"]
        })
    };
    assert!(text.starts_with("HOST"), "{text}");
    assert!(row("a"), "{text}");
    assert!(!row("b"), "{text}");
}

/// Echoed credentials are scrubbed from what the client gets and from
/// relay's log.
#[tokio::test]
async fn key_values_echoed_by_the_upstream_are_redacted() {
    let mock = MockUpstream::start().await;
    let good = format!("sk-live-{}-0123456789", tag());
    let echoing = format!("fault-echo-key-401#{}-abcdefgh", tag());
    let yaml = format!(
        "kind: Host\nname: pool\nbase_url: {0}\nkeys:\n  - name: good\n    env: ISO_GOOD\n---\n\
         kind: Host\nname: echo\nbase_url: {0}\nkeys:\n  - name: echoing\n    env: ISO_ECHO\n---\n\
         kind: Model\nname: m\n---\nkind: Binding\nname: m-pool\nmodel: m\nhost: pool\nadapter: openai\nupstream: up\n---\n\
         kind: Model\nname: e\n---\nkind: Binding\nname: e-echo\nmodel: e\nhost: echo\nadapter: anthropic\nupstream: up",
        mock.base_url()
    );
    let (_cfg, relay, key) = start(&yaml, &[("ISO_GOOD", &good), ("ISO_ECHO", &echoing)]);

    // A request-scoped error passed through to the caller.
    let r = chat(&relay, &key, "m", "[[fault:echo-key-400]]").await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains(&good),
        "key value leaked to the client: {text}"
    );
    assert!(
        text.contains("the API key provided was [redacted]"),
        "{text}"
    );
    // Same through the other protocol's error shape.
    let r = relay
        .http
        .post(relay.data("/v1/messages"))
        .header("x-api-key", &key)
        .json(&json!({"model": "m", "max_tokens": 5,
                      "messages": [{"role": "user", "content": "[[fault:echo-key-422]]"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains(&good) && text.contains("[redacted]"),
        "{text}"
    );

    // A key rejection is logged with the upstream's message, scrubbed.
    assert_eq!(chat(&relay, &key, "e", "hi").await.status(), 503);
    relay.wait_log("upstream rejected the key");
    let logs = relay.logs();
    assert!(
        !logs.contains(&echoing),
        "key value leaked to the log:\n{logs}"
    );
    assert!(!logs.contains(&good));
    assert!(
        logs.contains("the API key provided was [redacted]"),
        "{logs}"
    );
}

fn users_config() -> TempConfig {
    let users = format!(
        "kind: User\nname: alice\nrole: admin\npassword_hash: \"{}\"\n---\n\
         kind: User\nname: victor\nrole: viewer\npassword_hash: \"{}\"\n",
        hash_password("alice-password"),
        hash_password("victor-password"),
    );
    TempConfig::new(&[("base.yaml", MINIMAL), ("users.yaml", &users)])
}

/// A client whose connections come from `ip` (any 127/8 address works on
/// loopback), so tests can play several client addresses.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(IpAddr::V4(Ipv4Addr::from(ip)))
        .build()
        .unwrap()
}

async fn login_from(
    c: &reqwest::Client,
    relay: &Relay,
    name: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> StatusCode {
    let mut req = c
        .post(relay.control("/login"))
        .json(&json!({ "name": name, "password": password }));
    if let Some(f) = forwarded_for {
        req = req.header("x-forwarded-for", f);
    }
    req.send().await.unwrap().status()
}

/// Attempts are counted before passwords are checked: 18 parallel wrong
/// guesses cannot all be verified.
#[tokio::test]
async fn parallel_wrong_logins_are_mostly_refused_unchecked() {
    let cfg = users_config();
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    let c = client();
    let guesses = (0..18).map(|i| {
        let c = c.clone();
        let url = relay.control("/login");
        async move {
            c.post(url)
                .json(&json!({"name": "alice", "password": format!("guess-{i}")}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(checked + refused, 18, "{statuses:?}");
    assert!(
        checked <= 5,
        "{checked} of 18 parallel guesses were verified: {statuses:?}"
    );
}

/// A flood against a name from other addresses slows its owner down but
/// never locks them out.
#[tokio::test]
async fn a_flooded_name_still_signs_in_from_a_clean_address() {
    let cfg = users_config();
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    for attacker in 2..=5u8 {
        let c = client_from([127, 0, 0, attacker]);
        for i in 0..8 {
            let s = login_from(&c, &relay, "alice", &format!("guess-{i}"), None).await;
            assert!(
                s == StatusCode::UNAUTHORIZED || s == StatusCode::TOO_MANY_REQUESTS,
                "{s}"
            );
        }
        // That address is refused now, even with the right password.
        let s = login_from(&c, &relay, "alice", "alice-password", None).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    }
    // The owner, from a clean address: in, after a short delay.
    let started = Instant::now();
    let owner = client_from([127, 0, 0, 9]);
    let s = login_from(&owner, &relay, "alice", "alice-password", None).await;
    assert_eq!(s, StatusCode::OK, "the owner is locked out");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "20 failures for the name should slow each attempt down ({:?})",
        started.elapsed()
    );
}

/// `X-Forwarded-For` names the client only when the peer is a trusted
/// proxy; from anyone else it is ignored.
#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    let cfg = users_config();
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_TRUSTED_PROXIES", "127.0.0.2/32, 10.0.0.0/8")
        .start();
    // Untrusted peer: a fresh forwarded address per attempt changes nothing.
    let direct = client_from([127, 0, 0, 1]);
    let mut statuses = Vec::new();
    for i in 0..6 {
        let xff = format!("198.51.100.{i}");
        statuses.push(login_from(&direct, &relay, "victor", "guess", Some(&xff)).await);
    }
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    // The trusted balancer: each forwarded address is its own client.
    let balancer = client_from([127, 0, 0, 2]);
    for i in 0..8 {
        let xff = format!("203.0.113.{i}, 10.1.2.3");
        let s = login_from(&balancer, &relay, "alice", "guess", Some(&xff)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    relay.wait_log("203.0.113.7");
    assert!(
        !relay.logs().contains("10.1.2.3"),
        "trusted hops are skipped"
    );
    // A malformed list is refused at start with a message.
    let out = crate::support::relay()
        .args(["serve", "--trusted-proxies", "10.0.0.0/33"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an address range"));
}

/// Changing a User's `password_hash` in git ends that user's sessions;
/// other users' sessions go on.
#[tokio::test]
async fn changing_a_password_hash_ends_that_users_sessions() {
    let cfg = users_config();
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    let alice = login(&relay, "alice", "alice-password").await;
    let victor = login(&relay, "victor", "victor-password").await;
    assert_eq!(alice.me(&relay).await["name"], "alice");

    let users = format!(
        "kind: User\nname: alice\nrole: admin\npassword_hash: \"{}\"\n---\n\
         kind: User\nname: victor\nrole: viewer\npassword_hash: \"{}\"\n",
        hash_password("alice-new-password"),
        // victor's hash is a fresh one of the same password: a new hash
        // ends sessions too, whatever the password.
        hash_password("victor-password"),
    );
    let before = relay.status().await["revision"].clone();
    cfg.write("users.yaml", &users);
    let r = relay.admin_post("/api/config/reload").await;
    assert_eq!(r.status(), 200);
    assert_ne!(relay.status().await["revision"], before);

    let r = alice.get(&relay, "/api/session").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(message(r).await.contains("password changed"));
    // Gone for good, not just refused once.
    let r = alice.get(&relay, "/api/session").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = victor.get(&relay, "/api/session").send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a new hash is a new credential"
    );
    assert_eq!(
        login_json(&relay, "alice", "alice-password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let fresh = login(&relay, "alice", "alice-new-password").await;
    assert_eq!(fresh.me(&relay).await["name"], "alice");
}

/// The sign-in redirect never leaves the site, however `next` is dressed up.
#[tokio::test]
async fn sign_in_never_redirects_off_site() {
    let cfg = users_config();
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    for next in [
        "/\t/evil.example",
        "/%09/evil.example",
        "//evil.example",
        "/\\evil.example",
        "/keys",
    ] {
        let r = client()
            .post(relay.control("/login"))
            .form(&[
                ("name", "alice"),
                ("password", "alice-password"),
                ("next", next),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{next:?}");
        let to = r.headers()["location"].to_str().unwrap().to_string();
        let want = if next == "/keys" { "/keys" } else { "/" };
        assert_eq!(to, want, "{next:?}");
    }
}

/// A login name cannot forge a log line.
#[tokio::test]
async fn client_text_cannot_forge_log_lines() {
    let cfg = users_config();
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    let forged = "mallory\nFORGED relay: dashboard login user=alice\r\u{1b}[2K";
    let r = login_json(&relay, forged, "x").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    relay.wait_log("dashboard login failed");
    let logs = relay.logs();
    assert!(
        !logs.lines().any(|l| l.starts_with("FORGED")),
        "a client started a log line:\n{logs}"
    );
    assert!(!logs.contains('\u{1b}'), "raw escape sequence in the log");
    assert!(logs.contains(r"mallory\nFORGED relay"), "{logs}");
}

/// The control plane's small print: the OpenAPI document needs a
/// principal, a minted key's response is never cached, a short admin token
/// is warned about.
#[tokio::test]
async fn control_plane_small_print() {
    let cfg = TempConfig::new(&[("base.yaml", MINIMAL)]);
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_ADMIN_TOKEN", "short")
        .start();
    let r = client()
        .get(relay.control("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client()
        .get(relay.control("/api/openapi.json"))
        .bearer_auth("short")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client()
        .post(relay.control("/api/keys"))
        .bearer_auth("short")
        .json(&json!({"policy": "default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["cache-control"], "no-store");
    relay.wait_log("RELAY_ADMIN_TOKEN is only 5 characters long");

    // A long token: no warning.
    let quiet = Relay::start(&cfg.dir(), &cfg.data_dir());
    assert!(!quiet.logs().contains("RELAY_ADMIN_TOKEN is only"));
}

/// `relay validate` warns about plain-HTTP and metadata upstreams (and
/// `--strict` fails on them) unless the Host says `allow_insecure: true`;
/// loopback HTTP is fine.
#[test]
fn validate_warns_about_insecure_upstreams() {
    // A sealed key (checked for shape only): no warning of its own.
    let host = |name: &str, url: &str, extra: &str| {
        format!(
            "kind: Host\nname: {name}\nbase_url: {url}\n{extra}keys:\n  - name: k\n    age: |\n      \
             -----BEGIN AGE ENCRYPTED FILE-----\n      YWJj\n      -----END AGE ENCRYPTED FILE-----\n---\n"
        )
    };
    let run = |yaml: &str, strict: bool| {
        let cfg = TempConfig::new(&[("hosts.yaml", yaml)]);
        let mut cmd = crate::support::relay();
        cmd.arg("validate").arg(cfg.dir());
        if strict {
            cmd.arg("--strict");
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let insecure = format!(
        "{}{}",
        host("lan", "http://10.1.2.3:8000/v1", ""),
        host("imds", "https://169.254.169.254/latest", "")
    );
    let (ok, text) = run(&insecure, false);
    assert!(ok, "warnings alone pass: {text}");
    assert!(
        text.contains("Host/lan: base_url: `base_url` uses plain http://"),
        "{text}"
    );
    assert!(
        text.contains(
            "Host/imds: base_url: `base_url` points at a link-local or cloud metadata address"
        ),
        "{text}"
    );
    let (ok, _) = run(&insecure, true);
    assert!(!ok, "--strict fails on them");

    let allowed = format!(
        "{}{}",
        host("lan", "http://10.1.2.3:8000/v1", "allow_insecure: true\n"),
        host("local", "http://127.0.0.1:11434/v1", "")
    );
    let (ok, text) = run(&allowed, true);
    assert!(ok, "nothing left to warn about: {text}");
    assert!(!text.contains("base_url"), "{text}");
}
