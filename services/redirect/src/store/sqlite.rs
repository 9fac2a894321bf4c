//! Reading links from the embedded store's SQLite file (`tinyurl up`). There
//! are no replicas: every answer is the primary's, so a miss is definitive.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tinyurl_domain::CachedLink;
use tinyurl_runtime::sqlite::rusqlite;
use tinyurl_runtime::sqlite::rusqlite::OptionalExtension as _;
use tinyurl_runtime::sqlite::{Sqlite, from_micros};

use super::{LinkSource, PROBE_INTERVAL, Source, StoreError};

// A deleted link's tombstone (no target) reads as missing; a link disabled
// by its owner or blocked by an operator does not redirect.
const FIND_SQL: &str = "SELECT CASE WHEN owner_options IS NULL THEN target_url ELSE '-' END, \
                        redirect_status, forward_query, expires_at, \
                        enabled AND NOT blocked, options \
                        FROM links WHERE code = ?1 AND target_url IS NOT NULL";

pub struct SqliteLinkSource {
    db: Sqlite,
    healthy: AtomicBool,
    queries: metrics::Counter,
    errors: metrics::Counter,
}

impl SqliteLinkSource {
    /// Opens the database file at `path`; the writer creates and migrates it.
    pub async fn open(path: &Path, pool_size: usize, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            db: Sqlite::open(path, pool_size, timeout).await?,
            healthy: AtomicBool::new(true),
            queries: metrics::counter!("redirect_db_queries_total", "db" => Source::Primary.label()),
            errors: metrics::counter!("redirect_db_errors_total", "db" => Source::Primary.label()),
        })
    }
}

#[async_trait::async_trait]
impl LinkSource for SqliteLinkSource {
    async fn find(&self, code: &str) -> Result<(Option<CachedLink>, Source), StoreError> {
        self.find_on_primary(code)
            .await
            .map(|found| (found, Source::Primary))
    }

    async fn find_on_primary(&self, code: &str) -> Result<Option<CachedLink>, StoreError> {
        self.queries.increment(1);
        let code = code.to_owned();
        let found = self
            .db
            .run(move |connection| {
                connection
                    .prepare_cached(FIND_SQL)?
                    .query_row([code], |row| {
                        let status: i64 = row.get(1)?;
                        let options: Option<String> = row.get(5)?;
                        let options = tinyurl_domain::LinkOptions::from_stored(options.as_deref())
                            .map_err(|reason| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    5,
                                    rusqlite::types::Type::Text,
                                    reason.into(),
                                )
                            })?;
                        Ok(CachedLink {
                            target_url: row.get(0)?,
                            // The schema's CHECK allows only the four statuses.
                            redirect_status: tinyurl_domain::RedirectStatus::from_code(status)
                                .unwrap_or_default(),
                            forward_query: row.get(2)?,
                            expires_at: row.get::<_, Option<i64>>(3)?.map(from_micros),
                            enabled: row.get(4)?,
                            options,
                        })
                    })
                    .optional()
            })
            .await;
        match found {
            Ok(found) => {
                self.healthy.store(true, Ordering::Relaxed);
                Ok(found)
            }
            Err(error) => {
                self.errors.increment(1);
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%error, "embedded store unusable");
                }
                Err(StoreError::Unavailable)
            }
        }
    }

    fn has_primary(&self) -> bool {
        true
    }

    async fn domains(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        self.db
            .run(|connection| {
                let mut statement =
                    connection.prepare_cached("SELECT host, not_found_url FROM domains")?;
                let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
                rows.collect()
            })
            .await
            .map_err(|_| StoreError::Unavailable)
    }

    fn any_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    async fn probe_unhealthy(self: Arc<Self>, stopping: tinyurl_runtime::Stopping) {
        stopping
            .every(PROBE_INTERVAL, || async {
                if !self.healthy.load(Ordering::Relaxed)
                    && self
                        .db
                        .run(|connection| connection.query_row("SELECT 1", [], |_| Ok(())))
                        .await
                        .is_ok()
                {
                    tracing::info!("embedded store usable again");
                    self.healthy.store(true, Ordering::Relaxed);
                }
            })
            .await;
    }
}
