-- API key lifecycle, as in the Postgres migration V4: scopes, last use,
-- rotation with a grace period, and indexes for the revocation poll.

ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'manage'
    CHECK (scope IN ('read', 'create', 'manage'));
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
-- SQLite cannot add a UNIQUE column; the unique index below does the same.
ALTER TABLE api_keys ADD COLUMN previous_key_hash BLOB;
ALTER TABLE api_keys ADD COLUMN previous_valid_until INTEGER;

CREATE UNIQUE INDEX api_keys_previous_hash ON api_keys (previous_key_hash)
    WHERE previous_key_hash IS NOT NULL;
CREATE INDEX api_keys_revoked ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX api_keys_rotated ON api_keys (previous_valid_until)
    WHERE previous_valid_until IS NOT NULL;
