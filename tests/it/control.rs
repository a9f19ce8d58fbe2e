//! The control plane's access rules: admin token, dashboard sessions,
//! roles, CSRF, login rate limiting, first-boot credentials, the config
//! view and the OpenAPI document.

use std::io::Write;
use std::process::Stdio;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

/// `relay user hash-password` with the password on stdin.
pub(crate) fn hash_password(password: &str) -> String {
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
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(!phc.contains(password));
    phc
}

fn users_yaml() -> String {
    format!(
        "kind: User\nname: alice\nrole: admin\npassword_hash: \"{}\"\n---\nkind: User\nname: victor\nrole: viewer\npassword_hash: \"{}\"\n",
        hash_password("alice-password"),
        hash_password("victor-password"),
    )
}

/// A signed-in dashboard session.
pub(crate) struct Session {
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

/// A client that neither follows redirects nor keeps cookies: the tests
/// look at both.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) async fn login_json(relay: &Relay, name: &str, password: &str) -> reqwest::Response {
    client()
        .post(relay.control("/login"))
        .json(&json!({ "name": name, "password": password }))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn login(relay: &Relay, name: &str, password: &str) -> Session {
    let r = login_json(relay, name, password).await;
    assert_eq!(r.status(), StatusCode::OK, "login {name}");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    Session {
        cookie,
        csrf: body["csrf"].as_str().unwrap().to_string(),
    }
}

impl Session {
    pub(crate) fn get(&self, relay: &Relay, path: &str) -> reqwest::RequestBuilder {
        client()
            .get(relay.control(path))
            .header(COOKIE, &self.cookie)
    }

    /// `GET /api/session` as this session.
    pub(crate) async fn me(&self, relay: &Relay) -> Value {
        self.get(relay, "/api/session")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn post(&self, relay: &Relay, path: &str) -> reqwest::RequestBuilder {
        client()
            .post(relay.control(path))
            .header(COOKIE, &self.cookie)
            .header("x-csrf-token", &self.csrf)
    }
}

pub(crate) async fn message(r: reqwest::Response) -> String {
    let v: Value = r.json().await.unwrap();
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn users_config() -> TempConfig {
    TempConfig::new(&[("base.yaml", MINIMAL), ("users.yaml", &users_yaml())])
}

#[tokio::test]
async fn sessions_roles_and_csrf() {
    let cfg = users_config();
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());

    // Public and unauthenticated.
    let r = client()
        .get(relay.control("/version"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for path in [
        "/api/keys",
        "/api/config",
        "/api/usage",
        "/api/breakers",
        "/api/session",
    ] {
        let r = client().get(relay.control(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(message(r).await.contains("/login"), "{path}");
    }
    let r = client()
        .get(relay.control("/api/keys"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(message(r).await.contains("admin token is wrong"));

    // Wrong password: JSON 401, form redirect back to the login page.
    let r = login_json(&relay, "alice", "nope").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());
    let r = client()
        .post(relay.control("/login"))
        .form(&[("name", "alice"), ("password", "nope"), ("next", "/keys")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/login?error=invalid&next=%2Fkeys");

    // Form login: redirect to `next` (never off-site), cookie attributes.
    let r = client()
        .post(relay.control("/login"))
        .form(&[
            ("name", "alice"),
            ("password", "alice-password"),
            ("next", "//evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/");
    let set = r.headers()[SET_COOKIE].to_str().unwrap();
    assert!(set.starts_with("relay_session="), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert!(
        !set.contains("Secure"),
        "embedded mode defaults to a non-Secure cookie: {set}"
    );

    let alice = login(&relay, "alice", "alice-password").await;
    let me: Value = alice.me(&relay).await;
    assert_eq!(me["name"], "alice");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["via"], "session");
    assert_eq!(me["csrf"], alice.csrf.as_str());

    // CSRF: a session's state-changing request needs the token.
    let no_csrf = client()
        .post(relay.control("/api/keys"))
        .header(COOKIE, &alice.cookie)
        .json(&json!({"policy": "default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN);
    assert!(message(no_csrf).await.contains("missing CSRF token"));
    let bad_csrf = client()
        .post(relay.control("/api/keys"))
        .header(COOKIE, &alice.cookie)
        .header("x-csrf-token", "0".repeat(64))
        .json(&json!({"policy": "default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_csrf.status(), StatusCode::FORBIDDEN);
    assert!(message(bad_csrf).await.contains("CSRF token is wrong"));
    let created = alice
        .post(&relay, "/api/keys")
        .json(&json!({"policy": "default", "name": "from-dashboard"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let key: Value = created.json().await.unwrap();
    let key_id = key["id"].as_str().unwrap().to_string();

    // Viewer: reads, but manages nothing.
    let victor = login(&relay, "victor", "victor-password").await;
    let keys: Value = victor
        .get(&relay, "/api/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"][0]["id"], key_id.as_str());
    for path in [
        "/api/keys".to_string(),
        format!("/api/keys/{key_id}/disable"),
        "/api/breakers/reset".to_string(),
        "/api/config/reload".to_string(),
    ] {
        let r = victor
            .post(&relay, &path)
            .json(&json!({"policy": "default"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(message(r).await.contains("viewer role"), "{path}");
    }
    let r = client()
        .delete(relay.control(&format!("/api/keys/{key_id}")))
        .header(COOKIE, &victor.cookie)
        .header("x-csrf-token", &victor.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Logout needs the CSRF token, then the session is gone.
    let r = client()
        .post(relay.control("/logout"))
        .header(COOKIE, &victor.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client()
        .post(relay.control("/logout"))
        .header(COOKIE, &victor.cookie)
        .form(&[("_csrf", victor.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/login");
    assert!(r.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = victor.get(&relay, "/api/keys").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(message(r).await.contains("expired or was signed out"));

    // Removing a User from git ends their sessions at the next request.
    cfg.remove("users.yaml");
    cfg.write(
        "users.yaml",
        &format!(
            "kind: User\nname: bob\nrole: admin\npassword_hash: \"{}\"\n",
            hash_password("bob-password")
        ),
    );
    relay
        .wait_status("users reloaded", |s| s["objects"]["users"] == 1)
        .await;
    let r = alice.get(&relay, "/api/keys").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(message(r).await.contains("no longer defined in config"));
    login(&relay, "bob", "bob-password").await;
}

#[tokio::test]
async fn failed_logins_are_rate_limited() {
    let cfg = users_config();
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    for _ in 0..5 {
        let r = login_json(&relay, "alice", "guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Even the right password is refused now, without being checked.
    let r = login_json(&relay, "alice", "alice-password").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "300");
    assert!(message(r).await.contains("too many failed logins"));
    let r = client()
        .post(relay.control("/login"))
        .form(&[("name", "alice"), ("password", "alice-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[LOCATION], "/login?error=rate_limited&next=%2F");
    // Other users are not locked out by alice's failures.
    login(&relay, "victor", "victor-password").await;
    relay.wait_log("too many failed attempts");
}

/// Sessions live in PostgreSQL too, and the cookie is `Secure` by default
/// outside embedded mode; `RELAY_COOKIE_SECURE=false` turns that off.
#[tokio::test]
async fn postgres_sessions_and_secure_cookie_default() {
    let cfg = users_config();
    let db = Db::Postgres(PgDatabase::create());
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_DATABASE_URL", db.url().unwrap())
        .start();
    let r = login_json(&relay, "alice", "alice-password").await;
    assert_eq!(r.status(), StatusCode::OK);
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(set.ends_with("; Secure"), "{set}");
    let session = Session {
        cookie: set.split(';').next().unwrap().to_string(),
        csrf: String::new(),
    };
    let me: Value = session.me(&relay).await;
    assert_eq!(me["name"], "alice");
    let url = db.url().unwrap();
    let rows = psql(&url, "SELECT user_name FROM dashboard_sessions");
    assert_eq!(rows.trim(), "alice");
    // An expired session is refused like a signed-out one.
    psql(&url, "UPDATE dashboard_sessions SET expires_at = 1");
    let r = session.get(&relay, "/api/session").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(message(r).await.contains("expired"));
    drop(relay);

    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_DATABASE_URL", db.url().unwrap())
        .env("RELAY_COOKIE_SECURE", "false")
        .start();
    let r = login_json(&relay, "alice", "alice-password").await;
    assert!(!r.headers()[SET_COOKIE].to_str().unwrap().contains("Secure"));
}

fn generated_password(logs: &str) -> Vec<String> {
    logs.lines()
        .filter_map(|l| l.split("admin / ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn standalone_first_boot_generates_admin_password_once() {
    let cfg = TempConfig::new(&[("base.yaml", MINIMAL)]);
    let hash_file = cfg.data_dir().join("admin-password.argon2id");
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env_remove("RELAY_ADMIN_TOKEN")
        .start();
    let printed = generated_password(&relay.logs());
    assert_eq!(printed.len(), 1, "printed exactly once:\n{}", relay.logs());
    let password = printed[0].clone();
    assert_eq!(password.len(), 24);
    assert!(relay.logs().contains("To pin credentials instead"));
    let stored = std::fs::read_to_string(&hash_file).unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains(&password));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&hash_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let admin = login(&relay, "admin", &password).await;
    let me: Value = admin.me(&relay).await;
    assert_eq!(me["role"], "admin");
    // Without a token, bearer access is refused with a pointer to /login.
    let r = client()
        .get(relay.control("/api/keys"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(message(r).await.contains("RELAY_ADMIN_TOKEN is unset"));
    assert_eq!(relay.stop().code(), Some(0));

    // Later boots reuse it and print nothing.
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env_remove("RELAY_ADMIN_TOKEN")
        .start();
    assert!(
        generated_password(&relay.logs()).is_empty(),
        "{}",
        relay.logs()
    );
    assert_eq!(std::fs::read_to_string(&hash_file).unwrap(), stored);
    login(&relay, "admin", &password).await;
    let r = login_json(&relay, "admin", "not-the-password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pinned_credentials_generate_nothing() {
    // An admin token pins access.
    let cfg = TempConfig::new(&[("base.yaml", MINIMAL)]);
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    assert!(generated_password(&relay.logs()).is_empty());
    assert!(!cfg.data_dir().join("admin-password.argon2id").exists());
    let r = login_json(&relay, "admin", "x").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(message(r)
        .await
        .contains("no dashboard users are configured"));
    drop(relay);

    // So does a User in config.
    let cfg = users_config();
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env_remove("RELAY_ADMIN_TOKEN")
        .start();
    assert!(generated_password(&relay.logs()).is_empty());
    assert!(!cfg.data_dir().join("admin-password.argon2id").exists());
    login(&relay, "alice", "alice-password").await;
}

#[tokio::test]
async fn config_view_shows_every_kind_and_no_secrets() {
    let cfg = users_config();
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    let r = client()
        .get(relay.control("/api/config"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("sk-test-host-key-value"),
        "host key value leaked"
    );
    assert!(!text.contains("argon2id"), "password hash leaked");
    let v: Value = serde_json::from_str(&text).unwrap();
    let status = relay.status().await;
    assert_eq!(v["revision"], status["revision"]);
    assert_eq!(v["status"]["revision"], status["revision"]);
    assert_eq!(v["hosts"][0]["name"], "mock");
    assert_eq!(
        v["hosts"][0]["keys"][0],
        json!({"name": "primary", "source": {"type": "env", "detail": "RELAY_TEST_HOST_KEY"},
               "breaker": {"state": "closed", "class": null, "open_until": null, "failures": 0, "trips": 0}})
    );
    assert_eq!(v["models"][0]["name"], "m1");
    assert_eq!(v["models"][0]["aliases"], json!(["m1-latest"]));
    assert_eq!(v["models"][0]["routes"], json!(["m1-mock"]));
    assert_eq!(v["bindings"][0]["model"], "m1");
    assert_eq!(v["bindings"][0]["host"], "mock");
    assert_eq!(v["bindings"][0]["upstream"], "upstream-m1");
    assert_eq!(v["policies"][0]["granted_models"], json!(["m1"]));
    assert_eq!(
        v["users"],
        json!([{"name": "alice", "role": "admin"}, {"name": "victor", "role": "viewer"}])
    );
}

/// Every route the control plane serves is in the OpenAPI document, and
/// every documented path answers (with the admin token) instead of 404.
#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let cfg = TempConfig::new(&[("base.yaml", MINIMAL)]);
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    let doc = relay.admin_get("/api/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|m| *m != "parameters")
                .map(move |m| (m.to_uppercase(), p.clone()))
        })
        .collect();
    documented.sort();
    let mut served: Vec<(String, String)> = [
        ("GET", "/version"),
        ("GET", "/metrics"),
        ("POST", "/login"),
        ("POST", "/logout"),
        ("GET", "/api/session"),
        ("GET", "/api/openapi.json"),
        ("GET", "/api/config"),
        ("GET", "/api/config/status"),
        ("POST", "/api/config/reload"),
        ("GET", "/api/keys"),
        ("POST", "/api/keys"),
        ("DELETE", "/api/keys/{id}"),
        ("POST", "/api/keys/{id}/disable"),
        ("POST", "/api/keys/{id}/enable"),
        ("GET", "/api/usage"),
        ("GET", "/api/usage/series"),
        ("GET", "/api/breakers"),
        ("POST", "/api/breakers/reset"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    served.sort();
    assert_eq!(documented, served);
    for (method, path) in &documented {
        let url = relay.control(&path.replace("{id}", "no-such-key"));
        let r = client()
            .request(method.parse().unwrap(), url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_ne!(
            r.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        if !path.contains("{id}") {
            assert_ne!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn hash_password_refuses_an_empty_password() {
    let mut child = relay()
        .args(["user", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the password is empty"));
    assert!(out.stdout.is_empty());
}
