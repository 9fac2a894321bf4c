//! The redirect service's configuration, read from the environment contract.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use tinyurl_runtime::config::{COMMON_ENV_VARS, render_env_help};
use tinyurl_runtime::{CommonConfig, ConfigError, Env, EnvVarDoc};

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9093);

pub const REDIRECT_ENV_VARS: &[EnvVarDoc] = &[
    EnvVarDoc {
        name: "TINYURL_REPLICA_URLS",
        default: "(none)",
        meaning: "comma-separated Postgres read replicas, read round-robin",
    },
    EnvVarDoc {
        name: "TINYURL_DATABASE_URL",
        default: "(none)",
        meaning: "Postgres primary: used when no replica is usable, and to confirm a replica's miss",
    },
    EnvVarDoc {
        name: "TINYURL_REDIS_URL",
        default: "(unset: no shared cache)",
        meaning: "Redis: shared cache, invalidations, click stream",
    },
    EnvVarDoc {
        name: "TINYURL_PUBLIC_BASE_URL",
        default: "http://localhost:8080",
        meaning: "base of short URLs, shown in previews and QR codes",
    },
    EnvVarDoc {
        name: "TINYURL_L1_CAPACITY",
        default: "100000",
        meaning: "links held in the in-process cache; 0 turns it off",
    },
    EnvVarDoc {
        name: "TINYURL_L1_TTL_SECS",
        default: "60",
        meaning: "longest an in-process entry lives: the staleness bound if an invalidation is lost",
    },
    EnvVarDoc {
        name: "TINYURL_L1_NEGATIVE_TTL_MS",
        default: "2000",
        meaning: "how long the in-process cache remembers an unknown code",
    },
    EnvVarDoc {
        name: "TINYURL_CACHE_TTL_SECS",
        default: "86400",
        meaning: "TTL of Redis entries filled from Postgres (±10% jitter)",
    },
    EnvVarDoc {
        name: "TINYURL_NEGATIVE_TTL_SECS",
        default: "30",
        meaning: "TTL of Redis \"not found\" entries",
    },
    EnvVarDoc {
        name: "TINYURL_PERMANENT_MAX_AGE_SECS",
        default: "300",
        meaning: "browser cache lifetime of a 301/308 (never unbounded)",
    },
    EnvVarDoc {
        name: "TINYURL_DB_TIMEOUT_MS",
        default: "1000",
        meaning: "bound on every Postgres connect and query",
    },
    EnvVarDoc {
        name: "TINYURL_DB_POOL_SIZE",
        default: "8",
        meaning: "Postgres connections per database per process",
    },
    EnvVarDoc {
        name: "TINYURL_REDIS_TIMEOUT_MS",
        default: "100",
        meaning: "bound on every Redis command",
    },
    EnvVarDoc {
        name: "TINYURL_CLICKS_ENABLED",
        default: "true",
        meaning: "count clicks for analytics (needs Redis, or the embedded deployment)",
    },
    EnvVarDoc {
        name: "TINYURL_CLICKS_REDIS_URL",
        default: "(TINYURL_REDIS_URL)",
        meaning: "a separate Redis for the click stream",
    },
    EnvVarDoc {
        name: "TINYURL_CLICKS_FLUSH_MS",
        default: "1000",
        meaning: "how often aggregated clicks are appended to the click stream",
    },
    EnvVarDoc {
        name: "TINYURL_CLICKS_MAX_CODES",
        default: "100000",
        meaning: "distinct (code, minute, referrer, client, country) keys held between flushes; clicks beyond are dropped and counted",
    },
    EnvVarDoc {
        name: "TINYURL_CLICKS_STREAM_MAX_ENTRIES",
        default: "10000",
        meaning: "click stream bound in entries (each at most 1,000 lines)",
    },
    EnvVarDoc {
        name: "TINYURL_CLICKS_STREAM_MAX_AGE_SECS",
        default: "3600",
        meaning: "click stream bound by age: older entries are trimmed, folded or not",
    },
    EnvVarDoc {
        name: "TINYURL_TRUSTED_PROXIES",
        default: "(none)",
        meaning: "comma-separated CIDRs whose X-Forwarded-For names the client (country, scanner limits)",
    },
    EnvVarDoc {
        name: "TINYURL_SCANNER_404_PER_MINUTE",
        default: "300",
        meaning: "unknown codes one client address may look up a minute before its uncached requests get 429 (0: off)",
    },
    EnvVarDoc {
        name: "TINYURL_GEOIP_DB",
        default: "(none: country \"unknown\")",
        meaning: "IP-to-country database in MaxMind DB format (GeoLite2-Country.mmdb)",
    },
    EnvVarDoc {
        name: "TINYURL_WORKER_THREADS",
        default: "(number of CPUs)",
        meaning: "threads serving HTTP",
    },
];

pub fn env_help() -> String {
    render_env_help(&[COMMON_ENV_VARS, REDIRECT_ENV_VARS])
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
    pub clicks_flush: Duration,
    pub clicks_max_codes: usize,
    pub clicks_stream_max_entries: u64,
    pub clicks_stream_max_age: Duration,
    pub trusted_proxies: crate::clicks::TrustedProxies,
    pub scanner_404_per_minute: u32,
    pub geoip_db: Option<PathBuf>,
    pub worker_threads: Option<usize>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(
            env,
            "tinyurl-redirect",
            DEFAULT_LISTEN,
            DEFAULT_ADMIN_LISTEN,
        )?;
        let replica_urls: Vec<SecretString> = env
            .get("TINYURL_REPLICA_URLS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| SecretString::from(url.to_owned()))
            .collect();
        let database_url = env.secret("TINYURL_DATABASE_URL");
        if replica_urls.is_empty() && database_url.is_none() {
            return Err(ConfigError {
                variable: "TINYURL_REPLICA_URLS",
                reason: "set it or TINYURL_DATABASE_URL: links must be read from somewhere"
                    .to_owned(),
            });
        }
        let public_base_url = env
            .string_or("TINYURL_PUBLIC_BASE_URL", "http://localhost:8080")
            .trim_end_matches('/')
            .to_owned();
        if !(public_base_url.starts_with("http://") || public_base_url.starts_with("https://")) {
            return Err(ConfigError {
                variable: "TINYURL_PUBLIC_BASE_URL",
                reason: format!("{public_base_url:?} is not an http(s) URL"),
            });
        }
        let l1_ttl = Duration::from_secs(env.parse_or("TINYURL_L1_TTL_SECS", 60)?);
        if l1_ttl.is_zero() {
            return Err(ConfigError {
                variable: "TINYURL_L1_TTL_SECS",
                reason: "must be at least 1; set TINYURL_L1_CAPACITY=0 to turn the cache off"
                    .to_owned(),
            });
        }
        let worker_threads = match env.get("TINYURL_WORKER_THREADS") {
            None => None,
            Some(_) => Some(env.parse_or("TINYURL_WORKER_THREADS", 1usize)?.max(1)),
        };
        let trusted_proxies = crate::clicks::TrustedProxies::parse(
            env.get("TINYURL_TRUSTED_PROXIES").unwrap_or_default(),
        )
        .map_err(|reason| ConfigError {
            variable: "TINYURL_TRUSTED_PROXIES",
            reason,
        })?;
        Ok(Self {
            common,
            replica_urls,
            database_url,
            redis_url: env.secret("TINYURL_REDIS_URL"),
            public_base_url,
            l1_capacity: env.parse_or("TINYURL_L1_CAPACITY", 100_000)?,
            l1_ttl,
            l1_negative_ttl: env.millis_or("TINYURL_L1_NEGATIVE_TTL_MS", Duration::from_secs(2))?,
            cache_ttl: Duration::from_secs(env.parse_or("TINYURL_CACHE_TTL_SECS", 86_400)?),
            negative_ttl: Duration::from_secs(env.parse_or("TINYURL_NEGATIVE_TTL_SECS", 30)?),
            permanent_max_age: Duration::from_secs(
                env.parse_or("TINYURL_PERMANENT_MAX_AGE_SECS", 300)?,
            ),
            db_timeout: env.millis_or("TINYURL_DB_TIMEOUT_MS", Duration::from_secs(1))?,
            pool_size: env.parse_or("TINYURL_DB_POOL_SIZE", 8)?,
            redis_timeout: env.millis_or("TINYURL_REDIS_TIMEOUT_MS", Duration::from_millis(100))?,
            clicks_enabled: env.parse_or("TINYURL_CLICKS_ENABLED", true)?,
            clicks_redis_url: env.secret("TINYURL_CLICKS_REDIS_URL"),
            clicks_flush: env.millis_or("TINYURL_CLICKS_FLUSH_MS", Duration::from_secs(1))?,
            clicks_max_codes: env.parse_or("TINYURL_CLICKS_MAX_CODES", 100_000)?,
            clicks_stream_max_entries: env.parse_or("TINYURL_CLICKS_STREAM_MAX_ENTRIES", 10_000)?,
            clicks_stream_max_age: Duration::from_secs(
                env.parse_or("TINYURL_CLICKS_STREAM_MAX_AGE_SECS", 3_600)?,
            ),
            trusted_proxies,
            scanner_404_per_minute: env.parse_or("TINYURL_SCANNER_404_PER_MINUTE", 300)?,
            geoip_db: env
                .get("TINYURL_GEOIP_DB")
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
            worker_threads,
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
