//! Rollup rows added with each group's named values bounded: the groups
//! locked in one order, what they hold read, the rows bounded against it
//! ([`bound_values`]) and upserted in one `UNNEST` statement per table.

use super::*;

/// Adds a fold's rows to one rollup table (`{table}` and `{bucket}` are
/// trusted names); rows arrive sorted, so locks are taken in key order.
pub(super) const UPSERT_ROLLUP: &str = "
INSERT INTO {table} AS stored (code, {bucket}, dimension, value, class, clicks)
SELECT * FROM UNNEST($1::text[], $2::int4[], $3::int2[], $4::text[], $5::int2[], $6::int8[])
ON CONFLICT (code, {bucket}, dimension, value, class)
DO UPDATE SET clicks = stored.clicks + EXCLUDED.clicks";

/// Locks groups (code, lock bucket) for the transaction, in one order for
/// every writer so two folds cannot deadlock. Two-key advisory locks: a
/// space of their own, apart from the migration lock's single key.
pub(super) const LOCK_GROUPS: &str = "
SELECT pg_advisory_xact_lock(hashtext(code), bucket)
  FROM (SELECT DISTINCT code, bucket FROM UNNEST($1::text[], $2::int4[]) AS g(code, bucket)) groups
 ORDER BY hashtext(code), bucket";

/// Named values stored per group of the (code, bucket)s given.
pub(super) const STORED_COUNTS: &str = "
SELECT code, {bucket}, dimension, class, count(*) FROM {table}
 WHERE (code, {bucket}) IN (SELECT DISTINCT g.code, g.bucket
                              FROM UNNEST($1::text[], $2::int4[]) AS g(code, bucket))
   AND dimension > 0 AND value <> $3
 GROUP BY code, {bucket}, dimension, class";

/// Which of the keys given are stored.
pub(super) const STORED_KEYS: &str = "
SELECT t.code, t.{bucket}, t.dimension, t.value, t.class FROM {table} t
  JOIN UNNEST($1::text[], $2::int4[], $3::int2[], $4::text[], $5::int2[])
       AS w(code, bucket, dimension, value, class)
    ON t.code = w.code AND t.{bucket} = w.bucket AND t.dimension = w.dimension
   AND t.value = w.value AND t.class = w.class";

pub(super) fn table_sql(template: &str, table: RollupTable) -> String {
    let (name, bucket) = match table {
        RollupTable::Minutes => ("click_minutes", "minute"),
        RollupTable::Days => ("click_days", "day"),
    };
    template
        .replace("{table}", name)
        .replace("{bucket}", bucket)
}

/// The lock bucket of a group: minutes as they are, days below zero, so a
/// minute and a day never share a lock.
pub(super) fn lock_bucket(table: RollupTable, bucket: i32) -> i32 {
    match table {
        RollupTable::Minutes => bucket,
        RollupTable::Days => -1 - bucket,
    }
}

/// Locks every group the rows of both tables add to until the transaction
/// ends: the bound is read and written under it, so writers folding the
/// same minute at once cannot each fill the room the other saw.
pub(super) async fn lock_groups(
    transaction: &Transaction<'_>,
    tables: &[(RollupTable, &[(RollupKey, i64)])],
) -> Result<(), AnalyticsError> {
    let mut codes = Vec::new();
    let mut buckets = Vec::new();
    for (table, rows) in tables {
        for (key, _) in rows
            .iter()
            .filter(|(key, _)| key.dimension != Dimension::Total)
        {
            codes.push(key.code.as_str());
            buckets.push(lock_bucket(*table, key.bucket));
        }
    }
    if codes.is_empty() {
        return Ok(());
    }
    let lock = prepared(transaction, LOCK_GROUPS).await?;
    transaction
        .execute(&lock, &[&codes, &buckets])
        .await
        .map_err(AnalyticsError::from_postgres)?;
    Ok(())
}

/// What `table` holds of the groups `rows` add to.
pub(super) async fn stored_values(
    transaction: &Transaction<'_>,
    table: RollupTable,
    rows: &[(RollupKey, i64)],
) -> Result<StoredValues, AnalyticsError> {
    let named: Vec<&RollupKey> = rows
        .iter()
        .map(|(key, _)| key)
        .filter(|key| key.dimension != Dimension::Total && key.value != OTHER)
        .collect();
    let mut stored = StoredValues::default();
    if named.is_empty() {
        return Ok(stored);
    }
    let codes: Vec<&str> = named.iter().map(|key| key.code.as_str()).collect();
    let buckets: Vec<i32> = named.iter().map(|key| key.bucket).collect();
    let dimensions: Vec<i16> = named.iter().map(|key| key.dimension as i16).collect();
    let values: Vec<&str> = named.iter().map(|key| key.value.as_str()).collect();
    let classes: Vec<i16> = named.iter().map(|key| key.class).collect();
    let counts = prepared(transaction, &table_sql(STORED_COUNTS, table)).await?;
    for row in transaction
        .query(&counts, &[&codes, &buckets, &OTHER])
        .await
        .map_err(AnalyticsError::from_postgres)?
    {
        let dimension: i16 = row.try_get(2).map_err(AnalyticsError::from_postgres)?;
        let count: i64 = row.try_get(4).map_err(AnalyticsError::from_postgres)?;
        stored.counts.insert(
            ValueGroup {
                code: row.try_get(0).map_err(AnalyticsError::from_postgres)?,
                bucket: row.try_get(1).map_err(AnalyticsError::from_postgres)?,
                dimension: Dimension::from_stored(dimension)?,
                class: row.try_get(3).map_err(AnalyticsError::from_postgres)?,
            },
            usize::try_from(count).unwrap_or(usize::MAX),
        );
    }
    let keys = prepared(transaction, &table_sql(STORED_KEYS, table)).await?;
    for row in transaction
        .query(&keys, &[&codes, &buckets, &dimensions, &values, &classes])
        .await
        .map_err(AnalyticsError::from_postgres)?
    {
        let dimension: i16 = row.try_get(2).map_err(AnalyticsError::from_postgres)?;
        stored.present.insert(RollupKey {
            code: row.try_get(0).map_err(AnalyticsError::from_postgres)?,
            bucket: row.try_get(1).map_err(AnalyticsError::from_postgres)?,
            dimension: Dimension::from_stored(dimension)?,
            value: row.try_get(3).map_err(AnalyticsError::from_postgres)?,
            class: row.try_get(4).map_err(AnalyticsError::from_postgres)?,
        });
    }
    Ok(stored)
}

/// `rows` bounded against what `table` holds, then added to it.
pub(super) async fn add_bounded(
    transaction: &Transaction<'_>,
    table: RollupTable,
    rows: &[(RollupKey, i64)],
    values: usize,
) -> Result<u64, AnalyticsError> {
    let stored = stored_values(transaction, table, rows).await?;
    let bounded = bound_values(rows, &stored, values);
    upsert_rollups(transaction, table, &bounded).await?;
    Ok(bounded.len() as u64)
}

pub(super) async fn upsert_rollups(
    transaction: &Transaction<'_>,
    table: RollupTable,
    rows: &[(RollupKey, i64)],
) -> Result<(), AnalyticsError> {
    if rows.is_empty() {
        return Ok(());
    }
    let codes: Vec<&str> = rows.iter().map(|(key, _)| key.code.as_str()).collect();
    let buckets: Vec<i32> = rows.iter().map(|(key, _)| key.bucket).collect();
    let dimensions: Vec<i16> = rows.iter().map(|(key, _)| key.dimension as i16).collect();
    let values: Vec<&str> = rows.iter().map(|(key, _)| key.value.as_str()).collect();
    let classes: Vec<i16> = rows.iter().map(|(key, _)| key.class).collect();
    let clicks: Vec<i64> = rows.iter().map(|(_, clicks)| *clicks).collect();
    let statement = prepared(transaction, &table_sql(UPSERT_ROLLUP, table)).await?;
    transaction
        .execute(
            &statement,
            &[&codes, &buckets, &dimensions, &values, &classes, &clicks],
        )
        .await
        .map_err(AnalyticsError::from_postgres)?;
    Ok(())
}
