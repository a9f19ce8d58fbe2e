//! The command line: validate's exit codes and formats, keygen, sealing.

use std::io::Write;
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::support::*;

fn run_with_stdin(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = relay();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    // relay may exit on a usage error before reading stdin: a broken pipe here
    // is not the test's concern, the exit status is.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn keygen() -> (String, String) {
    let out = relay().arg("keygen").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let identity = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap()
        .to_string();
    let recipient = text
        .split_whitespace()
        .find(|w| w.starts_with("age1"))
        .unwrap()
        .to_string();
    (identity, recipient)
}

#[test]
fn validate_exit_codes_are_0_valid_1_invalid_2_io() {
    let good = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let out = relay()
        .arg("validate")
        .arg(good.dir())
        .env("RELAY_TEST_HOST_KEY", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid"));

    let bad = TempConfig::new(&[("all.yaml", &MINIMAL.replace("host: mock", "host: mokc"))]);
    let out = relay()
        .arg("validate")
        .arg(bad.dir())
        .env("RELAY_TEST_HOST_KEY", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let dir = bad.dir().display().to_string();
    assert_eq!(
        stdout.trim(),
        format!("{dir}/all.yaml:16:7: Binding/m1-mock: host: host `mokc` does not exist; did you mean `mock`?")
    );

    let out = relay()
        .arg("validate")
        .arg("/nonexistent/relay-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config directory"));

    let out = relay()
        .args(["validate", "--format", "yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn validate_reads_relay_config_dir_and_warnings_do_not_fail_unless_strict() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    // RELAY_TEST_HOST_KEY unset: a warning, not an error.
    let out = relay()
        .arg("validate")
        .env("RELAY_CONFIG_DIR", cfg.dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(
            "warning: Host/mock: keys[0].env: environment variable RELAY_TEST_HOST_KEY is not set"
        ),
        "{stdout}"
    );
    let out = relay()
        .args(["validate", "--strict"])
        .arg(cfg.dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn validate_json_lists_every_problem_with_position_and_severity() {
    let cfg = TempConfig::new(&[
        (
            "a.yaml",
            &MINIMAL.replace("adapter: openai", "adapter: grpc"),
        ),
        ("b.yaml", "kind: Model\nname: m1\n"),
    ]);
    let out = relay()
        .args(["validate", "--format", "json"])
        .arg(cfg.dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let problems = v["problems"].as_array().unwrap();
    let errors: Vec<&Value> = problems
        .iter()
        .filter(|p| p["severity"] == "error")
        .collect();
    assert_eq!(errors.len(), 2, "{problems:#?}");
    let adapter = errors.iter().find(|p| p["field"] == "adapter").unwrap();
    assert_eq!(adapter["kind"], "Binding");
    assert_eq!(adapter["name"], "m1-mock");
    assert_eq!(adapter["line"], 17);
    assert_eq!(adapter["column"], 10);
    assert!(adapter["file"].as_str().unwrap().ends_with("a.yaml"));
    let dup = errors
        .iter()
        .find(|p| {
            p["message"]
                .as_str()
                .unwrap()
                .contains("duplicate Model name")
        })
        .unwrap();
    assert!(dup["file"].as_str().unwrap().ends_with("b.yaml"));
    assert!(problems.iter().any(|p| p["severity"] == "warning"));
}

#[test]
fn sealing_needs_only_the_recipient_and_decrypt_needs_the_master_key() {
    let (identity, recipient) = keygen();
    let out = run_with_stdin(
        &["secret", "encrypt", "--recipient", &recipient],
        &[],
        "sk-abc\n",
    );
    assert!(out.status.success(), "{out:?}");
    let sealed = String::from_utf8(out.stdout).unwrap();
    assert!(sealed.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(!sealed.contains("sk-abc"));

    let out = run_with_stdin(
        &["secret", "decrypt"],
        &[("RELAY_MASTER_KEY", &identity)],
        &sealed,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "sk-abc\n",
        "the trailing newline of echo is not sealed"
    );

    let (other, _) = keygen();
    let out = run_with_stdin(
        &["secret", "decrypt"],
        &[("RELAY_MASTER_KEY", &other)],
        &sealed,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RELAY_MASTER_KEY changed"));

    // No recipient anywhere: a usage error that says what to pass.
    let empty = tempfile::tempdir().unwrap();
    let out = run_with_stdin(
        &["secret", "encrypt"],
        &[("RELAY_DATA_DIR", empty.path().to_str().unwrap())],
        "x",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--recipient"));
    let out = run_with_stdin(&["secret", "encrypt", "--recipient", "age1nope"], &[], "x");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_decrypt_proves_every_sealed_value() {
    let (identity, recipient) = keygen();
    let sealed = String::from_utf8(
        run_with_stdin(
            &["secret", "encrypt"],
            &[("RELAY_RECIPIENT", &recipient)],
            "sk-value",
        )
        .stdout,
    )
    .unwrap();
    let indented: String = sealed.lines().map(|l| format!("      {l}\n")).collect();
    let host = format!("kind: Host\nname: mock\nbase_url: http://127.0.0.1:9/v1\nkeys:\n  - name: sealed\n    age: |\n{indented}");
    let rest = MINIMAL.split_once("---").unwrap().1;
    let cfg = TempConfig::new(&[("host.yaml", &host), ("rest.yaml", rest)]);

    let plain = relay().arg("validate").arg(cfg.dir()).output().unwrap();
    assert_eq!(plain.status.code(), Some(0), "{plain:?}");
    let ok = relay()
        .args(["validate", "--decrypt"])
        .arg(cfg.dir())
        .env("RELAY_MASTER_KEY", &identity)
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let (other, _) = keygen();
    let bad = relay()
        .args(["validate", "--decrypt"])
        .arg(cfg.dir())
        .env("RELAY_MASTER_KEY", &other)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8(bad.stdout).unwrap();
    assert!(
        stdout.contains(
            "host.yaml:7:7: Host/mock: keys[0].age: key `sealed`: the master key cannot decrypt"
        ),
        "{stdout}"
    );
    let empty = tempfile::tempdir().unwrap();
    let missing = relay()
        .args(["validate", "--decrypt"])
        .arg(cfg.dir())
        .env("RELAY_DATA_DIR", empty.path())
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("RELAY_MASTER_KEY"));
}

#[test]
fn help_names_every_variable() {
    let out = relay().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        "RELAY_CONFIG_DIR",
        "RELAY_DATA_DIR",
        "RELAY_PORT",
        "RELAY_CONTROL_PORT",
        "RELAY_BIND",
        "RELAY_MASTER_KEY",
        "RELAY_ADMIN_TOKEN",
        "RELAY_LOG",
        "RELAY_LOG_FORMAT",
    ] {
        assert!(help.contains(var), "serve --help lacks {var}:\n{help}");
    }
}

/// `relay breakers …` next to an embedded relay with no admin token: the
/// control URL comes from the same variables `serve` reads, and the
/// per-boot token file in the data dir authenticates it.
#[test]
fn breakers_cli_finds_and_authenticates_to_a_local_relay() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let r = RelayBuilder::new(&cfg.dir(), &cfg.data_dir())
        .env_remove("RELAY_ADMIN_TOKEN")
        .start();
    let control = r.control_url.clone().unwrap();
    let port = control.rsplit(':').next().unwrap().to_string();
    let token = cfg.data_dir().join("control.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let cli = |args: &[&str], data_dir: &std::path::Path| {
        relay()
            .arg("breakers")
            .args(args)
            .env("RELAY_BIND", "127.0.0.1")
            .env("RELAY_CONTROL_PORT", &port)
            .env("RELAY_DATA_DIR", data_dir)
            .output()
            .unwrap()
    };
    let out = cli(&["list"], &cfg.data_dir());
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("HOST"), "{table}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["mock", "primary", "closed"], "{table}");

    let out = cli(&["list", "--json"], &cfg.data_dir());
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["keys"][0]["host"], "mock");
    assert_eq!(v["backend"], "memory", "{v}");

    let out = cli(&["reset", "--host", "mock"], &cfg.data_dir());
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cleared 0 breaker record(s) of host `mock`")
    );

    // Elsewhere (another data dir) there is no credential: the error names
    // the file it looked for and the variables to set.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = cli(&["list"], elsewhere.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("control.token")
            && err.contains("RELAY_DATA_DIR")
            && err.contains("RELAY_ADMIN_TOKEN"),
        "{err}"
    );
    // A wrong port is named with where the URL came from.
    let out = relay()
        .args(["breakers", "list"])
        .env("RELAY_CONTROL_PORT", "9")
        .env("RELAY_DATA_DIR", cfg.data_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http://127.0.0.1:9") && err.contains("RELAY_CONTROL_PORT"),
        "{err}"
    );

    // A clean shutdown removes the token.
    assert!(r.stop().success());
    assert!(!token.exists());
}

#[test]
fn keys_cli_refuses_to_create_a_database_except_keys_create() {
    let data = tempfile::tempdir().unwrap();
    let wrong = data.path().join("not-the-server");
    let db_file = wrong.join("relay.db");
    for args in [&["list"][..], &["disable", "k"], &["delete", "k"]] {
        let out = relay()
            .arg("keys")
            .args(args)
            .env("RELAY_DATA_DIR", &wrong)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&db_file.display().to_string())
                && err.contains("RELAY_DATA_DIR")
                && err.contains("RELAY_DATABASE_URL"),
            "{err}"
        );
        assert!(!db_file.exists(), "{args:?} created the database");
    }
    // migrate --status reports without creating; migrate creates.
    let out = relay()
        .args(["migrate", "--status"])
        .env("RELAY_DATA_DIR", &wrong)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("pending"));
    assert!(!db_file.exists());
    // `relay migrate` creates one deliberately, and says where.
    let fresh = data.path().join("fresh");
    let out = relay()
        .arg("migrate")
        .env("RELAY_DATA_DIR", &fresh)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "created a new SQLite database at {}",
            fresh.join("relay.db").display()
        )),
        "{err}"
    );

    // keys create may create it, and says where.
    let create = |name: &str| {
        let out = relay()
            .args([
                "keys",
                "create",
                "--policy",
                "default",
                "--config-dir",
                "/nonexistent",
                "--name",
                name,
            ])
            .env("RELAY_DATA_DIR", &wrong)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        (
            String::from_utf8(out.stdout).unwrap().trim().to_string(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (first, err) = create("ci-bot");
    assert!(
        err.contains(&format!(
            "created a new SQLite database at {}",
            db_file.display()
        )),
        "{err}"
    );
    assert!(db_file.exists());
    let (_, err) = create("twin");
    assert!(!err.contains("created a new"), "{err}");
    create("twin");

    let keys = |args: &[&str]| {
        relay()
            .arg("keys")
            .args(args)
            .env("RELAY_DATA_DIR", &wrong)
            .output()
            .unwrap()
    };
    let list: Value = serde_json::from_slice(&keys(&["list", "--json"]).stdout).unwrap();
    let row = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let bot = row("ci-bot");
    assert!(first.starts_with(bot["prefix"].as_str().unwrap()));
    // By name.
    let out = keys(&["disable", "ci-bot"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(bot["id"].as_str().unwrap()));
    // By display prefix.
    let out = keys(&["enable", bot["prefix"].as_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let list: Value = serde_json::from_slice(&keys(&["list", "--json"]).stdout).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["enabled"] == true));
    // Ambiguous: both candidates are listed, nothing changes.
    let out = keys(&["delete", "twin"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ambiguous"), "{err}");
    for r in list
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == "twin")
    {
        assert!(err.contains(r["id"].as_str().unwrap()), "{err}");
    }
    let out = keys(&["delete", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        serde_json::from_slice::<Value>(&keys(&["list", "--json"]).stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// Golden annotation output: a fixture's `github*.txt` is exactly what
/// `relay validate --format github` prints for it, run from the catalogue
/// root (so paths are relative to the working directory): `github.txt`
/// plainly, `github-offline.txt` with `--offline`, `github-offline-strict.txt`
/// with `--offline --strict`. The exit code follows `::error` lines.
#[test]
fn validate_github_annotations_match_the_golden_files() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    let mut checked = 0;
    for case in std::fs::read_dir(&root).unwrap() {
        let case = case.unwrap().path();
        for (file, flags) in [
            ("github.txt", &[][..]),
            ("github-offline.txt", &["--offline"][..]),
            ("github-offline-strict.txt", &["--offline", "--strict"][..]),
        ] {
            let Ok(expected) = std::fs::read_to_string(case.join(file)) else {
                continue;
            };
            let name = case.file_name().unwrap().to_str().unwrap();
            let out = relay()
                .current_dir(&root)
                .args(["validate", "--format", "github"])
                .args(flags)
                .arg(name)
                .output()
                .unwrap();
            let got = String::from_utf8(out.stdout).unwrap();
            assert_eq!(got, expected, "{name}/{file}");
            let code = if expected.contains("::error ") { 1 } else { 0 };
            assert_eq!(out.status.code(), Some(code), "{name}/{file}");
            // Absolute paths below the working directory come out the same.
            let abs = relay()
                .current_dir(&root)
                .args(["validate", "--format", "github"])
                .args(flags)
                .arg(root.join(name))
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8(abs.stdout).unwrap(),
                expected,
                "{name}/{file} (absolute)"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "golden annotation files went missing");
}

/// `--offline` does not require the variables keys read at run time, so
/// `--strict` is usable in CI; a pattern that matches nothing still fails it.
#[test]
fn validate_offline_strict_ignores_runtime_variables_only() {
    let cfg = TempConfig::new(&[("all.yaml", MINIMAL)]);
    let run = |args: &[&str]| {
        relay()
            .arg("validate")
            .args(args)
            .arg(cfg.dir())
            .output()
            .unwrap()
    };
    // RELAY_TEST_HOST_KEY is unset: a warning, fatal under --strict …
    assert_eq!(run(&["--strict"]).status.code(), Some(1));
    // … but not offline.
    let out = run(&["--offline", "--strict"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    cfg.write(
        "policy.yaml",
        "kind: Policy\nname: extra\nmodels: [\"gpt-*\"]\n",
    );
    let out = run(&["--offline", "--strict"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "policy.yaml:3:10: Policy/extra: models[0]: pattern `gpt-*` matches no catalog model"
        ),
        "{text}"
    );
    assert!(
        !text.contains("warning:"),
        "--strict reports it as an error: {text}"
    );
    let out = run(&["--offline"]);
    assert_eq!(out.status.code(), Some(0));
    // --offline and --decrypt contradict each other.
    assert_eq!(run(&["--offline", "--decrypt"]).status.code(), Some(2));
}
