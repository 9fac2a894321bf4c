//! The errors a lease can end in, and how each one reaches a client.

use tinyurl_runtime::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A request field is malformed; `reason` is safe to show the client.
    #[error("{field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
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
            Self::Unavailable(_) | Self::Timeout(_) => ErrorKind::Unavailable,
            Self::Unexpected(_) => ErrorKind::Internal,
        }
    }

    /// Classifies a Postgres error: anything about the connection or a server
    /// that is shutting down, starting or read-only (a replica) is transient.
    pub fn from_postgres(error: tokio_postgres::Error) -> Self {
        let Some(state) = error.code() else {
            // No SQLSTATE: the connection broke or could not be made.
            return Self::Unavailable(error.to_string());
        };
        let code = state.code();
        let transient = code.starts_with("08") // connection exception
            || code.starts_with("57P") // operator intervention: shutdown, cannot connect now
            || code == "25006" // read-only transaction: we reached a standby
            || code == "40001" // serialization failure
            || code == "40P01" // deadlock detected
            || code == "53300"; // too many connections
        if transient {
            Self::Unavailable(format!("{code}: {error}"))
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
