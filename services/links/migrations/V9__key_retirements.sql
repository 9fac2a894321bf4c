-- A rotation moves the key's value to previous_key_hash; rotating again
-- overwrites that, and the value it held stops working at once. Writers
-- learn of stopped values by polling (retired_key_hashes); this table keeps
-- the overwritten ones for them, as revoked_at and previous_valid_until do
-- for the others. Rows older than a day are deleted by the next rotation.
CREATE TABLE api_key_retirements (
    key_hash   bytea       NOT NULL,
    retired_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_key_retirements_at ON api_key_retirements (retired_at);
