//! Problem details (RFC 9457): every refusal of the REST API, its status
//! from the one `ErrorKind` table, and the fallback routes.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Serialize;
use utoipa::ToSchema;

use tinyurl_links::error::WriterError;

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
    pub(super) fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
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

    pub(super) fn problem(&self) -> Problem {
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
pub(crate) fn retry_seconds(wait: Duration) -> u64 {
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

pub(super) async fn not_found() -> ApiError {
    ApiError::Http {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        detail: "no such API route; see /api/v1/openapi.json".to_owned(),
    }
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::Http {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        detail: "this route does not take that method; see /api/v1/openapi.json".to_owned(),
    }
}
