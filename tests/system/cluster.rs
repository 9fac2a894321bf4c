//! The split system on a three-master Redis Cluster while the cluster changes
//! under it: hash slots move between masters (with the keys in them) while
//! creates and redirects run. Redirect must keep answering every cached and
//! replicated link, and no acknowledged create may be lost.
//!
//! (The writer and redirect test sets run on a cluster as a whole in the test
//! script's second pass; this is the test of a cluster that changes.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tinyurl_harness::redis::{Reply, command, command_once};
use tinyurl_harness::services::{http_request, retryable};
use tinyurl_harness::system::System;
use tinyurl_harness::{RedisServer, ServiceProcess, wait_until};
use tinyurl_proto::v1::{BatchCreateLinksRequest, CreateLinkRequest, batch_create_links_result};

/// Slots moved: a third of the cluster, so a good share of the links' keys
/// move while requests for them run.
const SLOTS_MOVED: &str = "5000";
const LINKS: usize = 300;

async fn node_id(port: u16) -> anyhow::Result<String> {
    match command(port, &["CLUSTER", "MYID"]).await? {
        Reply::Bulk(Some(id)) => Ok(id),
        other => anyhow::bail!("CLUSTER MYID answered {other:?}"),
    }
}

/// How many of `codes` have their cache entry on the node at `port` itself
/// (another node's slot answers `MOVED`, which is not followed here).
async fn entries_on(port: u16, codes: &[String]) -> anyhow::Result<usize> {
    let mut here = 0;
    for code in codes {
        if command_once(port, &["EXISTS", &format!("link:{code}")]).await? == Reply::Integer(1) {
            here += 1;
        }
    }
    Ok(here)
}

/// `LINKS` links made in one batch, replicated, and each read once through
/// `redirect` so its Redis entry exists.
async fn cached_links(system: &System, redirect: &ServiceProcess) -> anyhow::Result<Vec<String>> {
    let created = system
        .links()?
        .batch_create_links(
            system.authed(BatchCreateLinksRequest {
                links: (0..LINKS)
                    .map(|n| CreateLinkRequest {
                        target_url: format!("https://example.com/cached/{n}"),
                        ..CreateLinkRequest::default()
                    })
                    .collect(),
            }),
        )
        .await?
        .into_inner();
    let mut codes = Vec::with_capacity(LINKS);
    for result in created.results {
        match result.result {
            Some(batch_create_links_result::Result::Link(link)) => codes.push(link.code),
            other => anyhow::bail!("a create failed: {other:?}"),
        }
    }
    let last = codes.last().context("nothing created")?;
    system.wait_replicated(last).await?;
    for code in &codes {
        let answer = http_request(redirect.listen_addr(), "GET", &format!("/{code}")).await?;
        anyhow::ensure!(answer.status == 302, "{code} answered {}", answer.status);
    }
    Ok(codes)
}

/// Redirects over every link from four tasks until `stop`; each answers
/// its failures. `redirects` counts the requests.
fn readers(
    redirect: &ServiceProcess,
    codes: &Arc<Vec<String>>,
    stop: &Arc<AtomicBool>,
    redirects: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..4)
        .map(|task| {
            let (stop, redirects, codes) =
                (Arc::clone(stop), Arc::clone(redirects), Arc::clone(codes));
            let addr = redirect.listen_addr();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut index = task;
                while !stop.load(Ordering::Relaxed) {
                    let code = &codes[index % codes.len()];
                    index += 4;
                    match http_request(addr, "GET", &format!("/{code}")).await {
                        Ok(answer) if answer.status == 302 => {}
                        Ok(answer) => failures.push(format!("{code}: {}", answer.status)),
                        Err(error) => failures.push(format!("{code}: {error:#}")),
                    }
                    redirects.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect()
}

type Acknowledged = HashMap<String, String>;

/// Creates from two tasks until `stop`, each with its own idempotency key,
/// retried with it as a careful client does; each answers what was
/// acknowledged (code → target).
fn creators(
    system: &System,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<Acknowledged>>>> {
    let mut creators = Vec::new();
    for task in 0..2 {
        let stop = Arc::clone(stop);
        let mut client = system.links()?;
        let key = system.api_key.clone();
        creators.push(tokio::spawn(async move {
            let mut acknowledged = HashMap::new();
            let mut retries = 0_u32;
            let mut n = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let target = format!("https://example.com/during-move/{task}/{n}");
                let request = CreateLinkRequest {
                    target_url: target.clone(),
                    idempotency_key: format!("move-{task}-{n}"),
                    ..CreateLinkRequest::default()
                };
                loop {
                    let mut call = tonic::Request::new(request.clone());
                    call.metadata_mut()
                        .insert("authorization", format!("Bearer {key}").parse()?);
                    match client.create_link(call).await {
                        Ok(link) => {
                            acknowledged.insert(link.into_inner().code, target);
                            break;
                        }
                        Err(status) if retryable(&status) && retries < 100 => {
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(status) => anyhow::bail!("create failed: {status}"),
                    }
                }
            }
            anyhow::Ok(acknowledged)
        }));
    }
    Ok(creators)
}

/// Moves `SLOTS_MOVED` slots, with their keys, from the master at `from` to
/// the one at `to`, as an operator does: `redis-cli --cluster reshard`.
async fn reshard(from: u16, to: u16) -> anyhow::Result<()> {
    let from_id = node_id(from).await?;
    let to_id = node_id(to).await?;
    let cli = tinyurl_harness::process::find_binary("redis-cli", &[], "redis-tools")?;
    let entry = format!("127.0.0.1:{from}");
    let moved = tokio::task::spawn_blocking(move || {
        std::process::Command::new(cli)
            .args(["--cluster", "reshard", &entry])
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
            .args(["--cluster-slots", SLOTS_MOVED, "--cluster-yes"])
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await??;
    anyhow::ensure!(
        moved.status.success(),
        "redis-cli --cluster reshard failed: {}{}",
        String::from_utf8_lossy(&moved.stdout),
        String::from_utf8_lossy(&moved.stderr)
    );
    Ok(())
}

/// Every acknowledged create is stored, and one redirects to its target.
async fn every_acknowledged_create_is_kept(
    system: &System,
    redirect: &ServiceProcess,
    acknowledged: &Acknowledged,
) -> anyhow::Result<()> {
    let db = system
        .cluster
        .primary
        .connect(&system.database.name)
        .await?;
    let stored_codes: Vec<&str> = acknowledged.keys().map(String::as_str).collect();
    let rows = db
        .query(
            "SELECT code, target_url FROM links WHERE code = ANY($1)",
            &[&stored_codes],
        )
        .await?;
    let stored: HashMap<String, String> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    for (code, target) in acknowledged {
        assert_eq!(
            stored.get(code),
            Some(target),
            "acknowledged create {code} lost"
        );
    }
    let (code, target) = acknowledged.iter().next().context("no create")?;
    wait_until(
        "a create made during the move to redirect",
        Duration::from_secs(10),
        || async {
            let answer = http_request(redirect.listen_addr(), "GET", &format!("/{code}")).await?;
            Ok(answer.status == 302 && answer.header("location") == Some(target.as_str()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_hash_slots_fails_no_redirect_and_loses_no_create() -> anyhow::Result<()> {
    let system = System::start_on(RedisServer::start_cluster(3).await?, &[]).await?;
    // No L1: every request reads Redis, so every one of them meets the move.
    let redirect = system
        .start_redirect(&[("TINYURL_L1_CAPACITY", "0")])
        .await?;
    let codes = Arc::new(cached_links(&system, &redirect).await?);
    let ports = system.redis.ports();
    let (from, to) = (ports[0], ports[1]);
    let on_source = entries_on(from, &codes).await?;
    let on_target = entries_on(to, &codes).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let redirects = Arc::new(AtomicU64::new(0));
    let readers = readers(&redirect, &codes, &stop, &redirects);
    let creators = creators(&system, &stop)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    reshard(from, to).await?;
    // Requests go on a little after the move, on the new slot map.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for reader in readers {
        failures.extend(reader.await?);
    }
    let mut acknowledged = HashMap::new();
    for creator in creators {
        acknowledged.extend(creator.await??);
    }
    let served = redirects.load(Ordering::Relaxed);
    eprintln!(
        "{served} redirects and {} creates during the move of {SLOTS_MOVED} slots",
        acknowledged.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {served} redirects failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(served > 0 && !acknowledged.is_empty(), "no load ran");

    // The cache entries moved with their slots, and none was lost.
    let on_source_after = entries_on(from, &codes).await?;
    let on_target_after = entries_on(to, &codes).await?;
    eprintln!(
        "entries of the {LINKS} cached links: {on_source} → {on_source_after} on the source, \
         {on_target} → {on_target_after} on the target"
    );
    assert!(
        on_source_after < on_source && on_target_after - on_target == on_source - on_source_after,
        "entries did not move with their slots: source {on_source} → {on_source_after}, \
         target {on_target} → {on_target_after}"
    );
    for code in codes.iter() {
        let key = format!("link:{code}");
        assert_eq!(
            command(from, &["EXISTS", &key]).await?,
            Reply::Integer(1),
            "{key} was lost in the move"
        );
    }
    every_acknowledged_create_is_kept(&system, &redirect, &acknowledged).await
}
