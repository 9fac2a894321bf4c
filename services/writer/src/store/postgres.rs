//! The Postgres link store of the split deployment: batches in one
//! statement, every call bounded by the configured timeout, connection-level
//! failures reported as UNAVAILABLE.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use secrecy::SecretString;
use tinyurl_runtime::postgres;
use tokio_postgres::Row;

use super::{
    LinkChanges, LinkStore, NewLink, StoredLink, key_hash, like_pattern, parse_scope, rate_column,
    stored_rate, stored_status,
};
use crate::auth::{Caller, KeyHash, OwnerId, Rate, Scope};
use crate::error::WriterError;
use crate::keys::ApiKeyInfo;
use tinyurl_domain::RedirectStatus;

mod clicks;

mod embedded {
    refinery::embed_migrations!("migrations");
}

const MIGRATION_LOCK_KEY: i64 = 0x7469_6e79_7772_6974;

const LINK_COLUMNS: &str = "code, target_url, redirect_status, forward_query, expires_at, enabled, is_alias, created_at, updated_at";

impl StoredLink {
    fn from_row(row: &Row) -> Result<Self, WriterError> {
        Self::from_row_at(row, 0)
    }

    /// Reads [`LINK_COLUMNS`] starting at column `offset`.
    fn from_row_at(row: &Row, offset: usize) -> Result<Self, WriterError> {
        let status: i16 = row
            .try_get(offset + 2)
            .map_err(WriterError::from_postgres)?;
        let redirect_status = stored_status(i64::from(status))?;
        let read = || -> Result<Self, tokio_postgres::Error> {
            Ok(Self {
                code: row.try_get(offset)?,
                target_url: row.try_get(offset + 1)?,
                redirect_status,
                forward_query: row.try_get(offset + 3)?,
                expires_at: row.try_get(offset + 4)?,
                enabled: row.try_get(offset + 5)?,
                is_alias: row.try_get(offset + 6)?,
                created_at: row.try_get(offset + 7)?,
                updated_at: row.try_get(offset + 8)?,
            })
        };
        read().map_err(WriterError::from_postgres)
    }
}

/// Inserts a whole batch in one statement; conflicting rows (a taken code or
/// alias, a repeated idempotency key) are skipped, not errors.
const INSERT_SQL: &str = "
INSERT INTO links (code, id, owner_key_id, target_url, redirect_status, forward_query,
                   expires_at, is_alias, idempotency_key)
SELECT code, id, $1, target_url, redirect_status, forward_query, expires_at, is_alias, idempotency_key
FROM UNNEST($2::text[], $3::int8[], $4::text[], $5::int2[], $6::bool[], $7::timestamptz[],
            $8::bool[], $9::text[])
     AS new (code, id, target_url, redirect_status, forward_query, expires_at, is_alias, idempotency_key)
ON CONFLICT DO NOTHING
RETURNING code, created_at, updated_at";

/// The single-row form of [`INSERT_SQL`]: cheaper to bind and plan than
/// one-element arrays, and single creates are the hot path.
const INSERT_ONE_SQL: &str = "
INSERT INTO links (code, id, owner_key_id, target_url, redirect_status, forward_query,
                   expires_at, is_alias, idempotency_key)
VALUES ($2, $3, $1, $4, $5, $6, $7, $8, $9)
ON CONFLICT DO NOTHING
RETURNING code, created_at, updated_at";

/// Deleting leaves a tombstone (migration V3): the code stays taken, the
/// target and the idempotency key go, so a retried create with that key
/// makes a new link as it would after a real delete.
const DELETE_SQL: &str = "
UPDATE links SET target_url = NULL, idempotency_key = NULL, enabled = false,
                 expires_at = NULL, updated_at = now()
WHERE owner_key_id = $1 AND code = $2 AND target_url IS NOT NULL";

#[derive(Clone)]
pub struct PostgresLinkStore {
    pool: Pool,
    pg_config: tokio_postgres::Config,
    timeout: Duration,
}

impl PostgresLinkStore {
    pub fn connect(
        database_url: &SecretString,
        pool_size: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let pg_config = postgres::connection_config(database_url, "tinyurl-writer", timeout)?;
        let pool = postgres::pool(pg_config.clone(), pool_size, timeout, None)?;
        Ok(Self {
            pool,
            pg_config,
            timeout,
        })
    }

    /// Applies pending migrations, one writer at a time.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        postgres::migrate(
            &self.pg_config,
            self.timeout,
            MIGRATION_LOCK_KEY,
            "writer_schema_history",
            embedded::migrations::runner(),
        )
        .await
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, WriterError>>,
    ) -> Result<T, WriterError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| {
                WriterError::Unavailable(format!(
                    "the link store did not answer within {} ms; retry later",
                    self.timeout.as_millis()
                ))
            })?
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, WriterError> {
        self.pool.get().await.map_err(WriterError::from_pool)
    }
}

#[async_trait::async_trait]
impl LinkStore for PostgresLinkStore {
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
                    "INSERT INTO api_keys (name, key_hash, scope, rate_per_second)
                     VALUES ($1, $2, $3, $4) RETURNING id",
                    &[
                        &name,
                        &hash.0.as_slice(),
                        &scope.as_str(),
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
                .prepare_cached(
                    "UPDATE api_keys SET last_used_at = now()
                     WHERE (key_hash = $1 OR (previous_key_hash = $1 AND previous_valid_until > now()))
                       AND revoked_at IS NULL
                     RETURNING id, scope, rate_per_second",
                )
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
                    "SELECT id, name, scope, created_at, last_used_at, revoked_at, previous_valid_until,
                            rate_per_second
                     FROM api_keys ORDER BY id",
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
            let rotated = self
                .client()
                .await?
                .execute(
                    "UPDATE api_keys SET previous_key_hash = key_hash, key_hash = $2,
                         previous_valid_until = now() + make_interval(secs => $3)
                     WHERE id = $1 AND revoked_at IS NULL",
                    &[&id, &hash.0.as_slice(), &grace.as_secs_f64()],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(rotated > 0)
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
                            OR previous_valid_until BETWEEN now() - make_interval(secs => $1) AND now())",
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

    /// Inserts `links` in one statement; returns the codes that were inserted
    /// with their timestamps.
    #[tracing::instrument(skip_all, fields(count = links.len()))]
    async fn insert(
        &self,
        owner: OwnerId,
        links: &[NewLink],
    ) -> Result<HashMap<String, (SystemTime, SystemTime)>, WriterError> {
        let codes: Vec<&str> = links.iter().map(|link| link.code.as_str()).collect();
        let ids: Vec<Option<i64>> = links.iter().map(|link| link.id).collect();
        let targets: Vec<&str> = links.iter().map(|link| link.target_url.as_str()).collect();
        let statuses: Vec<i16> = links
            .iter()
            .map(|link| link.redirect_status.column())
            .collect();
        let forwards: Vec<bool> = links.iter().map(|link| link.forward_query).collect();
        let expiries: Vec<Option<SystemTime>> = links.iter().map(|link| link.expires_at).collect();
        let aliases: Vec<bool> = links.iter().map(|link| link.is_alias).collect();
        let keys: Vec<Option<&str>> = links
            .iter()
            .map(|link| link.idempotency_key.as_deref())
            .collect();
        self.bounded(async {
            let client = self.client().await?;
            let rows = if let [link] = links {
                let statement = client
                    .prepare_cached(INSERT_ONE_SQL)
                    .await
                    .map_err(WriterError::from_postgres)?;
                client
                    .query(
                        &statement,
                        &[
                            &owner.0,
                            &link.code,
                            &link.id,
                            &link.target_url,
                            &link.redirect_status.column(),
                            &link.forward_query,
                            &link.expires_at,
                            &link.is_alias,
                            &link.idempotency_key,
                        ],
                    )
                    .await
            } else {
                let statement = client
                    .prepare_cached(INSERT_SQL)
                    .await
                    .map_err(WriterError::from_postgres)?;
                client
                    .query(
                        &statement,
                        &[
                            &owner.0, &codes, &ids, &targets, &statuses, &forwards, &expiries,
                            &aliases, &keys,
                        ],
                    )
                    .await
            }
            .map_err(WriterError::from_postgres)?;
            rows.iter()
                .map(|row| Ok((row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?))))
                .collect::<Result<HashMap<_, _>, tokio_postgres::Error>>()
                .map_err(WriterError::from_postgres)
        })
        .await
    }

    /// Links of `owner` created with any of `keys`, by idempotency key.
    async fn find_by_idempotency_keys(
        &self,
        owner: OwnerId,
        keys: &[&str],
    ) -> Result<HashMap<String, StoredLink>, WriterError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!("SELECT idempotency_key, {LINK_COLUMNS} FROM links WHERE owner_key_id = $1 AND idempotency_key = ANY($2) AND target_url IS NOT NULL"),
                    &[&owner.0, &keys],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let mut found = HashMap::with_capacity(rows.len());
            for row in rows {
                let key: String = row.try_get(0).map_err(WriterError::from_postgres)?;
                let link = StoredLink::from_row_at(&row, 1)?;
                found.insert(key, link);
            }
            Ok(found)
        })
        .await
    }

    async fn get(&self, owner: OwnerId, code: &str) -> Result<Option<StoredLink>, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &format!(
                        "SELECT {LINK_COLUMNS} FROM links WHERE owner_key_id = $1 AND code = $2 AND target_url IS NOT NULL"
                    ),
                    &[&owner.0, &code],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            row.as_ref().map(StoredLink::from_row).transpose()
        })
        .await
    }

    async fn update(
        &self,
        owner: OwnerId,
        code: &str,
        changes: &LinkChanges,
    ) -> Result<Option<StoredLink>, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &format!(
                        "UPDATE links SET
                             target_url = COALESCE($3, target_url),
                             expires_at = CASE WHEN $4 THEN NULL ELSE COALESCE($5, expires_at) END,
                             redirect_status = COALESCE($6, redirect_status),
                             enabled = COALESCE($7, enabled),
                             forward_query = COALESCE($8, forward_query),
                             updated_at = now()
                         WHERE owner_key_id = $1 AND code = $2 AND target_url IS NOT NULL
                         RETURNING {LINK_COLUMNS}"
                    ),
                    &[
                        &owner.0,
                        &code,
                        &changes.target_url,
                        &changes.clear_expiry,
                        &changes.expires_at,
                        &changes.redirect_status.map(RedirectStatus::column),
                        &changes.enabled,
                        &changes.forward_query,
                    ],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            row.as_ref().map(StoredLink::from_row).transpose()
        })
        .await
    }

    async fn delete(&self, owner: OwnerId, code: &str) -> Result<bool, WriterError> {
        self.bounded(async {
            let deleted = self
                .client()
                .await?
                .execute(DELETE_SQL, &[&owner.0, &code])
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn block_host(
        &self,
        entry: &str,
        list: &tinyurl_domain::HostBlocklist,
    ) -> Result<Vec<StoredLink>, WriterError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .execute(
                    "INSERT INTO blocked_hosts (entry) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[&entry],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let candidates = transaction
                .query(
                    "SELECT code, target_url FROM links WHERE enabled AND target_url LIKE $1",
                    &[&like_pattern(entry)],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let mut codes = Vec::new();
            for row in candidates {
                let code: String = row.try_get(0).map_err(WriterError::from_postgres)?;
                let target: String = row.try_get(1).map_err(WriterError::from_postgres)?;
                if tinyurl_domain::target::stored_host(&target)
                    .is_some_and(|host| list.blocking(&host).is_some())
                {
                    codes.push(code);
                }
            }
            let rows = transaction
                .query(
                    &format!(
                        "UPDATE links SET enabled = false, updated_at = now()
                         WHERE code = ANY($1) AND enabled RETURNING {LINK_COLUMNS}"
                    ),
                    &[&codes],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .commit()
                .await
                .map_err(WriterError::from_postgres)?;
            rows.iter().map(StoredLink::from_row).collect()
        })
        .await
    }

    async fn blocked_host_entries(&self) -> Result<Vec<String>, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT entry FROM blocked_hosts ORDER BY entry")
                .await
                .map_err(WriterError::from_postgres)?;
            let rows = client
                .query(&statement, &[])
                .await
                .map_err(WriterError::from_postgres)?;
            rows.iter()
                .map(|row| row.try_get(0).map_err(WriterError::from_postgres))
                .collect()
        })
        .await
    }

    /// Newest first; `after` is the (created_at, code) of the last link of the
    /// previous page.
    async fn list(
        &self,
        owner: OwnerId,
        limit: i64,
        after: Option<(SystemTime, String)>,
    ) -> Result<Vec<StoredLink>, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = match after {
                None => client
                    .query(
                        &format!("SELECT {LINK_COLUMNS} FROM links WHERE owner_key_id = $1 AND target_url IS NOT NULL ORDER BY created_at DESC, code DESC LIMIT $2"),
                        &[&owner.0, &limit],
                    )
                    .await,
                Some((created_at, code)) => client
                    .query(
                        &format!(
                            "SELECT {LINK_COLUMNS} FROM links WHERE owner_key_id = $1 AND target_url IS NOT NULL AND (created_at, code) < ($3, $4)
                             ORDER BY created_at DESC, code DESC LIMIT $2"
                        ),
                        &[&owner.0, &limit, &created_at, &code],
                    )
                    .await,
            }
            .map_err(WriterError::from_postgres)?;
            rows.iter().map(StoredLink::from_row).collect()
        })
        .await
    }
}
