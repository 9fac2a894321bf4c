//! Wiring: listeners (port 0 works, for tests), migrations, the ID buffer,
//! and serving until the injected shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::ExposeSecret as _;
use tinyurl_domain::CodeCodec;
use tinyurl_proto::v1::links_server::LinksServer;
use tinyurl_runtime::lifecycle;
use tinyurl_runtime::{AdminServer, Readiness, Stopping};
use tokio::net::TcpListener;

use crate::auth::KeyCache;
use crate::cache::{LinkCache, RedisLinkCache};
use crate::config::Config;
use crate::leaser::IdLeaser;
use crate::service::{LinksService, State};
use crate::store::LinkStore;

/// Where the writer keeps links and which cache it keeps coherent.
pub struct Backend {
    pub store: Arc<dyn LinkStore>,
    pub cache: Arc<dyn LinkCache>,
}

pub struct App {
    config: Config,
    state: Arc<State>,
    grpc_listener: TcpListener,
    admin: AdminServer,
    readiness: Readiness,
}

/// The configured store, migrated: for serving and for the `api-key` and
/// `migrate` commands.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn LinkStore>> {
    crate::store::open(&config.database_url, config.pool_size, config.db_timeout).await
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
        Self::build_with(config, Backend { store, cache }, metrics).await
    }

    /// Fills the ID buffer and binds both listeners, with a store that is
    /// already open and migrated. Fails when idalloc cannot be reached: a
    /// writer that cannot create should not report ready.
    pub async fn build_with(
        config: Config,
        backend: Backend,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        let Backend { store, cache } = backend;
        let codec = CodeCodec::new(
            config.code_secret.expose_secret().as_bytes(),
            config.code_min_length,
        )
        .context("invalid TINYURL_CODE_SECRET or TINYURL_CODE_MIN_LENGTH")?;
        let channel = idalloc_channel(&config)?;
        let leaser = IdLeaser::new(channel, config.idalloc_timeout, config.lease_horizon);
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
        let readiness = Readiness::default();
        let admin =
            AdminServer::bind(config.common.admin_listen, metrics, readiness.clone()).await?;
        let state = Arc::new(State {
            store,
            cache,
            leaser,
            codec,
            policy: config.target_policy.clone(),
            public_base_url: config.public_base_url.clone(),
            keys: KeyCache::default(),
        });
        Ok(Self {
            config,
            state,
            grpc_listener,
            admin,
            readiness,
        })
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc_listener.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` resolves; then not-ready, drain, exit.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (health_reporter, health, reflection) = lifecycle::grpc_support()?;
        health_reporter
            .set_serving::<LinksServer<LinksService>>()
            .await;
        let links = tonic::service::interceptor::InterceptedService::new(
            LinksServer::new(LinksService::new(Arc::clone(&self.state))),
            crate::auth::authenticate,
        );

        let stopping = Stopping::watch(shutdown, self.readiness.clone());
        let admin = tokio::spawn(self.admin.run(stopping.clone().wait()));
        let gauges = tokio::spawn(report_gauges(Arc::clone(&self.state), stopping.clone()));
        let router = lifecycle::grpc_server()
            .add_service(health)
            .add_service(reflection)
            .add_service(links);
        self.readiness.set_ready(true);
        let served = lifecycle::serve_grpc(
            router,
            self.grpc_listener,
            stopping,
            self.config.common.drain_timeout,
            "writer",
        )
        .await;
        gauges.abort();
        if let Ok(Err(error)) = admin.await {
            tracing::warn!(%error, "admin server failed");
        }
        served
    }
}

/// One channel over every idalloc endpoint in `TINYURL_IDALLOC_URL`
/// (comma-separated); calls are balanced across the endpoints that are up.
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
    match endpoints.len() {
        0 => anyhow::bail!("TINYURL_IDALLOC_URL holds no endpoint"),
        1 => Ok(endpoints.remove(0).connect_lazy()),
        _ => Ok(tonic::transport::Channel::balance_list(
            endpoints.into_iter(),
        )),
    }
}

async fn report_gauges(state: Arc<State>, stopping: Stopping) {
    stopping
        .every(Duration::from_secs(1), || async {
            metrics::gauge!("writer_ids_buffered").set(state.leaser.buffered() as f64);
        })
        .await;
}
