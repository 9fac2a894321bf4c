//! The links of the embedded store: the same rules as the Postgres store's,
//! each write in one immediate transaction.

use super::*;

#[async_trait::async_trait]
impl LinkStore for SqliteLinkStore {
    fn clicks(&self) -> Arc<dyn ClickStore> {
        Arc::clone(&self.rollups) as Arc<dyn ClickStore>
    }

    #[tracing::instrument(skip_all, fields(count = links.len()))]
    async fn insert(
        &self,
        owner: OwnerId,
        links: &[NewLink],
    ) -> Result<HashMap<String, (SystemTime, SystemTime)>, WriterError> {
        let links = links.to_vec();
        let keys_since = self.keys_since(SystemTime::now());
        self.db
            .run(move |connection| {
                // One timestamp per batch, like Postgres's now() per
                // transaction.
                let now = to_micros(SystemTime::now());
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut inserted = HashMap::with_capacity(links.len());
                {
                    // A key older than the retention, or whose link was
                    // deleted, is claimed anew; otherwise a used key skips
                    // the item (the caller answers with the key's link).
                    let mut claim = transaction.prepare_cached(
                        "INSERT INTO link_idempotency AS held
                             (owner_key_id, key, code, created_at, fingerprint)
                         VALUES (?1, ?2, ?3, ?4, ?6)
                         ON CONFLICT (owner_key_id, key) DO UPDATE
                             SET code = excluded.code, created_at = excluded.created_at,
                                 fingerprint = excluded.fingerprint
                             WHERE held.created_at <= ?5
                                OR NOT EXISTS (SELECT 1 FROM links
                                               WHERE links.code = held.code
                                                 AND links.target_url IS NOT NULL)
                         RETURNING key",
                    )?;
                    let mut unclaim = transaction.prepare_cached(
                        "DELETE FROM link_idempotency WHERE owner_key_id = ?1 AND key = ?2",
                    )?;
                    let mut tag = transaction.prepare_cached(
                        "INSERT INTO link_tags (owner_key_id, tag, code) VALUES (?1, ?2, ?3)
                         ON CONFLICT DO NOTHING",
                    )?;
                    let mut statement = transaction.prepare_cached(
                        "INSERT INTO links (code, owner_key_id, target_url, redirect_status,
                                            forward_query, expires_at, is_alias, created_at,
                                            options, owner_options)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                         ON CONFLICT DO NOTHING
                         RETURNING code",
                    )?;
                    for link in &links {
                        if let Some(key) = &link.idempotency_key {
                            let claimed: Option<String> = claim
                                .query_row(
                                    (
                                        owner.0,
                                        key,
                                        &link.code,
                                        now,
                                        keys_since,
                                        link.fingerprint
                                            .as_ref()
                                            .map(|fingerprint| fingerprint.as_slice()),
                                    ),
                                    |row| row.get(0),
                                )
                                .optional()?;
                            if claimed.is_none() {
                                continue;
                            }
                        }
                        let (options, owner_options) =
                            crate::store::stored_options_forms(&link.options);
                        let code: Option<String> = statement
                            .query_row(
                                rusqlite::params![
                                    link.code,
                                    owner.0,
                                    link.target_url,
                                    link.redirect_status.column(),
                                    link.forward_query,
                                    link.expires_at.map(to_micros),
                                    link.is_alias,
                                    now,
                                    options,
                                    owner_options,
                                ],
                                |row| row.get(0),
                            )
                            .optional()?;
                        match (code, &link.idempotency_key) {
                            (Some(code), _) => {
                                for name in &link.tags {
                                    tag.execute((owner.0, name, &code))?;
                                }
                                inserted.insert(code, (from_micros(now), from_micros(now)));
                            }
                            // The code is taken: the key must not name it.
                            (None, Some(key)) => {
                                unclaim.execute((owner.0, key))?;
                            }
                            (None, None) => {}
                        }
                    }
                }
                transaction.commit()?;
                Ok(inserted)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn find_by_idempotency_keys(
        &self,
        owner: OwnerId,
        keys: &[&str],
    ) -> Result<HashMap<String, Replay>, WriterError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        let since = self.keys_since(SystemTime::now());
        self.db
            .run(move |connection| {
                let mut held = connection.prepare_cached(
                    "SELECT code, fingerprint FROM link_idempotency
                      WHERE owner_key_id = ?1 AND key = ?2 AND created_at > ?3",
                )?;
                let mut statement = connection.prepare_cached(&format!(
                    "SELECT {LINK_COLUMNS} FROM links
                     WHERE code = ?2 AND owner_key_id = ?1 AND target_url IS NOT NULL"
                ))?;
                let mut found = HashMap::with_capacity(keys.len());
                for key in keys {
                    let Some((code, fingerprint)) = held
                        .query_row((owner.0, &key, since), |row| {
                            Ok((row.get::<_, String>(0)?, row.get::<_, Option<Vec<u8>>>(1)?))
                        })
                        .optional()?
                    else {
                        continue;
                    };
                    if let Some(link) = statement
                        .query_row((owner.0, &code), link_from_row)
                        .optional()?
                    {
                        let fingerprint = fingerprint_from(fingerprint);
                        found.insert(key, Replay { link, fingerprint });
                    }
                }
                Ok(found)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn get(&self, owner: OwnerId, code: &str) -> Result<Option<StoredLink>, WriterError> {
        let code = code.to_owned();
        self.db
            .run(move |connection| {
                connection
                    .prepare_cached(&format!(
                        "SELECT {LINK_COLUMNS} FROM links WHERE owner_key_id = ?1 AND code = ?2 AND target_url IS NOT NULL"
                    ))?
                    .query_row((owner.0, &code), link_from_row)
                    .optional()
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn update(
        &self,
        owner: OwnerId,
        code: &str,
        changes: &LinkChanges,
    ) -> Result<Option<StoredLink>, WriterError> {
        let code = code.to_owned();
        let changes = changes.clone();
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // The options after the update, from the current ones read
                // inside this (write-locked) transaction, so an update of one
                // option never undoes a concurrent update of another.
                let options = if changes.rewrites_options() {
                    let current: Option<(String, Option<String>)> = transaction
                        .prepare_cached(
                            "SELECT target_url, COALESCE(owner_options, options) FROM links
                             WHERE owner_key_id = ?1 AND code = ?2 AND target_url IS NOT NULL
                               AND blocked = 0",
                        )?
                        .query_row((owner.0, &code), |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()?;
                    let Some((target, stored)) = current else {
                        return Ok(Ok(None));
                    };
                    let next = match tinyurl_domain::LinkOptions::from_stored(stored.as_deref())
                        .map_err(|error| {
                            WriterError::Unexpected(anyhow::anyhow!("stored options: {error}"))
                        })
                        .and_then(|current| changes.next_options(&code, &target, current))
                    {
                        Ok(next) => next,
                        Err(error) => return Ok(Err(error)),
                    };
                    next.as_ref().map(crate::store::stored_options_forms)
                } else {
                    None
                };
                let rewrite = options.is_some();
                let (options, owner_options) = options.unwrap_or_default();
                let link = transaction
                    .prepare_cached(&format!(
                        "UPDATE links SET
                             target_url = COALESCE(?3, target_url),
                             expires_at = CASE WHEN ?4 THEN NULL ELSE COALESCE(?5, expires_at) END,
                             redirect_status = COALESCE(?6, redirect_status),
                             enabled = COALESCE(?7, enabled),
                             forward_query = COALESCE(?8, forward_query),
                             options = CASE WHEN ?10 THEN ?11 ELSE options END,
                             owner_options = CASE WHEN ?10 THEN ?12 ELSE owner_options END,
                             updated_at = ?9
                         WHERE owner_key_id = ?1 AND code = ?2 AND target_url IS NOT NULL
                           AND blocked = 0
                         RETURNING {LINK_COLUMNS}"
                    ))?
                    .query_row(
                        rusqlite::params![
                            owner.0,
                            code,
                            changes.target_url,
                            changes.clear_expiry,
                            changes.expires_at.map(to_micros),
                            changes
                                .redirect_status
                                .map(tinyurl_domain::RedirectStatus::column),
                            changes.enabled,
                            changes.forward_query,
                            to_micros(SystemTime::now()),
                            rewrite,
                            options,
                            owner_options,
                        ],
                        link_from_row,
                    )
                    .optional()?;
                if let (Some(_), Some(tags)) = (&link, &changes.tags) {
                    transaction.execute(
                        "DELETE FROM link_tags WHERE owner_key_id = ?1 AND code = ?2",
                        (owner.0, &code),
                    )?;
                    let mut insert = transaction.prepare_cached(
                        "INSERT INTO link_tags (owner_key_id, tag, code) VALUES (?1, ?2, ?3)",
                    )?;
                    for tag in tags {
                        insert.execute((owner.0, tag, &code))?;
                    }
                }
                transaction.commit()?;
                Ok(Ok(link))
            })
            .await
            .map_err(WriterError::from_sqlite)?
    }

    async fn delete(&self, owner: OwnerId, code: &str) -> Result<bool, WriterError> {
        let code = code.to_owned();
        self.db
            .run(move |connection| {
                // A tombstone, as in the Postgres store: the code stays
                // taken; its tags go with the link.
                let transaction = connection.transaction()?;
                let deleted = transaction.execute(
                    "UPDATE links SET target_url = NULL, enabled = 0,
                                      expires_at = NULL, options = NULL, owner_options = NULL, updated_at = ?3
                     WHERE owner_key_id = ?1 AND code = ?2 AND target_url IS NOT NULL",
                    (owner.0, &code, to_micros(SystemTime::now())),
                )?;
                transaction.execute(
                    "DELETE FROM link_tags WHERE owner_key_id = ?1 AND code = ?2",
                    (owner.0, &code),
                )?;
                transaction.commit()?;
                Ok(deleted)
            })
            .await
            .map(|deleted| deleted > 0)
            .map_err(WriterError::from_sqlite)
    }

    async fn prune_idempotency_keys(&self, limit: i64) -> Result<u64, WriterError> {
        let before = self.keys_since(SystemTime::now());
        self.db
            .run(move |connection| {
                let deleted = connection.execute(
                    "DELETE FROM link_idempotency WHERE (owner_key_id, key) IN (
                         SELECT owner_key_id, key FROM link_idempotency
                         WHERE created_at <= ?1 LIMIT ?2)",
                    (before, limit),
                )?;
                if deleted > 0 {
                    // Expired keys cost nothing: their pages leave the file
                    // (on files made with incremental auto-vacuum; older
                    // files reuse them for new rows instead).
                    // Each step frees one page: step to the end.
                    let mut vacuum = connection.prepare_cached("PRAGMA incremental_vacuum")?;
                    let mut steps = vacuum.query([])?;
                    while steps.next()?.is_some() {}
                }
                Ok(deleted)
            })
            .await
            .map(|deleted| u64::try_from(deleted).unwrap_or(u64::MAX))
            .map_err(WriterError::from_sqlite)
    }

    async fn search(
        &self,
        owner: OwnerId,
        search: &LinkSearch,
        limit: i64,
        after: Option<&SearchCursor>,
    ) -> Result<Vec<(StoredLink, i64)>, WriterError> {
        use rusqlite::types::Value;
        let now = to_micros(search.now.unwrap_or_else(SystemTime::now));
        let mut params: Vec<Value> = vec![Value::Integer(owner.0), Value::Integer(limit)];
        let mut inner = format!(
            "SELECT {LINK_COLUMNS},
                    COALESCE((SELECT clicks FROM click_totals WHERE click_totals.code = links.code), 0) AS total,
                    created_at AS created
             FROM links WHERE owner_key_id = ?1 AND target_url IS NOT NULL"
        );
        if let Some(text) = search
            .text
            .as_deref()
            .map(str::trim)
            .filter(|text| !text.is_empty())
        {
            // Prefixes compared with substr, which keeps case as the
            // Postgres store's ranges do (LIKE would ignore it).
            let count = |text: &str| i64::try_from(text.chars().count()).unwrap_or(i64::MAX);
            params.push(Value::Integer(count(text)));
            params.push(Value::Text(text.to_owned()));
            let mut any = format!("substr(code, 1, ?{}) = ?{}", params.len() - 1, params.len());
            if let Some(target) = target_search_form(text) {
                params.push(Value::Integer(count(&target)));
                params.push(Value::Text(target));
                any.push_str(&format!(
                    " OR substr(CASE
                         WHEN substr(target_url, 1, 12) = 'https://www.' THEN substr(target_url, 13)
                         WHEN substr(target_url, 1, 8) = 'https://' THEN substr(target_url, 9)
                         WHEN substr(target_url, 1, 11) = 'http://www.' THEN substr(target_url, 12)
                         WHEN substr(target_url, 1, 7) = 'http://' THEN substr(target_url, 8)
                         ELSE target_url END, 1, ?{}) = ?{}",
                    params.len() - 1,
                    params.len()
                ));
            }
            inner.push_str(&format!(" AND ({any})"));
        }
        if let Some(tag) = &search.tag {
            params.push(Value::Text(tag.clone()));
            inner.push_str(&format!(
                " AND code IN (SELECT code FROM link_tags WHERE owner_key_id = ?1 AND tag = ?{})",
                params.len()
            ));
        }
        match search.state {
            Some(LinkState::Active) => {
                params.push(Value::Integer(now));
                inner.push_str(&format!(
                    " AND enabled AND NOT blocked AND (expires_at IS NULL OR expires_at > ?{})",
                    params.len()
                ));
            }
            Some(LinkState::Disabled) => inner.push_str(" AND NOT enabled"),
            Some(LinkState::Expired) => {
                params.push(Value::Integer(now));
                inner.push_str(&format!(" AND expires_at <= ?{}", params.len()));
            }
            Some(LinkState::Blocked) => inner.push_str(" AND blocked"),
            None => {}
        }
        let keyset = match after {
            Some(SearchCursor::Newest(created_at, code)) => {
                params.push(Value::Integer(to_micros(*created_at)));
                params.push(Value::Text(code.clone()));
                let (at, code) = (params.len() - 1, params.len());
                format!(" WHERE created <= ?{at} AND (created < ?{at} OR code < ?{code})")
            }
            Some(SearchCursor::MostClicked(total, created_at, code)) => {
                params.push(Value::Integer(*total));
                params.push(Value::Integer(to_micros(*created_at)));
                params.push(Value::Text(code.clone()));
                let last = params.len();
                format!(
                    " WHERE (total, created, code) < (?{}, ?{}, ?{last})",
                    last - 2,
                    last - 1
                )
            }
            None => String::new(),
        };
        let order = match search.order {
            LinkOrder::Newest => "created DESC, code DESC",
            LinkOrder::MostClicked => "total DESC, created DESC, code DESC",
        };
        let sql = format!("SELECT * FROM ({inner}){keyset} ORDER BY {order} LIMIT ?2");
        self.db
            .run(move |connection| {
                connection
                    .prepare(&sql)?
                    .query_map(rusqlite::params_from_iter(params), |row| {
                        Ok((link_from_row(row)?, row.get::<_, i64>(11)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn owner_overview(
        &self,
        owner: OwnerId,
        since: [i32; 2],
    ) -> Result<OwnerOverview, WriterError> {
        self.db
            .run(move |connection| {
                let links: i64 = connection.query_row(
                    "SELECT count(*) FROM links WHERE owner_key_id = ?1 AND target_url IS NOT NULL",
                    [owner.0],
                    |row| row.get(0),
                )?;
                connection.query_row(
                    "WITH rows AS (
                         SELECT code, day, class <> 0 AS bot, clicks FROM click_days
                          WHERE dimension = 0 AND day >= min(?2, ?3)
                         UNION ALL
                         SELECT code, minute / 1440 AS day, class <> 0 AS bot, clicks FROM click_minutes
                          WHERE dimension = 0
                            AND minute > (SELECT rolled_through FROM click_rollup_mark)
                            AND minute >= min(?2, ?3) * 1440
                     )
                     SELECT
                         COALESCE(sum(CASE WHEN NOT r.bot AND r.day >= ?2 THEN r.clicks END), 0),
                         COALESCE(sum(CASE WHEN r.bot AND r.day >= ?2 THEN r.clicks END), 0),
                         COALESCE(sum(CASE WHEN NOT r.bot AND r.day >= ?3 THEN r.clicks END), 0),
                         COALESCE(sum(CASE WHEN r.bot AND r.day >= ?3 THEN r.clicks END), 0)
                     FROM links l JOIN rows r ON r.code = l.code
                     WHERE l.owner_key_id = ?1",
                    (owner.0, since[0], since[1]),
                    |row| {
                        Ok(OwnerOverview {
                            links,
                            clicks: [(row.get(0)?, row.get(1)?), (row.get(2)?, row.get(3)?)],
                        })
                    },
                )
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn list(
        &self,
        owner: OwnerId,
        limit: i64,
        after: Option<(SystemTime, String)>,
    ) -> Result<Vec<StoredLink>, WriterError> {
        self.db
            .run(move |connection| match after {
                None => connection
                    .prepare_cached(&format!(
                        "SELECT {LINK_COLUMNS} FROM links WHERE owner_key_id = ?1 AND target_url IS NOT NULL
                             ORDER BY created_at DESC, code DESC LIMIT ?2"
                    ))?
                    .query_map((owner.0, limit), link_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>(),
                Some((created_at, code)) => connection
                    .prepare_cached(&format!(
                        "SELECT {LINK_COLUMNS} FROM links
                             WHERE owner_key_id = ?1 AND target_url IS NOT NULL
                                 AND created_at <= ?3 AND (created_at < ?3 OR code < ?4)
                             ORDER BY created_at DESC, code DESC LIMIT ?2"
                    ))?
                    .query_map((owner.0, limit, to_micros(created_at), code), link_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>(),
            })
            .await
            .map_err(WriterError::from_sqlite)
    }
}
