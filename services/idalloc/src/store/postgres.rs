//! The Postgres lease store: the pool, migrations, the failover guard, and
//! the one statement that bumps a namespace's counter.

use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Pool};
use secrecy::SecretString;
use tinyurl_runtime::postgres;

use super::LeaseStore;
use crate::error::LeaseError;
use crate::lease::{Lease, LeaseRequest};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary constant that serialises concurrent migration runs of idalloc
/// replicas starting together (`pg_advisory_lock` key).
const MIGRATION_LOCK_KEY: i64 = 0x7469_6e79_6964_6131;
/// Where refinery records idalloc's applied migrations.
const HISTORY_TABLE: &str = "idalloc_schema_history";
/// Its role's privileges, applied after every migration run.
const GRANTS: &str = include_str!("grants.sql");

/// Bumps the namespace counter by `$2`, creating it on first use, and records
/// the lease under its request id (when given) in the same statement, so a
/// lease and its idempotency record commit or fail together.
pub const LEASE_SQL: &str = "
WITH bumped AS (
    INSERT INTO idalloc_namespaces AS ns (namespace, next_id) VALUES ($1, $2)
    ON CONFLICT (namespace) DO UPDATE
        SET next_id = ns.next_id + EXCLUDED.next_id, updated_at = now()
    RETURNING next_id - $2 AS start_id, next_id AS end_id
), recorded AS (
    INSERT INTO idalloc_leases (request_id, namespace, start_id, end_id)
    SELECT $3, $1, start_id, end_id FROM bumped WHERE $3::text IS NOT NULL
)
SELECT start_id, end_id FROM bumped";

const FIND_LEASE_SQL: &str =
    "SELECT namespace, start_id, end_id FROM idalloc_leases WHERE request_id = $1";

/// A handle to the lease store; cheap to clone.
#[derive(Clone)]
pub struct PostgresLeaseStore {
    pool: Pool,
    pg_config: tokio_postgres::Config,
    timeout: Duration,
}

impl PostgresLeaseStore {
    /// Builds the pool. Connections are made lazily; nothing is contacted here.
    ///
    /// Every new connection first runs the failover guard (see
    /// `migrations/V2__failover_guard.sql`) with `failover_skip`, so no lease is
    /// served on a newly promoted primary before namespaces have skipped past
    /// whatever the old primary may have handed out unreplicated.
    pub fn connect(
        database_url: &SecretString,
        pool_size: usize,
        timeout: Duration,
        failover_skip: i64,
    ) -> anyhow::Result<Self> {
        let pg_config = postgres::connection_config(database_url, "tinyurl-idalloc", timeout)?;
        let guard = Hook::async_fn(move |client, _| {
            Box::pin(async move {
                guard_timeline(client, failover_skip)
                    .await
                    .map_err(HookError::Backend)
            })
        });
        let pool = postgres::pool(pg_config.clone(), pool_size, timeout, Some(guard))?;
        Ok(Self {
            pool,
            pg_config,
            timeout,
        })
    }

    /// Applies pending migrations, one replica at a time, on a connection of
    /// its own (pooled connections need the schema to exist already).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        postgres::migrate(
            &self.pg_config,
            self.timeout,
            MIGRATION_LOCK_KEY,
            HISTORY_TABLE,
            embedded::migrations::runner(),
            GRANTS,
        )
        .await
    }

    /// Fails unless every migration this build embeds is applied (for an
    /// idalloc whose role may not migrate).
    pub async fn check_migrated(&self) -> anyhow::Result<()> {
        postgres::check_migrated(
            &self.pg_config,
            self.timeout,
            HISTORY_TABLE,
            &embedded::migrations::runner(),
            "tinyurl-idalloc",
        )
        .await
    }

    async fn lease_unbounded(&self, request: &LeaseRequest) -> Result<Lease, LeaseError> {
        let client = self.pool.get().await.map_err(LeaseError::from_pool)?;
        let request_id = request.request_id.as_ref().map(|id| id.as_str());

        if let Some(request_id) = request_id
            && let Some(lease) = find_replay(&client, request_id, request).await?
        {
            return Ok(lease);
        }

        let statement = client
            .prepare_cached(LEASE_SQL)
            .await
            .map_err(LeaseError::from_postgres)?;
        match client
            .query_one(
                &statement,
                &[&request.namespace.as_str(), &request.count, &request_id],
            )
            .await
        {
            Ok(row) => Ok(Lease {
                start: row.try_get(0).map_err(LeaseError::from_postgres)?,
                end: row.try_get(1).map_err(LeaseError::from_postgres)?,
                replayed: false,
            }),
            // A concurrent call with the same request id committed first; our
            // statement rolled back whole, so no IDs were burned.
            Err(error) if is_unique_violation(&error) => {
                match request_id {
                    Some(request_id) => find_replay(&client, request_id, request)
                        .await?
                        .ok_or_else(|| {
                            LeaseError::Unexpected(anyhow::anyhow!(
                                "request id conflicted but its lease is missing"
                            ))
                        }),
                    None => Err(LeaseError::from_postgres(error)),
                }
            }
            Err(error) => Err(LeaseError::from_postgres(error)),
        }
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, LeaseError>>,
    ) -> Result<T, LeaseError> {
        // Dropping a tokio-postgres future mid-query is safe: the connection
        // task discards the late response and the client stays usable.
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| LeaseError::Timeout(self.timeout))?
    }
}

#[async_trait::async_trait]
impl LeaseStore for PostgresLeaseStore {
    async fn ping(&self) -> Result<(), LeaseError> {
        self.bounded(async {
            let client = self.pool.get().await.map_err(LeaseError::from_pool)?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(LeaseError::from_postgres)?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip(self, request), fields(namespace = request.namespace.as_str(), count = request.count))]
    async fn lease(&self, request: &LeaseRequest) -> Result<Lease, LeaseError> {
        self.bounded(self.lease_unbounded(request)).await
    }

    async fn purge_leases_older_than(&self, retention: Duration) -> Result<u64, LeaseError> {
        self.bounded(async {
            let client = self.pool.get().await.map_err(LeaseError::from_pool)?;
            let seconds = retention.as_secs_f64();
            client
                .execute(
                    "DELETE FROM idalloc_leases WHERE created_at < now() - make_interval(secs => $1)",
                    &[&seconds],
                )
                .await
                .map_err(LeaseError::from_postgres)
        })
        .await
    }
}

async fn find_replay(
    client: &deadpool_postgres::Object,
    request_id: &str,
    request: &LeaseRequest,
) -> Result<Option<Lease>, LeaseError> {
    let statement = client
        .prepare_cached(FIND_LEASE_SQL)
        .await
        .map_err(LeaseError::from_postgres)?;
    let Some(row) = client
        .query_opt(&statement, &[&request_id])
        .await
        .map_err(LeaseError::from_postgres)?
    else {
        return Ok(None);
    };
    let namespace: String = row.try_get(0).map_err(LeaseError::from_postgres)?;
    let start: i64 = row.try_get(1).map_err(LeaseError::from_postgres)?;
    let end: i64 = row.try_get(2).map_err(LeaseError::from_postgres)?;
    if namespace != request.namespace.as_str() || end - start != request.count {
        return Err(LeaseError::invalid(
            "request_id",
            format!(
                "request_id was already used for a lease of {} IDs in namespace {namespace:?}; \
                 a retry must repeat the same namespace and count",
                end - start
            ),
        ));
    }
    Ok(Some(Lease {
        start,
        end,
        replayed: true,
    }))
}

/// Runs the failover guard on a fresh connection; logs when it skipped ahead.
async fn guard_timeline(
    client: &tokio_postgres::Client,
    failover_skip: i64,
) -> Result<(), tokio_postgres::Error> {
    let skipped: bool = client
        .query_one("SELECT idalloc_guard_timeline($1)", &[&failover_skip])
        .await?
        .get(0);
    if skipped {
        tracing::warn!(
            skip = failover_skip,
            "postgres is on a new timeline (failover): every namespace skipped ahead"
        );
        metrics::counter!("idalloc_failover_skips_total").increment(1);
    }
    Ok(())
}

fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}
