//! Tags in the Postgres store: `link_tags` rows, one per (owner, tag, link).

use super::*;
use crate::store::{TagStore, TagSummary};

/// A key's tags with their live links and the links' lifetime clicks;
/// `$2` NULL for all of them, a tag for that one.
const SUMMARY_SQL: &str = "
SELECT t.tag, count(*), COALESCE(sum(c.clicks), 0)::int8, COALESCE(sum(c.bot_clicks), 0)::int8
FROM link_tags t LEFT JOIN click_totals c ON c.code = t.code
WHERE t.owner_key_id = $1 AND ($2::text IS NULL OR t.tag = $2)
GROUP BY t.tag ORDER BY t.tag";

fn summary(row: &Row) -> Result<TagSummary, WriterError> {
    let read = || -> Result<TagSummary, tokio_postgres::Error> {
        Ok(TagSummary {
            tag: row.try_get(0)?,
            links: row.try_get(1)?,
            clicks: (row.try_get(2)?, row.try_get(3)?),
        })
    };
    read().map_err(WriterError::from_postgres)
}

#[async_trait::async_trait]
impl TagStore for PostgresLinkStore {
    async fn set_tags(
        &self,
        owner: OwnerId,
        code: &str,
        tags: &[String],
    ) -> Result<bool, WriterError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(WriterError::from_postgres)?;
            // The link's row locked, so a delete cannot slip in between and
            // leave tags on a tombstone.
            let live = transaction
                .query_opt(
                    "UPDATE links SET updated_at = now()
                     WHERE owner_key_id = $1 AND code = $2 AND target_url IS NOT NULL
                     RETURNING code",
                    &[&owner.0, &code],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            if live.is_none() {
                return Ok(false);
            }
            transaction
                .execute(
                    "DELETE FROM link_tags WHERE owner_key_id = $1 AND code = $2
                       AND NOT tag = ANY($3)",
                    &[&owner.0, &code, &tags],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .execute(
                    "INSERT INTO link_tags (owner_key_id, tag, code)
                     SELECT $1, tag, $2 FROM unnest($3::text[]) AS tag
                     ON CONFLICT DO NOTHING",
                    &[&owner.0, &code, &tags],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .commit()
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(true)
        })
        .await
    }

    async fn tags_of(
        &self,
        owner: OwnerId,
        codes: &[&str],
    ) -> Result<HashMap<String, Vec<String>>, WriterError> {
        if codes.is_empty() {
            return Ok(HashMap::new());
        }
        self.bounded(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT code, tag FROM link_tags
                     WHERE owner_key_id = $1 AND code = ANY($2) ORDER BY code, tag",
                    &[&owner.0, &codes],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let mut tags: HashMap<String, Vec<String>> = HashMap::new();
            for row in &rows {
                let code: String = row.try_get(0).map_err(WriterError::from_postgres)?;
                let tag: String = row.try_get(1).map_err(WriterError::from_postgres)?;
                tags.entry(code).or_default().push(tag);
            }
            Ok(tags)
        })
        .await
    }

    async fn list_tags(&self, owner: OwnerId) -> Result<Vec<TagSummary>, WriterError> {
        self.bounded(async {
            let rows = self
                .client()
                .await?
                .query(SUMMARY_SQL, &[&owner.0, &None::<String>])
                .await
                .map_err(WriterError::from_postgres)?;
            rows.iter().map(summary).collect()
        })
        .await
    }

    async fn tag_summary(
        &self,
        owner: OwnerId,
        tag: &str,
    ) -> Result<Option<TagSummary>, WriterError> {
        self.bounded(async {
            let row = self
                .client()
                .await?
                .query_opt(SUMMARY_SQL, &[&owner.0, &Some(tag)])
                .await
                .map_err(WriterError::from_postgres)?;
            row.as_ref().map(summary).transpose()
        })
        .await
    }

    async fn rename_tag(&self, owner: OwnerId, from: &str, to: &str) -> Result<u64, WriterError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(WriterError::from_postgres)?;
            let moved = transaction
                .query(
                    "DELETE FROM link_tags WHERE owner_key_id = $1 AND tag = $2 RETURNING code",
                    &[&owner.0, &from],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let codes = moved
                .iter()
                .map(|row| row.try_get::<_, String>(0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(WriterError::from_postgres)?;
            transaction
                .execute(
                    "INSERT INTO link_tags (owner_key_id, tag, code)
                     SELECT $1, $2, code FROM unnest($3::text[]) AS code
                     ON CONFLICT DO NOTHING",
                    &[&owner.0, &to, &codes],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .commit()
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(codes.len() as u64)
        })
        .await
    }

    async fn delete_tag(&self, owner: OwnerId, tag: &str) -> Result<u64, WriterError> {
        self.bounded(async {
            self.client()
                .await?
                .execute(
                    "DELETE FROM link_tags WHERE owner_key_id = $1 AND tag = $2",
                    &[&owner.0, &tag],
                )
                .await
                .map_err(WriterError::from_postgres)
        })
        .await
    }
}
