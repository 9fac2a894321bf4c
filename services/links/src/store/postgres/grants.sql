-- What each service's database role may do, applied after every migration
-- run (GRANT is idempotent), so a new table gets its grants with the
-- migration that makes it. A role that does not exist is skipped: a
-- deployment without per-service roles runs everything as the owner.
--
--   tinyurl_migrator  owns the schema; runs `migrate` (the only DDL)
--   tinyurl_writer    reads and writes the link tables, keys and rollups
--   tinyurl_redirect  reads the columns of links a redirect needs, no more
--   tinyurl_idalloc   its own tables (granted by idalloc's migrations)
DO $grants$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'tinyurl_writer') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON
            links, link_idempotency, api_keys, api_key_retirements, blocked_hosts,
            click_minutes, click_days, click_totals, click_batches, click_rollup_mark,
            console_sessions, link_tags, link_options, domains, owner_click_days,
            click_ranks, webhook_endpoints, webhook_messages, webhook_deliveries
            TO tinyurl_writer;
        GRANT SELECT ON click_minute_rows TO tinyurl_writer;
        -- To check at start that the schema is new enough (TINYURL_MIGRATE=false).
        GRANT SELECT ON writer_schema_history TO tinyurl_writer;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'tinyurl_redirect') THEN
        -- Not owner_key_id, created_at or anything of the keys: a redirect
        -- that is taken over reads targets, as any visitor could.
        GRANT SELECT (code, target_url, redirect_status, flags, expires_at)
            ON links TO tinyurl_redirect;
        GRANT SELECT (code, options) ON link_options TO tinyurl_redirect;
        GRANT SELECT (host, not_found_url) ON domains TO tinyurl_redirect;
    END IF;
END
$grants$;
