-- API keys: only a SHA-256 of the key is stored.
CREATE TABLE api_keys (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL,
    key_hash   bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- One keyspace for generated codes and aliases: the code is the key of every
-- lookup, and the natural hash-partitioning key when the table outgrows one
-- primary.
CREATE TABLE links (
    code            text        COLLATE "C" PRIMARY KEY,
    -- The leased ID a generated code encodes; NULL for aliases.
    id              bigint,
    owner_key_id    bigint      NOT NULL REFERENCES api_keys (id),
    target_url      text        NOT NULL,
    redirect_status smallint    NOT NULL CHECK (redirect_status IN (301, 302, 307, 308)),
    forward_query   boolean     NOT NULL DEFAULT false,
    expires_at      timestamptz,
    enabled         boolean     NOT NULL DEFAULT true,
    is_alias        boolean     NOT NULL,
    idempotency_key text,
    click_count     bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX links_idempotency ON links (owner_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX links_owner_newest ON links (owner_key_id, created_at DESC, code DESC);
