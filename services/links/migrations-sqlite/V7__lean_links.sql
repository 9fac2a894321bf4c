-- Idempotency keys in a table of their own, forgotten after a retention, and
-- a leaner links row, as in the Postgres migration V7: the leased id is not
-- stored (a generated code decodes to it), updated_at is NULL until the first
-- change, and the list index is (owner, created_at) (a WITHOUT ROWID table's
-- index entries end with the primary key, the code, anyway). SQLite stores
-- small integers and NULLs in the record header, so the booleans stay
-- columns of their own here.

CREATE TABLE links_v7 (
    code            TEXT    NOT NULL PRIMARY KEY,
    owner_key_id    INTEGER NOT NULL REFERENCES api_keys (id),
    -- NULL: deleted; the code stays taken forever.
    target_url      TEXT,
    redirect_status INTEGER NOT NULL CHECK (redirect_status IN (301, 302, 307, 308)),
    forward_query   INTEGER NOT NULL DEFAULT 0 CHECK (forward_query IN (0, 1)),
    expires_at      INTEGER,
    enabled         INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    is_alias        INTEGER NOT NULL CHECK (is_alias IN (0, 1)),
    created_at      INTEGER NOT NULL,
    -- NULL until the link is first changed.
    updated_at      INTEGER
) WITHOUT ROWID;

INSERT INTO links_v7 (code, owner_key_id, target_url, redirect_status, forward_query,
                      expires_at, enabled, is_alias, created_at, updated_at)
SELECT code, owner_key_id, target_url, redirect_status, forward_query,
       expires_at, enabled, is_alias, created_at, NULLIF(updated_at, created_at)
FROM links
ORDER BY created_at, code;

CREATE TABLE link_idempotency (
    owner_key_id INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    code         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (owner_key_id, key)
) WITHOUT ROWID;
-- No index on created_at: it would cost nearly as much as the keys, and the
-- writer's prune every few minutes can afford to scan an embedded instance's
-- day of keys.

-- Keys of live links within the default retention (24 h) carry over.
INSERT INTO link_idempotency (owner_key_id, key, code, created_at)
SELECT owner_key_id, idempotency_key, code, created_at
FROM links
WHERE idempotency_key IS NOT NULL AND target_url IS NOT NULL
  AND created_at > (CAST(strftime('%s', 'now') AS INTEGER) - 86400) * 1000000;

DROP TABLE links;
ALTER TABLE links_v7 RENAME TO links;
CREATE INDEX links_owner_newest ON links (owner_key_id, created_at);
