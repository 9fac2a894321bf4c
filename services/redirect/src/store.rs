//! Reading links from the database: the [`LinkSource`] trait and its two
//! implementations. Postgres: read replicas round-robin, skipping the ones a
//! background probe has found unhealthy, and the primary when no replica is
//! usable. SQLite (the embedded deployment): the one database file, which is
//! its own primary. Redirect never writes the database.

mod sqlite;

pub use self::sqlite::SqliteLinkSource;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use secrecy::SecretString;
use tinyurl_domain::CachedLink;

// A deleted link's tombstone (no target) reads as missing. The row packs
// its booleans into `flags`: 1 forward the query string, 2 disabled by its
// owner, 8 blocked by an operator; either of the last two stops it, as the
// writer's cached record says.
// Bit 16 says the link has options (UTM fields, rules, a cap) in
// `link_options`; a plain link's row says it has none, and the subquery is
// not run for it (an init plan runs when its value is first needed).
// Bit 32 says a password protects it: its target is not read at all (it is
// in the options, sealed), so it never reaches this process in clear.
const FIND_SQL: &str = "SELECT CASE WHEN flags & 32 = 0 THEN target_url ELSE '-' END, \
                        redirect_status, flags & 1 <> 0, expires_at, \
                        flags & 10 = 0, \
                        CASE WHEN flags & 16 <> 0 \
                             THEN (SELECT options FROM link_options WHERE code = $1) END \
                        FROM links WHERE code = $1 AND target_url IS NOT NULL";

/// How often an unhealthy database is probed.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Which kind of database answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Replica,
    Primary,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Self::Replica => "replica",
            Self::Primary => "primary",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no database is reachable")]
    Unavailable,
}

struct Database {
    name: String,
    source: Source,
    pool: Pool,
    healthy: AtomicBool,
}

/// Where links are read from. Every call is bounded by the database timeout.
#[async_trait::async_trait]
pub trait LinkSource: Send + Sync + 'static {
    /// Looks `code` up where it is cheapest and says which kind of database
    /// answered: a replica's "not found" may only mean it is behind.
    async fn find(&self, code: &str) -> Result<(Option<CachedLink>, Source), StoreError>;

    /// Looks `code` up on the primary (one bounded try even when the probe
    /// has it out of rotation).
    async fn find_on_primary(&self, code: &str) -> Result<Option<CachedLink>, StoreError>;

    fn has_primary(&self) -> bool;

    /// The registered short domains and where each sends codes it does not
    /// have (`None`: the built-in 404).
    async fn domains(&self) -> Result<Vec<(String, Option<String>)>, StoreError>;

    /// Whether some database can answer: the readiness of this process.
    fn any_healthy(&self) -> bool;

    /// Watches the databases until stopping begins, putting unhealthy ones
    /// back in rotation once they answer; live traffic never pays for a probe.
    async fn probe_unhealthy(self: Arc<Self>, stopping: tinyurl_runtime::Stopping);
}

pub struct PostgresLinkSource {
    replicas: Vec<Arc<Database>>,
    primary: Option<Arc<Database>>,
    next_replica: AtomicUsize,
    timeout: Duration,
    queries: [metrics::Counter; 2],
    errors: [metrics::Counter; 2],
}

impl PostgresLinkSource {
    pub fn connect(
        replica_urls: &[SecretString],
        primary_url: Option<&SecretString>,
        pool_size: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let open = |url: &SecretString, name: String, source: Source| -> anyhow::Result<_> {
            let config =
                tinyurl_runtime::postgres::connection_config(url, "tinyurl-redirect", timeout)?;
            let pool = tinyurl_runtime::postgres::pool(config, pool_size, timeout, None)?;
            Ok(Arc::new(Database {
                name,
                source,
                pool,
                healthy: AtomicBool::new(true),
            }))
        };
        let replicas = replica_urls
            .iter()
            .enumerate()
            .map(|(index, url)| open(url, format!("replica-{index}"), Source::Replica))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let primary = primary_url
            .map(|url| open(url, "primary".to_owned(), Source::Primary))
            .transpose()?;
        let counter =
            |name: &'static str, source: Source| metrics::counter!(name, "db" => source.label());
        Ok(Self {
            replicas,
            primary,
            next_replica: AtomicUsize::new(0),
            timeout,
            queries: [
                counter("redirect_db_queries_total", Source::Replica),
                counter("redirect_db_queries_total", Source::Primary),
            ],
            errors: [
                counter("redirect_db_errors_total", Source::Replica),
                counter("redirect_db_errors_total", Source::Primary),
            ],
        })
    }

    async fn find_on(&self, db: &Database, code: &str) -> Result<Option<CachedLink>, StoreError> {
        let slot = usize::from(db.source == Source::Primary);
        self.queries[slot].increment(1);
        let query = async {
            let client = db.pool.get().await.map_err(|error| error.to_string())?;
            let statement = client
                .prepare_cached(FIND_SQL)
                .await
                .map_err(|error| error.to_string())?;
            client
                .query_opt(&statement, &[&code])
                .await
                .map_err(|error| error.to_string())
        };
        let row = match tokio::time::timeout(self.timeout, query).await {
            Ok(Ok(row)) => row,
            Ok(Err(error)) => return Err(self.mark_down(db, slot, &error)),
            Err(_) => return Err(self.mark_down(db, slot, "query timed out")),
        };
        let Some(row) = row else { return Ok(None) };
        let record = (|| -> Result<CachedLink, String> {
            let get_error = |error: tokio_postgres::Error| error.to_string();
            let status: i16 = row.try_get(1).map_err(get_error)?;
            let options: Option<&str> = row.try_get(5).map_err(get_error)?;
            Ok(CachedLink {
                target_url: row.try_get(0).map_err(get_error)?,
                // The schema's CHECK allows only the four statuses.
                redirect_status: tinyurl_domain::RedirectStatus::from_code(status)
                    .unwrap_or_default(),
                forward_query: row.try_get(2).map_err(get_error)?,
                expires_at: row.try_get::<_, Option<SystemTime>>(3).map_err(get_error)?,
                enabled: row.try_get(4).map_err(get_error)?,
                options: tinyurl_domain::LinkOptions::from_stored(options)?,
            })
        })();
        record.map(Some).map_err(|error| {
            tracing::error!(db = %db.name, %error, "unexpected links row");
            self.errors[slot].increment(1);
            StoreError::Unavailable
        })
    }

    fn mark_down(&self, db: &Database, slot: usize, error: &str) -> StoreError {
        self.errors[slot].increment(1);
        if db.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(db = %db.name, %error, "database unusable; probing it in the background");
        }
        StoreError::Unavailable
    }
}

#[async_trait::async_trait]
impl LinkSource for PostgresLinkSource {
    fn has_primary(&self) -> bool {
        self.primary.is_some()
    }

    async fn find(&self, code: &str) -> Result<(Option<CachedLink>, Source), StoreError> {
        let count = self.replicas.len();
        if count > 0 {
            let start = self.next_replica.fetch_add(1, Ordering::Relaxed);
            for offset in 0..count {
                let replica = &self.replicas[(start + offset) % count];
                if !replica.healthy.load(Ordering::Relaxed) {
                    continue;
                }
                if let Ok(found) = self.find_on(replica, code).await {
                    return Ok((found, Source::Replica));
                }
            }
        }
        if let Ok(found) = self.find_on_primary(code).await {
            return Ok((found, Source::Primary));
        }
        // Last resort before a 503: a replica taken out of rotation may well
        // be back (the probe runs every 500 ms); one bounded try each.
        for replica in &self.replicas {
            if !replica.healthy.load(Ordering::Relaxed)
                && let Ok(found) = self.find_on(replica, code).await
            {
                replica.healthy.store(true, Ordering::Relaxed);
                return Ok((found, Source::Replica));
            }
        }
        Err(StoreError::Unavailable)
    }

    async fn find_on_primary(&self, code: &str) -> Result<Option<CachedLink>, StoreError> {
        let Some(primary) = &self.primary else {
            return Err(StoreError::Unavailable);
        };
        // Tried even while the probe has it out of rotation, bounded like
        // any query: the primary is the last word on a link the replicas do
        // not have yet, and skipping it answers 404 for a link that exists
        // until the next probe (a refused connection fails at once).
        let found = self.find_on(primary, code).await?;
        if !primary.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!(db = %primary.name, "database usable again");
        }
        Ok(found)
    }
    async fn domains(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        // A replica is as good as the primary for a list that changes
        // rarely; the first that answers.
        for db in self.replicas.iter().chain(self.primary.iter()) {
            if !db.healthy.load(Ordering::Relaxed) {
                continue;
            }
            let query = async {
                let client = db.pool.get().await.ok()?;
                client
                    .query("SELECT host, not_found_url FROM domains", &[])
                    .await
                    .ok()
            };
            if let Ok(Some(rows)) = tokio::time::timeout(self.timeout, query).await {
                return rows
                    .iter()
                    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                    .collect::<Result<_, tokio_postgres::Error>>()
                    .map_err(|error| {
                        tracing::error!(db = %db.name, %error, "unexpected domains row");
                        StoreError::Unavailable
                    });
            }
        }
        Err(StoreError::Unavailable)
    }

    fn any_healthy(&self) -> bool {
        self.replicas
            .iter()
            .chain(self.primary.iter())
            .any(|db| db.healthy.load(Ordering::Relaxed))
    }

    async fn probe_unhealthy(self: Arc<Self>, stopping: tinyurl_runtime::Stopping) {
        stopping
            .every(PROBE_INTERVAL, || async {
                for db in self.replicas.iter().chain(self.primary.iter()) {
                    let healthy = db.healthy.load(Ordering::Relaxed);
                    metrics::gauge!("redirect_db_healthy", "db" => db.name.clone())
                        .set(f64::from(u8::from(healthy)));
                    if healthy {
                        continue;
                    }
                    let probe = async {
                        let client = db.pool.get().await.ok()?;
                        client.simple_query("SELECT 1").await.ok()
                    };
                    if let Ok(Some(_)) = tokio::time::timeout(self.timeout, probe).await {
                        tracing::info!(db = %db.name, "database usable again");
                        db.healthy.store(true, Ordering::Relaxed);
                    }
                }
            })
            .await;
    }
}
