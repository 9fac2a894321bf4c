-- Click analytics, as in the Postgres migration V2: rollups by minute and
-- day (integers since the Unix epoch, UTC), lifetime totals, and the batch
-- ids already folded.

ALTER TABLE links DROP COLUMN click_count;

CREATE TABLE click_minutes (
    code      TEXT    NOT NULL,
    minute    INTEGER NOT NULL,
    dimension INTEGER NOT NULL,
    value     TEXT    NOT NULL,
    bot       INTEGER NOT NULL CHECK (bot IN (0, 1)),
    clicks    INTEGER NOT NULL,
    PRIMARY KEY (code, minute, dimension, value, bot)
) WITHOUT ROWID;
CREATE INDEX click_minutes_age ON click_minutes (minute);

-- Minutes at or before the mark are rolled up into click_days (see the
-- Postgres migration).
CREATE TABLE click_rollup_mark (
    singleton      INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
    rolled_through INTEGER NOT NULL
);
INSERT INTO click_rollup_mark (singleton, rolled_through)
    VALUES (1, CAST(strftime('%s', 'now') AS INTEGER) / 60);

CREATE TABLE click_days (
    code      TEXT    NOT NULL,
    day       INTEGER NOT NULL,
    dimension INTEGER NOT NULL,
    value     TEXT    NOT NULL,
    bot       INTEGER NOT NULL CHECK (bot IN (0, 1)),
    clicks    INTEGER NOT NULL,
    PRIMARY KEY (code, day, dimension, value, bot)
) WITHOUT ROWID;

CREATE TABLE click_totals (
    code       TEXT    NOT NULL PRIMARY KEY,
    clicks     INTEGER NOT NULL,
    bot_clicks INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE click_batches (
    batch_id  TEXT    NOT NULL PRIMARY KEY,
    folded_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX click_batches_age ON click_batches (folded_at);
