//! What every tinyurl service shares: typed configuration from the environment
//! contract, logging and OpenTelemetry export, the admin listener (`/metrics`,
//! `/healthz`, `/readyz`), the one shutdown signal, and the table that maps
//! error kinds to gRPC codes and HTTP statuses.

pub mod admin;
pub mod boot;
pub mod config;
pub mod error;
pub mod expiring;
pub mod grpc;
pub mod lifecycle;
pub mod memory;
pub mod postgres;
pub mod proxies;
pub mod redis;
pub mod settings;
pub mod shutdown;
pub mod sqlite;
pub mod stopping;
pub mod telemetry;
pub mod tls;

pub use admin::{AdminServer, Readiness};
pub use config::CommonConfig;
pub use error::{ErrorKind, StoreError};
pub use settings::{ConfigError, Env, Fallback, Setting};
pub use shutdown::shutdown_signal;
pub use stopping::Stopping;
pub use telemetry::TelemetryGuard;
