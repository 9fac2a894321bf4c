//! writer: the only service that writes links. It validates input, mints codes
//! from ID ranges leased from idalloc (no round trip per link), stores links on
//! the Postgres primary, and keeps Redis coherent for the redirect replicas.

pub mod analytics;
pub mod app;
pub mod auth;
pub mod batcher;
pub mod blocklist;
pub mod cache;
pub mod config;
pub mod error;
pub mod grpc;
pub mod input;
pub mod keys;
pub mod leaser;
pub mod limits;
pub mod links;
pub mod rate;
pub mod rest;
pub mod rest_listener;
pub mod store;

pub use app::App;
pub use config::Config;
