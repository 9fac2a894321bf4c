//! Typed configuration from environment variables (the contract in
//! ARCHITECTURE.md). The environment is passed in as a map, so tests build any
//! configuration without touching process state. Every variable a binary reads
//! is described once, in an [`EnvVarDoc`] table that also renders its `--help`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

/// The environment a service is configured from.
#[derive(Debug, Clone, Default)]
pub struct Env {
    variables: HashMap<String, String>,
}

/// A variable that is set but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl Env {
    /// The environment of this process.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            variables: pairs
                .into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        }
    }

    /// The value of `name`, treating an empty value as unset (as shells and
    /// compose files commonly produce `VAR=` for "not configured").
    pub fn get(&self, name: &str) -> Option<&str> {
        self.variables
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty())
    }

    pub fn string_or(&self, name: &'static str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    pub fn required(&self, name: &'static str) -> Result<&str, ConfigError> {
        self.get(name).ok_or(ConfigError {
            variable: name,
            reason: "must be set".to_owned(),
        })
    }

    /// Parses `name` with `FromStr`, or returns `default` when it is unset.
    pub fn parse_or<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|error: T::Err| ConfigError {
                variable: name,
                reason: format!("cannot parse {raw:?}: {error}"),
            }),
        }
    }

    pub fn socket_addr_or(
        &self,
        name: &'static str,
        default: SocketAddr,
    ) -> Result<SocketAddr, ConfigError> {
        self.parse_or(name, default)
    }

    /// A duration written in milliseconds (`TINYURL_*_MS` variables).
    pub fn millis_or(
        &self,
        name: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let millis: u64 =
            self.parse_or(name, u64::try_from(default.as_millis()).unwrap_or(u64::MAX))?;
        Ok(Duration::from_millis(millis))
    }

    /// A value that must never be printed (passwords, keys, URLs with credentials).
    pub fn secret(&self, name: &'static str) -> Option<SecretString> {
        self.get(name)
            .map(|value| SecretString::from(value.to_owned()))
    }

    pub fn required_secret(&self, name: &'static str) -> Result<SecretString, ConfigError> {
        self.required(name)
            .map(|value| SecretString::from(value.to_owned()))
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable, for terminals.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" | "text" => Ok(Self::Pretty),
            other => Err(format!("expected json or pretty, got {other:?}")),
        }
    }
}

/// Settings every service has.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// Main listener: HTTP for redirect, gRPC for writer and idalloc.
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin_listen: SocketAddr,
    pub log_filter: String,
    pub log_format: LogFormat,
    /// OTLP/gRPC collector; traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// Internal TLS: certificate, key and CA, or `None` (plaintext).
    pub tls: Option<TlsFiles>,
}

impl CommonConfig {
    pub fn from_env(
        env: &Env,
        service_name: &str,
        default_listen: SocketAddr,
        default_admin_listen: SocketAddr,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            listen: env.socket_addr_or("TINYURL_LISTEN", default_listen)?,
            admin_listen: env.socket_addr_or("TINYURL_ADMIN_LISTEN", default_admin_listen)?,
            log_filter: env.string_or("RUST_LOG", "info"),
            log_format: env.parse_or("TINYURL_LOG_FORMAT", LogFormat::Pretty)?,
            otlp_endpoint: env.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(str::to_owned),
            service_name: env.string_or("OTEL_SERVICE_NAME", service_name),
            drain_timeout: env.millis_or("TINYURL_DRAIN_TIMEOUT_MS", Duration::from_secs(20))?,
            tls: TlsFiles::from_env(env)?,
        })
    }
}

/// One documented environment variable, for `--help`.
#[derive(Debug, Clone, Copy)]
pub struct EnvVarDoc {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Variables read by [`CommonConfig::from_env`].
pub const COMMON_ENV_VARS: &[EnvVarDoc] = &[
    EnvVarDoc {
        name: "TINYURL_LISTEN",
        default: "(per service)",
        meaning: "main listen address",
    },
    EnvVarDoc {
        name: "TINYURL_ADMIN_LISTEN",
        default: "(per service)",
        meaning: "address of /metrics, /healthz and /readyz",
    },
    EnvVarDoc {
        name: "TINYURL_DRAIN_TIMEOUT_MS",
        default: "20000",
        meaning: "time allowed for in-flight requests after SIGTERM",
    },
    EnvVarDoc {
        name: "TINYURL_INTERNAL_TLS_CERT",
        default: "(unset: plaintext inside)",
        meaning: "PEM certificate (chain) this process presents on gRPC, reloaded when the file changes",
    },
    EnvVarDoc {
        name: "TINYURL_INTERNAL_TLS_KEY",
        default: "(with the certificate)",
        meaning: "PEM private key of that certificate",
    },
    EnvVarDoc {
        name: "TINYURL_INTERNAL_TLS_CA",
        default: "(with the certificate)",
        meaning: "PEM CA that gRPC peers, Postgres (sslmode=require) and Redis (rediss://) are verified against",
    },
    EnvVarDoc {
        name: "RUST_LOG",
        default: "info",
        meaning: "log filter (tracing-subscriber EnvFilter syntax)",
    },
    EnvVarDoc {
        name: "TINYURL_LOG_FORMAT",
        default: "pretty",
        meaning: "json or pretty",
    },
    EnvVarDoc {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: "(unset: no export)",
        meaning: "OTLP/gRPC endpoint that traces are exported to",
    },
    EnvVarDoc {
        name: "OTEL_SERVICE_NAME",
        default: "(binary name)",
        meaning: "service name attached to exported traces",
    },
];

/// Renders variable tables as the "Environment" section of `--help`.
pub fn render_env_help(tables: &[&[EnvVarDoc]]) -> String {
    let width = tables
        .iter()
        .flat_map(|table| table.iter())
        .map(|doc| doc.name.len())
        .max()
        .unwrap_or(0);
    let mut help = String::from("Environment:\n");
    for doc in tables.iter().flat_map(|table| table.iter()) {
        // Writing to a String cannot fail.
        let _ = writeln!(
            help,
            "  {:width$}  {} [default: {}]",
            doc.name, doc.meaning, doc.default
        );
    }
    help
}

/// Where the process's certificate, key and CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// All three variables, or none (TLS off); one or two is a mistake.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        const NAMES: [&str; 3] = [
            "TINYURL_INTERNAL_TLS_CERT",
            "TINYURL_INTERNAL_TLS_KEY",
            "TINYURL_INTERNAL_TLS_CA",
        ];
        let values = NAMES.map(|name| env.get(name).filter(|value| !value.is_empty()));
        match values {
            [None, None, None] => Ok(None),
            [Some(cert), Some(key), Some(ca)] => Ok(Some(Self {
                cert: cert.into(),
                key: key.into(),
                ca: ca.into(),
            })),
            _ => {
                let missing = NAMES
                    .iter()
                    .zip(values)
                    .find_map(|(name, value)| value.is_none().then_some(*name))
                    .unwrap_or(NAMES[0]);
                Err(ConfigError {
                    variable: missing,
                    reason: "internal TLS needs all of TINYURL_INTERNAL_TLS_CERT, \
                             TINYURL_INTERNAL_TLS_KEY and TINYURL_INTERNAL_TLS_CA"
                        .to_owned(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn addr(raw: &str) -> SocketAddr {
        raw.parse().expect("valid test address")
    }

    #[test]
    fn environment_overrides_defaults() {
        let env = Env::from_pairs([
            ("TINYURL_LISTEN", "127.0.0.1:9000"),
            ("TINYURL_LOG_FORMAT", "JSON"),
            ("TINYURL_ADMIN_LISTEN", ""),
        ]);
        let config = CommonConfig::from_env(&env, "svc", addr("0.0.0.0:1"), addr("0.0.0.0:2"))
            .expect("valid config");
        assert_eq!(config.listen, addr("127.0.0.1:9000"));
        assert_eq!(config.admin_listen, addr("0.0.0.0:2"), "empty means unset");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.service_name, "svc");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let env = Env::from_pairs([("TINYURL_LISTEN", "not-an-address")]);
        let error = CommonConfig::from_env(&env, "svc", addr("0.0.0.0:1"), addr("0.0.0.0:2"))
            .expect_err("must reject");
        assert_eq!(error.variable, "TINYURL_LISTEN");
        assert!(error.to_string().contains("not-an-address"));
    }

    #[test]
    fn secrets_never_print() {
        let env = Env::from_pairs([("TINYURL_DATABASE_URL", "postgres://u:hunter2@db/x")]);
        let secret = env.secret("TINYURL_DATABASE_URL").expect("set");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.expose_secret(), "postgres://u:hunter2@db/x");
    }

    #[test]
    fn help_lists_every_variable() {
        let help = render_env_help(&[COMMON_ENV_VARS]);
        for doc in COMMON_ENV_VARS {
            assert!(help.contains(doc.name), "{} missing from help", doc.name);
        }
    }
}
