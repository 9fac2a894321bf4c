//! Tags in the embedded store, as the Postgres store keeps them.

use super::*;
use crate::store::{TagStore, TagSummary};

/// A key's tags with their live links and the links' lifetime clicks;
/// `?2` NULL for all of them, a tag for that one.
const SUMMARY_SQL: &str = "
SELECT t.tag, count(*), COALESCE(sum(c.clicks), 0), COALESCE(sum(c.bot_clicks), 0)
FROM link_tags t LEFT JOIN click_totals c ON c.code = t.code
WHERE t.owner_key_id = ?1 AND (?2 IS NULL OR t.tag = ?2)
GROUP BY t.tag ORDER BY t.tag";

fn summary(row: &Row<'_>) -> rusqlite::Result<TagSummary> {
    Ok(TagSummary {
        tag: row.get(0)?,
        links: row.get(1)?,
        clicks: (row.get(2)?, row.get(3)?),
    })
}

#[async_trait::async_trait]
impl TagStore for SqliteLinkStore {
    async fn set_tags(
        &self,
        owner: OwnerId,
        code: &str,
        tags: &[String],
    ) -> Result<bool, WriterError> {
        let (code, tags) = (code.to_owned(), tags.to_vec());
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let live = transaction.execute(
                    "UPDATE links SET updated_at = ?3
                     WHERE owner_key_id = ?1 AND code = ?2 AND target_url IS NOT NULL",
                    (owner.0, &code, to_micros(SystemTime::now())),
                )?;
                if live == 0 {
                    return Ok(false);
                }
                transaction.execute(
                    "DELETE FROM link_tags WHERE owner_key_id = ?1 AND code = ?2",
                    (owner.0, &code),
                )?;
                {
                    let mut insert = transaction.prepare_cached(
                        "INSERT INTO link_tags (owner_key_id, tag, code) VALUES (?1, ?2, ?3)
                         ON CONFLICT DO NOTHING",
                    )?;
                    for tag in &tags {
                        insert.execute((owner.0, tag, &code))?;
                    }
                }
                transaction.commit()?;
                Ok(true)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn tags_of(
        &self,
        owner: OwnerId,
        codes: &[&str],
    ) -> Result<HashMap<String, Vec<String>>, WriterError> {
        if codes.is_empty() {
            return Ok(HashMap::new());
        }
        let codes: Vec<String> = codes.iter().map(|code| (*code).to_owned()).collect();
        self.db
            .run(move |connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT tag FROM link_tags WHERE owner_key_id = ?1 AND code = ?2 ORDER BY tag",
                )?;
                let mut tags = HashMap::new();
                for code in codes {
                    let found = statement
                        .query_map((owner.0, &code), |row| row.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    if !found.is_empty() {
                        tags.insert(code, found);
                    }
                }
                Ok(tags)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn list_tags(&self, owner: OwnerId) -> Result<Vec<TagSummary>, WriterError> {
        self.db
            .run(move |connection| {
                connection
                    .prepare_cached(SUMMARY_SQL)?
                    .query_map((owner.0, None::<String>), summary)?
                    .collect()
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn tag_summary(
        &self,
        owner: OwnerId,
        tag: &str,
    ) -> Result<Option<TagSummary>, WriterError> {
        let tag = tag.to_owned();
        self.db
            .run(move |connection| {
                connection
                    .prepare_cached(SUMMARY_SQL)?
                    .query_row((owner.0, Some(tag)), summary)
                    .optional()
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn rename_tag(&self, owner: OwnerId, from: &str, to: &str) -> Result<u64, WriterError> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                transaction.execute(
                    "INSERT INTO link_tags (owner_key_id, tag, code)
                     SELECT owner_key_id, ?3, code FROM link_tags
                     WHERE owner_key_id = ?1 AND tag = ?2
                     ON CONFLICT DO NOTHING",
                    (owner.0, &from, &to),
                )?;
                let moved = transaction.execute(
                    "DELETE FROM link_tags WHERE owner_key_id = ?1 AND tag = ?2",
                    (owner.0, &from),
                )?;
                transaction.commit()?;
                Ok(moved as u64)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn delete_tag(&self, owner: OwnerId, tag: &str) -> Result<u64, WriterError> {
        let tag = tag.to_owned();
        self.db
            .run(move |connection| {
                connection.execute(
                    "DELETE FROM link_tags WHERE owner_key_id = ?1 AND tag = ?2",
                    (owner.0, &tag),
                )
            })
            .await
            .map(|deleted| deleted as u64)
            .map_err(WriterError::from_sqlite)
    }
}
