//! The embedded lease store (`tinyurl up`): the bump and its idempotency
//! record in one `BEGIN IMMEDIATE` transaction, so concurrent leases
//! serialise on SQLite's write lock and never overlap.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tinyurl_runtime::sqlite::rusqlite::{OptionalExtension as _, TransactionBehavior};
use tinyurl_runtime::sqlite::{Sqlite, SqliteError, to_micros};

use super::LeaseStore;
use crate::error::LeaseError;
use crate::lease::{Lease, LeaseRequest};

mod embedded {
    refinery::embed_migrations!("migrations-sqlite");
}

const POOL_SIZE: usize = 2;

#[derive(Clone)]
pub struct SqliteLeaseStore {
    db: Sqlite,
}

impl SqliteLeaseStore {
    /// Opens and migrates the database file at `path`.
    pub async fn open(path: &Path, timeout: Duration) -> anyhow::Result<Self> {
        let db = Sqlite::open(path, POOL_SIZE, timeout).await?;
        db.migrate("idalloc_schema_history", embedded::migrations::runner())
            .await?;
        Ok(Self { db })
    }
}

/// What a transaction found: a fresh lease, a replay, or a replay whose
/// namespace or count differ from the request.
enum Outcome {
    Leased(Lease),
    Mismatch { namespace: String, count: i64 },
}

fn from_sqlite(error: SqliteError) -> LeaseError {
    match error {
        SqliteError::Unavailable(reason) => LeaseError::Unavailable(reason),
        SqliteError::Query(error) => {
            LeaseError::Unexpected(anyhow::Error::new(error).context("sqlite query failed"))
        }
    }
}

#[async_trait::async_trait]
impl LeaseStore for SqliteLeaseStore {
    async fn ping(&self) -> Result<(), LeaseError> {
        self.db
            .run(|connection| connection.query_row("SELECT 1", [], |_| Ok(())))
            .await
            .map_err(from_sqlite)
    }

    #[tracing::instrument(skip(self, request), fields(namespace = request.namespace.as_str(), count = request.count))]
    async fn lease(&self, request: &LeaseRequest) -> Result<Lease, LeaseError> {
        let namespace = request.namespace.as_str().to_owned();
        let count = request.count;
        let request_id = request.request_id.as_ref().map(|id| id.as_str().to_owned());
        let outcome = self
            .db
            .run(move |connection| {
                let now = to_micros(SystemTime::now());
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if let Some(request_id) = &request_id {
                    let earlier = transaction
                        .query_row(
                            "SELECT namespace, start_id, end_id FROM idalloc_leases WHERE request_id = ?1",
                            [request_id],
                            |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)),
                        )
                        .optional()?;
                    if let Some((earlier_namespace, start, end)) = earlier {
                        return Ok(if earlier_namespace == namespace && end - start == count {
                            Outcome::Leased(Lease { start, end, replayed: true })
                        } else {
                            Outcome::Mismatch { namespace: earlier_namespace, count: end - start }
                        });
                    }
                }
                let (start, end): (i64, i64) = transaction.query_row(
                    "INSERT INTO idalloc_namespaces (namespace, next_id, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?3)
                     ON CONFLICT (namespace) DO UPDATE
                         SET next_id = next_id + excluded.next_id, updated_at = excluded.updated_at
                     RETURNING next_id - ?2, next_id",
                    (&namespace, count, now),
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
                if let Some(request_id) = &request_id {
                    transaction.execute(
                        "INSERT INTO idalloc_leases (request_id, namespace, start_id, end_id, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        (request_id, &namespace, start, end, now),
                    )?;
                }
                transaction.commit()?;
                Ok(Outcome::Leased(Lease { start, end, replayed: false }))
            })
            .await
            .map_err(from_sqlite)?;
        match outcome {
            Outcome::Leased(lease) => Ok(lease),
            Outcome::Mismatch { namespace, count } => Err(LeaseError::invalid(
                "request_id",
                format!(
                    "request_id was already used for a lease of {count} IDs in namespace {namespace:?}; \
                     a retry must repeat the same namespace and count"
                ),
            )),
        }
    }

    async fn purge_leases_older_than(&self, retention: Duration) -> Result<u64, LeaseError> {
        let cutoff =
            to_micros(SystemTime::now()) - i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
        self.db
            .run(move |connection| {
                connection.execute("DELETE FROM idalloc_leases WHERE created_at < ?1", [cutoff])
            })
            .await
            .map(|purged| purged as u64)
            .map_err(from_sqlite)
    }
}
