//! The Postgres link store of the split deployment: batches in one
//! statement, every call bounded by the configured timeout, connection-level
//! failures reported as UNAVAILABLE.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tinyurl_analytics::{ClickStore, PostgresRollups};

use deadpool_postgres::Pool;
use secrecy::SecretString;
use tinyurl_runtime::postgres;
use tokio_postgres::Row;

use super::{
    ApiKeyInfo, LinkChanges, LinkStore, NewLink, Replay, StoredLink, fingerprint_from, key_hash,
    lifted_and_remaining, like_pattern, parse_scope, rate_column, stored_rate, stored_status,
};
use crate::auth::{Caller, KeyHash, OwnerId, Rate, Scope};
use crate::error::WriterError;
use tinyurl_domain::RedirectStatus;

mod online;

pub use online::{OnlineMigration, OnlineReport};

mod embedded {
    refinery::embed_migrations!("migrations");
}

const MIGRATION_LOCK_KEY: i64 = 0x7469_6e79_7772_6974;
/// Where refinery records the writer's applied migrations.
pub(crate) const HISTORY_TABLE: &str = "writer_schema_history";
/// The service roles' privileges, applied after every migration run.
const GRANTS: &str = include_str!("postgres/grants.sql");

/// A link's columns as [`StoredLink::from_row`] reads them. The row packs
/// the booleans into `flags` (1 forward the query, 2 disabled by its owner,
/// 4 alias, 8 blocked by an operator) and leaves `updated_at` NULL until
/// the first change (migrations V7, V8).
const LINK_COLUMNS: &str = "code, target_url, redirect_status, flags & 1 <> 0, expires_at, \
                            flags & 2 = 0, flags & 4 <> 0, created_at, \
                            COALESCE(updated_at, created_at), flags & 8 <> 0";

/// The `flags` of a new link (enabled).
fn new_flags(link: &NewLink) -> i16 {
    i16::from(link.forward_query) | (i16::from(link.is_alias) << 2)
}

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
                blocked: row.try_get(offset + 9)?,
            })
        };
        read().map_err(WriterError::from_postgres)
    }
}

/// Inserts a whole batch in one statement; conflicting rows (a taken code or
/// alias) are skipped, not errors.
const INSERT_SQL: &str = "
INSERT INTO links (code, owner_key_id, target_url, redirect_status, flags, expires_at)
SELECT code, $1, target_url, redirect_status, flags, expires_at
FROM UNNEST($2::text[], $3::text[], $4::int2[], $5::int2[], $6::timestamptz[])
     AS new (code, target_url, redirect_status, flags, expires_at)
ON CONFLICT DO NOTHING
RETURNING code, created_at, COALESCE(updated_at, created_at)";

/// The single-row form of [`INSERT_SQL`]: cheaper to bind and plan than
/// one-element arrays, and single creates are the hot path.
const INSERT_ONE_SQL: &str = "
INSERT INTO links (code, owner_key_id, target_url, redirect_status, flags, expires_at)
VALUES ($2, $1, $3, $4, $5, $6)
ON CONFLICT DO NOTHING
RETURNING code, created_at, COALESCE(updated_at, created_at)";

/// A batch with idempotency keys, run in a transaction. Each key is claimed
/// first (a concurrent create with the same key waits on the unique index,
/// then finds it taken); a key older than the retention (`$7` seconds), or
/// whose link was deleted, is claimed anew. Only the items whose key was
/// claimed (or that have none) are inserted, the first item of each code
/// only. Returns the inserted codes and, with a NULL code, the claimed keys
/// whose code turned out to be taken: the caller deletes those claims before
/// committing, so a key always names the link it created.
const INSERT_KEYED_SQL: &str = "
WITH new AS (
    SELECT * FROM UNNEST($2::text[], $3::text[], $4::int2[], $5::int2[], $6::timestamptz[],
                         $8::text[], $9::bytea[]) WITH ORDINALITY
        AS new (code, target_url, redirect_status, flags, expires_at, key, fingerprint, position)
), candidates AS (
    SELECT DISTINCT ON (code) * FROM new ORDER BY code, position
), claimed AS (
    INSERT INTO link_idempotency AS held (owner_key_id, key, code, fingerprint)
    SELECT DISTINCT ON (key) $1, key, code, fingerprint FROM candidates WHERE key IS NOT NULL
    ORDER BY key, position
    ON CONFLICT (owner_key_id, key) DO UPDATE
        SET code = EXCLUDED.code, created_at = now(), fingerprint = EXCLUDED.fingerprint
        WHERE held.created_at <= now() - make_interval(secs => $7)
           OR NOT EXISTS (SELECT 1 FROM links
                          WHERE links.code = held.code AND links.target_url IS NOT NULL)
    RETURNING key, code
), inserted AS (
    INSERT INTO links (code, owner_key_id, target_url, redirect_status, flags, expires_at)
    SELECT code, $1, target_url, redirect_status, flags, expires_at FROM candidates
    WHERE key IS NULL OR (key, code) IN (SELECT key, code FROM claimed)
    ON CONFLICT DO NOTHING
    RETURNING code, created_at, COALESCE(updated_at, created_at) AS updated_at
)
SELECT code, created_at, updated_at, NULL::text FROM inserted
UNION ALL
SELECT NULL, NULL, NULL, key FROM claimed WHERE code NOT IN (SELECT code FROM inserted)";

/// Deleting leaves a tombstone (migration V3): the code stays taken, the
/// target goes. A key that created the link no longer answers with it: a
/// retried create with that key claims the key anew and makes a new link, as
/// it would after a real delete.
const DELETE_SQL: &str = "
UPDATE links SET target_url = NULL, flags = flags | 2, expires_at = NULL, updated_at = now()
WHERE owner_key_id = $1 AND code = $2 AND target_url IS NOT NULL";

#[derive(Clone)]
pub struct PostgresLinkStore {
    pool: Pool,
    pg_config: tokio_postgres::Config,
    timeout: Duration,
    idempotency_retention: Duration,
    link_partitions: u16,
    rollups: Arc<PostgresRollups>,
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
            rollups: Arc::new(PostgresRollups::new(pool.clone(), timeout)),
            pool,
            pg_config,
            timeout,
            idempotency_retention: super::DEFAULT_IDEMPOTENCY_RETENTION,
            link_partitions: super::DEFAULT_LINK_PARTITIONS,
        })
    }

    /// How long an idempotency key answers retries (24 h by default).
    #[must_use]
    pub fn with_idempotency_retention(mut self, retention: Duration) -> Self {
        self.idempotency_retention = retention;
        self
    }

    /// How many hash partitions the links table gets when the migration that
    /// partitions it runs (16 by default); no effect afterwards.
    #[must_use]
    pub fn with_link_partitions(mut self, partitions: u16) -> Self {
        self.link_partitions = partitions;
        self
    }

    /// Applies pending migrations, one writer at a time.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.migrate_to(None).await
    }

    /// Applies pending migrations up to `version` (all with `None`); tests
    /// use it to build a database of an earlier schema.
    pub async fn migrate_to(&self, version: Option<i32>) -> anyhow::Result<()> {
        let config = self.migration_config();
        let mut runner = embedded::migrations::runner();
        if let Some(version) = version {
            runner = runner.set_target(refinery::Target::Version(version));
        }
        postgres::migrate(
            &config,
            self.timeout,
            MIGRATION_LOCK_KEY,
            HISTORY_TABLE,
            runner,
            // The grants name the current tables; an earlier schema (a
            // test's starting point) has not all of them.
            if version.is_none() { GRANTS } else { "" },
        )
        .await
    }

    /// Fails unless every migration this build embeds is applied (for a
    /// writer whose role may not migrate).
    pub async fn check_migrated(&self) -> anyhow::Result<()> {
        postgres::check_migrated(
            &self.pg_config,
            self.timeout,
            HISTORY_TABLE,
            &embedded::migrations::runner(),
            "tinyurl-writer",
        )
        .await
    }

    /// The connection migrations run on: it carries the partition count
    /// V7 reads.
    fn migration_config(&self) -> tokio_postgres::Config {
        let mut config = self.pg_config.clone();
        let options = config.get_options().unwrap_or_default().to_owned();
        config.options(format!(
            "{options} -c tinyurl.link_partitions={}",
            self.link_partitions
        ));
        config
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, WriterError>>,
    ) -> Result<T, WriterError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| tinyurl_runtime::StoreError::timed_out(self.timeout))?
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, WriterError> {
        self.pool.get().await.map_err(WriterError::from_pool)
    }
}

#[async_trait::async_trait]
impl LinkStore for PostgresLinkStore {
    fn clicks(&self) -> Arc<dyn ClickStore> {
        Arc::clone(&self.rollups) as Arc<dyn ClickStore>
    }

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

    /// Inserts `links` in one statement (in a transaction with the claims
    /// of their idempotency keys, when they have any); returns the codes that
    /// were inserted with their timestamps.
    #[tracing::instrument(skip_all, fields(count = links.len()))]
    async fn insert(
        &self,
        owner: OwnerId,
        links: &[NewLink],
    ) -> Result<HashMap<String, (SystemTime, SystemTime)>, WriterError> {
        let codes: Vec<&str> = links.iter().map(|link| link.code.as_str()).collect();
        let targets: Vec<&str> = links.iter().map(|link| link.target_url.as_str()).collect();
        let statuses: Vec<i16> = links
            .iter()
            .map(|link| link.redirect_status.column())
            .collect();
        let flags: Vec<i16> = links.iter().map(new_flags).collect();
        let expiries: Vec<Option<SystemTime>> = links.iter().map(|link| link.expires_at).collect();
        let keys: Vec<Option<&str>> = links
            .iter()
            .map(|link| link.idempotency_key.as_deref())
            .collect();
        let fingerprints: Vec<Option<&[u8]>> = links
            .iter()
            .map(|link| {
                link.fingerprint
                    .as_ref()
                    .map(|fingerprint| fingerprint.as_slice())
            })
            .collect();
        let read = |rows: &[Row]| {
            rows.iter()
                .filter_map(|row| match row.try_get::<_, Option<String>>(0) {
                    Ok(Some(code)) => Some((|| Ok((code, (row.try_get(1)?, row.try_get(2)?))))()),
                    Ok(None) => None,
                    Err(error) => Some(Err(error)),
                })
                .collect::<Result<HashMap<_, _>, tokio_postgres::Error>>()
                .map_err(WriterError::from_postgres)
        };
        self.bounded(async {
            let mut client = self.client().await?;
            if keys.iter().any(Option::is_some) {
                let transaction = client
                    .transaction()
                    .await
                    .map_err(WriterError::from_postgres)?;
                let statement = transaction
                    .prepare_cached(INSERT_KEYED_SQL)
                    .await
                    .map_err(WriterError::from_postgres)?;
                let rows = transaction
                    .query(
                        &statement,
                        &[
                            &owner.0,
                            &codes,
                            &targets,
                            &statuses,
                            &flags,
                            &expiries,
                            &self.idempotency_retention.as_secs_f64(),
                            &keys,
                            &fingerprints,
                        ],
                    )
                    .await
                    .map_err(WriterError::from_postgres)?;
                let orphans = rows
                    .iter()
                    .map(|row| row.try_get::<_, Option<String>>(3))
                    .filter_map(Result::transpose)
                    .collect::<Result<Vec<String>, _>>()
                    .map_err(WriterError::from_postgres)?;
                if !orphans.is_empty() {
                    transaction
                        .execute(
                            "DELETE FROM link_idempotency WHERE owner_key_id = $1 AND key = ANY($2)",
                            &[&owner.0, &orphans],
                        )
                        .await
                        .map_err(WriterError::from_postgres)?;
                }
                let inserted = read(&rows)?;
                transaction
                    .commit()
                    .await
                    .map_err(WriterError::from_postgres)?;
                return Ok(inserted);
            }
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
                            &link.target_url,
                            &link.redirect_status.column(),
                            &new_flags(link),
                            &link.expires_at,
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
                        &[&owner.0, &codes, &targets, &statuses, &flags, &expiries],
                    )
                    .await
            }
            .map_err(WriterError::from_postgres)?;
            read(&rows)
        })
        .await
    }

    /// Links of `owner` created with any of `keys`, by idempotency key.
    async fn find_by_idempotency_keys(
        &self,
        owner: OwnerId,
        keys: &[&str],
    ) -> Result<HashMap<String, Replay>, WriterError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT held.key, held.fingerprint, link.* FROM link_idempotency held
                         CROSS JOIN LATERAL (
                             SELECT {LINK_COLUMNS} FROM links
                             WHERE code = held.code AND owner_key_id = held.owner_key_id
                               AND target_url IS NOT NULL) link
                         WHERE held.owner_key_id = $1 AND held.key = ANY($2)
                           AND held.created_at > now() - make_interval(secs => $3)"
                    ),
                    &[&owner.0, &keys, &self.idempotency_retention.as_secs_f64()],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let mut found = HashMap::with_capacity(rows.len());
            for row in rows {
                let key: String = row.try_get(0).map_err(WriterError::from_postgres)?;
                let fingerprint =
                    fingerprint_from(row.try_get(1).map_err(WriterError::from_postgres)?);
                let link = StoredLink::from_row_at(&row, 2)?;
                found.insert(key, Replay { link, fingerprint });
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
                             flags = (flags & 4)
                                 | CASE WHEN COALESCE($8, flags & 1 <> 0) THEN 1 ELSE 0 END
                                 | CASE WHEN COALESCE($7, flags & 2 = 0) THEN 0 ELSE 2 END,
                             updated_at = now()
                         WHERE owner_key_id = $1 AND code = $2 AND target_url IS NOT NULL
                           AND flags & 8 = 0
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
            serialize_blocklist_changes(&transaction).await?;
            transaction
                .execute(
                    "INSERT INTO blocked_hosts (entry) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[&entry],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let codes = codes_to_host(&transaction, entry, false, |host| {
                list.blocking(host).is_some()
            })
            .await?;
            set_blocked_and_commit(transaction, &codes, true).await
        })
        .await
    }

    async fn unblock_host(&self, entry: &str) -> Result<Option<Vec<StoredLink>>, WriterError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(WriterError::from_postgres)?;
            serialize_blocklist_changes(&transaction).await?;
            let removed = transaction
                .execute("DELETE FROM blocked_hosts WHERE entry = $1", &[&entry])
                .await
                .map_err(WriterError::from_postgres)?;
            if removed == 0 {
                return Ok(None);
            }
            let remaining: Vec<String> = transaction
                .query("SELECT entry FROM blocked_hosts", &[])
                .await
                .map_err(WriterError::from_postgres)?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(WriterError::from_postgres)?;
            let (lifted, remaining) = lifted_and_remaining(entry, &remaining)?;
            let codes = codes_to_host(&transaction, entry, true, |host| {
                lifted.blocking(host).is_some() && remaining.blocking(host).is_none()
            })
            .await?;
            set_blocked_and_commit(transaction, &codes, false)
                .await
                .map(Some)
        })
        .await
    }

    async fn links_to_host(
        &self,
        entry: &str,
        list: &tinyurl_domain::HostBlocklist,
    ) -> Result<Vec<StoredLink>, WriterError> {
        self.bounded(async {
            let rows = self
                .client()
                .await?
                .query(
                    &format!("SELECT {LINK_COLUMNS} FROM links WHERE target_url LIKE $1"),
                    &[&like_pattern(entry)],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let mut links = Vec::new();
            for row in &rows {
                let link = StoredLink::from_row(row)?;
                if tinyurl_domain::target::stored_host(&link.target_url)
                    .is_some_and(|host| list.blocking(&host).is_some())
                {
                    links.push(link);
                }
            }
            Ok(links)
        })
        .await
    }

    async fn prune_idempotency_keys(&self, limit: i64) -> Result<u64, WriterError> {
        self.bounded(async {
            // In bounded slices, like the click retention: short row locks,
            // and a concurrent prune by another writer only wastes a little.
            self.client()
                .await?
                .execute(
                    "DELETE FROM link_idempotency WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM link_idempotency
                          WHERE created_at <= now() - make_interval(secs => $1) LIMIT $2))",
                    &[&self.idempotency_retention.as_secs_f64(), &limit],
                )
                .await
                .map_err(WriterError::from_postgres)
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
                            "SELECT {LINK_COLUMNS} FROM links WHERE owner_key_id = $1 AND target_url IS NOT NULL
                                 AND created_at <= $3 AND (created_at < $3 OR code < $4)
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

/// Block and unblock decide on the whole stored list: one at a time, so
/// neither misses an entry the other is adding.
async fn serialize_blocklist_changes(
    transaction: &tokio_postgres::Transaction<'_>,
) -> Result<(), WriterError> {
    transaction
        .batch_execute("LOCK TABLE blocked_hosts IN SHARE ROW EXCLUSIVE MODE")
        .await
        .map_err(WriterError::from_postgres)
}

/// Sets the operator's block of `codes` to `blocked` and commits; returns
/// the links it changed.
async fn set_blocked_and_commit(
    transaction: deadpool_postgres::Transaction<'_>,
    codes: &[String],
    blocked: bool,
) -> Result<Vec<StoredLink>, WriterError> {
    let rows = transaction
        .query(
            &format!(
                "UPDATE links SET flags = CASE WHEN $2 THEN flags | 8 ELSE flags & 7 END,
                                  updated_at = now()
                 WHERE code = ANY($1) AND (flags & 8 <> 0) <> $2 RETURNING {LINK_COLUMNS}"
            ),
            &[&codes, &blocked],
        )
        .await
        .map_err(WriterError::from_postgres)?;
    transaction
        .commit()
        .await
        .map_err(WriterError::from_postgres)?;
    rows.iter().map(StoredLink::from_row).collect()
}

/// Codes of live links, blocked or not as `blocked` says, whose target's
/// host (as stored: lowercase, punycode) `matches`. Every such URL holds
/// `entry`'s host as a substring, so a `LIKE` finds the candidates and the
/// parsed host decides.
async fn codes_to_host(
    transaction: &tokio_postgres::Transaction<'_>,
    entry: &str,
    blocked: bool,
    matches: impl Fn(&str) -> bool,
) -> Result<Vec<String>, WriterError> {
    let candidates = transaction
        .query(
            "SELECT code, target_url FROM links WHERE (flags & 8 <> 0) = $2 AND target_url LIKE $1",
            &[&like_pattern(entry), &blocked],
        )
        .await
        .map_err(WriterError::from_postgres)?;
    let mut codes = Vec::new();
    for row in candidates {
        let code: String = row.try_get(0).map_err(WriterError::from_postgres)?;
        let target: String = row.try_get(1).map_err(WriterError::from_postgres)?;
        if tinyurl_domain::target::stored_host(&target).is_some_and(|host| matches(&host)) {
            codes.push(code);
        }
    }
    Ok(codes)
}
