//! The embedded store's side of click analytics: the same rollups as
//! Postgres, one `BEGIN IMMEDIATE` transaction per batch.

use std::time::SystemTime;

use tinyurl_runtime::sqlite::rusqlite::{self, TransactionBehavior};
use tinyurl_runtime::sqlite::to_micros;

use crate::error::AnalyticsError;
use crate::{
    ClickStore, Dimension, Fold, Folded, OTHER, ROLL_UP_SLICE_MINUTES, RolledUp, RollupKey,
    RollupRow, RollupTable, StoredValues, bound_values,
};
use tinyurl_runtime::sqlite::Sqlite;

fn names(table: RollupTable) -> (&'static str, &'static str) {
    match table {
        RollupTable::Minutes => ("click_minutes", "minute"),
        RollupTable::Days => ("click_days", "day"),
    }
}

fn rollup_mark(transaction: &rusqlite::Transaction<'_>) -> rusqlite::Result<i32> {
    transaction.query_row("SELECT rolled_through FROM click_rollup_mark", [], |row| {
        row.get(0)
    })
}

fn upsert_rollups(
    transaction: &rusqlite::Transaction<'_>,
    table: RollupTable,
    rows: &[(RollupKey, i64)],
) -> rusqlite::Result<()> {
    let (name, bucket) = names(table);
    let mut statement = transaction.prepare_cached(&format!(
        "INSERT INTO {name} (code, {bucket}, dimension, value, class, clicks)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (code, {bucket}, dimension, value, class)
         DO UPDATE SET clicks = clicks + excluded.clicks"
    ))?;
    for (key, clicks) in rows {
        statement.execute((
            &key.code,
            key.bucket,
            key.dimension as i16,
            &key.value,
            key.class,
            clicks,
        ))?;
    }
    Ok(())
}

/// What `table` holds of the groups `rows` add to (the write lock of the
/// transaction keeps every other writer out meanwhile).
fn stored_values(
    transaction: &rusqlite::Transaction<'_>,
    table: RollupTable,
    rows: &[(RollupKey, i64)],
) -> rusqlite::Result<StoredValues> {
    let (name, bucket) = names(table);
    let mut count = transaction.prepare_cached(&format!(
        "SELECT count(*) FROM {name}
          WHERE code = ?1 AND {bucket} = ?2 AND dimension = ?3 AND class = ?4 AND value <> ?5"
    ))?;
    let mut present = transaction.prepare_cached(&format!(
        "SELECT 1 FROM {name}
          WHERE code = ?1 AND {bucket} = ?2 AND dimension = ?3 AND value = ?4 AND class = ?5"
    ))?;
    let mut stored = StoredValues::default();
    for (key, _) in rows
        .iter()
        .filter(|(key, _)| key.dimension != Dimension::Total && key.value != OTHER)
    {
        if let std::collections::hash_map::Entry::Vacant(slot) = stored.counts.entry(key.group()) {
            let named: i64 = count.query_row(
                (
                    &key.code,
                    key.bucket,
                    key.dimension as i16,
                    key.class,
                    OTHER,
                ),
                |row| row.get(0),
            )?;
            slot.insert(usize::try_from(named).unwrap_or(usize::MAX));
        }
        if present.exists((
            &key.code,
            key.bucket,
            key.dimension as i16,
            &key.value,
            key.class,
        ))? {
            stored.present.insert(key.clone());
        }
    }
    Ok(stored)
}

/// `link.clicked` webhook messages for the links of `fold`, in its
/// transaction: one per link and minute ([`Fold::clicked`]) for each enabled
/// endpoint of the link's owner that asked for them (as in Postgres; the
/// endpoints are the links migration V20's). One probe when no one asks.
fn enqueue_clicked(transaction: &rusqlite::Transaction<'_>, fold: &Fold) -> rusqlite::Result<()> {
    let asked: bool = transaction
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM webhook_endpoints e, json_each(e.events) ev
                             WHERE e.disabled_at IS NULL AND ev.value = 'link.clicked')",
        )?
        .query_row([], |row| row.get(0))?;
    if !asked {
        return Ok(());
    }
    let mut enqueue = transaction.prepare_cached(
        "INSERT INTO webhook_messages (message_id, endpoint_id, event_type, payload, created_at,
                                      next_attempt_at)
         SELECT 'msg_' || lower(hex(randomblob(16))), e.id, 'link.clicked',
                json_object('type', 'link.clicked',
                            'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                            'data', json_object('code', l.code,
                                                'minute', strftime('%Y-%m-%dT%H:%M:%SZ', ?2 * 60, 'unixepoch'),
                                                'clicks', ?3, 'bot_clicks', ?4)),
                ?5, ?5
           FROM links l JOIN webhook_endpoints e ON e.owner_key_id = l.owner_key_id
          WHERE l.code = ?1 AND e.disabled_at IS NULL
            AND EXISTS (SELECT 1 FROM json_each(e.events) WHERE value = 'link.clicked')",
    )?;
    let now = to_micros(SystemTime::now());
    for (code, minute, humans, bots) in fold.clicked() {
        enqueue.execute((code, minute, humans, bots, now))?;
    }
    Ok(())
}

/// `rows` bounded against what `table` holds, then added to it; how many
/// rows were written.
fn add_bounded(
    transaction: &rusqlite::Transaction<'_>,
    table: RollupTable,
    rows: &[(RollupKey, i64)],
    values: usize,
) -> rusqlite::Result<u64> {
    let stored = stored_values(transaction, table, rows)?;
    let bounded = bound_values(rows, &stored, values);
    upsert_rollups(transaction, table, &bounded)?;
    Ok(bounded.len() as u64)
}

/// The rollup tables of the embedded database (its migrations create
/// them, beside the links).
#[derive(Clone)]
pub struct SqliteRollups {
    db: Sqlite,
}

impl SqliteRollups {
    pub fn new(db: Sqlite) -> Self {
        Self { db }
    }
}

#[async_trait::async_trait]
impl ClickStore for SqliteRollups {
    async fn fold(
        &self,
        batch_id: &str,
        fold: &Fold,
        values: usize,
    ) -> Result<Folded, AnalyticsError> {
        let batch_id = batch_id.to_owned();
        // The fold is moved to the blocking thread; batches are small.
        let fold = fold.clone();
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let recorded = transaction.execute(
                    "INSERT OR IGNORE INTO click_batches (batch_id, folded_at) VALUES (?1, ?2)",
                    (&batch_id, to_micros(SystemTime::now())),
                )?;
                if recorded == 0 {
                    return Ok(Folded::Before);
                }
                // The write lock taken by BEGIN IMMEDIATE already keeps a
                // roll-up out until this commits.
                let rolled_through = rollup_mark(&transaction)?;
                add_bounded(&transaction, RollupTable::Minutes, &fold.minutes, values)?;
                add_bounded(
                    &transaction,
                    RollupTable::Days,
                    &fold.late_days(rolled_through),
                    values,
                )?;
                {
                    let mut statement = transaction.prepare_cached(
                        "INSERT INTO click_totals (code, clicks, bot_clicks) VALUES (?1, ?2, ?3)
                         ON CONFLICT (code) DO UPDATE SET clicks = clicks + excluded.clicks,
                                                          bot_clicks = bot_clicks + excluded.bot_clicks",
                    )?;
                    for (code, humans, bots) in &fold.totals {
                        statement.execute((code, humans, bots))?;
                    }
                }
                {
                    // As in Postgres: the larger count is kept.
                    let mut statement = transaction.prepare_cached(
                        "INSERT INTO click_days (code, day, dimension, value, class, clicks)
                         VALUES (?1, ?2, 8, '', 0, ?3)
                         ON CONFLICT (code, day, dimension, value, class)
                         DO UPDATE SET clicks = max(clicks, excluded.clicks)",
                    )?;
                    for (code, day, count) in &fold.visitors {
                        statement.execute((code, day, count))?;
                    }
                }
                enqueue_clicked(&transaction, &fold)?;
                transaction.commit()?;
                Ok(Folded::Now)
            })
            .await
            .map_err(AnalyticsError::from_sqlite)
    }

    async fn roll_up_days(&self, through: i32, values: usize) -> Result<RolledUp, AnalyticsError> {
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let rolled_through = rollup_mark(&transaction)?;
                if through <= rolled_through {
                    return Ok(RolledUp {
                        rows: 0,
                        caught_up: true,
                    });
                }
                let until = through.min(rolled_through.saturating_add(ROLL_UP_SLICE_MINUTES));
                let window = {
                    let mut statement = transaction.prepare_cached(
                        "SELECT code, minute / 1440, dimension, value, class, sum(clicks)
                           FROM click_minutes WHERE minute > ?1 AND minute <= ?2
                          GROUP BY code, minute / 1440, dimension, value, class
                          ORDER BY code, minute / 1440, dimension, value, class",
                    )?;
                    let rows = statement.query_map((rolled_through, until), |row| {
                        let dimension = Dimension::from_stored(row.get(2)?).map_err(|error| {
                            rusqlite::Error::FromSqlConversionFailure(
                                2,
                                rusqlite::types::Type::Integer,
                                error.to_string().into(),
                            )
                        })?;
                        Ok((
                            RollupKey {
                                code: row.get(0)?,
                                bucket: row.get(1)?,
                                dimension,
                                value: row.get(3)?,
                                class: row.get(4)?,
                            },
                            row.get::<_, i64>(5)?,
                        ))
                    })?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()?
                };
                let rows = add_bounded(&transaction, RollupTable::Days, &window, values)?;
                transaction.execute("UPDATE click_rollup_mark SET rolled_through = ?1", [until])?;
                transaction.commit()?;
                Ok(RolledUp {
                    rows,
                    caught_up: until == through,
                })
            })
            .await
            .map_err(AnalyticsError::from_sqlite)
    }

    async fn rollups(
        &self,
        code: &str,
        table: RollupTable,
        (first, end): (i32, i32),
        top: usize,
        classes: &[i16],
    ) -> Result<Vec<RollupRow>, AnalyticsError> {
        let code = code.to_owned();
        let top = i64::try_from(top).unwrap_or(i64::MAX);
        // As in Postgres: days include the minutes not rolled up yet, read in
        // one statement (one snapshot).
        let rows_cte = rows_of(table, classes);
        let sql = format!(
            "WITH rows AS ({rows_cte})
             SELECT bucket, 0, '', bot, sum(clicks) FROM rows
              WHERE dimension = 0 GROUP BY bucket, bot
             UNION ALL
             SELECT 0, dimension, CASE WHEN rank <= ?4 THEN value ELSE 'other' END AS shown,
                    bot, sum(clicks)
               FROM (SELECT dimension, value, bot, sum(clicks) AS clicks,
                            row_number() OVER (PARTITION BY dimension, bot
                                               ORDER BY value = 'other', sum(clicks) DESC, value)
                                AS rank
                       FROM rows WHERE dimension > 0 AND dimension <> 8
                      GROUP BY dimension, value, bot)
              GROUP BY dimension, shown, bot"
        );
        let rows = self
            .db
            .run(move |connection| {
                let mut statement = connection.prepare_cached(&sql)?;
                let rows = statement.query_map((&code, first, end, top), stored_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .map_err(AnalyticsError::from_sqlite)?;
        rows.into_iter().map(StoredRow::into_row).collect()
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
        let code = code.to_owned();
        let sql = format!(
            "WITH rows AS ({})
             SELECT bucket / ?4 * ?4, dimension, value, bot, sum(clicks) FROM rows
              GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 LIMIT ?5",
            rows_of(table, classes)
        );
        let rows = self
            .db
            .run(move |connection| {
                let mut statement = connection.prepare_cached(&sql)?;
                let rows = statement.query_map((&code, first, end, step, limit), stored_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .map_err(AnalyticsError::from_sqlite)?;
        rows.into_iter().map(StoredRow::into_row).collect()
    }

    async fn totals(&self, code: &str) -> Result<(i64, i64), AnalyticsError> {
        let code = code.to_owned();
        self.db
            .run(move |connection| {
                let found = connection.query_row(
                    "SELECT clicks, bot_clicks FROM click_totals WHERE code = ?1",
                    [&code],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                );
                match found {
                    Err(rusqlite::Error::QueryReturnedNoRows) => Ok((0, 0)),
                    other => other,
                }
            })
            .await
            .map_err(AnalyticsError::from_sqlite)
    }

    async fn visitors(
        &self,
        code: &str,
        first: i32,
        end: i32,
    ) -> Result<Vec<(i32, i64)>, AnalyticsError> {
        let code = code.to_owned();
        self.db
            .run(move |connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT day, clicks FROM click_days
                      WHERE code = ?1 AND day >= ?2 AND day < ?3 AND dimension = 8
                      ORDER BY day",
                )?;
                let rows = statement
                    .query_map((&code, first, end), |row| Ok((row.get(0)?, row.get(1)?)))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .map_err(AnalyticsError::from_sqlite)
    }

    async fn purge(&self, code: &str) -> Result<u64, AnalyticsError> {
        let code = code.to_owned();
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut rows = 0;
                for table in ["click_minutes", "click_days", "click_totals"] {
                    rows += transaction
                        .execute(&format!("DELETE FROM {table} WHERE code = ?1"), [&code])?;
                }
                transaction.commit()?;
                Ok(rows as u64)
            })
            .await
            .map_err(AnalyticsError::from_sqlite)
    }

    async fn forget(&self, owner: i64, codes: Option<&[String]>) -> Result<u64, AnalyticsError> {
        let codes = codes.map(<[String]>::to_vec);
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let codes: Vec<String> = match codes {
                    Some(codes) => codes,
                    None => transaction
                        .prepare("SELECT code FROM links WHERE owner_key_id = ?1")?
                        .query_map([owner], |row| row.get(0))?
                        .collect::<rusqlite::Result<_>>()?,
                };
                let mut rows = 0;
                for code in &codes {
                    for table in ["click_minutes", "click_days", "click_totals"] {
                        rows += transaction
                            .execute(&format!("DELETE FROM {table} WHERE code = ?1"), [code])?;
                    }
                }
                transaction.commit()?;
                Ok(rows as u64)
            })
            .await
            .map_err(AnalyticsError::from_sqlite)
    }

    async fn prune(
        &self,
        minute: i32,
        day: i32,
        batches_before: SystemTime,
        limit: i64,
    ) -> Result<u64, AnalyticsError> {
        let before = to_micros(batches_before);
        self.db
            .run(move |connection| {
                let minutes = connection.execute(
                    "DELETE FROM click_minutes WHERE (code, minute, dimension, value, class) IN (
                         SELECT code, minute, dimension, value, class FROM click_minutes
                          WHERE minute < ?1
                            AND minute <= (SELECT rolled_through FROM click_rollup_mark)
                          LIMIT ?2)",
                    (minute, limit),
                )?;
                let days = connection.execute(
                    "DELETE FROM click_days WHERE (code, day, dimension, value, class) IN (
                         SELECT code, day, dimension, value, class FROM click_days
                          WHERE day < ?1 LIMIT ?2)",
                    (day, limit),
                )?;
                let batches = connection.execute(
                    "DELETE FROM click_batches WHERE batch_id IN (
                         SELECT batch_id FROM click_batches WHERE folded_at < ?1 LIMIT ?2)",
                    (before, limit),
                )?;
                Ok((minutes + days + batches) as u64)
            })
            .await
            .map_err(AnalyticsError::from_sqlite)
    }
}

/// A rollup row as the reads select it (bucket, dimension, value, bot,
/// clicks), its dimension still a number.
struct StoredRow(i32, i16, String, bool, i64);

fn stored_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow(
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

impl StoredRow {
    fn into_row(self) -> Result<RollupRow, AnalyticsError> {
        let Self(bucket, dimension, value, bot, clicks) = self;
        Ok(RollupRow {
            bucket,
            dimension: Dimension::from_stored(dimension)?,
            value,
            bot,
            clicks,
        })
    }
}

/// The rollup rows of `?1` with `?2 <= bucket < ?3` in `table` of the
/// classes `classes` (as `bucket, dimension, value, bot, clicks`): days
/// include the minutes not rolled up yet.
fn rows_of(table: RollupTable, classes: &[i16]) -> String {
    // Numbers only, so written into the statement (one per filter seen,
    // each cached).
    let classes = classes
        .iter()
        .map(i16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    match table {
        RollupTable::Minutes => format!(
            "SELECT minute AS bucket, dimension, value, class <> 0 AS bot, clicks FROM click_minutes
              WHERE code = ?1 AND minute >= ?2 AND minute < ?3 AND class IN ({classes})"
        ),
        RollupTable::Days => format!(
            "SELECT day AS bucket, dimension, value, class <> 0 AS bot, clicks FROM click_days
              WHERE code = ?1 AND day >= ?2 AND day < ?3 AND class IN ({classes})
             UNION ALL
             SELECT minute / 1440, dimension, value, class <> 0, clicks FROM click_minutes
              WHERE code = ?1 AND minute > (SELECT rolled_through FROM click_rollup_mark)
                AND minute >= ?2 * 1440 AND minute < ?3 * 1440 AND class IN ({classes})"
        ),
    }
}
