//! Steady `CreateLink` load on a set of writers, as a careful client sends
//! it: one idempotency key per link, and a call that fails with
//! `UNAVAILABLE` (or never got an answer: a deadline, a dropped connection)
//! retried with the same key until it succeeds or `--give-up-after` passes;
//! `RESOURCE_EXHAUSTED` (a rate limit) waits and tries again, counted apart.
//! Afterwards every acknowledged link is read back. Prints one JSON line:
//! `{"created", "retries", "throttled", "failed", "lost", "unexpected",
//! "slowest_refusal_ms", "longest_recovery_ms"}` (the longest single call that
//! ended UNAVAILABLE: how fast a failure is reported; the longest time one
//! create took from its first try to its success: how long an outage lasted
//! for a client); exits non-zero when anything failed or was lost.
//!
//!   grpc-load --endpoint http://127.0.0.1:50052 --endpoint http://127.0.0.1:50053 \
//!       --key tu_… --seconds 30 --clients 8

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tinyurl_harness::services::retryable;
use tinyurl_proto::v1::links_client::LinksClient;
use tinyurl_proto::v1::{CreateLinkRequest, GetLinkRequest};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(
    name = "grpc-load",
    about = "steady CreateLink load with client-side retries"
)]
struct Args {
    /// Writer endpoints; calls are balanced over those that answer.
    #[arg(long, required = true)]
    endpoint: Vec<String>,
    /// API key (create scope).
    #[arg(long)]
    key: String,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// A create still failing after this long counts as failed. The load
    /// also stops at SIGINT.
    #[arg(long, default_value_t = 30)]
    give_up_after: u64,
}

#[derive(Default)]
struct Counts {
    created: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    failed: AtomicU64,
    unexpected: AtomicU64,
    slowest_refusal_ms: AtomicU64,
    longest_recovery_ms: AtomicU64,
}

fn authed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {key}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let endpoints = args
        .endpoint
        .iter()
        .map(|url| {
            Ok(Endpoint::from_shared(url.clone())?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(5)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let channel = Channel::balance_list(endpoints.into_iter());
    let counts = Arc::new(Counts::default());
    let key = Arc::new(args.key);
    let run_for = Duration::from_secs(args.seconds);
    let give_up = Duration::from_secs(args.give_up_after);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        }
    });
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let stop = Arc::clone(&stop);
        let links = LinksClient::new(channel.clone());
        let (counts, key) = (Arc::clone(&counts), Arc::clone(&key));
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut acknowledged = Vec::new();
            let mut sequence = 0_u64;
            while started.elapsed() < run_for && !stop.load(Ordering::Relaxed) {
                sequence += 1;
                let request = CreateLinkRequest {
                    target_url: format!("https://example.com/load/{client}/{sequence}"),
                    idempotency_key: format!("load-{client}-{sequence}-{}", std::process::id()),
                    ..CreateLinkRequest::default()
                };
                let first_try = Instant::now();
                loop {
                    let call = Instant::now();
                    let answer = links
                        .clone()
                        .create_link(authed(request.clone(), &key))
                        .await;
                    if let Err(status) = &answer
                        && status.code() == tonic::Code::Unavailable
                    {
                        counts
                            .slowest_refusal_ms
                            .fetch_max(millis(call.elapsed()), Ordering::Relaxed);
                    }
                    match answer {
                        Ok(link) => {
                            counts.created.fetch_add(1, Ordering::Relaxed);
                            counts
                                .longest_recovery_ms
                                .fetch_max(millis(first_try.elapsed()), Ordering::Relaxed);
                            let link = link.into_inner();
                            acknowledged.push((link.code, request.target_url.clone()));
                            break;
                        }
                        Err(status) if retryable(&status) && first_try.elapsed() < give_up => {
                            counts.retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(status)
                            if status.code() == tonic::Code::ResourceExhausted
                                && first_try.elapsed() < give_up =>
                        {
                            counts.throttled.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(status) => {
                            if retryable(&status) {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                            } else {
                                counts.unexpected.fetch_add(1, Ordering::Relaxed);
                                eprintln!("unexpected: {status:?}");
                            }
                            break;
                        }
                    }
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await?);
    }
    // Every acknowledged create is stored, with its target.
    let mut lost = 0_u64;
    let mut reader = LinksClient::new(channel);
    for (code, target) in &acknowledged {
        let mut found = None;
        for _ in 0..20 {
            match reader
                .get_link(authed(GetLinkRequest { code: code.clone() }, &key))
                .await
            {
                Ok(link) => {
                    found = Some(link.into_inner().target_url);
                    break;
                }
                Err(status)
                    if retryable(&status) || status.code() == tonic::Code::ResourceExhausted =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => {
                    eprintln!("reading {code} back: {status:?}");
                    break;
                }
            }
        }
        if found.as_deref() != Some(target.as_str()) {
            lost += 1;
            eprintln!("lost: {code} ({target}): {found:?}");
        }
    }
    let (created, retries, throttled, failed, unexpected) = (
        counts.created.load(Ordering::Relaxed),
        counts.retries.load(Ordering::Relaxed),
        counts.throttled.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
        counts.unexpected.load(Ordering::Relaxed),
    );
    let slowest_refusal_ms = counts.slowest_refusal_ms.load(Ordering::Relaxed);
    let longest_recovery_ms = counts.longest_recovery_ms.load(Ordering::Relaxed);
    println!(
        "{{\"created\": {created}, \"retries\": {retries}, \"throttled\": {throttled}, \"failed\": {failed}, \"lost\": {lost}, \"unexpected\": {unexpected}, \"slowest_refusal_ms\": {slowest_refusal_ms}, \"longest_recovery_ms\": {longest_recovery_ms}}}"
    );
    anyhow::ensure!(
        failed == 0 && lost == 0 && unexpected == 0,
        "{failed} failed, {lost} lost, {unexpected} unexpected"
    );
    Ok(())
}
