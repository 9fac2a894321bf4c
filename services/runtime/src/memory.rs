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
    /// The link days whose visitors were added before the batch was sent,
    /// as in the Redis stream's `visitors` field (`day link` lines).
    pub visitors: String,
}

/// A link day's visitors: a HyperLogLog of 2^14 registers (0.8% standard
/// error, as Redis's), fed with hashes that are already uniform.
pub type VisitorSketch = cardinality_estimator::CardinalityEstimator<u64, wyhash::WyHash, 14, 6>;

/// The embedded deployment's visitor sketches and day keys, in memory only.
#[derive(Default)]
struct Visitors {
    /// Day → its key: the newest few days (a key is never handed out for a
    /// day that is over, see [`MemoryCache::day_key`]).
    keys: Vec<(i32, [u8; 16])>,
    sketches: std::collections::HashMap<(String, i32), VisitorSketch>,
}

pub struct MemoryCache {
    entries: ExpiringCache<str>,
    announcements: broadcast::Sender<Arc<str>>,
    clicks: mpsc::Sender<ClickBatch>,
    click_reader: Mutex<Option<mpsc::Receiver<ClickBatch>>>,
    /// Visits used by capped links, by code (see [`Self::spend_visit`]).
    visits: Mutex<std::collections::HashMap<String, u64>>,
    visitors: Mutex<Visitors>,
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
            visitors: Mutex::default(),
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

    fn visitors(&self) -> std::sync::MutexGuard<'_, Visitors> {
        self.visitors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Day `day`'s visitor key: the one already held, or `candidate`, now
    /// held. Days before `oldest_open` are over: their keys and the sketches
    /// of the days before them are dropped (a sketch outlives its day by one
    /// day, for batches still on their way).
    pub fn day_key(&self, day: i32, oldest_open: i32, candidate: [u8; 16]) -> [u8; 16] {
        let mut visitors = self.visitors();
        visitors.keys.retain(|(kept, _)| *kept >= oldest_open);
        visitors
            .sketches
            .retain(|(_, kept), _| *kept >= oldest_open - 1);
        if let Some((_, key)) = visitors.keys.iter().find(|(kept, _)| *kept == day) {
            return *key;
        }
        visitors.keys.push((day, candidate));
        candidate
    }

    /// `PFADD`: adds visitor hashes to `link`'s sketch of `day`.
    pub fn add_visitors(&self, link: &str, day: i32, hashes: &[u64]) {
        let mut visitors = self.visitors();
        let sketch = visitors.sketches.entry((link.to_owned(), day)).or_default();
        for hash in hashes {
            sketch.insert_hash(*hash);
        }
    }

    /// `PFCOUNT`: the visitors of `link` on `day` (0 without a sketch).
    pub fn count_visitors(&self, link: &str, day: i32) -> u64 {
        self.visitors()
            .sketches
            .get(&(link.to_owned(), day))
            .map_or(0, |sketch| sketch.estimate() as u64)
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
