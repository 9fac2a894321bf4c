//! idalloc: leases disjoint, durable ranges of integer IDs from Postgres.
//!
//! Each lease is one atomic `INSERT … ON CONFLICT DO UPDATE … RETURNING` on the
//! primary, committed before the reply, so ranges handed out by any number of
//! replicas never overlap, whatever crashes. The service itself is stateless.

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod lease;
pub mod service;
pub mod store;

pub use app::App;
pub use config::Config;
