//! The admin listener: Prometheus `/metrics`, liveness `/healthz` and readiness
//! `/readyz`. It runs on its own port so that the public listener never exposes
//! it and so that scrapes are not queued behind user traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Whether the service should receive traffic. Starts not ready; the service
/// marks it ready once its dependencies are reachable and flips it back first
/// thing on shutdown, so load balancers stop sending before draining starts.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
}

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Latency buckets in seconds: sub-millisecond cache hits up to multi-second
/// database timeouts.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder. Call once, early in `main`;
/// every `_seconds` metric becomes a histogram with [`LATENCY_BUCKETS_SECONDS`].
///
/// Histogram samples are buffered until they are folded into buckets; a
/// thread does that every few seconds, so memory stays flat whether or not
/// anything scrapes `/metrics`.
pub fn install_metrics_recorder() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            LATENCY_BUCKETS_SECONDS,
        )
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        })
        .context("cannot start the metrics upkeep thread")?;
    Ok(handle)
}

#[derive(Clone)]
struct AdminState {
    metrics: Option<PrometheusHandle>,
    readiness: Readiness,
}

/// The admin router; `metrics` is `None` when no recorder is installed (tests
/// that run several services in one process).
pub fn admin_router(metrics: Option<PrometheusHandle>, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(AdminState { metrics, readiness })
}

async fn render_metrics(State(state): State<AdminState>) -> (StatusCode, String) {
    match &state.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled\n".to_owned(),
        ),
    }
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// A bound admin listener.
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl AdminServer {
    pub async fn bind(
        address: SocketAddr,
        metrics: Option<PrometheusHandle>,
        readiness: Readiness,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot bind the admin listener on {address}"))?;
        Ok(Self {
            listener,
            router: admin_router(metrics, readiness),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    async fn status_of(router: Router, path: &str) -> StatusCode {
        router
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
            .status()
    }

    #[tokio::test]
    async fn readiness_follows_the_flag() {
        let readiness = Readiness::default();
        let router = admin_router(None, readiness.clone());
        assert_eq!(
            status_of(router.clone(), "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status_of(router.clone(), "/healthz").await, StatusCode::OK);
        readiness.set_ready(true);
        assert_eq!(status_of(router, "/readyz").await, StatusCode::OK);
    }
}
