//! The operator's blocklist in the Postgres store: an entry and the
//! blocks it puts on links change in one transaction, one change at a time.

use super::*;
use crate::store::HostStore;

#[async_trait::async_trait]
impl HostStore for PostgresLinkStore {
    async fn block_host(
        &self,
        entry: &str,
        list: &tinyurl_domain::HostBlocklist,
    ) -> Result<Vec<StoredLink>, WriterError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(WriterError::from_postgres)?;
            serialize_blocklist_changes(&transaction).await?;
            transaction
                .execute(
                    "INSERT INTO blocked_hosts (entry) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[&entry],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let codes = codes_to_host(&transaction, entry, false, |host| {
                list.blocking(host).is_some()
            })
            .await?;
            set_blocked_and_commit(transaction, &codes, true).await
        })
        .await
    }

    async fn unblock_host(&self, entry: &str) -> Result<Option<Vec<StoredLink>>, WriterError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(WriterError::from_postgres)?;
            serialize_blocklist_changes(&transaction).await?;
            let removed = transaction
                .execute("DELETE FROM blocked_hosts WHERE entry = $1", &[&entry])
                .await
                .map_err(WriterError::from_postgres)?;
            if removed == 0 {
                return Ok(None);
            }
            let remaining: Vec<String> = transaction
                .query("SELECT entry FROM blocked_hosts", &[])
                .await
                .map_err(WriterError::from_postgres)?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(WriterError::from_postgres)?;
            let (lifted, remaining) = lifted_and_remaining(entry, &remaining)?;
            let codes = codes_to_host(&transaction, entry, true, |host| {
                lifted.blocking(host).is_some() && remaining.blocking(host).is_none()
            })
            .await?;
            set_blocked_and_commit(transaction, &codes, false)
                .await
                .map(Some)
        })
        .await
    }

    async fn links_to_host(
        &self,
        entry: &str,
        list: &tinyurl_domain::HostBlocklist,
    ) -> Result<Vec<StoredLink>, WriterError> {
        self.bounded(async {
            let rows = self
                .client()
                .await?
                .query(
                    &format!("SELECT {LINK_COLUMNS} FROM links WHERE target_url LIKE $1"),
                    &[&like_pattern(entry)],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let mut links = Vec::new();
            for row in &rows {
                let link = StoredLink::from_row(row)?;
                if tinyurl_domain::target::stored_host(&link.target_url)
                    .is_some_and(|host| list.blocking(&host).is_some())
                {
                    links.push(link);
                }
            }
            Ok(links)
        })
        .await
    }

    async fn blocked_host_entries(&self) -> Result<Vec<String>, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT entry FROM blocked_hosts ORDER BY entry")
                .await
                .map_err(WriterError::from_postgres)?;
            let rows = client
                .query(&statement, &[])
                .await
                .map_err(WriterError::from_postgres)?;
            rows.iter()
                .map(|row| row.try_get(0).map_err(WriterError::from_postgres))
                .collect()
        })
        .await
    }
}

/// Block and unblock decide on the whole stored list: one at a time, so
/// neither misses an entry the other is adding.
async fn serialize_blocklist_changes(
    transaction: &tokio_postgres::Transaction<'_>,
) -> Result<(), WriterError> {
    transaction
        .batch_execute("LOCK TABLE blocked_hosts IN SHARE ROW EXCLUSIVE MODE")
        .await
        .map_err(WriterError::from_postgres)
}

/// Sets the operator's block of `codes` to `blocked` and commits; returns
/// the links it changed.
async fn set_blocked_and_commit(
    transaction: deadpool_postgres::Transaction<'_>,
    codes: &[String],
    blocked: bool,
) -> Result<Vec<StoredLink>, WriterError> {
    let rows = transaction
        .query(
            &format!(
                "UPDATE links SET flags = CASE WHEN $2 THEN flags | 8 ELSE flags & 55 END,
                                  updated_at = now()
                 WHERE code = ANY($1) AND (flags & 8 <> 0) <> $2 RETURNING {LINK_COLUMNS}"
            ),
            &[&codes, &blocked],
        )
        .await
        .map_err(WriterError::from_postgres)?;
    transaction
        .commit()
        .await
        .map_err(WriterError::from_postgres)?;
    rows.iter().map(StoredLink::from_row).collect()
}

/// Codes of live links, blocked or not as `blocked` says, whose target's
/// host (as stored: lowercase, punycode) `matches`. Every such URL holds
/// `entry`'s host as a substring, so a `LIKE` finds the candidates and the
/// parsed host decides.
async fn codes_to_host(
    transaction: &tokio_postgres::Transaction<'_>,
    entry: &str,
    blocked: bool,
    matches: impl Fn(&str) -> bool,
) -> Result<Vec<String>, WriterError> {
    let candidates = transaction
        .query(
            "SELECT code, target_url FROM links WHERE (flags & 8 <> 0) = $2 AND target_url LIKE $1",
            &[&like_pattern(entry), &blocked],
        )
        .await
        .map_err(WriterError::from_postgres)?;
    let mut codes = Vec::new();
    for row in candidates {
        let code: String = row.try_get(0).map_err(WriterError::from_postgres)?;
        let target: String = row.try_get(1).map_err(WriterError::from_postgres)?;
        if tinyurl_domain::target::stored_host(&target).is_some_and(|host| matches(&host)) {
            codes.push(code);
        }
    }
    Ok(codes)
}
