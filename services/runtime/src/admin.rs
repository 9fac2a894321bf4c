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

/// Asks this host's admin listener whether the service is ready
/// (`GET /readyz` answered 200) within `timeout`. The container health check
/// of images that have no shell or HTTP client: `<binary> probe`.
pub fn probe_ready(admin_listen: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let mut target = admin_listen;
    if target.ip().is_unspecified() {
        // Listening on every interface: loopback reaches it.
        target.set_ip(match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)
        .with_context(|| format!("cannot connect to the admin listener on {target}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head)?;
    let status_line = String::from_utf8_lossy(&head[..read]);
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(status == "200", "not ready: /readyz answered {status:?}");
    Ok(())
}

/// [`probe_ready`] on the admin address the environment configures (the
/// service's `TINYURL_ADMIN_LISTEN`), with a 2 s bound.
pub fn probe_from_env(env: &crate::Env, admin: &crate::Setting<SocketAddr>) -> anyhow::Result<()> {
    probe_ready(env.read(admin)?, Duration::from_secs(2))
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probe_follows_readiness_over_tcp() -> anyhow::Result<()> {
        let readiness = Readiness::default();
        let server = AdminServer::bind("127.0.0.1:0".parse()?, None, readiness.clone()).await?;
        let address = server.local_addr()?;
        let serving = tokio::spawn(server.run(std::future::pending()));
        let probe = move || {
            tokio::task::spawn_blocking(move || probe_ready(address, Duration::from_secs(2)))
        };
        assert!(probe().await?.is_err(), "not ready yet");
        readiness.set_ready(true);
        probe().await??;
        serving.abort();
        let closed: SocketAddr = "127.0.0.1:1".parse()?;
        assert!(probe_ready(closed, Duration::from_millis(200)).is_err());
        Ok(())
    }
}
