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
    ApiKeyInfo, LinkChanges, LinkOrder, LinkSearch, LinkState, LinkStore, NewLink, OwnerOverview,
    Replay, SearchCursor, StoredLink, fingerprint_from, key_hash, lifted_and_remaining,
    like_pattern, parse_scope, prefix_end, rate_column, stored_options, stored_rate, stored_status,
};
use crate::auth::{Caller, KeyHash, OwnerId, Rate, Scope};
use crate::error::WriterError;
use tinyurl_domain::RedirectStatus;
use tinyurl_domain::target::{search_form_host, target_search_form};

mod domains;
mod hosts;
mod keys;
mod links;
mod online;
mod sessions;
mod tags;
mod webhooks;

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
/// 4 alias, 8 blocked by an operator, 16 has options, 32 protected by a
/// password) and leaves `updated_at` NULL until the first change
/// (migrations V7, V8, V16, V17). The options are the owner's form.
const LINK_COLUMNS: &str = "code, target_url, redirect_status, flags & 1 <> 0, expires_at, \
                            flags & 2 = 0, flags & 4 <> 0, created_at, \
                            COALESCE(updated_at, created_at), flags & 8 <> 0, \
                            CASE WHEN flags & 16 <> 0 THEN \
                                (SELECT COALESCE(o.owner_options, o.options) FROM link_options o \
                                 WHERE o.code = links.code) END";

/// The bit of `flags` that says the link has a row in `link_options`.
const HAS_OPTIONS: i16 = 16;
/// The bit of `flags` that says the link is protected by a password: the
/// redirect's read leaves its target out.
const PROTECTED: i16 = 32;

/// The option bits of `flags` for `options`.
fn option_flags(options: &tinyurl_domain::LinkOptions) -> i16 {
    match (options.is_empty(), options.is_protected()) {
        (true, _) => 0,
        (false, false) => HAS_OPTIONS,
        (false, true) => HAS_OPTIONS | PROTECTED,
    }
}

/// The `flags` of a new link (enabled).
fn new_flags(link: &NewLink) -> i16 {
    i16::from(link.forward_query) | (i16::from(link.is_alias) << 2) | option_flags(&link.options)
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
                tags: Vec::new(),
                options: tinyurl_domain::LinkOptions::default(),
            })
        };
        let mut link = read().map_err(WriterError::from_postgres)?;
        let options: Option<&str> = row
            .try_get(offset + 10)
            .map_err(WriterError::from_postgres)?;
        link.options = stored_options(options)?;
        Ok(link)
    }
}

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
