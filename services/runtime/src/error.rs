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

    /// The exit code of a command that failed this way (the command lines'
    /// table, docs/api.md): 1 unexpected, 3 not found, 4 rejected, 5
    /// unavailable, 6 not authenticated or not allowed. 2 is a usage error,
    /// found before anything was asked.
    pub const fn exit_code(self) -> u8 {
        match self {
            Self::NotFound => 3,
            Self::InvalidArgument | Self::AlreadyExists | Self::FailedPrecondition => 4,
            Self::Unavailable | Self::DeadlineExceeded => 5,
            Self::Unauthenticated | Self::PermissionDenied => 6,
            Self::ResourceExhausted | Self::Internal => 1,
        }
    }

    /// The kind of a gRPC status code, as a client reads it.
    pub const fn of_code(code: Code) -> Self {
        match code {
            Code::InvalidArgument => Self::InvalidArgument,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists => Self::AlreadyExists,
            Code::FailedPrecondition => Self::FailedPrecondition,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::Unavailable => Self::Unavailable,
            Code::DeadlineExceeded => Self::DeadlineExceeded,
            _ => Self::Internal,
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

/// A store that failed to answer, as every store of every service reports
/// it: transient failures (a lost connection, a timeout, a failover) are
/// `Unavailable` with a message safe to show, anything else is unexpected.
/// Each service's own error wraps it and classifies it into an [`ErrorKind`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

const STORE_UNAVAILABLE: &str = "the link store is unavailable; retry later";

impl StoreError {
    /// Transient Postgres failures (see [`crate::postgres::is_transient`])
    /// are unavailable; anything else is a bug or an unexpected state.
    pub fn from_postgres(error: tokio_postgres::Error) -> Self {
        if crate::postgres::is_transient(&error) {
            tracing::warn!(%error, "postgres unavailable");
            Self::Unavailable(STORE_UNAVAILABLE.to_owned())
        } else {
            Self::Unexpected(anyhow::Error::new(error).context("postgres query failed"))
        }
    }

    pub fn from_pool(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => Self::from_postgres(error),
            other => {
                tracing::warn!(error = %other, "postgres pool unavailable");
                Self::Unavailable(STORE_UNAVAILABLE.to_owned())
            }
        }
    }

    /// The embedded store's counterpart of [`Self::from_postgres`].
    pub fn from_sqlite(error: crate::sqlite::SqliteError) -> Self {
        match error {
            crate::sqlite::SqliteError::Unavailable(reason) => {
                tracing::warn!(%reason, "embedded store unavailable");
                Self::Unavailable(STORE_UNAVAILABLE.to_owned())
            }
            crate::sqlite::SqliteError::Query(error) => {
                Self::Unexpected(anyhow::Error::new(error).context("sqlite query failed"))
            }
        }
    }

    /// Work that did not finish within `timeout`.
    pub fn timed_out(timeout: std::time::Duration) -> Self {
        Self::Unavailable(format!(
            "the link store did not answer within {} ms; retry later",
            timeout.as_millis()
        ))
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
