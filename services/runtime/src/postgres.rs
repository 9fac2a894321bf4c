//! Postgres plumbing shared by the services that use it: a bounded pool and
//! migrations serialised across replicas.

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Hook, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use secrecy::{ExposeSecret as _, SecretString};

/// Connection settings from a URL, with the timeout on connecting, TCP
/// keepalives, the application name, and `synchronous_commit = on` so that a
/// reported write is durable whatever the database default.
pub fn connection_config(
    url: &SecretString,
    application_name: &str,
    timeout: Duration,
) -> anyhow::Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(url.expose_secret())
        .context("TINYURL_DATABASE_URL is not a valid Postgres URL")?;
    config
        .connect_timeout(timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .application_name(application_name)
        .options("-c synchronous_commit=on");
    Ok(config)
}

/// A pool whose every wait, connect and recycle is bounded by `timeout`;
/// `post_create` runs on each new connection before it is used.
///
/// Its connections also carry `statement_timeout = timeout`: a caller that
/// stops waiting drops its connection back into the pool, and without a
/// bound on the server's side the statement it left behind would keep
/// running there, so the next caller handed that connection (a create's
/// insert) waits for it — for as long as the abandoned statement runs.
/// Work that needs longer sets its own bound (`SET LOCAL`).
pub fn pool(
    mut config: tokio_postgres::Config,
    size: usize,
    timeout: Duration,
    post_create: Option<Hook>,
) -> anyhow::Result<Pool> {
    let options = format!(
        "{} -c statement_timeout={}",
        config.get_options().unwrap_or_default(),
        timeout.as_millis()
    );
    config.options(options.trim_start());
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls_for(&config)? {
        Some(tls) => Manager::from_config(config, tls, manager_config),
        None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
    };
    let mut builder = Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        });
    if let Some(hook) = post_create {
        builder = builder.post_create(hook);
    }
    builder.build().context("cannot build the Postgres pool")
}

/// The TLS connector for `config`: with `sslmode=require` in the URL,
/// rustls verifying the server against the internal CA; plaintext
/// otherwise (`prefer`, the default, does not try TLS).
fn tls_for(
    config: &tokio_postgres::Config,
) -> anyhow::Result<Option<tokio_postgres_rustls::MakeRustlsConnect>> {
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Ok(None);
    }
    let tls = crate::tls::installed().context(
        "sslmode=require needs internal TLS (TINYURL_INTERNAL_TLS_CA and the certificate)",
    )?;
    crate::tls::postgres_tls(&tls).map(Some)
}

/// One connection outside the pool, its I/O driven by a task of its own.
pub async fn connect(
    config: &tokio_postgres::Config,
) -> anyhow::Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let drive = |connection: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>| {
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "postgres connection ended");
            }
        })
    };
    Ok(match tls_for(config)? {
        Some(tls) => {
            let (client, connection) = config.connect(tls).await?;
            (client, drive(Box::pin(connection)))
        }
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            (client, drive(Box::pin(connection)))
        }
    })
}

/// Runs `migrations` on a connection of its own while holding the advisory
/// lock `lock_key`, so replicas starting together apply them once; then
/// `grants`, which give each service's role what it uses of the schema
/// (idempotent, so every run applies them, to tables old and new).
pub async fn migrate(
    config: &tokio_postgres::Config,
    timeout: Duration,
    lock_key: i64,
    history_table: &str,
    mut migrations: refinery::Runner,
    grants: &str,
) -> anyhow::Result<()> {
    let (mut client, connection) = tokio::time::timeout(timeout, connect(config))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to Postgres timed out after {timeout:?}"))?
        .context("cannot connect to Postgres to migrate")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&lock_key])
        .await
        .context("cannot take the migration lock")?;
    let report = migrations
        .set_migration_table_name(history_table)
        .run_async(&mut client)
        .await
        .map_err(anyhow::Error::from);
    let report = match report {
        Ok(report) => client
            .batch_execute(grants)
            .await
            .context("cannot grant the service roles their privileges")
            .map(|()| report),
        Err(error) => Err(error),
    };
    // Unlock on the same session whatever happened; if this fails the lock
    // goes with the connection.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&lock_key])
        .await;
    let report = report.context("migration failed")?;
    unlock.context("cannot release the migration lock")?;
    for migration in report.applied_migrations() {
        tracing::info!(migration = %migration, "applied migration");
    }
    drop(client);
    let _ = connection.await;
    Ok(())
}

/// For a service that does not migrate (`TINYURL_MIGRATE=false`: its role
/// may read and write rows but not change the schema): fails, saying what to
/// run, unless every migration of `migrations` is applied. A newer schema
/// is fine — that is a rolling upgrade in progress.
pub async fn check_migrated(
    config: &tokio_postgres::Config,
    timeout: Duration,
    history_table: &str,
    migrations: &refinery::Runner,
    binary: &str,
) -> anyhow::Result<()> {
    let needed = migrations
        .get_migrations()
        .iter()
        .map(|migration| i64::from(migration.version()))
        .max()
        .unwrap_or(0);
    let (client, connection) = tokio::time::timeout(timeout, connect(config))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to Postgres timed out after {timeout:?}"))?
        .context("cannot connect to Postgres to check the schema")?;
    let applied = tokio::time::timeout(
        timeout,
        client.query_one(
            &format!("SELECT coalesce(max(version), 0)::int8 FROM {history_table}"),
            &[],
        ),
    )
    .await
    .map_err(|_| anyhow::anyhow!("checking the schema timed out after {timeout:?}"))?;
    drop(client);
    let _ = connection.await;
    let applied: i64 = match applied {
        Ok(row) => row.try_get(0)?,
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => 0,
        Err(error) => {
            return Err(error).context(format!("cannot read {history_table}"));
        }
    };
    if applied < needed {
        anyhow::bail!(
            "the database schema is at version {applied} and this {binary} needs {needed}; \
             TINYURL_MIGRATE=false, so run `{binary} migrate` with the migrator role's URL first"
        );
    }
    Ok(())
}

/// Whether a Postgres error is worth retrying: no SQLSTATE (the connection
/// broke or could not be made), a connection exception, a server shutting
/// down or starting, a read-only standby, a serialization failure or deadlock,
/// or too many connections. Services answer these with `UNAVAILABLE`.
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    let Some(state) = error.code() else {
        return true;
    };
    let code = state.code();
    code.starts_with("08") // connection exception
        || code.starts_with("57P") // operator intervention: shutdown, cannot connect now
        || code == "25006" // read-only transaction: we reached a standby
        || code == "40001" // serialization failure
        || code == "40P01" // deadlock detected
        || code == "53300" // too many connections
}
