//! idalloc's configuration, read from the environment contract.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use tinyurl_runtime::config::{COMMON_ENV_VARS, render_env_help};
use tinyurl_runtime::{CommonConfig, ConfigError, Env, EnvVarDoc};

use crate::auth::{CallerPolicy, MIN_TOKEN_LEN};
use crate::lease::Namespace;

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 50051);
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9091);

/// Variables specific to idalloc.
pub const IDALLOC_ENV_VARS: &[EnvVarDoc] = &[
    EnvVarDoc {
        name: "TINYURL_DATABASE_URL",
        default: "(required)",
        meaning: "Postgres primary, e.g. postgres://user:pass@host:5432/tinyurl",
    },
    EnvVarDoc {
        name: "TINYURL_DB_TIMEOUT_MS",
        default: "2000",
        meaning: "bound on connecting to and querying Postgres; past it a lease fails UNAVAILABLE",
    },
    EnvVarDoc {
        name: "TINYURL_DB_POOL_SIZE",
        default: "16",
        meaning: "Postgres connections per process",
    },
    EnvVarDoc {
        name: "TINYURL_MIGRATE",
        default: "true",
        meaning: "apply schema migrations at start; false (a role without DDL rights) checks the schema is current and refuses to start otherwise: run `tinyurl-idalloc migrate` as the migrator first",
    },
    EnvVarDoc {
        name: "TINYURL_IDALLOC_TOKEN",
        default: "(required)",
        meaning: "service token callers must present (Bearer); at least 32 characters; several, comma-separated, during a rotation",
    },
    EnvVarDoc {
        name: "TINYURL_IDALLOC_NAMESPACES",
        default: "links",
        meaning: "comma-separated namespaces callers may lease; any other is PERMISSION_DENIED",
    },
    EnvVarDoc {
        name: "TINYURL_IDALLOC_MAX_LEASE",
        default: "10000000",
        meaning: "largest count one lease may ask for",
    },
    EnvVarDoc {
        name: "TINYURL_IDALLOC_FAILOVER_SKIP",
        default: "10000000000",
        meaning: "IDs every namespace skips when Postgres is found on a new timeline (failover)",
    },
    EnvVarDoc {
        name: "TINYURL_IDALLOC_LEASE_RETENTION_SECS",
        default: "86400",
        meaning: "how long request ids are remembered for retries",
    },
];

pub fn env_help() -> String {
    render_env_help(&[COMMON_ENV_VARS, IDALLOC_ENV_VARS])
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
        let common =
            CommonConfig::from_env(env, "tinyurl-idalloc", DEFAULT_LISTEN, DEFAULT_ADMIN_LISTEN)?;
        let max_lease: u64 = env.parse_or("TINYURL_IDALLOC_MAX_LEASE", 10_000_000)?;
        if max_lease == 0 || i64::try_from(max_lease).is_err() {
            return Err(ConfigError {
                variable: "TINYURL_IDALLOC_MAX_LEASE",
                reason: format!("must be between 1 and {}", i64::MAX),
            });
        }
        let pool_size: usize = env.parse_or("TINYURL_DB_POOL_SIZE", 16)?;
        if pool_size == 0 {
            return Err(ConfigError {
                variable: "TINYURL_DB_POOL_SIZE",
                reason: "must be at least 1".to_owned(),
            });
        }
        let failover_skip: i64 = env.parse_or("TINYURL_IDALLOC_FAILOVER_SKIP", 10_000_000_000)?;
        if u64::try_from(failover_skip).map_or(true, |skip| skip < max_lease) {
            return Err(ConfigError {
                variable: "TINYURL_IDALLOC_FAILOVER_SKIP",
                reason: format!("must be at least TINYURL_IDALLOC_MAX_LEASE ({max_lease})"),
            });
        }
        Ok(Self {
            common,
            failover_skip,
            database_url: env.required_secret("TINYURL_DATABASE_URL")?,
            policy: CallerPolicy::new(tokens(env)?, namespaces(env)?),
            db_timeout: env.millis_or("TINYURL_DB_TIMEOUT_MS", Duration::from_secs(2))?,
            pool_size,
            max_lease,
            lease_retention: Duration::from_secs(
                env.parse_or("TINYURL_IDALLOC_LEASE_RETENTION_SECS", 86_400)?,
            ),
            migrate: env.parse_or("TINYURL_MIGRATE", true)?,
        })
    }
}

fn tokens(env: &Env) -> Result<Vec<SecretString>, ConfigError> {
    const VARIABLE: &str = "TINYURL_IDALLOC_TOKEN";
    let configured = env.required_secret(VARIABLE)?;
    let tokens: Vec<SecretString> = configured
        .expose_secret()
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
        return Err(ConfigError {
            variable: VARIABLE,
            reason: format!(
                "each token must be at least {MIN_TOKEN_LEN} printable characters without spaces \
                 (e.g. openssl rand -hex 32)"
            ),
        });
    }
    Ok(tokens)
}

fn namespaces(env: &Env) -> Result<Vec<Namespace>, ConfigError> {
    const VARIABLE: &str = "TINYURL_IDALLOC_NAMESPACES";
    let namespaces = env
        .string_or(VARIABLE, "links")
        .split(',')
        .map(str::trim)
        .filter(|namespace| !namespace.is_empty())
        .map(Namespace::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ConfigError {
            variable: VARIABLE,
            reason: error.to_string(),
        })?;
    if namespaces.is_empty() {
        return Err(ConfigError {
            variable: VARIABLE,
            reason: "name at least one namespace".to_owned(),
        });
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
        for doc in IDALLOC_ENV_VARS {
            assert!(help.contains(doc.name));
        }
    }
}
