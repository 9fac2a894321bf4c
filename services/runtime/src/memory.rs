//! The in-process stand-in for Redis in the embedded deployment: a bounded
//! key-value cache with per-entry TTLs and `SET NX`, plus a broadcast channel
//! in place of pub/sub. Values and messages are the same strings the Redis
//! implementations exchange, so the writer's and redirect's cache code paths
//! differ only in transport.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::{Cache, EntryAction, EntryResult};
use tokio::sync::broadcast;

/// Announcements a slow subscriber may fall behind by before it is told it
/// lagged (and flushes what it caches).
const ANNOUNCEMENT_BUFFER: usize = 4096;

#[derive(Clone)]
struct Timed {
    value: Arc<str>,
    until: Instant,
}

impl Timed {
    fn new(value: &str, ttl: Duration) -> Self {
        let now = Instant::now();
        Self {
            value: value.into(),
            // A TTL too long to represent lasts as long as the process.
            until: now
                .checked_add(ttl)
                .or_else(|| now.checked_add(Duration::from_secs(u64::from(u32::MAX))))
                .unwrap_or(now),
        }
    }

    fn is_live(&self) -> bool {
        self.until > Instant::now()
    }
}

pub struct MemoryCache {
    // Expired entries are dropped when next read, as Redis does lazily.
    entries: Cache<String, Timed>,
    announcements: broadcast::Sender<Arc<str>>,
}

impl MemoryCache {
    /// A cache of at most `capacity` entries (least valuable evicted first).
    pub fn new(capacity: u64) -> Arc<Self> {
        Arc::new(Self {
            entries: Cache::new(usize::try_from(capacity).unwrap_or(usize::MAX)),
            announcements: broadcast::channel(ANNOUNCEMENT_BUFFER).0,
        })
    }

    pub fn get(&self, key: &str) -> Option<Arc<str>> {
        let timed = self.entries.get(key)?;
        if timed.is_live() {
            return Some(timed.value);
        }
        self.entries
            .remove_if(key, |current| Arc::ptr_eq(&current.value, &timed.value));
        None
    }

    /// `SET key value PX ttl`.
    pub fn set(&self, key: String, value: &str, ttl: Duration) {
        self.entries.insert(key, Timed::new(value, ttl));
    }

    /// `SET key value PX ttl NX`: whether the value was stored.
    pub fn set_if_absent(&self, key: String, value: &str, ttl: Duration) -> bool {
        let outcome = self.entries.entry(key.as_str(), None, |_, current| {
            if current.is_live() {
                EntryAction::Retain(())
            } else {
                EntryAction::ReplaceWithGuard
            }
        });
        match outcome {
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => {
                // Err only if a plain SET replaced the placeholder meanwhile:
                // that value wins, as it would in Redis.
                guard.insert(Timed::new(value, ttl)).is_ok()
            }
            EntryResult::Retained(()) | EntryResult::Removed(..) | EntryResult::Timeout => false,
        }
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

    #[test]
    fn an_expired_entry_is_gone_and_does_not_block_set_if_absent() {
        let cache = MemoryCache::new(10);
        cache.set("k".into(), "old", Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.get("k"), None);
        cache.set("k".into(), "old", Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.set_if_absent("k".into(), "new", Duration::from_secs(60)));
        assert_eq!(cache.get("k").as_deref(), Some("new"));
    }

    #[test]
    fn a_ttl_too_long_to_represent_is_kept() {
        let cache = MemoryCache::new(10);
        cache.set("k".into(), "v", Duration::MAX);
        assert_eq!(cache.get("k").as_deref(), Some("v"));
    }
}
