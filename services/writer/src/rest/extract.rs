//! What handlers take from a request: the JSON body (bounded, typed,
//! unknown fields refused), the path's code, the query, and the caller
//! (authenticated from the headers before any body is read).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};

use super::bodies::{redirect_status, time};
use super::{ApiError, MAX_BODY_BYTES, Peer};
use tinyurl_links::auth::bearer;
use tinyurl_links::error::WriterError;
use tinyurl_links::input::CreateInput;
use tinyurl_links::{Call, LinkService};

/// A JSON body: `application/json`, at most [`MAX_BODY_BYTES`], no unknown
/// fields; every failure is a problem document.
pub(super) struct JsonBody<T>(pub(super) T);

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
pub(super) fn decoded<T>(input: Result<T, ApiError>) -> Result<Result<T, WriterError>, ApiError> {
    match input {
        Ok(input) => Ok(Ok(input)),
        Err(ApiError::Service(error)) => Ok(Err(error)),
        Err(other) => Err(other),
    }
}

pub(super) fn create_input(
    target_url: String,
    alias: Option<String>,
    expires_at: Option<&str>,
    redirect_type: Option<i64>,
    forward_query: bool,
    idempotency_key: Option<String>,
    tags: Vec<String>,
) -> Result<CreateInput, WriterError> {
    Ok(CreateInput {
        expires_at: time(expires_at, "expires_at")?,
        redirect_status: redirect_status(redirect_type)?,
        target_url,
        alias,
        forward_query,
        idempotency_key,
        tags,
        ..CreateInput::default()
    })
}

/// The `{tag}` of the path (percent-decoded: `spring%20sale`).
pub(super) struct TagName(pub(super) String);

impl<S: Send + Sync> FromRequestParts<S> for TagName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(tag)| Self(tag))
            .map_err(|error| ApiError::invalid("tag", error.body_text()))
    }
}

/// The `{id}` of a webhook endpoint's path.
pub(super) struct WebhookId(pub(super) i64);

impl<S: Send + Sync> FromRequestParts<S> for WebhookId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|error| ApiError::invalid("id", error.body_text()))
            .and_then(|Path(id)| {
                id.parse()
                    .map(Self)
                    .map_err(|_| ApiError::invalid("id", format!("{id:?} is not an endpoint id")))
            })
    }
}

/// The `{code}` of the path.
pub(super) struct LinkCode(pub(super) String);

impl<S: Send + Sync> FromRequestParts<S> for LinkCode {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(code)| Self(code))
            .map_err(|error| ApiError::invalid("code", error.body_text()))
    }
}

pub(super) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(value)| value)
        .map_err(|error| ApiError::invalid("query", error.body_text()))
}

/// Who is calling: the API key in `Authorization`, the peer, and
/// `X-Forwarded-For` (believed only from a trusted proxy). First among each
/// handler's extractors, and it resolves the key: a stranger is refused
/// (401, or 429 for an address that keeps failing) before any body is read.
pub(super) struct Caller(pub(super) Call);

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
