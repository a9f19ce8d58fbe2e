//! The GitOps loop against a real `relay serve` (issue 12): hot reload with a
//! relative or symlinked config directory (git-sync's swap), the served
//! revision read from a real git repository (`<sha>-dirty`), a key minted on
//! one replica working on another at once, and `file:` keys rotating
//! without a restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

const EXTRA: &str = "kind: Model\nname: m2\n---\nkind: Binding\nname: m2-mock\nmodel: m2\nhost: mock\nadapter: openai\nupstream: u2\n";
const EXTRA3: &str = "kind: Model\nname: m3\n---\nkind: Binding\nname: m3-mock\nmodel: m3\nhost: mock\nadapter: openai\nupstream: u3\n";

/// Writes atomically (temp file + rename), as editors and git do.
fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Points `link` at `target` atomically (git-sync: new symlink, renamed over).
fn swap_symlink(target: &str, link: &Path) {
    let name = link.file_name().unwrap().to_str().unwrap();
    let tmp = link.with_file_name(format!("{name}_tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

fn models(s: &Value) -> u64 {
    s["objects"]["models"].as_u64().unwrap()
}

#[tokio::test]
async fn reload_fires_with_a_relative_config_dir() {
    // The README quick start: `RELAY_CONFIG_DIR=./config` (relative to the
    // server's working directory).
    let cfg = TempConfig::new(&[("base.yaml", MINIMAL)]);
    let relay = RelayBuilder::new(Path::new("./config"), &cfg.data_dir())
        .current_dir(cfg.root.path())
        .start();
    assert_eq!(models(&relay.status().await), 1);
    cfg.write("extra.yaml", EXTRA);
    relay
        .wait_status("the edit in a relative dir", |s| models(s) == 2)
        .await;
    cfg.remove("extra.yaml");
    relay
        .wait_status("the removal in a relative dir", |s| models(s) == 1)
        .await;
}

#[tokio::test]
async fn reload_follows_a_symlinked_dir_and_its_swap() {
    // git-sync: `current` -> a worktree; an update checks out a new worktree
    // and renames a new symlink over `current`. Relative, as in a container
    // whose working directory is the volume.
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    write(&root.path().join("wt-a/base.yaml"), MINIMAL);
    std::os::unix::fs::symlink("wt-a", root.path().join("current")).unwrap();
    let relay = RelayBuilder::new(Path::new("current"), &data)
        .current_dir(root.path())
        .start();
    assert_eq!(models(&relay.status().await), 1);

    // An edit inside the directory the symlink points to.
    write(&root.path().join("wt-a/extra.yaml"), EXTRA);
    relay
        .wait_status("the edit behind the symlink", |s| models(s) == 2)
        .await;

    // The swap: the new worktree's content is served.
    write(&root.path().join("wt-b/base.yaml"), MINIMAL);
    write(&root.path().join("wt-b/extra.yaml"), EXTRA);
    write(&root.path().join("wt-b/extra3.yaml"), EXTRA3);
    swap_symlink("wt-b", &root.path().join("current"));
    relay
        .wait_status("the swapped symlink", |s| models(s) == 3)
        .await;
    // The old worktree goes away (git-sync removes it) and edits there no
    // longer matter; edits in the new one do.
    std::fs::remove_dir_all(root.path().join("wt-a")).unwrap();
    std::fs::remove_file(root.path().join("wt-b/extra3.yaml")).unwrap();
    relay
        .wait_status("an edit in the new target", |s| models(s) == 2)
        .await;
    assert_eq!(relay.status().await["last_attempt_failed"], false);
}

struct Git<'a>(&'a Path);

impl Git<'_> {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.0)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn commit(&self, msg: &str) -> String {
        self.run(&["add", "-A"]);
        self.run(&["commit", "-qm", msg]);
        self.run(&["rev-parse", "HEAD"])
    }
}

async fn version(relay: &Relay) -> Value {
    reqwest::get(relay.control("/version"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn metrics(relay: &Relay) -> String {
    relay
        .http
        .get(relay.control("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_served_revision_is_the_commit_or_dirty() {
    // A repository whose config lives in a subdirectory, next to files relay
    // does not load.
    let cfg = TempConfig::new(&[("base.yaml", MINIMAL)]);
    let repo = cfg.root.path();
    std::fs::write(repo.join(".gitignore"), "data/\n").unwrap();
    std::fs::write(repo.join("README.md"), "config repo\n").unwrap();
    let git = Git(repo);
    git.run(&["init", "-q"]);
    let c1 = git.commit("first");
    let relay = Relay::start(&cfg.dir(), &cfg.data_dir());

    let s = relay.status().await;
    assert_eq!(s["revision"]["git_commit"], c1.as_str());
    assert_eq!(s["revision"]["git_revision"], c1.as_str());
    assert_eq!(s["revision"]["dirty"], false);
    assert_eq!(version(&relay).await["config_revision"], s["revision"]);

    // An uncommitted edit is served as `<sha>-dirty`, everywhere.
    cfg.write("extra.yaml", EXTRA);
    let s = relay
        .wait_status("the uncommitted edit", |s| models(s) == 2)
        .await;
    let dirty = format!("{c1}-dirty");
    assert_eq!(s["revision"]["git_revision"], dirty.as_str(), "{s:#}");
    assert_eq!(s["revision"]["dirty"], true);
    assert_eq!(version(&relay).await["config_revision"], s["revision"]);
    let short_dirty = format!("@{}-dirty\"", &c1[..12]);
    let m = metrics(&relay).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("relay_config_info{") && l.contains(&short_dirty)),
        "{m}"
    );
    let page = relay
        .http
        .get(relay.control("/"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("@{}-dirty", &c1[..12])), "{html}");
    assert!(html.contains("uncommitted changes"), "{html}");
    let applied = s["reloads_applied"].clone();

    // Committing it: the new commit, clean, with no change to the config
    // files, and without re-compiling the config.
    let c2 = git.commit("add m2");
    let s = relay
        .wait_status("the commit", |s| s["revision"]["git_commit"] == c2.as_str())
        .await;
    assert_eq!(s["revision"]["dirty"], false, "{s:#}");
    assert_eq!(s["revision"]["git_revision"], c2.as_str());
    assert_eq!(s["reloads_applied"], applied, "a HEAD move is not a reload");
    assert_eq!(version(&relay).await["config_revision"], s["revision"]);
    relay.wait_log("git HEAD moved");

    // Files relay does not load do not make it dirty; a forced reload
    // re-checks.
    std::fs::write(repo.join("README.md"), "edited, not committed\n").unwrap();
    std::fs::write(cfg.dir().join("notes.txt"), "not YAML\n").unwrap();
    let r = relay.admin_post("/api/config/reload").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["revision"]["git_revision"], c2.as_str(), "{body}");

    // Deleting a committed config file is a difference too.
    cfg.remove("extra.yaml");
    let s = relay.wait_status("the deletion", |s| models(s) == 1).await;
    assert_eq!(
        s["revision"]["git_revision"],
        format!("{c2}-dirty").as_str()
    );

    // A checkout of the first commit (what is on disk now) is clean at c1.
    git.run(&["stash", "-q", "--include-untracked"]);
    git.run(&["checkout", "-q", &c1]);
    let s = relay
        .wait_status("the checkout", |s| {
            s["revision"]["git_revision"] == c1.as_str()
        })
        .await;
    assert_eq!(models(&s), 1);
}

#[tokio::test]
async fn a_rotated_key_file_is_used_without_restart() {
    let mock = crate::mock_upstream::MockUpstream::start().await;
    // The key file lives outside the config directory (a mounted Secret),
    // referenced relative to it.
    let config = mock_config(&mock.base_url()).replace(
        "  - name: primary\n    env: RELAY_TEST_OPENAI_KEY",
        "  - name: primary\n    file: ../secrets/openai-key",
    );
    let cfg = TempConfig::new(&[("all.yaml", &config)]);
    let key_file = cfg.root.path().join("secrets/openai-key");
    write(&key_file, "sk-first\n");
    let (_, key) = mint_key(&cfg.data_dir(), &Db::Sqlite, "default");
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_TEST_ANTHROPIC_KEY", "sk-upstream-anthropic")
        .start();
    let call = || async {
        relay
            .http
            .post(relay.data("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    };
    let sent = || {
        mock.requests()
            .last()
            .map(|r| r.headers["authorization"].to_str().unwrap().to_string())
    };
    assert_eq!(call().await.status(), 200);
    assert_eq!(
        sent().as_deref(),
        Some("Bearer sk-first"),
        "one newline trimmed"
    );

    // Rotate: the next calls use the new value, no restart, no SIGHUP.
    write(&key_file, "sk-second\n");
    let t = Instant::now();
    loop {
        assert_eq!(call().await.status(), 200);
        if sent().as_deref() == Some("Bearer sk-second") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still sending the old key:\n{}",
            relay.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The file disappears: the key leaves the pool, and the 503 says what
    // really works (not "set it and reload").
    std::fs::remove_file(&key_file).unwrap();
    let t = Instant::now();
    let body = loop {
        let r = call().await;
        if r.status() == 503 {
            break r.json::<Value>().await.unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{}", relay.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("secrets/openai-key"), "{msg}");
    assert!(msg.contains("watches the file"), "{msg}");
    assert!(!msg.contains("set it and reload"), "{msg}");

    // And it comes back when the file does.
    write(&key_file, "sk-third");
    let t = Instant::now();
    loop {
        if call().await.status() == 200 && sent().as_deref() == Some("Bearer sk-third") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{}", relay.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_unset_env_key_says_to_restart_or_use_a_file() {
    let mock = crate::mock_upstream::MockUpstream::start().await;
    let cfg = TempConfig::new(&[("all.yaml", &mock_config(&mock.base_url()))]);
    let (_, key) = mint_key(&cfg.data_dir(), &Db::Sqlite, "default");
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir()).start();
    let r = relay
        .http
        .post(relay.data("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("RELAY_TEST_OPENAI_KEY"), "{msg}");
    assert!(msg.contains("restart relay with"), "{msg}");
    assert!(msg.contains("`file:`"), "{msg}");
    assert!(!msg.contains("set it and reload"), "{msg}");
}

/// `relay_key_lookups_total{outcome=…}` from a scrape (0 when absent).
async fn lookups(relay: &Relay, outcome: &str) -> u64 {
    let m = metrics(relay).await;
    let prefix = format!("relay_key_lookups_total{{outcome=\"{outcome}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn queries(relay: &Relay) -> u64 {
    lookups(relay, "found").await + lookups(relay, "absent").await + lookups(relay, "error").await
}

#[tokio::test]
async fn a_key_minted_on_one_replica_works_on_another_at_once() {
    let pg = PgDatabase::create();
    let url = pg.url.clone();
    let a = Stack::start(Db::Postgres(pg)).await;
    let b = RelayBuilder::new(&a.cfg.dir(), &a.cfg.root.path().join("data-b"))
        .env("RELAY_DATABASE_URL", &url)
        .env("RELAY_TEST_OPENAI_KEY", "sk-upstream-openai")
        .env("RELAY_TEST_ANTHROPIC_KEY", "sk-upstream-anthropic")
        .env("RELAY_KEY_LOOKUP_RATE", "3")
        .start();
    let models_on_b = |key: String| {
        let b = &b;
        async move {
            b.http
                .get(b.data("/v1/models"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
        }
    };
    // Let the bucket fill after startup.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Minted on A, called on B at once, many times concurrently: one query.
    let (_, key) = a.mint("default").await;
    let before = queries(&b).await;
    let calls: Vec<_> = (0..8).map(|_| models_on_b(key.clone())).collect();
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status(), 200, "a new key is refused by the other replica");
    }
    assert!(queries(&b).await - before <= 1, "single flight");
    assert_eq!(models_on_b(key.clone()).await.status(), 200);

    // Garbage (bad checksum) costs no query.
    let before = queries(&b).await;
    let mut garbage = key.clone();
    garbage.replace_range(5..6, if &key[5..6] == "A" { "B" } else { "A" });
    for _ in 0..5 {
        assert_eq!(models_on_b(garbage.clone()).await.status(), 401);
    }
    assert_eq!(queries(&b).await, before, "garbage reached the store");

    // A well-formed key the store does not have: one query, then the
    // negative cache answers.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let unknown = relay::auth::key::generate().expose().to_string();
    let absent = lookups(&b, "absent").await;
    for _ in 0..3 {
        let r = models_on_b(unknown.clone()).await;
        assert_eq!(r.status(), 401);
    }
    assert_eq!(lookups(&b, "absent").await, absent + 1);
    assert!(lookups(&b, "cached").await >= 2);

    // Past the lookup rate bound (3/s here): 503 with retry-after, never a
    // false 401 and never a 200.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh: Vec<String> = (0..8)
        .map(|_| relay::auth::key::generate().expose().to_string())
        .collect();
    let calls: Vec<_> = fresh.iter().map(|k| models_on_b(k.clone())).collect();
    let mut limited = 0;
    for r in futures_util::future::join_all(calls).await {
        match r.status().as_u16() {
            401 => {}
            503 => {
                limited += 1;
                assert_eq!(r.headers()["retry-after"], "1");
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["error"]["code"], "key_lookup_unavailable", "{v}");
            }
            s => panic!("unexpected {s}"),
        }
    }
    // 8 at once against a bucket of 3 (plus what refills meanwhile).
    assert!(limited >= 1, "none of 8 limited at 3/s");
    assert!(lookups(&b, "limited").await >= limited);
    // A genuine new key in that moment: 503 (retry), then 200.
    let (_, key2) = a.mint("default").await;
    let t = Instant::now();
    loop {
        let st = models_on_b(key2.clone()).await.status();
        if st == 200 {
            break;
        }
        assert_eq!(st, 503, "a genuine key got a false {st}");
        assert!(t.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_kubernetes_secret_update_rotates_a_file_key() {
    // A mounted Secret: `openai-key -> ..data/openai-key`, `..data ->
    // ..2026_a`; an update writes `..2026_b`, renames a new `..data` over the
    // old one and removes `..2026_a`. The key file's own path never changes.
    let mock = crate::mock_upstream::MockUpstream::start().await;
    let cfg = TempConfig::new(&[]);
    let mount = cfg.root.path().join("providers");
    let version = |name: &str, value: &str| {
        std::fs::create_dir_all(mount.join(name)).unwrap();
        std::fs::write(mount.join(name).join("openai-key"), value).unwrap();
    };
    version("..2026_a", "sk-a");
    std::os::unix::fs::symlink("..2026_a", mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/openai-key", mount.join("openai-key")).unwrap();
    let config = mock_config(&mock.base_url()).replace(
        "  - name: primary\n    env: RELAY_TEST_OPENAI_KEY",
        &format!(
            "  - name: primary\n    file: {}",
            mount.join("openai-key").display()
        ),
    );
    cfg.write("all.yaml", &config);
    let (_, key) = mint_key(&cfg.data_dir(), &Db::Sqlite, "default");
    let relay = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env("RELAY_TEST_ANTHROPIC_KEY", "sk-upstream-anthropic")
        .start();
    let sent = || async {
        let r = relay
            .http
            .post(relay.data("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let last = mock.requests().last().unwrap().headers["authorization"].clone();
        last.to_str().unwrap().to_string()
    };
    assert_eq!(sent().await, "Bearer sk-a");

    version("..2026_b", "sk-b");
    swap_symlink("..2026_b", &mount.join("..data"));
    std::fs::remove_dir_all(mount.join("..2026_a")).unwrap();
    let t = Instant::now();
    while sent().await != "Bearer sk-b" {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", relay.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
