//! The attacker suite: each test plays an attack a review found against the
//! real split system and prints its row of the table: what the attacker
//! did, what the attacker got, and what the honest clients got.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use tinyurl_harness::services::{http_send, metric, unissued_api_key};
use tinyurl_harness::system::System;

/// One row of the attacker table.
fn row(attack: &str, attacker_got: &str, honest_got: &str) {
    println!("| {attack} | {attacker_got} | {honest_got} |");
}

/// A keep-alive HTTP/1.1 connection to `to` from `source`.
async fn connect_from(
    source: IpAddr,
    to: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(to).await?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Statuses counted by code.
#[derive(Default)]
struct Statuses(std::sync::Mutex<BTreeMap<u16, u64>>);

impl Statuses {
    fn count(&self, status: u16) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(status)
            .or_default() += 1;
    }

    fn summary(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(status, count)| format!("{status} ×{count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn total(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .sum()
    }
}

/// A flood of made-up API keys cannot lock real keys out: 20 source
/// addresses (127.0.0.2–127.0.0.21) send 5,000 made-up keys a second for
/// 90 s at two writers while 50 real keys (half of them not yet used, so
/// not cached, when the flood starts; the others falling out of the cache
/// during it) create and list from another address. The real keys get no
/// failed request, and the writers' database key lookups stay within the
/// unknown-key budget: at most (20 a second + 1) × seconds per writer, plus
/// one per real key per writer per cache lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_keys_locks_no_real_key_out() -> anyhow::Result<()> {
    const SOURCES: u8 = 20;
    const CONNECTIONS_PER_SOURCE: usize = 4;
    const FLOOD_PER_SECOND: u64 = 5_000;
    const FLOOD: Duration = Duration::from_secs(90);
    const REAL_KEYS: usize = 50;
    const BUDGET_PER_SECOND: u64 = 20;

    let system = System::start(&[]).await?;
    let mut keys = Vec::new();
    for index in 0..REAL_KEYS {
        keys.push(system.setup.create_api_key(&format!("real-{index}"))?);
    }
    let mut writers = Vec::new();
    for _ in 0..2 {
        writers.push(system.setup.start_with_rest(&[]).await?);
    }
    let rests: Vec<SocketAddr> = writers.iter().map(|(_, rest)| *rest).collect();
    let lookups_before = {
        let mut total = 0.0;
        for (writer, _) in &writers {
            total += metric(writer.admin_addr(), "writer_key_lookups_total", &[]).await?;
        }
        total
    };

    // Half the real keys are used (and cached) before the flood.
    let honest_call = |rest: SocketAddr, key: &str, create: bool, n: usize| {
        let bearer = format!("Bearer {key}");
        async move {
            let response = if create {
                let body = format!(r#"{{"target_url":"https://example.com/honest/{n}"}}"#);
                http_send(
                    rest,
                    "POST",
                    "/api/v1/links",
                    &[
                        ("Authorization", bearer.as_str()),
                        ("Content-Type", "application/json"),
                    ],
                    Some(body.as_bytes()),
                )
                .await?
            } else {
                http_send(
                    rest,
                    "GET",
                    "/api/v1/links?page_size=5",
                    &[("Authorization", bearer.as_str())],
                    None,
                )
                .await?
            };
            anyhow::Ok(response.status)
        }
    };
    for (index, key) in keys.iter().enumerate().take(REAL_KEYS / 2) {
        for rest in &rests {
            let status = honest_call(*rest, key, false, index).await?;
            anyhow::ensure!(status == 200, "warming key {index}: {status}");
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let flood = Arc::new(Statuses::default());
    let flood_errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let connections = usize::from(SOURCES) * CONNECTIONS_PER_SOURCE;
    let interval = Duration::from_secs_f64(connections as f64 / FLOOD_PER_SECOND as f64);
    for source in 0..SOURCES {
        let address = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + source));
        for connection in 0..CONNECTIONS_PER_SOURCE {
            let rest = rests[connection % rests.len()];
            let (stop, flood, errors) = (
                Arc::clone(&stop),
                Arc::clone(&flood),
                Arc::clone(&flood_errors),
            );
            tasks.push(tokio::spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut sender = None;
                while !stop.load(Ordering::Relaxed) {
                    ticks.tick().await;
                    if sender
                        .as_ref()
                        .is_none_or(hyper::client::conn::http1::SendRequest::is_closed)
                    {
                        match connect_from(address, rest).await {
                            Ok(connected) => sender = Some(connected),
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                    }
                    let Some(connected) = sender.as_mut() else {
                        continue;
                    };
                    let request = http::Request::get("/api/v1/links")
                        .header("host", "sho.rt")
                        .header("authorization", format!("Bearer {}", unissued_api_key()))
                        .body(Full::new(Bytes::new()));
                    let Ok(request) = request else { continue };
                    if connected.ready().await.is_err() {
                        sender = None;
                        continue;
                    }
                    match connected.send_request(request).await {
                        Ok(response) => {
                            flood.count(response.status().as_u16());
                            let _ = response.into_body().collect().await;
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            sender = None;
                        }
                    }
                }
            }));
        }
    }

    // The honest clients: every real key creates and lists, in turn, at
    // both writers, for as long as the flood lasts.
    let started = Instant::now();
    let honest = Arc::new(Statuses::default());
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut honest_tasks = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let (key, rests, honest, failures) = (
            key.clone(),
            rests.clone(),
            Arc::clone(&honest),
            Arc::clone(&failures),
        );
        honest_tasks.push(tokio::spawn(async move {
            let mut n = 0;
            // The keys not used yet start first: while the flood is on.
            tokio::time::sleep(Duration::from_millis(40 * (index as u64 % 50))).await;
            while started.elapsed() < FLOOD {
                let rest = rests[n % rests.len()];
                let outcome = honest_call(rest, &key, n % 2 == 0, n).await;
                match outcome {
                    Ok(status) => {
                        honest.count(status);
                        if !(200..300).contains(&status) {
                            failures
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(format!("key {index}, call {n}: {status}"));
                        }
                    }
                    Err(error) => failures
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(format!("key {index}, call {n}: {error:#}")),
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(1_500)).await;
            }
        }));
    }
    for task in honest_tasks {
        task.await?;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let seconds = started.elapsed().as_secs_f64();

    let mut lookups = 0.0;
    for (writer, _) in &writers {
        lookups += metric(writer.admin_addr(), "writer_key_lookups_total", &[]).await?;
    }
    let lookups = (lookups - lookups_before) as u64;
    // Per writer: the budget's burst and rate, and each real key once per
    // cache lifetime (60 s) plus its first use.
    let bound = 2
        * ((BUDGET_PER_SECOND + 1) * seconds.ceil() as u64
            + REAL_KEYS as u64 * (2 + seconds as u64 / 60));
    let failures = failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    row(
        &format!(
            "{SOURCES} addresses, {} made-up keys in {seconds:.0} s ({:.0}/s; {} connection errors) at two writers",
            flood.total(),
            flood.total() as f64 / seconds,
            flood_errors.load(Ordering::Relaxed)
        ),
        &flood.summary(),
        &format!(
            "{} calls of {REAL_KEYS} real keys: {}; {lookups} database key lookups (bound {bound})",
            honest.total(),
            honest.summary()
        ),
    );
    anyhow::ensure!(
        failures.is_empty(),
        "{} failed honest calls: {:?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    anyhow::ensure!(
        honest.total() >= REAL_KEYS as u64 * 40,
        "only {} honest calls were made",
        honest.total()
    );
    anyhow::ensure!(
        flood.total() >= FLOOD_PER_SECOND * FLOOD.as_secs() / 4,
        "the flood sent only {} made-up keys",
        flood.total()
    );
    anyhow::ensure!(
        lookups <= bound,
        "{lookups} database key lookups, more than {bound}"
    );
    Ok(())
}
