//! What analytics reports: a statistics query that is wrong, or a store
//! that failed. The link service maps it into its own error; the consumer
//! tells transient failures (retry) from the rest (dead-letter).

use tinyurl_runtime::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// A query field is wrong; the message is safe to show.
    #[error("{field}: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    /// A store is down; the message is safe to show.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for AnalyticsError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(message) => Self::Unavailable(message),
            StoreError::Unexpected(error) => Self::Unexpected(error),
        }
    }
}

impl AnalyticsError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            message: message.into(),
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

    /// The field at fault, when a query field is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The message a client (or a dead letter) sees; internals are logged
    /// here, once.
    pub fn public_message(&self) -> String {
        match self {
            Self::InvalidField { message, .. } => message.clone(),
            Self::Unavailable(message) => message.clone(),
            Self::Unexpected(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "analytics failed unexpectedly"
                );
                "internal error".to_owned()
            }
        }
    }
}
