-- Rollup rows carry the visit's traffic class instead of a bot flag, so
-- statistics can be read for one class (previewers alone, say) with every
-- breakdown. `class` is the click line's digit: 0 a person, 1 a crawler,
-- 2 a link previewer, 3 a monitor; -1 a bot whose kind was not recorded.
--
-- Rows folded before this migration knew only "bot". Their kind survives
-- where it was recorded: the class rows (dimension 6) keep it as their
-- value, and they split each bot total (dimension 0) of their bucket
-- exactly, since every bot click added to both; a bot total not covered by
-- class rows (clicks folded before classes existed) stays -1, as do the
-- other dimensions' bot rows, which are counted for bots at large and for
-- no one kind.
--
-- The tables are rebuilt rather than altered: the class is part of the
-- primary key. The roll-up mark is held, so no fold or roll-up runs beside.

SELECT rolled_through FROM click_rollup_mark FOR UPDATE;

ALTER TABLE click_minutes RENAME TO click_minutes_v2;
ALTER TABLE click_minutes_v2 RENAME CONSTRAINT click_minutes_pkey TO click_minutes_v2_pkey;
ALTER TABLE click_days RENAME TO click_days_v2;
ALTER TABLE click_days_v2 RENAME CONSTRAINT click_days_pkey TO click_days_v2_pkey;

CREATE TABLE click_minutes (
    code      text     COLLATE "C" NOT NULL,
    minute    integer  NOT NULL,
    dimension smallint NOT NULL,
    value     text     COLLATE "C" NOT NULL,
    class     smallint NOT NULL CHECK (class BETWEEN -1 AND 3),
    clicks    bigint   NOT NULL,
    PRIMARY KEY (code, minute, dimension, value, class)
);

CREATE TABLE click_days (
    code      text     COLLATE "C" NOT NULL,
    day       integer  NOT NULL,
    dimension smallint NOT NULL,
    value     text     COLLATE "C" NOT NULL,
    class     smallint NOT NULL CHECK (class BETWEEN -1 AND 3),
    clicks    bigint   NOT NULL,
    PRIMARY KEY (code, day, dimension, value, class)
);

INSERT INTO click_minutes (code, minute, dimension, value, class, clicks)
SELECT code, minute, dimension, value, class, sum(clicks)::int8 FROM (
    SELECT code, minute, dimension, value,
           CASE WHEN NOT bot THEN 0
                WHEN dimension = 6 THEN CASE value WHEN 'crawler' THEN 1
                                          WHEN 'previewer' THEN 2 WHEN 'monitor' THEN 3 ELSE -1 END
                ELSE -1 END,
           clicks
      FROM click_minutes_v2 WHERE NOT (bot AND dimension = 0)
    UNION ALL
    SELECT code, minute, 0, '',
           CASE value WHEN 'crawler' THEN 1 WHEN 'previewer' THEN 2 WHEN 'monitor' THEN 3 ELSE -1 END,
           clicks
      FROM click_minutes_v2 WHERE bot AND dimension = 6
    UNION ALL
    SELECT t.code, t.minute, 0, '', -1, t.clicks - COALESCE(k.clicks, 0)
      FROM click_minutes_v2 t
      LEFT JOIN (SELECT code, minute, sum(clicks) AS clicks FROM click_minutes_v2
                  WHERE bot AND dimension = 6 GROUP BY 1, 2) k USING (code, minute)
     WHERE t.bot AND t.dimension = 0
) AS rows (code, minute, dimension, value, class, clicks)
 WHERE clicks > 0
 GROUP BY 1, 2, 3, 4, 5;

INSERT INTO click_days (code, day, dimension, value, class, clicks)
SELECT code, day, dimension, value, class, sum(clicks)::int8 FROM (
    SELECT code, day, dimension, value,
           CASE WHEN NOT bot THEN 0
                WHEN dimension = 6 THEN CASE value WHEN 'crawler' THEN 1
                                          WHEN 'previewer' THEN 2 WHEN 'monitor' THEN 3 ELSE -1 END
                ELSE -1 END,
           clicks
      FROM click_days_v2 WHERE NOT (bot AND dimension = 0)
    UNION ALL
    SELECT code, day, 0, '',
           CASE value WHEN 'crawler' THEN 1 WHEN 'previewer' THEN 2 WHEN 'monitor' THEN 3 ELSE -1 END,
           clicks
      FROM click_days_v2 WHERE bot AND dimension = 6
    UNION ALL
    SELECT t.code, t.day, 0, '', -1, t.clicks - COALESCE(k.clicks, 0)
      FROM click_days_v2 t
      LEFT JOIN (SELECT code, day, sum(clicks) AS clicks FROM click_days_v2
                  WHERE bot AND dimension = 6 GROUP BY 1, 2) k USING (code, day)
     WHERE t.bot AND t.dimension = 0
) AS rows (code, day, dimension, value, class, clicks)
 WHERE clicks > 0
 GROUP BY 1, 2, 3, 4, 5;

DROP TABLE click_minutes_v2;
DROP TABLE click_days_v2;

CREATE INDEX click_minutes_age ON click_minutes USING brin (minute);
CREATE INDEX click_days_age ON click_days USING brin (day);
