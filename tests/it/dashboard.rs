//! The dashboard: plain HTTP checks (redirects, escaping, no secrets, assets,
//! the usage series API) and end-to-end journeys in a real headless Chromium
//! (`browser.rs`), with screenshots in `target/e2e-screenshots/`.

use std::io::Write;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::browser::{Browser, INSECURE_HOST};
use crate::mock_upstream::MockUpstream;
use crate::support::*;

const ADMIN: (&str, &str) = ("alice", "alice-password-1");
const VIEWER: (&str, &str) = ("victor", "victor-password-2");
/// The `flaky` host's only key: the mock answers 401 to it.
const REVOKED_VALUE: &str = "fault-401#dashboard";
const MODEL_DESCRIPTION: &str = "<script>alert('x')</script> & \"friends\"";

/// An argon2id PHC string from `relay user hash-password` (password on stdin).
fn hash_password(password: &str) -> String {
    let mut child = relay()
        .args(["user", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "relay user hash-password: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// The two users' YAML, hashed once per test run (argon2 is slow on purpose).
fn users_yaml() -> &'static str {
    static USERS: OnceLock<String> = OnceLock::new();
    USERS.get_or_init(|| {
        format!(
            "kind: User\nname: {}\nrole: admin\npassword_hash: '{}'\n---\n\
             kind: User\nname: {}\nrole: viewer\npassword_hash: '{}'\n",
            ADMIN.0,
            hash_password(ADMIN.1),
            VIEWER.0,
            hash_password(VIEWER.1)
        )
    })
}

fn config(base: &str) -> String {
    format!(
        r#"
kind: Host
name: openai
base_url: {base}
timeout: 5s
keys:
  - name: primary
    env: RELAY_TEST_OPENAI_KEY
  - name: spare
    env: RELAY_TEST_UNSET_KEY
---
kind: Host
name: flaky
description: a host whose only key the upstream has revoked
base_url: {base}
timeout: 5s
keys:
  - name: revoked
    env: RELAY_TEST_FLAKY_KEY
---
kind: Model
name: gpt-test
aliases: [gpt-latest]
description: {description}
pricing: {{ input_per_mtok: 1.0, output_per_mtok: 2.0, cache_read_per_mtok: 0.5 }}
---
kind: Model
name: flaky-model
---
kind: Binding
name: gpt-test-openai
model: gpt-test
host: openai
adapter: openai
upstream: gpt-upstream-v1
---
kind: Binding
name: flaky-model-flaky
model: flaky-model
host: flaky
adapter: openai
upstream: flaky-upstream
---
kind: Policy
name: default
models: ["*"]
---
kind: Policy
name: gpt-only
models: ["gpt-*"]
limits: {{ requests_per_minute: 60 }}
"#,
        description = serde_json::to_string(MODEL_DESCRIPTION).unwrap()
    )
}

struct Dash {
    _mock: MockUpstream,
    _cfg: TempConfig,
    relay: Relay,
}

impl Dash {
    async fn start(tweak: impl FnOnce(RelayBuilder) -> RelayBuilder) -> Dash {
        let mock = MockUpstream::start().await;
        let cfg = TempConfig::new(&[
            ("catalog.yaml", &config(&mock.base_url())),
            ("users.yaml", users_yaml()),
        ]);
        let b = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
            .env("RELAY_TEST_OPENAI_KEY", "sk-upstream-openai")
            .env("RELAY_TEST_FLAKY_KEY", REVOKED_VALUE)
            .env("RELAY_COOKIE_SECURE", "false");
        let relay = tweak(b).start();
        Dash {
            _mock: mock,
            _cfg: cfg,
            relay,
        }
    }

    fn base(&self) -> String {
        self.relay.control_url.clone().unwrap()
    }

    /// An inference call with a relay key; returns the status.
    async fn chat(&self, key: &str, model: &str) -> u16 {
        self.relay
            .http
            .post(self.relay.data("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut r = client.get(self.relay.control(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }
}

const PAGES: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/models", "Models"),
    ("/hosts", "Hosts"),
    ("/policies", "Policies"),
    ("/users", "Users"),
    ("/keys", "Relay keys"),
    ("/usage", "Usage"),
];

#[tokio::test]
async fn dashboard_pages_send_strangers_to_the_login_page() {
    let d = Dash::start(|b| b).await;
    for (path, _) in PAGES {
        let r = d.get(path, None).await;
        assert_eq!(r.status(), 303, "{path}");
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        if *path == "/" {
            assert_eq!(loc, "/login");
        } else {
            assert_eq!(
                loc,
                format!("/login?next={}", path.replace('/', "%2F")),
                "{path}"
            );
        }
    }
    let r = d.get("/usage?range=7d", None).await;
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        "/login?next=%2Fusage%3Frange%3D7d"
    );
    let r = d.get("/keys", Some("not-the-token")).await;
    assert_eq!(r.status(), 303, "a wrong token is no session");

    let r = d
        .get("/login?error=invalid&next=//evil.example", None)
        .await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    assert!(html.contains("Wrong name or password"), "{html}");
    assert!(!html.contains("evil.example"), "next is sanitised: {html}");
}

#[tokio::test]
async fn dashboard_escapes_config_text_and_never_shows_secrets() {
    let d = Dash::start(|b| b).await;
    let mut all = String::new();
    for (path, title) in PAGES {
        let r = d.get(path, Some(ADMIN_TOKEN)).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = r.text().await.unwrap();
        assert!(
            html.contains(&format!("<h1>{title}</h1>")),
            "{path}: {html}"
        );
        all.push_str(&html);
    }
    // Config text is escaped, never markup.
    assert!(!all.contains("<script>alert"), "unescaped description");
    assert!(all.contains("&lt;script&gt;alert('x')&lt;/script&gt; &amp; &quot;friends&quot;"));
    // No secret value, hash or token reaches any page.
    for secret in [
        "sk-upstream-openai",
        REVOKED_VALUE,
        "$argon2id$",
        ADMIN_TOKEN,
    ] {
        assert!(!all.contains(secret), "{secret} leaked into a page");
    }
    // What the pages must show.
    let models = d
        .get("/models", Some(ADMIN_TOKEN))
        .await
        .text()
        .await
        .unwrap();
    assert!(models.contains("gpt-latest") && models.contains("gpt-upstream-v1"));
    assert!(models.contains("read-only here"), "config banner");
    // Effective cache prices, and what an unset one is billed at: gpt-test
    // sets a cache-read price only.
    assert!(models.contains("$0.5 cache read"), "{models}");
    assert!(
        models.contains("cache write not set: billed at the input price $1"),
        "{models}"
    );
    let hosts = d
        .get("/hosts", Some(ADMIN_TOKEN))
        .await
        .text()
        .await
        .unwrap();
    assert!(hosts.contains("RELAY_TEST_FLAKY_KEY"), "key source shown");
    assert!(hosts.contains(r#"data-key="spare" data-state="unavailable""#));
    let policies = d
        .get("/policies", Some(ADMIN_TOKEN))
        .await
        .text()
        .await
        .unwrap();
    assert!(policies.contains("60 requests/min"));
    let users = d
        .get("/users", Some(ADMIN_TOKEN))
        .await
        .text()
        .await
        .unwrap();
    assert!(users.contains(ADMIN.0) && users.contains(VIEWER.0));
}

#[tokio::test]
async fn dashboard_assets_are_embedded_and_cacheable() {
    let d = Dash::start(|b| b).await;
    let page = d.get("/login", None).await.text().await.unwrap();
    let href = page
        .split("href=\"")
        .find_map(|s| s.strip_prefix("/assets/relay.css?v="))
        .and_then(|s| s.split('"').next())
        .expect("versioned stylesheet link")
        .to_string();
    for (file, ty) in [
        ("relay.css", "text/css"),
        ("relay.js", "text/javascript"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let r = d.get(&format!("/assets/{file}"), None).await;
        assert_eq!(r.status(), 200, "{file}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(ty));
        assert!(r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age="));
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        let again = reqwest::Client::new()
            .get(d.relay.control(&format!("/assets/{file}")))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{file}");
        if file == "relay.css" {
            assert_eq!(etag, format!("\"{href}\""));
        }
    }
    assert_eq!(d.get("/assets/nope.js", None).await.status(), 404);
}

#[tokio::test]
async fn usage_series_api_buckets_calls() {
    let d = Dash::start(|b| b).await;
    let r = d
        .relay
        .http
        .post(d.relay.control("/api/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"policy": "default"}))
        .send()
        .await
        .unwrap();
    let k: Value = r.json().await.unwrap();
    let key = k["key"].as_str().unwrap();
    assert_eq!(d.chat(key, "gpt-test").await, 200);
    assert_eq!(d.chat(key, "gpt-latest").await, 200);
    usage_for(&d.relay, k["id"].as_str().unwrap(), 2).await;

    let v = d.relay.admin_get("/api/usage/series?bucket=hour").await;
    assert_eq!(v["bucket"], "hour");
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 24, "{v}");
    assert_eq!(points.last().unwrap()["requests"], 2, "{v}");
    let sum: i64 = points.iter().map(|p| p["requests"].as_i64().unwrap()).sum();
    assert_eq!(sum, 2);
    assert!(points
        .windows(2)
        .all(|w| w[1]["start"].as_i64().unwrap() - w[0]["start"].as_i64().unwrap() == 3_600_000));

    let v = d
        .relay
        .admin_get("/api/usage/series?bucket=day&model=flaky-model")
        .await;
    assert!(v["points"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["requests"] == 0));

    let r = d
        .get("/api/usage/series?bucket=week", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(d.get("/api/usage/series", None).await.status(), 401);
}

/// Reloads `url` until the text of `css` satisfies `pred` (10 s at most).
async fn wait_page(b: &Browser, url: &str, css: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        b.goto(url).await;
        let text = if b.count(css).await > 0 {
            b.text(css).await
        } else {
            String::new()
        };
        if pred(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{css}` on {url} never became as expected:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn dashboard_admin_journey_in_chromium() {
    let d = Dash::start(|b| b).await;
    let base = d.base();
    let b = Browser::launch("admin").await;

    // Signed out: a deep link goes through the login page and comes back.
    b.goto(&format!("{base}/usage?range=7d")).await;
    assert_eq!(b.here().await, "/login?next=%2Fusage%3Frange%3D7d");
    b.shot("01-login").await;
    b.client
        .find(fantoccini::Locator::Css("#name"))
        .await
        .unwrap()
        .send_keys(ADMIN.0)
        .await
        .unwrap();
    b.client
        .find(fantoccini::Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(ADMIN.1)
        .await
        .unwrap();
    b.click("#login-form button[type=submit]").await;
    b.wait_for("main h1").await;
    assert_eq!(b.here().await, "/usage?range=7d");
    let session = b
        .cookie("relay_session")
        .await
        .expect("session cookie kept");
    assert!(session.http_only, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"), "{session:?}");
    assert!(!session.secure, "RELAY_COOKIE_SECURE=false: {session:?}");

    // Every page, with the navigation.
    for (i, (path, title)) in PAGES.iter().enumerate() {
        b.goto(&format!("{base}{path}")).await;
        assert_eq!(b.text("main h1").await, *title, "{path}");
        assert_eq!(b.text("nav a[aria-current=page]").await, *title, "{path}");
        assert!(b.text(".who").await.contains(ADMIN.0));
        let name = if *path == "/" { "overview" } else { &path[1..] };
        b.shot(&format!("{:02}-{name}", i + 2)).await;
    }
    b.goto(&format!("{base}/models")).await;
    assert!(b
        .text(".banner.readonly")
        .await
        .contains("managed in git at revision"));

    // Create a relay key: the plaintext shows once.
    b.goto(&format!("{base}/keys")).await;
    b.client
        .find(fantoccini::Locator::Css(
            "#create-key-form input[name=name]",
        ))
        .await
        .unwrap()
        .send_keys("browser-key")
        .await
        .unwrap();
    b.click("#create-key-form button[type=submit]").await;
    let shown = b.wait_for("#new-key:not([hidden]) #new-key-value").await;
    let plaintext = shown.text().await.unwrap();
    assert!(plaintext.len() > 20, "plaintext key shown: {plaintext:?}");
    b.wait_for("#keys-table td.name").await;
    assert!(b.text("#keys-table").await.contains("browser-key"));
    b.shot("09-key-created").await;
    b.client.refresh().await.unwrap();
    b.wait_for("#keys-table").await;
    let source = b.client.source().await.unwrap();
    assert!(
        !source.contains(&plaintext),
        "the plaintext is gone after a reload"
    );
    assert!(b.text("#keys-table").await.contains("browser-key"));

    // The new key works; against the flaky host the upstream refuses the
    // host key, and the hosts page shows its breaker open.
    assert_eq!(d.chat(&plaintext, "gpt-test").await, 200);
    assert_eq!(d.chat(&plaintext, "flaky-model").await, 503);
    b.goto(&format!("{base}/hosts")).await;
    assert_eq!(
        b.count("#host-flaky tr[data-key=revoked][data-state=open]")
            .await,
        1,
        "{}",
        b.text("#host-flaky").await
    );
    assert!(b.text("#host-flaky td.breaker").await.contains("open"));
    assert_eq!(
        b.count("#host-openai tr[data-key=primary][data-state=closed]")
            .await,
        1
    );
    b.shot("10-breaker-open").await;

    // Reset that host's breakers from the page.
    b.click("#host-flaky button[data-action=reset-breakers]")
        .await;
    wait_page(&b, &format!("{base}/hosts"), "closed breaker", |_| true).await;
    b.wait_for("#host-flaky tr[data-key=revoked][data-state=closed]")
        .await;

    // The usage page lists the calls.
    wait_page(&b, &format!("{base}/usage"), "#recent", |t| {
        t.contains("flaky-model") && t.contains("gpt-test")
    })
    .await;
    assert!(
        b.text(".stats").await.starts_with('2'),
        "{}",
        b.text(".stats").await
    );
    assert_eq!(b.count("svg.chart rect.bar").await, 24);
    b.shot("11-usage-with-calls").await;

    // Disable the key in the browser: calls with it now get 401.
    b.goto(&format!("{base}/keys")).await;
    b.click("#keys-table button[data-action=disable-key]").await;
    b.wait_for("#keys-table tr[data-enabled=false]").await;
    assert!(b.text("#keys-table td.state").await.contains("disabled"));
    assert_eq!(d.chat(&plaintext, "gpt-test").await, 401);
    b.shot("12-key-disabled").await;
    b.click("#keys-table button[data-action=enable-key]").await;
    b.wait_for("#keys-table tr[data-enabled=true]").await;
    assert_eq!(d.chat(&plaintext, "gpt-test").await, 200);

    // Delete it (the page asks first).
    b.click("#keys-table button[data-action=delete-key]").await;
    b.client.accept_alert().await.unwrap();
    b.wait_for("#keys-table p.empty").await;
    assert_eq!(d.chat(&plaintext, "gpt-test").await, 401);

    // Log out: the session is over.
    b.click("#logout").await;
    b.wait_for("#login-form").await;
    assert!(b.here().await.starts_with("/login"));
    b.goto(&format!("{base}/keys")).await;
    assert_eq!(b.here().await, "/login?next=%2Fkeys");
    b.close().await;
}

#[tokio::test]
async fn dashboard_viewer_reads_but_cannot_manage() {
    let d = Dash::start(|b| b).await;
    let base = d.base();
    let r = d
        .relay
        .http
        .post(d.relay.control("/api/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"policy": "gpt-only", "name": "someone-elses"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let b = Browser::launch("viewer").await;

    // A wrong password is explained and nothing sticks.
    b.log_in(&base, VIEWER.0, "wrong-password").await;
    assert!(b.here().await.starts_with("/login?error=invalid"));
    assert!(b
        .text("#login-error")
        .await
        .contains("Wrong name or password"));
    assert!(b.cookie("relay_session").await.is_none());
    b.shot("01-wrong-password").await;

    b.log_in(&base, VIEWER.0, VIEWER.1).await;
    assert_eq!(b.here().await, "/");
    assert!(b.text(".who").await.contains("viewer"));
    for (path, title) in PAGES {
        b.goto(&format!("{base}{path}")).await;
        assert_eq!(b.text("main h1").await, *title);
        assert_eq!(
            b.count("button[data-action]").await,
            0,
            "{path} shows a management button to a viewer"
        );
    }
    b.goto(&format!("{base}/keys")).await;
    assert!(b.text("#keys-table").await.contains("someone-elses"));
    assert_eq!(b.count("#create-key-form").await, 0);
    b.shot("02-keys").await;

    // The API refuses a viewer even with the session's CSRF token.
    let status = b
        .client
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               const csrf = document.querySelector('meta[name="csrf-token"]').content;
               fetch('/api/keys', {method: 'POST', credentials: 'same-origin',
                   headers: {'content-type': 'application/json', 'x-csrf-token': csrf},
                   body: JSON.stringify({policy: 'default'})})
                 .then(r => done(r.status), e => done(String(e)));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    b.close().await;
}

/// What logging in at `http://relay.test:<port>` (plain HTTP, not a secure
/// context) did.
struct PlainHttpLogin {
    /// The `Set-Cookie` relay sent for the same login (outside the browser).
    set_cookie: String,
    /// Where the browser ended up.
    here: String,
    kept: bool,
    h1: String,
    hint_shown: bool,
}

async fn log_in_over_plain_http(secure: &str, test: &str) -> PlainHttpLogin {
    let d = Dash::start(|b| b.env("RELAY_COOKIE_SECURE", secure)).await;
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(d.relay.control("/login"))
        .form(&[("name", ADMIN.0), ("password", ADMIN.1)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();

    let base = d.base().replace("127.0.0.1", INSECURE_HOST);
    assert!(base.contains(INSECURE_HOST), "{base}");
    let b = Browser::launch(test).await;
    b.log_in(&base, ADMIN.0, ADMIN.1).await;
    let here = b.here().await;
    let kept = b.cookie("relay_session").await.is_some();
    let h1 = b.text("h1").await;
    let hint_shown = b.count("#http-hint:not([hidden])").await == 1;
    b.shot("01-after-login").await;
    b.close().await;
    PlainHttpLogin {
        set_cookie,
        here,
        kept,
        h1,
        hint_shown,
    }
}

#[tokio::test]
async fn dashboard_secure_cookie_is_dropped_on_plain_http() {
    let l = log_in_over_plain_http("true", "cookie-secure").await;
    assert!(l.set_cookie.contains("; Secure"), "{}", l.set_cookie);
    assert!(
        !l.kept,
        "Chromium must drop a Secure cookie set over plain HTTP"
    );
    // The login itself succeeded (no `?error=`): `/` sent the cookie-less
    // browser back to the login page.
    assert_eq!(l.here, "/login");
    assert_eq!(l.h1, "Sign in to the dashboard");
    assert!(l.hint_shown, "the page explains RELAY_COOKIE_SECURE");
}

#[tokio::test]
async fn dashboard_cookie_is_kept_when_secure_is_false() {
    let l = log_in_over_plain_http("false", "cookie-insecure").await;
    assert!(!l.set_cookie.contains("Secure"), "{}", l.set_cookie);
    assert!(
        l.kept,
        "RELAY_COOKIE_SECURE=false must work over plain HTTP"
    );
    assert_eq!(l.here, "/");
    assert_eq!(l.h1, "Overview");
}
