//! Wiring: listeners (port 0 works, for tests), migrations, the ID buffer,
//! and serving until the injected shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fred::prelude::ClientLike as _;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::{ExposeSecret as _, SecretString};
use tinyurl_domain::{CodeCodec, TargetPolicy};
use tinyurl_proto::v1::links_server::LinksServer;
use tinyurl_runtime::lifecycle;
use tinyurl_runtime::memory::{ClickBatch, MemoryCache};
use tinyurl_runtime::{AdminServer, Readiness, Stopping};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::grpc::LinksService;
use tinyurl_analytics::consumer::{self, ConsumerSettings, RedisConsumer};
use tinyurl_links::auth::KeyCache;
use tinyurl_links::cache::{LinkCache, RedisLinkCache};
use tinyurl_links::leaser::IdLeaser;
use tinyurl_links::store::LinkStore;
use tinyurl_links::{LinkService, State};

/// Where the writer keeps links, which cache it keeps coherent, and where
/// click batches come from.
pub struct Backend {
    pub store: Arc<dyn LinkStore>,
    pub cache: Arc<dyn LinkCache>,
    pub clicks: ClickSource,
}

/// The click stream the analytics consumer reads.
pub enum ClickSource {
    /// No consumer in this process.
    None,
    /// The Redis stream, as one consumer of the writers' group.
    Redis(SecretString),
    /// The embedded deployment's in-process stream.
    Memory(mpsc::Receiver<ClickBatch>, Arc<MemoryCache>),
}

/// Finished minutes are rolled up into days this often.
const ROLL_UP_EVERY: Duration = Duration::from_secs(60);
/// Retention runs this often; each run deletes in small slices.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// Folded batch ids are remembered this long: far beyond the click stream's
/// age bound, so every redelivery finds its id.
const BATCH_ID_RETENTION: Duration = Duration::from_secs(2 * 24 * 3600);

pub struct App {
    /// The blocklist file as loaded, for the watcher to compare against.
    blocklist_bytes: Vec<u8>,
    config: Config,
    state: Arc<State>,
    clicks: ClickSource,
    grpc_listener: TcpListener,
    /// The REST API's listener, when configured.
    rest_listener: Option<TcpListener>,
    admin: AdminServer,
    readiness: Readiness,
}

/// The configured store, migrated (or, with `TINYURL_MIGRATE=false`,
/// checked): for serving and the `api-key` and host commands.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn LinkStore>> {
    open_store_migrating(config, config.migrate).await
}

/// The configured store, migrated when `migrate` (the `migrate` command
/// always does) or checked.
pub async fn open_store_migrating(
    config: &Config,
    migrate: bool,
) -> anyhow::Result<Arc<dyn LinkStore>> {
    tinyurl_links::store::open(
        &config.database_url,
        config.pool_size,
        config.db_timeout,
        &config.layout,
        migrate,
    )
    .await
}

impl App {
    /// Opens the configured store (migrating it) and cache, then
    /// [`Self::build_with`].
    pub async fn build(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Self> {
        let store = open_store(&config).await?;
        let cache: Arc<dyn LinkCache> = match &config.redis_url {
            Some(url) => Arc::new(
                RedisLinkCache::connect(url, config.redis_timeout, config.cache_ttl)
                    .context("invalid TINYURL_REDIS_URL")?,
            ),
            None => Arc::new(RedisLinkCache::disabled()),
        };
        let clicks = match (&config.clicks_redis_url, &config.redis_url) {
            _ if !config.clicks_consumer => ClickSource::None,
            (Some(url), _) | (None, Some(url)) => ClickSource::Redis(url.clone()),
            (None, None) => ClickSource::None,
        };
        Self::build_with(
            config,
            Backend {
                store,
                cache,
                clicks,
            },
            metrics,
        )
        .await
    }

    /// Fills the ID buffer and binds both listeners, with a store that is
    /// already open and migrated. Fails when idalloc cannot be reached: a
    /// writer that cannot create should not report ready.
    pub async fn build_with(
        config: Config,
        backend: Backend,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        let Backend {
            store,
            cache,
            clicks,
        } = backend;
        let codec = CodeCodec::new(
            config.code_secret.expose_secret().as_bytes(),
            config.code_min_length,
        )
        .context("invalid TINYURL_CODE_SECRET or TINYURL_CODE_MIN_LENGTH")?;
        let channel = idalloc_channel(&config)?;
        let leaser = IdLeaser::new(
            channel,
            &config.idalloc_token,
            config.idalloc_timeout,
            config.lease_horizon,
        )
        .context("invalid TINYURL_IDALLOC_TOKEN")?;
        metrics::gauge!("writer_info", "instance" => leaser.instance().to_owned()).set(1.0);
        leaser
            .prime()
            .await
            .map_err(|error| anyhow::anyhow!("cannot lease the first ID ranges: {error}"))?;

        let grpc_listener = TcpListener::bind(config.common.listen)
            .await
            .with_context(|| {
                format!("cannot bind the gRPC listener on {}", config.common.listen)
            })?;
        let rest_listener = match config.rest_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot bind the REST listener on {address}"))?,
            ),
            None => None,
        };
        let readiness = Readiness::default();
        let admin =
            AdminServer::bind(config.common.admin_listen, metrics, readiness.clone()).await?;
        let limits = tinyurl_links::limits::RateLimits::new(
            config.rate_limit_per_key,
            config.daily_create_quota,
            config.auth_failure_rate_per_ip,
            config
                .redis_url
                .as_ref()
                .map(|url| (url, config.redis_timeout)),
        )
        .context("invalid TINYURL_REDIS_URL")?;
        limits.settle(Duration::from_secs(1)).await;
        let (blocklist, blocklist_bytes) = match &config.blocklist_file {
            Some(path) => tinyurl_links::blocklist::load(path)?,
            None => Default::default(),
        };
        metrics::gauge!("writer_blocklist_entries").set(blocklist.len() as f64);
        let state = Arc::new(State {
            clicks_store: store.clicks(),
            minute_retention: config.clicks_minute_retention,
            store,
            cache,
            leaser,
            codec,
            policy: std::sync::RwLock::new(Arc::new(TargetPolicy {
                blocklist: Arc::new(blocklist.clone()),
                ..config.target_policy.clone()
            })),
            blocklists: std::sync::Mutex::new((blocklist, Default::default())),
            public_base_url: config.public_base_url.clone(),
            keys: KeyCache::new(config.key_cache),
            proxies: config.trusted_proxies.clone(),
            limits,
            link_secret: tinyurl_links::link_secret(config.code_secret.expose_secret().as_bytes()),
            short_hosts: Default::default(),
            webhooks_allow_private: config.webhooks.allow_private,
        });
        Ok(Self {
            blocklist_bytes,
            config,
            state,
            clicks,
            grpc_listener,
            rest_listener,
            admin,
            readiness,
        })
    }

    /// The analytics consumer and the retention job, when this writer
    /// consumes clicks.
    fn start_analytics(
        &mut self,
        stopping: &Stopping,
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let store = Arc::clone(&self.state.clicks_store);
        let settings = ConsumerSettings {
            claim_idle: self.config.clicks_claim_idle,
            minute_retention: self.config.clicks_minute_retention,
            day_retention: self.config.clicks_day_retention,
            values_per_bucket: self.config.clicks_values_per_bucket,
            batch_retention: BATCH_ID_RETENTION,
            maintain_every: ROLL_UP_EVERY,
            prune_every: PRUNE_EVERY,
        };
        let mut tasks = Vec::new();
        match std::mem::replace(&mut self.clicks, ClickSource::None) {
            ClickSource::None => return Ok(tasks),
            ClickSource::Redis(url) => {
                let timeout = self.config.redis_timeout.max(Duration::from_secs(1));
                let consumer_client = tinyurl_runtime::redis::builder(&url, timeout)
                    .context("invalid click stream Redis URL")?
                    .build()?;
                consumer_client.connect();
                let lag_client = tinyurl_runtime::redis::builder(&url, timeout)?.build()?;
                lag_client.connect();
                let consumer =
                    RedisConsumer::new(consumer_client, timeout, Arc::clone(&store), settings);
                tasks.push(tokio::spawn(consumer.run(stopping.clone())));
                tasks.push(tokio::spawn(consumer::report_lag(
                    lag_client,
                    timeout,
                    Duration::from_secs(1),
                    stopping.clone(),
                )));
            }
            ClickSource::Memory(reader, cache) => {
                tasks.push(tokio::spawn(consumer::consume_memory(
                    reader,
                    cache,
                    Arc::clone(&store),
                    settings.values_per_bucket,
                    stopping.clone(),
                )));
            }
        }
        tasks.push(tokio::spawn(consumer::maintain_rollups(
            store,
            settings,
            stopping.clone(),
        )));
        Ok(tasks)
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc_listener.local_addr()
    }

    /// Where the REST API listens, when it does.
    pub fn rest_addr(&self) -> Option<SocketAddr> {
        self.rest_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` resolves; then not-ready, drain, exit.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (health_reporter, health, reflection) = lifecycle::grpc_support()?;
        health_reporter
            .set_serving::<LinksServer<LinksService>>()
            .await;
        // One link service (one group commit) behind both transports.
        let links = Arc::new(LinkService::new(Arc::clone(&self.state)));
        let grpc_links = tinyurl_runtime::grpc::OversizedIsResourceExhausted(
            tonic::service::interceptor::InterceptedService::new(
                LinksServer::new(LinksService::new(
                    Arc::clone(&links),
                    self.config.grpc_trusted_proxies.clone(),
                ))
                .max_decoding_message_size(crate::grpc::MAX_REQUEST_BYTES),
                crate::grpc::authenticate,
            ),
        );

        let stopping = Stopping::watch(shutdown, self.readiness.clone());
        let analytics = self.start_analytics(&stopping)?;
        // Callers may present a certificate; they are API-key authenticated.
        let tls = tinyurl_runtime::tls::installed();
        let server_tls = tls
            .as_ref()
            .map(|tls| tls.server_config(true))
            .transpose()?;
        let rest = self.start_rest(&links, tls.as_ref(), &stopping)?;
        let mut followers = self.start_followers(&stopping);
        if self.config.console && self.config.rest_listen.is_some() {
            followers.push(tokio::spawn(prune_sessions(
                Arc::clone(&links),
                self.config.console_sessions,
                stopping.clone(),
            )));
        }
        if self.config.webhooks_deliver {
            let store = Arc::clone(&self.state.store);
            let settings = self.config.webhooks;
            let stopping = stopping.clone();
            followers.push(tokio::spawn(async move {
                if let Err(error) =
                    tinyurl_links::webhooks::deliver::run(store, settings, stopping).await
                {
                    tracing::error!(error = format!("{error:#}"), "webhook delivery stopped");
                }
            }));
        }
        followers.extend(tls.map(|tls| tokio::spawn(tls.watch(stopping.clone()))));
        let admin = tokio::spawn(self.admin.run(stopping.clone().wait()));
        let router = lifecycle::grpc_server()
            .add_service(health)
            .add_service(reflection)
            .add_service(grpc_links);
        self.readiness.set_ready(true);
        let served = lifecycle::serve_grpc(
            router,
            self.grpc_listener,
            server_tls,
            stopping,
            self.config.common.drain_timeout,
            "writer",
        )
        .await;
        if let Some(rest) = rest {
            match tokio::time::timeout(self.config.common.drain_timeout, rest).await {
                Ok(Ok(Err(error))) => tracing::warn!(%error, "REST server failed"),
                Ok(_) => {}
                Err(_) => tracing::warn!("REST requests still running after the drain timeout"),
            }
        }
        for follower in followers {
            follower.abort();
        }
        // The consumer finishes the batch it is folding (bounded by the
        // store's timeout); the retention job stops between slices.
        for task in analytics {
            let _ = tokio::time::timeout(self.config.db_timeout * 2, task).await;
        }
        if let Ok(Err(error)) = admin.await {
            tracing::warn!(%error, "admin server failed");
        }
        served
    }

    /// The REST API, when it has a listener: the same link service behind
    /// its router, over TLS when the process has an identity.
    fn start_rest(
        &mut self,
        links: &Arc<LinkService>,
        tls: Option<&tinyurl_runtime::tls::InternalTls>,
        stopping: &Stopping,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>> {
        let Some(listener) = self.rest_listener.take() else {
            return Ok(None);
        };
        let mut router = crate::rest::router(Arc::clone(links), &self.config.rest_cors_origins);
        if self.config.console {
            router = router.merge(crate::console::router(
                Arc::clone(links),
                crate::console::ConsoleSettings {
                    timeouts: self.config.console_sessions,
                    tls: tls.is_some(),
                },
            ));
        }
        let tls = tls.map(|tls| tls.server_config(false)).transpose()?;
        Ok(Some(tokio::spawn(serve_rest(
            listener,
            router,
            tls,
            (self.config.rest_limits, self.config.trusted_proxies.clone()),
            stopping.clone(),
        ))))
    }

    /// The tasks that keep this writer in step while it serves (gauges, the
    /// blocklist file and the stored list, the key set, idempotency key
    /// retention); stopped when serving ends.
    fn start_followers(&mut self, stopping: &Stopping) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(report_gauges(Arc::clone(&self.state), stopping.clone())),
            tokio::spawn(tinyurl_links::blocklist::follow_stored(
                Arc::clone(&self.state),
                stopping.clone(),
            )),
            tokio::spawn(tinyurl_links::keys::follow_keys(
                Arc::clone(&self.state),
                stopping.clone(),
            )),
            tokio::spawn(prune_idempotency_keys(
                Arc::clone(&self.state.store),
                stopping.clone(),
            )),
        ];
        if let Some(path) = self.config.blocklist_file.clone() {
            tasks.push(tokio::spawn(tinyurl_links::blocklist::follow(
                Arc::clone(&self.state),
                path,
                std::mem::take(&mut self.blocklist_bytes),
                stopping.clone(),
            )));
        }
        tasks
    }
}

/// Serves the REST API on `listener` (over TLS with `tls`) until stopping;
/// requests in flight then finish.
async fn serve_rest(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    (limits, proxies): (
        crate::rest_listener::ListenerLimits,
        tinyurl_runtime::proxies::TrustedProxies,
    ),
    stopping: Stopping,
) -> std::io::Result<()> {
    match tls {
        None => crate::rest_listener::serve(listener, router, limits, proxies, stopping).await,
        Some(config) => {
            let listener = crate::rest::TlsListener::new(listener, config)?;
            crate::rest_listener::serve(listener, router, limits, proxies, stopping).await;
        }
    }
    Ok(())
}

/// One channel over every idalloc endpoint in `TINYURL_IDALLOC_URL`
/// (comma-separated), over TLS when internal TLS is on.
fn idalloc_channel(config: &Config) -> anyhow::Result<tonic::transport::Channel> {
    let mut endpoints = Vec::new();
    for url in config
        .idalloc_url
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
    {
        endpoints.push(
            tonic::transport::Endpoint::from_shared(url.to_owned())
                .with_context(|| format!("invalid TINYURL_IDALLOC_URL entry {url:?}"))?
                .connect_timeout(config.idalloc_timeout)
                .timeout(config.idalloc_timeout)
                .tcp_nodelay(true),
        );
    }
    anyhow::ensure!(
        !endpoints.is_empty(),
        "TINYURL_IDALLOC_URL holds no endpoint"
    );
    tinyurl_runtime::tls::grpc_channel(endpoints, tinyurl_runtime::tls::installed().as_ref())
}

/// Forgets idempotency keys past their retention, a slice at a time, every
/// few minutes (every writer does; a concurrent prune only wastes a little).
async fn prune_idempotency_keys(store: Arc<dyn LinkStore>, stopping: Stopping) {
    const SLICE: i64 = 10_000;
    let pruned = metrics::counter!("writer_idempotency_keys_pruned_total");
    let watch = stopping.clone();
    stopping
        .every(Duration::from_secs(300), || async {
            while !watch.is_stopping() {
                match store.prune_idempotency_keys(SLICE).await {
                    Ok(0) => break,
                    Ok(keys) => pruned.increment(keys),
                    Err(error) => {
                        tracing::warn!(
                            error = error.public_message(),
                            "idempotency key retention failed"
                        );
                        break;
                    }
                }
            }
        })
        .await;
}

/// Deletes console sessions that timed out, every few minutes (a timed-out
/// session is refused whether or not it was deleted; this keeps the table
/// small).
async fn prune_sessions(
    links: Arc<LinkService>,
    timeouts: tinyurl_links::sessions::SessionTimeouts,
    stopping: Stopping,
) {
    let pruned = metrics::counter!("writer_console_sessions_pruned_total");
    stopping
        .every(Duration::from_secs(300), || async {
            match links.prune_sessions(timeouts).await {
                Ok(sessions) => pruned.increment(sessions),
                Err(error) => {
                    tracing::warn!(
                        error = error.public_message(),
                        "console session pruning failed"
                    );
                }
            }
        })
        .await;
}

async fn report_gauges(state: Arc<State>, stopping: Stopping) {
    stopping
        .every(Duration::from_secs(1), || async {
            metrics::gauge!("writer_ids_buffered").set(state.leaser.buffered() as f64);
        })
        .await;
}
