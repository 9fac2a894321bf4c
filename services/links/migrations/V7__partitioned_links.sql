-- Links hash-partitioned by code, and idempotency keys in a table of their
-- own that forgets them after a retention.
--
-- Every lookup of a link is by code, so partitioning by hash(code) lets a
-- lookup touch one partition and lets partitions later move to their own
-- tablespaces or shards. A unique index on a partitioned table must include
-- the partition key; the old (owner, idempotency key) index did not, which is
-- why the keys move out. They only have to answer retries, so they are kept
-- for a retention (24 h by default) rather than forever.
--
-- The row is laid out to cost as little as the data allows:
--   * fixed-width columns first, widest first, so no byte is padding;
--   * eight columns at most, so the null bitmap fits in the 24-byte header;
--   * updated_at is NULL until the first update (it would repeat created_at);
--   * the leased id is not stored: a generated code decodes to it;
--   * forward-query, disabled and alias share one smallint of flags.
-- The list index is (owner, created_at) without the code: every index entry
-- carries the heap pointer anyway, and a page ordered by (created_at, code)
-- sorts the few links sharing a created_at.
--
-- The number of partitions is read from the setting tinyurl.link_partitions
-- (the writer sets it from TINYURL_LINK_PARTITIONS when it migrates); 16 when
-- unset. It is fixed once this migration has run.
--
-- This rewrites the links table in one transaction. Redirects keep reading
-- throughout (they read replicas, and the SHARE lock below admits readers on
-- the primary); creates, updates and deletes wait for the copy, about 1 s per
-- 100,000 links on a small machine (docs/storage.md has the figures).

LOCK TABLE links IN SHARE MODE;

-- flags bits: 1 forward the query string, 2 disabled, 4 alias.
CREATE TABLE links_partitioned (
    created_at      timestamptz NOT NULL DEFAULT now(),
    owner_key_id    bigint      NOT NULL,
    -- NULL until the link is first changed.
    updated_at      timestamptz,
    expires_at      timestamptz,
    redirect_status smallint    NOT NULL
        CONSTRAINT links_redirect_status_check CHECK (redirect_status IN (301, 302, 307, 308)),
    flags           smallint    NOT NULL DEFAULT 0
        CONSTRAINT links_flags_check CHECK (flags BETWEEN 0 AND 7),
    code            text        COLLATE "C" NOT NULL,
    -- NULL: deleted (a tombstone); the code stays taken forever.
    target_url      text,
    PRIMARY KEY (code)
) PARTITION BY HASH (code);

DO $$
DECLARE
    partitions integer := coalesce(nullif(current_setting('tinyurl.link_partitions', true), ''), '16')::integer;
BEGIN
    IF partitions < 1 OR partitions > 1024 THEN
        RAISE EXCEPTION 'tinyurl.link_partitions must be between 1 and 1024, not %', partitions;
    END IF;
    FOR remainder IN 0 .. partitions - 1 LOOP
        EXECUTE format(
            'CREATE TABLE links_p%s PARTITION OF links_partitioned
                 FOR VALUES WITH (MODULUS %s, REMAINDER %s)',
            lpad(remainder::text, 3, '0'), partitions, remainder);
    END LOOP;
END
$$;

-- Old rows: the updated_at of a link never changed becomes NULL; flags from
-- the booleans. Copied in created order, as they would have arrived.
INSERT INTO links_partitioned (created_at, owner_key_id, updated_at, expires_at,
                               redirect_status, flags, code, target_url)
SELECT created_at, owner_key_id, NULLIF(updated_at, created_at), expires_at, redirect_status,
       (CASE WHEN forward_query THEN 1 ELSE 0 END)
     + (CASE WHEN enabled THEN 0 ELSE 2 END)
     + (CASE WHEN is_alias THEN 4 ELSE 0 END),
       code, target_url
FROM links
ORDER BY created_at, code;

-- The list index is built after the copy: a bulk build packs its pages.
CREATE INDEX links_partitioned_owner_newest ON links_partitioned (owner_key_id, created_at);
ALTER TABLE links_partitioned
    ADD CONSTRAINT links_owner_key_id_fkey FOREIGN KEY (owner_key_id) REFERENCES api_keys (id);

-- A retry with a key answers with the link the key created, for the
-- retention; after it the key is forgotten (pruned by the writers) and a
-- retry creates anew, as after a deleted link.
CREATE TABLE link_idempotency (
    owner_key_id bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    key          text        COLLATE "C" NOT NULL,
    code         text        COLLATE "C" NOT NULL,
    PRIMARY KEY (owner_key_id, key)
);
-- Pruning deletes by age; rows arrive in time order.
CREATE INDEX link_idempotency_age ON link_idempotency USING brin (created_at);

-- Keys of live links still within the default retention carry over; older
-- ones would be pruned at once.
INSERT INTO link_idempotency (owner_key_id, created_at, key, code)
SELECT owner_key_id, created_at, idempotency_key, code
FROM links
WHERE idempotency_key IS NOT NULL AND target_url IS NOT NULL
  AND created_at > now() - interval '24 hours';

DROP TABLE links;
ALTER TABLE links_partitioned RENAME TO links;
ALTER INDEX links_partitioned_pkey RENAME TO links_pkey;
ALTER INDEX links_partitioned_owner_newest RENAME TO links_owner_newest;
