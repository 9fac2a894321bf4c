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
//!
//! Client addresses get an allowance of failed authentications
//! (`TINYURL_AUTH_FAILURE_RATE_PER_IP`), kept the same way; an address that
//! spent it is refused, for as long as the hint says, any lookup of a key
//! this writer does not already know, so a flood of made-up keys from one
//! place costs no database queries while keys in use keep working.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Daily create quota: KEYS[1] the key's counter for the UTC day; ARGV the
/// links wanted, the quota, the seconds the counter lives. Returns
/// {1, used} when granted, {0, used} (unchanged) when it would go over.
const QUOTA_LUA: &str = r"
local wanted = tonumber(ARGV[1])
local used = redis.call('INCRBY', KEYS[1], wanted)
if used == wanted then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
if used > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], wanted)
  return {0, used - wanted}
end
return {1, used}
";

type LocalLimiter = governor::DefaultDirectRateLimiter;

/// What an allowance belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Subject {
    Key(OwnerId),
    /// Failed authentications from a client address.
    Failures(IpAddr),
}

impl Subject {
    /// A key may burst a tenth of a second's allowance (at least one call),
    /// which keeps a limit shared by many writers close to its rate; an
    /// address may fail a whole second's allowance at once (a person
    /// retrying a mistyped key is not an attack).
    fn burst(self, rate: Rate) -> u32 {
        match self {
            Self::Key(_) => (rate.get() / 10).max(1),
            Self::Failures(_) => rate.get(),
        }
    }

    fn redis_key(self) -> String {
        match self {
            Self::Key(owner) => format!("ratelimit:key:{}", owner.0),
            Self::Failures(address) => format!("ratelimit:authfail:{address}"),
        }
    }
}

/// Local limiters and blocked addresses kept before the maps are swept.
const MAX_TRACKED: usize = 100_000;

/// After Redis fails a decision, how long decisions stay local before Redis
/// is asked again: an outage costs one timeout a second, not one per call.
const SHARED_RETRY: Duration = Duration::from_secs(1);

pub struct RateLimits {
    default: Option<Rate>,
    daily_creates: Option<u64>,
    /// Links created per key and UTC day here: the quota without Redis.
    local_quota: Mutex<HashMap<(OwnerId, u64), u64>>,
    failures_per_address: Option<Rate>,
    shared: Option<Shared>,
    /// Until when Redis is not asked (it just failed).
    shared_down_until: Mutex<Option<Instant>>,
    /// Per-process limiters: the fallback, or the only limit without Redis.
    local: Mutex<HashMap<Subject, (Rate, Arc<LocalLimiter>)>>,
    /// Addresses that spent their failure allowance, until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

struct Shared {
    client: Client,
    options: Options,
    script: Script,
    quota_script: Script,
}

impl RateLimits {
    /// `redis`: where the shared state lives; `None` limits in process.
    pub fn new(
        default: Option<Rate>,
        daily_creates: Option<u64>,
        failures_per_address: Option<Rate>,
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
                    quota_script: Script::from_lua(QUOTA_LUA),
                })
            })
            .transpose()?;
        Ok(Self {
            default,
            daily_creates,
            local_quota: Mutex::default(),
            failures_per_address,
            shared,
            shared_down_until: Mutex::default(),
            local: Mutex::default(),
            blocked: Mutex::default(),
        })
    }

    /// Gives the Redis connection up to `timeout` to come up, so the first
    /// decisions are shared; a writer starts without Redis all the same.
    pub async fn settle(&self, timeout: Duration) {
        if let Some(shared) = &self.shared {
            let _ = tokio::time::timeout(timeout, shared.client.wait_for_connect()).await;
        }
    }

    /// Spends `cost` of the caller's allowance, or says when to retry.
    pub async fn check(&self, caller: &Caller, cost: u32) -> Result<(), WriterError> {
        let Some(rate) = caller.rate.or(self.default) else {
            return Ok(());
        };
        match self.decide(Subject::Key(caller.owner), rate, cost).await {
            None => Ok(()),
            Some(retry_after) => {
                metrics::counter!("writer_rate_limited_total", "subject" => "key").increment(1);
                Err(WriterError::RateLimited { rate, retry_after })
            }
        }
    }

    /// Spends `links` of the caller's daily create quota (UTC days), or says
    /// when the next day begins. A request that would go over is refused
    /// whole and spends nothing.
    pub async fn spend_daily_creates(&self, owner: OwnerId, links: u64) -> Result<(), WriterError> {
        let Some(quota) = self.daily_creates else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (day, until_tomorrow) = (now / 86_400, 86_400 - now % 86_400);
        let granted = self
            .shared_or_local(
                |redis| redis.spend_quota(owner, day, links, quota),
                || self.spend_locally(owner, day, links, quota),
            )
            .await;
        if granted {
            Ok(())
        } else {
            metrics::counter!("writer_rate_limited_total", "subject" => "daily_quota").increment(1);
            Err(WriterError::QuotaExhausted {
                quota,
                retry_after: Duration::from_secs(until_tomorrow),
            })
        }
    }

    fn spend_locally(&self, owner: OwnerId, day: u64, links: u64, quota: u64) -> bool {
        let mut counts = self
            .local_quota
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.retain(|(_, counted), _| *counted >= day);
        let used = counts.entry((owner, day)).or_default();
        if *used + links > quota {
            return false;
        }
        *used += links;
        true
    }

    /// Refuses a key lookup for `address` while it is blocked for failing
    /// to authenticate too often.
    pub fn refuse_if_blocked(&self, address: IpAddr) -> Result<(), WriterError> {
        let until = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&address)
            .copied();
        match until.and_then(|until| until.checked_duration_since(Instant::now())) {
            Some(retry_after) if !retry_after.is_zero() => {
                metrics::counter!("writer_rate_limited_total", "subject" => "address").increment(1);
                Err(self.too_many_failures(retry_after))
            }
            _ => Ok(()),
        }
    }

    /// The refusal of an address that failed to authenticate too often.
    pub fn too_many_failures(&self, retry_after: Duration) -> WriterError {
        WriterError::TooManyFailures {
            rate: self.failures_per_address,
            retry_after,
        }
    }

    /// Counts a failed authentication from `address`; past its allowance
    /// the address is blocked for the hint, which is returned.
    pub async fn charge_failure(&self, address: IpAddr) -> Option<Duration> {
        let rate = self.failures_per_address?;
        let retry_after = self.decide(Subject::Failures(address), rate, 1).await?;
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if blocked.len() >= MAX_TRACKED {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(address, Instant::now() + retry_after);
        metrics::counter!("writer_rate_limited_total", "subject" => "address").increment(1);
        Some(retry_after)
    }

    /// Spends `cost` of `subject`'s allowance: `None`, or the wait.
    async fn decide(&self, subject: Subject, rate: Rate, cost: u32) -> Option<Duration> {
        let cost = cost.max(1);
        self.shared_or_local(
            |redis| redis.decide(subject, rate, cost),
            || self.decide_locally(subject, rate, cost),
        )
        .await
    }

    /// Asks Redis through `shared`; without Redis, while it is marked down,
    /// or when it fails (then marked down for [`SHARED_RETRY`]), answers
    /// with `local`, counting the fallback.
    async fn shared_or_local<'limits, T, Asked>(
        &'limits self,
        shared: impl FnOnce(&'limits Shared) -> Asked,
        local: impl FnOnce() -> T,
    ) -> T
    where
        Asked: std::future::Future<Output = Result<T, Error>>,
    {
        let Some(redis) = &self.shared else {
            return local();
        };
        if !self.shared_is_down() {
            match shared(redis).await {
                Ok(answer) => return answer,
                Err(error) => {
                    tracing::warn!(%error, "limit state unreachable; deciding in process");
                    *self
                        .shared_down_until
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(Instant::now() + SHARED_RETRY);
                }
            }
        }
        metrics::counter!("writer_rate_limit_fallbacks_total").increment(1);
        local()
    }

    fn shared_is_down(&self) -> bool {
        self.shared_down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    fn decide_locally(&self, subject: Subject, rate: Rate, cost: u32) -> Option<Duration> {
        let limiter = {
            let mut local = self
                .local
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if local.len() >= MAX_TRACKED {
                // A sweep forgets spent allowances too; bounded beats exact.
                local.clear();
            }
            match local.get(&subject) {
                Some((known, limiter)) if *known == rate => Arc::clone(limiter),
                _ => {
                    let burst = NonZeroU32::new(subject.burst(rate)).unwrap_or(NonZeroU32::MIN);
                    let quota = governor::Quota::per_second(
                        NonZeroU32::new(rate.get()).unwrap_or(NonZeroU32::MIN),
                    )
                    .allow_burst(burst);
                    let limiter = Arc::new(governor::RateLimiter::direct(quota));
                    local.insert(subject, (rate, Arc::clone(&limiter)));
                    limiter
                }
            }
        };
        // A call bigger than the burst spends the whole burst.
        let cost = NonZeroU32::new(cost.min(subject.burst(rate))).unwrap_or(NonZeroU32::MIN);
        match limiter.check_n(cost) {
            Ok(Ok(())) => None,
            // At least a millisecond: by the time the wait is read it may
            // have run out, and a zero hint tells a client nothing.
            Ok(Err(not_until)) => Some(
                not_until
                    .wait_time_from(governor::clock::Clock::now(
                        &governor::clock::DefaultClock::default(),
                    ))
                    .max(Duration::from_millis(1)),
            ),
            Err(_) => Some(Duration::from_secs(1)),
        }
    }
}

impl Shared {
    /// Whether `links` more fit in the key's quota for `day` (spent if so).
    async fn spend_quota(
        &self,
        owner: OwnerId,
        day: u64,
        links: u64,
        quota: u64,
    ) -> Result<bool, Error> {
        let key = format!("quota:create:{}:{day}", owner.0);
        // Kept a little past the day, so a late writer's clock still finds it.
        let args = vec![
            links.to_string(),
            quota.to_string(),
            (2 * 86_400).to_string(),
        ];
        let answer = self.run(&self.quota_script, QUOTA_LUA, key, args).await?;
        Ok(matches!(answer.as_slice(), [1, ..]))
    }

    /// Runs a script by its hash, loading it on a server that does not know
    /// it yet (first use, a restart, SCRIPT FLUSH).
    async fn run(
        &self,
        script: &Script,
        lua: &str,
        key: String,
        args: Vec<String>,
    ) -> Result<Vec<i64>, Error> {
        // Not connected (Redis away, reconnecting): fail now rather than
        // wait for a connection attempt; the caller decides in process.
        if !self.client.is_connected() {
            return Err(Error::new(
                fred::error::ErrorKind::IO,
                "Redis is not connected",
            ));
        }
        let client = self.client.with_options(&self.options);
        match client
            .evalsha(script.sha1().clone(), vec![key.clone()], args.clone())
            .await
        {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                client.eval(lua, vec![key], args).await
            }
            other => other,
        }
    }

    /// `None` when allowed, the wait otherwise.
    async fn decide(
        &self,
        subject: Subject,
        rate: Rate,
        cost: u32,
    ) -> Result<Option<Duration>, Error> {
        let interval = 1000.0 / f64::from(rate.get());
        let args = vec![
            format!("{interval:.6}"),
            format!("{:.6}", interval * f64::from(subject.burst(rate))),
            cost.to_string(),
        ];
        let answer = self
            .run(&self.script, GCRA_LUA, subject.redis_key(), args)
            .await?;
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
        let limits = RateLimits::new(None, None, None, None).expect("no Redis needed");
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

    #[tokio::test]
    async fn an_address_that_fails_too_often_is_blocked_for_the_hint() {
        let limits =
            RateLimits::new(None, None, Rate::per_second(1), None).expect("no Redis needed");
        let attacker: IpAddr = "203.0.113.9".parse().expect("address");
        let bystander: IpAddr = "198.51.100.7".parse().expect("address");
        assert!(limits.refuse_if_blocked(attacker).is_ok());
        assert_eq!(limits.charge_failure(attacker).await, None, "the burst");
        let hint = limits.charge_failure(attacker).await;
        assert!(
            hint.is_some_and(|wait| wait <= Duration::from_secs(1)),
            "{hint:?}"
        );
        assert!(matches!(
            limits.refuse_if_blocked(attacker),
            Err(WriterError::TooManyFailures { .. })
        ));
        assert!(limits.refuse_if_blocked(bystander).is_ok(), "per address");
        // Without a failure rate nothing is counted or blocked.
        let off = RateLimits::new(None, None, None, None).expect("no Redis needed");
        for _ in 0..100 {
            assert_eq!(off.charge_failure(attacker).await, None);
        }
        assert!(off.refuse_if_blocked(attacker).is_ok());
    }

    #[tokio::test]
    async fn the_daily_quota_refuses_whole_requests_past_it() {
        let limits = RateLimits::new(None, Some(5), None, None).expect("no Redis needed");
        let owner = OwnerId(1);
        assert!(limits.spend_daily_creates(owner, 3).await.is_ok());
        let refused = limits.spend_daily_creates(owner, 3).await;
        assert!(
            matches!(refused, Err(WriterError::QuotaExhausted { retry_after, .. })
                if retry_after <= Duration::from_secs(86_400)),
            "{refused:?}"
        );
        assert!(
            limits.spend_daily_creates(owner, 2).await.is_ok(),
            "nothing was spent"
        );
        assert!(limits.spend_daily_creates(owner, 1).await.is_err());
    }
}
