//! The REST listener's accept loop: hyper's HTTP/1.1 connections with the
//! router as their service, bounded like the public redirect's. A client
//! has [`ListenerLimits::header_read_timeout`] to send a request's headers
//! and [`ListenerLimits::request_timeout`] for the whole request (a body
//! trickled in is cut off with 408); at most
//! [`ListenerLimits::max_connections`] are open, and at most
//! [`ListenerLimits::max_connections_per_address`] from one address (an
//! IPv6 /64 counts as one; trusted proxies are exempt, as every client
//! behind them shares their address). The key is checked from the headers
//! before any body is read (the handlers' first extractor), so none of this
//! has to hold a stranger's body.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tinyurl_runtime::Stopping;
use tinyurl_runtime::proxies::TrustedProxies;
use tower::ServiceExt as _;

use crate::rest::{ApiError, Peer};

/// The listener's bounds; settings of the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
}

impl ListenerLimits {
    /// The limits unless configured (the settings' defaults).
    pub const DEFAULT: Self = Self {
        header_read_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        max_connections: 4_096,
        max_connections_per_address: 64,
    };
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Open connections per client address, for the per-address bound.
#[derive(Default)]
struct OpenPerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One open connection of an address; closing it (dropping this) counts it
/// out.
struct Counted {
    open: Arc<OpenPerAddress>,
    address: IpAddr,
}

impl OpenPerAddress {
    /// Counts a connection from `address` in, unless it has `limit` open.
    fn admit(self: &Arc<Self>, address: IpAddr, limit: usize) -> Option<Counted> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(address).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Counted {
            open: Arc::clone(self),
            address,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.open.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Serves `router` on `listener` until stopping; the requests in flight
/// then finish and the connections close.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: ListenerLimits,
    proxies: TrustedProxies,
    stopping: Stopping,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let per_address = Arc::new(OpenPerAddress::default());
    // Every connection task holds a sender; when the last one is dropped
    // after stopping, `open.recv()` returns None: all drained.
    let (alive, mut open) = tokio::sync::mpsc::channel::<Infallible>(1);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = stopping.wait();
    tokio::pin!(stopped);
    loop {
        // At the cap, connections wait in the kernel's backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut stopped => break,
        };
        let Ok(slot) = slot else { break };
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => break,
        };
        let counted = if proxies.contains(peer.ip()) {
            None
        } else {
            match per_address.admit(
                tinyurl_runtime::proxies::limited(peer.ip()),
                limits.max_connections_per_address,
            ) {
                Some(counted) => Some(counted),
                None => {
                    metrics::counter!("writer_rest_connections_refused_total", "reason" => "per_address")
                        .increment(1);
                    // Closed unread: this address has its share open.
                    drop(io);
                    continue;
                }
            }
        };
        let router = router.clone();
        let builder = Arc::clone(&builder);
        let alive = alive.clone();
        let mut stop = stop_rx.clone();
        let request_timeout = limits.request_timeout;
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(Peer(peer)));
                    let router = router.clone();
                    async move {
                        let response = match tokio::time::timeout(
                            request_timeout,
                            router.oneshot(request.map(axum::body::Body::new)),
                        )
                        .await
                        {
                            Ok(Ok(response)) => response,
                            Ok(Err(never)) => match never {},
                            Err(_) => ApiError::request_timeout().into_response(),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
            let connection = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(connection);
            let stopping = async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            };
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stopping => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop((counted, slot, alive));
        });
    }
    let _ = stop_tx.send(true);
    drop(alive);
    let _ = open.recv().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_and_closing_gives_it_back() {
        let open = Arc::new(OpenPerAddress::default());
        let address: IpAddr = "192.0.2.1".parse().expect("an address");
        let first = open.admit(address, 2);
        let second = open.admit(address, 2);
        assert!(first.is_some() && second.is_some());
        assert!(open.admit(address, 2).is_none(), "a third is refused");
        let other: IpAddr = "192.0.2.2".parse().expect("an address");
        assert!(open.admit(other, 2).is_some(), "another address is not");
        drop(first);
        assert!(
            open.admit(address, 2).is_some(),
            "a closed one is given back"
        );
        drop(second);
    }
}
