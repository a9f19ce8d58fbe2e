# relay — thin wrappers around cargo and the CI scripts.
# `make test` is the one command CI and the README use.

CARGO ?= cargo

.PHONY: all build run test validate bench schemas fmt lint breakers-reset

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
