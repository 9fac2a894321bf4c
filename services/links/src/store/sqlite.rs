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
    ApiKeyInfo, LinkChanges, LinkOrder, LinkSearch, LinkState, LinkStore, NewLink, OwnerOverview,
    Replay, SearchCursor, StoredLink, fingerprint_from, key_hash, lifted_and_remaining,
    like_pattern, parse_scope, rate_column, stored_rate,
};
use crate::auth::{Caller, KeyHash, OwnerId, Rate, Scope};
use crate::error::WriterError;
use tinyurl_domain::target::target_search_form;

mod domains;
mod hosts;
mod keys;
mod links;
mod sessions;
mod tags;
mod webhooks;

mod embedded {
    refinery::embed_migrations!("migrations-sqlite");
}

/// `updated_at` is NULL until the first change (migration V7).
const LINK_COLUMNS: &str = "code, target_url, redirect_status, forward_query, expires_at, enabled, is_alias, created_at, COALESCE(updated_at, created_at), blocked, COALESCE(owner_options, options)";

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
        tags: Vec::new(),
        options: {
            let stored: Option<String> = row.get(10)?;
            tinyurl_domain::LinkOptions::from_stored(stored.as_deref()).map_err(|reason| {
                rusqlite::Error::FromSqlConversionFailure(
                    10,
                    rusqlite::types::Type::Text,
                    reason.into(),
                )
            })?
        },
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
