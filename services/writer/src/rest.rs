//! The public REST API (`/api/v1/…`): JSON over HTTP on the writer's own
//! listener, a thin adapter over the link service like the gRPC one. Errors
//! are RFC 9457 problem documents whose status comes from the one
//! `ErrorKind` table; the OpenAPI 3.1 document is generated from the
//! handlers and types below and served at `/api/v1/openapi.json`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::{Deserialize, Deserializer, Serialize};
use tinyurl_domain::RedirectStatus;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::analytics::{Granularity, LinkStats};
use crate::auth::bearer;
use crate::error::WriterError;
use crate::input::{CreateInput, ListInput, MAX_BATCH, UpdateInput};
use crate::links::{Call, LinkService, StatsInput};
use crate::store::StoredLink;

/// Largest request body: a full batch of the longest legitimate items, with
/// room for JSON's quoting. Anything bigger is refused unread (413).
pub const MAX_BODY_BYTES: usize = crate::grpc::MAX_REQUEST_BYTES * 2;

/// The router of `/api/v1`, with CORS for `cors_origins` (none: no CORS
/// headers at all, so browsers on other origins cannot call the API).
pub fn router(links: Arc<LinkService>, cors_origins: &[HeaderValue]) -> Router {
    let api = Router::new()
        .route("/api/v1/links", post(create_link).get(list_links))
        .route("/api/v1/links/batch", post(batch_create_links))
        .route(
            "/api/v1/links/{code}",
            get(get_link).patch(update_link).delete(delete_link),
        )
        .route("/api/v1/links/{code}/stats", get(link_stats))
        .route("/api/v1/openapi.json", get(serve_openapi))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(links);
    if cors_origins.is_empty() {
        return api;
    }
    let origins = if cors_origins.iter().any(|origin| origin == "*") {
        tower_http::cors::AllowOrigin::any()
    } else {
        tower_http::cors::AllowOrigin::list(cors_origins.iter().cloned())
    };
    api.layer(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                http::Method::GET,
                http::Method::POST,
                http::Method::PATCH,
                http::Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                header::LOCATION,
                HeaderName::from_static("ratelimit"),
                HeaderName::from_static("ratelimit-policy"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The OpenAPI document, as served and as checked in (`api/openapi.json`).
pub fn openapi_json() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    json.push('\n');
    json
}

async fn serve_openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// The connecting peer, on plaintext and TLS listeners alike.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// TLS connections of [`tinyurl_runtime::tls::accept`], as axum serves them.
pub struct TlsListener {
    incoming:
        futures::stream::BoxStream<'static, std::io::Result<tinyurl_runtime::tls::TlsConnection>>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(
        listener: tokio::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            incoming: Box::pin(tinyurl_runtime::tls::accept(listener, config)),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tinyurl_runtime::tls::TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match futures::StreamExt::next(&mut self.incoming).await {
                Some(Ok(connection)) => {
                    if let Ok(peer) = connection.peer_addr() {
                        return (connection, peer);
                    }
                }
                Some(Err(_)) => {}
                // The accept loop ended: nothing more will come.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

// ---------------------------------------------------------------- errors

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: `code` says which problem it is.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub problem_type: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// The error kind, for programs (the same names as the gRPC codes):
    /// `invalid_argument`, `unauthenticated`, `permission_denied`,
    /// `not_found`, `already_exists`, `resource_exhausted`, `unavailable`,
    /// `internal`; `payload_too_large`, `unsupported_media_type`,
    /// `method_not_allowed` for requests the API cannot read.
    pub code: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Why a request failed: a link-service error, or an HTTP-level one.
#[derive(Debug)]
pub enum ApiError {
    Service(WriterError),
    Http {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
}

impl From<WriterError> for ApiError {
    fn from(error: WriterError) -> Self {
        Self::Service(error)
    }
}

impl ApiError {
    fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        Self::Service(WriterError::invalid(field, detail))
    }

    /// A request that was not whole within the listener's request timeout.
    pub fn request_timeout() -> Self {
        Self::Http {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "request_timeout",
            detail: "the request was not received in time".to_owned(),
        }
    }

    fn problem(&self) -> Problem {
        let (status, code, detail, field) = match self {
            Self::Service(error) => (
                error.kind().http_status(),
                error.kind().label(),
                error.public_message(),
                error.field(),
            ),
            Self::Http {
                status,
                code,
                detail,
            } => (*status, *code, detail.clone(), None),
        };
        Problem {
            problem_type: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            field: field.map(str::to_owned),
        }
    }
}

/// Whole seconds to wait, rounded up, at least one.
fn retry_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        // The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers):
        // which policy refused, its quota and window, and when it allows
        // again; plus Retry-After, which every HTTP client understands.
        let limit = match &self {
            Self::Service(WriterError::RateLimited { rate, retry_after }) => {
                Some(("key", u64::from(rate.get()), 1, *retry_after))
            }
            Self::Service(WriterError::TooManyFailures {
                rate: Some(rate),
                retry_after,
            }) => Some(("failed-auth", u64::from(rate.get()), 1, *retry_after)),
            Self::Service(WriterError::QuotaExhausted { quota, retry_after }) => {
                Some(("daily", *quota, 86_400, *retry_after))
            }
            _ => None,
        };
        if let Some((policy, quota, window, wait)) = limit {
            let seconds = retry_seconds(wait).max(1);
            for (name, value) in [
                (header::RETRY_AFTER.as_str(), seconds.to_string()),
                (
                    "ratelimit-policy",
                    format!("\"{policy}\";q={quota};w={window}"),
                ),
                ("ratelimit", format!("\"{policy}\";r=0;t={seconds}")),
            ] {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    headers.insert(name, value);
                }
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tinyurl\""),
            );
        }
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        (status, headers, body).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::Http {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        detail: "no such API route; see /api/v1/openapi.json".to_owned(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::Http {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        detail: "this route does not take that method; see /api/v1/openapi.json".to_owned(),
    }
}

// ---------------------------------------------------------- extractors

/// A JSON body: `application/json`, at most [`MAX_BODY_BYTES`], no unknown
/// fields; every failure is a problem document.
struct JsonBody<T>(T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::Http {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                detail: "send the body as Content-Type: application/json".to_owned(),
            });
        }
        let too_large = || ApiError::Http {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            detail: format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        };
        // A body announced too large is refused before a byte of it is read.
        let announced = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if announced.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let bytes: Bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| too_large())?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| {
                ApiError::invalid("body", format!("the body is not a valid request: {error}"))
            })
    }
}

/// What the link service takes from a request: its decoded input, or why
/// it could not be decoded (judged after authentication, as on gRPC).
/// HTTP-level refusals (415, 413) end the request here.
fn decoded<T>(input: Result<T, ApiError>) -> Result<Result<T, WriterError>, ApiError> {
    match input {
        Ok(input) => Ok(Ok(input)),
        Err(ApiError::Service(error)) => Ok(Err(error)),
        Err(other) => Err(other),
    }
}

fn create_input(
    target_url: String,
    alias: Option<String>,
    expires_at: Option<&str>,
    redirect_type: Option<i64>,
    forward_query: bool,
    idempotency_key: Option<String>,
) -> Result<CreateInput, WriterError> {
    Ok(CreateInput {
        expires_at: time(expires_at, "expires_at")?,
        redirect_status: redirect_status(redirect_type)?,
        target_url,
        alias,
        forward_query,
        idempotency_key,
    })
}

/// The `{code}` of the path.
struct LinkCode(String);

impl<S: Send + Sync> FromRequestParts<S> for LinkCode {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(code)| Self(code))
            .map_err(|error| ApiError::invalid("code", error.body_text()))
    }
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(value)| value)
        .map_err(|error| ApiError::invalid("query", error.body_text()))
}

/// Who is calling: the API key in `Authorization`, the peer, and
/// `X-Forwarded-For` (believed only from a trusted proxy). First among each
/// handler's extractors, and it resolves the key: a stranger is refused
/// (401, or 429 for an address that keeps failing) before any body is read.
struct Caller(Call);

impl FromRequestParts<Arc<LinkService>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        links: &Arc<LinkService>,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(
            parts
                .headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )?;
        let call = Call {
            key: Some(key),
            client: parts
                .extensions
                .get::<ConnectInfo<Peer>>()
                .map(|ConnectInfo(Peer(peer))| {
                    links.rest_client(
                        peer.ip(),
                        parts
                            .headers
                            .get("x-forwarded-for")
                            .map(HeaderValue::as_bytes),
                    )
                }),
        };
        links.authenticate(&call).await?;
        Ok(Self(call))
    }
}

// ----------------------------------------------------------------- types

/// A link.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkBody {
    /// The short code: minted, or the alias.
    #[schema(example = "4kPq9xZ")]
    pub code: String,
    #[schema(example = "https://sho.rt/4kPq9xZ")]
    pub short_url: String,
    #[schema(example = "https://example.com/some/long/path")]
    pub target_url: String,
    /// The status the redirect answers with: 301, 302, 307 or 308.
    #[schema(example = 302)]
    pub redirect_type: u16,
    /// Whether the short URL's query string is appended to the target.
    pub forward_query: bool,
    /// When the link stops redirecting (RFC 3339, UTC); null: never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    pub enabled: bool,
    pub is_alias: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Blocked by an operator because of its target's host: it answers 410
    /// whatever `enabled` says, and may only be deleted.
    pub blocked: bool,
}

/// A new link. A retried create sends the same `Idempotency-Key` header.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLinkBody {
    /// An absolute http(s) URL.
    #[schema(
        example = "https://example.com/some/long/path",
        format = "uri",
        max_length = 2048
    )]
    pub target_url: String,
    /// A custom code instead of a minted one.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")]
    pub alias: Option<String>,
    /// When the link stops redirecting (RFC 3339).
    #[serde(default)]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// 301, 302 (the default), 307 or 308.
    #[serde(default)]
    #[schema(example = 302, minimum = 301, maximum = 308)]
    pub redirect_type: Option<i64>,
    #[serde(default)]
    pub forward_query: bool,
}

/// One link of a batch; `idempotency_key` plays the header's part per item.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemBody {
    #[schema(format = "uri", max_length = 2048)]
    pub target_url: String,
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")]
    pub alias: Option<String>,
    #[serde(default)]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[serde(default)]
    #[schema(minimum = 301, maximum = 308)]
    pub redirect_type: Option<i64>,
    #[serde(default)]
    pub forward_query: bool,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Up to 1,000 links created together.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCreateBody {
    pub links: Vec<BatchItemBody>,
}

/// One item's result: the link, or why it was not created.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchResult {
    Link(LinkBody),
    Error(Problem),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCreateResponse {
    /// One per requested link, in order.
    pub results: Vec<BatchResult>,
}

/// Changes to a link; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLinkBody {
    #[schema(format = "uri", max_length = 2048)]
    pub target_url: Option<String>,
    /// A new expiry (RFC 3339), or null to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
    #[schema(minimum = 301, maximum = 308)]
    pub redirect_type: Option<i64>,
    pub enabled: Option<bool>,
    pub forward_query: Option<bool>,
}

/// A field that is present, even as null (`Some(None)`), unlike one that is
/// absent (`None`, through `#[serde(default)]`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Links per page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<u32>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// A page of links, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkPage {
    pub links: Vec<LinkBody>,
    /// Pass as `page_token` for the next page; null on the last one.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQueryParams {
    /// Start of the range (RFC 3339); default: 7 days before `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End of the range (RFC 3339); default: now.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// `minute`, `hour` or `day`; default: by the range's length.
    #[param(pattern = "^(minute|hour|day)$")]
    pub granularity: Option<String>,
}

/// A value and its clicks.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountBody {
    pub value: String,
    pub clicks: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PointBody {
    #[schema(format = DateTime)]
    pub start: String,
    pub clicks: u64,
    pub bot_clicks: u64,
}

/// Click statistics of one link.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsBody {
    pub code: String,
    pub lifetime_clicks: u64,
    pub lifetime_bot_clicks: u64,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    /// `minute`, `hour` or `day`.
    pub granularity: String,
    pub clicks: u64,
    pub bot_clicks: u64,
    pub series: Vec<PointBody>,
    pub referrers: Vec<CountBody>,
    pub countries: Vec<CountBody>,
    pub browsers: Vec<CountBody>,
    pub devices: Vec<CountBody>,
    pub bots: Vec<CountBody>,
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

fn time(raw: Option<&str>, field: &'static str) -> Result<Option<SystemTime>, WriterError> {
    raw.map(|raw| {
        humantime::parse_rfc3339_weak(raw).map_err(|_| {
            WriterError::invalid(
                field,
                format!(
                    "{field} is not a valid timestamp; use RFC 3339 in UTC, like 2030-01-31T12:00:00Z"
                ),
            )
        })
    })
    .transpose()
}

fn redirect_status(raw: Option<i64>) -> Result<Option<RedirectStatus>, WriterError> {
    raw.map(|code| {
        RedirectStatus::from_code(code).ok_or_else(|| {
            WriterError::invalid(
                "redirect_type",
                format!("redirect type {code} is not one of 301, 302, 307, 308"),
            )
        })
    })
    .transpose()
}

fn link_body(links: &LinkService, link: &StoredLink) -> LinkBody {
    LinkBody {
        short_url: links.short_url(&link.code),
        code: link.code.clone(),
        target_url: link.target_url.clone(),
        redirect_type: link.redirect_status.code(),
        forward_query: link.forward_query,
        expires_at: link.expires_at.map(rfc3339),
        enabled: link.enabled,
        is_alias: link.is_alias,
        created_at: rfc3339(link.created_at),
        updated_at: rfc3339(link.updated_at),
        blocked: link.blocked,
    }
}

fn granularity_name(granularity: Granularity) -> &'static str {
    match granularity {
        Granularity::Minute => "minute",
        Granularity::Hour => "hour",
        Granularity::Day => "day",
    }
}

fn stats_body(code: String, stats: LinkStats) -> StatsBody {
    let at = |seconds: i64| {
        rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
    };
    let counts = |counts: Vec<(String, u64)>| {
        counts
            .into_iter()
            .map(|(value, clicks)| CountBody { value, clicks })
            .collect()
    };
    StatsBody {
        code,
        lifetime_clicks: stats.lifetime_clicks,
        lifetime_bot_clicks: stats.lifetime_bot_clicks,
        from: at(stats.query.from),
        to: at(stats.query.to),
        granularity: granularity_name(stats.query.granularity).to_owned(),
        clicks: stats.clicks,
        bot_clicks: stats.bot_clicks,
        series: stats
            .series
            .iter()
            .map(|point| PointBody {
                start: at(point.start),
                clicks: point.clicks,
                bot_clicks: point.bot_clicks,
            })
            .collect(),
        referrers: counts(stats.referrers),
        countries: counts(stats.countries),
        browsers: counts(stats.browsers),
        devices: counts(stats.devices),
        bots: counts(stats.bots),
    }
}

// -------------------------------------------------------------- handlers

type Links = State<Arc<LinkService>>;

/// Create a link.
#[utoipa::path(
    post,
    path = "/api/v1/links",
    tag = "links",
    request_body = CreateLinkBody,
    params(
        ("Idempotency-Key" = Option<String>, Header,
         description = "Retries with the same key (printable ASCII, at most 128 bytes) and the same body get the first create's link instead of a second one; the key with another body is refused (422)"),
    ),
    responses((status = 201, description = "Created (or the link an earlier request with the same Idempotency-Key created)", body = LinkBody,
               headers(("Location" = String, description = "The link's URL in this API"))),
              (status = 422, description = "The Idempotency-Key was used with another body", body = Problem,
               content_type = "application/problem+json")),
    security(("api_key" = [])),
)]
async fn create_link(
    State(links): Links,
    Caller(call): Caller,
    headers: HeaderMap,
    body: Result<JsonBody<CreateLinkBody>, ApiError>,
) -> Result<Response, ApiError> {
    let idempotency_key = headers
        .get("idempotency-key")
        .map(|value| {
            value.to_str().map(str::to_owned).map_err(|_| {
                WriterError::invalid(
                    "idempotency_key",
                    "Idempotency-Key must be printable ASCII without spaces",
                )
            })
        })
        .transpose();
    let input = decoded(body)?.and_then(|JsonBody(body)| {
        create_input(
            body.target_url,
            body.alias,
            body.expires_at.as_deref(),
            body.redirect_type,
            body.forward_query,
            idempotency_key?,
        )
    });
    let link = links.create(&call, input).await?;
    let location = format!("/api/v1/links/{}", link.code);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(link_body(&links, &link)),
    )
        .into_response())
}

/// Create up to 1,000 links; each item succeeds or fails on its own.
#[utoipa::path(
    post,
    path = "/api/v1/links/batch",
    tag = "links",
    request_body = BatchCreateBody,
    responses((status = 200, description = "One result per item, in order", body = BatchCreateResponse)),
    security(("api_key" = [])),
)]
async fn batch_create_links(
    State(links): Links,
    Caller(call): Caller,
    body: Result<JsonBody<BatchCreateBody>, ApiError>,
) -> Result<axum::Json<BatchCreateResponse>, ApiError> {
    let JsonBody(body) = body?;
    if body.links.len() > MAX_BATCH {
        // Refused before any item is looked at, whatever the key.
        return Err(ApiError::invalid(
            "links",
            format!(
                "a batch holds 1 to {MAX_BATCH} links, got {}",
                body.links.len()
            ),
        ));
    }
    let items = body
        .links
        .into_iter()
        .map(|item| {
            create_input(
                item.target_url,
                item.alias,
                item.expires_at.as_deref(),
                item.redirect_type,
                item.forward_query,
                item.idempotency_key,
            )
        })
        .collect();
    let results = links.batch_create(&call, items).await?;
    Ok(axum::Json(BatchCreateResponse {
        results: results
            .into_iter()
            .map(|result| match result {
                Ok(link) => BatchResult::Link(link_body(&links, &link)),
                Err(error) => BatchResult::Error(ApiError::Service(error).problem()),
            })
            .collect(),
    }))
}

/// One of the key's links.
#[utoipa::path(
    get,
    path = "/api/v1/links/{code}",
    tag = "links",
    params(("code" = String, Path, description = "The short code or alias")),
    responses((status = 200, description = "The link", body = LinkBody)),
    security(("api_key" = [])),
)]
async fn get_link(
    State(links): Links,
    Caller(call): Caller,
    LinkCode(code): LinkCode,
) -> Result<axum::Json<LinkBody>, ApiError> {
    let link = links.get(&call, &code).await?;
    Ok(axum::Json(link_body(&links, &link)))
}

/// Change a link's target, expiry, redirect type, or switch it off and on.
#[utoipa::path(
    patch,
    path = "/api/v1/links/{code}",
    tag = "links",
    params(("code" = String, Path, description = "The short code or alias")),
    request_body = UpdateLinkBody,
    responses((status = 200, description = "The link as changed", body = LinkBody)),
    security(("api_key" = [])),
)]
async fn update_link(
    State(links): Links,
    Caller(call): Caller,
    LinkCode(code): LinkCode,
    body: Result<JsonBody<UpdateLinkBody>, ApiError>,
) -> Result<axum::Json<LinkBody>, ApiError> {
    let input = decoded(body)?.and_then(|JsonBody(body)| {
        Ok(UpdateInput {
            expires_at: match body.expires_at {
                Some(Some(raw)) => Some(time(Some(&raw), "expires_at")?),
                Some(None) => Some(None),
                None => None,
            },
            redirect_status: redirect_status(body.redirect_type)?,
            target_url: body.target_url,
            enabled: body.enabled,
            forward_query: body.forward_query,
        })
    });
    let link = links.update(&call, &code, input).await?;
    Ok(axum::Json(link_body(&links, &link)))
}

/// Delete a link. Its code stays taken: it is never issued again.
#[utoipa::path(
    delete,
    path = "/api/v1/links/{code}",
    tag = "links",
    params(("code" = String, Path, description = "The short code or alias")),
    responses((status = 204, description = "Deleted")),
    security(("api_key" = [])),
)]
async fn delete_link(
    State(links): Links,
    Caller(call): Caller,
    LinkCode(code): LinkCode,
) -> Result<StatusCode, ApiError> {
    links.delete(&call, &code).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The key's links, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/links",
    tag = "links",
    params(ListQuery),
    responses((status = 200, description = "A page of links", body = LinkPage)),
    security(("api_key" = [])),
)]
async fn list_links(
    State(links): Links,
    Caller(call): Caller,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<LinkPage>, ApiError> {
    let params = query(params)?;
    let page = links
        .list(
            &call,
            ListInput {
                page_size: params.page_size,
                page_token: params.page_token,
            },
        )
        .await?;
    Ok(axum::Json(LinkPage {
        links: page
            .links
            .iter()
            .map(|link| link_body(&links, link))
            .collect(),
        next_page_token: page.next_page_token,
    }))
}

/// Click statistics of one of the key's links.
#[utoipa::path(
    get,
    path = "/api/v1/links/{code}/stats",
    tag = "links",
    params(("code" = String, Path, description = "The short code or alias"), StatsQueryParams),
    responses((status = 200, description = "Clicks in the range, by time and by dimension", body = StatsBody)),
    security(("api_key" = [])),
)]
async fn link_stats(
    State(links): Links,
    Caller(call): Caller,
    LinkCode(code): LinkCode,
    params: Result<Query<StatsQueryParams>, QueryRejection>,
) -> Result<axum::Json<StatsBody>, ApiError> {
    let input = query(params).and_then(|params| {
        Ok(StatsInput {
            from: time(params.from.as_deref(), "from")?,
            to: time(params.to.as_deref(), "to")?,
            granularity: match params.granularity.as_deref() {
                None => 0,
                Some("minute") => Granularity::Minute.number(),
                Some("hour") => Granularity::Hour.number(),
                Some("day") => Granularity::Day.number(),
                Some(other) => {
                    return Err(ApiError::invalid(
                        "granularity",
                        format!("granularity {other:?} is not one of minute, hour, day"),
                    ));
                }
            },
        })
    });
    let input = decoded(input)?;
    let stats = links.stats(&call, &code, input).await?;
    Ok(axum::Json(stats_body(code, stats)))
}

// --------------------------------------------------------------- OpenAPI

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tinyurl",
        description = "Create and manage short links. Every call takes an API key as `Authorization: Bearer tu_…`. Errors are RFC 9457 problem documents (`application/problem+json`) naming the field at fault; 429 answers carry `Retry-After` and the IETF `RateLimit-Policy` and `RateLimit` fields.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(create_link, batch_create_links, get_link, update_link, delete_link, list_links, link_stats),
    components(schemas(Problem)),
    modifiers(&Conventions),
    tags((name = "links", description = "Short links")),
)]
pub struct ApiDoc;

/// What every operation shares, added once rather than on each: the API-key
/// scheme and the problem answers.
struct Conventions;

/// Problem answers every authenticated operation may give.
const PROBLEMS: [(&str, &str); 9] = [
    ("400", "The request is invalid; `field` names what is wrong"),
    ("401", "No API key, or not a valid one"),
    ("403", "The key's scope does not allow this"),
    ("404", "No such link for this key"),
    ("409", "The alias is taken"),
    ("413", "The body is too large"),
    ("415", "The body is not application/json"),
    (
        "429",
        "A rate limit or quota; see Retry-After and RateLimit",
    ),
    ("503", "A dependency is unavailable; retry"),
];

impl utoipa::Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        for (status, description) in PROBLEMS {
            components.responses.insert(
                format!("Problem{status}"),
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build()
                    .into(),
            );
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (status, _) in PROBLEMS {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            Ref::from_response_name(format!("Problem{status}")).into()
                        });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in document is the generated one. After an API change,
    /// `TINYURL_WRITE_OPENAPI=1 cargo test -p tinyurl-writer openapi`
    /// rewrites it.
    #[test]
    fn openapi_document_is_checked_in() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../api/openapi.json");
        let generated = openapi_json();
        if std::env::var_os("TINYURL_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("api/openapi.json is writable");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "api/openapi.json differs from the generated document; rerun with TINYURL_WRITE_OPENAPI=1"
        );
        assert!(generated.contains("\"openapi\": \"3.1.0\""));
    }

    #[test]
    fn retry_hints_round_up() {
        assert_eq!(retry_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_seconds(Duration::from_millis(2_001)), 3);
    }

    #[test]
    fn problems_carry_the_kind_status_and_field() {
        let problem = ApiError::invalid("target_url", "bad").problem();
        assert_eq!(
            (
                problem.status,
                problem.code.as_str(),
                problem.field.as_deref()
            ),
            (400, "invalid_argument", Some("target_url"))
        );
        let problem = ApiError::Service(WriterError::NotFound("x".to_owned())).problem();
        assert_eq!((problem.status, problem.field), (404, None));
    }
}
