//! The command-line client: one gRPC connection to a writer, the API key on
//! every call, and the server's own error reasons passed through.

use std::time::{Duration, SystemTime};

use tinyurl_proto::v1::links_client::LinksClient;
use tinyurl_proto::v1::{Link, RedirectType};
use tinyurl_runtime::grpc::Bearer;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A failed command and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub exit_code: u8,
    /// What to print; `None` when the command's output already said it.
    pub message: Option<String>,
}

impl Failure {
    pub fn new(exit_code: u8, message: impl Into<String>) -> Self {
        Self {
            exit_code,
            message: Some(message.into()),
        }
    }

    /// A failure the command's own output already reports (an import's
    /// summary with rejected rows).
    pub fn reported(exit_code: u8) -> Self {
        Self {
            exit_code,
            message: None,
        }
    }

    /// A usage problem found before anything was sent.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::new(exit::FAILURE, format!("{error:#}"))
    }
}

/// Exit codes, as documented in docs/api.md.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const REJECTED: u8 = 4;
    pub const UNAVAILABLE: u8 = 5;
    pub const UNAUTHENTICATED: u8 = 6;
}

/// The server's reason for a failed call, with the field at fault when it
/// names one.
pub fn status_failure(status: &tonic::Status) -> Failure {
    use tonic_types::StatusExt as _;
    let exit_code = tinyurl_runtime::ErrorKind::of_code(status.code()).exit_code();
    let field = status
        .get_details_bad_request()
        .and_then(|details| details.field_violations.first().map(|v| v.field.clone()));
    let message = match field {
        Some(field) if !status.message().starts_with(&field) => {
            format!("{} (field {field})", status.message())
        }
        _ => status.message().to_owned(),
    };
    Failure::new(exit_code, message)
}

#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The writer's gRPC endpoint.
    #[arg(
        long,
        env = "TINYURL_SERVER",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    pub server: String,
    /// API key (printed by `tinyurl up` on first start, or made with
    /// `tinyurl api-key create`).
    #[arg(long, env = "TINYURL_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Bound on connecting and on each call, in seconds.
    #[arg(long, default_value_t = 10, global = true)]
    pub timeout_secs: u64,
}

pub type Links = LinksClient<InterceptedService<Channel, Bearer>>;

impl Connection {
    /// A client for the writer; connects lazily, so the first call reports
    /// an unreachable server with the server's address.
    pub fn links(&self) -> Result<Links, Failure> {
        let key = self.api_key.as_deref().map(str::trim).unwrap_or_default();
        if key.is_empty() {
            return Err(Failure::new(
                exit::UNAUTHENTICATED,
                "no API key: pass --api-key or set TINYURL_API_KEY",
            ));
        }
        let bearer = Bearer::new(key)
            .ok_or_else(|| Failure::usage("the API key holds characters a header cannot carry"))?;
        let timeout = Duration::from_secs(self.timeout_secs.max(1));
        let endpoint = tonic::transport::Endpoint::from_shared(self.server.clone())
            .map_err(|_| Failure::usage(format!("--server {:?} is not a valid URL", self.server)))?
            .connect_timeout(timeout)
            .timeout(timeout);
        // A writer with internal TLS is reached with the same three
        // variables the services read (the CA, and a certificate to offer).
        let tls = tinyurl_runtime::tls::TlsFiles::from_env(&tinyurl_runtime::Env::from_process())
            .map_err(|error| Failure::usage(error.to_string()))?
            .map(|files| tinyurl_runtime::tls::InternalTls::load(&files))
            .transpose()
            .map_err(|error| Failure::usage(format!("{error:#}")))?;
        let channel = tinyurl_runtime::tls::grpc_channel(vec![endpoint], tls.as_ref())?;
        Ok(LinksClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(64 * 1024 * 1024))
    }

    /// The failure of a call; one that never reached the writer (a status
    /// made on this side, carrying the transport error as its source) names
    /// the server.
    pub fn call_failure(&self, status: &tonic::Status) -> Failure {
        if std::error::Error::source(status).is_some() {
            return Failure::new(
                exit::UNAVAILABLE,
                format!(
                    "cannot reach the writer at {}: {}",
                    self.server,
                    status.message()
                ),
            );
        }
        status_failure(status)
    }
}

/// `--expires`: an RFC 3339 time (`2027-01-31T12:00:00Z`) or a duration from
/// now (`90m`, `12h`, `30d`).
pub fn parse_expiry(text: &str) -> Result<SystemTime, String> {
    tinyurl_links::import::parse_expiry(text, SystemTime::now())
}

pub fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

pub fn redirect_type(status: u16) -> Result<RedirectType, String> {
    match status {
        301 => Ok(RedirectType::RedirectType301),
        302 => Ok(RedirectType::RedirectType302),
        307 => Ok(RedirectType::RedirectType307),
        308 => Ok(RedirectType::RedirectType308),
        other => Err(format!("--status {other}: must be 301, 302, 307 or 308")),
    }
}

/// A link as the client prints it.
#[derive(Debug, serde::Serialize)]
pub struct LinkView {
    pub code: String,
    pub short_url: String,
    pub target_url: String,
    pub status: u16,
    pub forward_query: bool,
    pub expires_at: Option<String>,
    pub enabled: bool,
    pub is_alias: bool,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub tags: Vec<String>,
    /// `utm_source` and so on: the fields set.
    pub utm: std::collections::BTreeMap<&'static str, String>,
    pub rules: Vec<RuleView>,
    pub max_visits: Option<u64>,
    pub visits_used: Option<u64>,
    pub password_protected: bool,
}

/// A redirect rule as the client prints it.
#[derive(Debug, serde::Serialize)]
pub struct RuleView {
    pub devices: Vec<String>,
    pub countries: Vec<String>,
    pub languages: Vec<String>,
    pub target_url: String,
}

impl RuleView {
    /// The rule as `--rule` takes it.
    pub fn render(&self) -> String {
        tinyurl_links::input::RuleInput {
            devices: self.devices.clone(),
            countries: self.countries.clone(),
            languages: self.languages.clone(),
            target_url: self.target_url.clone(),
        }
        .to_line()
    }
}

fn rfc3339(timestamp: Option<&prost_types::Timestamp>) -> Option<String> {
    let timestamp = timestamp?;
    let time = SystemTime::try_from(*timestamp).ok()?;
    Some(humantime::format_rfc3339_seconds(time).to_string())
}

impl From<&Link> for LinkView {
    fn from(link: &Link) -> Self {
        let status = match link.redirect_type() {
            RedirectType::RedirectType301 => 301,
            RedirectType::RedirectType307 => 307,
            RedirectType::RedirectType308 => 308,
            RedirectType::RedirectType302 | RedirectType::Unspecified => 302,
        };
        Self {
            code: link.code.clone(),
            short_url: link.short_url.clone(),
            target_url: link.target_url.clone(),
            status,
            forward_query: link.forward_query,
            expires_at: rfc3339(link.expires_at.as_ref()),
            enabled: link.enabled,
            is_alias: link.is_alias,
            created_at: rfc3339(link.created_at.as_ref()),
            updated_at: rfc3339(link.updated_at.as_ref()),
            tags: link.tags.clone(),
            utm: link
                .utm
                .iter()
                .flat_map(|utm| {
                    [
                        ("utm_source", &utm.source),
                        ("utm_medium", &utm.medium),
                        ("utm_campaign", &utm.campaign),
                        ("utm_term", &utm.term),
                        ("utm_content", &utm.content),
                    ]
                })
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| (name, value.clone()))
                .collect(),
            rules: link
                .rules
                .iter()
                .map(|rule| RuleView {
                    devices: rule.devices.clone(),
                    countries: rule.countries.clone(),
                    languages: rule.languages.clone(),
                    target_url: rule.target_url.clone(),
                })
                .collect(),
            max_visits: link.max_visits,
            visits_used: link.visits_used,
            password_protected: link.password_protected,
        }
    }
}

impl LinkView {
    /// The human-readable form: the short URL first, then the details.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}\n  → {} ({}",
            self.short_url, self.target_url, self.status
        );
        if self.forward_query {
            out.push_str(", forwards query");
        }
        out.push(')');
        if !self.enabled {
            out.push_str("\n  disabled");
        }
        if let Some(expires_at) = &self.expires_at {
            out.push_str(&format!("\n  expires {expires_at}"));
        }
        if !self.tags.is_empty() {
            out.push_str(&format!("\n  tags: {}", self.tags.join(", ")));
        }
        if !self.utm.is_empty() {
            let fields: Vec<String> = self
                .utm
                .iter()
                .map(|(name, value)| format!("{name}={value:?}"))
                .collect();
            out.push_str(&format!("\n  utm: {}", fields.join(" ")));
        }
        match (self.max_visits, self.visits_used) {
            (Some(cap), Some(used)) => {
                out.push_str(&format!("\n  at most {cap} visits ({used} used)"));
            }
            (Some(cap), None) => out.push_str(&format!("\n  at most {cap} visits")),
            (None, _) => {}
        }
        if self.password_protected {
            out.push_str("\n  password protected");
        }
        for (index, rule) in self.rules.iter().enumerate() {
            out.push_str(&format!("\n  rule {}: {}", index + 1, rule.render()));
        }
        if let Some(created_at) = &self.created_at {
            out.push_str(&format!("\n  created {created_at}"));
        }
        out
    }
}

/// Runs an async call; a transport error is reported with the server name.
pub async fn call<T>(
    connection: &Connection,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Failure> {
    call.await
        .map(tonic::Response::into_inner)
        .map_err(|status| connection.call_failure(&status))
}
