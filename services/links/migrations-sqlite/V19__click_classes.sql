-- Rollup rows carry the visit's traffic class instead of a bot flag, as in
-- the Postgres migration V21 (which says how the rows folded before are
-- carried over): 0 a person, 1 a crawler, 2 a link previewer, 3 a monitor,
-- -1 a bot whose kind was not recorded.

ALTER TABLE click_minutes RENAME TO click_minutes_v2;
ALTER TABLE click_days RENAME TO click_days_v2;
DROP INDEX click_minutes_age;
DROP INDEX click_days_age;

CREATE TABLE click_minutes (
    code      TEXT    NOT NULL,
    minute    INTEGER NOT NULL,
    dimension INTEGER NOT NULL,
    value     TEXT    NOT NULL,
    class     INTEGER NOT NULL CHECK (class BETWEEN -1 AND 3),
    clicks    INTEGER NOT NULL,
    PRIMARY KEY (code, minute, dimension, value, class)
) WITHOUT ROWID;

CREATE TABLE click_days (
    code      TEXT    NOT NULL,
    day       INTEGER NOT NULL,
    dimension INTEGER NOT NULL,
    value     TEXT    NOT NULL,
    class     INTEGER NOT NULL CHECK (class BETWEEN -1 AND 3),
    clicks    INTEGER NOT NULL,
    PRIMARY KEY (code, day, dimension, value, class)
) WITHOUT ROWID;

INSERT INTO click_minutes (code, minute, dimension, value, class, clicks)
SELECT code, minute, dimension, value, class, sum(clicks) FROM (
    SELECT code, minute, dimension, value,
           CASE WHEN NOT bot THEN 0
                WHEN dimension = 6 THEN CASE value WHEN 'crawler' THEN 1
                                                   WHEN 'previewer' THEN 2
                                                   WHEN 'monitor' THEN 3 ELSE -1 END
                ELSE -1 END AS class,
           clicks
      FROM click_minutes_v2 WHERE NOT (bot AND dimension = 0)
    UNION ALL
    SELECT code, minute, 0, '',
           CASE value WHEN 'crawler' THEN 1 WHEN 'previewer' THEN 2
                      WHEN 'monitor' THEN 3 ELSE -1 END,
           clicks
      FROM click_minutes_v2 WHERE bot AND dimension = 6
    UNION ALL
    SELECT t.code, t.minute, 0, '', -1, t.clicks - COALESCE(k.clicks, 0)
      FROM click_minutes_v2 t
      LEFT JOIN (SELECT code, minute, sum(clicks) AS clicks FROM click_minutes_v2
                  WHERE bot AND dimension = 6 GROUP BY 1, 2) k USING (code, minute)
     WHERE t.bot AND t.dimension = 0
)
 WHERE clicks > 0
 GROUP BY 1, 2, 3, 4, 5;

INSERT INTO click_days (code, day, dimension, value, class, clicks)
SELECT code, day, dimension, value, class, sum(clicks) FROM (
    SELECT code, day, dimension, value,
           CASE WHEN NOT bot THEN 0
                WHEN dimension = 6 THEN CASE value WHEN 'crawler' THEN 1
                                                   WHEN 'previewer' THEN 2
                                                   WHEN 'monitor' THEN 3 ELSE -1 END
                ELSE -1 END AS class,
           clicks
      FROM click_days_v2 WHERE NOT (bot AND dimension = 0)
    UNION ALL
    SELECT code, day, 0, '',
           CASE value WHEN 'crawler' THEN 1 WHEN 'previewer' THEN 2
                      WHEN 'monitor' THEN 3 ELSE -1 END,
           clicks
      FROM click_days_v2 WHERE bot AND dimension = 6
    UNION ALL
    SELECT t.code, t.day, 0, '', -1, t.clicks - COALESCE(k.clicks, 0)
      FROM click_days_v2 t
      LEFT JOIN (SELECT code, day, sum(clicks) AS clicks FROM click_days_v2
                  WHERE bot AND dimension = 6 GROUP BY 1, 2) k USING (code, day)
     WHERE t.bot AND t.dimension = 0
)
 WHERE clicks > 0
 GROUP BY 1, 2, 3, 4, 5;

DROP TABLE click_minutes_v2;
DROP TABLE click_days_v2;

CREATE INDEX click_minutes_age ON click_minutes (minute);
CREATE INDEX click_days_age ON click_days (day);
