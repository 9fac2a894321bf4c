-- Webhooks, as in the Postgres migration V20: endpoints per API key, an
-- outbox of messages filled by triggers on `links` in the transaction that
-- changes a link (so none is lost and none is sent for a change rolled
-- back), and the log of every delivery attempt. Times are microseconds
-- since the Unix epoch; a message of a disabled endpoint waits with
-- `next_attempt_at` at the largest integer (Postgres: infinity). The
-- triggers are per row (SQLite has no statement triggers), each gated by
-- its owner having an enabled endpoint.

CREATE TABLE webhook_endpoints (
    id              INTEGER PRIMARY KEY,
    owner_key_id    INTEGER NOT NULL REFERENCES api_keys (id),
    url             TEXT    NOT NULL,
    -- A JSON array of link.created, link.updated, link.deleted,
    -- link.blocked, link.clicked.
    events          TEXT    NOT NULL,
    secret          TEXT    NOT NULL,
    previous_secret TEXT,
    previous_until  INTEGER,
    created_at      INTEGER NOT NULL,
    disabled_at     INTEGER,
    failing_since   INTEGER,
    failures        INTEGER NOT NULL DEFAULT 0,
    retry_at        INTEGER
);
CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner_key_id);

CREATE TABLE webhook_messages (
    id              INTEGER PRIMARY KEY,
    message_id      TEXT    NOT NULL,
    endpoint_id     INTEGER NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type      TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL
);
CREATE INDEX webhook_messages_due ON webhook_messages (endpoint_id, next_attempt_at, id);

CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY,
    endpoint_id INTEGER NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    message_id  TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    latency_ms  INTEGER NOT NULL,
    delivered   INTEGER NOT NULL CHECK (delivered IN (0, 1)),
    at          INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_age ON webhook_deliveries (at);

-- A link as a message's `data`: what an owner sees of it over the API.
CREATE VIEW webhook_link_data AS
SELECT code, json_object(
           'code', code,
           'target_url', target_url,
           'redirect_type', redirect_status,
           'forward_query', json(iif(forward_query, 'true', 'false')),
           'enabled', json(iif(enabled, 'true', 'false')),
           'blocked', json(iif(blocked, 'true', 'false')),
           'created_at', strftime('%Y-%m-%dT%H:%M:%fZ', created_at / 1e6, 'unixepoch'),
           'updated_at', strftime('%Y-%m-%dT%H:%M:%fZ', coalesce(updated_at, created_at) / 1e6,
                                  'unixepoch'),
           'expires_at', strftime('%Y-%m-%dT%H:%M:%fZ', expires_at / 1e6, 'unixepoch')) AS data
  FROM links;

CREATE TRIGGER links_webhooks_inserted AFTER INSERT ON links
WHEN NEW.target_url IS NOT NULL
 AND EXISTS (SELECT 1 FROM webhook_endpoints
              WHERE owner_key_id = NEW.owner_key_id AND disabled_at IS NULL)
BEGIN
    INSERT INTO webhook_messages (message_id, endpoint_id, event_type, payload, created_at,
                                  next_attempt_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), e.id, 'link.created',
           json_object('type', 'link.created',
                       'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                       'data', json((SELECT data FROM webhook_link_data WHERE code = NEW.code))),
           CAST(unixepoch('subsec') * 1e6 AS INTEGER), CAST(unixepoch('subsec') * 1e6 AS INTEGER)
      FROM webhook_endpoints e
     WHERE e.owner_key_id = NEW.owner_key_id AND e.disabled_at IS NULL
       AND EXISTS (SELECT 1 FROM json_each(e.events) WHERE value = 'link.created');
END;

CREATE TRIGGER links_webhooks_updated AFTER UPDATE ON links
-- A tombstone touched again, or a row written unchanged, is no event.
WHEN OLD.target_url IS NOT NULL
 AND (NEW.target_url IS NOT OLD.target_url OR NEW.redirect_status IS NOT OLD.redirect_status
      OR NEW.forward_query IS NOT OLD.forward_query OR NEW.expires_at IS NOT OLD.expires_at
      OR NEW.enabled IS NOT OLD.enabled OR NEW.blocked IS NOT OLD.blocked
      OR NEW.updated_at IS NOT OLD.updated_at OR NEW.options IS NOT OLD.options
      OR NEW.owner_options IS NOT OLD.owner_options)
 AND EXISTS (SELECT 1 FROM webhook_endpoints
              WHERE owner_key_id = NEW.owner_key_id AND disabled_at IS NULL)
BEGIN
    INSERT INTO webhook_messages (message_id, endpoint_id, event_type, payload, created_at,
                                  next_attempt_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), e.id, kind.name,
           json_object('type', kind.name,
                       'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                       'data', json((SELECT data FROM webhook_link_data WHERE code = NEW.code))),
           CAST(unixepoch('subsec') * 1e6 AS INTEGER), CAST(unixepoch('subsec') * 1e6 AS INTEGER)
      FROM webhook_endpoints e,
           (SELECT CASE WHEN NEW.target_url IS NULL THEN 'link.deleted'
                        WHEN NEW.blocked AND NOT OLD.blocked THEN 'link.blocked'
                        ELSE 'link.updated' END AS name) kind
     WHERE e.owner_key_id = NEW.owner_key_id AND e.disabled_at IS NULL
       AND EXISTS (SELECT 1 FROM json_each(e.events) WHERE value = kind.name);
END;
