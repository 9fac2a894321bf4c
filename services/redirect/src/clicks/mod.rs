//! Click counting off the hot path. A redirect bumps a counter keyed by
//! (code, minute, referrer host, client class, country) in a sharded
//! in-memory map: no await, no allocation once the key is known, no
//! User-Agent parsing (see [`agent`]). A background task turns the counts
//! into batches, each with a unique id, and appends them to the click stream
//! every flush interval; a batch that could not be sent is offered again,
//! unchanged, so a retry after an unclear failure is folded once.
//!
//! Memory is bounded: distinct keys held (counting and unsent) never exceed
//! the configured bound, referrer hosts per code per flush are bounded (the
//! rest count as "other"); past a bound, clicks are dropped and counted in
//! `redirect_clicks_dropped_total`.

pub mod agent;
pub mod origin;
mod sink;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::http::header::{REFERER, USER_AGENT};
use axum::http::{HeaderMap, HeaderName};
use foldhash::fast::FixedState;
use tinyurl_domain::clicks::{
    DIRECT, MAX_VALUE_LEN, NOT_RECORDED, OTHER, Referrer, UNKNOWN_COUNTRY, minute_of, path_token,
    push_line, referrer_host,
};

use tinyurl_domain::clicks::TrafficClass;
use tinyurl_domain::visitors::{digest, push_link_day};
use tinyurl_runtime::memory::ClickBatch;

/// Minutes in a day: a click's minute → its day.
const MINUTES_PER_DAY: i32 = 24 * 60;

pub use self::agent::{AgentKey, Agents};
pub use self::origin::Countries;
pub use self::sink::{ClickSink, DayKeys, StreamBounds};
pub use tinyurl_runtime::proxies::TrustedProxies;

const SHARDS: usize = 16;
/// Lines per batch (one stream entry): small enough for one quick
/// transaction on the consumer's side.
const LINES_PER_BATCH: usize = 1_000;
/// Distinct referrer hosts counted per code per flush; the rest are "other".
const MAX_REFERRERS_PER_CODE: usize = 20;
/// Distinct paths of visits to codes that do not exist counted per domain
/// per flush (as many as the rollups keep per bucket); the rest are "other".
const MAX_PATHS_PER_DOMAIN: usize = 100;
/// Visit digests held, counting and unsent (16 bytes each with the agent):
/// past it a visit still counts as a click but not as a visitor.
const MAX_VISITORS_HELD: usize = 1_000_000;

/// How clicks are classified.
#[derive(Default)]
pub struct ClickSettings {
    /// Distinct keys held, counting and unsent, before clicks are dropped.
    pub max_keys: usize,
    pub trusted_proxies: TrustedProxies,
    pub countries: Option<std::sync::Arc<Countries>>,
    pub privacy: Privacy,
}

/// What is kept of a visit besides its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privacy {
    /// A visit with `DNT: 1` or `Sec-GPC: 1` counts in its link's totals
    /// (humans or bots) and in no dimension.
    pub honor_do_not_track: bool,
    pub dimensions: Dimensions,
    /// Each link's unique visitors are counted per day
    /// ([`tinyurl_domain::visitors`]).
    pub unique_visitors: bool,
}

impl Default for Privacy {
    fn default() -> Self {
        Self {
            honor_do_not_track: true,
            dimensions: Dimensions::ALL,
            unique_visitors: true,
        }
    }
}

/// The dimensions clicks are counted by (`TINYURL_CLICKS_DIMENSIONS`); one
/// turned off is never read from a request (no `Referer` parsed, no country
/// looked up) and its value is sent as not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dimensions {
    pub referrer: bool,
    pub country: bool,
    pub browser: bool,
    pub device: bool,
}

impl Dimensions {
    pub const ALL: Self = Self {
        referrer: true,
        country: true,
        browser: true,
        device: true,
    };

    /// A comma-separated list of `referrer`, `country`, `browser`,
    /// `device`, or `none`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut dimensions = Self {
            referrer: false,
            country: false,
            browser: false,
            device: false,
        };
        if raw.trim() == "none" {
            return Ok(dimensions);
        }
        for name in raw
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let on = match name {
                "referrer" => &mut dimensions.referrer,
                "country" => &mut dimensions.country,
                "browser" => &mut dimensions.browser,
                "device" => &mut dimensions.device,
                other => {
                    return Err(format!(
                        "{other:?} is not one of referrer, country, browser, device (or none)"
                    ));
                }
            };
            *on = true;
        }
        if dimensions == Self::parse("none")? {
            return Err("name at least one dimension, or none".to_owned());
        }
        Ok(dimensions)
    }
}

/// `value`, or [`NOT_RECORDED`] when it is not to be recorded.
fn recorded(on: bool, value: &str) -> &str {
    if on { value } else { NOT_RECORDED }
}

/// Header names read on every counted redirect, as constants: a name
/// given as a string is parsed on every lookup.
const DNT: HeaderName = HeaderName::from_static("dnt");
const SEC_GPC: HeaderName = HeaderName::from_static("sec-gpc");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Whether the request asks not to be tracked: `DNT: 1` or `Sec-GPC: 1`.
fn asks_not_to_be_tracked(headers: &HeaderMap) -> bool {
    [DNT, SEC_GPC].iter().any(|name| {
        headers
            .get(name)
            .is_some_and(|value| value.as_bytes() == b"1")
    })
}

pub struct Clicks {
    shards: [Mutex<Shard>; SHARDS],
    hasher: FixedState,
    agents: Agents,
    trusted_proxies: TrustedProxies,
    countries: Option<std::sync::Arc<Countries>>,
    privacy: Privacy,
    /// Distinct keys held across the shards and the unsent batches.
    held: AtomicUsize,
    max_keys: usize,
    dropped: metrics::Counter,
    /// Visit digests held across the shards and the unsent batches.
    visitors_held: AtomicUsize,
    visitors_dropped: metrics::Counter,
}

/// The shards' maps, keyed by hashes already taken: foldhash with a seed of
/// each map's own spreads them (std's SipHash cost more than the rest of a
/// lookup), and the seed keeps crafted keys from piling into one bucket.
type ByHash<V> = HashMap<u64, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct Shard {
    /// By the hash of the whole key; a collision shares the vector.
    counts: ByHash<Vec<Counted>>,
    /// Referrer host hashes seen per code hash, for the per-code bound.
    referrers: ByHash<Vec<u64>>,
    /// The visits of each link day since the last flush, by code hash.
    visitors: ByHash<Vec<DayVisits>>,
}

/// The distinct visits to one link on one day: digest → the visitor's
/// agent (only people's visits are sent, which is known at the flush).
struct DayVisits {
    code: Box<str>,
    day: i32,
    digests: ByHash<AgentKey>,
}

/// The visitors of one link day a batch carries: digests of people's
/// visits, turned into visitor hashes when the batch is sent.
pub struct LinkDayVisitors {
    pub link: Box<str>,
    pub day: i32,
    pub digests: Vec<u64>,
}

impl Shard {
    /// Adds one to the key's count; false when the key is not held yet.
    fn bump(&mut self, hash: u64, key: &KeyView<'_>) -> bool {
        let found = self
            .counts
            .get_mut(&hash)
            .and_then(|entries| entries.iter_mut().find(|counted| key.matches(counted)));
        match found {
            Some(counted) => {
                counted.count += 1;
                true
            }
            None => false,
        }
    }
}

struct Counted {
    code: Box<str>,
    minute: i32,
    referrer: StoredReferrer,
    agent: AgentKey,
    country: [u8; 2],
    rule: Option<u8>,
    /// Counted in the totals only (the visitor asked not to be tracked).
    private: bool,
    /// For a visit to a code that does not exist: the path asked for
    /// (`code` is then the domain's orphan key).
    path: Option<Box<str>>,
    count: u64,
}

#[derive(Clone, PartialEq, Eq)]
enum StoredReferrer {
    Direct,
    Other,
    /// Lowercased.
    Host(Box<str>),
}

/// A request's key, borrowed.
#[derive(Clone, Copy)]
struct KeyView<'a> {
    code: &'a str,
    minute: i32,
    referrer: Referrer<'a>,
    agent: AgentKey,
    country: [u8; 2],
    rule: Option<u8>,
    private: bool,
    path: Option<&'a str>,
}

impl KeyView<'_> {
    fn hash(&self, hasher: &FixedState) -> u64 {
        let mut state = hasher.build_hasher();
        self.code.hash(&mut state);
        self.minute.hash(&mut state);
        match self.referrer {
            Referrer::Direct => 0u8.hash(&mut state),
            Referrer::Other => 1u8.hash(&mut state),
            Referrer::Host(host) => host.hash(&mut state),
        }
        self.agent.hash(&mut state);
        self.country.hash(&mut state);
        self.rule.hash(&mut state);
        self.private.hash(&mut state);
        self.path.hash(&mut state);
        state.finish()
    }

    fn matches(&self, counted: &Counted) -> bool {
        let same_referrer = match (&self.referrer, &counted.referrer) {
            (Referrer::Direct, StoredReferrer::Direct)
            | (Referrer::Other, StoredReferrer::Other) => true,
            (Referrer::Host(host), StoredReferrer::Host(stored)) => *host == &**stored,
            _ => false,
        };
        same_referrer
            && self.minute == counted.minute
            && self.agent == counted.agent
            && self.country == counted.country
            && self.rule == counted.rule
            && self.private == counted.private
            && self.path == counted.path.as_deref()
            && *counted.code == *self.code
    }

    fn to_counted(self) -> Counted {
        Counted {
            code: self.code.into(),
            minute: self.minute,
            referrer: match self.referrer {
                Referrer::Direct => StoredReferrer::Direct,
                Referrer::Other => StoredReferrer::Other,
                Referrer::Host(host) => StoredReferrer::Host(host.into()),
            },
            agent: self.agent,
            country: self.country,
            rule: self.rule,
            private: self.private,
            path: self.path.map(Into::into),
            count: 1,
        }
    }
}

/// A batch formed from drained counts, kept until the stream takes it.
pub struct PendingBatch {
    pub batch: ClickBatch,
    /// Added to their sketches before the batch is appended (the batch's
    /// `visitors` field names them).
    pub visitors: Vec<LinkDayVisitors>,
    line_count: usize,
    clicks: u64,
}

const UNKNOWN: [u8; 2] = [0, 0];

impl Clicks {
    pub fn new(settings: ClickSettings) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            hasher: FixedState::default(),
            agents: Agents::new(),
            trusted_proxies: settings.trusted_proxies,
            countries: settings.countries,
            privacy: settings.privacy,
            held: AtomicUsize::new(0),
            max_keys: settings.max_keys,
            dropped: metrics::counter!("redirect_clicks_dropped_total"),
            visitors_held: AtomicUsize::new(0),
            visitors_dropped: metrics::counter!("redirect_visitors_dropped_total"),
        }
    }

    /// Counts one redirect; constant time, no await, no parsing beyond the
    /// `Referer` host. `rule`: for a link with redirect rules, the one that
    /// answered (from 1), or 0 for the link's own target.
    pub fn record(&self, code: &str, headers: &HeaderMap, peer: Option<IpAddr>, rule: Option<u8>) {
        let minute = minute_of(SystemTime::now());
        let private = self.privacy.honor_do_not_track && asks_not_to_be_tracked(headers);
        let dimensions = self.privacy.dimensions;
        let mut lowered = [0u8; MAX_VALUE_LEN];
        // What is not recorded is not read: one key for all its values.
        let referrer_header = headers
            .get(REFERER)
            .filter(|_| dimensions.referrer && !private)
            .map(|value| value.as_bytes());
        let referrer = match referrer_host(referrer_header) {
            Referrer::Host(host) => {
                let lowered = &mut lowered[..host.len()];
                lowered.copy_from_slice(host.as_bytes());
                lowered.make_ascii_lowercase();
                // Lowercasing ASCII keeps it UTF-8.
                std::str::from_utf8(lowered).map_or(Referrer::Other, Referrer::Host)
            }
            other => other,
        };
        let user_agent = headers.get(USER_AGENT).map(|value| value.as_bytes());
        let agent = self.agents.key(user_agent);
        let wants_country = dimensions.country && !private && self.countries.is_some();
        let wants_visitor = self.privacy.unique_visitors && !private;
        let client = peer.filter(|_| wants_country || wants_visitor).map(|peer| {
            let forwarded = headers.get(X_FORWARDED_FOR).map(|value| value.as_bytes());
            self.trusted_proxies.client(peer, forwarded)
        });
        let country = match (&self.countries, client) {
            (Some(countries), Some(client)) if wants_country => {
                countries.country(client).unwrap_or(UNKNOWN)
            }
            _ => UNKNOWN,
        };
        // The address goes no further than this digest, which goes no
        // further than this process's memory.
        let visitor = client
            .filter(|_| wants_visitor)
            .map(|client| digest(client, user_agent.unwrap_or_default(), code));
        let key = KeyView {
            code,
            minute,
            referrer,
            agent,
            country,
            rule,
            private,
            path: None,
        };
        self.add(key, visitor);
    }

    /// Counts one visit to a code that does not exist on the domain whose
    /// orphan key is `key`: by minute, path (bounded like values) and class,
    /// nothing else of the visitor.
    pub fn record_orphan(&self, key: &str, path: &str, headers: &HeaderMap) {
        let agent = self
            .agents
            .key(headers.get(USER_AGENT).map(|value| value.as_bytes()));
        self.add(
            KeyView {
                code: key,
                minute: minute_of(SystemTime::now()),
                referrer: Referrer::Direct,
                agent,
                country: UNKNOWN,
                rule: None,
                private: false,
                path: Some(path_token(path)),
            },
            None,
        );
    }

    /// Counts the click of `key`, and `visitor` (its digest) among its link
    /// day's visitors.
    fn add(&self, key: KeyView<'_>, visitor: Option<u64>) {
        let code_hash = self.hasher.hash_one(key.code);
        let Ok(mut shard) = self.shards[(code_hash as usize) % SHARDS].lock() else {
            self.dropped.increment(1);
            return;
        };
        let (code, day, agent) = (key.code, key.minute / MINUTES_PER_DAY, key.agent);
        if self.count(&mut shard, code_hash, key)
            && let Some(digest) = visitor
        {
            self.add_visitor(&mut shard, code_hash, (code, day), digest, agent);
        }
    }

    fn add_visitor(
        &self,
        shard: &mut Shard,
        code_hash: u64,
        (code, day): (&str, i32),
        digest: u64,
        agent: AgentKey,
    ) {
        let days = shard.visitors.entry(code_hash).or_default();
        let index = match days
            .iter()
            .position(|visits| visits.day == day && *visits.code == *code)
        {
            Some(index) => index,
            None => {
                days.push(DayVisits {
                    code: code.into(),
                    day,
                    digests: ByHash::default(),
                });
                days.len() - 1
            }
        };
        let digests = &mut days[index].digests;
        if digests.contains_key(&digest) {
            return;
        }
        if self.visitors_held.fetch_add(1, Ordering::Relaxed) >= MAX_VISITORS_HELD {
            self.visitors_held.fetch_sub(1, Ordering::Relaxed);
            self.visitors_dropped.increment(1);
            return;
        }
        digests.insert(digest, agent);
    }

    /// Counts the click; false when it was dropped (past the bound).
    fn count(&self, shard: &mut Shard, code_hash: u64, mut key: KeyView<'_>) -> bool {
        let mut hash = key.hash(&self.hasher);
        if shard.bump(hash, &key) {
            return true;
        }
        // Referrer hosts, or the paths of visits to codes that do not
        // exist, are bounded per code per flush.
        let value = match (key.path, key.referrer) {
            (Some(path), _) => Some(path),
            (None, Referrer::Host(host)) => Some(host),
            (None, _) => None,
        };
        if let Some(value) = value {
            let value_hash = self.hasher.hash_one(value);
            let seen = shard.referrers.entry(code_hash).or_default();
            if seen.contains(&value_hash) {
                // Known value, new combination of the other dimensions.
            } else if seen.len()
                < if key.path.is_some() {
                    MAX_PATHS_PER_DOMAIN
                } else {
                    MAX_REFERRERS_PER_CODE
                }
            {
                seen.push(value_hash);
            } else {
                if key.path.is_some() {
                    key.path = Some(OTHER);
                } else {
                    key.referrer = Referrer::Other;
                }
                hash = key.hash(&self.hasher);
                if shard.bump(hash, &key) {
                    return true;
                }
            }
        }
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.max_keys {
            self.held.fetch_sub(1, Ordering::Relaxed);
            self.dropped.increment(1);
            return false;
        }
        shard.counts.entry(hash).or_default().push(key.to_counted());
        true
    }

    /// Takes every count and every visit out of the shards.
    fn drain(&self) -> (Vec<Counted>, Vec<DayVisits>) {
        let mut drained = Vec::new();
        let mut visits = Vec::new();
        for shard in &self.shards {
            let (counts, visitors) = match shard.lock() {
                Ok(mut shard) => {
                    shard.referrers.clear();
                    (
                        std::mem::take(&mut shard.counts),
                        std::mem::take(&mut shard.visitors),
                    )
                }
                Err(_) => continue,
            };
            drained.extend(counts.into_values().flatten());
            visits.extend(visitors.into_values().flatten());
        }
        (drained, visits)
    }

    /// Drains the counts into batches of at most [`LINES_PER_BATCH`] lines,
    /// then classifies the User-Agents seen since the last flush. In that
    /// order: a request registers its agent before it counts its click, so
    /// every agent of a drained click is pending by now; classifying first
    /// would miss one registered in between, and its click would be sent as
    /// "other" (a bot counted as a person). Public for `bench-clicks`, which
    /// measures the flusher's share of the click path.
    pub fn take_batches(&self) -> Vec<PendingBatch> {
        let (drained, visits) = self.drain();
        self.agents.classify_pending();
        // Each link day's people, with the batch that holds the link's first
        // line that day (a batch names the link days it carries).
        let mut visitors: HashMap<i32, HashMap<Box<str>, Vec<u64>>> = HashMap::new();
        for visits in visits {
            let held = visits.digests.len();
            let digests: Vec<u64> = visits
                .digests
                .into_iter()
                .filter(|(_, agent)| self.agents.class(*agent).class == TrafficClass::Human)
                .map(|(digest, _)| digest)
                .collect();
            self.visitors_held
                .fetch_sub(held - digests.len(), Ordering::Relaxed);
            if !digests.is_empty() {
                visitors
                    .entry(visits.day)
                    .or_default()
                    .insert(visits.code, digests);
            }
        }
        let mut batches = Vec::with_capacity(drained.len().div_ceil(LINES_PER_BATCH));
        for chunk in drained.chunks(LINES_PER_BATCH) {
            let mut lines = String::with_capacity(chunk.len() * 64);
            let mut clicks = 0;
            let mut carried = Vec::new();
            let mut link_days = String::new();
            let dimensions = self.privacy.dimensions;
            for counted in chunk {
                let day = counted.minute / MINUTES_PER_DAY;
                if let Some((link, digests)) = visitors
                    .get_mut(&day)
                    .and_then(|links| links.remove_entry(&*counted.code))
                {
                    push_link_day(&mut link_days, day, &link);
                    carried.push(LinkDayVisitors { link, day, digests });
                }
                let class = self.agents.class(counted.agent);
                // The bot flag is kept either way: it splits the totals.
                let kept = !counted.private;
                if let Some(path) = &counted.path {
                    // Of a visit to a code that does not exist: the path
                    // where a referrer would be, nothing of the visitor.
                    push_line(
                        &mut lines,
                        &counted.code,
                        i64::from(counted.minute),
                        path,
                        NOT_RECORDED,
                        NOT_RECORDED,
                        NOT_RECORDED,
                        class.class,
                        counted.count,
                        None,
                    );
                    clicks += counted.count;
                    continue;
                }
                let referrer = match &counted.referrer {
                    StoredReferrer::Direct => DIRECT,
                    StoredReferrer::Other => OTHER,
                    StoredReferrer::Host(host) => host,
                };
                let country = match counted.country {
                    UNKNOWN => UNKNOWN_COUNTRY,
                    ref letters => std::str::from_utf8(letters).unwrap_or(UNKNOWN_COUNTRY),
                };
                push_line(
                    &mut lines,
                    &counted.code,
                    i64::from(counted.minute),
                    recorded(kept && dimensions.referrer, referrer),
                    recorded(kept && dimensions.browser, &class.browser),
                    recorded(kept && dimensions.device, class.device),
                    recorded(kept && dimensions.country, country),
                    class.class,
                    counted.count,
                    counted.rule,
                );
                clicks += counted.count;
            }
            batches.push(PendingBatch {
                batch: ClickBatch {
                    id: uuid::Uuid::new_v4().simple().to_string(),
                    lines,
                    visitors: link_days,
                },
                visitors: carried,
                line_count: chunk.len(),
                clicks,
            });
        }
        // A link day with visitors always has a line; none is left, but the
        // count of what is held must not drift if one were.
        let left: usize = visitors
            .values()
            .flat_map(HashMap::values)
            .map(Vec::len)
            .sum();
        if left > 0 {
            self.visitors_held.fetch_sub(left, Ordering::Relaxed);
            self.visitors_dropped.increment(left as u64);
        }
        batches
    }

    /// Flushes every `interval` until `stopped`, and once more on the way out.
    pub async fn run(
        self: std::sync::Arc<Self>,
        sink: ClickSink,
        interval: Duration,
        stopped: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stopped);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unsent: VecDeque<PendingBatch> = VecDeque::new();
        let flushed = metrics::counter!("redirect_clicks_flushed_total");
        let batches_sent = metrics::counter!("redirect_click_batches_sent_total");
        let failures = metrics::counter!("redirect_clicks_flush_errors_total");
        let backlog = metrics::gauge!("redirect_clicks_backlog_batches");
        loop {
            let stopping = tokio::select! {
                _ = ticker.tick() => false,
                () = &mut stopped => true,
            };
            unsent.extend(self.take_batches());
            backlog.set(unsent.len() as f64);
            if !unsent.is_empty() {
                let result = sink.append(unsent.make_contiguous()).await;
                let sent = match result {
                    Ok(sent) => sent,
                    Err((sent, error)) => {
                        failures.increment(1);
                        tracing::debug!(%error, "click flush failed; keeping the batches");
                        sent
                    }
                };
                for batch in unsent.drain(..sent) {
                    flushed.increment(batch.clicks);
                    batches_sent.increment(1);
                    self.held.fetch_sub(batch.line_count, Ordering::Relaxed);
                    self.visitors_held.fetch_sub(
                        batch.visitors.iter().map(|day| day.digests.len()).sum(),
                        Ordering::Relaxed,
                    );
                }
            }
            if stopping {
                if !unsent.is_empty() {
                    let lost: u64 = unsent.iter().map(|batch| batch.clicks).sum();
                    self.dropped.increment(lost);
                    tracing::warn!(clicks = lost, "clicks not flushed before exit");
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use tinyurl_domain::clicks::parse_batch;

    fn headers(referrer: Option<&'static str>, agent: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(referrer) = referrer {
            headers.insert(REFERER, HeaderValue::from_static(referrer));
        }
        headers.insert(USER_AGENT, HeaderValue::from_static(agent));
        headers
    }

    fn totals(batches: &[PendingBatch]) -> HashMap<(String, String, String), u64> {
        let mut totals = HashMap::new();
        for batch in batches {
            for line in parse_batch(&batch.batch.lines).expect("well-formed") {
                *totals
                    .entry((line.code, line.referrer, line.browser))
                    .or_default() += line.count;
            }
        }
        totals
    }

    #[test]
    fn counts_by_dimension_and_bounds_keys() {
        let clicks = Clicks::new(ClickSettings {
            max_keys: 3,
            ..ClickSettings::default()
        });
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        for _ in 0..3 {
            clicks.record(
                "aaa",
                &headers(Some("https://www.Example.com/x"), chrome),
                None,
                None,
            );
        }
        clicks.record(
            "aaa",
            &headers(Some("https://example.com:8443/"), chrome),
            None,
            None,
        );
        clicks.record("aaa", &headers(None, "curl/8.5.0"), None, None);
        clicks.record("bbb", &headers(None, chrome), None, None);
        // Past the bound of three keys.
        clicks.record("ccc", &headers(None, chrome), None, None);
        let batches = clicks.take_batches();
        let totals = totals(&batches);
        let key = |code: &str, referrer: &str, browser: &str| {
            (code.to_owned(), referrer.to_owned(), browser.to_owned())
        };
        assert_eq!(totals.get(&key("aaa", "example.com", "chrome")), Some(&4));
        assert_eq!(totals.get(&key("aaa", "-", "curl")), Some(&1));
        assert_eq!(totals.get(&key("bbb", "-", "chrome")), Some(&1));
        assert_eq!(totals.len(), 3, "ccc was past the bound");
        // Unsent batches still hold their keys: nothing new is counted...
        clicks.record("ddd", &headers(None, chrome), None, None);
        assert!(clicks.take_batches().is_empty());
        // ...until they are sent.
        clicks.held.fetch_sub(
            batches.iter().map(|batch| batch.line_count).sum(),
            Ordering::Relaxed,
        );
        clicks.record("ddd", &headers(None, chrome), None, None);
        assert_eq!(clicks.take_batches().len(), 1);
    }

    #[test]
    fn a_visitor_who_asks_not_to_be_tracked_counts_in_the_totals_only() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36";
        let asking = |name: &'static str| {
            let mut asking = headers(Some("https://news.example/"), chrome);
            asking.insert(name, HeaderValue::from_static("1"));
            asking
        };
        let lines = |clicks: &Clicks| -> Vec<(String, String, String, String, bool, u64)> {
            let mut lines: Vec<_> = clicks
                .take_batches()
                .iter()
                .flat_map(|batch| parse_batch(&batch.batch.lines).expect("well-formed"))
                .map(|line| {
                    let bot = line.bot();
                    (
                        line.referrer,
                        line.browser,
                        line.device,
                        line.country,
                        bot,
                        line.count,
                    )
                })
                .collect();
            lines.sort();
            lines
        };
        let line = |referrer: &str, browser: &str, device: &str, bot, count| {
            (
                referrer.to_owned(),
                browser.to_owned(),
                device.to_owned(),
                if referrer == NOT_RECORDED {
                    NOT_RECORDED
                } else {
                    UNKNOWN_COUNTRY
                }
                .to_owned(),
                bot,
                count,
            )
        };
        let honouring = Clicks::new(ClickSettings {
            max_keys: 100,
            ..ClickSettings::default()
        });
        honouring.record("aaa", &asking("dnt"), None, None);
        honouring.record("aaa", &asking("sec-gpc"), None, None);
        honouring.record(
            "aaa",
            &headers(Some("https://news.example/"), chrome),
            None,
            None,
        );
        let mut bot = headers(None, "curl/8.5.0");
        bot.insert("dnt", HeaderValue::from_static("1"));
        honouring.record("aaa", &bot, None, None);
        // `DNT: 0` asks nothing.
        let mut zero = headers(Some("https://news.example/"), chrome);
        zero.insert("dnt", HeaderValue::from_static("0"));
        honouring.record("aaa", &zero, None, None);
        assert_eq!(
            lines(&honouring),
            [
                line(NOT_RECORDED, NOT_RECORDED, NOT_RECORDED, false, 2),
                line(NOT_RECORDED, NOT_RECORDED, NOT_RECORDED, true, 1),
                line("news.example", "chrome", "desktop", false, 2),
            ]
        );

        // Not honoured, or with dimensions turned off.
        let ignoring = Clicks::new(ClickSettings {
            max_keys: 100,
            privacy: Privacy {
                honor_do_not_track: false,
                dimensions: Dimensions::parse("browser").expect("a dimension"),
                unique_visitors: true,
            },
            ..ClickSettings::default()
        });
        ignoring.record("aaa", &asking("dnt"), None, None);
        ignoring.record(
            "aaa",
            &headers(Some("https://news.example/"), chrome),
            None,
            None,
        );
        let lines = lines(&ignoring);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(
            (
                lines[0].0.as_str(),
                lines[0].1.as_str(),
                lines[0].2.as_str(),
                lines[0].3.as_str(),
                lines[0].5
            ),
            (NOT_RECORDED, "chrome", NOT_RECORDED, NOT_RECORDED, 2)
        );
    }

    #[test]
    fn batches_carry_each_link_days_people_once() {
        let clicks = Clicks::new(ClickSettings {
            max_keys: 100,
            ..ClickSettings::default()
        });
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36";
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
        let one: IpAddr = "203.0.113.1".parse().expect("an address");
        let two: IpAddr = "203.0.113.2".parse().expect("an address");
        for _ in 0..3 {
            clicks.record("aaa", &headers(None, chrome), Some(one), None);
        }
        clicks.record("aaa", &headers(None, firefox), Some(one), None);
        clicks.record("aaa", &headers(None, chrome), Some(two), None);
        clicks.record("bbb", &headers(None, chrome), Some(one), None);
        // Not a visitor: a bot, one asking not to be tracked, no address.
        clicks.record("bbb", &headers(None, "curl/8.5.0"), Some(two), None);
        let mut asking = headers(None, chrome);
        asking.insert("dnt", axum::http::HeaderValue::from_static("1"));
        clicks.record("bbb", &asking, Some(two), None);
        clicks.record("ccc", &headers(None, chrome), None, None);
        clicks.record_orphan("~", "/nothing", &headers(None, chrome));

        let batches = clicks.take_batches();
        let mut carried: Vec<(String, usize)> = batches
            .iter()
            .flat_map(|batch| &batch.visitors)
            .map(|visitors| (visitors.link.to_string(), visitors.digests.len()))
            .collect();
        carried.sort();
        assert_eq!(carried, [("aaa".to_owned(), 3), ("bbb".to_owned(), 1)]);
        let today = minute_of(SystemTime::now()) / MINUTES_PER_DAY;
        let named: Vec<&str> = batches
            .iter()
            .map(|batch| batch.batch.visitors.as_str())
            .collect();
        let named = named.concat();
        for link in ["aaa", "bbb"] {
            assert!(named.contains(&format!("{today} {link}\n")), "{named:?}");
        }
        // Held until sent: then nothing is.
        assert_eq!(clicks.visitors_held.load(Ordering::Relaxed), 4);

        // Turned off: no digest at all.
        let off = Clicks::new(ClickSettings {
            max_keys: 100,
            privacy: Privacy {
                unique_visitors: false,
                ..Privacy::default()
            },
            ..ClickSettings::default()
        });
        off.record("aaa", &headers(None, chrome), Some(one), None);
        let batches = off.take_batches();
        assert!(
            batches
                .iter()
                .all(|batch| batch.visitors.is_empty() && batch.batch.visitors.is_empty())
        );
    }

    #[test]
    fn dimension_lists_are_parsed_strictly() {
        assert_eq!(
            Dimensions::parse("referrer,country,browser,device"),
            Ok(Dimensions::ALL)
        );
        assert_eq!(
            Dimensions::parse(" country , device "),
            Ok(Dimensions {
                referrer: false,
                country: true,
                browser: false,
                device: true,
            })
        );
        assert!(!Dimensions::parse("none").expect("none").country);
        for bad in ["", ",", "referer", "country,ip"] {
            assert!(Dimensions::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bounds_referrers_per_code() {
        let clicks = Clicks::new(ClickSettings {
            max_keys: 1_000,
            ..ClickSettings::default()
        });
        let referrers: Vec<&'static str> = (0..MAX_REFERRERS_PER_CODE + 5)
            .map(|index| &*Box::leak(format!("https://site{index}.example/").into_boxed_str()))
            .collect();
        for referrer in &referrers {
            clicks.record("aaa", &headers(Some(referrer), "curl/8"), None, None);
        }
        let lines: Vec<_> = clicks
            .take_batches()
            .iter()
            .flat_map(|batch| parse_batch(&batch.batch.lines).expect("well-formed"))
            .collect();
        let other: u64 = lines
            .iter()
            .filter(|line| line.referrer == OTHER)
            .map(|line| line.count)
            .sum();
        assert_eq!(other, 5);
        assert_eq!(lines.iter().map(|line| line.count).sum::<u64>(), 25);
    }
}
