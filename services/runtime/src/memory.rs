//! The in-process stand-in for Redis in the embedded deployment: a bounded
//! key-value cache with per-entry TTLs and `SET NX`, plus a broadcast channel
//! in place of pub/sub. Values and messages are the same strings the Redis
//! implementations exchange, so the writer's and redirect's cache code paths
//! differ only in transport.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::expiring::ExpiringCache;

/// Announcements a slow subscriber may fall behind by before it is told it
/// lagged (and flushes what it caches).
const ANNOUNCEMENT_BUFFER: usize = 4096;

pub struct MemoryCache {
    entries: ExpiringCache<str>,
    announcements: broadcast::Sender<Arc<str>>,
}

impl MemoryCache {
    /// A cache of at most `capacity` entries (least valuable evicted first).
    pub fn new(capacity: u64) -> Arc<Self> {
        Arc::new(Self {
            entries: ExpiringCache::new(capacity),
            announcements: broadcast::channel(ANNOUNCEMENT_BUFFER).0,
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
}
