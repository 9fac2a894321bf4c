//! The shared Redis tier: cache-aside reads, `NX` fills (a fill never
//! replaces what the writer wrote), and the click stream. Every command is
//! bounded by the Redis timeout and fails fast while Redis is down.

use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};
use rand::Rng as _;
use secrecy::SecretString;
use tinyurl_domain::CachedLink;
use tinyurl_domain::cached::{NEGATIVE_ENTRY, link_key};

/// What Redis holds for a code.
#[derive(Debug)]
pub enum Cached {
    Link(CachedLink),
    /// A negative entry or a deletion tombstone.
    Missing,
    /// Nothing (or an entry this version cannot read).
    Absent,
}

#[derive(Clone)]
pub struct SharedCache {
    client: Client,
    options: Options,
    ttl: Duration,
    negative_ttl: Duration,
}

impl SharedCache {
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
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    pub async fn get(&self, code: &str) -> Result<Cached, Error> {
        let raw: Option<String> = self
            .client
            .with_options(&self.options)
            .get(link_key(code))
            .await?;
        Ok(match raw.as_deref() {
            None => Cached::Absent,
            Some(NEGATIVE_ENTRY) => Cached::Missing,
            Some(raw) => match CachedLink::decode(raw) {
                Some(link) => Cached::Link(link),
                None => {
                    tracing::warn!(code, "unreadable cache entry; reading Postgres");
                    Cached::Absent
                }
            },
        })
    }

    /// Caches what Postgres said, only where Redis holds nothing: a link the
    /// writer wrote (or a tombstone) always wins over a possibly stale read.
    pub async fn fill(&self, code: &str, found: Option<&CachedLink>) -> Result<(), Error> {
        let (value, ttl) = match found {
            Some(link) => (link.encode(), jittered(self.ttl)),
            None => (NEGATIVE_ENTRY.to_owned(), self.negative_ttl),
        };
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        self.client
            .with_options(&self.options)
            .set::<Value, _, _>(
                link_key(code),
                value,
                Some(Expiration::PX(millis)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map(drop)
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
