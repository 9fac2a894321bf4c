-- The webhook triggers of V20, each one INSERT … SELECT over the
-- statement's rows joined to the endpoints that asked for the event: the
-- messages are built straight from the transition tables, not gathered
-- into one jsonb array per statement (every row of a group commit, whoever
-- owned it) and taken apart again. Creates by a key with an endpoint went
-- from 0.62x to 0.77x those of a key without (bench-writer --cases
-- webhook, 64 clients); a key without endpoints costs one probe of an
-- empty join, as before.

CREATE OR REPLACE FUNCTION webhook_links_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_messages (message_id, endpoint_id, event_type, payload)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), e.id, 'link.created',
           jsonb_build_object('type', 'link.created', 'timestamp', now(),
                              'data', webhook_link_data(n))::text
      FROM new_links n
      JOIN webhook_endpoints e ON e.owner_key_id = n.owner_key_id
     WHERE n.target_url IS NOT NULL AND e.disabled_at IS NULL
       AND 'link.created' = ANY (e.events);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION webhook_links_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_messages (message_id, endpoint_id, event_type, payload)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), e.id, c.kind,
           jsonb_build_object('type', c.kind, 'timestamp', now(), 'data', c.data)::text
      FROM (SELECT n.owner_key_id, webhook_link_data(n) AS data,
                   CASE WHEN n.target_url IS NULL THEN 'link.deleted'
                        WHEN (n.flags & 8) <> 0 AND (o.flags & 8) = 0 THEN 'link.blocked'
                        ELSE 'link.updated' END AS kind
              FROM new_links n JOIN old_links o USING (code)
             -- A tombstone touched again is no event.
             WHERE o.target_url IS NOT NULL AND n IS DISTINCT FROM o
               AND EXISTS (SELECT FROM webhook_endpoints e
                            WHERE e.owner_key_id = n.owner_key_id AND e.disabled_at IS NULL)) c
      JOIN webhook_endpoints e ON e.owner_key_id = c.owner_key_id
     WHERE e.disabled_at IS NULL AND c.kind = ANY (e.events);
    RETURN NULL;
END
$$;
