//! The writer's settings, each declared once: [`crate::config::Config`]
//! reads them, `--help` and `docs/configuration.md` list them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use tinyurl_links::auth::{MAX_CACHED_KEYS, UNKNOWN_KEY_LOOKUPS_PER_SECOND};
use tinyurl_links::rate::Rate;
use tinyurl_links::store::{DEFAULT_IDEMPOTENCY_RETENTION, DEFAULT_LINK_PARTITIONS};
use tinyurl_runtime::config;
use tinyurl_runtime::proxies::TrustedProxies;
use tinyurl_runtime::settings::{Table, human_duration, parsed, positive, secret, show, unshown};
use tinyurl_runtime::{Fallback, Setting};

use crate::rest_listener::ListenerLimits;

pub const LISTEN: Setting<SocketAddr> =
    config::listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 50052));
pub const ADMIN_LISTEN: Setting<SocketAddr> =
    config::admin_listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9092));

pub const DATABASE_URL: Setting<SecretString> =
    Setting::required_secret("TINYURL_DATABASE_URL", "Postgres primary");
pub const IDALLOC_URL: Setting<String> = Setting {
    name: "TINYURL_IDALLOC_URL",
    meaning: "idalloc gRPC endpoint, e.g. http://idalloc:50051",
    default: Fallback::Required,
    parse: parsed,
    show: unshown,
};
pub const IDALLOC_TOKEN: Setting<SecretString> = Setting {
    name: "TINYURL_IDALLOC_TOKEN",
    meaning: "service token presented to idalloc; one of idalloc's TINYURL_IDALLOC_TOKEN",
    default: Fallback::Required,
    // It travels in a header, so printable ASCII.
    parse: |raw| {
        if raw.is_empty() || !raw.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("must be one token of printable characters without spaces".to_owned());
        }
        secret(raw)
    },
    show: unshown,
};
pub const REDIS_URL: Setting<Option<SecretString>> = Setting::optional_secret(
    "TINYURL_REDIS_URL",
    "unset: no cache writes",
    "Redis for write-through and invalidations",
);
pub const RATE_LIMIT_PER_KEY: Setting<Option<Rate>> = Setting::optional(
    "TINYURL_RATE_LIMIT_PER_KEY",
    "unset: no limit",
    "calls per second per API key (e.g. 100/s), shared by every writer through Redis; a key's own rate overrides it",
);
pub const AUTH_FAILURE_RATE_PER_IP: Setting<Option<Rate>> = Setting {
    name: "TINYURL_AUTH_FAILURE_RATE_PER_IP",
    meaning: "failed authentications per second per client address (a second's worth at once); past it, unknown keys from there are refused without a lookup (\"off\" disables)",
    default: Fallback::Text("10/s"),
    parse: |raw| match raw {
        "off" => Ok(None),
        rate => rate.parse().map(Some),
    },
    show: unshown,
};
pub const KEY_LOOKUPS_PER_SECOND: Setting<u32> = Setting {
    name: "TINYURL_KEY_LOOKUPS_PER_SECOND",
    meaning: "database lookups per second (and at once) of API keys this writer does not know; working keys are known from the store and never wait for it",
    default: Fallback::Value(UNKNOWN_KEY_LOOKUPS_PER_SECOND),
    parse: |raw| {
        positive(raw).map_err(|_| {
            "must be at least 1: a key created since the last poll is looked up within it"
                .to_owned()
        })
    },
    show,
};
pub const KEY_CACHE_SIZE: Setting<usize> = Setting {
    name: "TINYURL_KEY_CACHE_SIZE",
    meaning: "API keys (resolved, and refused) remembered per writer",
    default: Fallback::Value(MAX_CACHED_KEYS),
    parse: positive,
    show,
};
pub const DAILY_CREATE_QUOTA: Setting<Option<u64>> = Setting {
    name: "TINYURL_DAILY_CREATE_QUOTA",
    meaning: "links one API key may create per UTC day, counted by every writer together",
    default: Fallback::Said(None, "unset: none"),
    parse: |raw| {
        positive(raw)
            .map(Some)
            .map_err(|_| "must be at least 1 (leave it unset for no quota)".to_owned())
    },
    show: unshown,
};
pub const BLOCKLIST_FILE: Setting<Option<PathBuf>> = Setting::optional(
    "TINYURL_BLOCKLIST_FILE",
    "none",
    "file of hosts refused as targets (`host`, `*.suffix`, one a line), reloaded when it changes",
);
pub const REST_LISTEN: Setting<Option<SocketAddr>> = Setting {
    name: "TINYURL_REST_LISTEN",
    meaning: "address of the public REST API (/api/v1/...; OpenAPI at /api/v1/openapi.json), e.g. 0.0.0.0:8081",
    default: Fallback::Said(None, "unset: no REST listener"),
    parse: |raw| {
        raw.parse()
            .map(Some)
            .map_err(|_| format!("{raw:?} is not an address like 0.0.0.0:8081"))
    },
    show: unshown,
};
pub const REST_HEADER_TIMEOUT: Setting<Duration> = Setting::millis(
    "TINYURL_REST_HEADER_TIMEOUT_MS",
    ListenerLimits::DEFAULT.header_read_timeout,
    "how long a REST client may take to send a request's headers",
);
pub const REST_REQUEST_TIMEOUT: Setting<Duration> = Setting::millis(
    "TINYURL_REST_REQUEST_TIMEOUT_MS",
    ListenerLimits::DEFAULT.request_timeout,
    "how long a whole REST request may take, body included (then 408)",
);
pub const REST_MAX_CONNECTIONS: Setting<usize> = Setting {
    name: "TINYURL_REST_MAX_CONNECTIONS",
    meaning: "open REST connections; more wait to be accepted",
    default: Fallback::Value(ListenerLimits::DEFAULT.max_connections),
    parse: positive,
    show,
};
pub const REST_MAX_CONNECTIONS_PER_ADDRESS: Setting<usize> = Setting {
    name: "TINYURL_REST_MAX_CONNECTIONS_PER_ADDRESS",
    meaning: "open REST connections per client address (an IPv6 /64 is one; trusted proxies are exempt); more are closed",
    default: Fallback::Value(ListenerLimits::DEFAULT.max_connections_per_address),
    parse: positive,
    show,
};
pub const REST_CORS_ORIGINS: Setting<Vec<http::HeaderValue>> = Setting {
    name: "TINYURL_REST_CORS_ORIGINS",
    meaning: "comma-separated origins browsers may call the REST API from (e.g. https://app.example), or *",
    default: Fallback::Said(Vec::new(), "unset: no CORS"),
    parse: cors_origins,
    show: unshown,
};
pub const CONSOLE: Setting<bool> = Setting::value(
    "TINYURL_CONSOLE",
    true,
    "serve the web console at /console/ on the REST listener",
);
pub const CONSOLE_IDLE_TIMEOUT: Setting<Duration> = Setting::human(
    "TINYURL_CONSOLE_IDLE_TIMEOUT",
    tinyurl_links::sessions::SessionTimeouts::DEFAULT.idle,
    "a console session unused this long ends (e.g. 30m)",
);
pub const CONSOLE_SESSION_LIFETIME: Setting<Duration> = Setting::human(
    "TINYURL_CONSOLE_SESSION_LIFETIME",
    tinyurl_links::sessions::SessionTimeouts::DEFAULT.absolute,
    "a console session this old ends however busy (e.g. 12h)",
);
pub const TRUSTED_PROXIES: Setting<TrustedProxies> = Setting {
    name: "TINYURL_TRUSTED_PROXIES",
    meaning: "CIDRs of the proxies in front of the REST API whose x-forwarded-for names the client",
    default: Fallback::Said(TrustedProxies::NONE, "none"),
    parse: TrustedProxies::parse,
    show: unshown,
};
pub const GRPC_TRUSTED_PROXIES: Setting<TrustedProxies> = Setting {
    name: "TINYURL_GRPC_TRUSTED_PROXIES",
    meaning: "CIDRs of gRPC proxies whose x-forwarded-for names the caller (gRPC callers are otherwise known by their own address)",
    default: Fallback::Said(TrustedProxies::NONE, "none"),
    parse: TrustedProxies::parse,
    show: unshown,
};
pub const CODE_SECRET: Setting<SecretString> = Setting {
    name: "TINYURL_CODE_SECRET",
    meaning: "key of the code permutation, at least 16 bytes, the same on every writer",
    default: Fallback::Required,
    parse: |raw| {
        let secret = secret(raw)?;
        if secret.expose_secret().len() < 16 {
            return Err("must be at least 16 bytes".to_owned());
        }
        Ok(secret)
    },
    show: unshown,
};
pub const CODE_MIN_LENGTH: Setting<usize> = Setting {
    name: "TINYURL_CODE_MIN_LENGTH",
    meaning: "shortest generated code (at least 3, like aliases)",
    default: Fallback::Value(tinyurl_domain::codec::DEFAULT_MIN_LENGTH),
    // Generated codes must have the shape of every link key, or the
    // redirect service would refuse them.
    parse: |raw| {
        let length: usize = parsed(raw)?;
        if length < tinyurl_domain::alias::MIN_ALIAS_LEN {
            return Err(format!(
                "must be at least {}: shorter codes are not link-shaped",
                tinyurl_domain::alias::MIN_ALIAS_LEN
            ));
        }
        Ok(length)
    },
    show,
};
pub const PUBLIC_BASE_URL: Setting<(String, String)> = Setting {
    name: "TINYURL_PUBLIC_BASE_URL",
    meaning: "base of short URLs; its host is refused as a target",
    default: Fallback::Text("http://localhost:8080"),
    parse: |raw| {
        let base = raw.trim_end_matches('/').to_owned();
        let host =
            url_host(&base).ok_or_else(|| format!("{base:?} is not an http(s) URL with a host"))?;
        Ok((base, host))
    },
    show: unshown,
};
pub const BLOCKED_HOSTS: Setting<Vec<String>> = Setting {
    name: "TINYURL_BLOCKED_HOSTS",
    meaning: "comma-separated hosts refused as targets, with their subdomains",
    default: Fallback::Said(Vec::new(), "none"),
    parse: |raw| {
        Ok(raw
            .split(',')
            .map(|host| host.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|host| !host.is_empty())
            .collect())
    },
    show: unshown,
};
pub const ALLOW_PRIVATE_TARGETS: Setting<bool> = Setting::value(
    "TINYURL_ALLOW_PRIVATE_TARGETS",
    false,
    "accept private, loopback and link-local targets",
);
pub const DB_TIMEOUT: Setting<Duration> = Setting::millis(
    "TINYURL_DB_TIMEOUT_MS",
    Duration::from_secs(2),
    "bound on every Postgres connect and query",
);
pub const DB_POOL_SIZE: Setting<usize> = Setting {
    name: "TINYURL_DB_POOL_SIZE",
    meaning: "Postgres connections per process",
    default: Fallback::Value(32),
    parse: positive,
    show,
};
pub const REDIS_TIMEOUT: Setting<Duration> = Setting::millis(
    "TINYURL_REDIS_TIMEOUT_MS",
    Duration::from_millis(250),
    "bound on every Redis command",
);
pub const CACHE_TTL: Setting<Duration> = Setting::seconds(
    "TINYURL_CACHE_TTL_SECS",
    Duration::from_secs(86_400),
    "TTL of write-through cache entries",
);
pub const IDALLOC_TIMEOUT: Setting<Duration> = Setting::millis(
    "TINYURL_IDALLOC_TIMEOUT_MS",
    Duration::from_secs(2),
    "bound on one LeaseRange call",
);
pub const LEASE_HORIZON: Setting<Duration> = Setting::seconds(
    "TINYURL_LEASE_HORIZON_SECS",
    Duration::from_secs(30),
    "the next ID range is fetched when the buffer would last less than this",
);
pub const CLICKS_CONSUMER: Setting<bool> = Setting::value(
    "TINYURL_CLICKS_CONSUMER",
    true,
    "fold click batches from the click stream into the analytics rollups",
);
pub const WEBHOOKS_DELIVER: Setting<bool> = Setting::value(
    "TINYURL_WEBHOOKS_DELIVER",
    true,
    "send webhook messages from the outbox (every writer may; the split deployment's Postgres store only)",
);
pub const WEBHOOKS_ALLOW_PRIVATE: Setting<bool> = Setting::value(
    "TINYURL_WEBHOOKS_ALLOW_PRIVATE",
    false,
    "webhook endpoints may be on private, loopback and link-local addresses (tests and internal use); otherwise such an endpoint is refused when registered and never connected to",
);
pub const WEBHOOK_TIMEOUT: Setting<Duration> = Setting::millis(
    "TINYURL_WEBHOOK_TIMEOUT_MS",
    Duration::from_secs(10),
    "bound on one webhook delivery (connect, send, answer)",
);
pub const WEBHOOK_RETRY_BASE: Setting<Duration> = Setting::millis(
    "TINYURL_WEBHOOK_RETRY_BASE_MS",
    Duration::from_secs(5),
    "wait after a webhook delivery's first failure, doubled after each next one (with a fifth of jitter either way)",
);
pub const WEBHOOK_RETRY_MAX: Setting<Duration> = Setting::millis(
    "TINYURL_WEBHOOK_RETRY_MAX_MS",
    Duration::from_secs(3600),
    "longest wait between two attempts at a webhook message",
);
pub const WEBHOOK_DISABLE_AFTER: Setting<Duration> = Setting::human(
    "TINYURL_WEBHOOK_DISABLE_AFTER",
    Duration::from_secs(24 * 3600),
    "a webhook endpoint that has failed this long without a success is disabled (its messages wait until its owner enables it)",
);
pub const CLICKS_REDIS_URL: Setting<Option<SecretString>> = Setting::optional_secret(
    "TINYURL_CLICKS_REDIS_URL",
    "TINYURL_REDIS_URL",
    "a separate Redis holding the click stream",
);
pub const CLICKS_MINUTE_RETENTION: Setting<Duration> = Setting::human(
    "TINYURL_CLICKS_MINUTE_RETENTION",
    Duration::from_secs(7 * 24 * 3600),
    "how long per-minute click rollups are kept",
);
pub const CLICKS_DAY_RETENTION: Setting<Option<Duration>> = Setting {
    name: "TINYURL_CLICKS_DAY_RETENTION",
    meaning: "how long per-day click rollups are kept (0 keeps them forever)",
    default: Fallback::Text("730days"),
    parse: |raw| human_duration(raw).map(|retention| Some(retention).filter(|r| !r.is_zero())),
    show: unshown,
};
pub const CLICKS_VALUES_PER_BUCKET: Setting<usize> = Setting {
    name: "TINYURL_CLICKS_VALUES_PER_BUCKET",
    meaning: "distinct referrers (countries, browsers, devices) kept per link, minute or day; clicks with more are counted as \"other\"",
    default: Fallback::Value(tinyurl_analytics::DEFAULT_VALUES_PER_BUCKET),
    parse: positive,
    show,
};
pub const CLICKS_CLAIM_IDLE: Setting<Duration> = Setting {
    name: "TINYURL_CLICKS_CLAIM_IDLE_MS",
    meaning: "a click batch pending this long with another consumer (dead or hung) is taken over (at least 100)",
    default: Fallback::Value(Duration::from_secs(30)),
    parse: |raw| {
        tinyurl_runtime::settings::millis(raw).map(|idle| idle.max(Duration::from_millis(100)))
    },
    show: tinyurl_runtime::settings::show_millis,
};
pub const IDEMPOTENCY_RETENTION: Setting<Duration> = Setting {
    name: "TINYURL_IDEMPOTENCY_RETENTION",
    meaning: "how long an idempotency key answers retries with its link; then it is forgotten",
    default: Fallback::Value(DEFAULT_IDEMPOTENCY_RETENTION),
    parse: |raw| {
        let retention = human_duration(raw)?;
        if retention.is_zero() {
            return Err("must be longer than zero: a retry has to find its key".to_owned());
        }
        Ok(retention)
    },
    show: tinyurl_runtime::settings::show_human,
};
pub const MIGRATE: Setting<bool> = Setting::value(
    "TINYURL_MIGRATE",
    true,
    "apply schema migrations at start; false (a role without DDL rights) checks the schema is current and refuses to start otherwise: run `tinyurl-writer migrate` as the migrator first",
);
pub const LINK_PARTITIONS: Setting<u16> = Setting {
    name: "TINYURL_LINK_PARTITIONS",
    meaning: "hash partitions of the links table, used once: by the migration that creates them",
    default: Fallback::Value(DEFAULT_LINK_PARTITIONS),
    parse: |raw| {
        let partitions: u16 = parsed(raw)?;
        if !(1..=1024).contains(&partitions) {
            return Err(format!("{partitions} is not between 1 and 1024"));
        }
        Ok(partitions)
    },
    show,
};

/// The writer's settings, in the order `--help` lists them.
pub const SETTINGS: Table = &[
    &LISTEN,
    &ADMIN_LISTEN,
    &DATABASE_URL,
    &IDALLOC_URL,
    &IDALLOC_TOKEN,
    &REDIS_URL,
    &RATE_LIMIT_PER_KEY,
    &AUTH_FAILURE_RATE_PER_IP,
    &KEY_LOOKUPS_PER_SECOND,
    &KEY_CACHE_SIZE,
    &DAILY_CREATE_QUOTA,
    &BLOCKLIST_FILE,
    &REST_LISTEN,
    &REST_HEADER_TIMEOUT,
    &REST_REQUEST_TIMEOUT,
    &REST_MAX_CONNECTIONS,
    &REST_MAX_CONNECTIONS_PER_ADDRESS,
    &REST_CORS_ORIGINS,
    &CONSOLE,
    &CONSOLE_IDLE_TIMEOUT,
    &CONSOLE_SESSION_LIFETIME,
    &TRUSTED_PROXIES,
    &GRPC_TRUSTED_PROXIES,
    &CODE_SECRET,
    &CODE_MIN_LENGTH,
    &PUBLIC_BASE_URL,
    &BLOCKED_HOSTS,
    &ALLOW_PRIVATE_TARGETS,
    &DB_TIMEOUT,
    &DB_POOL_SIZE,
    &REDIS_TIMEOUT,
    &CACHE_TTL,
    &IDALLOC_TIMEOUT,
    &LEASE_HORIZON,
    &CLICKS_CONSUMER,
    &CLICKS_REDIS_URL,
    &CLICKS_MINUTE_RETENTION,
    &CLICKS_DAY_RETENTION,
    &CLICKS_VALUES_PER_BUCKET,
    &CLICKS_CLAIM_IDLE,
    &WEBHOOKS_DELIVER,
    &WEBHOOKS_ALLOW_PRIVATE,
    &WEBHOOK_TIMEOUT,
    &WEBHOOK_RETRY_BASE,
    &WEBHOOK_RETRY_MAX,
    &WEBHOOK_DISABLE_AFTER,
    &IDEMPOTENCY_RETENTION,
    &MIGRATE,
    &LINK_PARTITIONS,
];

/// `*`, or origins like `https://app.example` (scheme, host, optional port).
fn cors_origins(raw: &str) -> Result<Vec<http::HeaderValue>, String> {
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
                .ok_or_else(|| format!("{origin:?} is not * or an origin like https://app.example"))
        })
        .collect()
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
