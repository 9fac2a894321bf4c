//! Keeps Redis coherent with Postgres: after each commit the link is written
//! through (so a fresh link redirects while replicas lag); updates overwrite
//! the entry and deletes remove it, and both announce the code on the
//! invalidation channel that redirect replicas subscribe to. Redis being down
//! never fails a write: the error is logged and counted, and redirect falls
//! back to Postgres.

use std::time::{Duration, SystemTime};

use fred::prelude::*;
use fred::types::Expiration;
use secrecy::SecretString;
use tinyurl_domain::CachedLink;
use tinyurl_domain::cached::{INVALIDATION_CHANNEL, NEGATIVE_ENTRY, link_key};

use crate::store::StoredLink;

/// How long a deleted link's tombstone lives: far longer than any replica
/// lag the redirect service tolerates.
const TOMBSTONE_TTL_MILLIS: i64 = 10 * 60 * 1000;

#[derive(Clone)]
pub struct LinkCache {
    client: Option<Client>,
    ttl: Duration,
    options: Options,
}

impl LinkCache {
    /// A cache that does nothing, when no Redis is configured.
    pub fn disabled() -> Self {
        Self {
            client: None,
            ttl: Duration::ZERO,
            options: Options::default(),
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
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.client.is_some()
    }

    /// Writes new links through and announces their codes, in one round
    /// trip; never fails the caller. The announcement evicts any short-lived
    /// "not found" a redirect replica may hold for a code that was probed
    /// before it existed (typically a custom alias).
    #[tracing::instrument(name = "cache_write_through", skip_all, fields(count = links.len()))]
    pub async fn write_through(&self, links: &[StoredLink]) {
        let Some(client) = &self.client else { return };
        if links.is_empty() {
            return;
        }
        let pipeline = client.with_options(&self.options).pipeline();
        let mut queued = Ok(());
        for link in links {
            if let Some(Err(error)) = self.set_entry(&pipeline, link).await {
                queued = Err(error);
                break;
            }
        }
        let codes = links
            .iter()
            .map(|link| link.code.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let outcome = match queued {
            Ok(()) => match pipeline
                .publish::<Value, _, _>(INVALIDATION_CHANNEL, codes)
                .await
            {
                Ok(_) => pipeline.all::<Vec<Value>>().await.map(drop),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => metrics::counter!("writer_cache_writes_total", "op" => "write_through")
                .increment(links.len() as u64),
            Err(error) => record_failure("write_through", &error),
        }
    }

    /// Overwrites the entry of an updated link and announces the change.
    pub async fn replace(&self, link: &StoredLink) {
        let Some(client) = &self.client else { return };
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

    /// Replaces the entry of a deleted link with a tombstone and announces
    /// the change. A tombstone rather than a DEL: a redirect replica filling
    /// the cache from a lagging Postgres replica writes with `NX`, so it
    /// cannot put the deleted link back while the tombstone lives.
    pub async fn remove(&self, code: &str) {
        let Some(client) = &self.client else { return };
        let removed: Result<(), Error> = client
            .with_options(&self.options)
            .set(
                link_key(code),
                NEGATIVE_ENTRY,
                Some(Expiration::PX(TOMBSTONE_TTL_MILLIS)),
                None,
                false,
            )
            .await;
        if let Err(error) = removed {
            record_failure("remove", &error);
        }
        self.announce(code).await;
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
        let Some(client) = &self.client else { return };
        let published: Result<i64, Error> = client
            .with_options(&self.options)
            .publish(INVALIDATION_CHANNEL, code)
            .await;
        match published {
            Ok(_) => {
                metrics::counter!("writer_cache_writes_total", "op" => "invalidate").increment(1)
            }
            Err(error) => record_failure("invalidate", &error),
        }
    }

    /// The entry's TTL: the configured one, never past the link's own expiry.
    /// `None` when the link has already expired (nothing worth caching).
    fn expiry_for(&self, link: &StoredLink) -> Option<Expiration> {
        let mut ttl = self.ttl;
        if let Some(expires_at) = link.expires_at {
            let left = expires_at.duration_since(SystemTime::now()).ok()?;
            ttl = ttl.min(left);
        }
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        (millis > 0).then_some(Expiration::PX(millis))
    }
}

fn cached(link: &StoredLink) -> CachedLink {
    CachedLink {
        target_url: link.target_url.clone(),
        redirect_status: u16::try_from(link.redirect_status).unwrap_or(302),
        forward_query: link.forward_query,
        expires_at: link.expires_at,
        enabled: link.enabled,
    }
}

fn record_failure(operation: &'static str, error: &Error) {
    tracing::warn!(operation, error = %error, "redis write failed; continuing without cache");
    metrics::counter!("writer_cache_errors_total", "op" => operation).increment(1);
}
