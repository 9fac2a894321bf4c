//! The links of the Postgres store: inserts in one statement, reads,
//! changes and tombstones.

use super::*;

/// Inserts a whole batch in one statement; conflicting rows (a taken code or
/// alias) are skipped, not errors.
const INSERT_SQL: &str = "
INSERT INTO links (code, owner_key_id, target_url, redirect_status, flags, expires_at)
SELECT code, $1, target_url, redirect_status, flags, expires_at
FROM UNNEST($2::text[], $3::text[], $4::int2[], $5::int2[], $6::timestamptz[])
     AS new (code, target_url, redirect_status, flags, expires_at)
ON CONFLICT DO NOTHING
RETURNING code, created_at, COALESCE(updated_at, created_at)";

/// The single-row form of [`INSERT_SQL`]: cheaper to bind and plan than
/// one-element arrays, and single creates are the hot path.
const INSERT_ONE_SQL: &str = "
INSERT INTO links (code, owner_key_id, target_url, redirect_status, flags, expires_at)
VALUES ($2, $1, $3, $4, $5, $6)
ON CONFLICT DO NOTHING
RETURNING code, created_at, COALESCE(updated_at, created_at)";

/// A batch with idempotency keys, run in a transaction. Each key is claimed
/// first (a concurrent create with the same key waits on the unique index,
/// then finds it taken); a key older than the retention (`$7` seconds), or
/// whose link was deleted, is claimed anew. Only the items whose key was
/// claimed (or that have none) are inserted, the first item of each code
/// only. Returns the inserted codes and, with a NULL code, the claimed keys
/// whose code turned out to be taken: the caller deletes those claims before
/// committing, so a key always names the link it created.
const INSERT_KEYED_SQL: &str = "
WITH new AS (
    SELECT * FROM UNNEST($2::text[], $3::text[], $4::int2[], $5::int2[], $6::timestamptz[],
                         $8::text[], $9::bytea[]) WITH ORDINALITY
        AS new (code, target_url, redirect_status, flags, expires_at, key, fingerprint, position)
), candidates AS (
    SELECT DISTINCT ON (code) * FROM new ORDER BY code, position
), claimed AS (
    INSERT INTO link_idempotency AS held (owner_key_id, key, code, fingerprint)
    SELECT DISTINCT ON (key) $1, key, code, fingerprint FROM candidates WHERE key IS NOT NULL
    ORDER BY key, position
    ON CONFLICT (owner_key_id, key) DO UPDATE
        SET code = EXCLUDED.code, created_at = now(), fingerprint = EXCLUDED.fingerprint
        WHERE held.created_at <= now() - make_interval(secs => $7)
           OR NOT EXISTS (SELECT 1 FROM links
                          WHERE links.code = held.code AND links.target_url IS NOT NULL)
    RETURNING key, code
), inserted AS (
    INSERT INTO links (code, owner_key_id, target_url, redirect_status, flags, expires_at)
    SELECT code, $1, target_url, redirect_status, flags, expires_at FROM candidates
    WHERE key IS NULL OR (key, code) IN (SELECT key, code FROM claimed)
    ON CONFLICT DO NOTHING
    RETURNING code, created_at, COALESCE(updated_at, created_at) AS updated_at
)
SELECT code, created_at, updated_at, NULL::text FROM inserted
UNION ALL
SELECT NULL, NULL, NULL, key FROM claimed WHERE code NOT IN (SELECT code FROM inserted)";

/// Deleting leaves a tombstone (migration V3): the code stays taken, the
/// target goes. A key that created the link no longer answers with it: a
/// retried create with that key claims the key anew and makes a new link, as
/// it would after a real delete.
/// A tombstone, and the link's tags gone with it, in one statement.
const DELETE_SQL: &str = "
WITH gone AS (
    UPDATE links SET target_url = NULL, flags = (flags | 2) & 15, expires_at = NULL,
                     updated_at = now()
    WHERE owner_key_id = $1 AND code = $2 AND target_url IS NOT NULL
    RETURNING code
), untagged AS (
    DELETE FROM link_tags WHERE owner_key_id = $1 AND code IN (SELECT code FROM gone)
), unoptioned AS (
    DELETE FROM link_options WHERE code IN (SELECT code FROM gone)
)
SELECT count(*) FROM gone";

#[async_trait::async_trait]
impl LinkStore for PostgresLinkStore {
    fn clicks(&self) -> Arc<dyn ClickStore> {
        Arc::clone(&self.rollups) as Arc<dyn ClickStore>
    }

    /// Inserts `links` in one statement (in a transaction with the claims
    /// of their idempotency keys, when they have any); returns the codes that
    /// were inserted with their timestamps.
    #[tracing::instrument(skip_all, fields(count = links.len()))]
    async fn insert(
        &self,
        owner: OwnerId,
        links: &[NewLink],
    ) -> Result<HashMap<String, (SystemTime, SystemTime)>, WriterError> {
        let columns = Columns::of(links);
        self.bounded(async {
            let mut client = self.client().await?;
            if columns.keys.iter().any(Option::is_some)
                || links
                    .iter()
                    .any(|link| !link.tags.is_empty() || !link.options.is_empty())
            {
                return self
                    .insert_in_transaction(&mut client, owner, &columns, links)
                    .await;
            }
            let rows = if let [link] = links {
                let statement = client
                    .prepare_cached(INSERT_ONE_SQL)
                    .await
                    .map_err(WriterError::from_postgres)?;
                client
                    .query(
                        &statement,
                        &[
                            &owner.0,
                            &link.code,
                            &link.target_url,
                            &link.redirect_status.column(),
                            &new_flags(link),
                            &link.expires_at,
                        ],
                    )
                    .await
            } else {
                let statement = client
                    .prepare_cached(INSERT_SQL)
                    .await
                    .map_err(WriterError::from_postgres)?;
                let Columns {
                    codes,
                    targets,
                    statuses,
                    flags,
                    expiries,
                    ..
                } = &columns;
                client
                    .query(
                        &statement,
                        &[&owner.0, codes, targets, statuses, flags, expiries],
                    )
                    .await
            }
            .map_err(WriterError::from_postgres)?;
            inserted(&rows)
        })
        .await
    }

    /// Links of `owner` created with any of `keys`, by idempotency key.
    async fn find_by_idempotency_keys(
        &self,
        owner: OwnerId,
        keys: &[&str],
    ) -> Result<HashMap<String, Replay>, WriterError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT held.key, held.fingerprint, link.* FROM link_idempotency held
                         CROSS JOIN LATERAL (
                             SELECT {LINK_COLUMNS} FROM links
                             WHERE code = held.code AND owner_key_id = held.owner_key_id
                               AND target_url IS NOT NULL) link
                         WHERE held.owner_key_id = $1 AND held.key = ANY($2)
                           AND held.created_at > now() - make_interval(secs => $3)"
                    ),
                    &[&owner.0, &keys, &self.idempotency_retention.as_secs_f64()],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let mut found = HashMap::with_capacity(rows.len());
            for row in rows {
                let key: String = row.try_get(0).map_err(WriterError::from_postgres)?;
                let fingerprint =
                    fingerprint_from(row.try_get(1).map_err(WriterError::from_postgres)?);
                let link = StoredLink::from_row_at(&row, 2)?;
                found.insert(key, Replay { link, fingerprint });
            }
            Ok(found)
        })
        .await
    }

    async fn get(&self, owner: OwnerId, code: &str) -> Result<Option<StoredLink>, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &format!(
                        "SELECT {LINK_COLUMNS} FROM links WHERE owner_key_id = $1 AND code = $2 AND target_url IS NOT NULL"
                    ),
                    &[&owner.0, &code],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            row.as_ref().map(StoredLink::from_row).transpose()
        })
        .await
    }

    async fn update(
        &self,
        owner: OwnerId,
        code: &str,
        changes: &LinkChanges,
    ) -> Result<Option<StoredLink>, WriterError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(WriterError::from_postgres)?;
            // New options are merged into the current ones under the row's
            // lock (read after it is taken), so an update of one option never
            // undoes a concurrent update of another.
            let option_bits = if changes.rewrites_options() {
                let Some((target, current)) =
                    self.locked_options(&transaction, owner, code).await?
                else {
                    return Ok(None);
                };
                match changes.next_options(code, &target, current)? {
                    Some(next) => {
                        match crate::store::stored_options_forms(&next) {
                            (Some(stored), owner_form) => transaction
                                .execute(
                                    "INSERT INTO link_options (code, options, owner_options)
                                     VALUES ($1, $2, $3)
                                     ON CONFLICT (code) DO UPDATE
                                     SET options = EXCLUDED.options,
                                         owner_options = EXCLUDED.owner_options",
                                    &[&code, &stored, &owner_form],
                                )
                                .await
                                .map_err(WriterError::from_postgres)?,
                            (None, _) => transaction
                                .execute("DELETE FROM link_options WHERE code = $1", &[&code])
                                .await
                                .map_err(WriterError::from_postgres)?,
                        };
                        Some(option_flags(&next))
                    }
                    None => None,
                }
            } else {
                None
            };
            // The tags with the row, in one statement.
            let row = transaction
                .query_opt(
                    &format!(
                        "WITH changed AS (UPDATE links SET
                             target_url = COALESCE($3, target_url),
                             expires_at = CASE WHEN $4 THEN NULL ELSE COALESCE($5, expires_at) END,
                             redirect_status = COALESCE($6, redirect_status),
                             flags = (flags & 4) | COALESCE($10::int2, flags & 48)
                                 | CASE WHEN COALESCE($8, flags & 1 <> 0) THEN 1 ELSE 0 END
                                 | CASE WHEN COALESCE($7, flags & 2 = 0) THEN 0 ELSE 2 END,
                             updated_at = now()
                         WHERE owner_key_id = $1 AND code = $2 AND target_url IS NOT NULL
                           AND flags & 8 = 0
                         RETURNING {LINK_COLUMNS}
                         ), dropped AS (
                             DELETE FROM link_tags
                             WHERE $9::text[] IS NOT NULL AND owner_key_id = $1
                               AND code IN (SELECT code FROM changed) AND NOT tag = ANY($9)
                         ), added AS (
                             INSERT INTO link_tags (owner_key_id, tag, code)
                             SELECT $1, tag, changed.code FROM changed, unnest($9::text[]) AS tag
                             ON CONFLICT DO NOTHING
                         )
                         SELECT * FROM changed"
                    ),
                    &[
                        &owner.0,
                        &code,
                        &changes.target_url,
                        &changes.clear_expiry,
                        &changes.expires_at,
                        &changes.redirect_status.map(RedirectStatus::column),
                        &changes.enabled,
                        &changes.forward_query,
                        &changes.tags,
                        &option_bits,
                    ],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let link = row.as_ref().map(StoredLink::from_row).transpose()?;
            transaction
                .commit()
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(link)
        })
        .await
    }

    async fn delete(&self, owner: OwnerId, code: &str) -> Result<bool, WriterError> {
        self.bounded(async {
            let deleted: i64 = self
                .client()
                .await?
                .query_one(DELETE_SQL, &[&owner.0, &code])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(WriterError::from_postgres)?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn prune_idempotency_keys(&self, limit: i64) -> Result<u64, WriterError> {
        self.bounded(async {
            // In bounded slices, like the click retention: short row locks,
            // and a concurrent prune by another writer only wastes a little.
            self.client()
                .await?
                .execute(
                    "DELETE FROM link_idempotency WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM link_idempotency
                          WHERE created_at <= now() - make_interval(secs => $1) LIMIT $2))",
                    &[&self.idempotency_retention.as_secs_f64(), &limit],
                )
                .await
                .map_err(WriterError::from_postgres)
        })
        .await
    }

    /// Newest first; `after` is the (created_at, code) of the last link of the
    /// previous page.
    async fn search(
        &self,
        owner: OwnerId,
        search: &LinkSearch,
        limit: i64,
        after: Option<&SearchCursor>,
    ) -> Result<Vec<(StoredLink, i64)>, WriterError> {
        let now = search.now.unwrap_or_else(SystemTime::now);
        let text = search
            .text
            .as_deref()
            .map(str::trim)
            .filter(|text| !text.is_empty());
        let code_end = text.and_then(prefix_end);
        let target = text.and_then(target_search_form);
        let host = target
            .as_deref()
            .map(|target| search_form_host(target).to_owned());
        let host_end = host.as_deref().and_then(prefix_end);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&owner.0, &limit];
        // The conditions on the owner's links; the query around them is
        // chosen below by the order and whether there is text.
        let mut inner = String::from("owner_key_id = $1 AND target_url IS NOT NULL");
        if let Some(text) = &text {
            // Ranges, not LIKE: they use the indexes whatever the plan
            // (a LIKE prefix does only when planned with its value). The
            // code's in the primary key, the host's in links_owner_host
            // (V14); the rest of a typed URL is compared on what those find.
            let mut any = Vec::new();
            params.push(text);
            let mut code = format!("code >= ${}", params.len());
            if let Some(end) = &code_end {
                params.push(end);
                code.push_str(&format!(" AND code < ${}", params.len()));
            }
            any.push(code);
            if let (Some(target), Some(host)) = (&target, &host) {
                params.push(host);
                let mut found = format!("link_host(target_url) ~>=~ ${}", params.len());
                if let Some(end) = &host_end {
                    params.push(end);
                    found.push_str(&format!(" AND link_host(target_url) ~<~ ${}", params.len()));
                }
                if target != host {
                    params.push(target);
                    found.push_str(&format!(
                        " AND starts_with(regexp_replace(target_url, '^[a-z]+://(www\\.)?', ''), ${})",
                        params.len()
                    ));
                }
                any.push(found);
            }
            inner.push_str(&format!(" AND (({}))", any.join(") OR (")));
        }
        if let Some(tag) = &search.tag {
            params.push(tag);
            inner.push_str(&format!(
                " AND code IN (SELECT code FROM link_tags WHERE owner_key_id = $1 AND tag = ${})",
                params.len()
            ));
        }
        if let Some(state) = search.state {
            match state {
                LinkState::Active => {
                    params.push(&now);
                    inner.push_str(&format!(
                        " AND flags & 10 = 0 AND (expires_at IS NULL OR expires_at > ${})",
                        params.len()
                    ));
                }
                LinkState::Disabled => inner.push_str(" AND flags & 2 <> 0"),
                LinkState::Expired => {
                    params.push(&now);
                    inner.push_str(&format!(" AND expires_at <= ${}", params.len()));
                }
                LinkState::Blocked => inner.push_str(" AND flags & 8 <> 0"),
            }
        }
        let narrowed = text.is_some() || search.tag.is_some();
        if search.order == LinkOrder::MostClicked && !narrowed {
            return self.most_clicked(&inner, params, limit, after).await;
        }
        let mut outer = String::new();
        let mut walk_after = String::new();
        match after {
            Some(SearchCursor::Newest(created_at, code)) => {
                params.push(created_at);
                params.push(code);
                let (at, code) = (params.len() - 1, params.len());
                walk_after =
                    format!(" AND created_at <= ${at} AND (created_at < ${at} OR code < ${code})");
                inner.push_str(&walk_after);
            }
            Some(SearchCursor::MostClicked(total, created_at, code)) => {
                params.push(total);
                params.push(created_at);
                params.push(code);
                let last = params.len();
                outer.push_str(&format!(
                    " WHERE (total, created_at, code) < (${}, ${}, ${last})",
                    last - 2,
                    last - 1,
                ));
            }
            None => {}
        }
        let order = match search.order {
            LinkOrder::Newest => "created_at DESC, code DESC",
            LinkOrder::MostClicked => "total DESC, created_at DESC, code DESC",
        };
        // With text or a tag, the matches are found through the indexes first
        // (OFFSET 0 keeps the planner from folding the LIMIT in): left to
        // itself it walks the owner's links newest first and filters, on
        // the guess that matches are spread evenly, which reads every link
        // when they are few (440 ms for 100 among 100,000, against 7).
        let fence = if narrowed { " OFFSET 0" } else { "" };
        // The click total is computed: it can be compared and sorted by only
        // outside the query that computes it.
        let sql = match search.order {
            LinkOrder::Newest if !narrowed => format!(
                "SELECT {LINK_COLUMNS}, COALESCE(totals.clicks, 0) AS total
                 FROM links
                 LEFT JOIN (SELECT code AS clicked, clicks FROM click_totals) AS totals
                     ON totals.clicked = links.code
                 WHERE {inner} ORDER BY {order} LIMIT $2"
            ),
            // Totals only for the page's links: every match's would be a
            // hash of the whole table when the text matches most links.
            LinkOrder::Newest => format!(
                "SELECT {LINK_COLUMNS},
                        COALESCE((SELECT clicks FROM click_totals WHERE click_totals.code = links.code), 0)
                 FROM (SELECT code, target_url, redirect_status, flags, expires_at, created_at, updated_at
                       FROM links WHERE {inner}{fence}) AS links
                 ORDER BY {order} LIMIT $2"
            ),
            // Every match's total, joined (not a subquery per link: the
            // planner hashes the totals, where a subquery per row costs an
            // index probe each and, estimated dear, a JIT compilation).
            LinkOrder::MostClicked => format!(
                "SELECT * FROM (
                     SELECT {LINK_COLUMNS}, COALESCE(totals.clicks, 0) AS total
                     FROM links
                     LEFT JOIN (SELECT code AS clicked, clicks FROM click_totals) AS totals
                         ON totals.clicked = links.code
                     WHERE {inner}{fence}) AS found{outer}
                 ORDER BY {order} LIMIT $2"
            ),
        };
        // Newest first with text or a tag: the key's newest links after the
        // cursor are looked through first, [`NEWEST_PROBE`] of them; when
        // the page is among them (a text most links match, where finding
        // every match first means sorting them all: 99 ms for 100,000) it
        // is the answer, else the matches are few and found as above.
        let probe = (search.order == LinkOrder::Newest && narrowed).then(|| {
            format!(
                "SELECT {LINK_COLUMNS},
                        COALESCE((SELECT clicks FROM click_totals WHERE click_totals.code = links.code), 0)
                 FROM (SELECT * FROM links
                        WHERE owner_key_id = $1 AND target_url IS NOT NULL{walk_after}
                        ORDER BY created_at DESC, code DESC LIMIT {NEWEST_PROBE}) AS links
                 WHERE {inner}
                 ORDER BY {order} LIMIT $2"
            )
        });
        self.bounded(async {
            let client = self.client().await?;
            if let Some(probe) = probe {
                let rows = client
                    .query(&probe, &params)
                    .await
                    .map_err(WriterError::from_postgres)?;
                if rows.len() as i64 == limit {
                    return rows.iter().map(link_and_total).collect();
                }
            }
            let rows = client
                .query(&sql, &params)
                .await
                .map_err(WriterError::from_postgres)?;
            rows.iter().map(link_and_total).collect()
        })
        .await
    }

    async fn owner_overview(
        &self,
        owner: OwnerId,
        since: [i32; 2],
    ) -> Result<OwnerOverview, WriterError> {
        self.bounded(async {
            let mut client = self.client().await?;
            // One snapshot, so the mark and both tables agree (a roll-up
            // between the reads would count its minutes twice); the mark read
            // first, so that the minutes after it are planned as the few they
            // are rather than as a third of the table (a scan of every minute
            // row kept, 175 ms on 1,000,000).
            let transaction = snapshot(&mut client).await?;
            let links: i64 = transaction
                .query_one(
                    "SELECT count(*) FROM links WHERE owner_key_id = $1 AND target_url IS NOT NULL",
                    &[&owner.0],
                )
                .await
                .and_then(|row| row.try_get(0))
                .map_err(WriterError::from_postgres)?;
            let mark = rollup_mark(&transaction).await?;
            // The key's day totals (the roll-up keeps them) and the few
            // minutes after the mark, each code's owner looked up one by one
            // (left to itself the planner hashes every link of the key: it
            // cannot tell the minutes are few).
            let row = transaction
                .query_one(
                    "WITH recent AS MATERIALIZED (
                         SELECT code, minute / 1440 AS day, class <> 0 AS bot, sum(clicks) AS clicks
                           FROM click_minutes
                          WHERE minute > $4::int4
                          GROUP BY 1, 2, 3
                     ),
                     rows AS (
                         SELECT day, bot, clicks FROM owner_click_days
                          WHERE owner_key_id = $1 AND day >= least($2::int4, $3::int4)
                         UNION ALL
                         SELECT r.day, r.bot, r.clicks FROM recent r
                          CROSS JOIN LATERAL (SELECT FROM links l
                                               WHERE l.code = r.code AND l.owner_key_id = $1
                                               LIMIT 1) AS owned
                     )
                     SELECT
                         COALESCE(sum(clicks) FILTER (WHERE NOT bot AND day >= $2), 0)::bigint,
                         COALESCE(sum(clicks) FILTER (WHERE bot AND day >= $2), 0)::bigint,
                         COALESCE(sum(clicks) FILTER (WHERE NOT bot AND day >= $3), 0)::bigint,
                         COALESCE(sum(clicks) FILTER (WHERE bot AND day >= $3), 0)::bigint
                     FROM rows",
                    &[&owner.0, &since[0], &since[1], &mark],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .commit()
                .await
                .map_err(WriterError::from_postgres)?;
            let get = |index| {
                row.try_get::<_, i64>(index)
                    .map_err(WriterError::from_postgres)
            };
            Ok(OwnerOverview {
                links,
                clicks: [(get(0)?, get(1)?), (get(2)?, get(3)?)],
            })
        })
        .await
    }

    async fn list(
        &self,
        owner: OwnerId,
        limit: i64,
        after: Option<(SystemTime, String)>,
    ) -> Result<Vec<StoredLink>, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = match after {
                None => client
                    .query(
                        &format!("SELECT {LINK_COLUMNS} FROM links WHERE owner_key_id = $1 AND target_url IS NOT NULL ORDER BY created_at DESC, code DESC LIMIT $2"),
                        &[&owner.0, &limit],
                    )
                    .await,
                Some((created_at, code)) => client
                    .query(
                        &format!(
                            "SELECT {LINK_COLUMNS} FROM links WHERE owner_key_id = $1 AND target_url IS NOT NULL
                                 AND created_at <= $3 AND (created_at < $3 OR code < $4)
                             ORDER BY created_at DESC, code DESC LIMIT $2"
                        ),
                        &[&owner.0, &limit, &created_at, &code],
                    )
                    .await,
            }
            .map_err(WriterError::from_postgres)?;
            rows.iter().map(StoredLink::from_row).collect()
        })
        .await
    }
}

/// A batch of new links as the columns the insert statements take.
struct Columns<'a> {
    codes: Vec<&'a str>,
    targets: Vec<&'a str>,
    statuses: Vec<i16>,
    flags: Vec<i16>,
    expiries: Vec<Option<SystemTime>>,
    keys: Vec<Option<&'a str>>,
    fingerprints: Vec<Option<&'a [u8]>>,
}

impl<'a> Columns<'a> {
    fn of(links: &'a [NewLink]) -> Self {
        Self {
            codes: links.iter().map(|link| link.code.as_str()).collect(),
            targets: links.iter().map(|link| link.target_url.as_str()).collect(),
            statuses: links
                .iter()
                .map(|link| link.redirect_status.column())
                .collect(),
            flags: links.iter().map(new_flags).collect(),
            expiries: links.iter().map(|link| link.expires_at).collect(),
            keys: links
                .iter()
                .map(|link| link.idempotency_key.as_deref())
                .collect(),
            fingerprints: links
                .iter()
                .map(|link| {
                    link.fingerprint
                        .as_ref()
                        .map(|fingerprint| fingerprint.as_slice())
                })
                .collect(),
        }
    }
}

/// The codes an insert statement returned, with their
/// `(created_at, updated_at)`; a NULL code is a row that was skipped.
fn inserted(rows: &[Row]) -> Result<HashMap<String, (SystemTime, SystemTime)>, WriterError> {
    rows.iter()
        .filter_map(|row| match row.try_get::<_, Option<String>>(0) {
            Ok(Some(code)) => Some((|| Ok((code, (row.try_get(1)?, row.try_get(2)?))))()),
            Ok(None) => None,
            Err(error) => Some(Err(error)),
        })
        .collect::<Result<HashMap<_, _>, tokio_postgres::Error>>()
        .map_err(WriterError::from_postgres)
}

impl PostgresLinkStore {
    /// The owner's links that `inner` selects, most human clicks first (then
    /// newest), from the ranks the roll-up keeps rather than every link's
    /// total: the links ranked after `after` that no click has moved since
    /// the roll-up mark are exact in the ranks' order, so the first `limit`
    /// of them plus every link clicked after the mark (a few minutes' worth,
    /// totalled from the minute rollups) hold the page; links without human
    /// clicks follow, newest first, through the owner's newest-first index.
    /// `params` holds `inner`'s values ($1 the owner, $2 the limit).
    async fn most_clicked(
        &self,
        inner: &str,
        params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)>,
        limit: i64,
        after: Option<&SearchCursor>,
    ) -> Result<Vec<(StoredLink, i64)>, WriterError> {
        let (total, at, code) = match after {
            Some(SearchCursor::MostClicked(total, at, code)) => (*total, *at, code.as_str()),
            // Past the largest total: every link comes after it.
            _ => (i64::MAX, SystemTime::UNIX_EPOCH, ""),
        };
        // The candidates' links are read one by one (the LIMIT keeps the
        // planner from joining them to every link of the key, which it
        // would, unable to tell the candidates are few; and a lookup by
        // code goes to one partition, where a list of codes goes to all).
        // Each statement numbers the parameters it uses after `inner`'s; the
        // roll-up mark, read in the transaction, comes last.
        let base = params.len();
        let mut clicked_params = params.clone();
        clicked_params.extend([
            &total as &(dyn tokio_postgres::types::ToSql + Sync),
            &at,
            &code,
        ]);
        let (total_at, at_at, code_at, mark_at) = (base + 1, base + 2, base + 3, base + 4);
        let clicked = format!(
            "WITH recent AS MATERIALIZED (
                 SELECT code, sum(clicks)::int8 AS clicks FROM click_minutes
                  WHERE minute > ${mark_at}::int4 AND class = 0
                  GROUP BY code
             ),
             candidates AS MATERIALIZED (
                 (SELECT k.code AS clicked, k.clicks AS total FROM click_ranks k
                   WHERE k.owner_key_id = $1 AND k.clicks > 0
                     AND (k.clicks, k.created_at, k.code) < (${total_at}, ${at_at}, ${code_at})
                     AND k.code NOT IN (SELECT code FROM recent)
                     AND EXISTS (SELECT FROM links WHERE links.code = k.code AND {inner})
                   ORDER BY k.clicks DESC, k.created_at DESC, k.code DESC LIMIT $2)
                 UNION ALL
                 SELECT r.code, r.clicks + COALESCE((SELECT k.clicks FROM click_ranks k
                                                      WHERE k.owner_key_id = $1 AND k.code = r.code), 0)
                   FROM recent r
             )
             SELECT found.*, c.total FROM candidates c
              CROSS JOIN LATERAL (SELECT {LINK_COLUMNS} FROM links
                                   WHERE links.code = c.clicked AND {inner} LIMIT 1) AS found
              WHERE (c.total, found.created_at, found.code) < (${total_at}, ${at_at}, ${code_at})
              ORDER BY c.total DESC, found.created_at DESC, found.code DESC LIMIT $2"
        );
        // Links with no human click: neither ranked above zero nor clicked
        // since the mark (an index probe each, as the walk meets them); after
        // a page that ended among them, those after its last.
        let mut unclicked_params = params;
        let mut unclicked_after = String::new();
        if total == 0 {
            unclicked_params.extend([&at as &(dyn tokio_postgres::types::ToSql + Sync), &code]);
            unclicked_after = format!(" AND (created_at, code) < (${}, ${})", base + 1, base + 2);
        }
        let unclicked = format!(
            "SELECT {LINK_COLUMNS}, 0::int8 FROM links
              WHERE {inner}{unclicked_after}
                AND NOT EXISTS (SELECT FROM click_ranks k
                                 WHERE k.owner_key_id = $1 AND k.code = links.code AND k.clicks > 0)
                AND NOT EXISTS (SELECT FROM click_minutes m
                                 WHERE m.code = links.code AND m.minute > ${}::int4
                                   AND m.class = 0)
              ORDER BY created_at DESC, code DESC LIMIT $2",
            unclicked_params.len() + 1
        );
        self.bounded(async {
            let mut client = self.client().await?;
            // One snapshot: the mark, the ranks and the minutes after it agree.
            let transaction = snapshot(&mut client).await?;
            let mark = rollup_mark(&transaction).await?;
            let mut clicked_params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                clicked_params.to_vec();
            clicked_params.push(&mark);
            let mut unclicked_params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                unclicked_params.to_vec();
            unclicked_params.push(&mark);
            let mut found = Vec::new();
            if total > 0 {
                for row in transaction
                    .query(&clicked, &clicked_params)
                    .await
                    .map_err(WriterError::from_postgres)?
                {
                    found.push(link_and_total(&row)?);
                }
            }
            let missing = usize::try_from(limit)
                .unwrap_or(0)
                .saturating_sub(found.len());
            if missing > 0 {
                let rows = transaction
                    .query(&unclicked, &unclicked_params)
                    .await
                    .map_err(WriterError::from_postgres)?;
                for row in rows.iter().take(missing) {
                    found.push(link_and_total(row)?);
                }
            }
            transaction
                .commit()
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(found)
        })
        .await
    }

    /// Locks the owner's live, unblocked link `code` for the rest of
    /// `transaction` and reads its target and (owner's) options after the
    /// lock is held; `None` when there is no such link.
    async fn locked_options(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
        owner: OwnerId,
        code: &str,
    ) -> Result<Option<(String, tinyurl_domain::LinkOptions)>, WriterError> {
        let locked = transaction
            .query_opt(
                "SELECT target_url,
                        CASE WHEN flags & 16 <> 0 THEN
                            (SELECT COALESCE(o.owner_options, o.options) FROM link_options o
                             WHERE o.code = links.code) END
                 FROM links
                 WHERE owner_key_id = $1 AND code = $2 AND target_url IS NOT NULL AND flags & 8 = 0
                 FOR UPDATE",
                &[&owner.0, &code],
            )
            .await
            .map_err(WriterError::from_postgres)?;
        let Some(locked) = locked else {
            return Ok(None);
        };
        let target: String = locked.try_get(0).map_err(WriterError::from_postgres)?;
        let stored: Option<&str> = locked.try_get(1).map_err(WriterError::from_postgres)?;
        Ok(Some((target, stored_options(stored)?)))
    }

    /// The insert of links that carry idempotency keys, tags or options: the links,
    /// the claims of their keys and their tags in one transaction; a claim
    /// whose link was not inserted (its code was taken) is let go, and so
    /// are its tags.
    async fn insert_in_transaction(
        &self,
        client: &mut deadpool_postgres::Object,
        owner: OwnerId,
        columns: &Columns<'_>,
        links: &[NewLink],
    ) -> Result<HashMap<String, (SystemTime, SystemTime)>, WriterError> {
        let transaction = client
            .transaction()
            .await
            .map_err(WriterError::from_postgres)?;
        let keyed = columns.keys.iter().any(Option::is_some);
        let retention = self.idempotency_retention.as_secs_f64();
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &owner.0,
            &columns.codes,
            &columns.targets,
            &columns.statuses,
            &columns.flags,
            &columns.expiries,
        ];
        let sql = if keyed {
            params.extend([
                &retention as &(dyn tokio_postgres::types::ToSql + Sync),
                &columns.keys,
                &columns.fingerprints,
            ]);
            INSERT_KEYED_SQL
        } else {
            INSERT_SQL
        };
        let statement = transaction
            .prepare_cached(sql)
            .await
            .map_err(WriterError::from_postgres)?;
        let rows = transaction
            .query(&statement, &params)
            .await
            .map_err(WriterError::from_postgres)?;
        // Only the keyed insert answers with the keys it let go.
        let orphans = rows
            .iter()
            .filter(|_| keyed)
            .map(|row| row.try_get::<_, Option<String>>(3))
            .filter_map(Result::transpose)
            .collect::<Result<Vec<String>, _>>()
            .map_err(WriterError::from_postgres)?;
        if !orphans.is_empty() {
            transaction
                .execute(
                    "DELETE FROM link_idempotency WHERE owner_key_id = $1 AND key = ANY($2)",
                    &[&owner.0, &orphans],
                )
                .await
                .map_err(WriterError::from_postgres)?;
        }
        let inserted = inserted(&rows)?;
        let (codes, tags): (Vec<&str>, Vec<&str>) = links
            .iter()
            .filter(|link| inserted.contains_key(&link.code))
            .flat_map(|link| {
                link.tags
                    .iter()
                    .map(|tag| (link.code.as_str(), tag.as_str()))
            })
            .unzip();
        if !codes.is_empty() {
            transaction
                .execute(
                    "INSERT INTO link_tags (owner_key_id, code, tag)
                     SELECT $1, code, tag FROM unnest($2::text[], $3::text[]) AS t(code, tag)
                     ON CONFLICT DO NOTHING",
                    &[&owner.0, &codes, &tags],
                )
                .await
                .map_err(WriterError::from_postgres)?;
        }
        let mut codes = Vec::new();
        let mut options = Vec::new();
        let mut owner_forms = Vec::new();
        for link in links
            .iter()
            .filter(|link| inserted.contains_key(&link.code))
        {
            if let (Some(stored), owner_form) = crate::store::stored_options_forms(&link.options) {
                codes.push(link.code.as_str());
                options.push(stored);
                owner_forms.push(owner_form);
            }
        }
        if !codes.is_empty() {
            transaction
                .execute(
                    "INSERT INTO link_options (code, options, owner_options)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                     ON CONFLICT (code) DO UPDATE
                     SET options = EXCLUDED.options, owner_options = EXCLUDED.owner_options",
                    &[&codes, &options, &owner_forms],
                )
                .await
                .map_err(WriterError::from_postgres)?;
        }
        transaction
            .commit()
            .await
            .map_err(WriterError::from_postgres)?;
        Ok(inserted)
    }
}

/// How many of a key's newest links a narrowed newest-first search looks
/// through before it finds the matches through the indexes instead: enough
/// for a page of a text one link in five matches, few enough to cost a
/// search that finds a handful about a millisecond (2,000 cost 10).
const NEWEST_PROBE: i64 = 250;

/// A searched link and its lifetime human clicks (the last column).
fn link_and_total(row: &tokio_postgres::Row) -> Result<(StoredLink, i64), WriterError> {
    let link = StoredLink::from_row(row)?;
    let total: i64 = row.try_get(11).map_err(WriterError::from_postgres)?;
    Ok((link, total))
}

/// A read-only transaction whose statements all see one snapshot.
async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, WriterError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(WriterError::from_postgres)
}

/// The click roll-up's mark: minutes at or before it are in the day rollups
/// (and the keys' day totals and ranks).
async fn rollup_mark(transaction: &deadpool_postgres::Transaction<'_>) -> Result<i32, WriterError> {
    transaction
        .query_one("SELECT rolled_through FROM click_rollup_mark", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(WriterError::from_postgres)
}
