//! `dev-stack`: the split system on one machine for development, with nothing set
//! up beforehand. Starts a Postgres primary, a streaming replica and Redis on
//! free loopback ports (as the tests do), runs the services in this process,
//! prints every endpoint and a first API key, and runs until Ctrl-C or SIGTERM.
//!
//! Run: `cargo run --release -p tinyurl-system-tests --bin dev-stack`

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use tinyurl_harness::{PgCluster, RedisServer};
use tinyurl_runtime::Env;

#[derive(Parser)]
#[command(
    name = "dev-stack",
    about = "Runs tinyurl with throwaway Postgres (primary + replica) and Redis on this machine"
)]
struct Args {
    /// idalloc gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    idalloc_listen: SocketAddr,
    /// idalloc admin listen address (/metrics, /healthz, /readyz).
    #[arg(long, default_value = "127.0.0.1:9091")]
    idalloc_admin_listen: SocketAddr,
    /// writer gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50052")]
    writer_listen: SocketAddr,
    /// writer admin listen address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    writer_admin_listen: SocketAddr,
    /// redirect HTTP listen address (the public endpoint).
    #[arg(long, default_value = "127.0.0.1:8080")]
    redirect_listen: SocketAddr,
    /// redirect admin listen address.
    #[arg(long, default_value = "127.0.0.1:9093")]
    redirect_admin_listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let common_env = Env::from_process();
    let log_filter = common_env
        .read(&tinyurl_runtime::config::LOG_FILTER)?
        .into_owned();

    eprintln!("starting postgres (primary + streaming replica) and redis …");
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let redis = RedisServer::start().await?;

    // A throwaway token for a throwaway system, like the code secret below.
    let idalloc_token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let idalloc_env = Env::from_pairs([
        ("TINYURL_DATABASE_URL", database.primary_url.clone()),
        ("TINYURL_IDALLOC_TOKEN", idalloc_token.clone()),
        ("TINYURL_LISTEN", args.idalloc_listen.to_string()),
        (
            "TINYURL_ADMIN_LISTEN",
            args.idalloc_admin_listen.to_string(),
        ),
        ("RUST_LOG", log_filter.clone()),
    ]);
    let idalloc_config = tinyurl_idalloc::Config::from_env(&idalloc_env)?;
    let _telemetry = tinyurl_runtime::telemetry::init(&idalloc_config.common)?;
    let metrics = tinyurl_runtime::admin::install_metrics_recorder()?;
    let idalloc = tinyurl_idalloc::App::build(idalloc_config, Some(metrics.clone()))
        .await
        .context("cannot start idalloc")?;

    let writer_env = Env::from_pairs([
        ("TINYURL_DATABASE_URL", database.primary_url.clone()),
        (
            "TINYURL_IDALLOC_URL",
            format!("http://{}", idalloc.grpc_addr()?),
        ),
        ("TINYURL_IDALLOC_TOKEN", idalloc_token),
        ("TINYURL_REDIS_URL", redis.url()),
        // A throwaway secret for a throwaway system; real deployments set their own.
        (
            "TINYURL_CODE_SECRET",
            uuid::Uuid::new_v4().simple().to_string(),
        ),
        ("TINYURL_LISTEN", args.writer_listen.to_string()),
        ("TINYURL_ADMIN_LISTEN", args.writer_admin_listen.to_string()),
        (
            "TINYURL_PUBLIC_BASE_URL",
            format!("http://{}", args.redirect_listen),
        ),
        ("RUST_LOG", log_filter.clone()),
    ]);
    let redirect_env = Env::from_pairs([
        ("TINYURL_REPLICA_URLS", database.replica_urls.join(",")),
        ("TINYURL_DATABASE_URL", database.primary_url.clone()),
        ("TINYURL_REDIS_URL", redis.url()),
        ("TINYURL_LISTEN", args.redirect_listen.to_string()),
        (
            "TINYURL_ADMIN_LISTEN",
            args.redirect_admin_listen.to_string(),
        ),
        (
            "TINYURL_PUBLIC_BASE_URL",
            format!("http://{}", args.redirect_listen),
        ),
        ("RUST_LOG", log_filter),
    ]);
    let writer_config = tinyurl_writer::Config::from_env(&writer_env)?;
    let store = tinyurl_writer::app::open_store(&writer_config).await?;
    let name = tinyurl_links::auth::KeyName::parse("dev-stack")?;
    let api_key = tinyurl_links::keys::issue_key(
        store.as_ref(),
        &name,
        tinyurl_links::auth::Scope::Manage,
        None,
    )
    .await
    .context("cannot create an API key")?
    .key;
    let idalloc_grpc = idalloc.grpc_addr()?;
    let idalloc_admin = idalloc.admin_addr()?;
    // idalloc must be serving before the writer leases its first ranges.
    let idalloc_task = tokio::spawn(idalloc.run(tinyurl_runtime::shutdown_signal()));
    let writer = tinyurl_writer::App::build(writer_config, Some(metrics.clone()))
        .await
        .context("cannot start the writer")?;
    let redirect = tinyurl_redirect::App::build(
        tinyurl_redirect::Config::from_env(&redirect_env)?,
        Some(metrics),
    )
    .await
    .context("cannot start the redirect service")?;

    println!("postgres primary  {}", database.primary_url);
    println!("postgres replica  {}", database.replica_urls.join(", "));
    println!("redis             {}", redis.url());
    println!("idalloc gRPC      http://{idalloc_grpc}");
    println!("idalloc admin     http://{idalloc_admin}/metrics");
    println!("writer gRPC       http://{}", writer.grpc_addr()?);
    println!("writer admin      http://{}/metrics", writer.admin_addr()?);
    println!(
        "redirect HTTP     http://{}/{{code}}",
        redirect.http_addr()?
    );
    println!(
        "redirect admin    http://{}/metrics",
        redirect.admin_addr()?
    );
    println!("API key           {api_key}");
    println!("press Ctrl-C to stop; every server and its data go away with it");

    let redirect_task = tokio::spawn(redirect.run(tinyurl_runtime::shutdown_signal()));
    writer.run(tinyurl_runtime::shutdown_signal()).await?;
    redirect_task.await.context("redirect task failed")??;
    idalloc_task.await.context("idalloc task failed")??;
    drop(redis);
    drop(cluster);
    Ok(())
}
