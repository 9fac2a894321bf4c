-- Tags (see the Postgres migration of the same number).
CREATE TABLE link_tags (
    owner_key_id INTEGER NOT NULL,
    tag          TEXT    NOT NULL,
    code         TEXT    NOT NULL,
    PRIMARY KEY (owner_key_id, tag, code)
) WITHOUT ROWID;
CREATE INDEX link_tags_code ON link_tags (code);
