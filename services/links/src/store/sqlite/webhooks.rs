//! Webhook endpoints, the outbox and the delivery log in the embedded
//! store (the outbox is filled by the triggers of its migration V20). The
//! same contract as Postgres: one process delivers, so a claim needs no
//! row locks, only the write lock of its transaction.

use super::*;
use crate::webhooks::deliver::DeliverySettings;
use crate::webhooks::{
    AttemptOutcome, OutboundMessage, StoredWebhook, WebhookDelivery, WebhookStore,
};

/// A message's `next_attempt_at` while its endpoint is disabled.
const NEVER: i64 = i64::MAX;

const ENDPOINT_COLUMNS: &str = "e.id, e.url, e.events, e.secret, e.created_at, e.disabled_at, \
     e.failing_since, (SELECT count(*) FROM webhook_messages m WHERE m.endpoint_id = e.id)";

fn endpoint(row: &Row<'_>) -> rusqlite::Result<StoredWebhook> {
    let events: String = row.get(2)?;
    Ok(StoredWebhook {
        id: row.get(0)?,
        url: row.get(1)?,
        events: serde_json::from_str(&events).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                Box::new(error),
            )
        })?,
        secret: row.get(3)?,
        created_at: from_micros(row.get(4)?),
        disabled_at: row.get::<_, Option<i64>>(5)?.map(from_micros),
        failing_since: row.get::<_, Option<i64>>(6)?.map(from_micros),
        pending: row.get(7)?,
    })
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn now() -> i64 {
    to_micros(SystemTime::now())
}

/// The owner's endpoint `id`, read in `connection`'s transaction.
fn owned_endpoint(
    connection: &rusqlite::Connection,
    owner: i64,
    id: i64,
) -> rusqlite::Result<Option<StoredWebhook>> {
    connection
        .query_row(
            &format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints e
                  WHERE e.id = ?1 AND e.owner_key_id = ?2"
            ),
            (id, owner),
            endpoint,
        )
        .optional()
}

#[async_trait::async_trait]
impl WebhookStore for SqliteLinkStore {
    async fn create_webhook(
        &self,
        owner: i64,
        url: &str,
        events: &[String],
        secret: &str,
    ) -> Result<StoredWebhook, WriterError> {
        let (url, secret) = (url.to_owned(), secret.to_owned());
        let events = serde_json::to_string(events)
            .map_err(|error| WriterError::Unexpected(anyhow::Error::from(error)))?;
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                transaction.execute(
                    "INSERT INTO webhook_endpoints (owner_key_id, url, events, secret, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    (owner, &url, &events, &secret, now()),
                )?;
                let id = transaction.last_insert_rowid();
                let created = owned_endpoint(&transaction, owner, id)?;
                transaction.commit()?;
                created.ok_or(rusqlite::Error::QueryReturnedNoRows)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn webhooks(&self, owner: i64) -> Result<Vec<StoredWebhook>, WriterError> {
        self.db
            .run(move |connection| {
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints e
                      WHERE e.owner_key_id = ?1 ORDER BY e.id"
                ))?;
                let rows = statement.query_map([owner], endpoint)?;
                rows.collect()
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn delete_webhook(&self, owner: i64, id: i64) -> Result<bool, WriterError> {
        self.db
            .run(move |connection| {
                // Its messages and log go with it (ON DELETE CASCADE).
                connection.execute(
                    "DELETE FROM webhook_endpoints WHERE id = ?1 AND owner_key_id = ?2",
                    (id, owner),
                )
            })
            .await
            .map(|deleted| deleted == 1)
            .map_err(WriterError::from_sqlite)
    }

    async fn enable_webhook(
        &self,
        owner: i64,
        id: i64,
    ) -> Result<Option<StoredWebhook>, WriterError> {
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let enabled = transaction.execute(
                    "UPDATE webhook_endpoints
                        SET disabled_at = NULL, failing_since = NULL, failures = 0, retry_at = NULL
                      WHERE id = ?1 AND owner_key_id = ?2",
                    (id, owner),
                )?;
                if enabled == 0 {
                    return Ok(None);
                }
                transaction.execute(
                    "UPDATE webhook_messages SET next_attempt_at = ?2
                      WHERE endpoint_id = ?1 AND next_attempt_at = ?3",
                    (id, now(), NEVER),
                )?;
                let endpoint = owned_endpoint(&transaction, owner, id)?;
                transaction.commit()?;
                Ok(endpoint)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn rotate_webhook_secret(
        &self,
        owner: i64,
        id: i64,
        secret: &str,
        keep_previous: Duration,
    ) -> Result<Option<StoredWebhook>, WriterError> {
        let secret = secret.to_owned();
        let until = now().saturating_add(micros(keep_previous));
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let rotated = transaction.execute(
                    "UPDATE webhook_endpoints
                        SET previous_secret = secret, previous_until = ?3, secret = ?4
                      WHERE id = ?1 AND owner_key_id = ?2",
                    (id, owner, until, &secret),
                )?;
                if rotated == 0 {
                    return Ok(None);
                }
                let endpoint = owned_endpoint(&transaction, owner, id)?;
                transaction.commit()?;
                Ok(endpoint)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn webhook_deliveries(
        &self,
        owner: i64,
        id: i64,
        limit: i64,
    ) -> Result<Option<Vec<WebhookDelivery>>, WriterError> {
        self.db
            .run(move |connection| {
                let owned: bool = connection.query_row(
                    "SELECT EXISTS (SELECT 1 FROM webhook_endpoints
                                     WHERE id = ?1 AND owner_key_id = ?2)",
                    (id, owner),
                    |row| row.get(0),
                )?;
                if !owned {
                    return Ok(None);
                }
                let mut statement = connection.prepare_cached(
                    "SELECT message_id, event_type, attempt, status, error, latency_ms, delivered, at
                       FROM webhook_deliveries WHERE endpoint_id = ?1 ORDER BY id DESC LIMIT ?2",
                )?;
                let rows = statement.query_map((id, limit), |row| {
                    let status: Option<i64> = row.get(3)?;
                    let latency: i64 = row.get(5)?;
                    Ok(WebhookDelivery {
                        message_id: row.get(0)?,
                        event_type: row.get(1)?,
                        attempt: row.get(2)?,
                        status: status.and_then(|status| u16::try_from(status).ok()),
                        error: row.get(4)?,
                        latency: Duration::from_millis(u64::try_from(latency).unwrap_or(0)),
                        delivered: row.get(6)?,
                        at: from_micros(row.get(7)?),
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map(Some)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn claim_webhook_messages(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutboundMessage>, WriterError> {
        let lease = micros(lease);
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let at = now();
                // Only endpoints not waiting out a backoff: their messages are
                // reached through the (endpoint, due) index, a gated backlog
                // is not read.
                let claimed = {
                    let mut statement = transaction.prepare_cached(
                        "SELECT m.id, m.message_id, m.endpoint_id, e.url, e.secret,
                                CASE WHEN e.previous_until > ?1 THEN e.previous_secret END,
                                m.event_type, m.payload, m.attempts
                           FROM webhook_endpoints e
                           JOIN webhook_messages m ON m.endpoint_id = e.id
                          WHERE e.disabled_at IS NULL AND (e.retry_at IS NULL OR e.retry_at <= ?1)
                            AND m.next_attempt_at <= ?1
                          ORDER BY m.next_attempt_at, m.id
                          LIMIT ?2",
                    )?;
                    let rows = statement.query_map((at, limit), |row| {
                        Ok(OutboundMessage {
                            id: row.get(0)?,
                            message_id: row.get(1)?,
                            endpoint_id: row.get(2)?,
                            url: row.get(3)?,
                            secret: row.get(4)?,
                            previous_secret: row.get(5)?,
                            event_type: row.get(6)?,
                            payload: row.get(7)?,
                            attempts: row.get(8)?,
                        })
                    })?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()?
                };
                {
                    let mut lease_one = transaction.prepare_cached(
                        "UPDATE webhook_messages SET next_attempt_at = ?2 WHERE id = ?1",
                    )?;
                    for message in &claimed {
                        lease_one.execute((message.id, at.saturating_add(lease)))?;
                    }
                }
                transaction.commit()?;
                Ok(claimed)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn finish_webhook_attempts(
        &self,
        outcomes: &[AttemptOutcome],
        settings: &DeliverySettings,
    ) -> Result<(), WriterError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let outcomes = outcomes.to_vec();
        let settings = *settings;
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let at = now();
                let mut any_delivered: HashMap<i64, bool> = HashMap::new();
                {
                    // Endpoints deleted meanwhile took their messages with
                    // them: nothing is logged for them.
                    let mut log = transaction.prepare_cached(
                        "INSERT INTO webhook_deliveries (endpoint_id, message_id, event_type,
                                                         attempt, status, error, latency_ms,
                                                         delivered, at)
                         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9
                          WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = ?1)",
                    )?;
                    let mut delivered = transaction
                        .prepare_cached("DELETE FROM webhook_messages WHERE id = ?1")?;
                    let mut failed = transaction.prepare_cached(
                        "UPDATE webhook_messages SET attempts = ?2, next_attempt_at = ?3
                          WHERE id = ?1",
                    )?;
                    for outcome in &outcomes {
                        log.execute((
                            outcome.endpoint_id,
                            &outcome.message_id,
                            &outcome.event_type,
                            outcome.attempt,
                            outcome.status,
                            &outcome.error,
                            i64::try_from(outcome.latency.as_millis()).unwrap_or(i64::MAX),
                            outcome.retry_in.is_none(),
                            at,
                        ))?;
                        match outcome.retry_in {
                            None => {
                                delivered.execute([outcome.message])?;
                            }
                            Some(retry) => {
                                failed.execute((
                                    outcome.message,
                                    outcome.attempt,
                                    at.saturating_add(micros(retry)),
                                ))?;
                            }
                        }
                        *any_delivered.entry(outcome.endpoint_id).or_default() |=
                            outcome.retry_in.is_none();
                    }
                }
                // A success ends an endpoint's run of failures; a failure
                // starts one (with the endpoint's own backoff), and one that
                // has lasted too long disables it, its messages waiting.
                for (endpoint, delivered) in any_delivered {
                    if delivered {
                        transaction.execute(
                            "UPDATE webhook_endpoints
                                SET failing_since = NULL, failures = 0, retry_at = NULL
                              WHERE id = ?1",
                            [endpoint],
                        )?;
                        continue;
                    }
                    let failures: Option<i32> = transaction
                        .query_row(
                            "SELECT failures FROM webhook_endpoints WHERE id = ?1",
                            [endpoint],
                            |row| row.get(0),
                        )
                        .optional()?;
                    let Some(failures) = failures else {
                        continue;
                    };
                    let wait = crate::webhooks::backoff(
                        failures.saturating_add(1),
                        settings.retry_base,
                        settings.retry_max,
                    );
                    transaction.execute(
                        "UPDATE webhook_endpoints
                            SET failing_since = coalesce(failing_since, ?2),
                                failures = failures + 1,
                                retry_at = ?3,
                                disabled_at = CASE WHEN disabled_at IS NULL
                                                        AND failing_since < ?2 - ?4
                                                   THEN ?2 ELSE disabled_at END
                          WHERE id = ?1",
                        (
                            endpoint,
                            at,
                            at.saturating_add(micros(wait)),
                            micros(settings.disable_after),
                        ),
                    )?;
                    transaction.execute(
                        "UPDATE webhook_messages SET next_attempt_at = ?2
                          WHERE endpoint_id = ?1
                            AND (SELECT disabled_at FROM webhook_endpoints WHERE id = ?1) IS NOT NULL",
                        (endpoint, NEVER),
                    )?;
                }
                transaction.commit()
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn prune_webhook_deliveries(
        &self,
        age: Duration,
        limit: i64,
    ) -> Result<u64, WriterError> {
        let before = now().saturating_sub(micros(age));
        self.db
            .run(move |connection| {
                connection.execute(
                    "DELETE FROM webhook_deliveries WHERE id IN (
                         SELECT id FROM webhook_deliveries WHERE at < ?1 LIMIT ?2)",
                    (before, limit),
                )
            })
            .await
            .map(|deleted| deleted as u64)
            .map_err(WriterError::from_sqlite)
    }
}
