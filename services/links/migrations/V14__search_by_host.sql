-- The console's search finds an owner's links by where they lead: a host, or
-- the start of a target URL, as it is typed. A prefix of the host, so a
-- btree on (owner, host) finds it among any number of links; a substring
-- search over targets would need a trigram index, about 90 bytes a link on
-- 90-byte targets (it would almost double what a plain link costs), where
-- this one is 8–40 (8 when an owner's links share hosts; Postgres keeps one
-- entry per repeated key). The scheme and a leading "www." are dropped so
-- that "example.com" finds https://www.example.com/…; stored targets already
-- have a lowercase (punycode) host, lower() keeps older rows honest.
CREATE FUNCTION link_host(target_url text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN regexp_replace(
        lower(substring(target_url FROM '^[a-z]+://(\[[^]]*\]|[^/:?#]*)')),
        '^www\.', '');

-- Not CONCURRENTLY: a partitioned table cannot. The build holds off writes
-- to links while it reads them (a few seconds per million links here).
CREATE INDEX links_owner_host ON links (owner_key_id, link_host(target_url) text_pattern_ops)
    WHERE target_url IS NOT NULL;
