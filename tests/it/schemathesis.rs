//! The admin API against its own OpenAPI document, driven by schemathesis (PyPI): a real
//! `relay serve` in front of the mock upstream, with keys (one disabled, one expiring) and usage
//! records (same-protocol, translated, failed) in its database; then `schemathesis run` on
//! `/api/openapi.json` with the admin token, bounded in examples and time. Checks: no 5xx, every
//! status code, content type and body as documented; and relay is still up afterwards with no
//! panic in its log.
//!
//! Needs schemathesis importable by `python3` (or `RELAY_TEST_PYTHON`): `ci/schemathesis-deps.sh`
//! installs the version pinned in `tests/schemathesis/requirements.txt` (`ci/test.sh` runs it). A
//! missing schemathesis fails the test, it is never skipped.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::support::{Db, Stack, ADMIN_TOKEN};

/// The whole run, interpreter start-up included (about 40 s on a busy 2-core machine).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// The checks that make the document a contract (schemathesis 4 names).
const CHECKS: &str =
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

fn python() -> String {
    std::env::var("RELAY_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Python with no proxy for loopback and nothing written into the repository.
fn python_cmd() -> Command {
    let mut cmd = Command::new(python());
    for v in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        // Nothing lands in the repository whatever schemathesis writes.
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Fails (never skips) when schemathesis is not importable.
async fn require_schemathesis() {
    let out = python_cmd()
        .args(["-m", "schemathesis.cli", "--version"])
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => {
            eprintln!("{}", String::from_utf8_lossy(&o.stdout).trim());
        }
        Ok(o) => panic!(
            "schemathesis is not importable with `{}` ({}): run `ci/schemathesis-deps.sh` \
             (installs tests/schemathesis/requirements.txt) first\n{}",
            python(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "cannot run `{}` ({e}): Python 3 is needed for the schemathesis test; install it, \
             then run `ci/schemathesis-deps.sh`",
            python()
        ),
    }
}

/// Keys and usage records, so list and report endpoints answer with real rows.
async fn populate(s: &Stack) {
    let (disabled, _) = s.mint("gpt-only").await;
    assert_eq!(
        s.relay
            .admin_post(&format!("/api/keys/{disabled}/disable"))
            .await
            .status(),
        200
    );
    let r = s
        .relay
        .http
        .post(s.relay.control("/api/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"policy": "default", "name": "expiring", "expires_in": "30d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let chat = |model: &str, content: &str| json!({"model": model, "messages": [{"role": "user", "content": content}]});
    let calls = [
        ("/v1/chat/completions", chat("gpt-test", "hi")),
        ("/v1/chat/completions", chat("claude-test", "translated")),
        ("/v1/chat/completions", chat("gpt-test", "[[fault:500]]")),
        (
            "/v1/messages",
            json!({"model": "claude-test", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ];
    for (path, body) in calls {
        let status = s.post(path, Some(&s.key), body).await.status();
        assert!(
            status.as_u16() == 200 || status.as_u16() == 500,
            "{path}: {status}"
        );
    }
    crate::support::usage_for(&s.relay, &s.key_id, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_conforms_to_its_openapi_document() {
    require_schemathesis().await;
    let stack = Stack::start(Db::Sqlite).await;
    populate(&stack).await;

    let started = Instant::now();
    let mut child = python_cmd()
        .args(["-m", "schemathesis.cli", "run"])
        .arg(stack.relay.control("/api/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["--checks", CHECKS])
        .args([
            "--max-examples",
            "15",
            "--seed",
            "20261203",
            "--workers",
            "1",
        ])
        .args(["--request-timeout", "10"])
        // Every finding is reported once with its reproduction; shrinking
        // only costs time here.
        .arg("--no-shrink")
        .args(["--generation-database", "none"])
        .args(["--warnings", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{} -m schemathesis.cli`: {e}", python()));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_task = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b).await;
        b
    });
    let err_task = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b).await;
        b
    });
    let status = match tokio::time::timeout(RUN_TIMEOUT, child.wait()).await {
        Ok(status) => Some(status.expect("wait for schemathesis")),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out_task.await.unwrap()),
        String::from_utf8_lossy(&err_task.await.unwrap())
    );
    eprintln!("schemathesis took {:?}", started.elapsed());
    match status {
        Some(s) if s.success() => eprintln!("{output}"),
        Some(s) => panic!(
            "schemathesis found mismatches between the admin API and src/http/openapi.json \
             ({s}):\n{output}\n--- relay log ---\n{}",
            stack.relay.logs()
        ),
        None => panic!(
            "schemathesis did not finish within {RUN_TIMEOUT:?}:\n{output}\n--- relay log ---\n{}",
            stack.relay.logs()
        ),
    }
    // It tested something: the summary names the operations it ran.
    assert!(
        output.contains("Tested:") || output.contains("passed"),
        "schemathesis reported no tests:\n{output}"
    );

    // Whatever it sent, relay is still serving and nothing panicked.
    let mut stack = stack;
    let relay = &mut stack.relay;
    assert!(
        relay.child.try_wait().unwrap().is_none(),
        "relay exited:\n{}",
        relay.logs()
    );
    let v = relay
        .http
        .get(relay.control("/version"))
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), 200);
    assert!(
        !relay.logs().contains("panicked"),
        "relay panicked during the run:\n{}",
        relay.logs()
    );
}

/// What schemathesis found, pinned: a number of seconds whose milliseconds overflow `i64` killed
/// the connection (a panic in the handler) instead of a 400, and a malformed `/api/usage` query
/// got axum's plain-text rejection instead of the documented JSON error.
#[tokio::test]
async fn hostile_admin_inputs_get_documented_errors() {
    let s = Stack::start(Db::Sqlite).await;
    for expires_in in [json!(36028797018963967_i64), json!(i64::MAX)] {
        let r = s
            .relay
            .http
            .post(s.relay.control("/api/keys"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"policy": "default", "expires_in": expires_in}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "expires_in {expires_in}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expires_in"),
            "{v}"
        );
    }
    let r = s
        .relay
        .http
        .get(s.relay.control("/api/usage?to=null&limit=x"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    assert!(!s.relay.logs().contains("panicked"), "{}", s.relay.logs());
}
