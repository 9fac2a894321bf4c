-- What the request that used an idempotency key asked for: a retry must ask
-- for the same link (see the Postgres migration of the same number).
ALTER TABLE link_idempotency ADD COLUMN fingerprint BLOB;
