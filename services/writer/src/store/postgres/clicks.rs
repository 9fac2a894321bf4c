//! The Postgres side of click analytics: a batch's rollups and its id in one
//! transaction, each table in one `UNNEST` upsert.

use std::time::SystemTime;

use deadpool_postgres::Transaction;

use super::PostgresLinkStore;
use crate::analytics::{
    ClickStore, Dimension, Fold, Folded, MINUTES_PER_DAY, RolledUp, RollupKey, RollupRow,
    RollupTable,
};
use crate::error::WriterError;

/// Adds a fold's rows to one rollup table (`{table}` and `{bucket}` are
/// trusted names); rows arrive sorted, so locks are taken in key order.
const UPSERT_ROLLUP: &str = "
INSERT INTO {table} AS stored (code, {bucket}, dimension, value, bot, clicks)
SELECT * FROM UNNEST($1::text[], $2::int4[], $3::int2[], $4::text[], $5::bool[], $6::int8[])
ON CONFLICT (code, {bucket}, dimension, value, bot)
DO UPDATE SET clicks = stored.clicks + EXCLUDED.clicks";

const UPSERT_TOTALS: &str = "
INSERT INTO click_totals AS stored (code, clicks, bot_clicks)
SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[])
ON CONFLICT (code)
DO UPDATE SET clicks = stored.clicks + EXCLUDED.clicks,
              bot_clicks = stored.bot_clicks + EXCLUDED.bot_clicks";

/// The series (dimension 0 by bucket) and the breakdowns (summed over the
/// range), aggregated by the database rather than shipped row by row.
const READ_MINUTES: &str = "
SELECT minute, 0::int2, ''::text, bot, sum(clicks)::int8 FROM click_minutes
 WHERE code = $1 AND dimension = 0 AND minute >= $2 AND minute < $3
 GROUP BY minute, bot
UNION ALL
SELECT 0, dimension, value, bot, sum(clicks)::int8 FROM click_minutes
 WHERE code = $1 AND dimension > 0 AND minute >= $2 AND minute < $3
 GROUP BY dimension, value, bot";

/// [`READ_MINUTES`] for days: the day rollups plus the minutes not rolled up
/// yet, read in one statement (one snapshot, so the mark and both tables
/// agree).
const READ_DAYS: &str = "
WITH rows AS (
    SELECT day, dimension, value, bot, clicks FROM click_days
     WHERE code = $1 AND day >= $2 AND day < $3
    UNION ALL
    SELECT minute / 1440, dimension, value, bot, clicks FROM click_minutes
     WHERE code = $1 AND minute > (SELECT rolled_through FROM click_rollup_mark)
       AND minute >= $2::int8 * 1440 AND minute < $3::int8 * 1440
)
SELECT day, 0::int2, ''::text, bot, sum(clicks)::int8 FROM rows
 WHERE dimension = 0 GROUP BY day, bot
UNION ALL
SELECT 0, dimension, value, bot, sum(clicks)::int8 FROM rows
 WHERE dimension > 0 GROUP BY dimension, value, bot";

/// One roll-up window: the minutes after the mark up to `$2`, summed into
/// day rows in key order.
const ROLL_UP_DAYS: &str = "
INSERT INTO click_days AS stored (code, day, dimension, value, bot, clicks)
SELECT code, minute / 1440, dimension, value, bot, sum(clicks) FROM click_minutes
 WHERE minute > $1 AND minute <= $2
 GROUP BY code, minute / 1440, dimension, value, bot
 ORDER BY code, minute / 1440, dimension, value, bot
ON CONFLICT (code, day, dimension, value, bot)
DO UPDATE SET clicks = stored.clicks + EXCLUDED.clicks";

fn table_sql(template: &str, table: RollupTable) -> String {
    let (name, bucket) = match table {
        RollupTable::Minutes => ("click_minutes", "minute"),
        RollupTable::Days => ("click_days", "day"),
    };
    template
        .replace("{table}", name)
        .replace("{bucket}", bucket)
}

/// The roll-up mark, locked as `lock` says (`FOR SHARE` by folds, `FOR
/// UPDATE` by the roll-up) until the transaction ends.
async fn rollup_mark(transaction: &Transaction<'_>, lock: &str) -> Result<i32, WriterError> {
    transaction
        .query_one(
            &format!("SELECT rolled_through FROM click_rollup_mark {lock}"),
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(WriterError::from_postgres)
}

async fn upsert_rollups(
    transaction: &Transaction<'_>,
    table: RollupTable,
    rows: &[(RollupKey, i64)],
) -> Result<(), WriterError> {
    if rows.is_empty() {
        return Ok(());
    }
    let codes: Vec<&str> = rows.iter().map(|(key, _)| key.code.as_str()).collect();
    let buckets: Vec<i32> = rows.iter().map(|(key, _)| key.bucket).collect();
    let dimensions: Vec<i16> = rows.iter().map(|(key, _)| key.dimension as i16).collect();
    let values: Vec<&str> = rows.iter().map(|(key, _)| key.value.as_str()).collect();
    let bots: Vec<bool> = rows.iter().map(|(key, _)| key.bot).collect();
    let clicks: Vec<i64> = rows.iter().map(|(_, clicks)| *clicks).collect();
    let statement = transaction
        .prepare_cached(&table_sql(UPSERT_ROLLUP, table))
        .await
        .map_err(WriterError::from_postgres)?;
    transaction
        .execute(
            &statement,
            &[&codes, &buckets, &dimensions, &values, &bots, &clicks],
        )
        .await
        .map_err(WriterError::from_postgres)?;
    Ok(())
}

#[async_trait::async_trait]
impl ClickStore for PostgresLinkStore {
    #[tracing::instrument(name = "fold_clicks", skip_all, fields(rows = fold.minutes.len()))]
    async fn fold(&self, batch_id: &str, fold: &Fold) -> Result<Folded, WriterError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(WriterError::from_postgres)?;
            // Concurrent folds of one id (a batch reclaimed from a slow
            // consumer) meet here: the second waits for the first to commit
            // and then finds the id.
            let recorded = transaction
                .execute(
                    "INSERT INTO click_batches (batch_id) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[&batch_id],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            if recorded == 0 {
                return Ok(Folded::Before);
            }
            // Shared: folds run side by side, a roll-up waits for them (and
            // they for it).
            let rolled_through = rollup_mark(&transaction, "FOR SHARE").await?;
            upsert_rollups(&transaction, RollupTable::Minutes, &fold.minutes).await?;
            upsert_rollups(
                &transaction,
                RollupTable::Days,
                &fold.late_days(rolled_through),
            )
            .await?;
            let codes: Vec<&str> = fold
                .totals
                .iter()
                .map(|(code, _, _)| code.as_str())
                .collect();
            let humans: Vec<i64> = fold.totals.iter().map(|(_, humans, _)| *humans).collect();
            let bots: Vec<i64> = fold.totals.iter().map(|(_, _, bots)| *bots).collect();
            transaction
                .execute(UPSERT_TOTALS, &[&codes, &humans, &bots])
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .commit()
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(Folded::Now)
        })
        .await
    }

    async fn roll_up_days(&self, through: i32) -> Result<RolledUp, WriterError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let transaction = client
                .transaction()
                .await
                .map_err(WriterError::from_postgres)?;
            let rolled_through = rollup_mark(&transaction, "FOR UPDATE").await?;
            if through <= rolled_through {
                return Ok(RolledUp {
                    rows: 0,
                    caught_up: true,
                });
            }
            let until = through.min(rolled_through.saturating_add(MINUTES_PER_DAY));
            let rows = transaction
                .execute(ROLL_UP_DAYS, &[&rolled_through, &until])
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .execute(
                    "UPDATE click_rollup_mark SET rolled_through = $1",
                    &[&until],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            transaction
                .commit()
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(RolledUp {
                rows,
                caught_up: until == through,
            })
        })
        .await
    }

    async fn rollups(
        &self,
        code: &str,
        table: RollupTable,
        first: i32,
        end: i32,
    ) -> Result<Vec<RollupRow>, WriterError> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    match table {
                        RollupTable::Minutes => READ_MINUTES,
                        RollupTable::Days => READ_DAYS,
                    },
                    &[&code, &first, &end],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            rows.iter()
                .map(|row| {
                    let dimension: i16 = row.try_get(1).map_err(WriterError::from_postgres)?;
                    Ok(RollupRow {
                        bucket: row.try_get(0).map_err(WriterError::from_postgres)?,
                        dimension: Dimension::from_stored(dimension)?,
                        value: row.try_get(2).map_err(WriterError::from_postgres)?,
                        bot: row.try_get(3).map_err(WriterError::from_postgres)?,
                        clicks: row.try_get(4).map_err(WriterError::from_postgres)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn totals(&self, code: &str) -> Result<(i64, i64), WriterError> {
        self.bounded(async {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT clicks, bot_clicks FROM click_totals WHERE code = $1",
                    &[&code],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            match row {
                None => Ok((0, 0)),
                Some(row) => Ok((
                    row.try_get(0).map_err(WriterError::from_postgres)?,
                    row.try_get(1).map_err(WriterError::from_postgres)?,
                )),
            }
        })
        .await
    }

    async fn prune(
        &self,
        minute: i32,
        batches_before: SystemTime,
        limit: i64,
    ) -> Result<u64, WriterError> {
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
                .map_err(WriterError::from_postgres)?;
            let batches = client
                .execute(
                    "DELETE FROM click_batches WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM click_batches WHERE folded_at < $1 LIMIT $2))",
                    &[&batches_before, &limit],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(minutes + batches)
        })
        .await
    }
}
