-- Click analytics: rollups folded from the click stream, exactly once per
-- batch. Buckets are whole minutes / days since the Unix epoch (UTC) as
-- integers: half the bytes of a timestamp, and the same in both stores.
-- Dimensions: 0 total, 1 referrer host, 2 country, 3 browser (or the bot's
-- name), 4 device type; `bot` splits every dimension into humans and bots.

-- The lifetime count now lives in click_totals: counting in the links row
-- would rewrite (and bloat) the hottest table on every fold.
ALTER TABLE links DROP COLUMN click_count;

CREATE TABLE click_minutes (
    code      text     COLLATE "C" NOT NULL,
    minute    integer  NOT NULL,
    dimension smallint NOT NULL,
    value     text     COLLATE "C" NOT NULL,
    bot       boolean  NOT NULL,
    clicks    bigint   NOT NULL,
    PRIMARY KEY (code, minute, dimension, value, bot)
);
-- Retention deletes by age; rows arrive in time order, so a BRIN index is a
-- few pages for any table size.
CREATE INDEX click_minutes_age ON click_minutes USING brin (minute);

-- Day rollups are made from minute rollups in bulk, a window at a time,
-- rather than by every fold: a busy link's day row is then written once per
-- window instead of once per batch. Minutes at or before the mark are in
-- click_days; a fold of such a (late) minute writes its day rows itself. The
-- roll-up locks this row FOR UPDATE and each fold FOR SHARE, so a minute row
-- reaches click_days exactly once.
CREATE TABLE click_rollup_mark (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    rolled_through integer NOT NULL
);
INSERT INTO click_rollup_mark (rolled_through)
    VALUES ((extract(epoch FROM now()) / 60)::integer);

CREATE TABLE click_days (
    code      text     COLLATE "C" NOT NULL,
    day       integer  NOT NULL,
    dimension smallint NOT NULL,
    value     text     COLLATE "C" NOT NULL,
    bot       boolean  NOT NULL,
    clicks    bigint   NOT NULL,
    PRIMARY KEY (code, day, dimension, value, bot)
);

CREATE TABLE click_totals (
    code       text   COLLATE "C" PRIMARY KEY,
    clicks     bigint NOT NULL,
    bot_clicks bigint NOT NULL
);

-- Batch ids folded, committed with the rollups they added: a redelivered
-- batch finds its id and is acknowledged without counting again. Kept
-- longer than the click stream keeps entries.
CREATE TABLE click_batches (
    batch_id  text        COLLATE "C" PRIMARY KEY,
    folded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX click_batches_age ON click_batches USING brin (folded_at);
