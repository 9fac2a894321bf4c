//! `tinyurl-writer`: configuration → telemetry → App → serve until SIGTERM.

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use tinyurl_links::keys::KeyCommand;
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
    /// Manage API keys: create, list, revoke, rotate.
    #[command(subcommand)]
    ApiKey(KeyCommand),
    /// Block a host (`bad.example`, or `*.bad.example` for everything under
    /// it; any spelling) for every writer, and block every link to it:
    /// redirects answer 410 within a second, and owners cannot undo it.
    BlockHost {
        /// `host` or `*.suffix`.
        host: String,
    },
    /// Lift a block made by block-host: links to the host go back to what
    /// their owners chose.
    UnblockHost {
        /// `host` or `*.suffix`, as blocked (any spelling).
        host: String,
    },
    /// Exit 0 if the writer on this host is ready (container health check).
    Probe,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = Cli::command()
        .after_long_help(tinyurl_writer::config::env_help())
        .after_help("Run with --help for the environment variables.")
        .get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    if let Some(Command::Probe) = cli.command {
        return tinyurl_runtime::boot::probe(&tinyurl_writer::settings::ADMIN_LISTEN);
    }
    let config = Config::from_env(&Env::from_process())?;
    let _telemetry = tinyurl_runtime::boot::start(&config.common)?;

    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate { online: false, .. } => {
            tinyurl_writer::app::open_store_migrating(&config, true).await?;
            Ok(())
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
            Ok(())
        }
        Command::ApiKey(command) => {
            let store = tinyurl_writer::app::open_store(&config).await?;
            let report = tinyurl_links::keys::run(store.as_ref(), command, false)
                .await
                .map_err(|error| match error.field() {
                    Some(field) => anyhow::anyhow!("{field}: {}", error.public_message()),
                    None => anyhow::anyhow!("{}", error.public_message()),
                })?;
            if !report.stderr.is_empty() {
                eprintln!("{}", report.stderr);
            }
            if !report.stdout.is_empty() {
                println!("{}", report.stdout);
            }
            Ok(())
        }
        Command::BlockHost { host } => change_block(&config, &host, true).await,
        Command::UnblockHost { host } => change_block(&config, &host, false).await,
        Command::Probe => Ok(()),
        Command::Serve => {
            let metrics = tinyurl_runtime::admin::install_metrics_recorder()?;
            let app = App::build(config, Some(metrics))
                .await
                .context("cannot start the writer")?;
            tracing::info!(grpc = %app.grpc_addr()?, admin = %app.admin_addr()?, "listening");
            app.run(tinyurl_runtime::shutdown_signal()).await
        }
    }
}

/// `block-host` (`block`) or `unblock-host`.
async fn change_block(
    config: &tinyurl_writer::config::Config,
    host: &str,
    block: bool,
) -> anyhow::Result<()> {
    let (store, cache) = blocklist_tools(config).await?;
    let (entry, links) = tinyurl_links::blocklist::change(store.as_ref(), &cache, host, block)
        .await
        .map_err(|error| anyhow::anyhow!("{}", error.public_message()))?;
    let verb = tinyurl_links::blocklist::verb(block);
    eprintln!("{verb} {entry}; {links} links to it {verb}");
    Ok(())
}

/// The store and the cache a blocklist change is made with: the
/// announcements are what make redirects answer at once.
async fn blocklist_tools(
    config: &tinyurl_writer::config::Config,
) -> anyhow::Result<(
    std::sync::Arc<dyn tinyurl_links::store::LinkStore>,
    tinyurl_links::cache::RedisLinkCache,
)> {
    let store = tinyurl_writer::app::open_store(config).await?;
    let cache = match &config.redis_url {
        Some(url) => tinyurl_links::cache::RedisLinkCache::connect(
            url,
            config.redis_timeout,
            config.cache_ttl,
        )?,
        None => tinyurl_links::cache::RedisLinkCache::disabled(),
    };
    cache
        .wait_connected(std::time::Duration::from_secs(5))
        .await?;
    Ok((store, cache))
}
