//! Where leases are recorded: the [`LeaseStore`] trait and its two
//! implementations, Postgres (the split deployment) and SQLite (the embedded
//! one), chosen by the scheme of `TINYURL_DATABASE_URL`. Both pass the same
//! conformance suite (`tests/system/conformance.rs`).

mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

pub use self::postgres::{LEASE_SQL, PostgresLeaseStore};
pub use self::sqlite::SqliteLeaseStore;
use crate::error::LeaseError;
use crate::lease::{Lease, LeaseRequest};

/// Durable, disjoint ID ranges. Every method is bounded by the store's
/// timeout.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Whether the store answers a trivial query.
    async fn ping(&self) -> Result<(), LeaseError>;

    /// Leases `request.count` IDs of the namespace, never handed out before;
    /// a repeated request id replays its earlier range (and is refused when
    /// its namespace or count differ).
    async fn lease(&self, request: &LeaseRequest) -> Result<Lease, LeaseError>;

    /// Forgets request ids older than `retention`; returns how many.
    async fn purge_leases_older_than(&self, retention: Duration) -> Result<u64, LeaseError>;
}

/// Opens the store `database_url` names (`sqlite:PATH` for the embedded
/// store, a Postgres URL otherwise) and migrates it, or with `migrate`
/// false (a role that may not change the schema) checks that it is migrated.
pub async fn open(
    database_url: &SecretString,
    pool_size: usize,
    timeout: Duration,
    failover_skip: i64,
    migrate: bool,
) -> anyhow::Result<Arc<dyn LeaseStore>> {
    if let Some(path) = tinyurl_runtime::sqlite::path_from_url(database_url.expose_secret()) {
        return Ok(Arc::new(SqliteLeaseStore::open(&path, timeout).await?));
    }
    let store = PostgresLeaseStore::connect(database_url, pool_size, timeout, failover_skip)?;
    if migrate {
        store.migrate().await?;
    } else {
        store.check_migrated().await?;
    }
    Ok(Arc::new(store))
}
