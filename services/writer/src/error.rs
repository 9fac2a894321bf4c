//! The writer's errors and how each reaches a client.

use tinyurl_runtime::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// A request field is wrong; the message is safe to show.
    #[error("{field}: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    #[error("missing or malformed API key: {0}")]
    Unauthenticated(&'static str),
    /// The key is valid but its scope does not allow the call.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("no link {0} for this API key")]
    NotFound(String),
    /// The key spent its request rate; retry after the hint.
    #[error("this API key is limited to {rate}; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        rate: crate::auth::Rate,
        retry_after: std::time::Duration,
    },
    /// The key created its daily quota of links (UTC days).
    #[error("this API key may create {quota} links a day (UTC); retry tomorrow")]
    QuotaExhausted {
        quota: u64,
        retry_after: std::time::Duration,
    },
    /// Too many failed authentications from the caller's address.
    #[error("too many failed authentications from this address; retry in {} ms", retry_after.as_millis())]
    TooManyFailures {
        /// The configured allowance (always set when this is raised).
        rate: Option<crate::auth::Rate>,
        retry_after: std::time::Duration,
    },
    /// A dependency is down; the message is safe to show.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl WriterError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidField { .. } => ErrorKind::InvalidArgument,
            Self::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::RateLimited { .. }
            | Self::TooManyFailures { .. }
            | Self::QuotaExhausted { .. } => ErrorKind::ResourceExhausted,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Unexpected(_) => ErrorKind::Internal,
        }
    }

    /// The field at fault, for `google.rpc.BadRequest` and batch item errors.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The message a client sees; internals are logged here, once.
    pub fn public_message(&self) -> String {
        match self {
            Self::InvalidField { message, .. } => message.clone(),
            Self::Unexpected(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed unexpectedly");
                "internal error".to_owned()
            }
            other => other.to_string(),
        }
    }

    pub fn into_status(self) -> tonic::Status {
        let kind = self.kind();
        let message = self.public_message();
        if let Self::RateLimited { retry_after, .. }
        | Self::TooManyFailures { retry_after, .. }
        | Self::QuotaExhausted { retry_after, .. } = self
        {
            // google.rpc.RetryInfo: clients (and gRPC retry policies) read
            // the wait from it rather than from the message.
            return <tonic::Status as tonic_types::StatusExt>::with_error_details(
                kind.grpc_code(),
                message,
                tonic_types::ErrorDetails::with_retry_info(Some(retry_after)),
            );
        }
        match self.field() {
            Some(field) => kind.field_status(field, message),
            None => kind.status(message),
        }
    }

    /// Transient Postgres failures (see `tinyurl_runtime::postgres::is_transient`)
    /// are UNAVAILABLE; anything else is a bug or an unexpected state.
    pub fn from_postgres(error: tokio_postgres::Error) -> Self {
        if tinyurl_runtime::postgres::is_transient(&error) {
            tracing::warn!(%error, "postgres unavailable");
            Self::Unavailable("the link store is unavailable; retry later".to_owned())
        } else {
            Self::Unexpected(anyhow::Error::new(error).context("postgres query failed"))
        }
    }

    pub fn from_pool(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => Self::from_postgres(error),
            other => {
                tracing::warn!(error = %other, "postgres pool unavailable");
                Self::Unavailable("the link store is unavailable; retry later".to_owned())
            }
        }
    }

    /// The embedded store's counterpart of [`Self::from_postgres`].
    pub fn from_sqlite(error: tinyurl_runtime::sqlite::SqliteError) -> Self {
        match error {
            tinyurl_runtime::sqlite::SqliteError::Unavailable(reason) => {
                tracing::warn!(%reason, "embedded store unavailable");
                Self::Unavailable("the link store is unavailable; retry later".to_owned())
            }
            tinyurl_runtime::sqlite::SqliteError::Query(error) => {
                Self::Unexpected(anyhow::Error::new(error).context("sqlite query failed"))
            }
        }
    }
}
