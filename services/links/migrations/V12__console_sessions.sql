-- Web console sessions, keyed by the SHA-256 of the cookie's random token
-- (the cookie itself is never stored), each the session of one API key.
-- Ended sessions are deleted; the index finds idle ones to prune.
CREATE TABLE console_sessions (
    id_hash bytea PRIMARY KEY,
    key_hash bytea NOT NULL,
    created_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL
);
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen_at);
