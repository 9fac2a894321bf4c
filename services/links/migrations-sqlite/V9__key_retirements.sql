-- Values a second rotation overwrote (they stop working at once), kept for
-- the writers' revocation poll as in the Postgres migration V9.
CREATE TABLE api_key_retirements (
    key_hash   BLOB    NOT NULL,
    retired_at INTEGER NOT NULL
);
CREATE INDEX api_key_retirements_at ON api_key_retirements (retired_at);
