//! The one table that maps an error kind to its gRPC code and HTTP status, so
//! the same failure reads the same way on every interface. Services keep their
//! own `thiserror` enums and classify each variant into an [`ErrorKind`].

use http::StatusCode;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// What kind of failure an error is, as far as a caller is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is wrong; retrying it unchanged cannot succeed.
    InvalidArgument,
    NotFound,
    AlreadyExists,
    /// The request conflicts with the current state (for example a reused
    /// idempotency key with different parameters).
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
    ResourceExhausted,
    /// A dependency is down or overloaded; the caller may retry.
    Unavailable,
    DeadlineExceeded,
    /// A bug or an unexpected state; details are logged, never returned.
    Internal,
}

impl ErrorKind {
    /// `(gRPC code, HTTP status)` for each kind: the single source of truth.
    pub const fn codes(self) -> (Code, StatusCode) {
        match self {
            Self::InvalidArgument => (Code::InvalidArgument, StatusCode::BAD_REQUEST),
            Self::NotFound => (Code::NotFound, StatusCode::NOT_FOUND),
            Self::AlreadyExists => (Code::AlreadyExists, StatusCode::CONFLICT),
            // As the Idempotency-Key draft (draft-ietf-httpapi-idempotency-key-header) asks.
            Self::FailedPrecondition => {
                (Code::FailedPrecondition, StatusCode::UNPROCESSABLE_ENTITY)
            }
            Self::Unauthenticated => (Code::Unauthenticated, StatusCode::UNAUTHORIZED),
            Self::PermissionDenied => (Code::PermissionDenied, StatusCode::FORBIDDEN),
            Self::ResourceExhausted => (Code::ResourceExhausted, StatusCode::TOO_MANY_REQUESTS),
            Self::Unavailable => (Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            Self::DeadlineExceeded => (Code::DeadlineExceeded, StatusCode::GATEWAY_TIMEOUT),
            Self::Internal => (Code::Internal, StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    pub const fn grpc_code(self) -> Code {
        self.codes().0
    }

    pub const fn http_status(self) -> StatusCode {
        self.codes().1
    }

    /// A short, stable label for metrics (`outcome="invalid_argument"`).
    pub const fn label(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::FailedPrecondition => "failed_precondition",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Unavailable => "unavailable",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Internal => "internal",
        }
    }

    /// A gRPC status for this kind. `message` goes to the client verbatim, so
    /// it must be safe to show.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), message)
    }

    /// An `INVALID_ARGUMENT`-style status that also carries a machine-readable
    /// `google.rpc.BadRequest` naming the offending request field.
    pub fn field_status(
        self,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> tonic::Status {
        let message = message.into();
        let details = ErrorDetails::with_bad_request_violation(field, message.clone());
        tonic::Status::with_error_details(self.grpc_code(), message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_status_carries_the_field() {
        let status = ErrorKind::InvalidArgument.field_status("count", "count must be at least 1");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "count must be at least 1");
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("bad request details");
        assert_eq!(bad_request.field_violations[0].field, "count");
    }

    #[test]
    fn every_client_error_is_4xx_and_every_dependency_error_5xx() {
        use ErrorKind::*;
        for kind in [
            InvalidArgument,
            NotFound,
            AlreadyExists,
            FailedPrecondition,
            Unauthenticated,
            PermissionDenied,
            ResourceExhausted,
        ] {
            assert!(kind.http_status().is_client_error(), "{kind:?}");
        }
        for kind in [Unavailable, DeadlineExceeded, Internal] {
            assert!(kind.http_status().is_server_error(), "{kind:?}");
        }
    }
}
