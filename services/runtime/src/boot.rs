//! The start every service binary shares, in one order: the container
//! probe before anything else is read; then, with the service's
//! configuration, logging and tracing and the process's TLS identity (for
//! its servers and every client it opens).

use std::net::SocketAddr;

use anyhow::Context as _;

use crate::config::CommonConfig;
use crate::settings::Env;
use crate::settings::Setting;
use crate::telemetry::TelemetryGuard;

/// The `probe` subcommand: exit 0 if the service on this host is ready
/// (`GET /readyz` on its admin port). Reads nothing but that port's
/// setting, so a health check works whatever else is misconfigured.
pub fn probe(admin: &Setting<SocketAddr>) -> anyhow::Result<()> {
    crate::admin::probe_from_env(&Env::from_process(), admin)
}

/// Logging and tracing, then the TLS identity; the guard flushes traces
/// when dropped, so keep it for the life of the process.
pub fn start(common: &CommonConfig) -> anyhow::Result<TelemetryGuard> {
    let telemetry = crate::telemetry::init(common)?;
    crate::tls::install(common.tls.as_ref()).context("cannot load the internal TLS certificate")?;
    Ok(telemetry)
}
