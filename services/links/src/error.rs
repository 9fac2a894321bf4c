//! The link service's errors, each classified into an [`ErrorKind`] that
//! every transport answers the same way.

use tinyurl_analytics::AnalyticsError;
use tinyurl_runtime::{ErrorKind, StoreError};

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
    #[error("no link of this API key has the tag {0:?}")]
    TagNotFound(String),
    #[error("no domain {0} is registered")]
    DomainNotFound(String),
    #[error("no webhook endpoint {0} for this API key")]
    WebhookNotFound(i64),
    /// A domain with live links cannot be removed.
    #[error("domain {0} has links; delete them first")]
    DomainInUse(String),
    /// An idempotency key sent again with a different request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// The key spent its request rate; retry after the hint.
    #[error("this API key is limited to {rate}; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        rate: crate::rate::Rate,
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
        rate: Option<crate::rate::Rate>,
        retry_after: std::time::Duration,
    },
    /// A dependency is down; the message is safe to show.
    #[error("{0}")]
    Unavailable(String),
    /// A key this writer does not know met the spent lookup budget: it
    /// could not be authenticated now, and counts against its address like
    /// a refused key.
    #[error("too many unknown API keys are being tried; retry in a second")]
    KeyBudgetSpent,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
    /// One unexpected failure answered to several requests (a failed
    /// insert of a whole group): logged once, when it was shared.
    #[error("{0:#}")]
    Shared(std::sync::Arc<anyhow::Error>),
}

impl WriterError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            message: message.into(),
        }
    }

    /// This error, to be answered to several requests: transient ones as
    /// they are, unexpected ones logged now (with `context`) and shared
    /// with their cause.
    pub fn shared(self, context: &'static str) -> Self {
        match self {
            Self::Unexpected(error) => {
                let error = error.context(context);
                tracing::error!(error = format!("{error:#}"), "request failed unexpectedly");
                Self::Shared(std::sync::Arc::new(error))
            }
            other => other,
        }
    }

    /// A copy of an error made by [`Self::shared`] (or of a transient one).
    pub fn clone_shared(&self) -> Self {
        match self {
            Self::Shared(error) => Self::Shared(std::sync::Arc::clone(error)),
            Self::Unavailable(message) => Self::Unavailable(message.clone()),
            Self::KeyBudgetSpent => Self::KeyBudgetSpent,
            other => Self::Shared(std::sync::Arc::new(anyhow::anyhow!("{other}"))),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidField { .. } => ErrorKind::InvalidArgument,
            Self::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Self::NotFound(_)
            | Self::TagNotFound(_)
            | Self::DomainNotFound(_)
            | Self::WebhookNotFound(_) => ErrorKind::NotFound,
            Self::IdempotencyKeyReused(_) | Self::DomainInUse(_) => ErrorKind::FailedPrecondition,
            Self::RateLimited { .. }
            | Self::TooManyFailures { .. }
            | Self::QuotaExhausted { .. } => ErrorKind::ResourceExhausted,
            Self::Unavailable(_) | Self::KeyBudgetSpent => ErrorKind::Unavailable,
            Self::Unexpected(_) | Self::Shared(_) => ErrorKind::Internal,
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
            Self::Shared(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    pub fn from_postgres(error: tokio_postgres::Error) -> Self {
        StoreError::from_postgres(error).into()
    }

    pub fn from_pool(error: deadpool_postgres::PoolError) -> Self {
        StoreError::from_pool(error).into()
    }

    pub fn from_sqlite(error: tinyurl_runtime::sqlite::SqliteError) -> Self {
        StoreError::from_sqlite(error).into()
    }
}

impl From<StoreError> for WriterError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(message) => Self::Unavailable(message),
            StoreError::Unexpected(error) => Self::Unexpected(error),
        }
    }
}

impl From<AnalyticsError> for WriterError {
    fn from(error: AnalyticsError) -> Self {
        match error {
            AnalyticsError::InvalidField { field, message } => {
                Self::InvalidField { field, message }
            }
            AnalyticsError::Unavailable(message) => Self::Unavailable(message),
            AnalyticsError::Unexpected(error) => Self::Unexpected(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_failure_keeps_its_cause_and_shows_nothing_inside() {
        let root = anyhow::anyhow!("duplicate key value violates unique constraint");
        let shared = WriterError::Unexpected(root).shared("insert failed");
        let copies = [shared.clone_shared(), shared.clone_shared()];
        for copy in &copies {
            assert_eq!(copy.kind(), ErrorKind::Internal);
            assert_eq!(copy.public_message(), "internal error");
            let WriterError::Shared(error) = copy else {
                panic!("not shared: {copy:?}");
            };
            assert_eq!(
                format!("{error:#}"),
                "insert failed: duplicate key value violates unique constraint"
            );
        }
        let transient = WriterError::Unavailable("down".to_owned()).shared("insert failed");
        assert!(matches!(transient.clone_shared(), WriterError::Unavailable(m) if m == "down"));
    }
}
