-- The embedded store's lease tables: the same model as the Postgres
-- migrations. Timestamps are microseconds since the Unix epoch. There is no
-- failover guard: one SQLite file has no replicas to fail over to.

CREATE TABLE idalloc_namespaces (
    namespace  TEXT    NOT NULL PRIMARY KEY,
    next_id    INTEGER NOT NULL CHECK (next_id >= 0),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE idalloc_leases (
    request_id TEXT    NOT NULL PRIMARY KEY,
    namespace  TEXT    NOT NULL,
    start_id   INTEGER NOT NULL,
    end_id     INTEGER NOT NULL CHECK (end_id > start_id),
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX idalloc_leases_created_at ON idalloc_leases (created_at);
