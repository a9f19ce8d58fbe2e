-- Sessions remember a digest of the User's password_hash at login, so
-- changing the hash in git ends that user's sessions. Sessions from before
-- this column have '' and end at their next request.
ALTER TABLE dashboard_sessions ADD COLUMN credential TEXT NOT NULL DEFAULT '';
