-- One minute-rollup row per (link, minute, class) carrying its breakdowns,
-- instead of one row per (link, minute, dimension, value, class). A click
-- used to write five rows here (the total, referrer, country, browser,
-- device), each an index probe, a heap tuple and WAL of its own, and a fold
-- first locked each group and read what it held to bound its values; now
-- it writes one row, and the bound is kept by the upsert itself under the
-- row's lock (click_counts_add), so there is nothing to lock or read first.
--
-- `counts` maps a dimension's number to its values' clicks, e.g.
-- {"1": {"example.com": 3}, "2": {"DE": 3}, "3": {"Firefox": 3}}; `clicks`
-- is the total (dimension 0). Day rollups keep the row-per-value shape: the
-- roll-up expands minutes through click_minute_rows, the old shape as a view.
--
-- The roll-up mark is held, so no fold or roll-up runs beside.

SELECT rolled_through FROM click_rollup_mark FOR UPDATE;

ALTER TABLE click_minutes RENAME TO click_minutes_v21;
ALTER TABLE click_minutes_v21 RENAME CONSTRAINT click_minutes_pkey TO click_minutes_v21_pkey;
ALTER INDEX click_minutes_age RENAME TO click_minutes_v21_age;

CREATE TABLE click_minutes (
    code   text     COLLATE "C" NOT NULL,
    minute integer  NOT NULL,
    class  smallint NOT NULL CHECK (class BETWEEN -1 AND 3),
    clicks bigint   NOT NULL,
    counts jsonb    NOT NULL,
    PRIMARY KEY (code, minute, class)
);

INSERT INTO click_minutes (code, minute, class, clicks, counts)
SELECT code, minute, class,
       coalesce(sum(clicks) FILTER (WHERE dimension = 0), 0)::int8,
       coalesce(jsonb_object_agg(dimension::text, breakdown) FILTER (WHERE dimension > 0), '{}')
  FROM (SELECT code, minute, class, dimension,
               sum(clicks) AS clicks, jsonb_object_agg(value, clicks) AS breakdown
          FROM click_minutes_v21
         GROUP BY code, minute, class, dimension) AS dimensions
 GROUP BY code, minute, class;

DROP TABLE click_minutes_v21;

CREATE INDEX click_minutes_age ON click_minutes USING brin (minute);

-- The minute rollups in the shape of the day rollups: a row per (dimension,
-- value), the total as dimension 0. Reads filter it by code, minute and
-- class, which reach the table's key in both branches.
CREATE VIEW click_minute_rows AS
SELECT code, minute, 0::smallint AS dimension, ''::text COLLATE "C" AS value, class, clicks
  FROM click_minutes
UNION ALL
SELECT m.code, m.minute, d.key::smallint, v.key COLLATE "C", m.class, v.value::bigint
  FROM click_minutes m
 CROSS JOIN LATERAL jsonb_each(m.counts) AS d
 CROSS JOIN LATERAL jsonb_each_text(d.value) AS v;

-- `stored` with `added` added, value by value: a value already named adds
-- to its count; a new one is named while its dimension has fewer than
-- `bound` named values, else its clicks go to "other". New values are
-- taken most clicks first, then by value, as the fold orders them.
-- Called by a fold's upsert under the row's lock, so two folds of one
-- minute cannot both fill the room the other saw.
CREATE FUNCTION click_counts_add(stored jsonb, added jsonb, bound integer)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    dimension text;
    adding jsonb;
    have jsonb;
    named integer;
    item record;
BEGIN
    FOR dimension, adding IN SELECT key, value FROM jsonb_each(added) LOOP
        have := stored -> dimension;
        IF have IS NULL THEN
            -- Nothing stored for it: the fold bounded its own values.
            stored := stored || jsonb_build_object(dimension, adding);
            CONTINUE;
        END IF;
        named := NULL;
        FOR item IN SELECT key, value::bigint AS clicks FROM jsonb_each_text(adding)
                     ORDER BY value::bigint DESC, key COLLATE "C" LOOP
            IF have ? item.key THEN
                have := jsonb_set(have, ARRAY[item.key],
                                  to_jsonb((have ->> item.key)::bigint + item.clicks));
                CONTINUE;
            END IF;
            IF named IS NULL THEN
                SELECT count(*) INTO named FROM jsonb_object_keys(have) AS k WHERE k <> 'other';
            END IF;
            IF item.key <> 'other' AND named < bound THEN
                have := have || jsonb_build_object(item.key, item.clicks);
                named := named + 1;
            ELSE
                have := jsonb_set(have, '{other}',
                                  to_jsonb(coalesce((have ->> 'other')::bigint, 0) + item.clicks));
            END IF;
        END LOOP;
        stored := jsonb_set(stored, ARRAY[dimension], have);
    END LOOP;
    RETURN stored;
END
$$;
