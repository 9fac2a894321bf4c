//! The writer's configuration, read from the environment contract.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use tinyurl_domain::TargetPolicy;

use tinyurl_links::store::{DEFAULT_IDEMPOTENCY_RETENTION, DEFAULT_LINK_PARTITIONS, Layout};
use tinyurl_runtime::config::{COMMON_ENV_VARS, render_env_help};
use tinyurl_runtime::{CommonConfig, ConfigError, Env, EnvVarDoc};

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 50052);
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9092);

pub const WRITER_ENV_VARS: &[EnvVarDoc] = &[
    EnvVarDoc {
        name: "TINYURL_DATABASE_URL",
        default: "(required)",
        meaning: "Postgres primary",
    },
    EnvVarDoc {
        name: "TINYURL_IDALLOC_URL",
        default: "(required)",
        meaning: "idalloc gRPC endpoint, e.g. http://idalloc:50051",
    },
    EnvVarDoc {
        name: "TINYURL_IDALLOC_TOKEN",
        default: "(required)",
        meaning: "service token presented to idalloc; one of idalloc's TINYURL_IDALLOC_TOKEN",
    },
    EnvVarDoc {
        name: "TINYURL_REDIS_URL",
        default: "(unset: no cache writes)",
        meaning: "Redis for write-through and invalidations",
    },
    EnvVarDoc {
        name: "TINYURL_RATE_LIMIT_PER_KEY",
        default: "(unset: no limit)",
        meaning: "calls per second per API key (e.g. 100/s), shared by every writer through Redis; a key's own rate overrides it",
    },
    EnvVarDoc {
        name: "TINYURL_AUTH_FAILURE_RATE_PER_IP",
        default: "10/s",
        meaning: "failed authentications per second per client address (a second's worth at once); past it, unknown keys from there are refused without a lookup (\"off\" disables)",
    },
    EnvVarDoc {
        name: "TINYURL_KEY_LOOKUPS_PER_SECOND",
        default: "20",
        meaning: "database lookups per second (and at once) of API keys this writer does not know; working keys are known from the store and never wait for it",
    },
    EnvVarDoc {
        name: "TINYURL_KEY_CACHE_SIZE",
        default: "10000",
        meaning: "API keys (resolved, and refused) remembered per writer",
    },
    EnvVarDoc {
        name: "TINYURL_DAILY_CREATE_QUOTA",
        default: "(unset: none)",
        meaning: "links one API key may create per UTC day, counted by every writer together",
    },
    EnvVarDoc {
        name: "TINYURL_BLOCKLIST_FILE",
        default: "(none)",
        meaning: "file of hosts refused as targets (`host`, `*.suffix`, one a line), reloaded when it changes",
    },
    EnvVarDoc {
        name: "TINYURL_REST_LISTEN",
        default: "(unset: no REST listener)",
        meaning: "address of the public REST API (/api/v1/...; OpenAPI at /api/v1/openapi.json), e.g. 0.0.0.0:8081",
    },
    EnvVarDoc {
        name: "TINYURL_REST_HEADER_TIMEOUT_MS",
        default: "10000",
        meaning: "how long a REST client may take to send a request's headers",
    },
    EnvVarDoc {
        name: "TINYURL_REST_REQUEST_TIMEOUT_MS",
        default: "30000",
        meaning: "how long a whole REST request may take, body included (then 408)",
    },
    EnvVarDoc {
        name: "TINYURL_REST_MAX_CONNECTIONS",
        default: "4096",
        meaning: "open REST connections; more wait to be accepted",
    },
    EnvVarDoc {
        name: "TINYURL_REST_MAX_CONNECTIONS_PER_ADDRESS",
        default: "64",
        meaning: "open REST connections per client address (an IPv6 /64 is one; trusted proxies are exempt); more are closed",
    },
    EnvVarDoc {
        name: "TINYURL_REST_CORS_ORIGINS",
        default: "(unset: no CORS)",
        meaning: "comma-separated origins browsers may call the REST API from (e.g. https://app.example), or *",
    },
    EnvVarDoc {
        name: "TINYURL_TRUSTED_PROXIES",
        default: "(none)",
        meaning: "CIDRs of the proxies in front of the REST API whose x-forwarded-for names the client",
    },
    EnvVarDoc {
        name: "TINYURL_GRPC_TRUSTED_PROXIES",
        default: "(none)",
        meaning: "CIDRs of gRPC proxies whose x-forwarded-for names the caller (gRPC callers are otherwise known by their own address)",
    },
    EnvVarDoc {
        name: "TINYURL_CODE_SECRET",
        default: "(required)",
        meaning: "key of the code permutation, at least 16 bytes, the same on every writer",
    },
    EnvVarDoc {
        name: "TINYURL_CODE_MIN_LENGTH",
        default: "7",
        meaning: "shortest generated code (at least 3, like aliases)",
    },
    EnvVarDoc {
        name: "TINYURL_PUBLIC_BASE_URL",
        default: "http://localhost:8080",
        meaning: "base of short URLs; its host is refused as a target",
    },
    EnvVarDoc {
        name: "TINYURL_BLOCKED_HOSTS",
        default: "(none)",
        meaning: "comma-separated hosts refused as targets, with their subdomains",
    },
    EnvVarDoc {
        name: "TINYURL_ALLOW_PRIVATE_TARGETS",
        default: "false",
        meaning: "accept private, loopback and link-local targets",
    },
    EnvVarDoc {
        name: "TINYURL_DB_TIMEOUT_MS",
        default: "2000",
        meaning: "bound on every Postgres connect and query",
    },
    EnvVarDoc {
        name: "TINYURL_DB_POOL_SIZE",
        default: "32",
        meaning: "Postgres connections per process",
    },
    EnvVarDoc {
        name: "TINYURL_REDIS_TIMEOUT_MS",
        default: "250",
        meaning: "bound on every Redis command",
    },
    EnvVarDoc {
        name: "TINYURL_CACHE_TTL_SECS",
        default: "86400",
        meaning: "TTL of write-through cache entries",
    },
    EnvVarDoc {
        name: "TINYURL_IDALLOC_TIMEOUT_MS",
        default: "2000",
        meaning: "bound on one LeaseRange call",
    },
    EnvVarDoc {
        name: "TINYURL_LEASE_HORIZON_SECS",
        default: "30",
        meaning: "the next ID range is fetched when the buffer would last less than this",
    },
    EnvVarDoc {
        name: "TINYURL_CLICKS_CONSUMER",
        default: "true",
        meaning: "fold click batches from the click stream into the analytics rollups",
    },
    EnvVarDoc {
        name: "TINYURL_CLICKS_REDIS_URL",
        default: "(TINYURL_REDIS_URL)",
        meaning: "a separate Redis holding the click stream",
    },
    EnvVarDoc {
        name: "TINYURL_CLICKS_MINUTE_RETENTION",
        default: "7d",
        meaning: "how long per-minute click rollups are kept",
    },
    EnvVarDoc {
        name: "TINYURL_CLICKS_DAY_RETENTION",
        default: "730d",
        meaning: "how long per-day click rollups are kept (0 keeps them forever)",
    },
    EnvVarDoc {
        name: "TINYURL_CLICKS_VALUES_PER_BUCKET",
        default: "100",
        meaning: "distinct referrers (countries, browsers, devices) kept per link, minute or day; clicks with more are counted as \"other\"",
    },
    EnvVarDoc {
        name: "TINYURL_IDEMPOTENCY_RETENTION",
        default: "24h",
        meaning: "how long an idempotency key answers retries with its link; then it is forgotten",
    },
    EnvVarDoc {
        name: "TINYURL_MIGRATE",
        default: "true",
        meaning: "apply schema migrations at start; false (a role without DDL rights) checks the schema is current and refuses to start otherwise: run `tinyurl-writer migrate` as the migrator first",
    },
    EnvVarDoc {
        name: "TINYURL_LINK_PARTITIONS",
        default: "16",
        meaning: "hash partitions of the links table, used once: by the migration that creates them",
    },
    EnvVarDoc {
        name: "TINYURL_CLICKS_CLAIM_IDLE_MS",
        default: "30000",
        meaning: "a click batch pending this long with another consumer (dead or hung) is taken over",
    },
];

pub fn env_help() -> String {
    render_env_help(&[COMMON_ENV_VARS, WRITER_ENV_VARS])
}

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub database_url: SecretString,
    pub idalloc_url: String,
    pub idalloc_token: SecretString,
    pub redis_url: Option<SecretString>,
    pub rate_limit_per_key: Option<tinyurl_links::rate::Rate>,
    pub daily_create_quota: Option<u64>,
    pub auth_failure_rate_per_ip: Option<tinyurl_links::rate::Rate>,
    pub key_cache: tinyurl_links::auth::KeyCacheSettings,
    pub trusted_proxies: tinyurl_runtime::proxies::TrustedProxies,
    pub grpc_trusted_proxies: tinyurl_runtime::proxies::TrustedProxies,
    /// Where the REST API listens; `None`: gRPC only.
    pub rest_listen: Option<SocketAddr>,
    pub rest_limits: crate::rest_listener::ListenerLimits,
    /// Origins allowed by CORS; empty: CORS off.
    pub rest_cors_origins: Vec<http::HeaderValue>,
    pub code_secret: SecretString,
    pub code_min_length: usize,
    pub public_base_url: String,
    pub target_policy: TargetPolicy,
    /// Hosts refused as targets, read again when the file changes.
    pub blocklist_file: Option<std::path::PathBuf>,
    pub db_timeout: Duration,
    pub pool_size: usize,
    pub redis_timeout: Duration,
    pub cache_ttl: Duration,
    pub idalloc_timeout: Duration,
    pub lease_horizon: Duration,
    pub clicks_consumer: bool,
    pub clicks_redis_url: Option<SecretString>,
    pub clicks_minute_retention: Duration,
    /// `None` keeps day rollups forever.
    pub clicks_day_retention: Option<Duration>,
    pub clicks_values_per_bucket: usize,
    pub clicks_claim_idle: Duration,
    pub layout: Layout,
    /// Apply migrations at start (`TINYURL_MIGRATE`); otherwise check them.
    pub migrate: bool,
}

/// The storage layout settings, from the writer's variables; the command
/// line's store commands read them too, as they may be the first to migrate.
pub fn layout_from_env(env: &Env) -> Result<Layout, ConfigError> {
    let partitions: u16 = env.parse_or("TINYURL_LINK_PARTITIONS", DEFAULT_LINK_PARTITIONS)?;
    if !(1..=1024).contains(&partitions) {
        return Err(ConfigError {
            variable: "TINYURL_LINK_PARTITIONS",
            reason: format!("{partitions} is not between 1 and 1024"),
        });
    }
    let retention: Duration = env
        .parse_or(
            "TINYURL_IDEMPOTENCY_RETENTION",
            humantime::Duration::from(DEFAULT_IDEMPOTENCY_RETENTION),
        )?
        .into();
    if retention.is_zero() {
        return Err(ConfigError {
            variable: "TINYURL_IDEMPOTENCY_RETENTION",
            reason: "must be longer than zero: a retry has to find its key".to_owned(),
        });
    }
    Ok(Layout {
        idempotency_retention: retention,
        link_partitions: partitions,
    })
}

fn rest_limits(env: &Env) -> Result<crate::rest_listener::ListenerLimits, ConfigError> {
    let defaults = crate::rest_listener::ListenerLimits::default();
    let at_least_one = |variable: &'static str, value: usize| {
        if value == 0 {
            Err(ConfigError {
                variable,
                reason: "must be at least 1".to_owned(),
            })
        } else {
            Ok(value)
        }
    };
    Ok(crate::rest_listener::ListenerLimits {
        header_read_timeout: env.millis_or(
            "TINYURL_REST_HEADER_TIMEOUT_MS",
            defaults.header_read_timeout,
        )?,
        request_timeout: env
            .millis_or("TINYURL_REST_REQUEST_TIMEOUT_MS", defaults.request_timeout)?,
        max_connections: at_least_one(
            "TINYURL_REST_MAX_CONNECTIONS",
            env.parse_or("TINYURL_REST_MAX_CONNECTIONS", defaults.max_connections)?,
        )?,
        max_connections_per_address: at_least_one(
            "TINYURL_REST_MAX_CONNECTIONS_PER_ADDRESS",
            env.parse_or(
                "TINYURL_REST_MAX_CONNECTIONS_PER_ADDRESS",
                defaults.max_connections_per_address,
            )?,
        )?,
    })
}

fn key_cache_settings(env: &Env) -> Result<tinyurl_links::auth::KeyCacheSettings, ConfigError> {
    let defaults = tinyurl_links::auth::KeyCacheSettings::default();
    let lookups: u32 = env.parse_or(
        "TINYURL_KEY_LOOKUPS_PER_SECOND",
        defaults.unknown_lookups_per_second.get(),
    )?;
    let capacity: usize = env.parse_or("TINYURL_KEY_CACHE_SIZE", defaults.capacity)?;
    Ok(tinyurl_links::auth::KeyCacheSettings {
        unknown_lookups_per_second: std::num::NonZeroU32::new(lookups).ok_or(ConfigError {
            variable: "TINYURL_KEY_LOOKUPS_PER_SECOND",
            reason: "must be at least 1: a key created since the last poll is looked up within it"
                .to_owned(),
        })?,
        capacity: if capacity == 0 {
            return Err(ConfigError {
                variable: "TINYURL_KEY_CACHE_SIZE",
                reason: "must be at least 1".to_owned(),
            });
        } else {
            capacity
        },
    })
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let common =
            CommonConfig::from_env(env, "tinyurl-writer", DEFAULT_LISTEN, DEFAULT_ADMIN_LISTEN)?;
        let public_base_url = env
            .string_or("TINYURL_PUBLIC_BASE_URL", "http://localhost:8080")
            .trim_end_matches('/')
            .to_owned();
        let own_host = url_host(&public_base_url).ok_or(ConfigError {
            variable: "TINYURL_PUBLIC_BASE_URL",
            reason: format!("{public_base_url:?} is not an http(s) URL with a host"),
        })?;
        let code_secret = env.required_secret("TINYURL_CODE_SECRET")?;
        if code_secret.expose_secret().len() < 16 {
            return Err(ConfigError {
                variable: "TINYURL_CODE_SECRET",
                reason: "must be at least 16 bytes".to_owned(),
            });
        }
        let blocked_hosts = env
            .get("TINYURL_BLOCKED_HOSTS")
            .unwrap_or_default()
            .split(',')
            .map(|host| host.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|host| !host.is_empty())
            .collect();
        Ok(Self {
            common,
            database_url: env.required_secret("TINYURL_DATABASE_URL")?,
            idalloc_url: env.required("TINYURL_IDALLOC_URL")?.to_owned(),
            idalloc_token: idalloc_token(env)?,
            redis_url: env.secret("TINYURL_REDIS_URL"),
            auth_failure_rate_per_ip: match env
                .string_or("TINYURL_AUTH_FAILURE_RATE_PER_IP", "10/s")
                .as_str()
            {
                "off" => None,
                rate => Some(rate.parse().map_err(|reason| ConfigError {
                    variable: "TINYURL_AUTH_FAILURE_RATE_PER_IP",
                    reason,
                })?),
            },
            key_cache: key_cache_settings(env)?,
            grpc_trusted_proxies: tinyurl_runtime::proxies::TrustedProxies::parse(
                env.get("TINYURL_GRPC_TRUSTED_PROXIES").unwrap_or_default(),
            )
            .map_err(|reason| ConfigError {
                variable: "TINYURL_GRPC_TRUSTED_PROXIES",
                reason,
            })?,
            trusted_proxies: tinyurl_runtime::proxies::TrustedProxies::parse(
                env.get("TINYURL_TRUSTED_PROXIES").unwrap_or_default(),
            )
            .map_err(|reason| ConfigError {
                variable: "TINYURL_TRUSTED_PROXIES",
                reason,
            })?,
            rest_listen: match env.get("TINYURL_REST_LISTEN") {
                None | Some("") => None,
                Some(raw) => Some(raw.parse().map_err(|_| ConfigError {
                    variable: "TINYURL_REST_LISTEN",
                    reason: format!("{raw:?} is not an address like 0.0.0.0:8081"),
                })?),
            },
            rest_limits: rest_limits(env)?,
            rest_cors_origins: cors_origins(
                env.get("TINYURL_REST_CORS_ORIGINS").unwrap_or_default(),
            )?,
            daily_create_quota: match env.get("TINYURL_DAILY_CREATE_QUOTA") {
                None | Some("") => None,
                Some(_) => Some(env.parse_or("TINYURL_DAILY_CREATE_QUOTA", 0_u64)?)
                    .filter(|quota| *quota > 0)
                    .map(Some)
                    .ok_or(ConfigError {
                        variable: "TINYURL_DAILY_CREATE_QUOTA",
                        reason: "must be at least 1 (leave it unset for no quota)".to_owned(),
                    })?,
            },
            rate_limit_per_key: env
                .get("TINYURL_RATE_LIMIT_PER_KEY")
                .filter(|value| !value.is_empty())
                .map(|value| {
                    value.parse().map_err(|reason| ConfigError {
                        variable: "TINYURL_RATE_LIMIT_PER_KEY",
                        reason,
                    })
                })
                .transpose()?,
            code_secret,
            code_min_length: code_min_length(env)?,
            public_base_url,
            target_policy: TargetPolicy {
                own_host: Some(own_host),
                blocked_hosts,
                allow_private_addresses: env.parse_or("TINYURL_ALLOW_PRIVATE_TARGETS", false)?,
                ..TargetPolicy::default()
            },
            blocklist_file: env
                .get("TINYURL_BLOCKLIST_FILE")
                .filter(|path| !path.is_empty())
                .map(std::path::PathBuf::from),
            db_timeout: env.millis_or("TINYURL_DB_TIMEOUT_MS", Duration::from_secs(2))?,
            pool_size: env.parse_or("TINYURL_DB_POOL_SIZE", 32)?,
            redis_timeout: env.millis_or("TINYURL_REDIS_TIMEOUT_MS", Duration::from_millis(250))?,
            cache_ttl: Duration::from_secs(env.parse_or("TINYURL_CACHE_TTL_SECS", 86_400)?),
            idalloc_timeout: env.millis_or("TINYURL_IDALLOC_TIMEOUT_MS", Duration::from_secs(2))?,
            lease_horizon: Duration::from_secs(env.parse_or("TINYURL_LEASE_HORIZON_SECS", 30)?),
            clicks_consumer: env.parse_or("TINYURL_CLICKS_CONSUMER", true)?,
            clicks_redis_url: env.secret("TINYURL_CLICKS_REDIS_URL"),
            clicks_minute_retention: env
                .parse_or(
                    "TINYURL_CLICKS_MINUTE_RETENTION",
                    humantime::Duration::from(Duration::from_secs(7 * 24 * 3600)),
                )?
                .into(),
            clicks_day_retention: Some(
                env.parse_or(
                    "TINYURL_CLICKS_DAY_RETENTION",
                    humantime::Duration::from(Duration::from_secs(730 * 24 * 3600)),
                )?
                .into(),
            )
            .filter(|retention: &Duration| !retention.is_zero()),
            clicks_values_per_bucket: match env.parse_or(
                "TINYURL_CLICKS_VALUES_PER_BUCKET",
                tinyurl_analytics::DEFAULT_VALUES_PER_BUCKET,
            )? {
                0 => {
                    return Err(ConfigError {
                        variable: "TINYURL_CLICKS_VALUES_PER_BUCKET",
                        reason: "must be at least 1".to_owned(),
                    });
                }
                values => values,
            },
            clicks_claim_idle: env
                .millis_or("TINYURL_CLICKS_CLAIM_IDLE_MS", Duration::from_secs(30))?
                .max(Duration::from_millis(100)),
            layout: layout_from_env(env)?,
            migrate: env.parse_or("TINYURL_MIGRATE", true)?,
        })
    }
}

/// Generated codes must have the shape of every link key (3 characters at
/// least, like aliases), or the redirect service would refuse them.
fn code_min_length(env: &Env) -> Result<usize, ConfigError> {
    let length = env.parse_or(
        "TINYURL_CODE_MIN_LENGTH",
        tinyurl_domain::codec::DEFAULT_MIN_LENGTH,
    )?;
    if length < tinyurl_domain::alias::MIN_ALIAS_LEN {
        return Err(ConfigError {
            variable: "TINYURL_CODE_MIN_LENGTH",
            reason: format!(
                "must be at least {}: shorter codes are not link-shaped",
                tinyurl_domain::alias::MIN_ALIAS_LEN
            ),
        });
    }
    Ok(length)
}

/// `*`, or origins like `https://app.example` (scheme, host, optional port).
fn cors_origins(raw: &str) -> Result<Vec<http::HeaderValue>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let well_formed = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin
                        .trim_start_matches("https://")
                        .trim_start_matches("http://")
                        .contains('/'));
            http::HeaderValue::from_str(origin)
                .ok()
                .filter(|_| well_formed)
                .ok_or(ConfigError {
                    variable: "TINYURL_REST_CORS_ORIGINS",
                    reason: format!("{origin:?} is not * or an origin like https://app.example"),
                })
        })
        .collect()
}

/// The token sent to idalloc: it travels in a header, so printable ASCII.
fn idalloc_token(env: &Env) -> Result<SecretString, ConfigError> {
    const VARIABLE: &str = "TINYURL_IDALLOC_TOKEN";
    let token = env.required_secret(VARIABLE)?;
    if token.expose_secret().is_empty()
        || !token
            .expose_secret()
            .bytes()
            .all(|byte| byte.is_ascii_graphic())
    {
        return Err(ConfigError {
            variable: VARIABLE,
            reason: "must be one token of printable characters without spaces".to_owned(),
        });
    }
    Ok(token)
}

/// Lowercase host of an http(s) URL, without parsing dependencies.
fn url_host(raw: &str) -> Option<String> {
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, port)| {
            if port.bytes().all(|byte| byte.is_ascii_digit()) {
                host
            } else {
                authority
            }
        });
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("TINYURL_DATABASE_URL", "postgres://localhost/x"),
            ("TINYURL_IDALLOC_URL", "http://127.0.0.1:50051"),
            ("TINYURL_IDALLOC_TOKEN", "0123456789abcdef0123456789abcdef"),
            ("TINYURL_CODE_SECRET", "0123456789abcdef0123"),
            ("TINYURL_PUBLIC_BASE_URL", "https://Sho.rt:8443/"),
            ("TINYURL_BLOCKED_HOSTS", " evil.example , Bad.Example. "),
        ]
    }

    #[test]
    fn parses_the_contract() {
        let config = Config::from_env(&Env::from_pairs(base())).expect("valid");
        assert_eq!(config.public_base_url, "https://Sho.rt:8443");
        assert_eq!(config.target_policy.own_host.as_deref(), Some("sho.rt"));
        assert_eq!(
            config.target_policy.blocked_hosts,
            ["evil.example", "bad.example"]
        );
        assert!(!format!("{config:?}").contains("0123456789abcdef0123"));
    }

    #[test]
    fn rest_listener_and_cors_are_off_unless_set() {
        let config = Config::from_env(&Env::from_pairs(base())).expect("valid");
        assert_eq!(
            (config.rest_listen, config.rest_cors_origins.len()),
            (None, 0)
        );
        let mut env = base();
        env.push(("TINYURL_REST_LISTEN", "127.0.0.1:8081"));
        env.push((
            "TINYURL_REST_CORS_ORIGINS",
            "https://app.example, http://localhost:3000",
        ));
        let config = Config::from_env(&Env::from_pairs(env)).expect("valid");
        assert_eq!(config.rest_listen.map(|at| at.port()), Some(8081));
        assert_eq!(config.rest_cors_origins.len(), 2);
        for bad in ["app.example", "https://app.example/path", "ftp://x"] {
            let mut env = base();
            env.push(("TINYURL_REST_CORS_ORIGINS", bad));
            let error = Config::from_env(&Env::from_pairs(env)).expect_err(bad);
            assert_eq!(error.variable, "TINYURL_REST_CORS_ORIGINS");
        }
    }

    #[test]
    fn generated_codes_are_at_least_three_characters() {
        for (length, ok) in [("2", false), ("3", true), ("7", true)] {
            let mut env = base();
            env.push(("TINYURL_CODE_MIN_LENGTH", length));
            assert_eq!(
                Config::from_env(&Env::from_pairs(env)).is_ok(),
                ok,
                "{length}"
            );
        }
    }

    #[test]
    fn refuses_a_short_secret() {
        let mut env = base();
        env.push(("TINYURL_CODE_SECRET", "short"));
        let error = Config::from_env(&Env::from_pairs(env)).expect_err("must fail");
        assert_eq!(error.variable, "TINYURL_CODE_SECRET");
    }
}
