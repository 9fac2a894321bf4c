//! The API keys of the Postgres store: only hashes are stored; a rotation
//! keeps the previous value for its grace period.

use super::*;
use crate::auth::STORED_SCOPE;
use crate::store::KeyStore;

#[async_trait::async_trait]
impl KeyStore for PostgresLinkStore {
    async fn create_api_key(
        &self,
        name: &str,
        hash: &KeyHash,
        scope: Scope,
        rate: Option<Rate>,
    ) -> Result<i64, WriterError> {
        self.bounded(async {
            let row = self
                .client()
                .await?
                .query_one(
                    "INSERT INTO api_keys (name, key_hash, scope, admin, rate_per_second)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[
                        &name,
                        &hash.0.as_slice(),
                        &scope.columns().0,
                        &scope.columns().1,
                        &rate_column(rate),
                    ],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            row.try_get(0).map_err(WriterError::from_postgres)
        })
        .await
    }

    async fn set_api_key_rate(&self, id: i64, rate: Option<Rate>) -> Result<bool, WriterError> {
        self.bounded(async {
            let updated = self
                .client()
                .await?
                .execute(
                    "UPDATE api_keys SET rate_per_second = $2 WHERE id = $1 AND revoked_at IS NULL",
                    &[&id, &rate_column(rate)],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(updated > 0)
        })
        .await
    }

    async fn count_api_keys(&self) -> Result<i64, WriterError> {
        self.bounded(async {
            let row = self
                .client()
                .await?
                .query_one("SELECT count(*) FROM api_keys", &[])
                .await
                .map_err(WriterError::from_postgres)?;
            row.try_get(0).map_err(WriterError::from_postgres)
        })
        .await
    }

    async fn resolve_key(&self, hash: &KeyHash) -> Result<Option<Caller>, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            // A lookup happens once per key per writer per cache lifetime,
            // so recording the use here costs one row update a minute.
            let statement = client
                .prepare_cached(&format!(
                    "UPDATE api_keys SET last_used_at = now()
                     WHERE (key_hash = $1 OR (previous_key_hash = $1 AND previous_valid_until > now()))
                       AND revoked_at IS NULL
                     RETURNING id, {STORED_SCOPE}, rate_per_second"
                ))
                .await
                .map_err(WriterError::from_postgres)?;
            let row = client
                .query_opt(&statement, &[&hash.0.as_slice()])
                .await
                .map_err(WriterError::from_postgres)?;
            let Some(row) = row else { return Ok(None) };
            let owner = OwnerId(row.try_get(0).map_err(WriterError::from_postgres)?);
            let scope: &str = row.try_get(1).map_err(WriterError::from_postgres)?;
            Ok(Some(Caller {
                owner,
                scope: parse_scope(scope)?,
                rate: stored_rate(row.try_get(2).map_err(WriterError::from_postgres)?)?,
            }))
        })
        .await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, WriterError> {
        self.bounded(async {
            let rows = self
                .client()
                .await?
                .query(
                    &format!(
                        "SELECT id, name, {STORED_SCOPE}, created_at, last_used_at, revoked_at,
                                previous_valid_until, rate_per_second
                         FROM api_keys ORDER BY id"
                    ),
                    &[],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            rows.iter()
                .map(|row| {
                    let scope = parse_scope(row.try_get(2).map_err(WriterError::from_postgres)?)?;
                    let rate = stored_rate(row.try_get(7).map_err(WriterError::from_postgres)?)?;
                    let read = || -> Result<ApiKeyInfo, tokio_postgres::Error> {
                        Ok(ApiKeyInfo {
                            id: row.try_get(0)?,
                            name: row.try_get(1)?,
                            scope,
                            rate,
                            created_at: row.try_get(3)?,
                            last_used_at: row.try_get(4)?,
                            revoked_at: row.try_get(5)?,
                            previous_valid_until: row.try_get(6)?,
                        })
                    };
                    read().map_err(WriterError::from_postgres)
                })
                .collect()
        })
        .await
    }

    async fn revoke_api_key(&self, id: i64) -> Result<bool, WriterError> {
        self.bounded(async {
            let revoked = self
                .client()
                .await?
                .execute(
                    "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                    &[&id],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(revoked > 0)
        })
        .await
    }

    async fn rotate_api_key(
        &self,
        id: i64,
        hash: &KeyHash,
        grace: Duration,
    ) -> Result<bool, WriterError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(WriterError::from_postgres)?;
            // The value a second rotation overwrites stops working now: kept
            // for the revocation poll. The row is locked first, so a
            // concurrent rotation's value is the one recorded.
            let Some(row) = transaction
                .query_opt(
                    "SELECT previous_key_hash FROM api_keys
                     WHERE id = $1 AND revoked_at IS NULL FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(WriterError::from_postgres)?
            else {
                return Ok(false);
            };
            let overwritten: Option<Vec<u8>> =
                row.try_get(0).map_err(WriterError::from_postgres)?;
            if let Some(overwritten) = overwritten {
                transaction
                    .execute(
                        "INSERT INTO api_key_retirements (key_hash) VALUES ($1)",
                        &[&overwritten],
                    )
                    .await
                    .map_err(WriterError::from_postgres)?;
            }
            transaction
                .batch_execute(
                    "DELETE FROM api_key_retirements WHERE retired_at < now() - interval '1 day'",
                )
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .execute(
                    "UPDATE api_keys SET previous_key_hash = key_hash, key_hash = $2,
                         previous_valid_until = now() + make_interval(secs => $3)
                     WHERE id = $1",
                    &[&id, &hash.0.as_slice(), &grace.as_secs_f64()],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .commit()
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(true)
        })
        .await
    }

    async fn live_key_hashes(
        &self,
        after_id: i64,
        rotated_within: Duration,
    ) -> Result<Vec<(i64, KeyHash)>, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            // The id range reads the primary key and the rotations the
            // partial index of rotated keys: a poll reads only new rows.
            let statement = client
                .prepare_cached(
                    "SELECT id, key_hash FROM api_keys
                     WHERE revoked_at IS NULL
                       AND (id > $1 OR previous_valid_until > now() - make_interval(secs => $2))
                     UNION ALL
                     SELECT id, previous_key_hash FROM api_keys
                     WHERE revoked_at IS NULL AND previous_valid_until > now()",
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let rows = client
                .query(&statement, &[&after_id, &rotated_within.as_secs_f64()])
                .await
                .map_err(WriterError::from_postgres)?;
            rows.iter()
                .map(|row| {
                    let id: i64 = row.try_get(0).map_err(WriterError::from_postgres)?;
                    let bytes: &[u8] = row.try_get(1).map_err(WriterError::from_postgres)?;
                    Ok((id, key_hash(bytes)?))
                })
                .collect()
        })
        .await
    }

    async fn retired_key_hashes(&self, within: Duration) -> Result<Vec<KeyHash>, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT key_hash FROM api_keys
                     WHERE revoked_at > now() - make_interval(secs => $1)
                     UNION ALL
                     SELECT previous_key_hash FROM api_keys
                     WHERE previous_key_hash IS NOT NULL
                       AND (revoked_at > now() - make_interval(secs => $1)
                            OR previous_valid_until BETWEEN now() - make_interval(secs => $1) AND now())
                     UNION ALL
                     SELECT key_hash FROM api_key_retirements
                     WHERE retired_at > now() - make_interval(secs => $1)",
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let rows = client
                .query(&statement, &[&within.as_secs_f64()])
                .await
                .map_err(WriterError::from_postgres)?;
            rows.iter()
                .map(|row| {
                    let bytes: &[u8] = row.try_get(0).map_err(WriterError::from_postgres)?;
                    key_hash(bytes)
                })
                .collect()
        })
        .await
    }
}
