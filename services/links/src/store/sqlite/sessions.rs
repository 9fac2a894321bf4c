//! Console sessions in the embedded store, as the Postgres store keeps them.

use super::*;
use crate::sessions::{SessionHash, StoredSession};
use crate::store::SessionStore;

#[async_trait::async_trait]
impl SessionStore for SqliteLinkStore {
    async fn create_session(
        &self,
        id: &SessionHash,
        key: &KeyHash,
        now: SystemTime,
    ) -> Result<(), WriterError> {
        let (id, key, now) = (id.0, key.0, to_micros(now));
        self.db
            .run(move |connection| {
                connection.execute(
                    "INSERT INTO console_sessions (id_hash, key_hash, created_at, last_seen_at)
                     VALUES (?1, ?2, ?3, ?3)",
                    (id.as_slice(), key.as_slice(), now),
                )
            })
            .await
            .map(drop)
            .map_err(WriterError::from_sqlite)
    }

    async fn session(&self, id: &SessionHash) -> Result<Option<StoredSession>, WriterError> {
        let id = id.0;
        let row = self
            .db
            .run(move |connection| {
                connection
                    .query_row(
                        "SELECT key_hash, created_at, last_seen_at FROM console_sessions
                         WHERE id_hash = ?1",
                        [id.as_slice()],
                        |row| {
                            Ok((
                                row.get::<_, Vec<u8>>(0)?,
                                row.get::<_, i64>(1)?,
                                row.get::<_, i64>(2)?,
                            ))
                        },
                    )
                    .optional()
            })
            .await
            .map_err(WriterError::from_sqlite)?;
        row.map(|(key, created_at, last_seen_at)| {
            Ok(StoredSession {
                key: key_hash(&key)?,
                created_at: from_micros(created_at),
                last_seen_at: from_micros(last_seen_at),
            })
        })
        .transpose()
    }

    async fn touch_session(&self, id: &SessionHash, now: SystemTime) -> Result<(), WriterError> {
        let (id, now) = (id.0, to_micros(now));
        self.db
            .run(move |connection| {
                connection.execute(
                    "UPDATE console_sessions SET last_seen_at = ?2
                     WHERE id_hash = ?1 AND last_seen_at < ?2",
                    (id.as_slice(), now),
                )
            })
            .await
            .map(drop)
            .map_err(WriterError::from_sqlite)
    }

    async fn end_session(&self, id: &SessionHash) -> Result<bool, WriterError> {
        let id = id.0;
        self.db
            .run(move |connection| {
                connection.execute(
                    "DELETE FROM console_sessions WHERE id_hash = ?1",
                    [id.as_slice()],
                )
            })
            .await
            .map(|ended| ended > 0)
            .map_err(WriterError::from_sqlite)
    }

    async fn prune_sessions(
        &self,
        idle_before: SystemTime,
        opened_before: SystemTime,
    ) -> Result<u64, WriterError> {
        let (idle_before, opened_before) = (to_micros(idle_before), to_micros(opened_before));
        self.db
            .run(move |connection| {
                connection.execute(
                    "DELETE FROM console_sessions WHERE last_seen_at < ?1 OR created_at < ?2",
                    (idle_before, opened_before),
                )
            })
            .await
            .map(|pruned| pruned as u64)
            .map_err(WriterError::from_sqlite)
    }
}
