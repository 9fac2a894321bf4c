//! One shutdown path for every service: the shutdown future flips readiness
//! to not-ready first (so load balancers stop routing), then tells every part
//! (gRPC or HTTP server, admin listener, background tasks) to stop; in-flight
//! work drains for at most the drain timeout.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

pub use crate::stopping::Stopping;

/// Health (every `tinyurl.v1` service reported serving by the caller) and
/// reflection over the `tinyurl.v1` and health descriptors.
pub fn grpc_support() -> anyhow::Result<(
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tinyurl_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    Ok((reporter, health, reflection))
}

/// Calls one connection may have open at once (HTTP/2
/// `SETTINGS_MAX_CONCURRENT_STREAMS`); a client multiplexing more waits.
pub const GRPC_MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Longest a call may run on the server before it is cancelled: far above
/// any legitimate call (a 1,000-link batch takes milliseconds), so a stuck
/// dependency cannot pin a call, and its memory, for ever.
pub const GRPC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The server builder every gRPC service starts from, hardened in one place:
/// bounded streams and in-flight calls per connection, a server-side call
/// timeout, HTTP/2 and TCP keepalives that drop dead peers, and a span per
/// call parented on the caller's trace. Each service also bounds the size of
/// the requests it decodes (`max_decoding_message_size`), to what its
/// largest legitimate request needs.
pub fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .trace_fn(crate::grpc::server_span)
        .max_concurrent_streams(Some(GRPC_MAX_STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(GRPC_MAX_STREAMS_PER_CONNECTION as usize)
        .timeout(GRPC_REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
}

/// Serves `router` on `listener` until `stopping`, then drains in-flight
/// calls for at most `drain`; over TLS when `tls` is given (see
/// [`crate::tls::accept`]).
pub async fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    stopping: Stopping,
    drain: Duration,
    service: &'static str,
) -> anyhow::Result<()> {
    let bound: SocketAddr = listener.local_addr()?;
    tracing::info!(service, addr = %bound, tls = tls.is_some(), "serving");
    let shutdown = stopping.clone();
    let serve = async move {
        match tls {
            Some(config) => {
                router
                    .serve_with_incoming_shutdown(
                        crate::tls::accept(listener, config),
                        shutdown.wait(),
                    )
                    .await
            }
            None => {
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                router
                    .serve_with_incoming_shutdown(incoming, shutdown.wait())
                    .await
            }
        }
    };
    tokio::select! {
        result = serve => result.context("gRPC server failed")?,
        () = stopping.drain_deadline(drain) => {
            tracing::warn!(service, ?drain, "drain timeout passed, abandoning in-flight calls");
        }
    }
    tracing::info!(service, "stopped");
    Ok(())
}
