//! Webhook endpoints, the outbox and the delivery log in Postgres (the
//! outbox is filled by the triggers of migration V20).

use std::time::Duration;

use super::*;
use crate::webhooks::deliver::DeliverySettings;
use crate::webhooks::{
    AttemptOutcome, OutboundMessage, StoredWebhook, WebhookDelivery, WebhookStore,
};

const ENDPOINT_COLUMNS: &str = "e.id, e.url, e.events, e.secret, e.created_at, e.disabled_at, \
     e.failing_since, (SELECT count(*) FROM webhook_messages m WHERE m.endpoint_id = e.id)";

fn endpoint(row: &tokio_postgres::Row) -> Result<StoredWebhook, tokio_postgres::Error> {
    Ok(StoredWebhook {
        id: row.try_get(0)?,
        url: row.try_get(1)?,
        events: row.try_get(2)?,
        secret: row.try_get(3)?,
        created_at: row.try_get(4)?,
        disabled_at: row.try_get(5)?,
        failing_since: row.try_get(6)?,
        pending: row.try_get(7)?,
    })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl PostgresLinkStore {
    /// The owner's endpoint `id` after `change` (an UPDATE … RETURNING id
    /// statement taking `$1` id, `$2` owner and `extra`).
    async fn changed_webhook(
        &self,
        change: &str,
        owner: i64,
        id: i64,
        extra: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<StoredWebhook>, WriterError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(WriterError::from_postgres)?;
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&id, &owner];
            params.extend_from_slice(extra);
            if transaction
                .query_opt(change, &params)
                .await
                .map_err(WriterError::from_postgres)?
                .is_none()
            {
                return Ok(None);
            }
            let row = transaction
                .query_one(
                    &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints e WHERE e.id = $1"),
                    &[&id],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .commit()
                .await
                .map_err(WriterError::from_postgres)?;
            endpoint(&row).map(Some).map_err(WriterError::from_postgres)
        })
        .await
    }
}

#[async_trait::async_trait]
impl WebhookStore for PostgresLinkStore {
    async fn create_webhook(
        &self,
        owner: i64,
        url: &str,
        events: &[String],
        secret: &str,
    ) -> Result<StoredWebhook, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            let id: i64 = client
                .query_one(
                    "INSERT INTO webhook_endpoints (owner_key_id, url, events, secret)
                     VALUES ($1, $2, $3, $4) RETURNING id",
                    &[&owner, &url, &events, &secret],
                )
                .await
                .and_then(|row| row.try_get(0))
                .map_err(WriterError::from_postgres)?;
            let row = client
                .query_one(
                    &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints e WHERE e.id = $1"),
                    &[&id],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            endpoint(&row).map_err(WriterError::from_postgres)
        })
        .await
    }

    async fn webhooks(&self, owner: i64) -> Result<Vec<StoredWebhook>, WriterError> {
        self.bounded(async {
            self.client()
                .await?
                .query(
                    &format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints e
                          WHERE e.owner_key_id = $1 ORDER BY e.id"
                    ),
                    &[&owner],
                )
                .await
                .map_err(WriterError::from_postgres)?
                .iter()
                .map(endpoint)
                .collect::<Result<_, _>>()
                .map_err(WriterError::from_postgres)
        })
        .await
    }

    async fn delete_webhook(&self, owner: i64, id: i64) -> Result<bool, WriterError> {
        self.bounded(async {
            // Its messages and log go with it (ON DELETE CASCADE).
            let deleted = self
                .client()
                .await?
                .execute(
                    "DELETE FROM webhook_endpoints WHERE id = $1 AND owner_key_id = $2",
                    &[&id, &owner],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn enable_webhook(
        &self,
        owner: i64,
        id: i64,
    ) -> Result<Option<StoredWebhook>, WriterError> {
        self.changed_webhook(
            "WITH enabled AS (
                 UPDATE webhook_endpoints
                    SET disabled_at = NULL, failing_since = NULL, failures = 0, retry_at = NULL
                  WHERE id = $1 AND owner_key_id = $2 RETURNING id
             ), due AS (
                 UPDATE webhook_messages SET next_attempt_at = now()
                  WHERE endpoint_id IN (SELECT id FROM enabled)
                    AND next_attempt_at = 'infinity'
             )
             SELECT id FROM enabled",
            owner,
            id,
            &[],
        )
        .await
    }

    async fn rotate_webhook_secret(
        &self,
        owner: i64,
        id: i64,
        secret: &str,
        keep_previous: Duration,
    ) -> Result<Option<StoredWebhook>, WriterError> {
        let keep = millis(keep_previous);
        self.changed_webhook(
            "UPDATE webhook_endpoints
                SET previous_secret = secret,
                    previous_until = now() + $4::int8 * interval '1 millisecond',
                    secret = $3
              WHERE id = $1 AND owner_key_id = $2 RETURNING id",
            owner,
            id,
            &[&secret, &keep],
        )
        .await
    }

    async fn webhook_deliveries(
        &self,
        owner: i64,
        id: i64,
        limit: i64,
    ) -> Result<Option<Vec<WebhookDelivery>>, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            let owned = client
                .query_opt(
                    "SELECT 1 FROM webhook_endpoints WHERE id = $1 AND owner_key_id = $2",
                    &[&id, &owner],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            if owned.is_none() {
                return Ok(None);
            }
            let rows = client
                .query(
                    "SELECT message_id, event_type, attempt, status, error, latency_ms, delivered, at
                       FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY id DESC LIMIT $2",
                    &[&id, &limit],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            rows.iter()
                .map(|row| {
                    let status: Option<i16> = row.try_get(3)?;
                    let latency: i32 = row.try_get(5)?;
                    Ok(WebhookDelivery {
                        message_id: row.try_get(0)?,
                        event_type: row.try_get(1)?,
                        attempt: row.try_get(2)?,
                        status: status.and_then(|status| u16::try_from(status).ok()),
                        error: row.try_get(4)?,
                        latency: Duration::from_millis(u64::try_from(latency).unwrap_or(0)),
                        delivered: row.try_get(6)?,
                        at: row.try_get(7)?,
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                .map(Some)
                .map_err(WriterError::from_postgres)
        })
        .await
    }

    async fn claim_webhook_messages(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutboundMessage>, WriterError> {
        let lease = millis(lease);
        self.bounded(async {
            // Endpoint by endpoint, skipping those waiting out a backoff
            // (their backlog is never read); SKIP LOCKED: writers claiming
            // at once take different messages.
            let rows = self
                .client()
                .await?
                .query(
                    "WITH ready AS (
                         SELECT id FROM webhook_endpoints
                          WHERE disabled_at IS NULL AND (retry_at IS NULL OR retry_at <= now())
                     ), due AS (
                         SELECT d.id FROM ready r CROSS JOIN LATERAL (
                             SELECT m.id FROM webhook_messages m
                              WHERE m.endpoint_id = r.id AND m.next_attempt_at <= now()
                              ORDER BY m.next_attempt_at, m.id
                              LIMIT $1
                              FOR UPDATE SKIP LOCKED
                         ) d
                         LIMIT $1
                     )
                     UPDATE webhook_messages m
                        SET next_attempt_at = now() + $2::int8 * interval '1 millisecond'
                       FROM due, webhook_endpoints e
                      WHERE m.id = due.id AND e.id = m.endpoint_id AND e.disabled_at IS NULL
                     RETURNING m.id, m.message_id, m.endpoint_id, e.url, e.secret,
                               CASE WHEN e.previous_until > now() THEN e.previous_secret END,
                               m.event_type, m.payload, m.attempts",
                    &[&limit, &lease],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            rows.iter()
                .map(|row| {
                    Ok(OutboundMessage {
                        id: row.try_get(0)?,
                        message_id: row.try_get(1)?,
                        endpoint_id: row.try_get(2)?,
                        url: row.try_get(3)?,
                        secret: row.try_get(4)?,
                        previous_secret: row.try_get(5)?,
                        event_type: row.try_get(6)?,
                        payload: row.try_get(7)?,
                        attempts: row.try_get(8)?,
                    })
                })
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(WriterError::from_postgres)
        })
        .await
    }

    async fn finish_webhook_attempts(
        &self,
        outcomes: &[AttemptOutcome],
        settings: &DeliverySettings,
    ) -> Result<(), WriterError> {
        let disable_after = settings.disable_after;
        let (retry_base, retry_max) = (millis(settings.retry_base), millis(settings.retry_max));
        if outcomes.is_empty() {
            return Ok(());
        }
        let messages: Vec<i64> = outcomes.iter().map(|outcome| outcome.message).collect();
        let endpoints: Vec<i64> = outcomes.iter().map(|outcome| outcome.endpoint_id).collect();
        let ids: Vec<&str> = outcomes
            .iter()
            .map(|outcome| outcome.message_id.as_str())
            .collect();
        let events: Vec<&str> = outcomes
            .iter()
            .map(|outcome| outcome.event_type.as_str())
            .collect();
        let attempts: Vec<i32> = outcomes.iter().map(|outcome| outcome.attempt).collect();
        let statuses: Vec<Option<i16>> = outcomes
            .iter()
            .map(|outcome| outcome.status.and_then(|status| i16::try_from(status).ok()))
            .collect();
        let errors: Vec<Option<&str>> = outcomes
            .iter()
            .map(|outcome| outcome.error.as_deref())
            .collect();
        let latencies: Vec<i32> = outcomes
            .iter()
            .map(|outcome| i32::try_from(outcome.latency.as_millis()).unwrap_or(i32::MAX))
            .collect();
        let delivered: Vec<bool> = outcomes
            .iter()
            .map(|outcome| outcome.retry_in.is_none())
            .collect();
        let retries: Vec<i64> = outcomes
            .iter()
            .map(|outcome| outcome.retry_in.map_or(0, millis))
            .collect();
        let disable_after = millis(disable_after);
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(WriterError::from_postgres)?;
            // Endpoints deleted meanwhile took their messages with them.
            transaction
                .execute(
                    "INSERT INTO webhook_deliveries
                         (endpoint_id, message_id, event_type, attempt, status, error, latency_ms, delivered)
                     SELECT x.* FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int4[],
                                            $5::int2[], $6::text[], $7::int4[], $8::bool[])
                                  AS x(endpoint_id, message_id, event_type, attempt, status,
                                       error, latency_ms, delivered)
                      WHERE EXISTS (SELECT FROM webhook_endpoints e WHERE e.id = x.endpoint_id)",
                    &[&endpoints, &ids, &events, &attempts, &statuses, &errors, &latencies, &delivered],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .execute(
                    "DELETE FROM webhook_messages m USING UNNEST($1::int8[], $2::bool[]) AS x(id, delivered)
                      WHERE m.id = x.id AND x.delivered",
                    &[&messages, &delivered],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .execute(
                    "UPDATE webhook_messages m
                        SET attempts = x.attempt,
                            next_attempt_at = now() + x.retry * interval '1 millisecond'
                       FROM UNNEST($1::int8[], $2::int4[], $3::int8[], $4::bool[])
                            AS x(id, attempt, retry, delivered)
                      WHERE m.id = x.id AND NOT x.delivered",
                    &[&messages, &attempts, &retries, &delivered],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            // A success ends an endpoint's run of failures; a failure
            // starts one, and one that has lasted too long disables it
            // (its messages wait, not due, until it is enabled).
            transaction
                .execute(
                    "WITH results AS (
                         SELECT endpoint_id, bool_or(delivered) AS any_delivered
                           FROM UNNEST($1::int8[], $2::bool[]) AS x(endpoint_id, delivered)
                          GROUP BY endpoint_id
                     ), updated AS (
                         UPDATE webhook_endpoints e
                            SET failing_since = CASE WHEN r.any_delivered THEN NULL
                                                     ELSE coalesce(e.failing_since, now()) END,
                                failures = CASE WHEN r.any_delivered THEN 0
                                                ELSE e.failures + 1 END,
                                -- The endpoint's own backoff: base × 2^failures,
                                -- at most the cap, ± a fifth.
                                retry_at = CASE WHEN r.any_delivered THEN NULL
                                    ELSE now() + least($4::int8::float8 * power(2, least(e.failures, 30)),
                                                       $5::int8::float8)
                                                 * (0.8 + random() * 0.4)
                                                 * interval '1 millisecond' END,
                                disabled_at = CASE
                                    WHEN NOT r.any_delivered AND e.disabled_at IS NULL
                                         AND e.failing_since < now() - $3::int8 * interval '1 millisecond'
                                    THEN now() ELSE e.disabled_at END
                           FROM results r WHERE e.id = r.endpoint_id
                         RETURNING e.id, e.disabled_at IS NOT NULL AS disabled
                     )
                     UPDATE webhook_messages m SET next_attempt_at = 'infinity'
                       FROM updated u WHERE m.endpoint_id = u.id AND u.disabled",
                    &[&endpoints, &delivered, &disable_after, &retry_base, &retry_max],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .commit()
                .await
                .map_err(WriterError::from_postgres)
        })
        .await
    }

    async fn prune_webhook_deliveries(
        &self,
        age: Duration,
        limit: i64,
    ) -> Result<u64, WriterError> {
        let age = millis(age);
        self.bounded(async {
            self.client()
                .await?
                .execute(
                    "DELETE FROM webhook_deliveries WHERE id IN (
                         SELECT id FROM webhook_deliveries
                          WHERE at < now() - $1::int8 * interval '1 millisecond' LIMIT $2)",
                    &[&age, &limit],
                )
                .await
                .map_err(WriterError::from_postgres)
        })
        .await
    }
}
