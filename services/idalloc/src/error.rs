//! The errors a lease can end in, and how each one reaches a client.

use tinyurl_runtime::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A request field is malformed; `reason` is safe to show the client.
    #[error("{field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// No valid service token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// An authenticated caller asked for what it may not have.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The database could not be reached or answered with a transient failure.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database did not answer within the configured timeout.
    #[error("database did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl LeaseError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            reason: reason.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidField { .. } => ErrorKind::InvalidArgument,
            Self::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::Unavailable(_) | Self::Timeout(_) => ErrorKind::Unavailable,
            Self::Unexpected(_) => ErrorKind::Internal,
        }
    }

    /// Transient Postgres failures (see `tinyurl_runtime::postgres::is_transient`)
    /// are retryable; anything else is a bug or an unexpected state.
    pub fn from_postgres(error: tokio_postgres::Error) -> Self {
        if tinyurl_runtime::postgres::is_transient(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Unexpected(anyhow::Error::new(error).context("lease query failed"))
        }
    }

    pub fn from_pool(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => Self::from_postgres(error),
            other => Self::Unavailable(other.to_string()),
        }
    }

    pub fn into_status(self) -> tonic::Status {
        let kind = self.kind();
        match self {
            Self::InvalidField { field, reason } => kind.field_status(field, reason),
            Self::Unauthenticated(reason) => kind.status(reason),
            Self::PermissionDenied(reason) => kind.status(reason),
            Self::Unavailable(detail) => {
                tracing::warn!(error = %detail, "lease failed: database unavailable");
                kind.status("the ID store is unavailable; retry with the same request_id")
            }
            Self::Timeout(timeout) => {
                tracing::warn!(?timeout, "lease failed: database timeout");
                kind.status(format!(
                    "the ID store did not answer within {} ms; retry with the same request_id",
                    timeout.as_millis()
                ))
            }
            Self::Unexpected(error) => {
                tracing::error!(error = format!("{error:#}"), "lease failed unexpectedly");
                kind.status("internal error")
            }
        }
    }
}
