//! `tinyurl up`: idalloc, writer and redirect in one process, with the same
//! gRPC and HTTP interfaces as the split deployment, on one SQLite file and
//! an in-process cache that the writer keeps coherent for the redirect
//! service. Nothing else needs to run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use tinyurl_links::cache::MemoryLinkCache;
use tinyurl_links::store::{KeyStore as _, SqliteLinkStore};
use tinyurl_runtime::Env;
use tinyurl_runtime::memory::MemoryCache;

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

/// Settings of the split deployment that `tinyurl up` passes to its writer
/// and redirect services when they are set.
const WRITER_SETTINGS: &[&str] = &[
    "TINYURL_BLOCKED_HOSTS",
    "TINYURL_BLOCKLIST_FILE",
    "TINYURL_ALLOW_PRIVATE_TARGETS",
    "TINYURL_CODE_MIN_LENGTH",
    "TINYURL_REST_CORS_ORIGINS",
    "TINYURL_RATE_LIMIT_PER_KEY",
    "TINYURL_DAILY_CREATE_QUOTA",
    "TINYURL_AUTH_FAILURE_RATE_PER_IP",
    "TINYURL_KEY_LOOKUPS_PER_SECOND",
    "TINYURL_KEY_CACHE_SIZE",
    "TINYURL_REST_HEADER_TIMEOUT_MS",
    "TINYURL_REST_REQUEST_TIMEOUT_MS",
    "TINYURL_REST_MAX_CONNECTIONS",
    "TINYURL_REST_MAX_CONNECTIONS_PER_ADDRESS",
    "TINYURL_CLICKS_MINUTE_RETENTION",
    "TINYURL_CLICKS_DAY_RETENTION",
    "TINYURL_CLICKS_VALUES_PER_BUCKET",
];
const REDIRECT_SETTINGS: &[&str] = &["TINYURL_SCANNER_404_PER_MINUTE", "TINYURL_GEOIP_DB"];

/// Adds the `names` set in `from` to `to`.
fn passed_through(from: &Env, names: &[&str], to: &mut Vec<(String, String)>) {
    for name in names {
        if let Some(value) = from.get(name) {
            to.push(((*name).to_owned(), value.to_owned()));
        }
    }
}

/// Starts everything and serves until SIGINT or SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let process_env = Env::from_process();
    let log_filter = process_env.string_or("RUST_LOG", "info");
    let public_base_url = args
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.http));
    let [idalloc_admin, writer_admin, redirect_admin] = args.admin[..] else {
        anyhow::bail!("--admin takes exactly three addresses");
    };
    let database_url = format!("sqlite:{}", args.data.display());
    let timeout = Duration::from_secs(5);

    let common = |listen: SocketAddr, admin: SocketAddr| {
        vec![
            ("TINYURL_LISTEN".to_owned(), listen.to_string()),
            ("TINYURL_ADMIN_LISTEN".to_owned(), admin.to_string()),
            ("TINYURL_DATABASE_URL".to_owned(), database_url.clone()),
            ("RUST_LOG".to_owned(), log_filter.clone()),
        ]
    };
    // idalloc listens on a port like any other: the writer authenticates
    // with a token made for this run, so nothing else on the machine leases.
    let idalloc_token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut idalloc_env = common(args.idalloc, idalloc_admin);
    idalloc_env.push(("TINYURL_IDALLOC_TOKEN".to_owned(), idalloc_token.clone()));
    let idalloc_config = tinyurl_idalloc::Config::from_env(&Env::from_pairs(idalloc_env))?;
    // Standard output is the banner; logs go to standard error.
    let _telemetry = tinyurl_runtime::telemetry::init_with(
        &idalloc_config.common,
        tinyurl_runtime::telemetry::LogOutput::Stderr,
    )?;
    secure_data_file(&args.data)?;
    let store = Arc::new(
        SqliteLinkStore::open(&args.data, timeout)
            .await
            .with_context(|| format!("cannot open {}", args.data.display()))?
            .with_idempotency_retention(
                tinyurl_writer::config::layout_from_env(&process_env)?.idempotency_retention,
            ),
    );
    // The code permutation key is generated once and kept with the data: a
    // new key would mint codes that collide with existing ones.
    let code_secret = match process_env.secret("TINYURL_CODE_SECRET") {
        Some(secret) => secret,
        None => SecretString::from(
            store
                .setting_or_insert("code_secret", || {
                    format!(
                        "{}{}",
                        uuid::Uuid::new_v4().simple(),
                        uuid::Uuid::new_v4().simple()
                    )
                })
                .await
                .context("cannot read the code key")?,
        ),
    };
    let first_key = if store.count_api_keys().await? == 0 {
        Some(first_api_key(store.as_ref(), &args.data).await?)
    } else {
        None
    };

    let metrics = tinyurl_runtime::admin::install_metrics_recorder()?;
    let idalloc = tinyurl_idalloc::App::build(idalloc_config, Some(metrics.clone()))
        .await
        .context("cannot start idalloc")?;
    let idalloc_grpc = idalloc.grpc_addr()?;
    let idalloc_admin = idalloc.admin_addr()?;
    // idalloc must be serving before the writer leases its first ranges.
    let idalloc_task = tokio::spawn(idalloc.run(tinyurl_runtime::shutdown_signal()));

    let shared_cache = MemoryCache::new(SHARED_CACHE_ENTRIES);
    let mut redirect_env = common(args.http, redirect_admin);
    redirect_env.extend([
        (
            "TINYURL_PUBLIC_BASE_URL".to_owned(),
            public_base_url.clone(),
        ),
        (
            "TINYURL_TRUSTED_PROXIES".to_owned(),
            args.trusted_proxies.clone(),
        ),
    ]);
    passed_through(&process_env, REDIRECT_SETTINGS, &mut redirect_env);
    let redirect_config = tinyurl_redirect::Config::from_env(&Env::from_pairs(redirect_env))?;
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

    let mut writer_env = common(args.grpc, writer_admin);
    writer_env.extend([
        (
            "TINYURL_IDALLOC_URL".to_owned(),
            format!("http://{idalloc_grpc}"),
        ),
        ("TINYURL_IDALLOC_TOKEN".to_owned(), idalloc_token),
        ("TINYURL_REST_LISTEN".to_owned(), args.rest.to_string()),
        (
            "TINYURL_PUBLIC_BASE_URL".to_owned(),
            public_base_url.clone(),
        ),
        (
            "TINYURL_CODE_SECRET".to_owned(),
            code_secret.expose_secret().to_owned(),
        ),
        (
            "TINYURL_TRUSTED_PROXIES".to_owned(),
            args.trusted_proxies.clone(),
        ),
    ]);
    passed_through(&process_env, WRITER_SETTINGS, &mut writer_env);
    let writer_config = tinyurl_writer::Config::from_env(&Env::from_pairs(writer_env))?;
    let cache_ttl = writer_config.cache_ttl;
    let writer = tinyurl_writer::App::build_with(
        writer_config,
        tinyurl_writer::app::Backend {
            store,
            clicks: match shared_cache.take_click_reader() {
                Some(reader) => tinyurl_writer::app::ClickSource::Memory(reader),
                None => tinyurl_writer::app::ClickSource::None,
            },
            cache: Arc::new(MemoryLinkCache::new(shared_cache, cache_ttl)),
        },
        Some(metrics),
    )
    .await
    .context("cannot start the writer")?;

    println!("data              {}", args.data.display());
    println!(
        "redirect HTTP     http://{}/{{code}}",
        redirect.http_addr()?
    );
    println!("writer gRPC       http://{}", writer.grpc_addr()?);
    if let Some(rest) = writer.rest_addr() {
        println!("REST API          http://{rest}/api/v1/links (OpenAPI: /api/v1/openapi.json)");
    }
    println!("idalloc gRPC      http://{idalloc_grpc}");
    println!(
        "admin             http://{idalloc_admin} (idalloc), http://{} (writer), http://{} (redirect)",
        writer.admin_addr()?,
        redirect.admin_addr()?
    );
    println!("short URLs        {public_base_url}/{{code}}");
    match first_key {
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

    let redirect_task = tokio::spawn(redirect.run(tinyurl_runtime::shutdown_signal()));
    // The writer stops after the redirect service has drained and sent its
    // last clicks, so its consumer folds them before the process exits.
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
    let idalloc_served = idalloc_task.await.context("idalloc task failed")?;
    served.and(redirect_served).and(idalloc_served)
}

/// Where the first API key goes when it cannot be shown: beside the data.
fn key_file(data: &Path) -> PathBuf {
    beside(data, ".api-key")
}

/// The data file's path with `suffix` appended (`tinyurl.db-wal`).
fn beside(data: &Path, suffix: &str) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The data holds the code permutation key and the API key hashes: its
/// directory, when `up` creates it, is 0700 and the database 0600 (SQLite
/// gives its `-wal` and `-shm` files the database's mode). An existing file
/// readable by others is tightened.
fn secure_data_file(data: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    if let Some(parent) = data
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(data)
        .with_context(|| format!("cannot create {}", data.display()))?;
    for suffix in ["", "-wal", "-shm"] {
        let path = beside(data, suffix);
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if metadata.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private", path.display()))?;
            tracing::info!(path = %path.display(), "made the data file readable by its owner only");
        }
    }
    Ok(())
}

/// Where the first API key went.
enum FirstKey {
    /// To a terminal, printed with the banner.
    Shown(String),
    /// To this file, mode 0600.
    Written(PathBuf),
}

/// Creates the first API key. On a terminal a person reads it; anywhere
/// else (a container, a service manager) standard output ends up in a log,
/// so the key goes to a file beside the data only its owner can read. The
/// file is made before the key, so a file that cannot be made costs no key;
/// a key that then cannot be written is revoked (nobody knows it) and the
/// error says how to make another.
async fn first_api_key(
    store: &dyn tinyurl_links::store::LinkStore,
    data: &Path,
) -> anyhow::Result<FirstKey> {
    use std::io::Write as _;
    let file = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        None
    } else {
        let path = key_file(data);
        let file = create_private(&path)
            .with_context(|| format!("cannot create {} for the first API key", path.display()))?;
        Some((path, file))
    };
    let name = tinyurl_links::auth::KeyName::parse("first key (tinyurl up)")?;
    let issued =
        tinyurl_links::keys::issue_key(store, &name, tinyurl_links::auth::Scope::Manage, None)
            .await
            .context("cannot create the first API key")?;
    let Some((path, mut file)) = file else {
        return Ok(FirstKey::Shown(issued.key));
    };
    let written = file
        .write_all(format!("{}\n", issued.key).as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(error) = written {
        let _ = store.revoke_api_key(issued.id).await;
        let _ = std::fs::remove_file(&path);
        return Err(error).with_context(|| {
            format!(
                "cannot write the first API key to {}; it was revoked: make another with `tinyurl api-key create --name NAME --database-url sqlite:{}`",
                path.display(),
                data.display()
            )
        });
    }
    Ok(FirstKey::Written(path))
}

/// A new file at `path`, mode 0600, that no one else had open: whatever
/// was at `path` (an old key file, a symbolic link planted there) is
/// removed, not followed, and the file is created exclusively (`O_EXCL`
/// fails on a link put back in between).
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}
