//! The test harness: real Postgres (a primary and a streaming replica made
//! with `pg_basebackup -R`), real Redis, and the project's own service binaries,
//! each started on free loopback ports from the installed server binaries, with
//! handles to stop, SIGKILL, freeze and restart every process.
//!
//! Postgres refuses to run as root, so when the tests run as root every
//! Postgres process runs as an unprivileged user (`postgres`, else `nobody`).
//! A missing server binary fails the test with the Debian package to install;
//! nothing here ever skips.

pub mod attacker;
pub mod browser;
pub mod embedded;
pub mod geoip;
pub mod hostile;
pub mod otlp;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod rules;
pub mod services;
pub mod stack;
pub mod system;
pub mod tls;

pub use postgres::{PgCluster, PgServer, TestDatabase};
pub use process::{free_port, wait_until};
pub use redis::RedisServer;
pub use services::{ServiceBinary, ServiceProcess};
pub use stack::Stack;
