//! Wiring: binds the gRPC and admin listeners (port 0 works, for tests), runs
//! migrations, and serves until the injected shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tinyurl_proto::v1::id_allocator_server::IdAllocatorServer;
use tinyurl_runtime::lifecycle;
use tinyurl_runtime::{AdminServer, Readiness, Stopping};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::service::IdAllocatorService;
use std::sync::Arc;

use crate::store::LeaseStore;

/// How often expired request ids are purged and readiness re-checked.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);

pub struct App {
    config: Config,
    store: Arc<dyn LeaseStore>,
    grpc_listener: TcpListener,
    admin: AdminServer,
    readiness: Readiness,
}

impl App {
    /// Binds both listeners and applies migrations. Fails if Postgres cannot
    /// be reached: a replica that cannot lease should not report healthy.
    pub async fn build(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Self> {
        let store = crate::store::open(
            &config.database_url,
            config.pool_size,
            config.db_timeout,
            config.failover_skip,
            config.migrate,
        )
        .await?;
        // The first pooled connection runs the failover guard before serving.
        store
            .ping()
            .await
            .map_err(|error| anyhow::anyhow!("postgres is not usable: {error}"))?;

        let grpc_listener = TcpListener::bind(config.common.listen)
            .await
            .with_context(|| {
                format!("cannot bind the gRPC listener on {}", config.common.listen)
            })?;
        let readiness = Readiness::default();
        let admin =
            AdminServer::bind(config.common.admin_listen, metrics, readiness.clone()).await?;
        Ok(Self {
            config,
            store,
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

    /// Serves until `shutdown` resolves, then stops accepting, drains in-flight
    /// calls for up to the drain timeout and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (health_reporter, health, reflection) = lifecycle::grpc_support()?;
        health_reporter
            .set_serving::<IdAllocatorServer<IdAllocatorService>>()
            .await;
        let tls = tinyurl_runtime::tls::installed();
        let policy = match &tls {
            Some(_) => self.config.policy.clone().requiring_client_certificates(),
            None => self.config.policy.clone(),
        };
        let service =
            IdAllocatorService::new(Arc::clone(&self.store), self.config.max_lease, policy);

        let stopping = Stopping::watch(shutdown, self.readiness.clone());
        let maintenance = tokio::spawn(maintain(
            Arc::clone(&self.store),
            self.readiness.clone(),
            self.config.lease_retention,
            stopping.clone(),
        ));
        let admin = tokio::spawn(self.admin.run(stopping.clone().wait()));
        // With internal TLS, only callers holding a certificate from the CA
        // are served (the service token is checked on top).
        let server_tls = tls
            .as_ref()
            .map(|tls| tls.server_config(true))
            .transpose()?;
        let reload = tls.map(|tls| tokio::spawn(tls.watch(stopping.clone())));
        let router = lifecycle::grpc_server()
            .add_service(health)
            .add_service(reflection)
            // A lease request is a namespace, a count and a request id.
            .add_service(tinyurl_runtime::grpc::OversizedIsResourceExhausted(
                IdAllocatorServer::new(service).max_decoding_message_size(16 * 1024),
            ));
        self.readiness.set_ready(true);
        let served = lifecycle::serve_grpc(
            router,
            self.grpc_listener,
            server_tls,
            stopping,
            self.config.common.drain_timeout,
            "idalloc",
        )
        .await;
        maintenance.abort();
        if let Some(reload) = reload {
            reload.abort();
        }
        if let Ok(Err(error)) = admin.await {
            tracing::warn!(%error, "admin server failed");
        }
        served
    }
}

/// Purges expired request ids and keeps readiness honest: an idalloc that
/// cannot reach Postgres should leave the load balancer's rotation.
async fn maintain(
    store: Arc<dyn LeaseStore>,
    readiness: Readiness,
    retention: Duration,
    stopping: Stopping,
) {
    let ticks = stopping.clone();
    ticks
        .every(MAINTENANCE_INTERVAL, || async {
            match store.ping().await {
                // Never turn ready again once shutdown has begun.
                Ok(()) => readiness.set_ready(!stopping.is_stopping()),
                Err(error) => {
                    tracing::warn!(error = %error, "postgres unreachable, reporting not ready");
                    readiness.set_ready(false);
                    return;
                }
            }
            match store.purge_leases_older_than(retention).await {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, "purged expired request ids"),
                Err(error) => tracing::warn!(error = %error, "cannot purge expired request ids"),
            }
        })
        .await;
}
