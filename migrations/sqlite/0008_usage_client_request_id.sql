-- The x-request-id a client sent (validated; not unique: clients reuse
-- theirs), beside relay's own unique request_id. NULL when the client sent
-- none, or one relay refused and replaced.
ALTER TABLE usage_records ADD COLUMN client_request_id TEXT;
