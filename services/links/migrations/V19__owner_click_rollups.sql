-- What the console reads per key, kept by the click roll-up as it moves
-- minutes into days (and by a fold for the late minutes it writes to the
-- days itself), so that a key's overview and its most-clicked order read a
-- few rows instead of every one of its links' rollups. The click path pays
-- nothing: folds write neither table.

-- Clicks of each key's links per UTC day, humans and bots apart: the day
-- rollups' totals summed by owner (links deleted since included).
CREATE TABLE owner_click_days (
    owner_key_id bigint  NOT NULL,
    day          integer NOT NULL,
    bot          boolean NOT NULL,
    clicks       bigint  NOT NULL,
    PRIMARY KEY (owner_key_id, day, bot)
);

-- Each link's human clicks through the roll-up mark, in an index by owner
-- and clicks: with the minutes after the mark (a few minutes' rows) it
-- gives the links' lifetime totals (`click_totals.clicks`) in order.
-- Written once per roll-up window per link clicked, not per fold: its
-- clicks are indexed, so every change is a new index entry.
CREATE TABLE click_ranks (
    owner_key_id bigint      NOT NULL,
    code         text        COLLATE "C" NOT NULL,
    created_at   timestamptz NOT NULL,
    clicks       bigint      NOT NULL,
    PRIMARY KEY (owner_key_id, code)
);
CREATE INDEX click_ranks_most ON click_ranks (owner_key_id, clicks, created_at, code);

-- From what is there, with folds and roll-ups held off (they take the mark
-- FOR SHARE / FOR UPDATE) so that both are of one moment.
SELECT rolled_through FROM click_rollup_mark FOR UPDATE;

INSERT INTO owner_click_days (owner_key_id, day, bot, clicks)
SELECT l.owner_key_id, d.day, d.bot, sum(d.clicks)
  FROM click_days d JOIN links l ON l.code = d.code
 WHERE d.dimension = 0
 GROUP BY 1, 2, 3;

INSERT INTO click_ranks (owner_key_id, code, created_at, clicks)
SELECT l.owner_key_id, l.code, l.created_at, t.clicks - COALESCE(recent.clicks, 0)
  FROM click_totals t
  JOIN links l ON l.code = t.code
  LEFT JOIN (SELECT code, sum(clicks) AS clicks FROM click_minutes
              WHERE dimension = 0 AND NOT bot
                AND minute > (SELECT rolled_through FROM click_rollup_mark)
              GROUP BY code) recent ON recent.code = t.code
 WHERE t.clicks > COALESCE(recent.clicks, 0);
