//! The `tinyurl` binary's library: the embedded system (`up`), the gRPC
//! client commands, and CSV import/export.

pub mod bulk;
pub mod cli;
pub mod client;
pub mod configuration;
pub mod stats;
pub mod up;
