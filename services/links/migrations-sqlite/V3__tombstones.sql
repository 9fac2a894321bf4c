-- Deleted links stay behind as tombstones (target_url NULL), as in the
-- Postgres migration V3. SQLite cannot drop NOT NULL in place, so the table
-- is rebuilt with the same columns and indexes.

CREATE TABLE links_v3 (
    code            TEXT    NOT NULL PRIMARY KEY,
    id              INTEGER,
    owner_key_id    INTEGER NOT NULL REFERENCES api_keys (id),
    -- NULL: deleted; the code stays taken forever.
    target_url      TEXT,
    redirect_status INTEGER NOT NULL CHECK (redirect_status IN (301, 302, 307, 308)),
    forward_query   INTEGER NOT NULL DEFAULT 0 CHECK (forward_query IN (0, 1)),
    expires_at      INTEGER,
    enabled         INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    is_alias        INTEGER NOT NULL CHECK (is_alias IN (0, 1)),
    idempotency_key TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO links_v3 (code, id, owner_key_id, target_url, redirect_status, forward_query,
                      expires_at, enabled, is_alias, idempotency_key, created_at, updated_at)
SELECT code, id, owner_key_id, target_url, redirect_status, forward_query,
       expires_at, enabled, is_alias, idempotency_key, created_at, updated_at
FROM links;

DROP TABLE links;
ALTER TABLE links_v3 RENAME TO links;

CREATE UNIQUE INDEX links_idempotency ON links (owner_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX links_owner_newest ON links (owner_key_id, created_at DESC, code DESC);
