//! Where click batches go: the Redis stream (split deployment; the writers'
//! analytics consumers read it as a group) or the in-process stream of the
//! embedded deployment.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};
use tinyurl_domain::clicks::{
    BATCH_FIELD, BATCH_FORMAT, CLICKS_FIELD, CLICKS_STREAM, FORMAT_FIELD,
};
use tinyurl_domain::visitors::{
    DayKey, SKETCH_KEPT_AFTER_DAY, VISITORS_FIELD, day_key_name, day_of, decode_day_key,
    encode_day_key, sketch_name, until_day_ends, visitor_hash,
};
use tinyurl_runtime::memory::MemoryCache;

use super::{LinkDayVisitors, PendingBatch};

/// The day keys this process has used, newest last: a key is read from
/// Redis once per day (or made, by the first redirect to need it).
#[derive(Default)]
pub struct DayKeys(Mutex<Vec<(i32, DayKey)>>);

impl DayKeys {
    fn held(&self, day: i32) -> Option<DayKey> {
        self.lock()
            .iter()
            .find(|(held, _)| *held == day)
            .map(|(_, key)| *key)
    }

    fn hold(&self, day: i32, key: DayKey, today: i32) {
        let mut keys = self.lock();
        // Past days' keys are forgotten with their day.
        keys.retain(|(held, _)| *held >= today && *held != day);
        keys.push((day, key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(i32, DayKey)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A new day key from the operating system's generator (a version 4 UUID's
/// 122 random bits).
fn new_day_key() -> DayKey {
    uuid::Uuid::new_v4().into_bytes()
}

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
        day_keys: DayKeys,
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
                day_keys,
            } => {
                // The sketches first, then the batches naming them: a
                // consumer counting a sketch after reading a batch sees
                // every visitor added before it. Adding a visitor twice
                // (after a failure here or below) changes nothing.
                let added = add_visitors_redis(client, options, day_keys, batches).await;
                let appended = match added {
                    Ok(()) => append_redis(client, options, *bounds, batches).await,
                    Err(error) => Err(error),
                };
                appended
                    .map(|()| batches.len())
                    // Some entries may have been added: sending them again
                    // is safe, the consumer folds each batch id once.
                    .map_err(|error| (0, error.to_string()))
            }
            Self::Memory(cache) => {
                let now = SystemTime::now();
                let today = day_of(now);
                for visitors in batches.iter().flat_map(|batch| &batch.visitors) {
                    if until_day_ends(visitors.day, now).is_none() {
                        continue;
                    }
                    let key = cache.day_key(visitors.day, today, new_day_key());
                    cache.add_visitors(&visitors.link, visitors.day, &hashes(&key, visitors));
                }
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

fn hashes(key: &DayKey, visitors: &LinkDayVisitors) -> Vec<u64> {
    visitors
        .digests
        .iter()
        .map(|digest| visitor_hash(key, *digest))
        .collect()
}

/// Day `day`'s key, which lasts `left` more: the one this process holds,
/// else the one in Redis, else a new one stored there (`SET NX GET`: of two
/// redirects making one at once, both use the first stored).
async fn day_key(
    client: &Client,
    options: &Options,
    keys: &DayKeys,
    day: i32,
    left: Duration,
) -> Result<DayKey, Error> {
    if let Some(key) = keys.held(day) {
        return Ok(key);
    }
    let candidate = new_day_key();
    let stored: Option<String> = client
        .with_options(options)
        .set(
            day_key_name(day),
            encode_day_key(&candidate),
            Some(Expiration::PX(
                i64::try_from(left.as_millis()).unwrap_or(i64::MAX),
            )),
            Some(SetOptions::NX),
            true,
        )
        .await?;
    let key = match stored {
        None => candidate,
        Some(stored) => decode_day_key(&stored).ok_or_else(|| {
            Error::new(
                ErrorKind::Parse,
                format!("{} does not hold a day key", day_key_name(day)),
            )
        })?,
    };
    keys.hold(day, key, day_of(SystemTime::now()));
    Ok(key)
}

/// Adds the visitors the batches carry to their link days' sketches
/// (`PFADD`), each kept [`SKETCH_KEPT_AFTER_DAY`] past its day. Visitors of
/// a day already over are not counted: its key is gone (a held batch
/// reaching Redis after midnight), and a new one would count them again.
///
/// A sketch's expiry is set only when its `PFADD` changed it: one that did
/// not change was not created either (a new sketch always changes), so it
/// already has the expiry its creator set. Visitors seen before (the same
/// people coming back to a busy link every flush) then cost one command per
/// link day instead of two.
async fn add_visitors_redis(
    client: &Client,
    options: &Options,
    keys: &DayKeys,
    batches: &[PendingBatch],
) -> Result<(), Error> {
    let now = SystemTime::now();
    let pipeline = client.with_options(options).pipeline();
    let mut sketches = Vec::new();
    for visitors in batches.iter().flat_map(|batch| &batch.visitors) {
        let Some(left) = until_day_ends(visitors.day, now) else {
            metrics::counter!("redirect_visitors_dropped_total")
                .increment(visitors.digests.len() as u64);
            continue;
        };
        let key = day_key(client, options, keys, visitors.day, left).await?;
        let name = sketch_name(visitors.day, &visitors.link);
        let elements: Vec<Value> = hashes(&key, visitors)
            .into_iter()
            .map(|hash| Value::Bytes(hash.to_be_bytes().to_vec().into()))
            .collect();
        pipeline
            .pfadd::<Value, _, _>(name.as_str(), elements)
            .await?;
        sketches.push((name, left + SKETCH_KEPT_AFTER_DAY));
    }
    if sketches.is_empty() {
        return Ok(());
    }
    let changed: Vec<Value> = pipeline.all().await?;
    let expire = client.with_options(options).pipeline();
    let mut expiring = 0;
    for ((name, kept), changed) in sketches.iter().zip(changed) {
        // Anything but a plain 0 (an error, an unexpected answer) sets it.
        if changed.as_i64() == Some(0) {
            continue;
        }
        expire
            .pexpire::<Value, _>(
                name.as_str(),
                i64::try_from(kept.as_millis()).unwrap_or(i64::MAX),
                None,
            )
            .await?;
        expiring += 1;
    }
    if expiring == 0 {
        return Ok(());
    }
    expire.all::<Vec<Value>>().await.map(drop)
}

/// A batch's stream fields; `visitors` only when it names a link day.
fn fields(batch: &PendingBatch) -> Vec<(&'static str, &str)> {
    let mut fields = vec![
        (FORMAT_FIELD, BATCH_FORMAT),
        (BATCH_FIELD, batch.batch.id.as_str()),
        (CLICKS_FIELD, batch.batch.lines.as_str()),
    ];
    if !batch.batch.visitors.is_empty() {
        fields.push((VISITORS_FIELD, batch.batch.visitors.as_str()));
    }
    fields
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
                fields(batch),
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
