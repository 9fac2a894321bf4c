//! Day rollup rows added with each group's named values bounded: the groups
//! locked in one order, what they hold read, the rows bounded against it
//! ([`bound_values`]) and upserted in one `UNNEST` statement. (Minute rows
//! bound their values in their own upsert, migration V23.)

use super::*;

/// Adds rows to the day rollups; rows arrive sorted, so locks are taken in
/// key order.
pub(super) const UPSERT_DAYS: &str = "
INSERT INTO click_days AS stored (code, day, dimension, value, class, clicks)
SELECT * FROM UNNEST($1::text[], $2::int4[], $3::int2[], $4::text[], $5::int2[], $6::int8[])
ON CONFLICT (code, day, dimension, value, class)
DO UPDATE SET clicks = stored.clicks + EXCLUDED.clicks";

/// Locks groups (code, lock bucket) for the transaction, in one order for
/// every writer so two folds cannot deadlock. Two-key advisory locks: a
/// space of their own, apart from the migration lock's single key.
pub(super) const LOCK_GROUPS: &str = "
SELECT pg_advisory_xact_lock(hashtext(code), bucket)
  FROM (SELECT DISTINCT code, bucket FROM UNNEST($1::text[], $2::int4[]) AS g(code, bucket)) groups
 ORDER BY hashtext(code), bucket";

/// Named values stored per group of the (code, day)s given.
pub(super) const STORED_COUNTS: &str = "
SELECT code, day, dimension, class, count(*) FROM click_days
 WHERE (code, day) IN (SELECT DISTINCT g.code, g.day
                         FROM UNNEST($1::text[], $2::int4[]) AS g(code, day))
   AND dimension > 0 AND value <> $3
 GROUP BY code, day, dimension, class";

/// Which of the keys given are stored.
pub(super) const STORED_KEYS: &str = "
SELECT t.code, t.day, t.dimension, t.value, t.class FROM click_days t
  JOIN UNNEST($1::text[], $2::int4[], $3::int2[], $4::text[], $5::int2[])
       AS w(code, day, dimension, value, class)
    ON t.code = w.code AND t.day = w.day AND t.dimension = w.dimension
   AND t.value = w.value AND t.class = w.class";

/// The lock bucket of a day group: below zero, the key minute groups were
/// locked under before V23 being the minute itself, so writers of either
/// version folding one day's late minutes still exclude each other.
fn lock_bucket(day: i32) -> i32 {
    -1 - day
}

/// Locks every day group `days` add to until the transaction ends: the
/// bound is read and written under it, so writers folding one day at once
/// cannot each fill the room the other saw.
pub(super) async fn lock_groups(
    transaction: &Transaction<'_>,
    days: &[(RollupKey, i64)],
) -> Result<(), AnalyticsError> {
    let (codes, buckets): (Vec<&str>, Vec<i32>) = days
        .iter()
        .filter(|(key, _)| key.dimension != Dimension::Total)
        .map(|(key, _)| (key.code.as_str(), lock_bucket(key.bucket)))
        .unzip();
    if codes.is_empty() {
        return Ok(());
    }
    execute(transaction, LOCK_GROUPS, &[&codes, &buckets]).await?;
    Ok(())
}

/// What the day rollups hold of the groups `rows` add to.
async fn stored_values(
    transaction: &Transaction<'_>,
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
    let counts = prepared(transaction, STORED_COUNTS).await?;
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
    let keys = prepared(transaction, STORED_KEYS).await?;
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

/// `rows` bounded against what the day rollups hold, then added to them;
/// how many rows were written.
pub(super) async fn add_bounded(
    transaction: &Transaction<'_>,
    rows: &[(RollupKey, i64)],
    values: usize,
) -> Result<u64, AnalyticsError> {
    let stored = stored_values(transaction, rows).await?;
    let bounded = bound_values(rows, &stored, values);
    if bounded.is_empty() {
        return Ok(0);
    }
    let codes: Vec<&str> = bounded.iter().map(|(key, _)| key.code.as_str()).collect();
    let buckets: Vec<i32> = bounded.iter().map(|(key, _)| key.bucket).collect();
    let dimensions: Vec<i16> = bounded
        .iter()
        .map(|(key, _)| key.dimension as i16)
        .collect();
    let values: Vec<&str> = bounded.iter().map(|(key, _)| key.value.as_str()).collect();
    let classes: Vec<i16> = bounded.iter().map(|(key, _)| key.class).collect();
    let clicks: Vec<i64> = bounded.iter().map(|(_, clicks)| *clicks).collect();
    execute(
        transaction,
        UPSERT_DAYS,
        &[&codes, &buckets, &dimensions, &values, &classes, &clicks],
    )
    .await?;
    Ok(bounded.len() as u64)
}
