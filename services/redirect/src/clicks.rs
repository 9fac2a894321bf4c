//! Click counting off the hot path: a request bumps a counter in a sharded
//! in-memory map (never awaits); a background task appends the aggregated
//! counts to a Redis stream every flush interval. Memory is bounded by the
//! number of distinct codes kept; past the bound (or while Redis is down and
//! the backlog is full) clicks are dropped and the drops are counted.

use std::collections::HashMap;
use std::hash::BuildHasher as _;

use foldhash::fast::RandomState;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fred::prelude::*;
use tinyurl_domain::cached::CLICKS_STREAM;

const SHARDS: usize = 16;
/// Codes per stream entry; a flush of many codes becomes several entries.
const CODES_PER_ENTRY: usize = 10_000;
/// The stream is trimmed (approximately) to this many entries.
const STREAM_MAX_ENTRIES: i64 = 1_000_000;

pub struct Clicks {
    shards: [Mutex<HashMap<Box<str>, u64, RandomState>>; SHARDS],
    hasher: RandomState,
    /// Distinct codes held across the shards and the unsent backlog.
    held: AtomicUsize,
    max_codes: usize,
    dropped: metrics::Counter,
}

impl Clicks {
    pub fn new(max_codes: usize) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
            hasher: RandomState::default(),
            held: AtomicUsize::new(0),
            max_codes,
            dropped: metrics::counter!("redirect_clicks_dropped_total"),
        }
    }

    /// Counts one click; constant time, no await.
    pub fn record(&self, code: &str) {
        let shard = &self.shards[(self.hasher.hash_one(code) as usize) % SHARDS];
        let Ok(mut counts) = shard.lock() else {
            self.dropped.increment(1);
            return;
        };
        if let Some(count) = counts.get_mut(code) {
            *count += 1;
        } else if self.held.fetch_add(1, Ordering::Relaxed) < self.max_codes {
            counts.insert(code.into(), 1);
        } else {
            self.held.fetch_sub(1, Ordering::Relaxed);
            self.dropped.increment(1);
        }
    }

    /// Moves every shard's counts into `backlog`.
    fn drain_into(&self, backlog: &mut HashMap<Box<str>, u64, RandomState>) {
        for shard in &self.shards {
            let taken = match shard.lock() {
                Ok(mut counts) => std::mem::take(&mut *counts),
                Err(_) => continue,
            };
            for (code, count) in taken {
                match backlog.get_mut(&code) {
                    Some(total) => {
                        *total += count;
                        // Held twice (shard and backlog) until merged.
                        self.held.fetch_sub(1, Ordering::Relaxed);
                    }
                    None => {
                        backlog.insert(code, count);
                    }
                }
            }
        }
    }

    /// Flushes every `interval` until `stopped`, and once more on the way out.
    pub async fn run(
        self: std::sync::Arc<Self>,
        redis: Option<(Client, Options)>,
        interval: Duration,
        stopped: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stopped);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backlog: HashMap<Box<str>, u64, RandomState> = HashMap::default();
        let flushed = metrics::counter!("redirect_clicks_flushed_total");
        let failures = metrics::counter!("redirect_clicks_flush_errors_total");
        loop {
            let stopping = tokio::select! {
                _ = ticker.tick() => false,
                () = &mut stopped => true,
            };
            self.drain_into(&mut backlog);
            metrics::gauge!("redirect_clicks_backlog_codes").set(backlog.len() as f64);
            match &redis {
                Some((client, options)) if !backlog.is_empty() => {
                    match append(client, options, &backlog).await {
                        Ok(()) => {
                            flushed.increment(backlog.values().sum());
                            self.held.fetch_sub(backlog.len(), Ordering::Relaxed);
                            backlog.clear();
                        }
                        Err(error) => {
                            failures.increment(1);
                            tracing::debug!(%error, "click flush failed; keeping the backlog");
                        }
                    }
                }
                Some(_) => {}
                None => {
                    // No stream to write to: counting stays bounded, nothing
                    // is kept.
                    self.held.fetch_sub(backlog.len(), Ordering::Relaxed);
                    backlog.clear();
                }
            }
            if stopping {
                return;
            }
        }
    }
}

/// Appends `counts` as stream entries whose one field, `counts`, holds
/// newline-separated `code count` lines. One string per entry rather than a
/// field per code: a busy flush holds tens of thousands of codes, and Redis
/// stores and trims one string far more cheaply than that many fields.
async fn append(
    client: &Client,
    options: &Options,
    counts: &HashMap<Box<str>, u64, RandomState>,
) -> Result<(), Error> {
    let pipeline = client.with_options(options).pipeline();
    let entries: Vec<(&Box<str>, &u64)> = counts.iter().collect();
    for chunk in entries.chunks(CODES_PER_ENTRY) {
        let mut blob = String::with_capacity(chunk.len() * 16);
        for (code, count) in chunk {
            blob.push_str(code);
            blob.push(' ');
            blob.push_str(itoa::Buffer::new().format(**count));
            blob.push('\n');
        }
        pipeline
            .xadd::<Value, _, _, _, _>(
                CLICKS_STREAM,
                false,
                ("MAXLEN", "~", STREAM_MAX_ENTRIES),
                "*",
                vec![("counts", blob)],
            )
            .await?;
    }
    pipeline.all::<Vec<Value>>().await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_bounds_distinct_codes() {
        let clicks = Clicks::new(2);
        for _ in 0..3 {
            clicks.record("aaa");
        }
        clicks.record("bbb");
        clicks.record("ccc");
        let mut backlog = HashMap::default();
        clicks.drain_into(&mut backlog);
        assert_eq!(backlog.get("aaa"), Some(&3));
        assert_eq!(backlog.get("bbb"), Some(&1));
        assert_eq!(backlog.get("ccc"), None, "past the bound");
        // The unsent backlog counts against the bound: while it is full
        // (Redis down), every new click is dropped...
        clicks.record("ddd");
        clicks.record("aaa");
        clicks.drain_into(&mut backlog);
        assert_eq!(backlog.get("ddd"), None);
        assert_eq!(backlog.get("aaa"), Some(&3));
        // ...and once it is sent, counting resumes and merges.
        clicks.held.fetch_sub(backlog.len(), Ordering::Relaxed);
        backlog.clear();
        clicks.record("aaa");
        clicks.record("aaa");
        clicks.drain_into(&mut backlog);
        assert_eq!(backlog.get("aaa"), Some(&2));
        assert_eq!(clicks.held.load(Ordering::Relaxed), 1);
    }
}
