-- Throttled calls (429 for a limit or a budget) are recorded too: no tokens,
-- and `reason` from a fixed vocabulary (rate_limit_requests,
-- rate_limit_tokens, concurrency, budget); NULL for every other call.
-- `calls` is how many calls the row stands for: 1, except for throttled
-- calls of one key and reason that came faster than one a second, which the
-- usage writer merges into one row per key, reason and minute.
ALTER TABLE usage_records ADD COLUMN reason TEXT;
ALTER TABLE usage_records ADD COLUMN calls BIGINT NOT NULL DEFAULT 1;
