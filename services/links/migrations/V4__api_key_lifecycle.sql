-- API key lifecycle: scopes, last use, rotation with a grace period, and a
-- cheap way for every writer to find recent revocations.

-- What a key may do: read (get, list, stats) < create (+ create links) <
-- manage (+ update and delete). Existing keys keep doing everything.
ALTER TABLE api_keys
    ADD COLUMN scope text NOT NULL DEFAULT 'manage'
        CHECK (scope IN ('read', 'create', 'manage')),
    -- Refreshed when a writer looks the key up (at most once a minute per
    -- writer while the key is in use), not on every call.
    ADD COLUMN last_used_at timestamptz,
    -- A rotation moves the old hash here; it keeps working until
    -- previous_valid_until, then is forgotten.
    ADD COLUMN previous_key_hash bytea UNIQUE,
    ADD COLUMN previous_valid_until timestamptz;

-- Writers poll for keys revoked (or rotated out) in the last minutes to drop
-- them from their caches; both indexes hold only the few such keys.
CREATE INDEX api_keys_revoked ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX api_keys_rotated ON api_keys (previous_valid_until)
    WHERE previous_valid_until IS NOT NULL;
