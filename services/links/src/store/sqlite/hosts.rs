//! The operator's blocklist in the embedded store, as the Postgres store
//! keeps it.

use super::*;
use crate::store::HostStore;

#[async_trait::async_trait]
impl HostStore for SqliteLinkStore {
    async fn block_host(
        &self,
        entry: &str,
        list: &tinyurl_domain::HostBlocklist,
    ) -> Result<Vec<StoredLink>, WriterError> {
        let (entry, list) = (entry.to_owned(), list.clone());
        self.db
            .run(move |connection| {
                let now = to_micros(SystemTime::now());
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                transaction.execute(
                    "INSERT INTO blocked_hosts (entry, added_at) VALUES (?1, ?2)
                     ON CONFLICT DO NOTHING",
                    (&entry, now),
                )?;
                let codes = codes_to_host(&transaction, &entry, false, |host| {
                    list.blocking(host).is_some()
                })?;
                let blocked = set_blocked(&transaction, &codes, true, now)?;
                transaction.commit()?;
                Ok(blocked)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn unblock_host(&self, entry: &str) -> Result<Option<Vec<StoredLink>>, WriterError> {
        let entry = entry.to_owned();
        self.db
            .run(move |connection| {
                let now = to_micros(SystemTime::now());
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if transaction.execute("DELETE FROM blocked_hosts WHERE entry = ?1", [&entry])? == 0
                {
                    return Ok(None);
                }
                let remaining: Vec<String> = transaction
                    .prepare("SELECT entry FROM blocked_hosts")?
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                let (lifted, remaining) = lifted_and_remaining(&entry, &remaining)
                    // A stored entry that does not parse; rusqlite carries it as a Rust-side failure.
                    .map_err(|error| rusqlite::Error::ToSqlConversionFailure(error.into()))?;
                let codes = codes_to_host(&transaction, &entry, true, |host| {
                    lifted.blocking(host).is_some() && remaining.blocking(host).is_none()
                })?;
                let unblocked = set_blocked(&transaction, &codes, false, now)?;
                transaction.commit()?;
                Ok(Some(unblocked))
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn links_to_host(
        &self,
        entry: &str,
        list: &tinyurl_domain::HostBlocklist,
    ) -> Result<Vec<StoredLink>, WriterError> {
        let (entry, list) = (entry.to_owned(), list.clone());
        self.db
            .run(move |connection| {
                let mut links = Vec::new();
                let mut candidates = connection.prepare_cached(&format!(
                    "SELECT {LINK_COLUMNS} FROM links WHERE target_url LIKE ?1 ESCAPE '\\'"
                ))?;
                for link in candidates.query_map([like_pattern(&entry)], link_from_row)? {
                    let link = link?;
                    if tinyurl_domain::target::stored_host(&link.target_url)
                        .is_some_and(|host| list.blocking(&host).is_some())
                    {
                        links.push(link);
                    }
                }
                Ok(links)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn blocked_host_entries(&self) -> Result<Vec<String>, WriterError> {
        self.db
            .run(|connection| {
                connection
                    .prepare_cached("SELECT entry FROM blocked_hosts ORDER BY entry")?
                    .query_map([], |row| row.get(0))?
                    .collect()
            })
            .await
            .map_err(WriterError::from_sqlite)
    }
}

/// Codes of live links, blocked or not as `blocked` says, whose target's
/// host (as stored: lowercase, punycode) `matches`; a `LIKE` on `entry`'s
/// host finds the candidates and the parsed host decides.
fn codes_to_host(
    transaction: &rusqlite::Transaction<'_>,
    entry: &str,
    blocked: bool,
    matches: impl Fn(&str) -> bool,
) -> rusqlite::Result<Vec<String>> {
    let mut candidates = transaction.prepare(
        "SELECT code, target_url FROM links
         WHERE blocked = ?2 AND target_url LIKE ?1 ESCAPE '\\'",
    )?;
    let rows = candidates.query_map((like_pattern(entry), blocked), |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut codes = Vec::new();
    for row in rows {
        let (code, target) = row?;
        if tinyurl_domain::target::stored_host(&target).is_some_and(|host| matches(&host)) {
            codes.push(code);
        }
    }
    Ok(codes)
}

/// Sets the operator's block of `codes` to `blocked`; returns the links it
/// changed.
fn set_blocked(
    transaction: &rusqlite::Transaction<'_>,
    codes: &[String],
    blocked: bool,
    now: i64,
) -> rusqlite::Result<Vec<StoredLink>> {
    let mut update = transaction.prepare(&format!(
        "UPDATE links SET blocked = ?2, updated_at = ?3
         WHERE code = ?1 AND blocked <> ?2 RETURNING {LINK_COLUMNS}"
    ))?;
    let mut changed = Vec::with_capacity(codes.len());
    for code in codes {
        if let Some(link) = update
            .query_row((code, blocked, now), link_from_row)
            .optional()?
        {
            changed.push(link);
        }
    }
    Ok(changed)
}
