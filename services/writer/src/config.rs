//! The writer's configuration, read from its settings ([`crate::settings`]).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use secrecy::SecretString;
use tinyurl_domain::TargetPolicy;
use tinyurl_links::auth::KeyCacheSettings;
use tinyurl_links::store::Layout;
use tinyurl_runtime::config;
use tinyurl_runtime::settings::render_help;
use tinyurl_runtime::{CommonConfig, ConfigError, Env};

use crate::rest_listener::ListenerLimits;
use crate::settings::*;

pub fn env_help() -> String {
    render_help(&[SETTINGS, config::COMMON])
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
    /// Serve the web console on the REST listener.
    pub console: bool,
    pub console_sessions: tinyurl_links::sessions::SessionTimeouts,
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
    /// Whether this writer sends webhook messages, and how.
    pub webhooks_deliver: bool,
    pub webhooks: tinyurl_links::webhooks::deliver::DeliverySettings,
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
    Ok(Layout {
        idempotency_retention: env.read(&IDEMPOTENCY_RETENTION)?,
        link_partitions: env.read(&LINK_PARTITIONS)?,
    })
}

/// What a writer cannot run without, given in code (`tinyurl up`) or read
/// from the environment ([`Config::from_env`]).
#[derive(Debug, Clone)]
pub struct Required {
    pub database_url: SecretString,
    pub idalloc_url: String,
    pub idalloc_token: SecretString,
    pub code_secret: SecretString,
}

impl Required {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            database_url: env.read(&DATABASE_URL)?,
            idalloc_url: env.read(&IDALLOC_URL)?,
            idalloc_token: env.read(&IDALLOC_TOKEN)?,
            code_secret: env.read(&CODE_SECRET)?,
        })
    }
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::with(Required::from_env(env)?, env)
    }

    /// The writer's configuration with `required` given and every other
    /// setting read from `env` (its default when unset there).
    pub fn with(required: Required, env: &Env) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env, "tinyurl-writer", &LISTEN, &ADMIN_LISTEN)?;
        let (public_base_url, own_host) = env.read(&PUBLIC_BASE_URL)?;
        let Required {
            database_url,
            idalloc_url,
            idalloc_token,
            code_secret,
        } = required;
        Ok(Self {
            common,
            database_url,
            idalloc_url,
            idalloc_token,
            redis_url: env.read(&REDIS_URL)?,
            auth_failure_rate_per_ip: env.read(&AUTH_FAILURE_RATE_PER_IP)?,
            key_cache: KeyCacheSettings {
                unknown_lookups_per_second: NonZeroU32::new(env.read(&KEY_LOOKUPS_PER_SECOND)?)
                    .unwrap_or(NonZeroU32::MIN),
                capacity: env.read(&KEY_CACHE_SIZE)?,
            },
            grpc_trusted_proxies: env.read(&GRPC_TRUSTED_PROXIES)?,
            trusted_proxies: env.read(&TRUSTED_PROXIES)?,
            rest_listen: env.read(&REST_LISTEN)?,
            rest_limits: ListenerLimits {
                header_read_timeout: env.read(&REST_HEADER_TIMEOUT)?,
                request_timeout: env.read(&REST_REQUEST_TIMEOUT)?,
                max_connections: env.read(&REST_MAX_CONNECTIONS)?,
                max_connections_per_address: env.read(&REST_MAX_CONNECTIONS_PER_ADDRESS)?,
            },
            rest_cors_origins: env.read(&REST_CORS_ORIGINS)?,
            console: env.read(&CONSOLE)?,
            console_sessions: tinyurl_links::sessions::SessionTimeouts {
                idle: env.read(&CONSOLE_IDLE_TIMEOUT)?,
                absolute: env.read(&CONSOLE_SESSION_LIFETIME)?,
            },
            daily_create_quota: env.read(&DAILY_CREATE_QUOTA)?,
            rate_limit_per_key: env.read(&RATE_LIMIT_PER_KEY)?,
            code_secret,
            code_min_length: env.read(&CODE_MIN_LENGTH)?,
            public_base_url,
            target_policy: TargetPolicy {
                own_host: Some(own_host),
                blocked_hosts: env.read(&BLOCKED_HOSTS)?,
                allow_private_addresses: env.read(&ALLOW_PRIVATE_TARGETS)?,
                ..TargetPolicy::default()
            },
            blocklist_file: env.read(&BLOCKLIST_FILE)?,
            db_timeout: env.read(&DB_TIMEOUT)?,
            pool_size: env.read(&DB_POOL_SIZE)?,
            redis_timeout: env.read(&REDIS_TIMEOUT)?,
            cache_ttl: env.read(&CACHE_TTL)?,
            idalloc_timeout: env.read(&IDALLOC_TIMEOUT)?,
            lease_horizon: env.read(&LEASE_HORIZON)?,
            clicks_consumer: env.read(&CLICKS_CONSUMER)?,
            webhooks_deliver: env.read(&WEBHOOKS_DELIVER)?,
            webhooks: tinyurl_links::webhooks::deliver::DeliverySettings {
                timeout: env.read(&WEBHOOK_TIMEOUT)?,
                retry_base: env.read(&WEBHOOK_RETRY_BASE)?,
                retry_max: env.read(&WEBHOOK_RETRY_MAX)?,
                disable_after: env.read(&WEBHOOK_DISABLE_AFTER)?,
                allow_private: env.read(&WEBHOOKS_ALLOW_PRIVATE)?,
            },
            clicks_redis_url: env.read(&CLICKS_REDIS_URL)?,
            clicks_minute_retention: env.read(&CLICKS_MINUTE_RETENTION)?,
            clicks_day_retention: env.read(&CLICKS_DAY_RETENTION)?,
            clicks_values_per_bucket: env.read(&CLICKS_VALUES_PER_BUCKET)?,
            clicks_claim_idle: env.read(&CLICKS_CLAIM_IDLE)?,
            layout: layout_from_env(env)?,
            migrate: env.read(&MIGRATE)?,
        })
    }

    /// Short URLs start with `base` (as `TINYURL_PUBLIC_BASE_URL` says), and
    /// its host is refused as a target.
    pub fn set_public_base_url(&mut self, base: &str) -> Result<(), ConfigError> {
        let (base, host) = (PUBLIC_BASE_URL.parse)(base.trim()).map_err(|reason| ConfigError {
            variable: PUBLIC_BASE_URL.name,
            reason,
        })?;
        self.public_base_url = base;
        self.target_policy.own_host = Some(host);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required() -> Vec<(&'static str, &'static str)> {
        vec![
            ("TINYURL_DATABASE_URL", "postgres://localhost/x"),
            ("TINYURL_IDALLOC_URL", "http://idalloc:50051"),
            ("TINYURL_IDALLOC_TOKEN", "0123456789abcdef0123456789abcdef"),
            ("TINYURL_CODE_SECRET", "0123456789abcdef"),
        ]
    }

    #[test]
    fn every_default_comes_from_its_setting() {
        let config = Config::from_env(&Env::from_pairs(required())).expect("valid");
        assert_eq!(config.common.listen.port(), 50052);
        assert_eq!(config.pool_size, 32);
        assert_eq!(config.db_timeout, Duration::from_secs(2));
        assert_eq!(config.rest_listen, None);
        assert_eq!(config.rest_limits.max_connections, 4_096);
        assert_eq!(
            config.clicks_day_retention,
            Some(Duration::from_secs(730 * 86_400))
        );
        assert_eq!(
            config.auth_failure_rate_per_ip.map(|rate| rate.get()),
            Some(10)
        );
        assert_eq!(config.public_base_url, "http://localhost:8080");
        assert_eq!(config.target_policy.own_host.as_deref(), Some("localhost"));
        assert!(config.migrate && config.clicks_consumer);
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (name, value) in [
            ("TINYURL_CODE_SECRET", "short"),
            ("TINYURL_IDALLOC_TOKEN", "has space"),
            ("TINYURL_CODE_MIN_LENGTH", "2"),
            ("TINYURL_PUBLIC_BASE_URL", "ftp://x"),
            ("TINYURL_REST_MAX_CONNECTIONS", "0"),
            ("TINYURL_KEY_LOOKUPS_PER_SECOND", "0"),
            ("TINYURL_DAILY_CREATE_QUOTA", "0"),
            ("TINYURL_IDEMPOTENCY_RETENTION", "0s"),
            ("TINYURL_LINK_PARTITIONS", "2000"),
            ("TINYURL_REST_CORS_ORIGINS", "https://a.example/path"),
            ("TINYURL_REST_LISTEN", "nowhere"),
        ] {
            let mut pairs = required();
            pairs.retain(|(set, _)| *set != name);
            pairs.push((name, value));
            let error = Config::from_env(&Env::from_pairs(pairs)).expect_err(name);
            assert_eq!(error.variable, name, "{value}");
        }
        let missing = Config::from_env(&Env::default()).expect_err("nothing set");
        assert_eq!(missing.variable, "TINYURL_DATABASE_URL");
    }

    #[test]
    fn a_config_built_in_code_keeps_its_base_url_and_host_together() {
        let mut config = Config::from_env(&Env::from_pairs(required())).expect("valid");
        config
            .set_public_base_url("https://Sho.rt/")
            .expect("a base URL");
        assert_eq!(config.public_base_url, "https://Sho.rt");
        assert_eq!(config.target_policy.own_host.as_deref(), Some("sho.rt"));
        assert!(config.set_public_base_url("sho.rt").is_err());
    }
}
