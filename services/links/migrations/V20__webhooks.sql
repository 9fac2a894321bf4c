-- Webhooks: endpoints registered per API key, an outbox of messages to
-- deliver, and the log of every delivery attempt.
--
-- Messages are written by triggers on `links`, in the transaction that
-- changes the link: a link change committed always has its messages, one
-- rolled back has none, whatever path made it (a create, a batch, an import,
-- an update, a delete, an operator's block). The triggers are per statement
-- and read the statement's rows from transition tables, so a group commit of
-- many links adds one INSERT … SELECT, and a key without endpoints adds a
-- probe of an empty join.

CREATE TABLE webhook_endpoints (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_key_id    bigint      NOT NULL REFERENCES api_keys (id),
    url             text        NOT NULL,
    -- Of link.created, link.updated, link.deleted, link.blocked,
    -- link.clicked (written by the click fold).
    events          text[]      NOT NULL,
    -- `whsec_` and the base64 of the key (Standard Webhooks).
    secret          text        NOT NULL,
    -- After a rotation, messages are signed with both keys until then.
    previous_secret text,
    previous_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Set when the endpoint has failed for TINYURL_WEBHOOK_DISABLE_AFTER
    -- without a success; its owner enables it again.
    disabled_at     timestamptz,
    -- When the current run of failures began; NULL after a success.
    failing_since   timestamptz,
    -- Failed rounds in a row, and when the endpoint may be tried again: a
    -- dead endpoint is tried once per backoff interval, not once per new
    -- message, so it costs the writers (and the creates beside them) next
    -- to nothing.
    failures        integer     NOT NULL DEFAULT 0,
    retry_at        timestamptz
);
CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner_key_id);

-- The outbox: one row per message per endpoint, until it is delivered.
CREATE TABLE webhook_messages (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The `webhook-id` of every attempt: a receiver that sees it twice has
    -- the message already.
    message_id      text        COLLATE "C" NOT NULL,
    endpoint_id     bigint      NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type      text        NOT NULL,
    -- The body sent, as sent.
    payload         text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    -- When it is due. A writer that takes it moves this past its lease (a
    -- writer that dies lets it go then); a failure, to its retry; an
    -- endpoint disabled, to infinity until it is enabled again.
    next_attempt_at timestamptz NOT NULL DEFAULT now()
);
-- Claims go endpoint by endpoint (those not waiting out a backoff), so the
-- backlog of a dead endpoint is never scanned; one index serves that,
-- the counts per endpoint and the cascade of a deleted endpoint.
CREATE INDEX webhook_messages_due ON webhook_messages (endpoint_id, next_attempt_at, id);

CREATE TABLE webhook_deliveries (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id bigint      NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    message_id  text        COLLATE "C" NOT NULL,
    event_type  text        NOT NULL,
    attempt     integer     NOT NULL,
    -- The HTTP status; NULL when there was no answer.
    status      smallint,
    error       text,
    latency_ms  integer     NOT NULL,
    delivered   boolean     NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_age ON webhook_deliveries USING brin (at);

-- A link as a message's `data`: what an owner sees of it over the API.
CREATE FUNCTION webhook_link_data(l links) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'code', l.code,
        'target_url', l.target_url,
        'redirect_type', l.redirect_status,
        'forward_query', (l.flags & 1) <> 0,
        'enabled', (l.flags & 2) = 0,
        'blocked', (l.flags & 8) <> 0,
        'created_at', l.created_at,
        'updated_at', coalesce(l.updated_at, l.created_at),
        'expires_at', l.expires_at)
$$;

-- Queues `kind` for every link of `rows` to each enabled endpoint of its
-- owner that asked for it.
CREATE FUNCTION webhook_enqueue(kind text, rows jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO webhook_messages (message_id, endpoint_id, event_type, payload)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), e.id, kind,
           jsonb_build_object('type', kind, 'timestamp', now(), 'data', r.data)::text
      FROM jsonb_to_recordset(rows) AS r(owner_key_id bigint, data jsonb)
      JOIN webhook_endpoints e ON e.owner_key_id = r.owner_key_id
     WHERE e.disabled_at IS NULL AND kind = ANY (e.events)
$$;

CREATE FUNCTION webhook_links_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Most keys have no endpoint: nothing is built for them.
    IF EXISTS (SELECT FROM webhook_endpoints e JOIN new_links n USING (owner_key_id)
                WHERE e.disabled_at IS NULL) THEN
        PERFORM webhook_enqueue('link.created', jsonb_agg(jsonb_build_object(
                    'owner_key_id', n.owner_key_id, 'data', webhook_link_data(n))))
           FROM new_links n WHERE n.target_url IS NOT NULL;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION webhook_links_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM webhook_endpoints e JOIN new_links n USING (owner_key_id)
                WHERE e.disabled_at IS NULL) THEN
        PERFORM webhook_enqueue(grouped.kind, grouped.rows)
           FROM (SELECT kind, jsonb_agg(jsonb_build_object('owner_key_id', owner_key_id,
                                                           'data', data)) AS rows
                   FROM (SELECT n.owner_key_id, webhook_link_data(n) AS data,
                                CASE WHEN n.target_url IS NULL THEN 'link.deleted'
                                     WHEN (n.flags & 8) <> 0 AND (o.flags & 8) = 0
                                         THEN 'link.blocked'
                                     ELSE 'link.updated' END AS kind
                           FROM new_links n JOIN old_links o USING (code)
                          -- A tombstone touched again is no event.
                          WHERE o.target_url IS NOT NULL AND n IS DISTINCT FROM o) changed
                  GROUP BY kind) grouped;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER links_webhooks_inserted AFTER INSERT ON links
    REFERENCING NEW TABLE AS new_links
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_links_inserted();
CREATE TRIGGER links_webhooks_updated AFTER UPDATE ON links
    REFERENCING OLD TABLE AS old_links NEW TABLE AS new_links
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_links_updated();
