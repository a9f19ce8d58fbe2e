//! `relay serve` end to end: startup, /healthz, /version, the admin status
//! endpoint, and hot reload through every trigger.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn revision(s: &Value) -> String {
    s["revision"]["content_hash"].as_str().unwrap().to_string()
}

const EXTRA_MODEL: &str = "kind: Model\nname: m2\n---\nkind: Binding\nname: m2-mock\nmodel: m2\nhost: mock\nadapter: anthropic\nupstream: u2\n";

#[tokio::test]
async fn serves_health_version_and_guards_the_admin_api() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());

    let health: Value = reqwest::get(relay.data("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    let version: Value = reqwest::get(relay.control("/version"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(version["git_sha"].is_string());
    let status = relay.status().await;
    assert_eq!(version["config_revision"], status["revision"]);
    assert_eq!(status["objects"]["models"], 1);
    assert_eq!(status["last_failed_reload"], Value::Null);

    // No token, a wrong token: 401 with a message saying what to send.
    let r = relay
        .http
        .get(relay.control("/api/config/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{body}"
    );
    let r = relay
        .http
        .get(relay.control("/api/config/status"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = relay
        .http
        .post(relay.control("/api/config/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The admin API is not on the data plane.
    let r = relay
        .http
        .get(relay.data("/api/config/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let status = relay.stop();
    assert!(status.success(), "graceful shutdown exits 0: {status}");
}

#[tokio::test]
async fn admin_api_is_closed_without_a_configured_token() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env_remove("RELAY_ADMIN_TOKEN")
        .start();
    let r = relay
        .http
        .get(relay.control("/api/config/status"))
        .bearer_auth("")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RELAY_ADMIN_TOKEN"),
        "{body}"
    );
    // /version stays public.
    assert_eq!(
        reqwest::get(relay.control("/version"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn control_port_off_disables_the_control_plane() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_CONTROL_PORT", "off")
        .start();
    assert!(relay.control_url.is_none());
    assert!(relay.logs().contains("control plane disabled"));
    assert_eq!(
        reqwest::get(relay.data("/healthz")).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn edits_additions_deletions_and_breakage_are_handled_live() {
    let cfg = TempConfig::new(&[("base.yaml", MINIMAL)]);
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    let first = relay.status().await;
    let rev0 = revision(&first);

    // Add a file.
    cfg.write("more/m2.yaml", EXTRA_MODEL);
    let s = relay
        .wait_status("the added model", |s| s["objects"]["models"] == 2)
        .await;
    let rev1 = revision(&s);
    assert_ne!(rev0, rev1);
    assert_eq!(s["reloads_applied"], 1);
    let version: Value = reqwest::get(relay.control("/version"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["config_revision"]["content_hash"], rev1.as_str());

    // Edit it.
    cfg.write("more/m2.yaml", &EXTRA_MODEL.replace("m2", "m3"));
    let s = relay.wait_status("the edit", |s| revision(s) != rev1).await;
    assert_eq!(s["objects"]["models"], 2);

    // Break it: the last good snapshot keeps serving and the failure is visible.
    let good = revision(&s);
    cfg.write("more/m2.yaml", "kind: Model\nname: m3\nbogus_field: 1\n");
    let s = relay
        .wait_status("the rejected reload", |s| s["last_attempt_failed"] == true)
        .await;
    assert_eq!(
        revision(&s),
        good,
        "an invalid change never replaces a valid snapshot"
    );
    assert_eq!(s["reloads_failed"], 1);
    let failed = &s["last_failed_reload"];
    assert!(failed["at"].is_string());
    assert_ne!(failed["revision"]["content_hash"], good.as_str());
    let p = &failed["problems"][0];
    assert_eq!(p["file"], "more/m2.yaml");
    assert_eq!(p["line"], 3);
    assert_eq!(p["field"], "bogus_field");
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `bogus_field`"),
        "{p}"
    );
    relay.wait_log("config reload rejected");
    assert_eq!(
        reqwest::get(relay.data("/healthz")).await.unwrap().status(),
        200
    );

    // Delete the broken file: valid again, back to one model.
    cfg.remove("more/m2.yaml");
    let s = relay
        .wait_status("the deletion", |s| {
            s["objects"]["models"] == 1 && s["last_attempt_failed"] == false
        })
        .await;
    assert_eq!(revision(&s), rev0, "same content, same revision");
    // The failure stays on record for the operator.
    assert!(s["last_failed_reload"].is_object());
}

#[tokio::test]
async fn an_idle_relay_does_not_reload_itself() {
    // Reloading opens every file; the watcher must not take that for a change.
    let cfg = TempConfig::new(&[("base.yaml", MINIMAL)]);
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    cfg.write("base.yaml", &format!("{MINIMAL}\n# touched\n"));
    relay
        .wait_status("the edit", |s| s["reloads_applied"] == 1)
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let unchanged = relay.logs().matches("config directory unchanged").count();
    assert!(
        unchanged <= 1,
        "reload loop: {unchanged} no-op reloads in 1.5 s\n{}",
        relay.logs()
    );
    assert_eq!(relay.status().await["reloads_applied"], 1);
}

#[tokio::test]
async fn sighup_and_the_admin_endpoint_force_a_reload() {
    let cfg = TempConfig::new(&[("base.yaml", MINIMAL)]);
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    relay.signal("HUP");
    relay
        .wait_status("SIGHUP reload", |s| s["reloads_applied"] == 1)
        .await;
    relay.wait_log("SIGHUP");

    let r = relay.admin_post("/api/config/reload").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outcome"], "applied");
    assert_eq!(relay.status().await["reloads_applied"], 2);

    // An invalid directory: the endpoint answers 422 with the problems.
    std::fs::write(
        cfg.dir().join("bad.yaml"),
        "kind: Binding\nname: b\nmodel: nope\nhost: mock\nadapter: openai\nupstream: x\n",
    )
    .unwrap();
    // Reload explicitly (the watcher may also fire; either way it is rejected).
    let r = relay.admin_post("/api/config/reload").await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outcome"], "rejected");
    assert!(
        body["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("model `nope` does not exist"),
        "{body}"
    );
}

#[tokio::test]
async fn configmap_style_symlink_swap_is_picked_up() {
    // Kubernetes mounts a ConfigMap as: ..2024_a/ (real files), ..data ->
    // ..2024_a, and visible symlinks base.yaml -> ..data/base.yaml. An update
    // writes ..2024_b, swaps ..data atomically with a rename, removes ..2024_a.
    let cfg = TempConfig::new(&[]);
    let dir = cfg.dir();
    let make = |name: &str, text: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("base.yaml"), text).unwrap();
    };
    make("..2024_a", MINIMAL);
    std::os::unix::fs::symlink("..2024_a", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/base.yaml", dir.join("base.yaml")).unwrap();
    let relay = Relay::start(&dir, &cfg.data_dir());
    let s = relay.status().await;
    assert_eq!(
        s["objects"]["models"], 1,
        "hidden ..dirs are not read twice"
    );

    make("..2024_b", &format!("{MINIMAL}---\n{EXTRA_MODEL}"));
    std::os::unix::fs::symlink("..2024_b", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2024_a")).unwrap();
    relay
        .wait_status("the swapped ConfigMap", |s| s["objects"]["models"] == 2)
        .await;
}

#[tokio::test]
async fn a_deleted_and_recreated_directory_is_watched_again() {
    let cfg = TempConfig::new(&[("base.yaml", MINIMAL)]);
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    std::fs::remove_dir_all(cfg.dir()).unwrap();
    relay
        .wait_status("the failed reload of a missing dir", |s| {
            s["last_attempt_failed"] == true
        })
        .await;
    assert_eq!(
        relay.status().await["objects"]["models"],
        1,
        "still serving"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::create_dir(cfg.dir()).unwrap();
    cfg.write("base.yaml", &format!("{MINIMAL}---\n{EXTRA_MODEL}"));
    relay
        .wait_status("the re-created dir", |s| {
            s["objects"]["models"] == 2 && s["last_attempt_failed"] == false
        })
        .await;
    // And it keeps watching the new directory.
    cfg.write("base.yaml", MINIMAL);
    relay
        .wait_status("an edit in the re-created dir", |s| {
            s["objects"]["models"] == 1
        })
        .await;
}

#[test]
fn an_invalid_config_at_startup_exits_non_zero_with_validate_s_messages() {
    let cfg = TempConfig::new(&[(
        "base.yaml",
        &MINIMAL.replace("adapter: openai", "adapter: opneai"),
    )]);
    let out = relay()
        .arg("serve")
        .env("RELAY_CONFIG_DIR", cfg.dir())
        .env("RELAY_DATA_DIR", cfg.data_dir())
        .env("RELAY_PORT", "0")
        .env("RELAY_CONTROL_PORT", "0")
        .env("RELAY_TEST_HOST_KEY", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let validate = relay()
        .arg("validate")
        .arg(cfg.dir())
        .env("RELAY_TEST_HOST_KEY", "x")
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&validate.stdout);
    assert!(!expected.trim().is_empty());
    for line in expected.lines() {
        assert!(
            stderr.contains(line),
            "serve must print `{line}`; got:\n{stderr}"
        );
    }
    assert!(stderr.contains("unknown adapter \"opneai\""), "{stderr}");
}

#[tokio::test]
async fn sealed_keys_decrypt_with_the_master_key_and_secrets_never_leak() {
    let master = relay().arg("keygen").output().unwrap();
    let master = String::from_utf8(master.stdout).unwrap();
    let identity = master
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    let sealed = seal_with(&identity, "sk-sealed-secret-value-42");
    let host = format!(
        "kind: Host\nname: mock\nbase_url: http://127.0.0.1:9/v1\nkeys:\n  - name: sealed\n    age: |\n{}\n  - name: fromenv\n    env: RELAY_TEST_HOST_KEY\n",
        sealed.lines().map(|l| format!("      {l}")).collect::<Vec<_>>().join("\n")
    );
    let rest = MINIMAL.split_once("---").unwrap().1;
    let cfg = TempConfig::new(&[("host.yaml", &host), ("rest.yaml", rest)]);

    let server = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_MASTER_KEY", &identity)
        .env("RELAY_LOG", "trace")
        .start();
    let status = server.status().await;
    server.signal("HUP");
    server
        .wait_status("reload", |s| s["reloads_applied"] == 1)
        .await;
    let bodies = format!("{status}{}", server.admin_get("/version").await);
    let logs = server.logs();
    for secret in [
        "sk-sealed-secret-value-42",
        "sk-test-host-key-value",
        identity.as_str(),
    ] {
        assert!(!logs.contains(secret), "secret in logs");
        assert!(!bodies.contains(secret), "secret in API output");
    }
    drop(server);

    // A different master key: startup fails naming the host and key.
    let other = String::from_utf8(relay().arg("keygen").output().unwrap().stdout).unwrap();
    let other = other
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    let out = relay()
        .arg("serve")
        .env("RELAY_CONFIG_DIR", cfg.dir())
        .env("RELAY_DATA_DIR", cfg.data_dir())
        .env("RELAY_MASTER_KEY", other)
        .env("RELAY_TEST_HOST_KEY", "x")
        .env("RELAY_PORT", "0")
        .env("RELAY_CONTROL_PORT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Host/mock: keys[0].age: key `sealed`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("RELAY_MASTER_KEY changed since it was sealed"),
        "{stderr}"
    );
}

#[tokio::test]
async fn first_boot_generates_a_private_master_key_once() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env_remove("RELAY_MASTER_KEY")
        .start();
    assert!(
        relay.logs().contains("generated a new master key"),
        "{}",
        relay.logs()
    );
    let key_file = cfg.data_dir().join("master.key");
    let first = std::fs::read_to_string(&key_file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(relay.stop().success());

    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());
    assert!(!relay.logs().contains("generated a new master key"));
    assert!(relay
        .logs()
        .contains("using master key from the data directory"));
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), first);
}

/// `relay secret encrypt` with the recipient derived from `identity`.
pub fn seal_with(identity: &str, value: &str) -> String {
    use std::io::Write;
    let mut child = relay()
        .args(["secret", "encrypt"])
        .env("RELAY_MASTER_KEY", identity)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}
