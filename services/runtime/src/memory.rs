//! The in-process stand-in for Redis in the embedded deployment: a bounded
//! key-value cache with per-entry TTLs and `SET NX`, a broadcast channel in
//! place of pub/sub, and a bounded channel in place of the click stream. Values and messages are the same strings the Redis
//! implementations exchange, so the writer's and redirect's cache code paths
//! differ only in transport.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use crate::expiring::ExpiringCache;

/// Announcements a slow subscriber may fall behind by before it is told it
/// lagged (and flushes what it caches).
const ANNOUNCEMENT_BUFFER: usize = 4096;

/// Click batches the stream holds before a sender must keep its own.
const CLICK_STREAM_BATCHES: usize = 1024;

/// A click batch on the in-process stream: its id and its lines, as in the
/// Redis stream's `batch` and `clicks` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickBatch {
    pub id: String,
    pub lines: String,
}

pub struct MemoryCache {
    entries: ExpiringCache<str>,
    announcements: broadcast::Sender<Arc<str>>,
    clicks: mpsc::Sender<ClickBatch>,
    click_reader: Mutex<Option<mpsc::Receiver<ClickBatch>>>,
    /// Visits used by capped links, by code (see [`Self::spend_visit`]).
    visits: Mutex<std::collections::HashMap<String, u64>>,
}

impl MemoryCache {
    /// A cache of at most `capacity` entries (least valuable evicted first).
    pub fn new(capacity: u64) -> Arc<Self> {
        let (clicks, click_reader) = mpsc::channel(CLICK_STREAM_BATCHES);
        Arc::new(Self {
            entries: ExpiringCache::new(capacity),
            announcements: broadcast::channel(ANNOUNCEMENT_BUFFER).0,
            clicks,
            click_reader: Mutex::new(Some(click_reader)),
            visits: Mutex::new(std::collections::HashMap::new()),
        })
    }

    pub fn get(&self, key: &str) -> Option<Arc<str>> {
        self.entries.get(key)
    }

    /// `SET key value PX ttl`.
    pub fn set(&self, key: String, value: &str, ttl: Duration) {
        self.entries.insert(key, value.into(), ttl);
    }

    /// `SET key value PX ttl NX`: whether the value was stored.
    pub fn set_if_absent(&self, key: String, value: &str, ttl: Duration) -> bool {
        self.entries.insert_if_absent(key, value.into(), ttl)
    }

    /// Uses one of `code`'s `cap` visits: false when they are all used. In
    /// process, so the count lasts as long as the process (the split
    /// deployment counts in Redis).
    pub fn spend_visit(&self, code: &str, cap: u64) -> bool {
        let mut visits = match self.visits.lock() {
            Ok(visits) => visits,
            Err(poisoned) => poisoned.into_inner(),
        };
        let used = visits.entry(code.to_owned()).or_default();
        if *used >= cap {
            return false;
        }
        *used += 1;
        true
    }

    /// The visits `code` has used ([`Self::spend_visit`]).
    pub fn visits_used(&self, code: &str) -> u64 {
        let visits = match self.visits.lock() {
            Ok(visits) => visits,
            Err(poisoned) => poisoned.into_inner(),
        };
        visits.get(code).copied().unwrap_or(0)
    }

    pub fn delete(&self, key: &str) {
        self.entries.remove(key);
    }

    /// `PUBLISH`: delivered to every current subscriber.
    pub fn publish(&self, message: &str) {
        // No subscriber is not an error, as with Redis.
        let _ = self.announcements.send(message.into());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.announcements.subscribe()
    }

    /// `XADD`: whether the stream took the batch (it is bounded; a full one
    /// leaves the batch with the sender, to offer again).
    pub fn append_clicks(&self, batch: ClickBatch) -> Result<(), ClickBatch> {
        self.clicks.try_send(batch).map_err(|error| match error {
            mpsc::error::TrySendError::Full(batch) | mpsc::error::TrySendError::Closed(batch) => {
                batch
            }
        })
    }

    /// The stream's one reader (the analytics consumer); `None` once taken.
    pub fn take_click_reader(&self) -> Option<mpsc::Receiver<ClickBatch>> {
        self.click_reader
            .lock()
            .ok()
            .and_then(|mut reader| reader.take())
    }
}
