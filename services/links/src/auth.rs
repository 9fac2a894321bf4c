//! API keys. A key is `tu_` + 43 base62 characters (256 bits of entropy),
//! shown once at creation; only its SHA-256 is stored. The interceptor checks
//! the shape of the bearer token and hashes it; handlers resolve the hash to
//! the key's id through a small in-process cache in front of Postgres.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use crate::error::WriterError;
pub use crate::rate::Rate;

const KEY_PREFIX: &str = "tu_";
const KEY_BODY_LEN: usize = 43;
/// How long a resolved key stays trusted without asking the store again.
/// Revocations do not wait for it: writers poll for them (see
/// [`REVOCATION_POLL`]).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// How often a writer asks the store for keys revoked or rotated out: the
/// bound on how long a revoked key keeps working anywhere.
pub const REVOCATION_POLL: Duration = Duration::from_millis(500);
/// How far back each poll looks: past the cache lifetime, so a key cached
/// just before its revocation is always found by some poll.
pub const REVOCATION_WINDOW: Duration = Duration::from_secs(120);
/// How often a writer learns the whole set of working keys again (between
/// reloads it learns only what changed): the bound on how long a key whose
/// id became visible late is looked up within the unknown-key budget.
pub const KEY_SET_RELOAD: Duration = Duration::from_secs(300);

/// SHA-256 of a presented API key, put in request extensions by the gRPC adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

/// The id of the API key a request was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerId(pub i64);

/// What a key may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Scope {
    /// Get, list and stats of the key's own links.
    Read,
    /// Also create links.
    Create,
    /// Also update and delete them.
    Manage,
    /// Also manage every API key and the host blocklist: the operator's
    /// scope (the web console's key and blocklist pages).
    Admin,
}

/// How a stored key row says its scope: the `scope` column holds the
/// link scope (an admin's is `manage`) and `admin` the operator's flag.
pub(crate) const STORED_SCOPE: &str = "CASE WHEN admin THEN 'admin' ELSE scope END";

impl Scope {
    /// The `scope` column's value and the `admin` flag of this scope.
    pub(crate) fn columns(self) -> (&'static str, bool) {
        match self {
            Self::Admin => (Self::Manage.as_str(), true),
            other => (other.as_str(), false),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Create => "create",
            Self::Manage => "manage",
            Self::Admin => "admin",
        }
    }

    /// The stored form back; `None` for anything the schema does not allow.
    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "read" => Some(Self::Read),
            "create" => Some(Self::Create),
            "manage" => Some(Self::Manage),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Who made a request, once the key is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub owner: OwnerId,
    pub scope: Scope,
    /// The key's own request rate, overriding the writer's default.
    pub rate: Option<Rate>,
}

impl Caller {
    /// The owner, when the key's scope allows `needed`.
    pub fn require(self, needed: Scope) -> Result<OwnerId, WriterError> {
        if self.scope >= needed {
            Ok(self.owner)
        } else {
            Err(WriterError::PermissionDenied(format!(
                "this API key's scope is {}; this call needs {}",
                self.scope.as_str(),
                needed.as_str()
            )))
        }
    }
}

/// A new random key and its hash.
pub fn generate_key() -> (String, KeyHash) {
    let mut rng = rand::rng();
    let body: String = (0..KEY_BODY_LEN)
        .map(|_| char::from(tinyurl_domain::codec::ALPHABET[rng.random_range(0..62)]))
        .collect();
    let key = format!("{KEY_PREFIX}{body}");
    let hash = hash_key(&key);
    (key, hash)
}

/// Longest API key name, in bytes.
pub const MAX_KEY_NAME_LEN: usize = 200;

/// Who or what a key is for: trimmed, 1 to [`MAX_KEY_NAME_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(raw: &str) -> Result<Self, WriterError> {
        let name = raw.trim();
        if name.is_empty() || name.len() > MAX_KEY_NAME_LEN {
            return Err(WriterError::invalid(
                "name",
                format!("an API key name must be 1 to {MAX_KEY_NAME_LEN} bytes"),
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn hash_key(key: &str) -> KeyHash {
    KeyHash(Sha256::digest(key.as_bytes()).into())
}

/// The hash of the API key in an `Authorization` header (gRPC metadata or
/// HTTP), when the header holds `Bearer tu_…` of the right shape.
pub fn bearer(header: Option<&[u8]>) -> Result<KeyHash, WriterError> {
    let header = header.ok_or(WriterError::Unauthenticated(
        "no authorization header; send 'authorization: Bearer <API key>'",
    ))?;
    let value = std::str::from_utf8(header)
        .map_err(|_| WriterError::Unauthenticated("the authorization header is not ASCII"))?;
    let key = value
        .strip_prefix("Bearer ")
        .ok_or(WriterError::Unauthenticated(
            "authorization must be 'Bearer <API key>'",
        ))?
        .trim();
    let well_formed = key.len() == KEY_PREFIX.len() + KEY_BODY_LEN
        && key.starts_with(KEY_PREFIX)
        && key[KEY_PREFIX.len()..]
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric());
    if !well_formed {
        return Err(WriterError::Unauthenticated("the API key is malformed"));
    }
    Ok(hash_key(key))
}

/// Resolves key hashes to key ids, caching hits for [`KEY_CACHE_TTL`] and
/// misses for [`UNKNOWN_KEY_TTL`].
///
/// Three rules keep a flood of made-up keys from costing the honest
/// anything:
/// - every working key's hash is known here ([`Self::learn`], kept in step
///   with the store by [`crate::keys::follow_keys`]), and a known key is
///   looked up (when its cache entry expires) without the shared budget;
/// - only a hash this writer does not know spends the budget, which bounds
///   the database lookups random keys can cause;
/// - the caller's address is judged (its failed-authentication block)
///   before it spends any of the budget.
///
/// A key created since the last poll is not known yet: it is looked up
/// within the budget, and known at the next poll.
pub struct KeyCache {
    // Std mutexes: held only for a map lookup or insert, never across await.
    resolved: Mutex<HashMap<KeyHash, (Caller, Instant)>>,
    unknown: Mutex<HashMap<KeyHash, Instant>>,
    live: Mutex<LiveKeys>,
    /// One lookup per key at a time: callers of a key that is being looked
    /// up wait for that answer (a client's burst on a new key costs one query
    /// and one unit of the budget).
    in_flight: Mutex<HashMap<KeyHash, Arc<OnceCell<Option<Caller>>>>>,
    lookups: governor::DefaultDirectRateLimiter,
    capacity: usize,
}

/// The working keys' hashes as of the last poll, by their first 8 bytes:
/// a made-up key matches one by chance with odds of about `len / 2^64`, and
/// then only costs a lookup, which checks the whole hash.
#[derive(Default)]
struct LiveKeys {
    prefixes: std::collections::HashSet<u64>,
    /// The highest key id seen: the next poll asks for keys past it.
    max_id: i64,
}

fn prefix(hash: &KeyHash) -> u64 {
    let mut first = [0; 8];
    first.copy_from_slice(&hash.0[..8]);
    u64::from_le_bytes(first)
}

/// How long a key the store does not know is refused without asking again.
const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(10);
/// Keys the store is asked about per second, per process, when this writer
/// does not know them (with as many at once): random keys cannot drive one
/// database query each. Past it, the call is UNAVAILABLE and retried.
pub const UNKNOWN_KEY_LOOKUPS_PER_SECOND: u32 = 20;
/// Entries of the resolved and the unknown map before expired ones are
/// swept (and, if still full, the map is cleared).
pub const MAX_CACHED_KEYS: usize = 10_000;

/// What the key cache may spend and hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCacheSettings {
    /// Lookups a second (and at once) of keys this writer does not know.
    pub unknown_lookups_per_second: std::num::NonZeroU32,
    /// Entries of the resolved and of the unknown map.
    pub capacity: usize,
}

impl Default for KeyCacheSettings {
    fn default() -> Self {
        Self {
            unknown_lookups_per_second: std::num::NonZeroU32::new(UNKNOWN_KEY_LOOKUPS_PER_SECOND)
                .unwrap_or(std::num::NonZeroU32::MIN),
            capacity: MAX_CACHED_KEYS,
        }
    }
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new(KeyCacheSettings::default())
    }
}

impl KeyCache {
    pub fn new(settings: KeyCacheSettings) -> Self {
        Self {
            resolved: Mutex::default(),
            unknown: Mutex::default(),
            live: Mutex::default(),
            in_flight: Mutex::default(),
            lookups: governor::RateLimiter::direct(governor::Quota::per_second(
                settings.unknown_lookups_per_second,
            )),
            capacity: settings.capacity.max(1),
        }
    }

    /// The caller behind the key `hash`: from the caches, or from `lookup`
    /// (the store), one lookup per key at a time. For a key this writer does
    /// not know, `admit` (the caller's address) is asked first, then the
    /// budget.
    pub async fn resolve<Lookup>(
        &self,
        hash: &KeyHash,
        admit: impl FnOnce() -> Result<(), WriterError>,
        lookup: impl FnOnce() -> Lookup,
    ) -> Result<Caller, WriterError>
    where
        Lookup: std::future::Future<Output = Result<Option<Caller>, WriterError>>,
    {
        let rejected = |reason: &'static str| {
            metrics::counter!("writer_key_rejections_total", "reason" => reason).increment(1);
        };
        if let Some(caller) = self.get(hash) {
            return Ok(caller);
        }
        let known = self.is_live(hash);
        let unknown = !known
            && self
                .unknown
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(hash)
                .is_some_and(|seen| seen.elapsed() < UNKNOWN_KEY_TTL);
        if unknown {
            rejected("cached_unknown");
            return Err(WriterError::Unauthenticated("unknown or revoked API key"));
        }
        if !known {
            admit()?;
        }
        let cell = Arc::clone(
            self.in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(*hash)
                .or_default(),
        );
        let answer = cell
            .get_or_try_init(|| async {
                if !known && self.lookups.check().is_err() {
                    rejected("over_budget");
                    return Err(WriterError::KeyBudgetSpent);
                }
                let found = lookup().await?;
                let outcome = match (found.is_some(), known) {
                    (true, true) => "known",
                    (true, false) => "found",
                    (false, _) => "unknown",
                };
                metrics::counter!("writer_key_lookups_total", "outcome" => outcome).increment(1);
                match found {
                    Some(caller) => self.insert(*hash, caller),
                    None => self.insert_unknown(*hash),
                }
                Ok(found)
            })
            .await
            .copied();
        {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if in_flight
                .get(hash)
                .is_some_and(|current| Arc::ptr_eq(current, &cell))
            {
                in_flight.remove(hash);
            }
        }
        match answer? {
            Some(caller) => Ok(caller),
            None => {
                rejected("unknown");
                Err(WriterError::Unauthenticated("unknown or revoked API key"))
            }
        }
    }

    /// Whether `hash` was a working key at the last poll.
    fn is_live(&self, hash: &KeyHash) -> bool {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .prefixes
            .contains(&prefix(hash))
    }

    /// Learns working keys (`(id, hash)`, from [`crate::store::LinkStore::live_key_hashes`]);
    /// with `replace`, they are all of them and replace what was known.
    pub fn learn(&self, keys: &[(i64, KeyHash)], replace: bool) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if replace {
            live.prefixes.clear();
        }
        for (id, hash) in keys {
            live.prefixes.insert(prefix(hash));
            live.max_id = live.max_id.max(*id);
        }
        metrics::gauge!("writer_known_keys").set(live.prefixes.len() as f64);
    }

    /// The highest key id learnt: the next poll asks for keys past it.
    pub fn max_known_id(&self) -> i64 {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .max_id
    }

    /// Remembers that the store does not know `hash`.
    fn insert_unknown(&self, hash: KeyHash) {
        let mut map = self
            .unknown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.capacity {
            map.retain(|_, seen| seen.elapsed() < UNKNOWN_KEY_TTL);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(hash, Instant::now());
    }

    /// Drops keys that were revoked or rotated out: their next call asks the
    /// store, which refuses them. Returns how many were cached here.
    pub fn forget(&self, hashes: &[KeyHash]) -> usize {
        {
            let mut live = self
                .live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for hash in hashes {
                live.prefixes.remove(&prefix(hash));
            }
        }
        let mut map = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hashes
            .iter()
            .filter(|hash| map.remove(hash).is_some())
            .count()
    }

    fn get(&self, hash: &KeyHash) -> Option<Caller> {
        let map = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(hash)
            .filter(|(_, resolved_at)| resolved_at.elapsed() < KEY_CACHE_TTL)
            .map(|(caller, _)| *caller)
    }

    fn insert(&self, hash: KeyHash, caller: Caller) {
        let mut map = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: a flood of distinct valid keys cannot grow it without limit.
        if map.len() >= self.capacity {
            map.retain(|_, (_, resolved_at)| resolved_at.elapsed() < KEY_CACHE_TTL);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(hash, (caller, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: Caller = Caller {
        owner: OwnerId(7),
        scope: Scope::Create,
        rate: None,
    };

    #[test]
    fn rates_parse_and_print() {
        assert_eq!("100/s".parse::<Rate>().map(Rate::get), Ok(100));
        assert_eq!(
            Rate::per_second(5).map(|rate| rate.to_string()),
            Some("5/s".to_owned())
        );
        for bad in ["0/s", "100", "-1/s", "x/s", "100/min"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_include_the_ones_below() {
        assert_eq!(CALLER.require(Scope::Read).ok(), Some(OwnerId(7)));
        assert_eq!(CALLER.require(Scope::Create).ok(), Some(OwnerId(7)));
        assert!(matches!(
            CALLER.require(Scope::Manage),
            Err(WriterError::PermissionDenied(message)) if message.contains("scope is create")
        ));
        for scope in [Scope::Read, Scope::Create, Scope::Manage, Scope::Admin] {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
    }

    fn admit() -> Result<(), WriterError> {
        Ok(())
    }

    /// A cache whose budget of unknown-key lookups is `per_second`.
    fn cache_with_budget(per_second: u32) -> KeyCache {
        KeyCache::new(KeyCacheSettings {
            unknown_lookups_per_second: std::num::NonZeroU32::new(per_second)
                .expect("a positive budget"),
            capacity: 100,
        })
    }

    /// Spends the budget with made-up keys until one is refused for it.
    async fn exhaust(cache: &KeyCache) {
        loop {
            let (_, random) = generate_key();
            let refused = cache.resolve(&random, admit, || async { Ok(None) }).await;
            if matches!(refused, Err(WriterError::KeyBudgetSpent)) {
                return;
            }
        }
    }

    #[tokio::test]
    async fn known_keys_are_looked_up_without_the_budget() {
        let cache = cache_with_budget(1);
        let (_, known) = generate_key();
        let (_, new) = generate_key();
        cache.learn(&[(3, known)], false);
        assert_eq!(cache.max_known_id(), 3);
        exhaust(&cache).await;

        let found = cache
            .resolve(&known, admit, || async { Ok(Some(CALLER)) })
            .await;
        assert_eq!(found.ok(), Some(CALLER), "a known key waits for nothing");
        // A real key this writer has not learnt yet meets the budget.
        let waiting = cache
            .resolve(&new, admit, || async { Ok(Some(CALLER)) })
            .await;
        assert!(
            matches!(waiting, Err(WriterError::KeyBudgetSpent)),
            "{waiting:?}"
        );
        // A full reload replaces what was known; a forgotten key is unknown.
        cache.learn(&[(4, new)], true);
        let found = cache
            .resolve(&new, admit, || async { Ok(Some(CALLER)) })
            .await;
        assert_eq!(found.ok(), Some(CALLER));
        assert_eq!(cache.forget(&[new]), 1);
        let (_, other) = generate_key();
        cache.learn(&[(5, other)], false);
        let waiting = cache
            .resolve(&new, admit, || async { Ok(Some(CALLER)) })
            .await;
        assert!(
            matches!(waiting, Err(WriterError::KeyBudgetSpent)),
            "{waiting:?}"
        );
        assert!(!cache.is_live(&known), "a reload without it forgot it");
        assert!(cache.is_live(&other));
    }

    #[tokio::test]
    async fn a_refused_address_spends_none_of_the_budget() {
        let cache = cache_with_budget(2);
        let lookups = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..100 {
            let (_, random) = generate_key();
            let refused = cache
                .resolve(
                    &random,
                    || Err(WriterError::Unauthenticated("blocked")),
                    || async {
                        lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok(None)
                    },
                )
                .await;
            assert!(matches!(
                refused,
                Err(WriterError::Unauthenticated("blocked"))
            ));
        }
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 0);
        // The budget is whole: a real key from another address is looked up.
        let (_, real) = generate_key();
        let found = cache
            .resolve(&real, admit, || async { Ok(Some(CALLER)) })
            .await;
        assert_eq!(found.ok(), Some(CALLER));
        // A known key is not judged by its address at all.
        let (_, known) = generate_key();
        cache.learn(&[(1, known)], false);
        let found = cache
            .resolve(
                &known,
                || Err(WriterError::Unauthenticated("blocked")),
                || async { Ok(Some(CALLER)) },
            )
            .await;
        assert_eq!(found.ok(), Some(CALLER));
    }

    #[tokio::test]
    async fn a_burst_on_one_key_costs_one_lookup_and_unknown_keys_are_remembered() {
        let cache = Arc::new(KeyCache::default());
        let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (_, known) = generate_key();
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (cache, lookups) = (Arc::clone(&cache), Arc::clone(&lookups));
            callers.spawn(async move {
                cache
                    .resolve(&known, admit, || async {
                        lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(Some(CALLER))
                    })
                    .await
            });
        }
        while let Some(joined) = callers.join_next().await {
            assert_eq!(joined.ok().and_then(Result::ok), Some(CALLER));
        }
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 1);

        // A forgotten (revoked) key is looked up again, and refused.
        assert_eq!(cache.forget(&[known]), 1);
        let refused = cache.resolve(&known, admit, || async { Ok(None) }).await;
        assert!(matches!(refused, Err(WriterError::Unauthenticated(_))));

        let (_, unknown) = generate_key();
        for _ in 0..10 {
            let refused = cache
                .resolve(&unknown, admit, || async {
                    lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(None)
                })
                .await;
            assert!(matches!(refused, Err(WriterError::Unauthenticated(_))));
        }
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 2);

        // Distinct unknown keys: past the budget, refused without a lookup.
        let mut unavailable = 0;
        let started = Instant::now();
        for _ in 0..100 {
            let (_, random) = generate_key();
            let refused = cache.resolve(&random, admit, || async { Ok(None) }).await;
            if matches!(refused, Err(WriterError::KeyBudgetSpent)) {
                unavailable += 1;
            }
        }
        // The budget's contract, whatever the speed: a burst, then a rate.
        let budget = UNKNOWN_KEY_LOOKUPS_PER_SECOND as usize
            * (1 + started.elapsed().as_secs_f64().ceil() as usize);
        assert!(
            unavailable >= 100usize.saturating_sub(budget),
            "{unavailable}"
        );
        assert!(unavailable > 0, "the budget ran out");
    }
}
