//! `tinyurl-writer`: configuration → telemetry → App → serve until SIGTERM.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use tinyurl_links::admin::{AdminCommand, Failure};
use tinyurl_runtime::Env;
use tinyurl_writer::{App, Config};

// Every create allocates its request, row and reply across threads;
// mimalloc's thread-local free lists beat the system allocator here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The internal create API of tinyurl (gRPC tinyurl.v1.Links).
#[derive(Parser)]
#[command(name = "tinyurl-writer", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations and serve (the default).
    Serve,
    /// Apply pending schema migrations and exit.
    Migrate {
        /// Partition the links table of a database made before partitioning
        /// (schema V6) while writes continue: mirror, backfill in slices,
        /// swap under a lock held for milliseconds. Run it before rolling
        /// out this version; docs/storage.md has the procedure.
        #[arg(long)]
        online: bool,
        /// With --online: links copied per transaction.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
        slice_rows: i64,
        /// With --online: milliseconds to rest between slices.
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
    },
    #[command(flatten)]
    Admin(AdminCommand),
    /// Exit 0 if the writer on this host is ready (container health check).
    Probe,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let matches = Cli::command()
        .after_long_help(tinyurl_writer::config::env_help())
        .after_help("Run with --help for the environment variables.")
        .get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    if let Some(Command::Probe) = cli.command {
        tinyurl_runtime::boot::probe(&tinyurl_writer::settings::ADMIN_LISTEN)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = Config::from_env(&Env::from_process())?;
    let _telemetry = tinyurl_runtime::boot::start(&config.common)?;

    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate { online: false, .. } => {
            tinyurl_writer::app::open_store_migrating(&config, true).await?;
        }
        Command::Migrate {
            online: true,
            slice_rows,
            pause_ms,
        } => {
            let options = tinyurl_links::store::OnlineMigration {
                slice_rows,
                pause: std::time::Duration::from_millis(pause_ms),
                ..tinyurl_links::store::OnlineMigration::default()
            };
            let report = tinyurl_links::store::migrate_online(
                &config.database_url,
                config.db_timeout,
                &config.layout,
                &options,
            )
            .await?;
            if report.already_applied {
                eprintln!("the links table is partitioned already; nothing to do");
            } else {
                eprintln!(
                    "partitioned {} links ({} copied in {} slices, {} idempotency keys); writes waited {} ms for the swap",
                    report.links,
                    report.rows_copied,
                    report.slices,
                    report.keys_copied,
                    report.swap.as_millis()
                );
            }
        }
        Command::Admin(command) => return administer(config, command).await,
        Command::Probe => {}
        Command::Serve => {
            let metrics = tinyurl_runtime::admin::install_metrics_recorder()?;
            let app = App::build(config, Some(metrics))
                .await
                .context("cannot start the writer")?;
            tracing::info!(grpc = %app.grpc_addr()?, admin = %app.admin_addr()?, "listening");
            app.run(tinyurl_runtime::shutdown_signal()).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `api-key`, `block-host`, `unblock-host` or `roll-up` on this writer's store (or
/// the one `--database-url` names), announcing changed links through its
/// Redis; a refusal ends with the exit code of its kind, as `tinyurl`'s.
async fn administer(mut config: Config, command: AdminCommand) -> anyhow::Result<ExitCode> {
    if let Some(url) = command.database_url() {
        config.database_url = secrecy::SecretString::from(url.to_owned());
    }
    let store = tinyurl_writer::app::open_store(&config).await?;
    let cache = command
        .announcer(
            config.redis_url.as_ref(),
            config.redis_timeout,
            config.cache_ttl,
        )
        .await?;
    match command.run(store.as_ref(), &cache, false).await {
        Ok(report) => {
            if !report.stderr.is_empty() {
                eprintln!("{}", report.stderr);
            }
            if !report.stdout.is_empty() {
                println!("{}", report.stdout);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let failure = Failure::from(error);
            eprintln!("error: {}", failure.message);
            Ok(ExitCode::from(failure.exit_code))
        }
    }
}
