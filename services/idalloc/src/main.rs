//! `tinyurl-idalloc`: configuration → telemetry → App → serve until SIGTERM.

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use tinyurl_idalloc::{App, Config};
use tinyurl_runtime::Env;

/// Leases disjoint, durable ID ranges to writers over gRPC (tinyurl.v1.IdAllocator).
#[derive(Parser)]
#[command(name = "tinyurl-idalloc", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations and serve (the default).
    Serve,
    /// Apply pending schema migrations and exit.
    Migrate,
    /// Exit 0 if idalloc on this host is ready (container health check).
    Probe,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = Cli::command()
        .after_long_help(tinyurl_idalloc::config::env_help())
        .after_help("Run with --help for the environment variables.")
        .get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    if let Some(Command::Probe) = cli.command {
        return tinyurl_runtime::boot::probe(&tinyurl_idalloc::config::ADMIN_LISTEN);
    }
    let config = Config::from_env(&Env::from_process())?;
    let _telemetry = tinyurl_runtime::boot::start(&config.common)?;

    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => tinyurl_idalloc::store::open(
            &config.database_url,
            1,
            config.db_timeout,
            config.failover_skip,
            true,
        )
        .await
        .map(drop),
        Command::Probe => Ok(()),
        Command::Serve => {
            let metrics = tinyurl_runtime::admin::install_metrics_recorder()?;
            let app = App::build(config, Some(metrics))
                .await
                .context("cannot start idalloc")?;
            tracing::info!(grpc = %app.grpc_addr()?, admin = %app.admin_addr()?, "listening");
            app.run(tinyurl_runtime::shutdown_signal()).await
        }
    }
}
