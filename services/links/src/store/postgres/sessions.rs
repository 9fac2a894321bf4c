//! Console sessions in the Postgres store: every writer reads the same
//! rows, so a sign-out anywhere ends the session everywhere.

use super::*;
use crate::sessions::{SessionHash, StoredSession};
use crate::store::SessionStore;

#[async_trait::async_trait]
impl SessionStore for PostgresLinkStore {
    async fn create_session(
        &self,
        id: &SessionHash,
        key: &KeyHash,
        now: SystemTime,
    ) -> Result<(), WriterError> {
        self.bounded(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO console_sessions (id_hash, key_hash, created_at, last_seen_at)
                     VALUES ($1, $2, $3, $3)",
                    &[&id.0.as_slice(), &key.0.as_slice(), &now],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id: &SessionHash) -> Result<Option<StoredSession>, WriterError> {
        self.bounded(async {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT key_hash, created_at, last_seen_at FROM console_sessions
                     WHERE id_hash = $1",
                    &[&id.0.as_slice()],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            row.map(|row| {
                Ok(StoredSession {
                    key: key_hash(row.try_get(0).map_err(WriterError::from_postgres)?)?,
                    created_at: row.try_get(1).map_err(WriterError::from_postgres)?,
                    last_seen_at: row.try_get(2).map_err(WriterError::from_postgres)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn touch_session(&self, id: &SessionHash, now: SystemTime) -> Result<(), WriterError> {
        self.bounded(async {
            self.client()
                .await?
                .execute(
                    "UPDATE console_sessions SET last_seen_at = $2
                     WHERE id_hash = $1 AND last_seen_at < $2",
                    &[&id.0.as_slice(), &now],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(())
        })
        .await
    }

    async fn end_session(&self, id: &SessionHash) -> Result<bool, WriterError> {
        self.bounded(async {
            let ended = self
                .client()
                .await?
                .execute(
                    "DELETE FROM console_sessions WHERE id_hash = $1",
                    &[&id.0.as_slice()],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(ended > 0)
        })
        .await
    }

    async fn prune_sessions(
        &self,
        idle_before: SystemTime,
        opened_before: SystemTime,
    ) -> Result<u64, WriterError> {
        self.bounded(async {
            self.client()
                .await?
                .execute(
                    "DELETE FROM console_sessions WHERE last_seen_at < $1 OR created_at < $2",
                    &[&idle_before, &opened_before],
                )
                .await
                .map_err(WriterError::from_postgres)
        })
        .await
    }
}
