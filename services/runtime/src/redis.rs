//! Redis plumbing shared by the services that use it: one way to configure
//! a fred client so that every command is bounded and fails fast while Redis
//! is down, instead of queueing behind reconnects.

use std::time::Duration;

use fred::prelude::{Builder, Config, Options, ReconnectPolicy};
use secrecy::{ExposeSecret as _, SecretString};

/// A client builder for `url` whose commands time out after `timeout`, are
/// tried once, and reconnects with a capped exponential backoff.
///
/// A `rediss://` URL speaks TLS: verified against the internal CA when
/// internal TLS is on, the system's roots otherwise. A user name and
/// password in the URL are sent with AUTH (ACL users included).
pub fn builder(url: &SecretString, timeout: Duration) -> anyhow::Result<Builder> {
    let mut config = Config::from_url(url.expose_secret())?;
    if config.tls.is_some()
        && let Some(tls) = crate::tls::installed()
    {
        config.tls = Some(crate::tls::redis_tls(&tls)?);
    }
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|connection| {
            // Connecting and internal commands get at least 500 ms: a short
            // command timeout should not make every reconnect fail.
            connection.connection_timeout = timeout.max(Duration::from_millis(500));
            connection.internal_command_timeout = timeout.max(Duration::from_millis(500));
            connection.max_command_attempts = 1;
        })
        .with_performance_config(|performance| {
            performance.default_command_timeout = timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    Ok(builder)
}

/// Per-command options to pair with [`builder`]: bounded, one attempt, and an
/// immediate error (not a queued command) while disconnected.
pub fn command_options(timeout: Duration) -> Options {
    Options {
        timeout: Some(timeout),
        fail_fast: true,
        max_attempts: Some(1),
        ..Options::default()
    }
}

/// `ttl` as the milliseconds of `PX`: at least 1 (Redis refuses 0), and the
/// largest value for a TTL too long to represent.
pub fn px_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}
