//! The Postgres side of click analytics: a batch's rollups and its id in one
//! transaction, each table in one `UNNEST` upsert. A minute row carries its
//! breakdowns (migration V23) and bounds their values in its own upsert;
//! day rows are a row per value, each group's values bounded under a lock
//! on the group.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Pool, Transaction};

use crate::error::AnalyticsError;
mod bounded;

use self::bounded::{add_bounded, lock_groups};
use crate::{
    ClickStore, Dimension, Fold, Folded, OTHER, ROLL_UP_SLICE_MINUTES, RolledUp, RollupKey,
    RollupRow, RollupTable, StoredValues, ValueGroup, bound_values,
};

/// A fold's minute rows, one per (code, minute, class) with its breakdowns
/// (`click_counts_add` in migration V23 adds them to a stored row, bounding
/// each dimension's named values under the row's lock).
const UPSERT_MINUTES: &str = "
INSERT INTO click_minutes AS stored (code, minute, class, clicks, counts)
SELECT code, minute, class, clicks, counts::jsonb
  FROM UNNEST($1::text[], $2::int4[], $3::int2[], $4::int8[], $5::text[])
       AS m(code, minute, class, clicks, counts)
ON CONFLICT (code, minute, class)
DO UPDATE SET clicks = stored.clicks + EXCLUDED.clicks,
              -- A row with no breakdowns (nothing recorded) skips the call.
              counts = CASE WHEN EXCLUDED.counts = '{}' THEN stored.counts
                            ELSE click_counts_add(stored.counts, EXCLUDED.counts, $6) END";

/// One `click_minutes` row of a fold: its key, total and breakdowns as
/// JSON (`{"1": {"a.example": 2}, "2": {"DE": 2}}`).
#[derive(Debug, PartialEq, Eq)]
struct MinuteCounts {
    code: String,
    minute: i32,
    class: i16,
    clicks: i64,
    counts: String,
}

/// `rows` (a fold's minute rows, a row per value) as `click_minutes` rows,
/// in key order (the order their locks are taken in), each dimension's
/// named values bounded within the fold; the upsert bounds them again
/// against what is stored.
fn minute_counts(rows: &[(RollupKey, i64)], values: usize) -> Vec<MinuteCounts> {
    type Breakdowns = BTreeMap<i16, BTreeMap<String, i64>>;
    let mut minutes: BTreeMap<(String, i32, i16), (i64, Breakdowns)> = BTreeMap::new();
    for (key, clicks) in bound_values(rows, &StoredValues::default(), values) {
        let RollupKey {
            code,
            bucket,
            dimension,
            value,
            class,
        } = key;
        let (total, breakdowns) = minutes.entry((code, bucket, class)).or_default();
        if dimension == Dimension::Total {
            *total = total.saturating_add(clicks);
        } else {
            breakdowns
                .entry(dimension as i16)
                .or_default()
                .insert(value, clicks);
        }
    }
    minutes
        .into_iter()
        .map(
            |((code, minute, class), (clicks, breakdowns))| MinuteCounts {
                code,
                minute,
                class,
                clicks,
                // Maps of strings and numbers always serialize.
                counts: serde_json::to_string(&breakdowns).unwrap_or_else(|_| "{}".to_owned()),
            },
        )
        .collect()
}

/// [`UPSERT_MINUTES`] of `rows`.
async fn upsert_minutes(
    transaction: &Transaction<'_>,
    rows: &[(RollupKey, i64)],
    values: usize,
) -> Result<(), AnalyticsError> {
    let minutes = minute_counts(rows, values);
    if minutes.is_empty() {
        return Ok(());
    }
    let codes: Vec<&str> = minutes.iter().map(|row| row.code.as_str()).collect();
    let buckets: Vec<i32> = minutes.iter().map(|row| row.minute).collect();
    let classes: Vec<i16> = minutes.iter().map(|row| row.class).collect();
    let clicks: Vec<i64> = minutes.iter().map(|row| row.clicks).collect();
    let counts: Vec<&str> = minutes.iter().map(|row| row.counts.as_str()).collect();
    let bound = i32::try_from(values).unwrap_or(i32::MAX);
    execute(
        transaction,
        UPSERT_MINUTES,
        &[&codes, &buckets, &classes, &clicks, &counts, &bound],
    )
    .await?;
    Ok(())
}

/// The bound on one roll-up transaction, on both sides: the client stops
/// waiting and the server cancels the statement. Background upkeep, so far
/// beyond a request's bound; the connection's own `statement_timeout` (the
/// request bound) would cancel a large slice half-way, every time.
const ROLL_UP_TIMEOUT: Duration = Duration::from_secs(60);

const UPSERT_TOTALS: &str = "
INSERT INTO click_totals AS stored (code, clicks, bot_clicks)
SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[])
ON CONFLICT (code)
DO UPDATE SET clicks = stored.clicks + EXCLUDED.clicks,
              bot_clicks = stored.bot_clicks + EXCLUDED.bot_clicks";

/// Link days' unique visitors: the larger of the stored count and the
/// sketch's count now (two consumers may count one sketch in either order),
/// a row untouched when it holds the larger already.
const UPSERT_VISITORS: &str = "
INSERT INTO click_days AS stored (code, day, dimension, value, class, clicks)
SELECT code, day, 8, '', 0, visitors
  FROM UNNEST($1::text[], $2::int4[], $3::int8[]) AS v(code, day, visitors)
ON CONFLICT (code, day, dimension, value, class)
DO UPDATE SET clicks = EXCLUDED.clicks WHERE stored.clicks < EXCLUDED.clicks";

/// A `link.clicked` webhook message per link and minute of a fold, for
/// each enabled endpoint of the link's owner that asked for them (see the
/// links migration V20): written with the fold, so a batch's clicks are
/// told once, however often the batch is redelivered. The one-time filter
/// makes it nothing but a probe of the endpoints while no one asks.
const ENQUEUE_CLICKED: &str = "
INSERT INTO webhook_messages (message_id, endpoint_id, event_type, payload)
SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), e.id, 'link.clicked',
       jsonb_build_object('type', 'link.clicked', 'timestamp', now(),
                          'data', jsonb_build_object('code', c.code,
                                                     'minute', to_timestamp(c.minute::int8 * 60),
                                                     'clicks', c.clicks,
                                                     'bot_clicks', c.bot_clicks))::text
  FROM UNNEST($1::text[], $2::int4[], $3::int8[], $4::int8[]) AS c(code, minute, clicks, bot_clicks)
  JOIN links l ON l.code = c.code
  JOIN webhook_endpoints e ON e.owner_key_id = l.owner_key_id
 WHERE EXISTS (SELECT FROM webhook_endpoints
                WHERE disabled_at IS NULL AND 'link.clicked' = ANY (events))
   AND e.disabled_at IS NULL AND 'link.clicked' = ANY (e.events)";

/// The day rows' totals (dimension 0) added to what each key's links have
/// had: clicks per key per day, and each link's human clicks, ranked per key
/// (the console's overview and its most-clicked order read these rather than
/// every link's rows). Kept by the roll-up, and by a fold only for the late
/// minutes it writes to the day rollups itself, so the click path writes
/// nothing more; a rank row changes once per roll-up window, not per fold
/// (its clicks are indexed: every change is a new index entry). The owner
/// and the creation time are the link's: a day row whose link is gone
/// (never in the table) counts for no key.
///
/// One statement for both, so the links are looked up once: joining the
/// window's codes to `links` was a third of a roll-up's primary time when
/// each table had its own statement.
const UPSERT_OWNER_DAYS: &str = "
WITH owned AS (
    SELECT l.owner_key_id, l.code, l.created_at, r.day, r.bot, r.clicks
      FROM UNNEST($1::text[], $2::int4[], $3::bool[], $4::int8[]) AS r(code, day, bot, clicks)
      JOIN links l ON l.code = r.code
), days AS (
    INSERT INTO owner_click_days AS stored (owner_key_id, day, bot, clicks)
    SELECT owner_key_id, day, bot, sum(clicks)::int8 FROM owned
     GROUP BY 1, 2, 3
    ON CONFLICT (owner_key_id, day, bot)
    DO UPDATE SET clicks = stored.clicks + EXCLUDED.clicks
)
-- The ranks: human clicks only, as the console orders by.
INSERT INTO click_ranks AS stored (owner_key_id, code, created_at, clicks)
SELECT owner_key_id, code, created_at, sum(clicks)::int8 FROM owned
 WHERE NOT bot
 GROUP BY 1, 2, 3
ON CONFLICT (owner_key_id, code)
DO UPDATE SET clicks = stored.clicks + EXCLUDED.clicks";

/// The breakdowns of `{rows}` over the range: per (dimension, bot) the `$4`
/// values with the most clicks, and everything else (the stored "other"
/// included) summed into one "other" row, so the answer is small however
/// many values the range holds.
const TOP_VALUES: &str = "
SELECT 0, dimension, CASE WHEN rank <= $4 THEN value ELSE 'other' END, bot, sum(clicks)::int8
  FROM (SELECT dimension, value, bot, sum(clicks) AS clicks,
               row_number() OVER (PARTITION BY dimension, bot
                                  ORDER BY value = 'other', sum(clicks) DESC, value) AS rank
          FROM {rows} WHERE dimension > 0 AND dimension <> 8
         GROUP BY dimension, value, bot) ranked
 GROUP BY 2, 3, 4";

/// The series (dimension 0 by bucket) and the breakdowns (summed over the
/// range, [`TOP_VALUES`]), aggregated by the database rather than shipped
/// row by row.
fn read_minutes() -> String {
    format!(
        "WITH rows AS (
             SELECT minute, dimension, value, class <> 0 AS bot, clicks FROM click_minute_rows
              WHERE code = $1 AND minute >= $2 AND minute < $3 AND class = ANY ($5::int2[])
         )
         SELECT minute, 0::int2, ''::text, bot, sum(clicks)::int8 FROM rows
          WHERE dimension = 0 GROUP BY minute, bot
         UNION ALL {}",
        TOP_VALUES.replace("{rows}", "rows")
    )
}

/// [`read_minutes`] for days: the day rollups plus the minutes not rolled up
/// yet, read in one statement (one snapshot, so the mark and both tables
/// agree).
fn read_days() -> String {
    format!(
        "WITH rows AS (
             SELECT day, dimension, value, class <> 0 AS bot, clicks FROM click_days
              WHERE code = $1 AND day >= $2 AND day < $3 AND class = ANY ($5::int2[])
             UNION ALL
             SELECT minute / 1440, dimension, value, class <> 0, clicks FROM click_minute_rows
              WHERE code = $1 AND minute > (SELECT rolled_through FROM click_rollup_mark)
                AND minute >= $2::int8 * 1440 AND minute < $3::int8 * 1440
                AND class = ANY ($5::int2[])
         )
         SELECT day, 0::int2, ''::text, bot, sum(clicks)::int8 FROM rows
          WHERE dimension = 0 GROUP BY day, bot
         UNION ALL {}",
        TOP_VALUES.replace("{rows}", "rows")
    )
}

/// [`ClickStore::export`]'s rows of `{rows}`: every row, summed per step.
const EXPORT: &str = "
WITH rows AS ({rows})
SELECT bucket / $4 * $4, dimension, value, bot, sum(clicks)::int8 FROM rows
 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 LIMIT $5";

const EXPORT_MINUTES: &str = "
SELECT minute AS bucket, dimension, value, class <> 0 AS bot, clicks FROM click_minute_rows
 WHERE code = $1 AND minute >= $2 AND minute < $3 AND class = ANY ($6::int2[])";

const EXPORT_DAYS: &str = "
SELECT day AS bucket, dimension, value, class <> 0 AS bot, clicks FROM click_days
 WHERE code = $1 AND day >= $2 AND day < $3 AND class = ANY ($6::int2[])
UNION ALL
SELECT minute / 1440, dimension, value, class <> 0, clicks FROM click_minute_rows
 WHERE code = $1 AND minute > (SELECT rolled_through FROM click_rollup_mark)
   AND minute >= $2::int8 * 1440 AND minute < $3::int8 * 1440
   AND class = ANY ($6::int2[])";

/// One roll-up window: the minutes after the mark up to `$2`, summed by
/// day, in key order.
const ROLL_UP_WINDOW: &str = "
SELECT code, minute / 1440, dimension, value, class, sum(clicks)::int8 FROM click_minute_rows
 WHERE minute > $1 AND minute <= $2
 GROUP BY code, minute / 1440, dimension, value, class
 ORDER BY code, minute / 1440, dimension, value, class";

/// Rows of a roll-up window fetched at a time: about 8 MB of keys held, and
/// few enough shares that their bound reads (each a join to the day rows)
/// stay a small part of a busy slice's work.
const ROLL_UP_FETCH_ROWS: i32 = 50_000;

/// A [`ROLL_UP_WINDOW`] row.
fn window_row(row: &tokio_postgres::Row) -> Result<(RollupKey, i64), AnalyticsError> {
    let dimension: i16 = row.try_get(2).map_err(AnalyticsError::from_postgres)?;
    Ok((
        RollupKey {
            code: row.try_get(0).map_err(AnalyticsError::from_postgres)?,
            bucket: row.try_get(1).map_err(AnalyticsError::from_postgres)?,
            dimension: Dimension::from_stored(dimension)?,
            value: row.try_get(3).map_err(AnalyticsError::from_postgres)?,
            class: row.try_get(4).map_err(AnalyticsError::from_postgres)?,
        },
        row.try_get(5).map_err(AnalyticsError::from_postgres)?,
    ))
}

/// `sql` as a statement prepared on the transaction's connection, kept by
/// the pool with the connection: a fold runs the same few statements over
/// and over, so they are parsed and planned once per connection instead of
/// on every call (and each call is one round trip instead of two).
async fn prepared(
    transaction: &Transaction<'_>,
    sql: &str,
) -> Result<tokio_postgres::Statement, AnalyticsError> {
    transaction
        .prepare_cached(sql)
        .await
        .map_err(AnalyticsError::from_postgres)
}

/// `sql` run [`prepared`] in the transaction with `params`; rows affected.
async fn execute(
    transaction: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, AnalyticsError> {
    let statement = prepared(transaction, sql).await?;
    transaction
        .execute(&statement, params)
        .await
        .map_err(AnalyticsError::from_postgres)
}

/// The roll-up mark, locked as `lock` says (`FOR SHARE` by folds, `FOR
/// UPDATE` by the roll-up) until the transaction ends.
async fn rollup_mark(transaction: &Transaction<'_>, lock: &str) -> Result<i32, AnalyticsError> {
    let statement = prepared(
        transaction,
        &format!("SELECT rolled_through FROM click_rollup_mark {lock}"),
    )
    .await?;
    transaction
        .query_one(&statement, &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(AnalyticsError::from_postgres)
}

/// Deletes the minute rows `filter` (on `$1`) selects; how many rows they
/// were in the days' shape (a total and a row per value, as
/// `click_minute_rows` reads them), so the count an owner is told does not
/// depend on how a store keeps its minutes.
async fn delete_minutes(
    transaction: &Transaction<'_>,
    filter: &str,
    parameter: &(dyn tokio_postgres::types::ToSql + Sync),
) -> Result<u64, AnalyticsError> {
    let deleted: i64 = transaction
        .query_one(
            &format!(
                "WITH gone AS (DELETE FROM click_minutes WHERE {filter} RETURNING counts)
                 SELECT coalesce(sum(1 + (SELECT count(*) FROM jsonb_each(counts) d,
                                                               jsonb_each(d.value) v)), 0)::int8
                   FROM gone"
            ),
            &[parameter],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(AnalyticsError::from_postgres)?;
    Ok(u64::try_from(deleted).unwrap_or(0))
}

/// A rollup row as the reads select it: bucket, dimension, value, bot,
/// clicks.
fn rollup_row(row: &tokio_postgres::Row) -> Result<RollupRow, AnalyticsError> {
    let dimension: i16 = row.try_get(1).map_err(AnalyticsError::from_postgres)?;
    Ok(RollupRow {
        bucket: row.try_get(0).map_err(AnalyticsError::from_postgres)?,
        dimension: Dimension::from_stored(dimension)?,
        value: row.try_get(2).map_err(AnalyticsError::from_postgres)?,
        bot: row.try_get(3).map_err(AnalyticsError::from_postgres)?,
        clicks: row.try_get(4).map_err(AnalyticsError::from_postgres)?,
    })
}

/// A transaction for upkeep (the roll-up, forgetting clicks), bounded by
/// [`ROLL_UP_TIMEOUT`] on the server: the connection's own
/// `statement_timeout` is a request's.
async fn upkeep_transaction(
    client: &mut deadpool_postgres::Object,
) -> Result<Transaction<'_>, AnalyticsError> {
    let transaction = client
        .transaction()
        .await
        .map_err(AnalyticsError::from_postgres)?;
    transaction
        .batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            ROLL_UP_TIMEOUT.as_millis()
        ))
        .await
        .map_err(AnalyticsError::from_postgres)?;
    Ok(transaction)
}

/// `work` bounded by [`ROLL_UP_TIMEOUT`] on the client.
async fn upkeep_bounded<T>(
    work: impl std::future::Future<Output = Result<T, AnalyticsError>>,
) -> Result<T, AnalyticsError> {
    tokio::time::timeout(ROLL_UP_TIMEOUT, work)
        .await
        .map_err(|_| tinyurl_runtime::StoreError::timed_out(ROLL_UP_TIMEOUT))?
}

/// Adds day rows (of any dimension; only the totals are read) to the keys'
/// day totals and the links' ranks ([`UPSERT_OWNER_DAYS`]), in the caller's
/// transaction, which holds the roll-up mark.
async fn add_owner_days(
    transaction: &Transaction<'_>,
    days: &[(RollupKey, i64)],
) -> Result<(), AnalyticsError> {
    let totals: Vec<&(RollupKey, i64)> = days
        .iter()
        .filter(|(key, _)| key.dimension == Dimension::Total)
        .collect();
    if totals.is_empty() {
        return Ok(());
    }
    let codes: Vec<&str> = totals.iter().map(|(key, _)| key.code.as_str()).collect();
    let buckets: Vec<i32> = totals.iter().map(|(key, _)| key.bucket).collect();
    let bots: Vec<bool> = totals.iter().map(|(key, _)| key.class != 0).collect();
    let clicks: Vec<i64> = totals.iter().map(|(_, clicks)| *clicks).collect();
    execute(
        transaction,
        UPSERT_OWNER_DAYS,
        &[&codes, &buckets, &bots, &clicks],
    )
    .await?;
    Ok(())
}

/// Adds `fold` to the rollups and the totals, in the caller's transaction
/// (which has recorded the batch ids).
async fn add_fold(
    transaction: &Transaction<'_>,
    fold: &Fold,
    values: usize,
) -> Result<(), AnalyticsError> {
    // Shared: folds run side by side, a roll-up waits for them (and they for
    // it).
    let rolled_through = rollup_mark(transaction, "FOR SHARE").await?;
    let late_days = fold.late_days(rolled_through);
    // Day groups are locked before any minute row, in every fold.
    lock_groups(transaction, &late_days).await?;
    upsert_minutes(transaction, &fold.minutes, values).await?;
    add_bounded(transaction, &late_days, values).await?;
    add_owner_days(transaction, &late_days).await?;
    let codes: Vec<&str> = fold
        .totals
        .iter()
        .map(|(code, _, _)| code.as_str())
        .collect();
    let humans: Vec<i64> = fold.totals.iter().map(|(_, humans, _)| *humans).collect();
    let bots: Vec<i64> = fold.totals.iter().map(|(_, _, bots)| *bots).collect();
    execute(transaction, UPSERT_TOTALS, &[&codes, &humans, &bots]).await?;
    enqueue_clicked(transaction, fold).await?;
    if !fold.visitors.is_empty() {
        let codes: Vec<&str> = fold
            .visitors
            .iter()
            .map(|(code, _, _)| code.as_str())
            .collect();
        let days: Vec<i32> = fold.visitors.iter().map(|(_, day, _)| *day).collect();
        let counts: Vec<i64> = fold.visitors.iter().map(|(_, _, count)| *count).collect();
        execute(transaction, UPSERT_VISITORS, &[&codes, &days, &counts]).await?;
    }
    Ok(())
}

/// [`ENQUEUE_CLICKED`] for the links (not the orphan keys) of `fold`: each
/// link's human and bot clicks per minute ([`Fold::clicked`]).
async fn enqueue_clicked(transaction: &Transaction<'_>, fold: &Fold) -> Result<(), AnalyticsError> {
    let clicked = fold.clicked();
    if clicked.is_empty() {
        return Ok(());
    }
    let codes: Vec<&str> = clicked.iter().map(|(code, ..)| *code).collect();
    let buckets: Vec<i32> = clicked.iter().map(|(_, minute, ..)| *minute).collect();
    let humans: Vec<i64> = clicked.iter().map(|(_, _, humans, _)| *humans).collect();
    let bots: Vec<i64> = clicked.iter().map(|(.., bots)| *bots).collect();
    execute(
        transaction,
        ENQUEUE_CLICKED,
        &[&codes, &buckets, &humans, &bots],
    )
    .await?;
    Ok(())
}

/// The rollup tables of the writer's Postgres database (its migrations
/// create them, beside the links).
#[derive(Clone)]
pub struct PostgresRollups {
    pool: Pool,
    timeout: std::time::Duration,
}

impl PostgresRollups {
    /// Rollups on `pool`; every call answers within `timeout`.
    pub fn new(pool: Pool, timeout: std::time::Duration) -> Self {
        Self { pool, timeout }
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, AnalyticsError>>,
    ) -> Result<T, AnalyticsError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| tinyurl_runtime::StoreError::timed_out(self.timeout))?
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, AnalyticsError> {
        self.pool.get().await.map_err(AnalyticsError::from_pool)
    }
}

#[async_trait::async_trait]
impl ClickStore for PostgresRollups {
    #[tracing::instrument(name = "fold_clicks", skip_all, fields(rows = fold.minutes.len()))]
    async fn fold(
        &self,
        batch_id: &str,
        fold: &Fold,
        values: usize,
    ) -> Result<Folded, AnalyticsError> {
        // One batch is a set of one: recorded now, or found (folded before).
        let folded = self.fold_together(&[batch_id], fold, values).await?;
        Ok(if folded { Folded::Now } else { Folded::Before })
    }

    async fn fold_together(
        &self,
        batch_ids: &[&str],
        fold: &Fold,
        values: usize,
    ) -> Result<bool, AnalyticsError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(AnalyticsError::from_postgres)?;
            // Concurrent folds of one id (a batch reclaimed from a slow
            // consumer) meet here: the second waits for the first to commit
            // and then finds the id.
            let record = prepared(
                &transaction,
                "INSERT INTO click_batches (batch_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            )
            .await?;
            let recorded = transaction
                .execute(&record, &[&batch_ids])
                .await
                .map_err(AnalyticsError::from_postgres)?;
            // One of them was folded before (or is being folded now): the
            // transaction is dropped, nothing written.
            if usize::try_from(recorded).ok() != Some(batch_ids.len()) {
                return Ok(false);
            }
            add_fold(&transaction, fold, values).await?;
            transaction
                .commit()
                .await
                .map_err(AnalyticsError::from_postgres)?;
            Ok(true)
        })
        .await
    }

    async fn roll_up_days(&self, through: i32, values: usize) -> Result<RolledUp, AnalyticsError> {
        let work = async {
            let mut client = self.client().await?;
            let transaction = upkeep_transaction(&mut client).await?;
            let rolled_through = rollup_mark(&transaction, "FOR UPDATE").await?;
            if through <= rolled_through {
                return Ok(RolledUp {
                    rows: 0,
                    caught_up: true,
                });
            }
            let until = through.min(rolled_through.saturating_add(ROLL_UP_SLICE_MINUTES));
            // The mark locked FOR UPDATE keeps every fold out, so the day
            // groups need no locks of their own here. The window is read
            // through a portal and added to the days a run of whole links
            // at a time (a day group's values are all one link's, so its
            // bound sees them together): a writer holds a share of a slice,
            // not the slice, so a busy one (a catch-up after an outage)
            // cannot take it past its memory limit. The keys' totals are
            // added to the owners' days once, at the end: that statement
            // joins the links, and once per share it scanned them again.
            let statement = prepared(&transaction, ROLL_UP_WINDOW).await?;
            let portal = transaction
                .bind(&statement, &[&rolled_through, &until])
                .await
                .map_err(AnalyticsError::from_postgres)?;
            let mut rows = 0;
            let mut held: Vec<(RollupKey, i64)> = Vec::new();
            let mut totals: Vec<(RollupKey, i64)> = Vec::new();
            loop {
                let fetched = transaction
                    .query_portal(&portal, ROLL_UP_FETCH_ROWS)
                    .await
                    .map_err(AnalyticsError::from_postgres)?;
                let last = fetched.len() < ROLL_UP_FETCH_ROWS as usize;
                for row in &fetched {
                    held.push(window_row(row)?);
                }
                drop(fetched);
                // The last link held may go on in the next share.
                let whole = match held.last() {
                    Some(_) if last => held.len(),
                    Some((newest, _)) => held.partition_point(|(key, _)| key.code < newest.code),
                    None => 0,
                };
                if whole > 0 {
                    let share: Vec<(RollupKey, i64)> = held.drain(..whole).collect();
                    rows += add_bounded(&transaction, &share, values).await?;
                    totals.extend(
                        share
                            .into_iter()
                            .filter(|(key, _)| key.dimension == Dimension::Total),
                    );
                }
                if last {
                    break;
                }
            }
            add_owner_days(&transaction, &totals).await?;
            transaction
                .execute(
                    "UPDATE click_rollup_mark SET rolled_through = $1",
                    &[&until],
                )
                .await
                .map_err(AnalyticsError::from_postgres)?;
            transaction
                .commit()
                .await
                .map_err(AnalyticsError::from_postgres)?;
            Ok(RolledUp {
                rows,
                caught_up: until == through,
            })
        };
        upkeep_bounded(work).await
    }

    async fn rollups(
        &self,
        code: &str,
        table: RollupTable,
        (first, end): (i32, i32),
        top: usize,
        classes: &[i16],
    ) -> Result<Vec<RollupRow>, AnalyticsError> {
        let top = i64::try_from(top).unwrap_or(i64::MAX);
        self.bounded(async {
            let client = self.client().await?;
            let sql = match table {
                RollupTable::Minutes => read_minutes(),
                RollupTable::Days => read_days(),
            };
            let statement = client
                .prepare_cached(&sql)
                .await
                .map_err(AnalyticsError::from_postgres)?;
            let rows = client
                .query(&statement, &[&code, &first, &end, &top, &classes])
                .await
                .map_err(AnalyticsError::from_postgres)?;
            rows.iter().map(rollup_row).collect()
        })
        .await
    }

    async fn export(
        &self,
        code: &str,
        table: RollupTable,
        (first, end): (i32, i32),
        step: i32,
        limit: i64,
        classes: &[i16],
    ) -> Result<Vec<RollupRow>, AnalyticsError> {
        let rows = match table {
            RollupTable::Minutes => EXPORT_MINUTES,
            RollupTable::Days => EXPORT_DAYS,
        };
        let sql = EXPORT.replace("{rows}", rows);
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&sql)
                .await
                .map_err(AnalyticsError::from_postgres)?;
            client
                .query(&statement, &[&code, &first, &end, &step, &limit, &classes])
                .await
                .map_err(AnalyticsError::from_postgres)?
                .iter()
                .map(rollup_row)
                .collect()
        })
        .await
    }

    async fn totals(&self, code: &str) -> Result<(i64, i64), AnalyticsError> {
        self.bounded(async {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT clicks, bot_clicks FROM click_totals WHERE code = $1",
                    &[&code],
                )
                .await
                .map_err(AnalyticsError::from_postgres)?;
            match row {
                None => Ok((0, 0)),
                Some(row) => Ok((
                    row.try_get(0).map_err(AnalyticsError::from_postgres)?,
                    row.try_get(1).map_err(AnalyticsError::from_postgres)?,
                )),
            }
        })
        .await
    }

    async fn visitors(
        &self,
        code: &str,
        first: i32,
        end: i32,
    ) -> Result<Vec<(i32, i64)>, AnalyticsError> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT day, clicks FROM click_days
                      WHERE code = $1 AND day >= $2 AND day < $3 AND dimension = 8
                      ORDER BY day",
                )
                .await
                .map_err(AnalyticsError::from_postgres)?;
            client
                .query(&statement, &[&code, &first, &end])
                .await
                .map_err(AnalyticsError::from_postgres)?
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(AnalyticsError::from_postgres)
        })
        .await
    }

    async fn purge(&self, code: &str) -> Result<u64, AnalyticsError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(AnalyticsError::from_postgres)?;
            let mut rows = delete_minutes(&transaction, "code = $1", &code).await?;
            for table in ["click_days", "click_totals"] {
                rows += transaction
                    .execute(&format!("DELETE FROM {table} WHERE code = $1"), &[&code])
                    .await
                    .map_err(AnalyticsError::from_postgres)?;
            }
            transaction
                .commit()
                .await
                .map_err(AnalyticsError::from_postgres)?;
            Ok(rows)
        })
        .await
    }

    async fn forget(&self, owner: i64, codes: Option<&[String]>) -> Result<u64, AnalyticsError> {
        let work = async {
            let mut client = self.client().await?;
            // A key's data can be large: the roll-up's bound, not a request's.
            let transaction = upkeep_transaction(&mut client).await?;
            // Folds and the roll-up wait: the day totals taken off are
            // exactly the ones added.
            rollup_mark(&transaction, "FOR UPDATE").await?;
            let codes: Vec<String> = match codes {
                Some(codes) => codes.to_vec(),
                None => transaction
                    .query("SELECT code FROM links WHERE owner_key_id = $1", &[&owner])
                    .await
                    .map_err(AnalyticsError::from_postgres)?
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect::<Result<_, _>>()
                    .map_err(AnalyticsError::from_postgres)?,
            };
            let mut rows = transaction
                .execute(
                    "UPDATE owner_click_days o SET clicks = o.clicks - d.clicks
                       FROM (SELECT day, class <> 0 AS bot, sum(clicks)::int8 AS clicks
                               FROM click_days WHERE code = ANY($2) AND dimension = 0
                              GROUP BY 1, 2) d
                      WHERE o.owner_key_id = $1 AND o.day = d.day AND o.bot = d.bot",
                    &[&owner, &codes],
                )
                .await
                .map_err(AnalyticsError::from_postgres)?;
            rows += transaction
                .execute(
                    "DELETE FROM click_ranks WHERE owner_key_id = $1 AND code = ANY($2)",
                    &[&owner, &codes],
                )
                .await
                .map_err(AnalyticsError::from_postgres)?;
            rows += delete_minutes(&transaction, "code = ANY($1)", &codes).await?;
            for table in ["click_days", "click_totals"] {
                rows += transaction
                    .execute(
                        &format!("DELETE FROM {table} WHERE code = ANY($1)"),
                        &[&codes],
                    )
                    .await
                    .map_err(AnalyticsError::from_postgres)?;
            }
            transaction
                .commit()
                .await
                .map_err(AnalyticsError::from_postgres)?;
            Ok(rows)
        };
        upkeep_bounded(work).await
    }

    async fn prune(
        &self,
        minute: i32,
        day: i32,
        batches_before: SystemTime,
        limit: i64,
    ) -> Result<u64, AnalyticsError> {
        self.bounded(async {
            let client = self.client().await?;
            // By ctid, in bounded slices: each statement holds its row locks
            // briefly, and a concurrent prune by another writer only wastes
            // a little work.
            let minutes = client
                .execute(
                    "DELETE FROM click_minutes WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM click_minutes
                          WHERE minute < $1
                            AND minute <= (SELECT rolled_through FROM click_rollup_mark)
                          LIMIT $2))",
                    &[&minute, &limit],
                )
                .await
                .map_err(AnalyticsError::from_postgres)?;
            let days = client
                .execute(
                    "DELETE FROM click_days WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM click_days WHERE day < $1 LIMIT $2))",
                    &[&day, &limit],
                )
                .await
                .map_err(AnalyticsError::from_postgres)?;
            // A key's day totals: a few rows a day, deleted with the days.
            let owner_days = client
                .execute(
                    "DELETE FROM owner_click_days WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM owner_click_days WHERE day < $1 LIMIT $2))",
                    &[&day, &limit],
                )
                .await
                .map_err(AnalyticsError::from_postgres)?;
            let batches = client
                .execute(
                    "DELETE FROM click_batches WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM click_batches WHERE folded_at < $1 LIMIT $2))",
                    &[&batches_before, &limit],
                )
                .await
                .map_err(AnalyticsError::from_postgres)?;
            Ok(minutes + days + owner_days + batches)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: &str, minute: i32, dimension: Dimension, value: &str, class: i16) -> RollupKey {
        RollupKey {
            code: code.to_owned(),
            bucket: minute,
            dimension,
            value: value.to_owned(),
            class,
        }
    }

    #[test]
    fn a_minute_row_carries_its_breakdowns_bounded_within_the_fold() {
        let rows = vec![
            (key("a", 7, Dimension::Total, "", 0), 6),
            (key("a", 7, Dimension::Referrer, "x.example", 0), 3),
            (key("a", 7, Dimension::Referrer, "y.example", 0), 2),
            (key("a", 7, Dimension::Referrer, "z.example", 0), 1),
            (key("a", 7, Dimension::Country, "DE", 0), 6),
            (key("a", 7, Dimension::Total, "", 2), 1),
            (key("a", 7, Dimension::Class, "previewer", 2), 1),
            (key("b", 7, Dimension::Total, "", 0), 1),
        ];
        let minutes = minute_counts(&rows, 2);
        let row = |code: &str, class: i16, clicks: i64, counts: &str| MinuteCounts {
            code: code.to_owned(),
            minute: 7,
            class,
            clicks,
            counts: counts.to_owned(),
        };
        assert_eq!(
            minutes,
            [
                row(
                    "a",
                    0,
                    6,
                    r#"{"1":{"other":1,"x.example":3,"y.example":2},"2":{"DE":6}}"#
                ),
                row("a", 2, 1, r#"{"6":{"previewer":1}}"#),
                row("b", 0, 1, "{}"),
            ]
        );
    }
}
