//! The analytics consumer: reads click batches and folds each into the
//! rollups exactly once.
//!
//! Split deployment: every writer is a consumer of one Redis consumer group,
//! so the writers share the stream. A batch is acknowledged only after its
//! rollups and its id committed together ([`ClickStore::fold`]); a batch
//! whose id was folded before is acknowledged without counting. A consumer
//! that dies leaves its unacknowledged entries pending; the others take them
//! over with `XAUTOCLAIM` once they have been idle for the claim interval. So
//! a crash or a redelivery never counts a click twice, and an acknowledged
//! batch is never lost. A corrupt entry is counted, logged and acknowledged
//! so it cannot block the group; one that parses but fails to fold
//! [`POISON_ATTEMPTS`] times for a reason other than an unreachable store
//! goes to the dead-letter stream ([`DEAD_LETTER_STREAM`]) and is
//! acknowledged. Batches of the previous format are folded, and of a newer
//! one left pending for a consumer that knows it (see
//! [`tinyurl_domain::clicks`]), so a rolling upgrade loses no click.
//!
//! Embedded deployment: the same folding from the in-process stream.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fred::prelude::*;
use tinyurl_domain::clicks::{
    BATCH_FIELD, BATCH_FORMAT, CLICKS_FIELD, CLICKS_GROUP, CLICKS_STREAM, DEAD_LETTER_STREAM,
    FORMAT_FIELD, PREVIOUS_BATCH_FORMAT, parse_batch,
};
use tinyurl_domain::visitors::{VISITORS_FIELD, parse_link_days, sketch_name};
use tinyurl_runtime::Stopping;
use tinyurl_runtime::memory::{ClickBatch, MemoryCache};
use tokio::sync::mpsc;

use super::{ClickStore, Fold, Folded, MINUTES_PER_DAY, minute_of};
use crate::error::AnalyticsError;

mod maintain;
mod redis;

pub use self::maintain::{finished_minutes, maintain_rollups, roll_up};
pub use self::redis::{RedisConsumer, report_lag};

/// Entries read per `XREADGROUP`.
const READ_COUNT: u64 = 16;
/// How long one `XREADGROUP` waits for new entries.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Pause after a failure before trying again.
const BACKOFF: Duration = Duration::from_millis(500);
/// Rows deleted per retention statement.
const PRUNE_SLICE: i64 = 5_000;
/// Longest batch id accepted (the redirect writes 32 hex digits).
const MAX_BATCH_ID_LEN: usize = 64;
/// Failed folds of one batch, for a reason other than an unreachable store,
/// before it goes to the dead-letter stream.
pub const POISON_ATTEMPTS: u32 = 5;
/// Entries the dead-letter stream keeps (about).
const DEAD_LETTER_MAX_ENTRIES: i64 = 10_000;

/// What the consumer and the retention job are configured with.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerSettings {
    /// Entries pending this long with a consumer are taken over.
    pub claim_idle: Duration,
    /// How long minute rollups are kept.
    pub minute_retention: Duration,
    /// How long day rollups are kept; `None`: forever.
    pub day_retention: Option<Duration>,
    /// Distinct values kept per code, bucket, dimension and bot flag; the
    /// rest are counted as "other".
    pub values_per_bucket: usize,
    /// How long folded batch ids are remembered: longer than the click
    /// stream keeps entries, so any redelivery finds its id.
    pub batch_retention: Duration,
    /// How often finished minutes are rolled up into days.
    pub maintain_every: Duration,
    /// How often retention runs.
    pub prune_every: Duration,
}

struct Metrics {
    folded: metrics::Counter,
    clicks: metrics::Counter,
    duplicates: metrics::Counter,
    redelivered: metrics::Counter,
    corrupt: metrics::Counter,
    trimmed: metrics::Counter,
    errors: metrics::Counter,
    deferred: metrics::Counter,
    dead_lettered: metrics::Counter,
    /// One batch folded into the rollups (one transaction).
    fold_seconds: metrics::Histogram,
}

impl Metrics {
    fn new() -> Self {
        Self {
            folded: metrics::counter!("writer_click_batches_folded_total"),
            clicks: metrics::counter!("writer_clicks_folded_total"),
            duplicates: metrics::counter!("writer_click_batches_duplicate_total"),
            redelivered: metrics::counter!("writer_click_batches_redelivered_total"),
            corrupt: metrics::counter!("writer_click_batches_corrupt_total"),
            trimmed: metrics::counter!("writer_click_batches_trimmed_total"),
            errors: metrics::counter!("writer_clicks_consumer_errors_total"),
            deferred: metrics::counter!("writer_click_batches_deferred_total"),
            dead_lettered: metrics::counter!("writer_click_batches_dead_lettered_total"),
            fold_seconds: metrics::histogram!("writer_click_fold_seconds"),
        }
    }
}

/// Where the redirects add visitors: the link days' sketches, counted when
/// a batch naming them is folded ([`tinyurl_domain::visitors`]).
pub enum Sketches {
    Redis(Client, Duration),
    Memory(Arc<MemoryCache>),
}

impl Sketches {
    /// The visitors of the link days `field` (a batch's `visitors`) names,
    /// as their sketches count them now; those without any left out. A
    /// malformed field is logged and ignored: the batch's clicks still
    /// count.
    async fn count(&self, field: Option<&str>) -> Result<Vec<(String, i32, i64)>, AnalyticsError> {
        let Some(field) = field.filter(|field| !field.is_empty()) else {
            return Ok(Vec::new());
        };
        let Some(link_days) = parse_link_days(field) else {
            tracing::warn!("ignoring a malformed {VISITORS_FIELD} field of a click batch");
            return Ok(Vec::new());
        };
        let counts: Vec<i64> = match self {
            Self::Memory(cache) => link_days
                .iter()
                .map(|(day, link)| {
                    i64::try_from(cache.count_visitors(link, *day)).unwrap_or(i64::MAX)
                })
                .collect(),
            Self::Redis(client, timeout) => {
                let pipeline = client
                    .with_options(&tinyurl_runtime::redis::command_options(*timeout))
                    .pipeline();
                for (day, link) in &link_days {
                    pipeline
                        .pfcount::<Value, _>(sketch_name(*day, link))
                        .await
                        .map_err(redis_unavailable)?;
                }
                pipeline
                    .all::<Vec<i64>>()
                    .await
                    .map_err(redis_unavailable)?
            }
        };
        Ok(link_days
            .into_iter()
            .zip(counts)
            .filter(|(_, count)| *count > 0)
            .map(|((day, link), count)| (link, day, count))
            .collect())
    }
}

fn redis_unavailable(error: Error) -> AnalyticsError {
    AnalyticsError::Unavailable(format!("cannot count visitors: {error}"))
}

/// Whether `batch_id` is one a redirect writes (and safe to log).
fn valid_batch_id(batch_id: &str) -> bool {
    !batch_id.is_empty()
        && batch_id.len() <= MAX_BATCH_ID_LEN
        && batch_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

/// Folds one batch; `Ok(false)` for a corrupt one (counted and logged here;
/// the caller acknowledges it all the same).
#[allow(clippy::too_many_arguments)]
async fn fold_batch(
    store: &dyn ClickStore,
    sketches: &Sketches,
    values: usize,
    metrics: &Metrics,
    entry: &str,
    batch_id: Option<&str>,
    lines: Option<&str>,
    visitors: Option<&str>,
) -> Result<bool, AnalyticsError> {
    let (Some(batch_id), Some(lines)) = (batch_id, lines) else {
        metrics.corrupt.increment(1);
        tracing::warn!(
            entry,
            "skipping a click stream entry without batch and clicks fields"
        );
        return Ok(false);
    };
    if !valid_batch_id(batch_id) {
        metrics.corrupt.increment(1);
        tracing::warn!(entry, "skipping a click batch with a malformed id");
        return Ok(false);
    }
    let parsed = match parse_batch(lines) {
        Ok(parsed) => parsed,
        Err(error) => {
            metrics.corrupt.increment(1);
            tracing::warn!(entry, batch_id, %error, "skipping a corrupt click batch");
            return Ok(false);
        }
    };
    // Counted after the batch was read, so after every visitor added
    // before it was appended.
    let fold = Fold::of(&parsed).with_visitors(sketches.count(visitors).await?);
    let started = std::time::Instant::now();
    let folded = store.fold(batch_id, &fold, values).await?;
    metrics.fold_seconds.record(started.elapsed().as_secs_f64());
    match folded {
        Folded::Now => {
            metrics.folded.increment(1);
            metrics.clicks.increment(fold.clicks);
        }
        Folded::Before => {
            metrics.duplicates.increment(1);
            tracing::info!(
                entry,
                batch_id,
                "click batch was folded before; acknowledging"
            );
        }
    }
    Ok(true)
}

/// The embedded deployment's consumer: folds batches from the in-process
/// stream, retrying a batch until it is folded (the sender cannot resend).
/// On stop, folds what is already queued.
pub async fn consume_memory(
    mut reader: mpsc::Receiver<ClickBatch>,
    cache: Arc<MemoryCache>,
    store: Arc<dyn ClickStore>,
    values: usize,
    stopping: Stopping,
) {
    let metrics = Metrics::new();
    let sketches = Sketches::Memory(cache);
    loop {
        let batch = tokio::select! {
            batch = reader.recv() => batch,
            () = stopping.clone().wait() => None,
        };
        let Some(batch) = batch.or_else(|| reader.try_recv().ok()) else {
            return;
        };
        let mut poison_failures = 0;
        loop {
            let folded = fold_batch(
                store.as_ref(),
                &sketches,
                values,
                &metrics,
                "in-process",
                Some(&batch.id),
                Some(&batch.lines),
                Some(&batch.visitors),
            )
            .await;
            match folded {
                Ok(_) => break,
                Err(error)
                    if !matches!(error, AnalyticsError::Unavailable(_))
                        && poison_failures + 1 >= POISON_ATTEMPTS =>
                {
                    // No stream to park it in: counted and logged whole.
                    metrics.dead_lettered.increment(1);
                    tracing::error!(
                        error = error.public_message(),
                        lines = batch.lines,
                        "a click batch that cannot be folded was dropped"
                    );
                    break;
                }
                Err(error) if !stopping.is_stopping() => {
                    if !matches!(error, AnalyticsError::Unavailable(_)) {
                        poison_failures += 1;
                    }
                    metrics.errors.increment(1);
                    tracing::warn!(
                        error = error.public_message(),
                        "cannot fold a click batch; will retry"
                    );
                    tokio::time::sleep(BACKOFF).await;
                }
                Err(error) => {
                    metrics.errors.increment(1);
                    tracing::warn!(
                        error = error.public_message(),
                        "click batch lost at shutdown"
                    );
                    break;
                }
            }
        }
        metrics::gauge!("writer_clicks_stream_lag_entries").set(reader.len() as f64);
    }
}
