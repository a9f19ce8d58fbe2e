#!/usr/bin/env bash
# Formatting and clippy, warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
