//! Resolving a code through the tiers: L1 in-process (moka) → L2 Redis → L3
//! Postgres replicas → the primary. Concurrent misses for one code share one
//! lookup. Three rules keep the caches from lying:
//!
//! - A replica's "not found" is never trusted on its own (the replica may not
//!   have replayed the create yet): the primary confirms it before anything
//!   negative is cached or answered as definitive. If the primary cannot be
//!   asked, the answer is a 404 that nothing caches.
//! - Fills never overwrite: Redis fills use `NX`, so whatever the writer wrote
//!   (a fresh link, an update, a tombstone) wins over a lookup racing it.
//! - An invalidation that arrives while a lookup is in flight wins: the
//!   lookup's result is served to its waiters but not kept in L1.

use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::future::Cache;
use tinyurl_domain::CachedLink;

use crate::entry::{CachePolicy, Entry};
use crate::l2::{Cached, SharedCache};
use crate::store::{LinkStore, Source};

/// The outcome of resolving a code.
#[derive(Debug, Clone)]
pub enum Resolution {
    Entry(Arc<Entry>),
    /// A replica does not have it and the primary could not confirm: 404,
    /// but not cached anywhere.
    Unconfirmed,
    /// Nothing could answer.
    Unavailable,
}

#[derive(Debug)]
enum NotCached {
    /// An invalidation for the code arrived while it was looked up.
    Raced(Arc<Entry>),
    Unconfirmed,
    Unavailable,
}

pub struct Settings {
    pub l1_capacity: u64,
    pub l1_ttl: Duration,
    pub l1_negative_ttl: Duration,
    pub policy: CachePolicy,
}

pub struct Resolver {
    l1: Option<Cache<String, Arc<Entry>>>,
    epochs: Epochs,
    l2: Option<SharedCache>,
    store: Arc<LinkStore>,
    policy: CachePolicy,
    metrics: TierMetrics,
}

impl Resolver {
    pub fn new(settings: &Settings, l2: Option<SharedCache>, store: Arc<LinkStore>) -> Self {
        let l1 = (settings.l1_capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(settings.l1_capacity)
                .expire_after(Lifetime {
                    ttl: settings.l1_ttl,
                    negative_ttl: settings.l1_negative_ttl,
                })
                .build()
        });
        Self {
            l1,
            epochs: Epochs::new(),
            l2,
            store,
            policy: settings.policy,
            metrics: TierMetrics::new(),
        }
    }

    pub async fn resolve(&self, code: &str) -> Resolution {
        let Some(l1) = &self.l1 else {
            return self.lookup(code, None).await.into();
        };
        if let Some(entry) = l1.get(code).await {
            self.metrics.l1_hit.increment(1);
            return Resolution::Entry(entry);
        }
        self.metrics.l1_miss.increment(1);
        let epoch = self.epochs.current(code);
        let looked_up = l1
            .entry_by_ref(code)
            .or_try_insert_with(self.lookup(code, Some(epoch)))
            .await;
        match looked_up {
            Ok(entry) => {
                // The invalidation may have landed between the lookup's own
                // check and the insert.
                if entry.is_fresh() && self.epochs.current(code) != epoch {
                    l1.invalidate(code).await;
                }
                Resolution::Entry(entry.into_value())
            }
            Err(not_cached) => match &*not_cached {
                NotCached::Raced(entry) => Resolution::Entry(Arc::clone(entry)),
                NotCached::Unconfirmed => Resolution::Unconfirmed,
                NotCached::Unavailable => Resolution::Unavailable,
            },
        }
    }

    /// Evicts `code` from L1 (an invalidation message).
    pub async fn invalidate(&self, code: &str) {
        self.epochs.bump(code);
        if let Some(l1) = &self.l1 {
            l1.invalidate(code).await;
        }
    }

    /// Empties L1: the invalidation stream was interrupted, so anything in it
    /// may have missed a message.
    pub fn flush(&self) {
        self.epochs.bump_all();
        if let Some(l1) = &self.l1 {
            l1.invalidate_all();
        }
    }

    pub fn l1_entries(&self) -> u64 {
        self.l1.as_ref().map_or(0, Cache::entry_count)
    }

    /// L2 then L3. `epoch` is the code's invalidation epoch when the lookup
    /// began, when the result is meant for L1.
    async fn lookup(&self, code: &str, epoch: Option<u64>) -> Result<Arc<Entry>, NotCached> {
        let started = Instant::now();
        let result = self.lookup_tiers(code).await;
        self.metrics
            .lookup_seconds
            .record(started.elapsed().as_secs_f64());
        let entry = Arc::new(result?);
        match epoch {
            Some(epoch) if self.epochs.current(code) != epoch => Err(NotCached::Raced(entry)),
            _ => Ok(entry),
        }
    }

    async fn lookup_tiers(&self, code: &str) -> Result<Entry, NotCached> {
        if let Some(l2) = &self.l2 {
            match l2.get(code).await {
                Ok(Cached::Link(link)) => {
                    self.metrics.l2_hit.increment(1);
                    return Ok(self.prepare(link));
                }
                Ok(Cached::Missing) => {
                    self.metrics.l2_negative.increment(1);
                    return Ok(Entry::Missing);
                }
                Ok(Cached::Absent) => self.metrics.l2_miss.increment(1),
                Err(error) => {
                    self.metrics.l2_error.increment(1);
                    tracing::debug!(%error, "redis read failed; reading Postgres");
                }
            }
        }
        let (found, source) = self
            .store
            .find(code)
            .await
            .map_err(|_| NotCached::Unavailable)?;
        let found = match (found, source) {
            (Some(link), _) => Some(link),
            (None, Source::Primary) => None,
            (None, Source::Replica) if !self.store.has_primary() => {
                // Nothing to confirm with: trust the replica for the short L1
                // negative lifetime only, never in Redis.
                self.metrics.db_miss.increment(1);
                return Ok(Entry::Missing);
            }
            (None, Source::Replica) => {
                self.metrics.primary_confirm.increment(1);
                self.store
                    .find_on_primary(code)
                    .await
                    .map_err(|_| NotCached::Unconfirmed)?
            }
        };
        if found.is_some() {
            self.metrics.db_hit.increment(1);
        } else {
            self.metrics.db_miss.increment(1);
        }
        if let Some(l2) = &self.l2 {
            let l2 = l2.clone();
            let code = code.to_owned();
            let record = found.clone();
            let fill_errors = self.metrics.l2_fill_error.clone();
            // Off the request path: the caller's answer does not wait on it.
            tokio::spawn(async move {
                if let Err(error) = l2.fill(&code, record.as_ref()).await {
                    fill_errors.increment(1);
                    tracing::debug!(%error, "redis fill failed");
                }
            });
        }
        Ok(found.map_or(Entry::Missing, |link| self.prepare(link)))
    }

    fn prepare(&self, link: CachedLink) -> Entry {
        Entry::from_record(link, SystemTime::now(), self.policy)
    }
}

impl From<Result<Arc<Entry>, NotCached>> for Resolution {
    fn from(result: Result<Arc<Entry>, NotCached>) -> Self {
        match result {
            Ok(entry) | Err(NotCached::Raced(entry)) => Self::Entry(entry),
            Err(NotCached::Unconfirmed) => Self::Unconfirmed,
            Err(NotCached::Unavailable) => Self::Unavailable,
        }
    }
}

/// Per-entry L1 lifetime: the TTL, never past the link's own expiry; short for
/// "not found".
struct Lifetime {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<String, Arc<Entry>> for Lifetime {
    fn expire_after_create(
        &self,
        _code: &String,
        entry: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.l1_lifetime(self.ttl, self.negative_ttl, SystemTime::now()))
    }
}

/// Invalidation epochs, striped by code: a lookup remembers its code's epoch
/// and does not cache its result if the epoch moved meanwhile.
struct Epochs {
    global: AtomicU64,
    stripes: Box<[AtomicU64]>,
}

impl Epochs {
    const STRIPES: usize = 1024;

    fn new() -> Self {
        Self {
            global: AtomicU64::new(0),
            stripes: (0..Self::STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn stripe(&self, code: &str) -> &AtomicU64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        code.hash(&mut hasher);
        &self.stripes[(hasher.finish() as usize) % Self::STRIPES]
    }

    fn current(&self, code: &str) -> u64 {
        self.global
            .load(Ordering::Acquire)
            .wrapping_add(self.stripe(code).load(Ordering::Acquire))
    }

    fn bump(&self, code: &str) {
        self.stripe(code).fetch_add(1, Ordering::AcqRel);
    }

    fn bump_all(&self) {
        self.global.fetch_add(1, Ordering::AcqRel);
    }
}

/// Counter handles registered once, so the hot path does no label lookups.
struct TierMetrics {
    l1_hit: metrics::Counter,
    l1_miss: metrics::Counter,
    l2_hit: metrics::Counter,
    l2_negative: metrics::Counter,
    l2_miss: metrics::Counter,
    l2_error: metrics::Counter,
    l2_fill_error: metrics::Counter,
    db_hit: metrics::Counter,
    db_miss: metrics::Counter,
    primary_confirm: metrics::Counter,
    lookup_seconds: metrics::Histogram,
}

impl TierMetrics {
    fn new() -> Self {
        let tier = |tier: &'static str, outcome: &'static str| metrics::counter!("redirect_tier_lookups_total", "tier" => tier, "outcome" => outcome);
        Self {
            l1_hit: tier("l1", "hit"),
            l1_miss: tier("l1", "miss"),
            l2_hit: tier("l2", "hit"),
            l2_negative: tier("l2", "negative"),
            l2_miss: tier("l2", "miss"),
            l2_error: tier("l2", "error"),
            l2_fill_error: metrics::counter!("redirect_l2_fill_errors_total"),
            db_hit: tier("postgres", "hit"),
            db_miss: tier("postgres", "miss"),
            primary_confirm: metrics::counter!("redirect_primary_confirmations_total"),
            lookup_seconds: metrics::histogram!("redirect_lookup_duration_seconds"),
        }
    }
}
