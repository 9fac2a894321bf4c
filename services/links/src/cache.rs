//! Keeps the shared cache coherent with the store: after each commit the link
//! is written through (so a fresh link redirects while replicas lag); updates
//! overwrite the entry and deletes leave a tombstone, and every change is
//! announced on the invalidation channel that redirect replicas subscribe to.
//! A cache being down never fails a write: the error is logged and counted,
//! and redirect falls back to the database.
//!
//! Two implementations: Redis (the split deployment) and the in-process
//! [`MemoryCache`] (the embedded one), with the same entries and messages.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fred::prelude::*;
use fred::types::Expiration;
use fred::types::scripts::Script;
use secrecy::SecretString;
use tinyurl_domain::CachedLink;
use tinyurl_domain::cached::{INVALIDATION_CHANNEL, NEGATIVE_ENTRY, announcement, link_key};
use tinyurl_runtime::memory::MemoryCache;
use tinyurl_runtime::redis::px_millis;

use crate::store::StoredLink;

/// How long a deleted link's tombstone lives: far longer than any replica
/// lag the redirect service tolerates.
const TOMBSTONE_TTL: Duration = Duration::from_secs(10 * 60);

/// What the writer does to the shared cache after a commit. Never fails: a
/// cache problem is logged and counted.
#[async_trait::async_trait]
pub trait LinkCache: Send + Sync + 'static {
    /// Writes new links through and announces their codes. The announcement
    /// evicts any short-lived "not found" a redirect replica may hold for a
    /// code that was probed before it existed (typically a custom alias).
    async fn write_through(&self, links: &[StoredLink]);

    /// Overwrites the entry of an updated link and announces the change.
    async fn replace(&self, link: &StoredLink);

    /// Replaces the entry of a deleted link with a tombstone and announces
    /// the change. A tombstone rather than a delete: a redirect replica
    /// filling the cache from a lagging database replica writes only where
    /// nothing is, so it cannot put the deleted link back while the tombstone
    /// lives.
    async fn remove(&self, code: &str);

    /// The visits a capped link has used, as the redirects count them;
    /// `None` when that cannot be read now (or nothing counts them).
    async fn visits_used(&self, code: &str) -> Option<u64> {
        let _ = code;
        None
    }

    /// Whether the cache lives in this process only, so that a change made
    /// by another process (the command line's `block-host` beside a
    /// running `tinyurl up`) cannot have reached it.
    fn in_process(&self) -> bool {
        false
    }
}

/// Writes a group of new links through and announces them in one command:
/// a pipeline of one SET per link costs the client far more than the server,
/// and a group commit writes up to a thousand. `KEYS` are the entries;
/// `ARGV` is the channel, the announcement, then a value and a TTL in
/// milliseconds per key. The keys span hash slots, so on a Redis Cluster the
/// same writes go as a pipeline of SETs (fred sends each to its slot's
/// master) and the announcement as a sharded publish
/// ([`RedisLinkCache::write_through_cluster`]).
const WRITE_THROUGH_LUA: &str = r"
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1 + 2 * i], 'PX', ARGV[2 + 2 * i])
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return #KEYS
";

#[derive(Clone)]
pub struct RedisLinkCache {
    client: Option<Client>,
    ttl: Duration,
    options: Options,
    write_through: Script,
}

impl RedisLinkCache {
    /// A cache that does nothing, when no Redis is configured.
    pub fn disabled() -> Self {
        Self {
            client: None,
            ttl: Duration::ZERO,
            options: Options::default(),
            write_through: Script::from_lua(WRITE_THROUGH_LUA),
        }
    }

    /// Connects in the background; commands before the connection is up fail
    /// fast instead of queueing.
    pub fn connect(url: &SecretString, timeout: Duration, ttl: Duration) -> anyhow::Result<Self> {
        let client = tinyurl_runtime::redis::builder(url, timeout)?.build()?;
        client.connect();
        let options = tinyurl_runtime::redis::command_options(timeout);
        Ok(Self {
            client: Some(client),
            ttl,
            options,
            write_through: Script::from_lua(WRITE_THROUGH_LUA),
        })
    }

    /// Waits up to `timeout` for the connection (commands fail fast while
    /// it is being made): for one-shot commands that must reach Redis.
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        tokio::time::timeout(timeout, client.wait_for_connect())
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer within {timeout:?}"))??;
        Ok(())
    }

    /// SETs the entry of `link` with its TTL on `target` (a client or a
    /// pipeline); `None` when the link has already expired.
    async fn set_entry<C: KeysInterface + Sync>(
        &self,
        target: &C,
        link: &StoredLink,
    ) -> Option<Result<(), Error>> {
        let expiry = self.expiry_for(link)?;
        Some(
            target
                .set(
                    link_key(&link.code),
                    cached(link).encode(),
                    Some(expiry),
                    None,
                    false,
                )
                .await,
        )
    }

    async fn announce(&self, code: &str) {
        let Some(client) = self.connected("announce") else {
            return;
        };
        let client = client.with_options(&self.options);
        let published: Result<i64, Error> = if client.is_clustered() {
            client.spublish(INVALIDATION_CHANNEL, code).await
        } else {
            client.publish(INVALIDATION_CHANNEL, code).await
        };
        match published {
            Ok(_) => {
                metrics::counter!("writer_cache_writes_total", "op" => "invalidate").increment(1)
            }
            Err(error) => record_failure("invalidate", &error),
        }
    }

    /// `KEYS` and `ARGV` of [`WRITE_THROUGH_LUA`] for `links`.
    fn write_through_args(&self, links: &[StoredLink]) -> (Vec<Key>, Vec<Value>) {
        let mut keys = Vec::with_capacity(links.len());
        let mut args = Vec::with_capacity(2 + 2 * links.len());
        args.push(Value::from(INVALIDATION_CHANNEL));
        args.push(Value::from(announcement(
            links.iter().map(|link| link.code.as_str()),
        )));
        for link in links {
            // An already expired link is only announced, never cached.
            if let Some(ttl) = entry_ttl(self.ttl, link) {
                keys.push(Key::from(link_key(&link.code)));
                args.push(Value::from(cached(link).encode()));
                args.push(Value::from(px_millis(ttl)));
            }
        }
        (keys, args)
    }

    /// [`LinkCache::write_through`] on a Redis Cluster: one pipeline of SETs
    /// (split by fred across the masters owning their slots), then the
    /// announcement over sharded pub/sub, which reaches the subscribers of
    /// the channel's shard without being broadcast to every node.
    async fn write_through_cluster(&self, client: &Client, links: &[StoredLink]) {
        let pipeline = client.pipeline();
        let mut queued = 0u64;
        for link in links {
            if let Some(queuing) = self.set_entry(&pipeline, link).await {
                if let Err(error) = queuing {
                    return record_failure("write_through", &error);
                }
                queued += 1;
            }
        }
        let written: Result<Vec<Value>, Error> = if queued == 0 {
            Ok(Vec::new())
        } else {
            match tokio::time::timeout(self.options.timeout.unwrap_or_default(), pipeline.all())
                .await
            {
                Ok(written) => written,
                Err(_) => Err(Error::new(ErrorKind::Timeout, "pipeline timed out")),
            }
        };
        match written {
            Ok(_) => {
                metrics::counter!("writer_cache_writes_total", "op" => "write_through")
                    .increment(queued);
            }
            Err(error) => record_failure("write_through", &error),
        }
        let codes = announcement(links.iter().map(|link| link.code.as_str()));
        let published: Result<i64, Error> = client
            .with_options(&self.options)
            .spublish(INVALIDATION_CHANNEL, codes)
            .await;
        if let Err(error) = published {
            record_failure("invalidate", &error);
        }
    }

    fn expiry_for(&self, link: &StoredLink) -> Option<Expiration> {
        entry_ttl(self.ttl, link).map(|ttl| Expiration::PX(px_millis(ttl)))
    }
}

#[async_trait::async_trait]
impl LinkCache for RedisLinkCache {
    #[tracing::instrument(name = "cache_write_through", skip_all, fields(count = links.len()))]
    async fn write_through(&self, links: &[StoredLink]) {
        let Some(client) = self.connected("write_through") else {
            return;
        };
        if links.is_empty() {
            return;
        }
        if client.is_clustered() {
            return self.write_through_cluster(client, links).await;
        }
        let client = client.with_options(&self.options);
        let (keys, args) = self.write_through_args(links);
        let written: Result<Value, Error> = match client
            .evalsha(self.write_through.sha1().clone(), keys, args)
            .await
        {
            // First use on this server (or after SCRIPT FLUSH / a
            // restart): EVAL runs it and loads it for the next EVALSHA.
            // The arguments are built again rather than kept for this
            // rare case. (fred's `evalsha_with_reload` clones them on every
            // call and takes no per-command options, so no timeout.)
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                let (keys, args) = self.write_through_args(links);
                client.eval(WRITE_THROUGH_LUA, keys, args).await
            }
            result => result,
        };
        match written {
            Ok(_) => metrics::counter!("writer_cache_writes_total", "op" => "write_through")
                .increment(links.len() as u64),
            Err(error) => record_failure("write_through", &error),
        }
    }

    async fn replace(&self, link: &StoredLink) {
        let Some(client) = self.connected("replace") else {
            return;
        };
        let client = client.with_options(&self.options);
        let written = match self.set_entry(&client, link).await {
            Some(written) => written,
            // Expired already: nothing worth caching, drop the stale entry.
            None => client.del::<i64, _>(link_key(&link.code)).await.map(drop),
        };
        if let Err(error) = written {
            record_failure("replace", &error);
        }
        self.announce(&link.code).await;
    }

    async fn visits_used(&self, code: &str) -> Option<u64> {
        let client = self.connected("visits_used")?;
        let used: Option<u64> = client
            .with_options(&self.options)
            .get(tinyurl_domain::cached::visits_key(code))
            .await
            .map_err(|error| record_failure("visits_used", &error))
            .ok()?;
        Some(used.unwrap_or(0))
    }

    async fn remove(&self, code: &str) {
        let Some(client) = self.connected("remove") else {
            return;
        };
        let removed: Result<(), Error> = client
            .with_options(&self.options)
            .set(
                link_key(code),
                NEGATIVE_ENTRY,
                Some(Expiration::PX(px_millis(TOMBSTONE_TTL))),
                None,
                false,
            )
            .await;
        if let Err(error) = removed {
            record_failure("remove", &error);
        }
        self.announce(code).await;
    }
}

/// The embedded deployment's cache: the same entries and announcements as
/// [`RedisLinkCache`], in process. Keys are bare codes: nothing else shares
/// this keyspace, so Redis's `link:` prefix would only cost an allocation.
pub struct MemoryLinkCache {
    cache: Arc<MemoryCache>,
    ttl: Duration,
}

impl MemoryLinkCache {
    pub fn new(cache: Arc<MemoryCache>, ttl: Duration) -> Self {
        Self { cache, ttl }
    }

    fn set_entry(&self, link: &StoredLink) {
        match entry_ttl(self.ttl, link) {
            Some(ttl) => self
                .cache
                .set(link.code.clone(), &cached(link).encode(), ttl),
            None => self.cache.delete(&link.code),
        }
    }

    fn announce(&self, code: &str) {
        self.cache.publish(code);
        metrics::counter!("writer_cache_writes_total", "op" => "invalidate").increment(1);
    }
}

#[async_trait::async_trait]
impl LinkCache for MemoryLinkCache {
    fn in_process(&self) -> bool {
        true
    }

    async fn write_through(&self, links: &[StoredLink]) {
        if links.is_empty() {
            return;
        }
        for link in links {
            self.set_entry(link);
        }
        let codes = announcement(links.iter().map(|link| link.code.as_str()));
        self.cache.publish(&codes);
        metrics::counter!("writer_cache_writes_total", "op" => "write_through")
            .increment(links.len() as u64);
    }

    async fn replace(&self, link: &StoredLink) {
        self.set_entry(link);
        self.announce(&link.code);
    }

    async fn visits_used(&self, code: &str) -> Option<u64> {
        Some(self.cache.visits_used(code))
    }

    async fn remove(&self, code: &str) {
        self.cache
            .set(code.to_owned(), NEGATIVE_ENTRY, TOMBSTONE_TTL);
        self.announce(code);
    }
}

/// An entry's TTL: `ttl`, never past the link's own expiry; `None` when the
/// link has already expired (nothing worth caching).
fn entry_ttl(ttl: Duration, link: &StoredLink) -> Option<Duration> {
    let ttl = match link.expires_at {
        Some(expires_at) => ttl.min(expires_at.duration_since(SystemTime::now()).ok()?),
        None => ttl,
    };
    (ttl.as_millis() > 0).then_some(ttl)
}

/// The record of `link` as the redirect reads it: a protected link's target,
/// UTM fields and rules only sealed, as the redirect's database read has them.
fn cached(link: &StoredLink) -> CachedLink {
    let (target_url, options) = match link.options.redirect_view() {
        Some(view) => (tinyurl_domain::cached::SEALED_TARGET.to_owned(), view),
        None => (link.target_url.clone(), link.options.clone()),
    };
    CachedLink {
        target_url,
        redirect_status: link.redirect_status,
        forward_query: link.forward_query,
        expires_at: link.expires_at,
        enabled: link.redirects(),
        options,
    }
}

impl RedisLinkCache {
    /// The client, when it is connected. While Redis is away (reconnecting),
    /// commands would wait for a connection attempt: a write is skipped and
    /// counted at once instead, as a failed one would be, so creates do not
    /// slow down during a Redis outage.
    fn connected(&self, operation: &'static str) -> Option<&Client> {
        let client = self.client.as_ref()?;
        if client.is_connected() {
            return Some(client);
        }
        metrics::counter!("writer_cache_errors_total", "op" => operation).increment(1);
        tracing::debug!(operation, "redis not connected; continuing without cache");
        None
    }
}

fn record_failure(operation: &'static str, error: &Error) {
    tracing::warn!(operation, error = %error, "redis write failed; continuing without cache");
    metrics::counter!("writer_cache_errors_total", "op" => operation).increment(1);
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use tinyurl_domain::RedirectStatus;
    use tinyurl_domain::cached::announced_codes;

    use super::*;

    fn link(code: &str, expires_in: Option<Duration>) -> StoredLink {
        let now = SystemTime::now();
        StoredLink {
            code: code.to_owned(),
            target_url: format!("https://example.com/{code}"),
            redirect_status: RedirectStatus::Found,
            forward_query: false,
            expires_at: expires_in.map(|after| now + after),
            enabled: true,
            is_alias: false,
            created_at: now,
            updated_at: now,
            blocked: false,
            tags: Vec::new(),
            options: Default::default(),
        }
    }

    #[test]
    fn an_entry_never_outlives_its_link() {
        let day = Duration::from_secs(86_400);
        assert_eq!(entry_ttl(day, &link("a", None)), Some(day));
        let soon = entry_ttl(day, &link("a", Some(Duration::from_secs(60)))).expect("live");
        assert!(soon <= Duration::from_secs(60) && soon > Duration::from_secs(50));
        let mut expired = link("a", None);
        expired.expires_at = Some(UNIX_EPOCH);
        assert_eq!(entry_ttl(day, &expired), None, "nothing worth caching");
    }

    #[tokio::test]
    async fn writes_land_in_the_shared_cache_and_are_announced() {
        let memory = MemoryCache::new(100);
        let mut announcements = memory.subscribe();
        let cache = MemoryLinkCache::new(Arc::clone(&memory), Duration::from_secs(3600));

        cache
            .write_through(&[link("aaaaaaa", None), link("bbbbbbb", None)])
            .await;
        let written = memory.get("aaaaaaa").expect("written through");
        let entry = CachedLink::decode(&written).expect("a cached link");
        assert_eq!(entry.target_url, "https://example.com/aaaaaaa");
        assert!(entry.enabled);
        let message = announcements.recv().await.expect("an announcement");
        assert_eq!(
            announced_codes(&message).collect::<Vec<_>>(),
            ["aaaaaaa", "bbbbbbb"],
            "one announcement for the group"
        );

        // A blocked link stays cached, as a link that does not redirect.
        let mut blocked = link("aaaaaaa", None);
        blocked.blocked = true;
        cache.replace(&blocked).await;
        let entry = CachedLink::decode(&memory.get("aaaaaaa").expect("replaced")).expect("entry");
        assert!(!entry.enabled);

        // A delete leaves a tombstone, not a hole a lagging fill could use.
        cache.remove("bbbbbbb").await;
        assert_eq!(memory.get("bbbbbbb").as_deref(), Some(NEGATIVE_ENTRY));
        assert!(!memory.set_if_absent("bbbbbbb".to_owned(), "stale", Duration::from_secs(1)));
        assert!(cache.in_process());
    }
}
