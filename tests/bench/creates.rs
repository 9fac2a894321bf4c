//! Create load: `CreateLink` / `BatchCreateLinks` over gRPC and
//! `POST /api/v1/links` over HTTP/1.1 keep-alive, as the writer and capacity
//! benchmarks drive it.

use std::sync::Arc;
use std::time::Duration;

use tinyurl_proto::v1::links_client::LinksClient;
use tinyurl_proto::v1::{BatchCreateLinksRequest, CreateLinkRequest, batch_create_links_result};
use tonic::transport::Channel;

use crate::common::{Sample, collect, timed_loop};

/// `concurrency` clients calling `CreateLink` (`batch` 1) or
/// `BatchCreateLinks` of `batch` back to back for `duration`, over at most
/// four HTTP/2 connections.
pub async fn run_writer(
    endpoint: &str,
    key: &Arc<String>,
    concurrency: usize,
    duration: Duration,
    batch: usize,
) -> anyhow::Result<Sample> {
    let mut channels = Vec::new();
    for _ in 0..concurrency.clamp(1, 4) {
        channels.push(Channel::from_shared(endpoint.to_owned())?.connect().await?);
    }
    let start_line = Arc::new(tokio::sync::Barrier::new(concurrency));
    let authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {key}").parse()?;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = LinksClient::new(channels[worker % channels.len()].clone());
        let start_line = Arc::clone(&start_line);
        let authorization = authorization.clone();
        tasks.push(tokio::spawn(async move {
            start_line.wait().await;
            let sample = timed_loop(duration, |call| {
                let mut client = client.clone();
                let authorization = authorization.clone();
                let first = (call - 1) * batch as u64;
                let links: Vec<CreateLinkRequest> = (first..first + batch as u64)
                    .map(|sequence| CreateLinkRequest {
                        target_url: format!("https://example.com/{worker}/{sequence}"),
                        ..CreateLinkRequest::default()
                    })
                    .collect();
                async move {
                    let created = if let [single] = links.as_slice() {
                        let mut request = tonic::Request::new(single.clone());
                        request
                            .metadata_mut()
                            .insert("authorization", authorization);
                        client.create_link(request).await.ok().map(|_| 1)
                    } else {
                        let mut request = tonic::Request::new(BatchCreateLinksRequest { links });
                        request
                            .metadata_mut()
                            .insert("authorization", authorization);
                        client
                            .batch_create_links(request)
                            .await
                            .ok()
                            .map(|response| {
                                response
                                    .into_inner()
                                    .results
                                    .iter()
                                    .filter(|result| {
                                        matches!(
                                            result.result,
                                            Some(batch_create_links_result::Result::Link(_))
                                        )
                                    })
                                    .count()
                            })
                    };
                    // A batch with a failed item counts as an error.
                    created
                        .filter(|created| *created == batch)
                        .map(|created| created as u64)
                }
            })
            .await;
            anyhow::Ok(sample)
        }));
    }
    collect(tasks).await
}

/// One HTTP/1.1 keep-alive connection, as a REST client library keeps.
struct KeepAlive {
    stream: tokio::io::BufStream<tokio::net::TcpStream>,
}

impl KeepAlive {
    async fn connect(address: std::net::SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: tokio::io::BufStream::new(stream),
        })
    }

    /// POSTs `body` as JSON; the response status.
    async fn post_json(
        &mut self,
        path: &str,
        authorization: &str,
        body: &str,
    ) -> anyhow::Result<u16> {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        self.stream.flush().await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("malformed status line {line:?}"))?;
        let mut length = 0_usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut answer = vec![0; length];
        self.stream.read_exact(&mut answer).await?;
        Ok(status)
    }
}

pub async fn run_rest(
    address: std::net::SocketAddr,
    key: &Arc<String>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let start_line = Arc::new(tokio::sync::Barrier::new(concurrency));
    let authorization = Arc::new(format!("Bearer {key}"));
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let connection = Arc::new(tokio::sync::Mutex::new(KeepAlive::connect(address).await?));
        let start_line = Arc::clone(&start_line);
        let authorization = Arc::clone(&authorization);
        tasks.push(tokio::spawn(async move {
            start_line.wait().await;
            let sample = timed_loop(duration, |call| {
                let connection = Arc::clone(&connection);
                let authorization = Arc::clone(&authorization);
                async move {
                    let body =
                        format!("{{\"target_url\":\"https://example.com/rest/{worker}/{call}\"}}");
                    let status = connection
                        .lock()
                        .await
                        .post_json("/api/v1/links", &authorization, &body)
                        .await
                        .ok()?;
                    (status == 201).then_some(1)
                }
            })
            .await;
            anyhow::Ok(sample)
        }));
    }
    collect(tasks).await
}
