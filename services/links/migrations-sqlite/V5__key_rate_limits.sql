-- A per-key request rate, as in the Postgres migration V5.
ALTER TABLE api_keys ADD COLUMN rate_per_second INTEGER CHECK (rate_per_second > 0);
