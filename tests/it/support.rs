//! Test harness: run the real `relay` binary against temp directories.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_relay");
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

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
    "RELAY_LOG",
    "RELAY_LOG_FORMAT",
    "RELAY_RECIPIENT",
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
            .env("RELAY_TEST_HOST_KEY", "sk-test-host-key-value");
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
