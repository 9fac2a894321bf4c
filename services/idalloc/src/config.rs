//! idalloc's configuration, read from the environment contract.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use tinyurl_runtime::config;
use tinyurl_runtime::settings::{
    Table, millis, parsed, positive, render_help, seconds, secret, show, show_millis, show_seconds,
    unshown,
};
use tinyurl_runtime::{CommonConfig, ConfigError, Env, Fallback, Setting};

use crate::auth::{CallerPolicy, MIN_TOKEN_LEN};
use crate::lease::Namespace;

pub const LISTEN: Setting<SocketAddr> = config::listen(SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    50051,
));
pub const ADMIN_LISTEN: Setting<SocketAddr> = config::admin_listen(SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    9091,
));

pub const DATABASE_URL: Setting<SecretString> = Setting {
    name: "TINYURL_DATABASE_URL",
    meaning: "Postgres primary, e.g. postgres://user:pass@host:5432/tinyurl",
    default: Fallback::Required,
    parse: secret,
    show: unshown,
};

pub const DB_TIMEOUT: Setting<Duration> = Setting {
    name: "TINYURL_DB_TIMEOUT_MS",
    meaning: "bound on connecting to and querying Postgres; past it a lease fails UNAVAILABLE",
    default: Fallback::Value(Duration::from_secs(2)),
    parse: millis,
    show: show_millis,
};

pub const DB_POOL_SIZE: Setting<usize> = Setting {
    name: "TINYURL_DB_POOL_SIZE",
    meaning: "Postgres connections per process",
    default: Fallback::Value(16),
    parse: positive,
    show,
};

pub const MIGRATE: Setting<bool> = Setting {
    name: "TINYURL_MIGRATE",
    meaning: "apply schema migrations at start; false (a role without DDL rights) checks the schema is current and refuses to start otherwise: run `tinyurl-idalloc migrate` as the migrator first",
    default: Fallback::Value(true),
    parse: parsed,
    show,
};

pub const TOKENS: Setting<Vec<SecretString>> = Setting {
    name: "TINYURL_IDALLOC_TOKEN",
    meaning: "service token callers must present (Bearer); at least 32 characters; several, comma-separated, during a rotation",
    default: Fallback::Required,
    parse: tokens,
    show: unshown,
};

pub const NAMESPACES: Setting<Vec<Namespace>> = Setting {
    name: "TINYURL_IDALLOC_NAMESPACES",
    meaning: "comma-separated namespaces callers may lease; any other is PERMISSION_DENIED",
    default: Fallback::Text("links"),
    parse: namespaces,
    show: unshown,
};

pub const MAX_LEASE: Setting<u64> = Setting {
    name: "TINYURL_IDALLOC_MAX_LEASE",
    meaning: "largest count one lease may ask for",
    default: Fallback::Value(10_000_000),
    parse: |raw| {
        let max: u64 = parsed(raw)?;
        if max == 0 || i64::try_from(max).is_err() {
            return Err(format!("must be between 1 and {}", i64::MAX));
        }
        Ok(max)
    },
    show,
};

pub const FAILOVER_SKIP: Setting<i64> = Setting {
    name: "TINYURL_IDALLOC_FAILOVER_SKIP",
    meaning: "IDs every namespace skips when Postgres is found on a new timeline (failover); at least TINYURL_IDALLOC_MAX_LEASE",
    default: Fallback::Value(10_000_000_000),
    parse: parsed,
    show,
};

pub const LEASE_RETENTION: Setting<Duration> = Setting {
    name: "TINYURL_IDALLOC_LEASE_RETENTION_SECS",
    meaning: "how long request ids are remembered for retries",
    default: Fallback::Value(Duration::from_secs(86_400)),
    parse: seconds,
    show: show_seconds,
};

/// idalloc's settings after the common ones.
pub const SETTINGS: Table = &[
    &LISTEN,
    &ADMIN_LISTEN,
    &DATABASE_URL,
    &DB_TIMEOUT,
    &DB_POOL_SIZE,
    &MIGRATE,
    &TOKENS,
    &NAMESPACES,
    &MAX_LEASE,
    &FAILOVER_SKIP,
    &LEASE_RETENTION,
];

pub fn env_help() -> String {
    render_help(&[SETTINGS, config::COMMON])
}

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub database_url: SecretString,
    pub db_timeout: Duration,
    pub pool_size: usize,
    pub max_lease: u64,
    /// IDs skipped per namespace after a failover; must exceed what can be
    /// leased on the old primary without reaching the promoted replica.
    pub failover_skip: i64,
    pub lease_retention: Duration,
    pub policy: CallerPolicy,
    /// Apply migrations at start (`TINYURL_MIGRATE`); otherwise check them.
    pub migrate: bool,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::with(env.read(&DATABASE_URL)?, env.read(&TOKENS)?, env)
    }

    /// idalloc's configuration with its database and the tokens it accepts
    /// given, and every other setting read from `env`.
    pub fn with(
        database_url: SecretString,
        tokens: Vec<SecretString>,
        env: &Env,
    ) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env, "tinyurl-idalloc", &LISTEN, &ADMIN_LISTEN)?;
        let max_lease = env.read(&MAX_LEASE)?;
        let failover_skip = env.read(&FAILOVER_SKIP)?;
        if u64::try_from(failover_skip).map_or(true, |skip| skip < max_lease) {
            return Err(ConfigError {
                variable: FAILOVER_SKIP.name,
                reason: format!("must be at least {} ({max_lease})", MAX_LEASE.name),
            });
        }
        Ok(Self {
            common,
            failover_skip,
            database_url,
            policy: CallerPolicy::new(tokens, env.read(&NAMESPACES)?),
            db_timeout: env.read(&DB_TIMEOUT)?,
            pool_size: env.read(&DB_POOL_SIZE)?,
            max_lease,
            lease_retention: env.read(&LEASE_RETENTION)?,
            migrate: env.read(&MIGRATE)?,
        })
    }
}

fn tokens(configured: &str) -> Result<Vec<SecretString>, String> {
    let tokens: Vec<SecretString> = configured
        .split(',')
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .map(|token| SecretString::from(token.to_owned()))
        .collect();
    let well_formed = |token: &SecretString| {
        let token = token.expose_secret();
        token.len() >= MIN_TOKEN_LEN && token.bytes().all(|byte| byte.is_ascii_graphic())
    };
    if tokens.is_empty() || !tokens.iter().all(well_formed) {
        return Err(format!(
            "each token must be at least {MIN_TOKEN_LEN} printable characters without spaces \
             (e.g. openssl rand -hex 32)"
        ));
    }
    Ok(tokens)
}

fn namespaces(configured: &str) -> Result<Vec<Namespace>, String> {
    let namespaces = configured
        .split(',')
        .map(str::trim)
        .filter(|namespace| !namespace.is_empty())
        .map(Namespace::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| error.to_string())?;
    if namespaces.is_empty() {
        return Err("name at least one namespace".to_owned());
    }
    Ok(namespaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_is_required() {
        let error = Config::from_env(&Env::default()).expect_err("must fail");
        assert_eq!(error.variable, "TINYURL_DATABASE_URL");
    }

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn short_or_missing_tokens_are_refused() {
        for token in [None, Some("short"), Some(" , ")] {
            let mut pairs = vec![("TINYURL_DATABASE_URL", "postgres://localhost/x")];
            pairs.extend(token.map(|token| ("TINYURL_IDALLOC_TOKEN", token)));
            let error = Config::from_env(&Env::from_pairs(pairs)).expect_err("must fail");
            assert_eq!(error.variable, "TINYURL_IDALLOC_TOKEN", "{token:?}");
        }
    }

    #[test]
    fn namespaces_are_validated() {
        let env = Env::from_pairs([
            ("TINYURL_DATABASE_URL", "postgres://localhost/x"),
            ("TINYURL_IDALLOC_TOKEN", TOKEN),
            ("TINYURL_IDALLOC_NAMESPACES", "links,Bad Name"),
        ]);
        let error = Config::from_env(&env).expect_err("must fail");
        assert_eq!(error.variable, "TINYURL_IDALLOC_NAMESPACES");
    }

    #[test]
    fn zero_max_lease_is_refused() {
        let env = Env::from_pairs([
            ("TINYURL_DATABASE_URL", "postgres://localhost/x"),
            ("TINYURL_IDALLOC_TOKEN", TOKEN),
            ("TINYURL_IDALLOC_MAX_LEASE", "0"),
        ]);
        let error = Config::from_env(&env).expect_err("must fail");
        assert_eq!(error.variable, "TINYURL_IDALLOC_MAX_LEASE");
    }

    #[test]
    fn help_names_every_variable() {
        let help = env_help();
        for setting in SETTINGS {
            assert!(help.contains(setting.name()));
        }
    }
}
