//! SQLite plumbing for the embedded deployment (`tinyurl up`): the services of
//! one process share one database file in WAL mode, each through a small pool
//! of connections that run on blocking threads, every call bounded by a
//! timeout.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
pub use deadpool_sqlite::rusqlite;
use deadpool_sqlite::{Hook, HookError, Runtime, Timeouts};

/// The URL scheme that selects the embedded store: `sqlite:PATH` or
/// `sqlite://PATH` (relative paths are relative to the working directory).
pub fn path_from_url(url: &str) -> Option<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Why a call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// No connection, a timeout, or the database stayed locked: retryable.
    #[error("{0}")]
    Unavailable(String),
    /// The statement failed.
    #[error(transparent)]
    Query(#[from] rusqlite::Error),
}

#[derive(Clone)]
pub struct Sqlite {
    pool: deadpool_sqlite::Pool,
    timeout: Duration,
}

impl Sqlite {
    /// Opens (creating it if needed) the database at `path`. Each connection
    /// waits up to `timeout` for a lock held by another connection before its
    /// statement fails, and commits durably (`synchronous = FULL`): a write
    /// reported done survives a crash of the machine.
    pub async fn open(path: &Path, size: usize, timeout: Duration) -> anyhow::Result<Self> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let busy_timeout = timeout;
        let pool = deadpool_sqlite::Config::new(path)
            .builder(Runtime::Tokio1)
            .context("invalid SQLite pool configuration")?
            .max_size(size.max(1))
            .timeouts(Timeouts {
                wait: Some(timeout),
                create: Some(timeout),
                recycle: Some(timeout),
            })
            .runtime(Runtime::Tokio1)
            .post_create(Hook::async_fn(move |connection, _| {
                Box::pin(async move {
                    connection
                        .interact(move |connection| {
                            connection.busy_timeout(busy_timeout)?;
                            // Incremental auto-vacuum (effective only on
                            // a new, empty file) lets a store hand pages it
                            // freed back to the file system.
                            connection.execute_batch(
                                "PRAGMA auto_vacuum = INCREMENTAL;
                                 PRAGMA journal_mode = WAL;
                                 PRAGMA synchronous = FULL;
                                 PRAGMA foreign_keys = ON;",
                            )
                        })
                        .await
                        .map_err(|error| HookError::message(error.to_string()))?
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .context("cannot build the SQLite pool")?;
        let sqlite = Self { pool, timeout };
        sqlite
            .run(|connection| connection.query_row("SELECT 1", [], |_| Ok(())))
            .await
            .with_context(|| format!("cannot open the SQLite database {}", path.display()))?;
        Ok(sqlite)
    }

    /// Runs `work` on a pooled connection (on a blocking thread), bounded by
    /// the timeout.
    pub async fn run<T, F>(&self, work: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let call = async {
            let connection = self
                .pool
                .get()
                .await
                .map_err(|error| SqliteError::Unavailable(error.to_string()))?;
            connection
                .interact(work)
                .await
                .map_err(|error| SqliteError::Unavailable(error.to_string()))?
                .map_err(SqliteError::from)
        };
        // The statement keeps running on its thread after a timeout; SQLite's
        // busy timeout bounds how long it can wait for a lock.
        tokio::time::timeout(self.timeout * 2, call)
            .await
            .map_err(|_| {
                SqliteError::Unavailable(format!(
                    "the embedded store did not answer within {} ms",
                    (self.timeout * 2).as_millis()
                ))
            })?
            .map_err(|error| match error {
                SqliteError::Query(rusqlite::Error::SqliteFailure(failure, message))
                    if failure.code == rusqlite::ErrorCode::DatabaseBusy
                        || failure.code == rusqlite::ErrorCode::DatabaseLocked =>
                {
                    SqliteError::Unavailable(message.unwrap_or_else(|| failure.to_string()))
                }
                other => other,
            })
    }

    /// Applies pending migrations; concurrent callers are serialised by
    /// SQLite's write lock.
    pub async fn migrate(
        &self,
        history_table: &'static str,
        mut migrations: refinery::Runner,
    ) -> anyhow::Result<()> {
        let report = self
            .run(move |connection| {
                Ok(migrations
                    .set_migration_table_name(history_table)
                    .run(connection))
            })
            .await
            .context("cannot reach the embedded store to migrate")?
            .context("migration failed")?;
        for migration in report.applied_migrations() {
            tracing::info!(migration = %migration, "applied migration");
        }
        Ok(())
    }
}

/// Timestamps are stored as microseconds since the Unix epoch.
pub fn to_micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

pub fn from_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            path_from_url("sqlite:./tinyurl.db"),
            Some(PathBuf::from("./tinyurl.db"))
        );
        assert_eq!(
            path_from_url("sqlite:///var/lib/t.db"),
            Some(PathBuf::from("/var/lib/t.db"))
        );
        assert_eq!(path_from_url("sqlite:"), None);
        assert_eq!(path_from_url("postgres://host/db"), None);
    }

    #[test]
    fn micros_round_trip() {
        let now = SystemTime::now();
        let back = from_micros(to_micros(now));
        assert!(now.duration_since(back).unwrap_or_default() < Duration::from_micros(1));
        assert_eq!(from_micros(to_micros(UNIX_EPOCH)), UNIX_EPOCH);
    }
}
