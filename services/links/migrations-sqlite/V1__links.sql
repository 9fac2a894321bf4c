-- The embedded store's schema: the same model as the Postgres migrations,
-- in SQLite's types. Timestamps are microseconds since the Unix epoch.

CREATE TABLE api_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    key_hash   BLOB    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- One keyspace for generated codes and aliases; codes compare byte-wise
-- (case-sensitive), as in Postgres with COLLATE "C".
CREATE TABLE links (
    code            TEXT    NOT NULL PRIMARY KEY,
    id              INTEGER,
    owner_key_id    INTEGER NOT NULL REFERENCES api_keys (id),
    target_url      TEXT    NOT NULL,
    redirect_status INTEGER NOT NULL CHECK (redirect_status IN (301, 302, 307, 308)),
    forward_query   INTEGER NOT NULL DEFAULT 0 CHECK (forward_query IN (0, 1)),
    expires_at      INTEGER,
    enabled         INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    is_alias        INTEGER NOT NULL CHECK (is_alias IN (0, 1)),
    idempotency_key TEXT,
    click_count     INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE UNIQUE INDEX links_idempotency ON links (owner_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX links_owner_newest ON links (owner_key_id, created_at DESC, code DESC);

-- Settings of an embedded instance that must survive restarts (the code
-- permutation key, generated on first start).
CREATE TABLE instance_settings (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
