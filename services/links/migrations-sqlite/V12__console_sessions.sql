-- Web console sessions (see the Postgres migration of the same number);
-- times are microseconds since the Unix epoch.
CREATE TABLE console_sessions (
    id_hash BLOB PRIMARY KEY,
    key_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen_at);
