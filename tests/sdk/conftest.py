"""Shared fixtures for the SDK end-to-end tests.

The Rust side (tests/it/sdk.rs) starts a mock upstream plus a real `relay serve`,
mints a relay key and runs pytest with:

  RELAY_BASE_URL  data plane base URL, e.g. http://127.0.0.1:PORT (no /v1)
  RELAY_KEY       a relay key (rk_...) with the `default` policy (every model)

Models (support::mock_config): gpt-test (openai adapter, alias gpt-latest),
claude-test (anthropic adapter), embed-test (openai). The mock upstream answers
"echo: <last user text>", calls the first tool with {"city": "Paris"} when tools
are given, and injects faults for a `[[fault:<spec>]]` marker in the last user
message.
"""

import json
import os
import urllib.request

import pytest

# Generous for a loopback mock, short enough that a hang fails the run.
TIMEOUT_S = 15.0

# A well-formed-looking relay key that relay has never issued.
WRONG_KEY = "rk_this_key_does_not_exist_0000000000000000"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: these tests are run by `cargo test --test it sdk`, "
            "which starts relay and passes RELAY_BASE_URL / RELAY_KEY",
            pytrace=False,
        )
    return value


@pytest.fixture(scope="session")
def base_url() -> str:
    return _env("RELAY_BASE_URL").rstrip("/")


@pytest.fixture(scope="session")
def relay_key() -> str:
    return _env("RELAY_KEY")


@pytest.fixture(autouse=True)
def clear_breakers():
    """Injected upstream faults trip the single host key's breaker (that is
    relay's job); clear them after each test so the next starts healthy."""
    yield
    control = os.environ.get("RELAY_CONTROL_URL")
    token = os.environ.get("RELAY_ADMIN_TOKEN")
    if control and token:
        req = urllib.request.Request(
            f"{control.rstrip('/')}/api/breakers/reset",
            data=json.dumps({}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
