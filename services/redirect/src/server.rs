//! The public listener's accept loop: HTTP/1.1 connections served by hyper
//! directly, with the handler as a plain `service_fn` (no router or tower
//! layers between the socket and the lookup), bounded header reads
//! (slow-loris), bounded buffers, and a graceful drain.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::http::Shared;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer bound per connection: a redirect request is a few hundred
/// bytes; anything near this is not one.
const MAX_BUFFER: usize = 16 * 1024;

/// Serves `listener` until `stopped` resolves, then lets every open
/// connection finish its in-flight request and waits for them to close.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stopped: impl std::future::Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUFFER)
        .keep_alive(true);
    let builder = Arc::new(builder);
    // Every connection task holds a sender; when the last one is dropped
    // after stopping, `open.recv()` returns None: all drained.
    let (alive, mut open) = mpsc::channel::<Infallible>(1);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => break,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => (stream, Some(peer.ip())),
            Err(error) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Redirect responses are tiny: send them now, not after Nagle.
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let builder = Arc::clone(&builder);
        let alive = alive.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let shared = Arc::clone(&shared);
                // Only a POST's body is read (a password form); for the rest
                // the request line and headers are all that matters.
                let (parts, body) = request.into_parts();
                let body = (parts.method == hyper::Method::POST).then_some(body);
                async move {
                    Ok::<_, Infallible>(crate::http::handle(&shared, &parts, body, peer).await)
                }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
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
            drop(alive);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive);
    let _ = open.recv().await;
}
