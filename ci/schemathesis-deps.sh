#!/usr/bin/env bash
# Installs schemathesis (PyPI), which the admin API conformance test
# (tests/it/schemathesis.rs) drives against the control plane's OpenAPI
# document, from tests/schemathesis/requirements.txt, into the same
# interpreter as the SDK deps (ci/sdk-deps.sh). Fails loudly: the test never
# skips. RELAY_TEST_PYTHON picks the interpreter (default python3); the test
# reads the same variable.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${RELAY_TEST_PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "schemathesis-deps: $PYTHON not found; the schemathesis test needs Python 3 (>= 3.10) with pip" >&2
    exit 1
fi

"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/schemathesis/requirements.txt

# Prove the install is usable by the interpreter the test runs.
"$PYTHON" -m schemathesis.cli --version
