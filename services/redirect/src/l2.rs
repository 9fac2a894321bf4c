//! The shared tier: cache-aside reads and fills only where nothing is (a fill
//! never replaces what the writer wrote). Two implementations: Redis (the
//! split deployment; every command bounded by the Redis timeout, failing fast
//! while Redis is down) and the in-process [`MemoryCache`] (the embedded one).

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{Expiration, SetOptions};
use rand::Rng as _;
use secrecy::SecretString;
use tinyurl_domain::CachedLink;
use tinyurl_domain::cached::{NEGATIVE_ENTRY, link_key, visits_key};
use tinyurl_runtime::memory::MemoryCache;

/// What Redis holds for a code.
#[derive(Debug)]
pub enum Cached {
    /// Boxed: a record is far larger than the other answers.
    Link(Box<CachedLink>),
    /// A negative entry or a deletion tombstone.
    Missing,
    /// Nothing (or an entry this version cannot read).
    Absent,
}

/// The shared cache as the redirect service uses it.
#[async_trait::async_trait]
pub trait SharedCache: Send + Sync + 'static {
    async fn get(&self, code: &str) -> anyhow::Result<Cached>;

    /// Caches what the database said, only where the cache holds nothing: a
    /// link the writer wrote (or a tombstone) always wins over a possibly
    /// stale read. `None` caches "not found" for the negative TTL.
    async fn fill(&self, code: &str, found: Option<&CachedLink>) -> anyhow::Result<()>;

    /// Uses one of the `cap` visits of `code`, atomically for every redirect
    /// process: false when they are all used.
    async fn spend_visit(&self, code: &str, cap: u64) -> anyhow::Result<bool>;

    /// Takes one of the `limit` attempts `key` has in its window (fixed,
    /// `window` long from its first attempt), for every redirect process:
    /// `Err(wait)` when none is left.
    async fn take_attempt(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> anyhow::Result<Result<(), Duration>>;

    /// Gives back an attempt taken at `key`.
    async fn refund_attempt(&self, key: &str) -> anyhow::Result<()>;
}

/// Takes an attempt while fewer than ARGV[1] were taken in the window
/// (ARGV[2] milliseconds from the first): 1, or minus the milliseconds left.
const TAKE_ATTEMPT_LUA: &str = "
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    left = tonumber(ARGV[2])
  end
  return -math.max(left, 1)
end
redis.call('INCR', KEYS[1])
if used == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1";

/// Gives an attempt back, never below zero (a window that ended is gone).
const REFUND_ATTEMPT_LUA: &str = "
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used > 0 then redis.call('DECR', KEYS[1]) end
return 0";

/// Attempts counted in one process: the embedded deployment's, and a
/// redirect's without Redis. Keys past their window are swept when the
/// map grows.
#[derive(Default)]
pub struct LocalAttempts {
    windows: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u32)>>,
}

/// Keys held before the ended windows are swept.
const MAX_LOCAL_ATTEMPT_KEYS: usize = 100_000;

impl LocalAttempts {
    fn windows(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (std::time::Instant, u32)>>
    {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn take(&self, key: &str, limit: u32, window: Duration) -> Result<(), Duration> {
        let now = std::time::Instant::now();
        let mut windows = self.windows();
        if windows.len() >= MAX_LOCAL_ATTEMPT_KEYS {
            windows.retain(|_, (ends, _)| *ends > now);
        }
        let (ends, used) = windows.entry(key.to_owned()).or_insert((now + window, 0));
        if *ends <= now {
            *ends = now + window;
            *used = 0;
        }
        if *used >= limit {
            return Err(ends.saturating_duration_since(now));
        }
        *used += 1;
        Ok(())
    }

    pub fn refund(&self, key: &str) {
        if let Some((_, used)) = self.windows().get_mut(key) {
            *used = used.saturating_sub(1);
        }
    }
}

/// Uses a visit of a capped link when one is left: the count never passes
/// the cap (so raising the cap later gives exactly the difference), and the
/// key has no expiry (it lasts as long as the link).
const SPEND_VISIT_LUA: &str = "
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
return 1";

/// Reads a cache entry as the writer encodes it.
fn parse(code: &str, raw: Option<&str>) -> Cached {
    match raw {
        None => Cached::Absent,
        Some(NEGATIVE_ENTRY) => Cached::Missing,
        Some(raw) => match CachedLink::decode(raw) {
            Some(link) => Cached::Link(Box::new(link)),
            None => {
                tracing::warn!(code, "unreadable cache entry; reading the database");
                Cached::Absent
            }
        },
    }
}

/// The entry to fill and its TTL.
fn fill_entry(
    found: Option<&CachedLink>,
    ttl: Duration,
    negative_ttl: Duration,
) -> (String, Duration) {
    match found {
        Some(link) => (link.encode(), jittered(ttl)),
        None => (NEGATIVE_ENTRY.to_owned(), negative_ttl),
    }
}

#[derive(Clone)]
pub struct RedisSharedCache {
    client: Client,
    options: Options,
    ttl: Duration,
    negative_ttl: Duration,
    spend_visit: Script,
    take_attempt: Script,
    refund_attempt: Script,
}

impl RedisSharedCache {
    pub fn connect(
        url: &SecretString,
        timeout: Duration,
        ttl: Duration,
        negative_ttl: Duration,
    ) -> anyhow::Result<Self> {
        let client = tinyurl_runtime::redis::builder(url, timeout)?.build()?;
        client.connect();
        Ok(Self {
            client,
            options: tinyurl_runtime::redis::command_options(timeout),
            ttl,
            negative_ttl,
            spend_visit: Script::from_lua(SPEND_VISIT_LUA),
            take_attempt: Script::from_lua(TAKE_ATTEMPT_LUA),
            refund_attempt: Script::from_lua(REFUND_ATTEMPT_LUA),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `script` on `key`, loading it first where the server does not
    /// have it (its first use there, or after a restart or SCRIPT FLUSH).
    async fn run(
        &self,
        script: &Script,
        lua: &'static str,
        key: String,
        args: Vec<String>,
    ) -> anyhow::Result<i64> {
        let client = self.client.with_options(&self.options);
        let keys = vec![key];
        Ok(
            match client
                .evalsha(script.sha1().clone(), keys.clone(), args.clone())
                .await
            {
                Err(error) if error.details().starts_with("NOSCRIPT") => {
                    client.eval(lua, keys, args).await?
                }
                other => other?,
            },
        )
    }

    pub fn options(&self) -> &Options {
        &self.options
    }
}

#[async_trait::async_trait]
impl SharedCache for RedisSharedCache {
    async fn get(&self, code: &str) -> anyhow::Result<Cached> {
        let raw: Option<String> = self
            .client
            .with_options(&self.options)
            .get(link_key(code))
            .await?;
        Ok(parse(code, raw.as_deref()))
    }

    async fn spend_visit(&self, code: &str, cap: u64) -> anyhow::Result<bool> {
        let granted = self
            .run(
                &self.spend_visit,
                SPEND_VISIT_LUA,
                visits_key(code),
                vec![cap.to_string()],
            )
            .await?;
        Ok(granted == 1)
    }

    async fn take_attempt(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> anyhow::Result<Result<(), Duration>> {
        let args = vec![
            limit.to_string(),
            tinyurl_runtime::redis::px_millis(window).to_string(),
        ];
        let taken = self
            .run(&self.take_attempt, TAKE_ATTEMPT_LUA, key.to_owned(), args)
            .await?;
        Ok(if taken == 1 {
            Ok(())
        } else {
            Err(Duration::from_millis(taken.unsigned_abs()))
        })
    }

    async fn refund_attempt(&self, key: &str) -> anyhow::Result<()> {
        self.run(
            &self.refund_attempt,
            REFUND_ATTEMPT_LUA,
            key.to_owned(),
            Vec::new(),
        )
        .await?;
        Ok(())
    }

    async fn fill(&self, code: &str, found: Option<&CachedLink>) -> anyhow::Result<()> {
        let (value, ttl) = fill_entry(found, self.ttl, self.negative_ttl);
        self.client
            .with_options(&self.options)
            .set::<Value, _, _>(
                link_key(code),
                value,
                Some(Expiration::PX(tinyurl_runtime::redis::px_millis(ttl))),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(())
    }
}

/// The embedded deployment's shared tier, in process (keyed by bare code,
/// as the writer's `MemoryLinkCache` writes it).
pub struct MemorySharedCache {
    cache: Arc<MemoryCache>,
    ttl: Duration,
    negative_ttl: Duration,
    attempts: Arc<LocalAttempts>,
}

impl MemorySharedCache {
    /// `attempts` is shared by every serving thread's tier.
    pub fn new(
        cache: Arc<MemoryCache>,
        ttl: Duration,
        negative_ttl: Duration,
        attempts: Arc<LocalAttempts>,
    ) -> Self {
        Self {
            cache,
            ttl,
            negative_ttl,
            attempts,
        }
    }
}

#[async_trait::async_trait]
impl SharedCache for MemorySharedCache {
    async fn get(&self, code: &str) -> anyhow::Result<Cached> {
        Ok(parse(code, self.cache.get(code).as_deref()))
    }

    async fn fill(&self, code: &str, found: Option<&CachedLink>) -> anyhow::Result<()> {
        let (value, ttl) = fill_entry(found, self.ttl, self.negative_ttl);
        self.cache.set_if_absent(code.to_owned(), &value, ttl);
        Ok(())
    }

    async fn spend_visit(&self, code: &str, cap: u64) -> anyhow::Result<bool> {
        Ok(self.cache.spend_visit(code, cap))
    }

    async fn take_attempt(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> anyhow::Result<Result<(), Duration>> {
        Ok(self.attempts.take(key, limit, window))
    }

    async fn refund_attempt(&self, key: &str) -> anyhow::Result<()> {
        self.attempts.refund(key);
        Ok(())
    }
}

/// `ttl` ± 10%, so entries filled together do not expire together.
fn jittered(ttl: Duration) -> Duration {
    let spread = ttl.as_millis() as f64 * 0.1;
    let offset = rand::rng().random_range(-spread..=spread);
    Duration::from_millis((ttl.as_millis() as f64 + offset).max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let ttl = Duration::from_secs(1000);
        for _ in 0..1000 {
            let jittered = jittered(ttl);
            assert!(jittered >= Duration::from_secs(900) && jittered <= Duration::from_secs(1100));
        }
    }
}
