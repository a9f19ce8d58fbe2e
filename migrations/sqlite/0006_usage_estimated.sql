-- Usage charged from an estimate (the client went away before the
-- upstream's usage arrived within the grace read) is marked as such.
ALTER TABLE usage_records ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT 0;
