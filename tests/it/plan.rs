//! `relay plan`: golden outputs over the fixture pairs in
//! `tests/fixtures/plan/` and `--base` against a real git repository.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plan")
}

/// Every case: `old/`, `new/`, `exit-code`, and the exact stdout per format
/// (`expected.txt`, `.md`, `.json`) or, for an invalid side, the stderr.
#[test]
fn plan_matches_the_golden_files() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 4, "the plan catalogue shrank");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let code: i32 = std::fs::read_to_string(case.join("exit-code"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        for (format, file) in [
            ("text", "expected.txt"),
            ("markdown", "expected.md"),
            ("json", "expected.json"),
        ] {
            let out = relay()
                .current_dir(case)
                .args(["plan", "old", "new", "--format", format])
                .output()
                .unwrap();
            if out.status.code() != Some(code) {
                failures.push(format!(
                    "{name} {format}: exit {:?}, want {code}: {out:?}",
                    out.status.code()
                ));
            }
            let (got, file) = match std::fs::read_to_string(case.join(file)) {
                Ok(want) => (String::from_utf8(out.stdout).unwrap(), (want, file)),
                Err(_) => (
                    String::from_utf8(out.stderr).unwrap(),
                    (
                        std::fs::read_to_string(case.join("expected-stderr.txt")).unwrap(),
                        "expected-stderr.txt",
                    ),
                ),
            };
            if got != file.0 {
                failures.push(format!(
                    "{name} {format} ({}):\n--- want\n{}\n--- got\n{got}",
                    file.1, file.0
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn plan_never_prints_a_key_value() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let new = TempConfig::new(&[("all.yaml", &MINIMAL.replace("upstream-m1", "upstream-m2"))]);
    for format in ["text", "markdown", "json"] {
        let out = relay()
            .args(["plan", "--format", format])
            .arg(cfg.dir())
            .arg(new.dir())
            .env("RELAY_TEST_HOST_KEY", "sk-live-must-not-appear")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(all.contains("upstream-m2"), "{all}");
        assert!(!all.contains("sk-live"), "{all}");
    }
}

#[test]
fn plan_usage_errors_exit_2() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    for args in [
        vec!["plan".to_string()],
        vec!["plan".into(), cfg.dir().display().to_string()],
        vec![
            "plan".into(),
            "/nonexistent/a".into(),
            "/nonexistent/b".into(),
        ],
        vec![
            "plan".into(),
            "--base".into(),
            "HEAD".into(),
            "/nonexistent/relay".into(),
        ],
        // Not inside a repository.
        vec![
            "plan".into(),
            "--base".into(),
            "HEAD".into(),
            cfg.dir().display().to_string(),
        ],
    ] {
        let out = relay().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

fn git(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs (the test builds a repository with it; relay itself does not use it)");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    out
}

fn plan_in(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = relay()
        .current_dir(dir)
        .arg("plan")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `--base REV` reads the config directory's path at REV straight from the
/// repository: branches, `HEAD~N`, abbreviated ids, remote-tracking refs
/// of a clone, a directory that did not exist yet, an invalid old side.
#[test]
fn plan_base_reads_the_config_dir_at_a_revision() {
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    let cfg = repo.join("deploy/config.d");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(repo.join("README"), "config repo\n").unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "no config yet"]);
    std::fs::write(cfg.join("all.yaml"), MINIMAL).unwrap();
    // Not YAML: never read.
    std::fs::write(cfg.join("notes.txt"), "kind: nonsense").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "v1"]);
    std::fs::write(
        cfg.join("all.yaml"),
        MINIMAL.replace(
            "upstream: upstream-m1",
            "upstream: upstream-m1\npriority: 5",
        ),
    )
    .unwrap();
    git(&repo, &["commit", "-qam", "v2"]);

    // Clean work tree against HEAD: nothing to plan.
    let (code, out, err) = plan_in(&repo, &["--base", "HEAD", "deploy/config.d"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("HEAD:deploy/config.d → deploy/config.d: no changes"),
        "{out}"
    );

    // From inside the config dir, by abbreviated id of v1.
    let v1 = String::from_utf8(git(&repo, &["rev-parse", "--short=7", "HEAD~1"]).stdout).unwrap();
    let v1 = v1.trim();
    let (code, out, err) = plan_in(&cfg, &["--base", v1, "."]);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(out.contains("binding m1-mock: priority 0 → 5"), "{out}");
    assert!(out.contains(&format!("{v1}:deploy/config.d")), "{out}");

    // An uncommitted edit shows against HEAD; RELAY_CONFIG_DIR is the default dir.
    std::fs::write(cfg.join("extra.yaml"), "kind: User\nname: carol\nrole: viewer\npassword_hash: \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\"\n").unwrap();
    let out = relay()
        .current_dir(&repo)
        .args(["plan", "--base", "main", "--format", "markdown"])
        .env("RELAY_CONFIG_DIR", "deploy/config.d")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.contains("+ user carol (added, role viewer)"), "{md}");
    std::fs::remove_file(cfg.join("extra.yaml")).unwrap();

    // Before the directory existed: everything is added.
    let (code, out, err) = plan_in(&repo, &["--base", "HEAD~2", "deploy/config.d"]);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(err.contains("does not exist at HEAD~2"), "{err}");
    assert!(
        out.contains("+ model m1 (added)") && out.contains("+ host mock (added)"),
        "{out}"
    );

    // A clone has the base branch as `origin/main` (what CI compares to).
    let clone = root.path().join("clone");
    git(
        root.path(),
        &[
            "clone",
            "-q",
            repo.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    std::fs::write(
        clone.join("deploy/config.d/all.yaml"),
        MINIMAL.replace("m1-latest", "m1-newest"),
    )
    .unwrap();
    let (code, out, err) = plan_in(&clone, &["--base", "origin/main", "deploy/config.d"]);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(
        out.contains("+ alias m1-newest") && out.contains("- alias m1-latest"),
        "{out}"
    );

    // An unknown revision is a usage error that mentions fetch-depth.
    let (code, _, err) = plan_in(&clone, &["--base", "origin/nope", "deploy/config.d"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("unknown revision `origin/nope`") && err.contains("fetch-depth"),
        "{err}"
    );

    // An invalid old side: exit 1, problems named at REV:path.
    std::fs::write(
        cfg.join("all.yaml"),
        MINIMAL.replace("host: mock", "host: mokc"),
    )
    .unwrap();
    git(&repo, &["commit", "-qam", "broken"]);
    std::fs::write(cfg.join("all.yaml"), MINIMAL).unwrap();
    let (code, _, err) = plan_in(&repo, &["--base", "HEAD", "deploy/config.d"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "HEAD:deploy/config.d/all.yaml:16:7: Binding/m1-mock: host: host `mokc` does not exist"
        ),
        "{err}"
    );
}
