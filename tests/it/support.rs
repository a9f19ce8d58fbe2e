//! Test harness: run the real `relay` binary against temp directories.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_relay");
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// Every variable relay reads, cleared so the developer's shell cannot leak in.
const RELAY_VARS: &[&str] = &[
    "RELAY_CONFIG_DIR",
    "RELAY_DATA_DIR",
    "RELAY_DATABASE_URL",
    "RELAY_STATE_URL",
    "RELAY_PORT",
    "RELAY_CONTROL_PORT",
    "RELAY_BIND",
    "RELAY_MASTER_KEY",
    "RELAY_ADMIN_TOKEN",
    "RELAY_COOKIE_SECURE",
    "RELAY_TRUSTED_PROXIES",
    "RELAY_LOG",
    "RELAY_LOG_FORMAT",
    "RELAY_RECIPIENT",
    "RELAY_CONTROL_BIND",
    "RELAY_MASTER_KEY_FILE",
    "RELAY_ADMIN_TOKEN_FILE",
    "RELAY_METRICS_TOKEN",
    "RELAY_METRICS_TOKEN_FILE",
    "RELAY_DATABASE_URL_FILE",
    "RELAY_STATE_URL_FILE",
    "RELAY_DRAIN_DELAY",
    "RELAY_SHUTDOWN_TIMEOUT",
    "RELAY_PROBE_URL",
    "RELAY_USAGE_RETENTION",
    "RELAY_ACCESS_LOG",
    "RELAY_ACCESS_LOG_SAMPLE",
    "RELAY_HEADER_TIMEOUT",
    "RELAY_IDLE_TIMEOUT",
    "RELAY_BODY_TIMEOUT",
    "RELAY_MAX_CONNECTIONS",
    "RELAY_CONTROL_MAX_CONNECTIONS",
    "RELAY_BODY_BUDGET",
    "RELAY_KEY_LOOKUP_RATE",
    "RELAY_CONTROL_URL",
];

/// A `relay` command with a clean environment.
pub fn relay() -> Command {
    let mut cmd = Command::new(BIN);
    for v in RELAY_VARS {
        cmd.env_remove(v);
    }
    cmd
}

/// A minimal valid config: one host, one model, one binding, one policy.
pub const MINIMAL: &str = r#"
kind: Host
name: mock
base_url: http://127.0.0.1:9/v1
keys:
  - name: primary
    env: RELAY_TEST_HOST_KEY
---
kind: Model
name: m1
aliases: [m1-latest]
---
kind: Binding
name: m1-mock
model: m1
host: mock
adapter: openai
upstream: upstream-m1
---
kind: Policy
name: default
models: ["m*"]
"#;

pub struct TempConfig {
    pub root: tempfile::TempDir,
}

impl TempConfig {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("config")).unwrap();
        let t = TempConfig { root };
        for (name, text) in files {
            t.write(name, text);
        }
        t
    }

    pub fn dir(&self) -> PathBuf {
        self.root.path().join("config")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Writes atomically (temp file + rename), as editors and git do.
    pub fn write(&self, name: &str, text: &str) {
        let path = self.dir().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("tmp~");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir().join(name)).unwrap();
    }
}

/// A running `relay serve`, killed on drop.
pub struct Relay {
    pub child: Child,
    pub data_url: String,
    pub control_url: Option<String>,
    logs: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
}

pub struct RelayBuilder {
    cmd: Command,
    expect_control: bool,
}

impl RelayBuilder {
    /// A `relay serve` command the caller built (another user, a clean
    /// environment): started and awaited like any other.
    pub fn from_command(cmd: Command) -> Self {
        RelayBuilder {
            cmd,
            expect_control: true,
        }
    }

    pub fn new(config_dir: &Path, data_dir: &Path) -> Self {
        let mut cmd = relay();
        cmd.arg("serve")
            .env("RELAY_CONFIG_DIR", config_dir)
            .env("RELAY_DATA_DIR", data_dir)
            .env("RELAY_BIND", "127.0.0.1")
            .env("RELAY_PORT", "0")
            .env("RELAY_CONTROL_PORT", "0")
            .env("RELAY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RELAY_LOG", "info,relay=debug")
            .env("RELAY_TEST_HOST_KEY", "sk-test-host-key-value")
            // Tests stop relay with SIGTERM; a drain test sets its own.
            .env("RELAY_DRAIN_DELAY", "0s");
        RelayBuilder {
            cmd,
            expect_control: true,
        }
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        if k == "RELAY_CONTROL_PORT" && v.as_ref() == "off" {
            self.expect_control = false;
        }
        self.cmd.env(k, v);
        self
    }

    /// The working directory of `relay serve` (relative paths resolve there).
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    pub fn start(mut self) -> Relay {
        self.cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = self.cmd.spawn().expect("spawn relay");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut relay = Relay {
            child,
            data_url: String::new(),
            control_url: None,
            logs,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = relay.child.try_wait().unwrap() {
                panic!("relay exited early with {status}:\n{}", relay.logs());
            }
            let data = relay.find_addr("data plane listening on ");
            let control = relay.find_addr("control plane listening on ");
            if let Some(d) = data {
                if !self.expect_control || control.is_some() {
                    relay.data_url = d;
                    relay.control_url = control;
                    return relay;
                }
            }
            assert!(
                Instant::now() < deadline,
                "relay did not start:\n{}",
                relay.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Relay {
    pub fn start(config_dir: &Path, data_dir: &Path) -> Relay {
        RelayBuilder::new(config_dir, data_dir).start()
    }

    fn find_addr(&self, marker: &str) -> Option<String> {
        let logs = self.logs.lock().unwrap();
        logs.iter().find_map(|l| {
            let i = l.find(marker)?;
            let rest = &l[i + marker.len()..];
            Some(
                rest.split_whitespace()
                    .next()?
                    .trim_end_matches(|c: char| !c.is_ascii_digit())
                    .to_string(),
            )
        })
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits (5 s at most) until a log line contains `needle`: stderr is
    /// read by another thread, so a line written just now may not be in yet.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no log line contains {needle:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn control(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.control_url.as_ref().expect("control plane enabled")
        )
    }

    pub fn data(&self, path: &str) -> String {
        format!("{}{path}", self.data_url)
    }

    /// GET on the control plane with the admin token.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        let r = self
            .http
            .get(self.control(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// POST on the control plane with the admin token (no body).
    pub async fn admin_post(&self, path: &str) -> reqwest::Response {
        self.http
            .post(self.control(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// DELETE on the control plane with the admin token.
    pub async fn admin_delete(&self, path: &str) -> reqwest::Response {
        self.http
            .delete(self.control(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn status(&self) -> serde_json::Value {
        self.admin_get("/api/config/status").await
    }

    /// Polls `/api/config/status` until `pred` holds (10 s at most).
    pub async fn wait_status(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.status().await;
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last status: {s:#}\nlogs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "relay did not stop on SIGTERM:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config whose hosts point at `mock`: `openai` (openai adapter) and
/// `anthropic` (anthropic adapter) hosts, each with one key from
/// `RELAY_TEST_OPENAI_KEY` / `RELAY_TEST_ANTHROPIC_KEY`; models `gpt-test`
/// (alias `gpt-latest`), `claude-test`, `embed-test` (openai), `unbound`
/// (no enabled binding); policies `default` (everything), `gpt-only`.
pub fn mock_config(base_url: &str) -> String {
    format!(
        r#"
kind: Host
name: openai
base_url: {base_url}
timeout: 5s
keys:
  - name: primary
    env: RELAY_TEST_OPENAI_KEY
---
kind: Host
name: anthropic
base_url: {base_url}
timeout: 5s
keys:
  - name: primary
    env: RELAY_TEST_ANTHROPIC_KEY
---
kind: Model
name: gpt-test
aliases: [gpt-latest]
pricing: {{ input_per_mtok: 1.0, output_per_mtok: 2.0, cache_read_per_mtok: 0.5 }}
---
kind: Model
name: claude-test
pricing: {{ input_per_mtok: 3.0, output_per_mtok: 15.0, cache_read_per_mtok: 0.3, cache_write_per_mtok: 3.75 }}
---
kind: Model
name: embed-test
---
kind: Model
name: unbound
---
kind: Binding
name: gpt-test-openai
model: gpt-test
host: openai
adapter: openai
upstream: gpt-upstream-v1
---
kind: Binding
name: claude-test-anthropic
model: claude-test
host: anthropic
adapter: anthropic
upstream: claude-upstream-v1
---
kind: Binding
name: embed-test-openai
model: embed-test
host: openai
adapter: openai
upstream: embed-upstream-v1
---
kind: Binding
name: unbound-off
model: unbound
host: openai
adapter: openai
upstream: x
enabled: false
---
kind: Policy
name: default
models: ["*"]
---
kind: Policy
name: gpt-only
models: ["gpt-*"]
"#
    )
}

/// A database for one test: a fresh PostgreSQL database when `postgres`,
/// else SQLite in the test's data dir.
pub enum Db {
    Sqlite,
    Postgres(PgDatabase),
    /// A database owned by someone else (shared between processes).
    Url(String),
}

impl Db {
    pub fn url(&self) -> Option<String> {
        match self {
            Db::Sqlite => None,
            Db::Postgres(p) => Some(p.url.clone()),
            Db::Url(u) => Some(u.clone()),
        }
    }
}

/// A uniquely named database on the test PostgreSQL, dropped afterwards.
pub struct PgDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

pub fn postgres_admin_url() -> String {
    std::env::var("RELAY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl PgDatabase {
    /// Fails loudly when PostgreSQL is not reachable: these tests must not
    /// be skipped silently (`ci/services.sh` starts it).
    pub fn create() -> PgDatabase {
        let admin_url = postgres_admin_url();
        let name = format!("relay_t_{}", std::process::id()) + &format!("_{}", rand_suffix());
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap();
        PgDatabase {
            url: format!("{base}/{name}"),
            name,
            admin_url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &self.admin_url,
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}_{}", N.fetch_add(1, Ordering::Relaxed), nanos)
}

pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-qtAc", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "PostgreSQL at {url} is required for this test (ci/services.sh starts it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Mints a relay key with the CLI against the given data dir / database.
pub fn mint_key(data_dir: &Path, db: &Db, policy: &str) -> (String, String) {
    let mut cmd = relay();
    cmd.args([
        "keys",
        "create",
        "--policy",
        policy,
        "--json",
        "--config-dir",
        "/nonexistent",
    ])
    .env("RELAY_DATA_DIR", data_dir);
    if let Some(url) = db.url() {
        cmd.env("RELAY_DATABASE_URL", url);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

/// Runs `relay keys <args>` against the given store.
pub fn keys_cmd(data_dir: &Path, db: &Db, args: &[&str]) -> std::process::Output {
    let mut cmd = relay();
    cmd.arg("keys").args(args).env("RELAY_DATA_DIR", data_dir);
    if let Some(url) = db.url() {
        cmd.env("RELAY_DATABASE_URL", url);
    }
    cmd.output().unwrap()
}

/// A relay in front of a mock upstream, with a minted key.
pub struct Stack {
    pub mock: crate::mock_upstream::MockUpstream,
    pub cfg: TempConfig,
    pub relay: Relay,
    pub key: String,
    pub key_id: String,
    pub db: Db,
}

impl Stack {
    pub async fn start(db: Db) -> Stack {
        Self::start_with(db, |b| b).await
    }

    pub async fn start_with(db: Db, tweak: impl FnOnce(RelayBuilder) -> RelayBuilder) -> Stack {
        let mock = crate::mock_upstream::MockUpstream::start().await;
        let cfg = TempConfig::new(&[("all.yaml", &mock_config(&mock.base_url()))]);
        let (key_id, key) = mint_key(&cfg.data_dir(), &db, "default");
        let mut b = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
            .env("RELAY_TEST_OPENAI_KEY", "sk-upstream-openai")
            .env("RELAY_TEST_ANTHROPIC_KEY", "sk-upstream-anthropic");
        if let Some(url) = db.url() {
            b = b.env("RELAY_DATABASE_URL", url);
        }
        let relay = tweak(b).start();
        Stack {
            mock,
            cfg,
            relay,
            key,
            key_id,
            db,
        }
    }

    /// Mints a key through the admin API, which refreshes the key table at
    /// once (a CLI-minted key takes up to one poll interval to appear).
    pub async fn mint(&self, policy: &str) -> (String, String) {
        let r = self
            .relay
            .http
            .post(self.relay.control("/api/keys"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "policy": policy }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.unwrap();
        (
            v["id"].as_str().unwrap().to_string(),
            v["key"].as_str().unwrap().to_string(),
        )
    }

    /// Clears every breaker (tests that inject key faults one after another).
    pub async fn reset_breakers(&self) {
        assert_eq!(
            self.relay.admin_post("/api/breakers/reset").await.status(),
            200
        );
    }

    pub async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: serde_json::Value,
    ) -> reqwest::Response {
        let mut r = self.relay.http.post(self.relay.data(path)).json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send().await.unwrap()
    }
}

/// Rate limits count per calendar minute: a test that fills one sleeps
/// past the next minute boundary when that boundary is under 5 s away.
pub async fn clear_of_minute_boundary() {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        % 60_000;
    if ms > 55_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - ms + 100)).await;
    }
}

/// Polls the usage API until `want` records of `key_id` are there (10 s at most).
pub async fn usage_for(relay: &Relay, key_id: &str, want: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = relay
            .admin_get(&format!("/api/usage?key_id={key_id}"))
            .await;
        // Totals and records are two queries: wait until both see them.
        if v["records"].as_array().unwrap().len() >= want
            && v["totals"]["requests"].as_u64().unwrap_or(0) >= want as u64
        {
            return v;
        }
        assert!(Instant::now() < deadline, "usage not recorded: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `event:` names of a whole SSE body.
pub fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("event: "))
                .map(str::to_string)
        })
        .collect()
}
