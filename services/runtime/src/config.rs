//! What every service configures alike: its listeners, logging, tracing,
//! drain time and internal TLS, each declared once as a [`Setting`] (see
//! [`crate::settings`]), and [`CommonConfig`] read from them.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[cfg(test)]
use crate::settings::render_help;
use crate::settings::{ConfigError, Env};
use crate::settings::{
    Fallback, Setting, Table, millis, parsed, parsed_some, show, show_millis, text, text_some,
    unshown,
};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable, for terminals.
    Pretty,
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Json => "json",
            Self::Pretty => "pretty",
        })
    }
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
    /// `listen` and `admin` are the service's own declarations of
    /// `TINYURL_LISTEN` and `TINYURL_ADMIN_LISTEN` ([`listen`], [`admin_listen`]).
    pub fn from_env(
        env: &Env,
        service_name: &str,
        listen: &Setting<SocketAddr>,
        admin: &Setting<SocketAddr>,
    ) -> Result<Self, ConfigError> {
        let named = env.read(&SERVICE_NAME)?;
        Ok(Self {
            listen: env.read(listen)?,
            admin_listen: env.read(admin)?,
            log_filter: env.read(&LOG_FILTER)?.into_owned(),
            log_format: env.read(&LOG_FORMAT)?,
            otlp_endpoint: env.read(&OTLP_ENDPOINT)?,
            service_name: if named.is_empty() {
                service_name.to_owned()
            } else {
                named
            },
            drain_timeout: env.read(&DRAIN_TIMEOUT)?,
            tls: TlsFiles::from_env(env)?,
        })
    }
}

/// A service's `TINYURL_LISTEN`, with its default.
pub const fn listen(default: SocketAddr) -> Setting<SocketAddr> {
    Setting {
        name: "TINYURL_LISTEN",
        meaning: "main listen address",
        default: Fallback::Value(default),
        parse: parsed,
        show,
    }
}

/// A service's `TINYURL_ADMIN_LISTEN`, with its default.
pub const fn admin_listen(default: SocketAddr) -> Setting<SocketAddr> {
    Setting {
        name: "TINYURL_ADMIN_LISTEN",
        meaning: "address of /metrics, /healthz and /readyz",
        default: Fallback::Value(default),
        parse: parsed,
        show,
    }
}

pub const DRAIN_TIMEOUT: Setting<Duration> = Setting {
    name: "TINYURL_DRAIN_TIMEOUT_MS",
    meaning: "time allowed for in-flight requests after SIGTERM",
    default: Fallback::Value(Duration::from_secs(20)),
    parse: millis,
    show: show_millis,
};

pub const TLS_CERT: Setting<Option<PathBuf>> = Setting {
    name: "TINYURL_INTERNAL_TLS_CERT",
    meaning: "PEM certificate (chain) this process presents on gRPC, reloaded when the file changes",
    default: Fallback::Said(None, "unset: plaintext inside"),
    parse: parsed_some,
    show: unshown,
};

pub const TLS_KEY: Setting<Option<PathBuf>> = Setting {
    name: "TINYURL_INTERNAL_TLS_KEY",
    meaning: "PEM private key of that certificate",
    default: Fallback::Said(None, "with the certificate"),
    parse: parsed_some,
    show: unshown,
};

pub const TLS_CA: Setting<Option<PathBuf>> = Setting {
    name: "TINYURL_INTERNAL_TLS_CA",
    meaning: "PEM CA that gRPC peers, Postgres (sslmode=require) and Redis (rediss://) are verified against",
    default: Fallback::Said(None, "with the certificate"),
    parse: parsed_some,
    show: unshown,
};

pub const LOG_FILTER: Setting<Cow<'static, str>> = Setting {
    name: "RUST_LOG",
    meaning: "log filter (tracing-subscriber EnvFilter syntax)",
    default: Fallback::Value(Cow::Borrowed("info")),
    parse: |raw| Ok(Cow::Owned(raw.to_owned())),
    show,
};

pub const LOG_FORMAT: Setting<LogFormat> = Setting {
    name: "TINYURL_LOG_FORMAT",
    meaning: "json or pretty",
    default: Fallback::Value(LogFormat::Pretty),
    parse: parsed,
    show,
};

pub const OTLP_ENDPOINT: Setting<Option<String>> = Setting {
    name: "OTEL_EXPORTER_OTLP_ENDPOINT",
    meaning: "OTLP/gRPC endpoint that traces are exported to",
    default: Fallback::Said(None, "unset: no export"),
    parse: text_some,
    show: unshown,
};

pub const SERVICE_NAME: Setting<String> = Setting {
    name: "OTEL_SERVICE_NAME",
    meaning: "service name attached to exported traces",
    default: Fallback::Said(String::new(), "binary name"),
    parse: text,
    show,
};

/// The settings every service reads after its two listeners.
pub const COMMON: Table = &[
    &DRAIN_TIMEOUT,
    &TLS_CERT,
    &TLS_KEY,
    &TLS_CA,
    &LOG_FILTER,
    &LOG_FORMAT,
    &OTLP_ENDPOINT,
    &SERVICE_NAME,
];

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
        let settings = [&TLS_CERT, &TLS_KEY, &TLS_CA];
        let [cert, key, ca] = [
            env.read(&TLS_CERT)?,
            env.read(&TLS_KEY)?,
            env.read(&TLS_CA)?,
        ];
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(Self { cert, key, ca })),
            (cert, key, ca) => {
                let missing = [cert.is_none(), key.is_none(), ca.is_none()]
                    .iter()
                    .zip(settings)
                    .find_map(|(missing, setting)| missing.then_some(setting.name))
                    .unwrap_or(TLS_CERT.name);
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
    use secrecy::{ExposeSecret, SecretString};

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
        let config = CommonConfig::from_env(
            &env,
            "svc",
            &listen(addr("0.0.0.0:1")),
            &admin_listen(addr("0.0.0.0:2")),
        )
        .expect("valid config");
        assert_eq!(config.listen, addr("127.0.0.1:9000"));
        assert_eq!(config.admin_listen, addr("0.0.0.0:2"), "empty means unset");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.service_name, "svc");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let env = Env::from_pairs([("TINYURL_LISTEN", "not-an-address")]);
        let error = CommonConfig::from_env(
            &env,
            "svc",
            &listen(addr("0.0.0.0:1")),
            &admin_listen(addr("0.0.0.0:2")),
        )
        .expect_err("must reject");
        assert_eq!(error.variable, "TINYURL_LISTEN");
        assert!(error.to_string().contains("not-an-address"));
    }

    #[test]
    fn secrets_never_print() {
        const URL: Setting<SecretString> =
            Setting::required_secret("TINYURL_DATABASE_URL", "a database");
        let env = Env::from_pairs([("TINYURL_DATABASE_URL", "postgres://u:hunter2@db/x")]);
        let secret = env.read(&URL).expect("set");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.expose_secret(), "postgres://u:hunter2@db/x");
    }

    #[test]
    fn help_lists_every_variable() {
        let help = render_help(&[COMMON]);
        for setting in COMMON {
            assert!(
                help.contains(setting.name()),
                "{} missing from help",
                setting.name()
            );
        }
        assert!(help.contains("RUST_LOG"), "{help}");
    }

    #[test]
    fn unset_log_settings_are_their_defaults() {
        let config = CommonConfig::from_env(
            &Env::default(),
            "svc",
            &listen(addr("0.0.0.0:1")),
            &admin_listen(addr("0.0.0.0:2")),
        )
        .expect("valid config");
        assert_eq!(config.log_filter, "info");
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.drain_timeout, Duration::from_secs(20));
        assert!(config.tls.is_none() && config.otlp_endpoint.is_none());
    }
}
