//! The API keys of the embedded store, as the Postgres store keeps them.

use super::*;
use crate::auth::STORED_SCOPE;
use crate::store::KeyStore;

#[async_trait::async_trait]
impl KeyStore for SqliteLinkStore {
    async fn create_api_key(
        &self,
        name: &str,
        hash: &KeyHash,
        scope: Scope,
        rate: Option<Rate>,
    ) -> Result<i64, WriterError> {
        let name = name.to_owned();
        let hash = hash.0;
        self.db
            .run(move |connection| {
                connection.query_row(
                    "INSERT INTO api_keys (name, key_hash, scope, admin, created_at, rate_per_second)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     RETURNING id",
                    (
                        &name,
                        hash.as_slice(),
                        scope.columns().0,
                        scope.columns().1,
                        to_micros(SystemTime::now()),
                        rate_column(rate),
                    ),
                    |row| row.get(0),
                )
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn set_api_key_rate(&self, id: i64, rate: Option<Rate>) -> Result<bool, WriterError> {
        self.db
            .run(move |connection| {
                connection.execute(
                    "UPDATE api_keys SET rate_per_second = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    (id, rate_column(rate)),
                )
            })
            .await
            .map(|updated| updated > 0)
            .map_err(WriterError::from_sqlite)
    }

    async fn count_api_keys(&self) -> Result<i64, WriterError> {
        self.db
            .run(|connection| {
                connection.query_row("SELECT count(*) FROM api_keys", [], |row| row.get(0))
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn resolve_key(&self, hash: &KeyHash) -> Result<Option<Caller>, WriterError> {
        let hash = hash.0;
        let found: Option<(i64, String, Option<i32>)> = self
            .db
            .run(move |connection| {
                let now = to_micros(SystemTime::now());
                connection
                    .prepare_cached(&format!(
                        "UPDATE api_keys SET last_used_at = ?2
                         WHERE (key_hash = ?1 OR (previous_key_hash = ?1 AND previous_valid_until > ?2))
                           AND revoked_at IS NULL
                         RETURNING id, {STORED_SCOPE}, rate_per_second"
                    ))?
                    .query_row((hash.as_slice(), now), |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .optional()
            })
            .await
            .map_err(WriterError::from_sqlite)?;
        found
            .map(|(id, scope, rate)| {
                Ok(Caller {
                    owner: OwnerId(id),
                    scope: parse_scope(&scope)?,
                    rate: stored_rate(rate)?,
                })
            })
            .transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, WriterError> {
        type Row = (
            i64,
            String,
            String,
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i32>,
        );
        let rows: Vec<Row> = self
            .db
            .run(|connection| {
                connection
                    .prepare_cached(&format!(
                        "SELECT id, name, {STORED_SCOPE}, created_at, last_used_at, revoked_at,
                                previous_valid_until, rate_per_second
                         FROM api_keys ORDER BY id"
                    ))?
                    .query_map([], |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                            row.get(5)?,
                            row.get(6)?,
                            row.get(7)?,
                        ))
                    })?
                    .collect()
            })
            .await
            .map_err(WriterError::from_sqlite)?;
        rows.into_iter()
            .map(
                |(
                    id,
                    name,
                    scope,
                    created_at,
                    last_used_at,
                    revoked_at,
                    previous_valid_until,
                    rate,
                )| {
                    Ok(ApiKeyInfo {
                        id,
                        name,
                        scope: parse_scope(&scope)?,
                        rate: stored_rate(rate)?,
                        created_at: from_micros(created_at),
                        last_used_at: last_used_at.map(from_micros),
                        revoked_at: revoked_at.map(from_micros),
                        previous_valid_until: previous_valid_until.map(from_micros),
                    })
                },
            )
            .collect()
    }

    async fn revoke_api_key(&self, id: i64) -> Result<bool, WriterError> {
        self.db
            .run(move |connection| {
                connection.execute(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    (id, to_micros(SystemTime::now())),
                )
            })
            .await
            .map(|revoked| revoked > 0)
            .map_err(WriterError::from_sqlite)
    }

    async fn rotate_api_key(
        &self,
        id: i64,
        hash: &KeyHash,
        grace: Duration,
    ) -> Result<bool, WriterError> {
        let hash = hash.0;
        self.db
            .run(move |connection| {
                let now = SystemTime::now();
                let until = to_micros(now + grace);
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // The value a second rotation overwrites is kept for the
                // revocation poll (it stops working now).
                transaction.execute(
                    "INSERT INTO api_key_retirements (key_hash, retired_at)
                     SELECT previous_key_hash, ?2 FROM api_keys
                     WHERE id = ?1 AND revoked_at IS NULL AND previous_key_hash IS NOT NULL",
                    (id, to_micros(now)),
                )?;
                transaction.execute(
                    "DELETE FROM api_key_retirements WHERE retired_at < ?1",
                    [to_micros(
                        now.checked_sub(Duration::from_secs(86_400))
                            .unwrap_or(SystemTime::UNIX_EPOCH),
                    )],
                )?;
                let rotated = transaction.execute(
                    "UPDATE api_keys SET previous_key_hash = key_hash, key_hash = ?2,
                         previous_valid_until = ?3
                     WHERE id = ?1 AND revoked_at IS NULL",
                    (id, hash.as_slice(), until),
                )?;
                transaction.commit()?;
                Ok(rotated)
            })
            .await
            .map(|rotated| rotated > 0)
            .map_err(WriterError::from_sqlite)
    }

    async fn live_key_hashes(
        &self,
        after_id: i64,
        rotated_within: Duration,
    ) -> Result<Vec<(i64, KeyHash)>, WriterError> {
        let rows: Vec<(i64, Vec<u8>)> = self
            .db
            .run(move |connection| {
                let now = SystemTime::now();
                connection
                    .prepare_cached(
                        "SELECT id, key_hash FROM api_keys
                         WHERE revoked_at IS NULL AND (id > ?1 OR previous_valid_until > ?2)
                         UNION ALL
                         SELECT id, previous_key_hash FROM api_keys
                         WHERE revoked_at IS NULL AND previous_valid_until > ?3",
                    )?
                    .query_map(
                        (
                            after_id,
                            to_micros(
                                now.checked_sub(rotated_within)
                                    .unwrap_or(SystemTime::UNIX_EPOCH),
                            ),
                            to_micros(now),
                        ),
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )?
                    .collect()
            })
            .await
            .map_err(WriterError::from_sqlite)?;
        rows.iter()
            .map(|(id, bytes)| Ok((*id, key_hash(bytes)?)))
            .collect()
    }

    async fn retired_key_hashes(&self, within: Duration) -> Result<Vec<KeyHash>, WriterError> {
        let hashes: Vec<Vec<u8>> = self
            .db
            .run(move |connection| {
                let now = SystemTime::now();
                connection
                    .prepare_cached(
                        "SELECT key_hash FROM api_keys WHERE revoked_at > ?1
                         UNION ALL
                         SELECT previous_key_hash FROM api_keys
                         WHERE previous_key_hash IS NOT NULL
                           AND (revoked_at > ?1 OR previous_valid_until BETWEEN ?1 AND ?2)
                         UNION ALL
                         SELECT key_hash FROM api_key_retirements WHERE retired_at > ?1",
                    )?
                    .query_map(
                        (
                            to_micros(now.checked_sub(within).unwrap_or(SystemTime::UNIX_EPOCH)),
                            to_micros(now),
                        ),
                        |row| row.get(0),
                    )?
                    .collect()
            })
            .await
            .map_err(WriterError::from_sqlite)?;
        hashes.iter().map(|bytes| key_hash(bytes)).collect()
    }
}
