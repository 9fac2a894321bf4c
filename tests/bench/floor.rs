//! The floor of the redirect's Redis path: the least code that does the
//! same work (an HTTP/1.1 request read by hyper, one `GET` of the code's
//! cache entry with fred, the entry decoded, a 302 with its target), on the
//! same threading (one single-threaded runtime per serving thread with its
//! own Redis connection, `SO_REUSEPORT`) and the same Redis client settings.
//! No tiers, limits, metrics, click counting or validation: what the
//! redirect costs beyond this is what its own code adds.
//!
//! With `memory`, the floor of the L1 path: each serving thread keeps the
//! answers it looked up in a map of its own, so a hot code costs the HTTP
//! exchange and one map lookup.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use fred::prelude::*;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use secrecy::SecretString;
use tinyurl_domain::CachedLink;
use tinyurl_domain::cached::link_key;

thread_local! {
    /// The L1 floor's answers on this serving thread, by code.
    static MEMORY: RefCell<HashMap<String, Option<HeaderValue>>> = RefCell::new(HashMap::new());
}

/// Serves on `addr` with `threads` serving threads until killed; with
/// `memory`, each thread keeps what it looked up.
pub fn serve(
    addr: SocketAddr,
    redis_url: &str,
    threads: usize,
    memory: bool,
) -> anyhow::Result<()> {
    let url = SecretString::from(redis_url.to_owned());
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || serve_thread(addr, &url, memory))
        })
        .collect();
    for handle in handles {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("a floor thread panicked"))??;
    }
    Ok(())
}

fn serve_thread(addr: SocketAddr, url: &SecretString, memory: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = tinyurl_runtime::redis::builder(url, Duration::from_millis(250))?.build()?;
        client.init().await.context("cannot connect to Redis")?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseport(true)?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let client = client.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        let client = client.clone();
                        async move {
                            Ok::<_, Infallible>(answer(&client, request.uri().path(), memory).await)
                        }
                    });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(client: &Client, path: &str, memory: bool) -> hyper::Response<String> {
    let code = path.trim_start_matches('/');
    let remembered = if memory {
        MEMORY.with_borrow(|answers| answers.get(code).cloned())
    } else {
        None
    };
    let location = match remembered {
        Some(location) => location,
        None => {
            let raw: Option<String> = client.get(link_key(code)).await.unwrap_or(None);
            let location = raw
                .as_deref()
                .and_then(CachedLink::decode)
                .and_then(|link| HeaderValue::from_str(&link.target_url).ok());
            if memory {
                MEMORY.with_borrow_mut(|answers| answers.insert(code.to_owned(), location.clone()));
            }
            location
        }
    };
    let mut response = hyper::Response::new(String::new());
    match location {
        Some(location) => {
            *response.status_mut() = hyper::StatusCode::FOUND;
            response
                .headers_mut()
                .insert(hyper::header::LOCATION, location);
        }
        None => *response.status_mut() = hyper::StatusCode::NOT_FOUND,
    }
    response
}
