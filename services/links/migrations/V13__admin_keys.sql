-- The operator's keys: `admin` adds managing every API key and the host
-- blocklist (the web console's pages) to the `manage` scope the `scope`
-- column holds. A flag rather than a fourth scope value, so the embedded
-- store (whose CHECK on scope cannot be altered in place) keeps the same
-- layout; every existing key stays what it was.
ALTER TABLE api_keys ADD COLUMN admin boolean NOT NULL DEFAULT false;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_admin_manages CHECK (NOT admin OR scope = 'manage');
