//! `tinyurl-redirect`: the public, read-only redirect service.

pub mod app;
pub mod clicks;
pub mod config;
pub mod domains;
pub mod entry;
pub mod http;
pub mod invalidation;
pub mod l2;
pub mod pages;
pub mod protected;
pub mod resolve;
pub mod scanners;
pub mod server;
pub mod store;
pub mod visitors;

pub use app::App;
pub use config::Config;
