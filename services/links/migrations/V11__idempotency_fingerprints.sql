-- What the request that used an idempotency key asked for (16 bytes of a
-- SHA-256 of its parameters): a retry must ask for the same link; the same
-- key with other parameters is refused (422) instead of answered with the
-- first link. Keys stored before this column have none and replay as before.
ALTER TABLE link_idempotency ADD COLUMN fingerprint bytea;
