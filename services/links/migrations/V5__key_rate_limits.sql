-- A per-key request rate (per second) overriding the writer's default
-- (TINYURL_RATE_LIMIT_PER_KEY); NULL: the default applies.
ALTER TABLE api_keys ADD COLUMN rate_per_second integer CHECK (rate_per_second > 0);
