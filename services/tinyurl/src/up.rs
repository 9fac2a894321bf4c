//! `tinyurl up`: idalloc, writer and redirect in one process, with the same
//! gRPC and HTTP interfaces as the split deployment, on one SQLite file and
//! an in-process cache that the writer keeps coherent for the redirect
//! service. Nothing else needs to run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use secrecy::SecretString;
use tinyurl_links::cache::MemoryLinkCache;
use tinyurl_redirect::config as redirect;
use tinyurl_runtime::memory::MemoryCache;
use tinyurl_runtime::proxies::TrustedProxies;
use tinyurl_runtime::settings::Table;
use tinyurl_runtime::{CommonConfig, ConfigError, Env};
use tinyurl_writer::settings as writer;

mod data;
use data::{Data, FirstKey};

/// Entries of the in-process shared cache (the L2 of the split deployment).
const SHARED_CACHE_ENTRIES: u64 = 100_000;

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// The SQLite database file (created on first start).
    #[arg(long, env = "TINYURL_DATA", default_value = "./tinyurl.db")]
    pub data: PathBuf,
    /// Public HTTP listener of the redirect service.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// gRPC listener of the writer (the create API).
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub grpc: SocketAddr,
    /// REST API listener of the writer (`/api/v1/…`).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub rest: SocketAddr,
    /// gRPC listener of idalloc.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub idalloc: SocketAddr,
    /// Admin listeners (`/metrics`, `/healthz`, `/readyz`) of idalloc, the
    /// writer and redirect, in that order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:9091,127.0.0.1:9092,127.0.0.1:9093"
    )]
    pub admin: Vec<SocketAddr>,
    /// Base of short URLs [default: http://<--http>].
    #[arg(long, env = "TINYURL_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    /// Proxies in front (Caddy, nginx) whose X-Forwarded-For names the
    /// client: comma-separated CIDRs or addresses. Without it, every visitor
    /// behind a proxy shares the proxy's address in the limits (the scanner
    /// throttle, failed authentications) and the analytics.
    #[arg(long, env = "TINYURL_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
}

/// Settings of the split deployment that `tinyurl up` takes from its
/// environment for its writer and redirect services; it decides the others
/// (listeners, the store, idalloc's address and token, the base URL).
pub const WRITER_SETTINGS: Table = &[
    &writer::BLOCKED_HOSTS,
    &writer::BLOCKLIST_FILE,
    &writer::ALLOW_PRIVATE_TARGETS,
    &writer::CODE_MIN_LENGTH,
    &writer::REST_CORS_ORIGINS,
    &writer::CONSOLE,
    &writer::CONSOLE_IDLE_TIMEOUT,
    &writer::CONSOLE_SESSION_LIFETIME,
    &writer::RATE_LIMIT_PER_KEY,
    &writer::DAILY_CREATE_QUOTA,
    &writer::AUTH_FAILURE_RATE_PER_IP,
    &writer::KEY_LOOKUPS_PER_SECOND,
    &writer::KEY_CACHE_SIZE,
    &writer::REST_HEADER_TIMEOUT,
    &writer::REST_REQUEST_TIMEOUT,
    &writer::REST_MAX_CONNECTIONS,
    &writer::REST_MAX_CONNECTIONS_PER_ADDRESS,
    &writer::CLICKS_MINUTE_RETENTION,
    &writer::CLICKS_DAY_RETENTION,
    &writer::CLICKS_VALUES_PER_BUCKET,
    &writer::IDEMPOTENCY_RETENTION,
    &writer::WEBHOOKS_DELIVER,
    &writer::WEBHOOKS_ALLOW_PRIVATE,
    &writer::WEBHOOK_TIMEOUT,
    &writer::WEBHOOK_RETRY_BASE,
    &writer::WEBHOOK_RETRY_MAX,
    &writer::WEBHOOK_DISABLE_AFTER,
];
pub const REDIRECT_SETTINGS: Table = &[
    &redirect::SCANNER_404_PER_MINUTE,
    &redirect::PASSWORD_ATTEMPTS_PER_ADDRESS,
    &redirect::PASSWORD_ATTEMPTS_PER_LINK,
    &redirect::UNKNOWN_HOSTS,
    &redirect::GEOIP_DB,
];

/// The variables of `settings` that `from` sets.
fn only(from: &Env, settings: Table) -> Env {
    Env::from_pairs(settings.iter().filter_map(|setting| {
        from.get(setting.name())
            .map(|value| (setting.name(), value.to_owned()))
    }))
}

/// Where a service of this process listens, and how it logs.
fn place(common: &mut CommonConfig, listen: SocketAddr, admin: SocketAddr, log_filter: &str) {
    common.listen = listen;
    common.admin_listen = admin;
    common.log_filter = log_filter.to_owned();
}

/// Starts everything and serves until SIGINT or SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let process_env = Env::from_process();
    let plan = Plan::of(&args, &process_env)?;
    let mut idalloc_config = tinyurl_idalloc::Config::with(
        plan.database_url.clone(),
        vec![plan.idalloc_token.clone()],
        &Env::default(),
    )?;
    place(
        &mut idalloc_config.common,
        args.idalloc,
        plan.admin[0],
        &plan.log_filter,
    );
    // Standard output is the banner; logs go to standard error.
    let _telemetry = tinyurl_runtime::telemetry::init_with(
        &idalloc_config.common,
        tinyurl_runtime::telemetry::LogOutput::Stderr,
    )?;
    let data = Data::open(&args.data, &process_env).await?;

    let metrics = tinyurl_runtime::admin::install_metrics_recorder()?;
    let idalloc = tinyurl_idalloc::App::build(idalloc_config, Some(metrics.clone()))
        .await
        .context("cannot start idalloc")?;
    let idalloc_grpc = idalloc.grpc_addr()?;
    let idalloc_admin = idalloc.admin_addr()?;
    // idalloc must be serving before the writer leases its first ranges.
    let idalloc_task = tokio::spawn(idalloc.run(tinyurl_runtime::shutdown_signal()));

    let writer_config = plan.writer(&args, &process_env, idalloc_grpc, data.code_secret)?;
    let redirect_config = plan.redirect(&args, &process_env, &writer_config.public_base_url)?;
    let shared_cache = MemoryCache::new(SHARED_CACHE_ENTRIES);
    let redirect = tinyurl_redirect::App::build_with(
        redirect_config.clone(),
        tinyurl_redirect::app::Backend {
            source: tinyurl_redirect::app::open_source(&redirect_config).await?,
            cache: tinyurl_redirect::app::CacheTier::Memory(Arc::clone(&shared_cache)),
        },
        Some(metrics.clone()),
    )
    .await
    .context("cannot start the redirect service")?;
    let cache_ttl = writer_config.cache_ttl;
    let console = writer_config.console;
    let writer = tinyurl_writer::App::build_with(
        writer_config,
        tinyurl_writer::app::Backend {
            store: data.store,
            clicks: match shared_cache.take_click_reader() {
                Some(reader) => {
                    tinyurl_writer::app::ClickSource::Memory(reader, Arc::clone(&shared_cache))
                }
                None => tinyurl_writer::app::ClickSource::None,
            },
            cache: Arc::new(MemoryLinkCache::new(shared_cache, cache_ttl)),
        },
        Some(metrics),
    )
    .await
    .context("cannot start the writer")?;

    banner(&Banner {
        data: &args.data,
        redirect: redirect.http_addr()?,
        writer: writer.grpc_addr()?,
        rest: writer.rest_addr(),
        console,
        idalloc: idalloc_grpc,
        admin: [idalloc_admin, writer.admin_addr()?, redirect.admin_addr()?],
        public_base_url: &plan.public_base_url,
        first_key: data.first_key,
    });
    serve(idalloc_task, redirect, writer).await
}

/// What `tinyurl up` decides before anything starts: one store for all
/// three services, a token for this run, where each listens and logs.
struct Plan {
    database_url: SecretString,
    idalloc_token: SecretString,
    log_filter: String,
    public_base_url: String,
    /// idalloc's, the writer's and the redirect service's.
    admin: [SocketAddr; 3],
    trusted_proxies: TrustedProxies,
}

impl Plan {
    fn of(args: &UpArgs, process_env: &Env) -> anyhow::Result<Self> {
        let [idalloc, writer, redirect] = args.admin[..] else {
            anyhow::bail!("--admin takes exactly three addresses");
        };
        Ok(Self {
            database_url: SecretString::from(format!("sqlite:{}", args.data.display())),
            // idalloc listens on a port like any other: the writer
            // authenticates with a token made for this run, so nothing else
            // on the machine leases.
            idalloc_token: SecretString::from(format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )),
            log_filter: process_env
                .read(&tinyurl_runtime::config::LOG_FILTER)?
                .into_owned(),
            public_base_url: args
                .public_base_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", args.http)),
            admin: [idalloc, writer, redirect],
            trusted_proxies: TrustedProxies::parse(&args.trusted_proxies).map_err(|reason| {
                ConfigError {
                    variable: writer::TRUSTED_PROXIES.name,
                    reason,
                }
            })?,
        })
    }

    /// The writer's configuration: what `up` decides, and the settings it
    /// passes through from its environment.
    fn writer(
        &self,
        args: &UpArgs,
        process_env: &Env,
        idalloc: SocketAddr,
        code_secret: SecretString,
    ) -> anyhow::Result<tinyurl_writer::Config> {
        let mut config = tinyurl_writer::Config::with(
            tinyurl_writer::config::Required {
                database_url: self.database_url.clone(),
                idalloc_url: format!("http://{idalloc}"),
                idalloc_token: self.idalloc_token.clone(),
                code_secret,
            },
            &only(process_env, WRITER_SETTINGS),
        )?;
        place(
            &mut config.common,
            args.grpc,
            self.admin[1],
            &self.log_filter,
        );
        config.rest_listen = Some(args.rest);
        config.set_public_base_url(&self.public_base_url)?;
        config.trusted_proxies = self.trusted_proxies.clone();
        Ok(config)
    }

    /// The redirect service's configuration, on the same store and base URL
    /// as the writer's.
    fn redirect(
        &self,
        args: &UpArgs,
        process_env: &Env,
        public_base_url: &str,
    ) -> anyhow::Result<tinyurl_redirect::Config> {
        let mut config = tinyurl_redirect::Config::with(
            Vec::new(),
            Some(self.database_url.clone()),
            &only(process_env, REDIRECT_SETTINGS),
        )?;
        place(
            &mut config.common,
            args.http,
            self.admin[2],
            &self.log_filter,
        );
        public_base_url.clone_into(&mut config.public_base_url);
        config.trusted_proxies = self.trusted_proxies.clone();
        Ok(config)
    }
}

/// What the banner shows.
struct Banner<'a> {
    data: &'a Path,
    redirect: SocketAddr,
    writer: SocketAddr,
    rest: Option<SocketAddr>,
    /// The REST listener serves the console too.
    console: bool,
    idalloc: SocketAddr,
    admin: [SocketAddr; 3],
    public_base_url: &'a str,
    first_key: Option<FirstKey>,
}

/// Standard output of `tinyurl up`: where everything is, and the first key.
fn banner(banner: &Banner<'_>) {
    let [idalloc_admin, writer_admin, redirect_admin] = banner.admin;
    println!("data              {}", banner.data.display());
    println!("redirect HTTP     http://{}/{{code}}", banner.redirect);
    println!("writer gRPC       http://{}", banner.writer);
    if let Some(rest) = banner.rest {
        println!("REST API          http://{rest}/api/v1/links (OpenAPI: /api/v1/openapi.json)");
        if banner.console {
            println!("web console       http://{rest}/console/ (sign in with an API key)");
        }
    }
    println!("idalloc gRPC      http://{}", banner.idalloc);
    println!(
        "admin             http://{idalloc_admin} (idalloc), http://{writer_admin} (writer), http://{redirect_admin} (redirect)"
    );
    println!("short URLs        {}/{{code}}", banner.public_base_url);
    match &banner.first_key {
        Some(FirstKey::Shown(key)) => {
            println!("API key           {key}");
            println!(
                "                  (created now and shown only once: keep it, e.g. export TINYURL_API_KEY=…)"
            );
        }
        Some(FirstKey::Written(path)) => {
            println!(
                "API key           written to {} (mode 0600; standard output is not a terminal, so it is not shown: read it, then delete the file)",
                path.display()
            );
        }
        None => println!(
            "API key           (already created on first start; make another with `tinyurl api-key create`)"
        ),
    }
    println!("ready; Ctrl-C stops");
}

/// Serves until SIGINT or SIGTERM. The writer stops after the redirect
/// service has drained and sent its last clicks, so its consumer folds them
/// before the process exits.
async fn serve(
    idalloc: tokio::task::JoinHandle<anyhow::Result<()>>,
    redirect: tinyurl_redirect::App,
    writer: tinyurl_writer::App,
) -> anyhow::Result<()> {
    let redirect_task = tokio::spawn(redirect.run(tinyurl_runtime::shutdown_signal()));
    let (redirect_stopped, redirect_stopped_rx) = tokio::sync::oneshot::channel();
    let redirect_task = tokio::spawn(async move {
        let served = redirect_task.await;
        let _ = redirect_stopped.send(());
        served
    });
    let served = writer
        .run(async move {
            let _ = redirect_stopped_rx.await;
        })
        .await;
    let redirect_served = redirect_task
        .await
        .context("redirect task failed")?
        .context("redirect task failed")?;
    let idalloc_served = idalloc.await.context("idalloc task failed")?;
    served.and(redirect_served).and(idalloc_served)
}
