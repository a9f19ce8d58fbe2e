-- Dashboard sessions. Only a SHA-256 of the cookie value is stored, so a
-- copy of the database cannot be replayed as a login. The role is not
-- stored: it is read from the User in config on every request, so removing
-- or demoting a User in git takes effect at once.
CREATE TABLE dashboard_sessions (
    id_hash    TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,  -- unix milliseconds
    expires_at BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);
