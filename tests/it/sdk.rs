//! End to end with the official Python SDKs (`openai`, `anthropic` from PyPI): each test starts a
//! mock upstream plus a real `relay serve` (`Stack`), then runs one pytest file from `tests/sdk/`
//! against it with `RELAY_BASE_URL` / `RELAY_KEY`.
//!
//! Needs `python3` with the packages in `tests/sdk/requirements.txt` (`ci/sdk-deps.sh` installs
//! them; `ci/test.sh` runs it). A missing SDK fails the test, it is never skipped. Set
//! `RELAY_TEST_PYTHON` to use another interpreter (e.g. a virtualenv's).
//!
//! The mock upstream runs on this test's tokio runtime, so pytest is awaited with
//! `tokio::process` on a multi-thread runtime: the runtime keeps serving the mock meanwhile.
//!
//! `tests/sdk/test_cross_protocol.py` covers protocol translation: the OpenAI SDK calling
//! claude-test (anthropic adapter) and the Anthropic SDK calling gpt-test (openai adapter).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::support::{Db, Stack};

/// The whole pytest file, including interpreter start-up and SDK imports.
const PYTEST_TIMEOUT: Duration = Duration::from_secs(180);

fn python() -> String {
    std::env::var("RELAY_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// A Python command with a clean, predictable environment: no SDK settings from the developer's
/// shell (`OPENAI_*`, `ANTHROPIC_*` could redirect or re-authenticate the clients), no proxy for
/// loopback, no bytecode or pytest cache written into the repository.
fn python_cmd() -> Command {
    let mut cmd = Command::new(python());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("OPENAI_") || k.starts_with("ANTHROPIC_") || k == "PYTEST_ADDOPTS" {
            cmd.env_remove(k.as_ref());
        }
    }
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
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Fails (never skips) when the SDKs are not importable.
async fn require_sdks() {
    let out = python_cmd()
        .args([
            "-c",
            "import openai, anthropic, pytest; print('openai', openai.__version__, 'anthropic', anthropic.__version__, 'pytest', pytest.__version__)",
        ])
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => {
            eprintln!(
                "sdk versions: {}",
                String::from_utf8_lossy(&o.stdout).trim()
            );
        }
        Ok(o) => panic!(
            "the official Python SDKs are not importable with `{}` ({}): run `ci/sdk-deps.sh` \
             (installs tests/sdk/requirements.txt) first\n{}",
            python(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "cannot run `{}` ({e}): Python 3 is needed for the SDK tests; install it, then run \
             `ci/sdk-deps.sh`",
            python()
        ),
    }
}

/// Starts a stack and runs one pytest file against it; panics with pytest's output (and relay's
/// log) unless every test passed.
async fn run_pytest(file: &str) {
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(file).is_file(),
        "{file} is missing"
    );
    require_sdks().await;
    let stack = Stack::start(Db::Sqlite).await;

    let mut child = python_cmd()
        .args(["-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", file])
        .env("RELAY_BASE_URL", &stack.relay.data_url)
        .env("RELAY_KEY", &stack.key)
        .env("RELAY_CONTROL_URL", stack.relay.control(""))
        .env("RELAY_ADMIN_TOKEN", crate::support::ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{} -m pytest`: {e}", python()));

    // Drain both pipes concurrently so a chatty run cannot block on a full pipe.
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

    let status = match tokio::time::timeout(PYTEST_TIMEOUT, child.wait()).await {
        Ok(status) => Some(status.expect("wait for pytest")),
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

    match status {
        Some(s) if s.success() => {
            eprintln!("{file}:\n{output}");
        }
        Some(s) => panic!(
            "pytest {file} failed ({s}):\n{output}\n---- relay log ----\n{}",
            stack.relay.logs()
        ),
        None => panic!(
            "pytest {file} did not finish within {PYTEST_TIMEOUT:?}; output so far:\n{output}\n\
             ---- relay log ----\n{}",
            stack.relay.logs()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk() {
    run_pytest("tests/sdk/test_openai_sdk.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_python_sdk() {
    run_pytest("tests/sdk/test_anthropic_sdk.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_protocol_python_sdks() {
    run_pytest("tests/sdk/test_cross_protocol.py").await;
}
