//! The redirect service's configuration, read from the environment contract.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use tinyurl_runtime::config;
use tinyurl_runtime::settings::{Table, parsed, render_help, seconds, show_seconds, unshown};
use tinyurl_runtime::{CommonConfig, ConfigError, Env, Fallback, Setting};

pub const LISTEN: Setting<SocketAddr> =
    config::listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080));
pub const ADMIN_LISTEN: Setting<SocketAddr> =
    config::admin_listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9093));

pub const REPLICA_URLS: Setting<Vec<SecretString>> = Setting {
    name: "TINYURL_REPLICA_URLS",
    meaning: "comma-separated Postgres read replicas, read round-robin",
    default: Fallback::Said(Vec::new(), "none"),
    parse: |raw| {
        Ok(raw
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| SecretString::from(url.to_owned()))
            .collect())
    },
    show: unshown,
};
pub const DATABASE_URL: Setting<Option<SecretString>> = Setting::optional_secret(
    "TINYURL_DATABASE_URL",
    "none",
    "Postgres primary: used when no replica is usable, and to confirm a replica's miss",
);
pub const REDIS_URL: Setting<Option<SecretString>> = Setting::optional_secret(
    "TINYURL_REDIS_URL",
    "unset: no shared cache",
    "Redis: shared cache, invalidations, click stream",
);
pub const PUBLIC_BASE_URL: Setting<String> = Setting {
    name: "TINYURL_PUBLIC_BASE_URL",
    meaning: "base of short URLs, shown in previews and QR codes",
    default: Fallback::Text("http://localhost:8080"),
    parse: |raw| {
        let url = raw.trim_end_matches('/');
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(url.to_owned())
        } else {
            Err(format!("{raw:?} is not an http(s) URL"))
        }
    },
    show: unshown,
};
pub const L1_CAPACITY: Setting<u64> = Setting::value(
    "TINYURL_L1_CAPACITY",
    100_000,
    "links held in the in-process cache; 0 turns it off",
);
pub const L1_TTL: Setting<Duration> = Setting {
    name: "TINYURL_L1_TTL_SECS",
    meaning: "longest an in-process entry lives: the staleness bound if an invalidation is lost",
    default: Fallback::Value(Duration::from_secs(60)),
    parse: |raw| {
        let ttl = seconds(raw)?;
        if ttl.is_zero() {
            return Err(
                "must be at least 1; set TINYURL_L1_CAPACITY=0 to turn the cache off".to_owned(),
            );
        }
        Ok(ttl)
    },
    show: show_seconds,
};
pub const L1_NEGATIVE_TTL: Setting<Duration> = Setting::millis(
    "TINYURL_L1_NEGATIVE_TTL_MS",
    Duration::from_secs(2),
    "how long the in-process cache remembers an unknown code",
);
pub const CACHE_TTL: Setting<Duration> = Setting::seconds(
    "TINYURL_CACHE_TTL_SECS",
    Duration::from_secs(86_400),
    "TTL of Redis entries filled from Postgres (±10% jitter)",
);
pub const NEGATIVE_TTL: Setting<Duration> = Setting::seconds(
    "TINYURL_NEGATIVE_TTL_SECS",
    Duration::from_secs(30),
    "TTL of Redis \"not found\" entries",
);
pub const PERMANENT_MAX_AGE: Setting<Duration> = Setting::seconds(
    "TINYURL_PERMANENT_MAX_AGE_SECS",
    Duration::from_secs(300),
    "browser cache lifetime of a 301/308 (never unbounded)",
);
pub const DB_TIMEOUT: Setting<Duration> = Setting::millis(
    "TINYURL_DB_TIMEOUT_MS",
    Duration::from_secs(1),
    "bound on every Postgres connect and query",
);
pub const DB_POOL_SIZE: Setting<usize> = Setting::value(
    "TINYURL_DB_POOL_SIZE",
    8,
    "Postgres connections per database per process",
);
pub const REDIS_TIMEOUT: Setting<Duration> = Setting::millis(
    "TINYURL_REDIS_TIMEOUT_MS",
    Duration::from_millis(100),
    "bound on every Redis command",
);
pub const CLICKS_ENABLED: Setting<bool> = Setting::value(
    "TINYURL_CLICKS_ENABLED",
    true,
    "count clicks for analytics (needs Redis, or the embedded deployment)",
);
pub const CLICKS_REDIS_URL: Setting<Option<SecretString>> = Setting::optional_secret(
    "TINYURL_CLICKS_REDIS_URL",
    "TINYURL_REDIS_URL",
    "a separate Redis for the click stream",
);
pub const CLICKS_HONOR_DNT: Setting<bool> = Setting::value(
    "TINYURL_CLICKS_HONOR_DNT",
    true,
    "a visit sent with `DNT: 1` or `Sec-GPC: 1` counts in its link's totals and in no dimension (no referrer, country, browser or device)",
);
pub const CLICKS_UNIQUE_VISITORS: Setting<bool> = Setting::value(
    "TINYURL_CLICKS_UNIQUE_VISITORS",
    true,
    "count each link's unique visitors per day (people only, not those asking not to be tracked) from a hash of address, User-Agent and link under a key that changes daily and is never stored past its day",
);
pub const CLICKS_DIMENSIONS: Setting<crate::clicks::Dimensions> = Setting {
    name: "TINYURL_CLICKS_DIMENSIONS",
    meaning: "the dimensions clicks are counted by, comma-separated, of referrer, country, browser and device (`none`: totals only); one left out is never read from a request",
    default: Fallback::Said(
        crate::clicks::Dimensions::ALL,
        "referrer,country,browser,device",
    ),
    parse: crate::clicks::Dimensions::parse,
    show: unshown,
};
pub const CLICKS_FLUSH: Setting<Duration> = Setting::millis(
    "TINYURL_CLICKS_FLUSH_MS",
    Duration::from_secs(1),
    "how often aggregated clicks are appended to the click stream",
);
pub const CLICKS_MAX_CODES: Setting<usize> = Setting::value(
    "TINYURL_CLICKS_MAX_CODES",
    100_000,
    "distinct (code, minute, referrer, client, country) keys held between flushes; clicks beyond are dropped and counted",
);
pub const CLICKS_STREAM_MAX_ENTRIES: Setting<u64> = Setting::value(
    "TINYURL_CLICKS_STREAM_MAX_ENTRIES",
    10_000,
    "click stream bound in entries (each at most 1,000 lines)",
);
pub const CLICKS_STREAM_MAX_AGE: Setting<Duration> = Setting::seconds(
    "TINYURL_CLICKS_STREAM_MAX_AGE_SECS",
    Duration::from_secs(3_600),
    "click stream bound by age: older entries are trimmed, folded or not",
);
pub const TRUSTED_PROXIES: Setting<crate::clicks::TrustedProxies> = Setting {
    name: "TINYURL_TRUSTED_PROXIES",
    meaning: "comma-separated CIDRs whose X-Forwarded-For names the client (country, scanner limits)",
    default: Fallback::Said(crate::clicks::TrustedProxies::NONE, "none"),
    parse: crate::clicks::TrustedProxies::parse,
    show: unshown,
};
pub const SCANNER_404_PER_MINUTE: Setting<u32> = Setting::value(
    "TINYURL_SCANNER_404_PER_MINUTE",
    300,
    "unknown codes one client address may look up a minute before its uncached requests get 429 (0: off)",
);
pub const COOKIE_SECRET: Setting<Option<SecretString>> = Setting::optional_secret(
    "TINYURL_COOKIE_SECRET",
    "a random key per process: a cookie opens links only on the process that issued it",
    "key of the cookies that open password-protected links; the same on every redirect",
);
pub const PASSWORD_ATTEMPTS_PER_ADDRESS: Setting<u32> = Setting::value(
    "TINYURL_PASSWORD_ATTEMPTS_PER_ADDRESS",
    10,
    "wrong link passwords one client address may try in 10 minutes, over all links",
);
pub const PASSWORD_ATTEMPTS_PER_LINK: Setting<u32> = Setting::value(
    "TINYURL_PASSWORD_ATTEMPTS_PER_LINK",
    100,
    "wrong passwords one protected link may be tried with in 10 minutes, from anywhere",
);
pub const UNKNOWN_HOSTS: Setting<crate::domains::UnknownHosts> = Setting {
    name: "TINYURL_UNKNOWN_HOSTS",
    meaning: "requests for a host that is neither the default domain nor a registered one: \"default\" answers them as the default domain, \"404\" refuses them with no I/O",
    default: Fallback::Said(crate::domains::UnknownHosts::Default, "default"),
    parse: crate::domains::UnknownHosts::parse,
    show: unshown,
};
pub const GEOIP_DB: Setting<Option<PathBuf>> = Setting::optional(
    "TINYURL_GEOIP_DB",
    "none: country \"unknown\"",
    "IP-to-country database in MaxMind DB format (GeoLite2-Country.mmdb)",
);
pub const WORKER_THREADS: Setting<Option<usize>> = Setting {
    name: "TINYURL_WORKER_THREADS",
    meaning: "threads serving HTTP",
    default: Fallback::Said(None, "number of CPUs"),
    parse: |raw| parsed::<usize>(raw).map(|threads| Some(threads.max(1))),
    show: unshown,
};

/// The redirect service's settings, in the order `--help` lists them.
pub const SETTINGS: Table = &[
    &LISTEN,
    &ADMIN_LISTEN,
    &REPLICA_URLS,
    &DATABASE_URL,
    &REDIS_URL,
    &PUBLIC_BASE_URL,
    &L1_CAPACITY,
    &L1_TTL,
    &L1_NEGATIVE_TTL,
    &CACHE_TTL,
    &NEGATIVE_TTL,
    &PERMANENT_MAX_AGE,
    &DB_TIMEOUT,
    &DB_POOL_SIZE,
    &REDIS_TIMEOUT,
    &CLICKS_ENABLED,
    &CLICKS_REDIS_URL,
    &CLICKS_HONOR_DNT,
    &CLICKS_DIMENSIONS,
    &CLICKS_UNIQUE_VISITORS,
    &CLICKS_FLUSH,
    &CLICKS_MAX_CODES,
    &CLICKS_STREAM_MAX_ENTRIES,
    &CLICKS_STREAM_MAX_AGE,
    &TRUSTED_PROXIES,
    &SCANNER_404_PER_MINUTE,
    &COOKIE_SECRET,
    &PASSWORD_ATTEMPTS_PER_ADDRESS,
    &PASSWORD_ATTEMPTS_PER_LINK,
    &UNKNOWN_HOSTS,
    &GEOIP_DB,
    &WORKER_THREADS,
];

pub fn env_help() -> String {
    render_help(&[SETTINGS, config::COMMON])
}

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub replica_urls: Vec<SecretString>,
    pub database_url: Option<SecretString>,
    pub redis_url: Option<SecretString>,
    pub public_base_url: String,
    pub l1_capacity: u64,
    pub l1_ttl: Duration,
    pub l1_negative_ttl: Duration,
    pub cache_ttl: Duration,
    pub negative_ttl: Duration,
    pub permanent_max_age: Duration,
    pub db_timeout: Duration,
    pub pool_size: usize,
    pub redis_timeout: Duration,
    pub clicks_enabled: bool,
    pub clicks_redis_url: Option<SecretString>,
    pub clicks_privacy: crate::clicks::Privacy,
    pub clicks_flush: Duration,
    pub clicks_max_codes: usize,
    pub clicks_stream_max_entries: u64,
    pub clicks_stream_max_age: Duration,
    pub trusted_proxies: crate::clicks::TrustedProxies,
    pub scanner_404_per_minute: u32,
    pub cookie_secret: Option<SecretString>,
    pub password_attempts_per_address: u32,
    pub password_attempts_per_link: u32,
    pub unknown_hosts: crate::domains::UnknownHosts,
    pub geoip_db: Option<PathBuf>,
    pub worker_threads: Option<usize>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::with(env.read(&REPLICA_URLS)?, env.read(&DATABASE_URL)?, env)
    }

    /// The redirect service's configuration reading links from
    /// `replica_urls` and `database_url` (at least one), every other
    /// setting read from `env`.
    pub fn with(
        replica_urls: Vec<SecretString>,
        database_url: Option<SecretString>,
        env: &Env,
    ) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env, "tinyurl-redirect", &LISTEN, &ADMIN_LISTEN)?;
        if replica_urls.is_empty() && database_url.is_none() {
            return Err(ConfigError {
                variable: REPLICA_URLS.name,
                reason: "set it or TINYURL_DATABASE_URL: links must be read from somewhere"
                    .to_owned(),
            });
        }
        Ok(Self {
            common,
            replica_urls,
            database_url,
            redis_url: env.read(&REDIS_URL)?,
            public_base_url: env.read(&PUBLIC_BASE_URL)?,
            l1_capacity: env.read(&L1_CAPACITY)?,
            l1_ttl: env.read(&L1_TTL)?,
            l1_negative_ttl: env.read(&L1_NEGATIVE_TTL)?,
            cache_ttl: env.read(&CACHE_TTL)?,
            negative_ttl: env.read(&NEGATIVE_TTL)?,
            permanent_max_age: env.read(&PERMANENT_MAX_AGE)?,
            db_timeout: env.read(&DB_TIMEOUT)?,
            pool_size: env.read(&DB_POOL_SIZE)?,
            redis_timeout: env.read(&REDIS_TIMEOUT)?,
            clicks_enabled: env.read(&CLICKS_ENABLED)?,
            clicks_redis_url: env.read(&CLICKS_REDIS_URL)?,
            clicks_privacy: crate::clicks::Privacy {
                honor_do_not_track: env.read(&CLICKS_HONOR_DNT)?,
                dimensions: env.read(&CLICKS_DIMENSIONS)?,
                unique_visitors: env.read(&CLICKS_UNIQUE_VISITORS)?,
            },
            clicks_flush: env.read(&CLICKS_FLUSH)?,
            clicks_max_codes: env.read(&CLICKS_MAX_CODES)?,
            clicks_stream_max_entries: env.read(&CLICKS_STREAM_MAX_ENTRIES)?,
            clicks_stream_max_age: env.read(&CLICKS_STREAM_MAX_AGE)?,
            trusted_proxies: env.read(&TRUSTED_PROXIES)?,
            scanner_404_per_minute: env.read(&SCANNER_404_PER_MINUTE)?,
            cookie_secret: env.read(&COOKIE_SECRET)?,
            password_attempts_per_address: env.read(&PASSWORD_ATTEMPTS_PER_ADDRESS)?,
            password_attempts_per_link: env.read(&PASSWORD_ATTEMPTS_PER_LINK)?,
            unknown_hosts: env.read(&UNKNOWN_HOSTS)?,
            geoip_db: env.read(&GEOIP_DB)?,
            worker_threads: env.read(&WORKER_THREADS)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn needs_somewhere_to_read_links() {
        let error = Config::from_env(&Env::from_pairs(Vec::<(&str, &str)>::new()))
            .expect_err("no database");
        assert_eq!(error.variable, "TINYURL_REPLICA_URLS");
    }

    #[test]
    fn parses_replicas_and_defaults() {
        let config = Config::from_env(&Env::from_pairs([
            ("TINYURL_REPLICA_URLS", " postgres://a/x , ,postgres://b/x"),
            ("TINYURL_PUBLIC_BASE_URL", "https://sho.rt/"),
        ]))
        .expect("valid");
        let replicas: Vec<&str> = config
            .replica_urls
            .iter()
            .map(|url| url.expose_secret())
            .collect();
        assert_eq!(replicas, ["postgres://a/x", "postgres://b/x"]);
        assert!(config.database_url.is_none());
        assert_eq!(config.public_base_url, "https://sho.rt");
        assert_eq!(config.l1_capacity, 100_000);
        assert_eq!(config.permanent_max_age, Duration::from_secs(300));
    }

    #[test]
    fn refuses_a_zero_l1_ttl_and_a_bad_base_url() {
        let error = Config::from_env(&Env::from_pairs([
            ("TINYURL_DATABASE_URL", "postgres://a/x"),
            ("TINYURL_L1_TTL_SECS", "0"),
        ]))
        .expect_err("zero TTL");
        assert_eq!(error.variable, "TINYURL_L1_TTL_SECS");
        let error = Config::from_env(&Env::from_pairs([
            ("TINYURL_DATABASE_URL", "postgres://a/x"),
            ("TINYURL_PUBLIC_BASE_URL", "sho.rt"),
        ]))
        .expect_err("no scheme");
        assert_eq!(error.variable, "TINYURL_PUBLIC_BASE_URL");
    }
}
