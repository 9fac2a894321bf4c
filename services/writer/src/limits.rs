//! Per-key request rates, one limit shared by every writer: GCRA state in
//! Redis, one scripted round trip per decision, on Redis's clock (so writers
//! with skewed clocks agree). When Redis cannot answer in time, each writer
//! limits on its own with the same rate (governor), counted in
//! `writer_rate_limit_fallbacks_total`, and asks Redis again a second later:
//! degraded, never "refuse everything" and never "no limit". `tinyurl up` has no Redis and always limits in
//! process, which is exact there.
//!
//! A key may burst a tenth of a second's allowance (at least one call); a
//! call costs its number of links (a batch of 1,000 spends 1,000), and one
//! larger than the burst is let through when the key's allowance is full.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;
use secrecy::SecretString;

use crate::auth::{Caller, OwnerId, Rate};
use crate::error::WriterError;

/// GCRA: KEYS[1] the key's theoretical arrival time (ms, Redis clock);
/// ARGV interval per unit (ms), tolerance (ms), cost. Returns {1, 0} when
/// allowed, {0, ms to wait} when not.
const GCRA_LUA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - math.max(tolerance, interval * cost)
if allow_at > now then
  return {0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
return {1, 0}
";

type LocalLimiter = governor::DefaultDirectRateLimiter;

/// After Redis fails a decision, how long decisions stay local before Redis
/// is asked again: an outage costs one timeout a second, not one per call.
const SHARED_RETRY: Duration = Duration::from_secs(1);

pub struct RateLimits {
    default: Option<Rate>,
    shared: Option<Shared>,
    /// Until when Redis is not asked (it just failed).
    shared_down_until: Mutex<Option<std::time::Instant>>,
    /// Per-process limiters: the fallback, or the only limit without Redis.
    local: Mutex<HashMap<OwnerId, (Rate, Arc<LocalLimiter>)>>,
}

struct Shared {
    client: Client,
    options: Options,
    script: Script,
}

/// Burst: a tenth of a second's allowance, at least one call.
fn burst(rate: Rate) -> u32 {
    (rate.get() / 10).max(1)
}

impl RateLimits {
    /// `redis`: where the shared state lives; `None` limits in process.
    pub fn new(
        default: Option<Rate>,
        redis: Option<(&SecretString, Duration)>,
    ) -> anyhow::Result<Self> {
        let shared = redis
            .map(|(url, timeout)| -> anyhow::Result<Shared> {
                let client = tinyurl_runtime::redis::builder(url, timeout)?.build()?;
                client.connect();
                Ok(Shared {
                    client,
                    options: tinyurl_runtime::redis::command_options(timeout),
                    script: Script::from_lua(GCRA_LUA),
                })
            })
            .transpose()?;
        Ok(Self {
            default,
            shared,
            shared_down_until: Mutex::default(),
            local: Mutex::default(),
        })
    }

    /// Spends `cost` of the caller's allowance, or says when to retry.
    pub async fn check(&self, caller: &Caller, cost: u32) -> Result<(), WriterError> {
        let Some(rate) = caller.rate.or(self.default) else {
            return Ok(());
        };
        let cost = cost.max(1);
        let waited = match &self.shared {
            Some(shared) if !self.shared_is_down() => {
                match shared.decide(caller.owner, rate, cost).await {
                    Ok(wait) => wait,
                    Err(error) => {
                        tracing::warn!(%error, "rate limit state unreachable; limiting in process");
                        *self
                            .shared_down_until
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(std::time::Instant::now() + SHARED_RETRY);
                        self.fallback(caller.owner, rate, cost)
                    }
                }
            }
            Some(_) => self.fallback(caller.owner, rate, cost),
            None => self.decide_locally(caller.owner, rate, cost),
        };
        match waited {
            None => Ok(()),
            Some(retry_after) => {
                metrics::counter!("writer_rate_limited_total").increment(1);
                Err(WriterError::RateLimited { rate, retry_after })
            }
        }
    }

    fn shared_is_down(&self) -> bool {
        self.shared_down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    /// A local decision standing in for a shared one.
    fn fallback(&self, owner: OwnerId, rate: Rate, cost: u32) -> Option<Duration> {
        metrics::counter!("writer_rate_limit_fallbacks_total").increment(1);
        self.decide_locally(owner, rate, cost)
    }

    fn decide_locally(&self, owner: OwnerId, rate: Rate, cost: u32) -> Option<Duration> {
        let limiter = {
            let mut local = self
                .local
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match local.get(&owner) {
                Some((known, limiter)) if *known == rate => Arc::clone(limiter),
                _ => {
                    let burst = NonZeroU32::new(burst(rate)).unwrap_or(NonZeroU32::MIN);
                    let quota = governor::Quota::per_second(
                        NonZeroU32::new(rate.get()).unwrap_or(NonZeroU32::MIN),
                    )
                    .allow_burst(burst);
                    let limiter = Arc::new(governor::RateLimiter::direct(quota));
                    local.insert(owner, (rate, Arc::clone(&limiter)));
                    limiter
                }
            }
        };
        // A call bigger than the burst spends the whole burst.
        let cost = NonZeroU32::new(cost.min(burst(rate))).unwrap_or(NonZeroU32::MIN);
        match limiter.check_n(cost) {
            Ok(Ok(())) => None,
            Ok(Err(not_until)) => Some(not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))),
            Err(_) => Some(Duration::from_secs(1)),
        }
    }
}

impl Shared {
    /// `None` when allowed, the wait otherwise.
    async fn decide(
        &self,
        owner: OwnerId,
        rate: Rate,
        cost: u32,
    ) -> Result<Option<Duration>, Error> {
        let client = self.client.with_options(&self.options);
        let interval = 1000.0 / f64::from(rate.get());
        let args = || {
            vec![
                format!("{interval:.6}"),
                format!("{:.6}", interval * f64::from(burst(rate))),
                cost.to_string(),
            ]
        };
        let key = format!("ratelimit:key:{}", owner.0);
        let answer: Vec<i64> = match client
            .evalsha(self.script.sha1().clone(), vec![key.clone()], args())
            .await
        {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                client.eval(GCRA_LUA, vec![key], args()).await?
            }
            other => other?,
        };
        Ok(match answer.as_slice() {
            [1, ..] => None,
            [_, wait] => Some(Duration::from_millis(
                u64::try_from(*wait).unwrap_or(0).max(1),
            )),
            _ => Some(Duration::from_secs(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;

    fn caller(rate: u32) -> Caller {
        Caller {
            owner: OwnerId(1),
            scope: Scope::Create,
            rate: Rate::per_second(rate),
        }
    }

    #[tokio::test]
    async fn in_process_the_burst_then_a_retry_hint() {
        let limits = RateLimits::new(None, None).expect("no Redis needed");
        // 1/s: a burst of one, then refused with a hint of at most a second.
        assert!(limits.check(&caller(1), 1).await.is_ok());
        for _ in 0..5 {
            match limits.check(&caller(1), 1).await {
                Err(WriterError::RateLimited { retry_after, .. }) => {
                    assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        // Keys without a rate, and no default: never limited.
        let unlimited = Caller {
            rate: None,
            ..caller(1)
        };
        for _ in 0..1_000 {
            assert!(limits.check(&unlimited, 1).await.is_ok());
        }
    }
}
