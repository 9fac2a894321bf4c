//! The in-process stand-in for Redis in the embedded deployment: a bounded
//! key-value cache with per-entry TTLs and `SET NX`, plus a broadcast channel
//! in place of pub/sub. Values and messages are the same strings the Redis
//! implementations exchange, so the writer's and redirect's cache code paths
//! differ only in transport.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use tokio::sync::broadcast;

/// Announcements a slow subscriber may fall behind by before it is told it
/// lagged (and flushes what it caches).
const ANNOUNCEMENT_BUFFER: usize = 4096;

#[derive(Clone)]
struct Timed {
    value: Arc<str>,
    ttl: Duration,
}

struct PerEntry;

impl Expiry<String, Timed> for PerEntry {
    fn expire_after_create(&self, _key: &String, entry: &Timed, _now: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Timed,
        _now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

pub struct MemoryCache {
    entries: moka::sync::Cache<String, Timed>,
    announcements: broadcast::Sender<Arc<str>>,
}

impl MemoryCache {
    /// A cache of at most `capacity` entries (least valuable evicted first).
    pub fn new(capacity: u64) -> Arc<Self> {
        Arc::new(Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(PerEntry)
                .build(),
            announcements: broadcast::channel(ANNOUNCEMENT_BUFFER).0,
        })
    }

    pub fn get(&self, key: &str) -> Option<Arc<str>> {
        self.entries.get(key).map(|entry| entry.value)
    }

    /// `SET key value PX ttl`.
    pub fn set(&self, key: String, value: &str, ttl: Duration) {
        self.entries.insert(
            key,
            Timed {
                value: value.into(),
                ttl,
            },
        );
    }

    /// `SET key value PX ttl NX`: whether the value was stored.
    pub fn set_if_absent(&self, key: String, value: &str, ttl: Duration) -> bool {
        self.entries
            .entry(key)
            .or_insert_with(|| Timed {
                value: value.into(),
                ttl,
            })
            .is_fresh()
    }

    pub fn delete(&self, key: &str) {
        self.entries.invalidate(key);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_if_absent_keeps_the_first_value() {
        let cache = MemoryCache::new(10);
        assert!(cache.set_if_absent("k".into(), "first", Duration::from_secs(60)));
        assert!(!cache.set_if_absent("k".into(), "second", Duration::from_secs(60)));
        assert_eq!(cache.get("k").as_deref(), Some("first"));
        cache.set("k".into(), "third", Duration::from_secs(60));
        assert_eq!(cache.get("k").as_deref(), Some("third"));
    }
}
