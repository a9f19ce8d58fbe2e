# relay — thin wrappers around cargo and the CI scripts.
# `make test` is the one command CI and the README use.

CARGO ?= cargo

.PHONY: all build run test validate bench schemas fmt lint breakers-reset fuzz

all: build

# Release build of the relay binary (target/release/relay).
build:
	$(CARGO) build --release

# Standalone mode with embedded defaults: config from ./config.d, data in ./relay-data.
run:
	$(CARGO) run --release -- serve

# Full CI: services (PostgreSQL, Redis), lint, tests.
test:
	bash ci/test.sh

# Check the example catalog exactly as `serve` would load it.
validate:
	$(CARGO) run --release -- validate config.d

bench:
	$(CARGO) bench

# Fuzz each target (tests/fuzz/fuzz_targets) for FUZZ_TIME seconds, one after
# another: cargo-fuzz on the stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the
# sanitizer flags). Not part of CI. New inputs accumulate in
# tests/fuzz/corpus/<target>, crashes in tests/fuzz/artifacts/<target>.
FUZZ_TARGETS ?= config body sse translate translate_stream
FUZZ_TIME ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t ($(FUZZ_TIME) s) =="; \
		mkdir -p tests/fuzz/corpus/$$t; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir tests/fuzz $$t \
			tests/fuzz/corpus/$$t tests/fuzz/seeds/$$t -- -max_total_time=$(FUZZ_TIME) || exit 1; \
	done

# Regenerate the JSON Schemas in schemas/ from the Rust types.
schemas:
	$(CARGO) run -- schema --out schemas

fmt:
	$(CARGO) fmt --all

lint:
	bash ci/lint.sh

# Clear circuit-breaker state: in Redis when RELAY_STATE_URL is set, else in
# the running relay (`make run`), reached on RELAY_CONTROL_PORT and
# authenticated by its per-boot token in RELAY_DATA_DIR (./relay-data).
breakers-reset:
	$(CARGO) run --release -- breakers reset
