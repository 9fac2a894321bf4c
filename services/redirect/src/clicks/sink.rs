//! Where click batches go: the Redis stream (split deployment; the writers'
//! analytics consumers read it as a group) or the in-process stream of the
//! embedded deployment.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use tinyurl_domain::clicks::{
    BATCH_FIELD, BATCH_FORMAT, CLICKS_FIELD, CLICKS_STREAM, FORMAT_FIELD,
};
use tinyurl_runtime::memory::MemoryCache;

use super::PendingBatch;

/// How far the Redis stream may grow: by entries and by age. The age bound
/// keeps a stalled consumer from filling a Redis that also holds links (a
/// separate Redis for clicks can be configured instead).
#[derive(Debug, Clone, Copy)]
pub struct StreamBounds {
    pub max_entries: u64,
    pub max_age: Duration,
}

pub enum ClickSink {
    Redis {
        client: Client,
        options: Options,
        bounds: StreamBounds,
    },
    Memory(Arc<MemoryCache>),
}

impl ClickSink {
    /// Appends `batches` in order; how many (from the front) the stream
    /// took, and the error that stopped the rest.
    pub async fn append(&self, batches: &[PendingBatch]) -> Result<usize, (usize, String)> {
        match self {
            Self::Redis {
                client,
                options,
                bounds,
            } => append_redis(client, options, *bounds, batches)
                .await
                .map(|()| batches.len())
                // Some entries may have been added: sending them again is
                // safe, the consumer folds each batch id once.
                .map_err(|error| (0, error.to_string())),
            Self::Memory(cache) => {
                for (sent, batch) in batches.iter().enumerate() {
                    let appended = cache.append_clicks(batch.batch.clone());
                    if appended.is_err() {
                        return Err((sent, "the in-process click stream is full".to_owned()));
                    }
                }
                Ok(batches.len())
            }
        }
    }
}

/// One pipeline: an `XADD` per batch, capped by entries, then an `XTRIM` by
/// age (one `XADD` takes one cap).
async fn append_redis(
    client: &Client,
    options: &Options,
    bounds: StreamBounds,
    batches: &[PendingBatch],
) -> Result<(), Error> {
    let pipeline = client.with_options(options).pipeline();
    let max_entries = i64::try_from(bounds.max_entries).unwrap_or(i64::MAX);
    for batch in batches {
        pipeline
            .xadd::<Value, _, _, _, _>(
                CLICKS_STREAM,
                false,
                ("MAXLEN", "~", max_entries),
                "*",
                vec![
                    (FORMAT_FIELD, BATCH_FORMAT),
                    (BATCH_FIELD, batch.batch.id.as_str()),
                    (CLICKS_FIELD, batch.batch.lines.as_str()),
                ],
            )
            .await?;
    }
    let oldest_kept = SystemTime::now()
        .checked_sub(bounds.max_age)
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_millis());
    pipeline
        .xtrim::<Value, _, _>(CLICKS_STREAM, ("MINID", "~", format!("{oldest_kept}-0")))
        .await?;
    pipeline.all::<Vec<Value>>().await.map(drop)
}
