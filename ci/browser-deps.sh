#!/usr/bin/env bash
# Installs Debian's Chromium and its WebDriver for the dashboard's browser
# tests (tests/it/dashboard.rs, run by `cargo test --test it dashboard`).
# Fails loudly: the browser tests never skip. RELAY_TEST_CHROMIUM and
# RELAY_TEST_CHROMEDRIVER override the paths; the tests read the same
# variables, so both agree.
set -euo pipefail

CHROMIUM="${RELAY_TEST_CHROMIUM:-/usr/bin/chromium}"
CHROMEDRIVER="${RELAY_TEST_CHROMEDRIVER:-/usr/bin/chromedriver}"

if [ ! -x "$CHROMIUM" ] || [ ! -x "$CHROMEDRIVER" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "browser-deps: $CHROMIUM or $CHROMEDRIVER is missing and apt-get is not available;" \
             "install Chromium and chromedriver (or set RELAY_TEST_CHROMIUM / RELAY_TEST_CHROMEDRIVER)" >&2
        exit 1
    fi
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
fi

# Prove both run.
"$CHROMIUM" --version
"$CHROMEDRIVER" --version
