#!/usr/bin/env bash
# Installs the official Python SDKs that the end-to-end SDK tests drive relay
# with (tests/sdk/, run by `cargo test --test it sdk`), from
# tests/sdk/requirements.txt. Fails loudly: the SDK tests never skip.
# RELAY_TEST_PYTHON picks the interpreter (default python3); tests/it/sdk.rs
# reads the same variable, so both agree.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${RELAY_TEST_PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "sdk-deps: $PYTHON not found; the SDK tests need Python 3 (>= 3.10) with pip" >&2
    exit 1
fi

"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/sdk/requirements.txt

# Prove the install is usable by the interpreter the tests run.
"$PYTHON" -c 'import openai, anthropic, pytest; print("openai", openai.__version__, "| anthropic", anthropic.__version__, "| pytest", pytest.__version__)'
