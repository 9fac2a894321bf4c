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
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
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
        let client = self.client.with_options(&self.options);
        let key = vec![visits_key(code)];
        let args = vec![cap.to_string()];
        let granted: i64 = match client
            .evalsha(self.spend_visit.sha1().clone(), key.clone(), args.clone())
            .await
        {
            // First use on this server (or after a restart or SCRIPT FLUSH).
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                client.eval(SPEND_VISIT_LUA, key, args).await?
            }
            other => other?,
        };
        Ok(granted == 1)
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
}

impl MemorySharedCache {
    pub fn new(cache: Arc<MemoryCache>, ttl: Duration, negative_ttl: Duration) -> Self {
        Self {
            cache,
            ttl,
            negative_ttl,
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
