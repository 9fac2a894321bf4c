-- The operator's keys (see the Postgres migration of the same number).
ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0
    CHECK (admin IN (0, 1) AND (admin = 0 OR scope = 'manage'));
