//! Wiring: binds the gRPC and admin listeners (port 0 works, for tests), runs
//! migrations, and serves until the injected shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tinyurl_proto::v1::id_allocator_server::IdAllocatorServer;
use tinyurl_runtime::{AdminServer, Readiness};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::config::Config;
use crate::service::IdAllocatorService;
use crate::store::LeaseStore;

/// How often expired request ids are purged and readiness re-checked.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);

pub struct App {
    config: Config,
    store: LeaseStore,
    grpc_listener: TcpListener,
    admin: AdminServer,
    readiness: Readiness,
}

impl App {
    /// Binds both listeners and applies migrations. Fails if Postgres cannot
    /// be reached: a replica that cannot lease should not report healthy.
    pub async fn build(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Self> {
        let store = LeaseStore::connect(
            &config.database_url,
            config.pool_size,
            config.db_timeout,
            config.failover_skip,
        )?;
        store.migrate().await?;
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
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<IdAllocatorServer<IdAllocatorService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tinyurl_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("cannot build the reflection service")?;
        let service = IdAllocatorService::new(self.store.clone(), self.config.max_lease);

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let readiness = self.readiness.clone();
        let drain_timeout = self.config.common.drain_timeout;
        tokio::spawn(async move {
            shutdown.await;
            // Not ready first, so load balancers stop routing before we drain.
            readiness.set_ready(false);
            let _ = stop_tx.send(true);
        });

        let maintenance = tokio::spawn(maintain(
            self.store.clone(),
            self.readiness.clone(),
            self.config.lease_retention,
            stop_rx.clone(),
        ));
        let admin = tokio::spawn(self.admin.run(wait_for_stop(stop_rx.clone())));

        let bound = self.grpc_listener.local_addr()?;
        let incoming = TcpIncoming::from(self.grpc_listener).with_nodelay(Some(true));
        self.readiness.set_ready(true);
        tracing::info!(addr = %bound, "idalloc serving");
        let serve = tonic::transport::Server::builder()
            .trace_fn(tinyurl_runtime::grpc::server_span)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(IdAllocatorServer::new(service))
            .serve_with_incoming_shutdown(incoming, wait_for_stop(stop_rx.clone()));

        let mut stop_for_deadline = stop_rx;
        let deadline = async move {
            let _ = stop_for_deadline.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(drain_timeout).await;
        };
        tokio::select! {
            result = serve => result.context("gRPC server failed")?,
            () = deadline => tracing::warn!(?drain_timeout, "drain timeout passed, abandoning in-flight calls"),
        }
        maintenance.abort();
        if let Ok(Err(error)) = admin.await {
            tracing::warn!(%error, "admin server failed");
        }
        tracing::info!("idalloc stopped");
        Ok(())
    }
}

async fn wait_for_stop(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Purges expired request ids and keeps readiness honest: an idalloc that
/// cannot reach Postgres should leave the load balancer's rotation.
async fn maintain(
    store: LeaseStore,
    readiness: Readiness,
    retention: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(MAINTENANCE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        match store.ping().await {
            Ok(()) => readiness.set_ready(true),
            Err(error) => {
                tracing::warn!(error = %error, "postgres unreachable, reporting not ready");
                readiness.set_ready(false);
                continue;
            }
        }
        match store.purge_leases_older_than(retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged expired request ids"),
            Err(error) => tracing::warn!(error = %error, "cannot purge expired request ids"),
        }
    }
}
