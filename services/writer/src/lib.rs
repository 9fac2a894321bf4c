//! writer: the only service that writes links. It wires the link service
//! (`tinyurl-links`) and the click consumer (`tinyurl-analytics`) to their
//! adapters — gRPC (`tinyurl.v1.Links`), the public REST API and the web
//! console — and runs
//! them with the admin listener until it is told to stop.

pub mod app;
pub mod config;
pub mod console;
pub mod grpc;
pub mod rest;
pub mod rest_listener;
pub mod settings;

pub use app::App;
pub use config::Config;
