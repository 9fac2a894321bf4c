-- Short domains besides the default one (see the Postgres migration V18).
CREATE TABLE domains (
    host          TEXT    NOT NULL PRIMARY KEY,
    not_found_url TEXT,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;
