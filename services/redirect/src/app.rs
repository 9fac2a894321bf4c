//! Wiring: listeners (port 0 works, for tests), the tiers, the background
//! tasks (invalidations, click flushing, database probes), and serving until
//! the injected shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tinyurl_runtime::{AdminServer, Readiness, Stopping};
use tokio::net::TcpListener;

use crate::clicks::Clicks;
use crate::config::Config;
use crate::entry::CachePolicy;
use crate::http::{HttpMetrics, Shared};
use crate::l2::SharedCache;
use crate::resolve::{Resolver, Settings};
use crate::store::LinkStore;

pub struct App {
    config: Config,
    shared: Arc<Shared>,
    store: Arc<LinkStore>,
    l2: Option<SharedCache>,
    listener: TcpListener,
    admin: AdminServer,
    readiness: Readiness,
}

impl App {
    /// Builds the tiers and binds both listeners. Nothing here waits on
    /// Postgres or Redis: redirect serves what it can reach, and connects to
    /// the rest as it comes up.
    pub async fn build(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Self> {
        let store = Arc::new(LinkStore::connect(
            &config.replica_urls,
            config.database_url.as_ref(),
            config.pool_size,
            config.db_timeout,
        )?);
        let l2 = config
            .redis_url
            .as_ref()
            .map(|url| {
                SharedCache::connect(
                    url,
                    config.redis_timeout,
                    config.cache_ttl,
                    config.negative_ttl,
                )
            })
            .transpose()
            .context("invalid TINYURL_REDIS_URL")?;
        let resolver = Arc::new(Resolver::new(
            &Settings {
                l1_capacity: config.l1_capacity,
                l1_ttl: config.l1_ttl,
                l1_negative_ttl: config.l1_negative_ttl,
                policy: CachePolicy {
                    permanent_max_age: config.permanent_max_age,
                },
            },
            l2.clone(),
            Arc::clone(&store),
        ));
        let shared = Arc::new(Shared {
            resolver,
            clicks: Arc::new(Clicks::new(config.clicks_max_codes)),
            public_base_url: config.public_base_url.clone(),
            metrics: HttpMetrics::new(),
        });
        let listener = TcpListener::bind(config.common.listen)
            .await
            .with_context(|| {
                format!("cannot bind the HTTP listener on {}", config.common.listen)
            })?;
        let readiness = Readiness::default();
        let admin =
            AdminServer::bind(config.common.admin_listen, metrics, readiness.clone()).await?;
        Ok(Self {
            config,
            shared,
            store,
            l2,
            listener,
            admin,
            readiness,
        })
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` resolves; then not-ready, drain in-flight
    /// requests (bounded by the drain timeout), flush clicks, exit.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stopping = Stopping::watch(shutdown, self.readiness.clone());
        let admin = tokio::spawn(self.admin.run(stopping.clone().wait()));
        let probes = tokio::spawn(Arc::clone(&self.store).probe_unhealthy(stopping.clone().wait()));
        let invalidations = match &self.config.redis_url {
            Some(url) => {
                let subscriber = crate::invalidation::subscriber(url, self.config.redis_timeout)?;
                Some(tokio::spawn(crate::invalidation::follow(
                    subscriber,
                    Arc::clone(&self.shared.resolver),
                    stopping.clone().wait(),
                )))
            }
            None => None,
        };
        let clicks = tokio::spawn(
            Arc::clone(&self.shared.clicks).run(
                self.l2
                    .as_ref()
                    .map(|l2| (l2.client().clone(), l2.options().clone())),
                self.config.clicks_flush,
                stopping.clone().wait(),
            ),
        );
        let gauges = tokio::spawn(report_gauges(Arc::clone(&self.shared), stopping.clone()));

        let listener = self.listener.tap_io(|stream| {
            // Redirect responses are tiny: send them now, not after Nagle.
            let _ = stream.set_nodelay(true);
        });
        let server = axum::serve(listener, crate::http::router(Arc::clone(&self.shared)))
            .with_graceful_shutdown(stopping.clone().wait());
        self.readiness.set_ready(true);
        let drain = self.config.common.drain_timeout;
        let served = tokio::select! {
            served = server => served.context("the HTTP server failed"),
            () = stopping.clone().drain_deadline(drain) => {
                tracing::warn!(?drain, "drain timeout reached; closing remaining connections");
                Ok(())
            }
        };
        // Flush the last clicks (bounded: every Redis command has a timeout).
        let _ = tokio::time::timeout(Duration::from_secs(2), clicks).await;
        gauges.abort();
        probes.abort();
        if let Some(invalidations) = invalidations {
            let _ = tokio::time::timeout(Duration::from_secs(1), invalidations).await;
        }
        if let Ok(Err(error)) = admin.await {
            tracing::warn!(%error, "admin server failed");
        }
        tracing::info!("stopped");
        served
    }
}

async fn report_gauges(shared: Arc<Shared>, stopping: Stopping) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let stopped = stopping.wait();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = &mut stopped => return,
        }
        metrics::gauge!("redirect_l1_entries").set(shared.resolver.l1_entries() as f64);
    }
}
