-- One row per namespace: the next ID that has never been handed out.
CREATE TABLE idalloc_namespaces (
    namespace  text        PRIMARY KEY,
    next_id    bigint      NOT NULL CHECK (next_id >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Leases that carried a request_id, so a retried call gets the same range.
-- Rows older than the retention period are purged by the service.
CREATE TABLE idalloc_leases (
    request_id text        PRIMARY KEY,
    namespace  text        NOT NULL,
    start_id   bigint      NOT NULL,
    end_id     bigint      NOT NULL CHECK (end_id > start_id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idalloc_leases_created_at ON idalloc_leases (created_at);
