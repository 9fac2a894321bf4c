//! `tinyurl-redirect`: configuration → telemetry → App → serve until SIGTERM.

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use tinyurl_redirect::{App, Config};
use tinyurl_runtime::Env;

// Every cache miss allocates a little (entry, key, cache node) across
// threads; mimalloc's thread-local free lists beat the system allocator here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The public redirect endpoint of tinyurl (GET /{code}).
#[derive(Parser)]
#[command(name = "tinyurl-redirect", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Exit 0 if redirect on this host is ready (container health check).
    Probe,
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command()
        .after_long_help(tinyurl_redirect::config::env_help())
        .after_help("Run with --help for the environment variables.")
        .get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    if let Some(Command::Probe) = cli.command {
        return tinyurl_runtime::boot::probe(&tinyurl_redirect::config::ADMIN_LISTEN);
    }
    let config = Config::from_env(&Env::from_process())?;
    // HTTP is served by threads of their own (see `App::run`); this runtime
    // only carries background work and the admin listener.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let _telemetry = tinyurl_runtime::boot::start(&config.common)?;
    let metrics = tinyurl_runtime::admin::install_metrics_recorder()?;
    let app = App::build(config, Some(metrics))
        .await
        .context("cannot start the redirect service")?;
    tracing::info!(http = %app.http_addr()?, admin = %app.admin_addr()?, "listening");
    app.run(tinyurl_runtime::shutdown_signal()).await
}
