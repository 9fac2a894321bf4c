//! The embedded link store (`tinyurl up`): SQLite in WAL mode. A batch is
//! one `BEGIN IMMEDIATE` transaction, so it takes the write lock up front
//! instead of failing half-way on a lock upgrade.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tinyurl_analytics::{ClickStore, SqliteRollups};

use tinyurl_runtime::sqlite::rusqlite::{self, OptionalExtension as _, Row, TransactionBehavior};
use tinyurl_runtime::sqlite::{Sqlite, from_micros, to_micros};

use super::{
    ApiKeyInfo, LinkChanges, LinkStore, NewLink, Replay, StoredLink, fingerprint_from, key_hash,
    lifted_and_remaining, like_pattern, parse_scope, rate_column, stored_rate,
};
use crate::auth::{Caller, KeyHash, OwnerId, Rate, Scope};
use crate::error::WriterError;

mod embedded {
    refinery::embed_migrations!("migrations-sqlite");
}

/// `updated_at` is NULL until the first change (migration V7).
const LINK_COLUMNS: &str = "code, target_url, redirect_status, forward_query, expires_at, enabled, is_alias, created_at, COALESCE(updated_at, created_at), blocked";

/// Writes serialise on SQLite's lock anyway; a few connections let reads
/// proceed beside a write.
const POOL_SIZE: usize = 4;

#[derive(Clone)]
pub struct SqliteLinkStore {
    db: Sqlite,
    idempotency_retention: Duration,
    rollups: Arc<SqliteRollups>,
}

fn link_from_row(row: &Row<'_>) -> rusqlite::Result<StoredLink> {
    let status: i64 = row.get(2)?;
    Ok(StoredLink {
        code: row.get(0)?,
        target_url: row.get(1)?,
        // The schema's CHECK allows only the four statuses.
        redirect_status: tinyurl_domain::RedirectStatus::from_code(status)
            .ok_or(rusqlite::Error::IntegralValueOutOfRange(2, status))?,
        forward_query: row.get(3)?,
        expires_at: row.get::<_, Option<i64>>(4)?.map(from_micros),
        enabled: row.get(5)?,
        is_alias: row.get(6)?,
        created_at: from_micros(row.get(7)?),
        updated_at: from_micros(row.get(8)?),
        blocked: row.get(9)?,
    })
}

impl SqliteLinkStore {
    /// Opens and migrates the database file at `path`.
    pub async fn open(path: &Path, timeout: Duration) -> anyhow::Result<Self> {
        let db = Sqlite::open(path, POOL_SIZE, timeout).await?;
        db.migrate("writer_schema_history", embedded::migrations::runner())
            .await?;
        Ok(Self {
            rollups: Arc::new(SqliteRollups::new(db.clone())),
            db,
            idempotency_retention: super::DEFAULT_IDEMPOTENCY_RETENTION,
        })
    }

    /// How long an idempotency key answers retries (24 h by default).
    #[must_use]
    pub fn with_idempotency_retention(mut self, retention: Duration) -> Self {
        self.idempotency_retention = retention;
        self
    }

    /// Keys created before this are forgotten.
    fn keys_since(&self, now: SystemTime) -> i64 {
        to_micros(
            now.checked_sub(self.idempotency_retention)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        )
    }

    /// The instance setting `name`, set to `initial()` the first time it is
    /// asked for.
    pub async fn setting_or_insert(
        &self,
        name: &'static str,
        initial: impl FnOnce() -> String + Send + 'static,
    ) -> Result<String, WriterError> {
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let existing = transaction
                    .query_row(
                        "SELECT value FROM instance_settings WHERE name = ?1",
                        [name],
                        |row| row.get::<_, String>(0),
                    )
                    .optional()?;
                let value = match existing {
                    Some(value) => value,
                    None => {
                        let value = initial();
                        transaction.execute(
                            "INSERT INTO instance_settings (name, value) VALUES (?1, ?2)",
                            (name, &value),
                        )?;
                        value
                    }
                };
                transaction.commit()?;
                Ok(value)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }
}

#[async_trait::async_trait]
impl LinkStore for SqliteLinkStore {
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
        let name = name.to_owned();
        let hash = hash.0;
        self.db
            .run(move |connection| {
                connection.query_row(
                    "INSERT INTO api_keys (name, key_hash, scope, created_at, rate_per_second)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     RETURNING id",
                    (
                        &name,
                        hash.as_slice(),
                        scope.as_str(),
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
                    .prepare_cached(
                        "UPDATE api_keys SET last_used_at = ?2
                         WHERE (key_hash = ?1 OR (previous_key_hash = ?1 AND previous_valid_until > ?2))
                           AND revoked_at IS NULL
                         RETURNING id, scope, rate_per_second",
                    )?
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
                    .prepare_cached(
                        "SELECT id, name, scope, created_at, last_used_at, revoked_at, previous_valid_until,
                                rate_per_second
                         FROM api_keys ORDER BY id",
                    )?
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

    #[tracing::instrument(skip_all, fields(count = links.len()))]
    async fn insert(
        &self,
        owner: OwnerId,
        links: &[NewLink],
    ) -> Result<HashMap<String, (SystemTime, SystemTime)>, WriterError> {
        let links = links.to_vec();
        let keys_since = self.keys_since(SystemTime::now());
        self.db
            .run(move |connection| {
                // One timestamp per batch, like Postgres's now() per
                // transaction.
                let now = to_micros(SystemTime::now());
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut inserted = HashMap::with_capacity(links.len());
                {
                    // A key older than the retention, or whose link was
                    // deleted, is claimed anew; otherwise a used key skips
                    // the item (the caller answers with the key's link).
                    let mut claim = transaction.prepare_cached(
                        "INSERT INTO link_idempotency AS held
                             (owner_key_id, key, code, created_at, fingerprint)
                         VALUES (?1, ?2, ?3, ?4, ?6)
                         ON CONFLICT (owner_key_id, key) DO UPDATE
                             SET code = excluded.code, created_at = excluded.created_at,
                                 fingerprint = excluded.fingerprint
                             WHERE held.created_at <= ?5
                                OR NOT EXISTS (SELECT 1 FROM links
                                               WHERE links.code = held.code
                                                 AND links.target_url IS NOT NULL)
                         RETURNING key",
                    )?;
                    let mut unclaim = transaction.prepare_cached(
                        "DELETE FROM link_idempotency WHERE owner_key_id = ?1 AND key = ?2",
                    )?;
                    let mut statement = transaction.prepare_cached(
                        "INSERT INTO links (code, owner_key_id, target_url, redirect_status,
                                            forward_query, expires_at, is_alias, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT DO NOTHING
                         RETURNING code",
                    )?;
                    for link in &links {
                        if let Some(key) = &link.idempotency_key {
                            let claimed: Option<String> = claim
                                .query_row(
                                    (
                                        owner.0,
                                        key,
                                        &link.code,
                                        now,
                                        keys_since,
                                        link.fingerprint
                                            .as_ref()
                                            .map(|fingerprint| fingerprint.as_slice()),
                                    ),
                                    |row| row.get(0),
                                )
                                .optional()?;
                            if claimed.is_none() {
                                continue;
                            }
                        }
                        let code: Option<String> = statement
                            .query_row(
                                rusqlite::params![
                                    link.code,
                                    owner.0,
                                    link.target_url,
                                    link.redirect_status.column(),
                                    link.forward_query,
                                    link.expires_at.map(to_micros),
                                    link.is_alias,
                                    now,
                                ],
                                |row| row.get(0),
                            )
                            .optional()?;
                        match (code, &link.idempotency_key) {
                            (Some(code), _) => {
                                inserted.insert(code, (from_micros(now), from_micros(now)));
                            }
                            // The code is taken: the key must not name it.
                            (None, Some(key)) => {
                                unclaim.execute((owner.0, key))?;
                            }
                            (None, None) => {}
                        }
                    }
                }
                transaction.commit()?;
                Ok(inserted)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn find_by_idempotency_keys(
        &self,
        owner: OwnerId,
        keys: &[&str],
    ) -> Result<HashMap<String, Replay>, WriterError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        let since = self.keys_since(SystemTime::now());
        self.db
            .run(move |connection| {
                let mut held = connection.prepare_cached(
                    "SELECT code, fingerprint FROM link_idempotency
                      WHERE owner_key_id = ?1 AND key = ?2 AND created_at > ?3",
                )?;
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {LINK_COLUMNS} FROM links
                     WHERE code = ?2 AND owner_key_id = ?1 AND target_url IS NOT NULL"
                ))?;
                let mut found = HashMap::with_capacity(keys.len());
                for key in keys {
                    let Some((code, fingerprint)) = held
                        .query_row((owner.0, &key, since), |row| {
                            Ok((row.get::<_, String>(0)?, row.get::<_, Option<Vec<u8>>>(1)?))
                        })
                        .optional()?
                    else {
                        continue;
                    };
                    if let Some(link) = statement
                        .query_row((owner.0, &code), link_from_row)
                        .optional()?
                    {
                        let fingerprint = fingerprint_from(fingerprint);
                        found.insert(key, Replay { link, fingerprint });
                    }
                }
                Ok(found)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn get(&self, owner: OwnerId, code: &str) -> Result<Option<StoredLink>, WriterError> {
        let code = code.to_owned();
        self.db
            .run(move |connection| {
                connection
                    .prepare_cached(&format!(
                        "SELECT {LINK_COLUMNS} FROM links WHERE owner_key_id = ?1 AND code = ?2 AND target_url IS NOT NULL"
                    ))?
                    .query_row((owner.0, &code), link_from_row)
                    .optional()
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn update(
        &self,
        owner: OwnerId,
        code: &str,
        changes: &LinkChanges,
    ) -> Result<Option<StoredLink>, WriterError> {
        let code = code.to_owned();
        let changes = changes.clone();
        self.db
            .run(move |connection| {
                connection
                    .prepare_cached(&format!(
                        "UPDATE links SET
                             target_url = COALESCE(?3, target_url),
                             expires_at = CASE WHEN ?4 THEN NULL ELSE COALESCE(?5, expires_at) END,
                             redirect_status = COALESCE(?6, redirect_status),
                             enabled = COALESCE(?7, enabled),
                             forward_query = COALESCE(?8, forward_query),
                             updated_at = ?9
                         WHERE owner_key_id = ?1 AND code = ?2 AND target_url IS NOT NULL
                           AND blocked = 0
                         RETURNING {LINK_COLUMNS}"
                    ))?
                    .query_row(
                        rusqlite::params![
                            owner.0,
                            code,
                            changes.target_url,
                            changes.clear_expiry,
                            changes.expires_at.map(to_micros),
                            changes
                                .redirect_status
                                .map(tinyurl_domain::RedirectStatus::column),
                            changes.enabled,
                            changes.forward_query,
                            to_micros(SystemTime::now()),
                        ],
                        link_from_row,
                    )
                    .optional()
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn delete(&self, owner: OwnerId, code: &str) -> Result<bool, WriterError> {
        let code = code.to_owned();
        self.db
            .run(move |connection| {
                // A tombstone, as in the Postgres store: the code stays taken.
                connection.execute(
                    "UPDATE links SET target_url = NULL, enabled = 0,
                                      expires_at = NULL, updated_at = ?3
                     WHERE owner_key_id = ?1 AND code = ?2 AND target_url IS NOT NULL",
                    (owner.0, &code, to_micros(SystemTime::now())),
                )
            })
            .await
            .map(|deleted| deleted > 0)
            .map_err(WriterError::from_sqlite)
    }

    async fn block_host(
        &self,
        entry: &str,
        list: &tinyurl_domain::HostBlocklist,
    ) -> Result<Vec<StoredLink>, WriterError> {
        let (entry, list) = (entry.to_owned(), list.clone());
        self.db
            .run(move |connection| {
                let now = to_micros(SystemTime::now());
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                transaction.execute(
                    "INSERT INTO blocked_hosts (entry, added_at) VALUES (?1, ?2)
                     ON CONFLICT DO NOTHING",
                    (&entry, now),
                )?;
                let codes = codes_to_host(&transaction, &entry, false, |host| {
                    list.blocking(host).is_some()
                })?;
                let blocked = set_blocked(&transaction, &codes, true, now)?;
                transaction.commit()?;
                Ok(blocked)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn unblock_host(&self, entry: &str) -> Result<Option<Vec<StoredLink>>, WriterError> {
        let entry = entry.to_owned();
        self.db
            .run(move |connection| {
                let now = to_micros(SystemTime::now());
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if transaction.execute("DELETE FROM blocked_hosts WHERE entry = ?1", [&entry])? == 0
                {
                    return Ok(None);
                }
                let remaining: Vec<String> = transaction
                    .prepare("SELECT entry FROM blocked_hosts")?
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                let (lifted, remaining) = lifted_and_remaining(&entry, &remaining)
                    // A stored entry that does not parse; rusqlite carries it as a Rust-side failure.
                    .map_err(|error| rusqlite::Error::ToSqlConversionFailure(error.into()))?;
                let codes = codes_to_host(&transaction, &entry, true, |host| {
                    lifted.blocking(host).is_some() && remaining.blocking(host).is_none()
                })?;
                let unblocked = set_blocked(&transaction, &codes, false, now)?;
                transaction.commit()?;
                Ok(Some(unblocked))
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn links_to_host(
        &self,
        entry: &str,
        list: &tinyurl_domain::HostBlocklist,
    ) -> Result<Vec<StoredLink>, WriterError> {
        let (entry, list) = (entry.to_owned(), list.clone());
        self.db
            .run(move |connection| {
                let mut links = Vec::new();
                let mut candidates = connection.prepare_cached(&format!(
                    "SELECT {LINK_COLUMNS} FROM links WHERE target_url LIKE ?1 ESCAPE '\\'"
                ))?;
                for link in candidates.query_map([like_pattern(&entry)], link_from_row)? {
                    let link = link?;
                    if tinyurl_domain::target::stored_host(&link.target_url)
                        .is_some_and(|host| list.blocking(&host).is_some())
                    {
                        links.push(link);
                    }
                }
                Ok(links)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn prune_idempotency_keys(&self, limit: i64) -> Result<u64, WriterError> {
        let before = self.keys_since(SystemTime::now());
        self.db
            .run(move |connection| {
                let deleted = connection.execute(
                    "DELETE FROM link_idempotency WHERE (owner_key_id, key) IN (
                         SELECT owner_key_id, key FROM link_idempotency
                         WHERE created_at <= ?1 LIMIT ?2)",
                    (before, limit),
                )?;
                if deleted > 0 {
                    // Expired keys cost nothing: their pages leave the file
                    // (on files made with incremental auto-vacuum; older
                    // files reuse them for new rows instead).
                    // Each step frees one page: step to the end.
                    let mut vacuum = connection.prepare_cached("PRAGMA incremental_vacuum")?;
                    let mut steps = vacuum.query([])?;
                    while steps.next()?.is_some() {}
                }
                Ok(deleted)
            })
            .await
            .map(|deleted| u64::try_from(deleted).unwrap_or(u64::MAX))
            .map_err(WriterError::from_sqlite)
    }

    async fn blocked_host_entries(&self) -> Result<Vec<String>, WriterError> {
        self.db
            .run(|connection| {
                connection
                    .prepare_cached("SELECT entry FROM blocked_hosts ORDER BY entry")?
                    .query_map([], |row| row.get(0))?
                    .collect()
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn list(
        &self,
        owner: OwnerId,
        limit: i64,
        after: Option<(SystemTime, String)>,
    ) -> Result<Vec<StoredLink>, WriterError> {
        self.db
            .run(move |connection| match after {
                None => connection
                    .prepare_cached(&format!(
                        "SELECT {LINK_COLUMNS} FROM links WHERE owner_key_id = ?1 AND target_url IS NOT NULL
                             ORDER BY created_at DESC, code DESC LIMIT ?2"
                    ))?
                    .query_map((owner.0, limit), link_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>(),
                Some((created_at, code)) => connection
                    .prepare_cached(&format!(
                        "SELECT {LINK_COLUMNS} FROM links
                             WHERE owner_key_id = ?1 AND target_url IS NOT NULL
                                 AND created_at <= ?3 AND (created_at < ?3 OR code < ?4)
                             ORDER BY created_at DESC, code DESC LIMIT ?2"
                    ))?
                    .query_map((owner.0, limit, to_micros(created_at), code), link_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>(),
            })
            .await
            .map_err(WriterError::from_sqlite)
    }
}

/// Codes of live links, blocked or not as `blocked` says, whose target's
/// host (as stored: lowercase, punycode) `matches`; a `LIKE` on `entry`'s
/// host finds the candidates and the parsed host decides.
fn codes_to_host(
    transaction: &rusqlite::Transaction<'_>,
    entry: &str,
    blocked: bool,
    matches: impl Fn(&str) -> bool,
) -> rusqlite::Result<Vec<String>> {
    let mut candidates = transaction.prepare(
        "SELECT code, target_url FROM links
         WHERE blocked = ?2 AND target_url LIKE ?1 ESCAPE '\\'",
    )?;
    let rows = candidates.query_map((like_pattern(entry), blocked), |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut codes = Vec::new();
    for row in rows {
        let (code, target) = row?;
        if tinyurl_domain::target::stored_host(&target).is_some_and(|host| matches(&host)) {
            codes.push(code);
        }
    }
    Ok(codes)
}

/// Sets the operator's block of `codes` to `blocked`; returns the links it
/// changed.
fn set_blocked(
    transaction: &rusqlite::Transaction<'_>,
    codes: &[String],
    blocked: bool,
    now: i64,
) -> rusqlite::Result<Vec<StoredLink>> {
    let mut update = transaction.prepare(&format!(
        "UPDATE links SET blocked = ?2, updated_at = ?3
         WHERE code = ?1 AND blocked <> ?2 RETURNING {LINK_COLUMNS}"
    ))?;
    let mut changed = Vec::with_capacity(codes.len());
    for code in codes {
        if let Some(link) = update
            .query_row((code, blocked, now), link_from_row)
            .optional()?
        {
            changed.push(link);
        }
    }
    Ok(changed)
}
