#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable on a busy
# machine, where wall-clock figures are not. Runs the proxy benchmark in count
# mode (tests/benches/proxy.rs) with relay under valgrind, once with 0
# requests and once with R, and prints (total(R) - total(0)) / R for plain
# requests at concurrency 1 and 64 and for streaming requests.
#
#   ci/callgrind-proxy.sh                 # builds and uses target/profiling/relay
#   RELAY=/path/to/relay R=1000 ci/callgrind-proxy.sh
#
# Each run leaves its callgrind file in target/callgrind/ (callgrind_annotate
# shows where the instructions go).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RELAY:-}" ]; then
  # Release code with debug info, so callgrind_annotate can name functions.
  cargo build --profile profiling --bin relay
fi
relay=$(realpath "${RELAY:-target/profiling/relay}")
r=${R:-2000}
# The benchmark executable (built here unless BENCH names one).
bench=${BENCH:-$(cargo bench --bench proxy --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p')}
out=target/callgrind
mkdir -p "$out"
wrapper=$(realpath "$out")/relay-under-callgrind.sh
cat >"$wrapper" <<WRAP
#!/bin/sh
if [ "\$1" = serve ]; then
  exec valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="\$CALLGRIND_OUT" "$relay" "\$@"
fi
exec "$relay" "\$@"
WRAP
chmod +x "$wrapper"

total() { # callgrind file -> total instructions
  awk '/^(summary|totals):/ {print $2; exit}' "$1"
}

run() { # name count conc stream
  CALLGRIND_OUT=$(realpath "$out")/$1.out PROXY_BENCH_RELAY="$wrapper" PROXY_BENCH_COUNT=$2 \
    PROXY_BENCH_CONC=$3 PROXY_BENCH_STREAM=$4 "$bench" --bench 2>/dev/null | grep count
}

run idle 0 1 0
base=$(total "$out/idle.out")
for spec in "c1 1 0" "c64 64 0" "stream 1 1"; do
  set -- $spec
  run "$1" "$r" "$2" "$3"
  t=$(total "$out/$1.out")
  echo "callgrind: $1: $(( (t - base) / r )) instructions per request ($r requests)"
done
