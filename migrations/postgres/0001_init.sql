-- relay runtime state (PostgreSQL). Config never lives here.

-- Small settings: the relay-key lookup pepper and the key-change epoch.
CREATE TABLE relay_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Bumped with every change to relay_keys; replicas poll it to refresh
-- their in-memory key tables.
INSERT INTO relay_meta (key, value) VALUES ('key_epoch', '0');

-- Relay keys: only a keyed hash of the plaintext is stored.
CREATE TABLE relay_keys (
    id           TEXT PRIMARY KEY,
    prefix       TEXT NOT NULL,
    hash         BYTEA NOT NULL UNIQUE,
    policy       TEXT NOT NULL,
    name         TEXT,
    enabled      BOOLEAN NOT NULL DEFAULT TRUE,
    created_at   BIGINT NOT NULL,  -- unix milliseconds
    last_used_at BIGINT,
    expires_at   BIGINT
);

CREATE TABLE usage_records (
    id                 BIGSERIAL PRIMARY KEY,
    at                 BIGINT NOT NULL,  -- unix milliseconds
    request_id         TEXT NOT NULL,
    key_id             TEXT,
    model              TEXT NOT NULL,
    binding            TEXT,
    host               TEXT,
    status             INTEGER NOT NULL,
    latency_ms         BIGINT NOT NULL,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cache_read_tokens  BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_usd           DOUBLE PRECISION NOT NULL,
    streamed           BOOLEAN NOT NULL
);
CREATE INDEX usage_records_at ON usage_records (at);
CREATE INDEX usage_records_key_at ON usage_records (key_id, at);
CREATE INDEX usage_records_model_at ON usage_records (model, at);
