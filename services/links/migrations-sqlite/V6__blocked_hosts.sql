-- Hosts blocked from the command line, as in the Postgres migration V6.
CREATE TABLE blocked_hosts (
    entry    TEXT    NOT NULL PRIMARY KEY,
    added_at INTEGER NOT NULL
) WITHOUT ROWID;
