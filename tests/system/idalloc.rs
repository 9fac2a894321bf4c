//! idalloc against a real Postgres, as real processes: disjoint ranges under
//! contention and SIGKILL, idempotent retries, precise errors, fast failure
//! when the database is down, health, reflection, metrics and clean shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::Rng as _;
use tinyurl_harness::services::{IdallocClient as Client, http_get, idalloc_client, start_idalloc};
use tinyurl_harness::{PgCluster, ServiceProcess};
use tinyurl_proto::v1::LeaseRangeRequest;
use tinyurl_proto::v1::id_allocator_client::IdAllocatorClient;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

fn channel(process: &ServiceProcess) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(process.endpoint())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20))
        .connect_lazy())
}

async fn client(process: &ServiceProcess) -> anyhow::Result<Client> {
    idalloc_client(channel(process)?)
}

fn request(namespace: &str, count: u64, request_id: &str) -> LeaseRangeRequest {
    LeaseRangeRequest {
        namespace: namespace.to_owned(),
        count,
        request_id: request_id.to_owned(),
    }
}

/// One successful lease as the client saw it.
#[derive(Debug, Clone, Copy)]
struct Leased {
    start: u64,
    end: u64,
    requested: u64,
}

/// Leases until success, retrying transport failures and UNAVAILABLE with the
/// same request id, as a writer does. Any other error fails the test.
async fn lease_with_retry(
    client: &mut Client,
    namespace: &str,
    count: u64,
    request_id: &str,
) -> anyhow::Result<(Leased, usize)> {
    let mut failures = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client
            .lease_range(request(namespace, count, request_id))
            .await
        {
            Ok(response) => {
                let response = response.into_inner();
                return Ok((
                    Leased {
                        start: response.start,
                        end: response.end,
                        requested: count,
                    },
                    failures,
                ));
            }
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    || status.code() == tonic::Code::Unknown
                    || status.code() == tonic::Code::Cancelled =>
            {
                failures += 1;
                anyhow::ensure!(Instant::now() < deadline, "lease kept failing: {status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => anyhow::bail!("unexpected lease error: {status:?}"),
        }
    }
}

fn assert_disjoint(mut leases: Vec<Leased>) {
    for lease in &leases {
        assert!(lease.end > lease.start, "empty range {lease:?}");
        assert_eq!(
            lease.end - lease.start,
            lease.requested,
            "wrong size {lease:?}"
        );
    }
    leases.sort_by_key(|lease| lease.start);
    for pair in leases.windows(2) {
        assert!(
            pair[0].end <= pair[1].start,
            "overlapping ranges {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}

const CLIENTS_PER_PROCESS: usize = 16;
const LEASES_PER_CLIENT: usize = 500;

/// 2 idalloc processes × 16 clients each × 500 leases of random sizes; when
/// `kill_midway`, process 0 is SIGKILLed after a third of the leases and
/// restarted.
async fn contention_run(kill_midway: bool) -> anyhow::Result<()> {
    let mut cluster = PgCluster::start_with_replicas(0).await?;
    let database = cluster.create_database().await?;
    // Started together, each migrating (as the owner): migrations must
    // serialise, not fail.
    let migrating = [("TINYURL_MIGRATE", "true")];
    let (first, second) = tokio::join!(
        start_idalloc(&database.primary_url, &migrating),
        start_idalloc(&database.primary_url, &migrating)
    );
    let mut processes = [first?, second?];
    let clients = [client(&processes[0]).await?, client(&processes[1]).await?];

    let total = 2 * CLIENTS_PER_PROCESS * LEASES_PER_CLIENT;
    let completed = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..2 * CLIENTS_PER_PROCESS {
        let mut client = clients[worker % 2].clone();
        let completed = Arc::clone(&completed);
        tasks.push(tokio::spawn(async move {
            let mut leases = Vec::with_capacity(LEASES_PER_CLIENT);
            let mut retries = 0;
            for index in 0..LEASES_PER_CLIENT {
                let count = rand::rng().random_range(1..=1_000);
                let request_id = format!("w{worker}-{index}-{}", uuid_like());
                let (lease, failures) =
                    lease_with_retry(&mut client, "links", count, &request_id).await?;
                retries += failures;
                leases.push(lease);
                completed.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok((leases, retries))
        }));
    }

    if kill_midway {
        tinyurl_harness::wait_until("a third of the leases", Duration::from_secs(120), || {
            let completed = Arc::clone(&completed);
            async move { Ok(completed.load(Ordering::Relaxed) >= total / 3) }
        })
        .await?;
        processes[0].kill()?;
        killed.store(true, Ordering::Relaxed);
        let at_kill = completed.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        processes[0].start_again().await?;
        assert!(at_kill < total, "the kill must land mid-run");
    }

    let mut all = Vec::with_capacity(total);
    let mut retries = 0;
    for task in tasks {
        let (leases, task_retries) = task.await??;
        all.extend(leases);
        retries += task_retries;
    }
    assert_eq!(all.len(), total);
    if kill_midway {
        assert!(killed.load(Ordering::Relaxed));
        eprintln!("clients retried {retries} times across the SIGKILL");
    }
    let max_end = all.iter().map(|lease| lease.end).max().unwrap_or(0);
    assert_disjoint(all);

    // The stored counter is past everything handed out.
    let db = cluster.primary.connect(&database.name).await?;
    let next_id: i64 = db
        .query_one(
            "SELECT next_id FROM idalloc_namespaces WHERE namespace = 'links'",
            &[],
        )
        .await?
        .get(0);
    assert!(u64::try_from(next_id)? >= max_end);
    Ok(())
}

fn uuid_like() -> u64 {
    rand::rng().random()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_from_two_processes_under_contention_are_disjoint() -> anyhow::Result<()> {
    contention_run(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_stay_disjoint_when_a_process_is_sigkilled_midway() -> anyhow::Result<()> {
    contention_run(true).await
}

#[tokio::test]
async fn a_retried_request_id_returns_the_same_range() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start_with_replicas(0).await?;
    let database = cluster.create_database().await?;
    let process = start_idalloc(&database.primary_url, &[]).await?;
    let mut client = client(&process).await?;

    let first = client
        .lease_range(request("links", 10, "req-1"))
        .await?
        .into_inner();
    assert!(!first.replayed);
    let again = client
        .lease_range(request("links", 10, "req-1"))
        .await?
        .into_inner();
    assert_eq!((again.start, again.end), (first.start, first.end));
    assert!(again.replayed);

    let fresh = client
        .lease_range(request("links", 10, "req-2"))
        .await?
        .into_inner();
    assert!(fresh.start >= first.end, "a new id gets a new range");

    let reused = client
        .lease_range(request("links", 11, "req-1"))
        .await
        .expect_err("a request id reused with another count must be refused");
    assert_eq!(reused.code(), tonic::Code::InvalidArgument);
    assert_eq!(bad_field(&reused), "request_id");
    assert!(
        reused.message().contains("same namespace and count"),
        "{}",
        reused.message()
    );

    // Concurrent retries of one id all get one range, and burn no other.
    let mut handles = Vec::new();
    for _ in 0..16 {
        let mut client = client.clone();
        handles.push(tokio::spawn(async move {
            client
                .lease_range(request("race", 100, "same-id"))
                .await
                .map(tonic::Response::into_inner)
        }));
    }
    let mut ranges = Vec::new();
    for handle in handles {
        let response = handle.await??;
        ranges.push((response.start, response.end));
    }
    ranges.dedup();
    assert_eq!(
        ranges.len(),
        1,
        "all retries must see one range: {ranges:?}"
    );
    let next = client
        .lease_range(request("race", 1, ""))
        .await?
        .into_inner();
    assert_eq!(next.start, ranges[0].1, "losing retries must not burn IDs");
    Ok(())
}

fn bad_field(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .bad_request()
        .and_then(|bad_request| {
            bad_request
                .field_violations
                .first()
                .map(|violation| violation.field.clone())
        })
        .unwrap_or_default()
}

/// An idalloc whose largest lease is 1,000, on a fresh database.
async fn small_lease_idalloc()
-> anyhow::Result<(PgCluster, tinyurl_harness::TestDatabase, ServiceProcess)> {
    let mut cluster = PgCluster::start_with_replicas(0).await?;
    let database = cluster.create_database().await?;
    let process = start_idalloc(
        &database.primary_url,
        &[("TINYURL_IDALLOC_MAX_LEASE", "1000")],
    )
    .await?;
    Ok((cluster, database, process))
}

/// idalloc trusts no caller: without the service token, or with a wrong
/// one, a lease is UNAUTHENTICATED; a namespace off the allow-list is
/// PERMISSION_DENIED, a count past the maximum INVALID_ARGUMENT and a message
/// past the size limit RESOURCE_EXHAUSTED; none of them reaches storage.
#[tokio::test]
async fn callers_without_the_token_or_off_the_allow_list_are_refused() -> anyhow::Result<()> {
    let (cluster, database, process) = small_lease_idalloc().await?;

    let mut anonymous = IdAllocatorClient::new(channel(&process)?);
    let status = anonymous
        .lease_range(request("links", 10, ""))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let forged = tinyurl_runtime::grpc::Bearer::new("system-test-idalloc-token-0123456789abcdeF")
        .context("a header value")?;
    let mut impostor = IdAllocatorClient::with_interceptor(channel(&process)?, forged);
    let status = impostor
        .lease_range(request("links", 10, ""))
        .await
        .expect_err("wrong token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    let mut client = client(&process).await?;
    let status = client
        .lease_range(request("payments", 10, ""))
        .await
        .expect_err("namespace off the allow-list");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("allow-list"), "{status:?}");
    let status = client
        .lease_range(request("links", 10_000_000, ""))
        .await
        .expect_err("count past the maximum");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(bad_field(&status), "count");
    let status = client
        .lease_range(request("links", 10, &"r".repeat(20 * 1024)))
        .await
        .expect_err("a message past the 16 KiB limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    let db = cluster.primary.connect(&database.name).await?;
    let namespaces: i64 = db
        .query_one("SELECT count(*) FROM idalloc_namespaces", &[])
        .await?
        .get(0);
    assert_eq!(namespaces, 0, "refused calls must not reach storage");
    let (_, metrics) = http_get(process.admin_addr(), "/metrics").await?;
    for expected in [
        "idalloc_leases_total{outcome=\"unauthenticated\"} 2",
        "idalloc_leases_total{outcome=\"permission_denied\"} 1",
    ] {
        assert!(metrics.contains(expected), "{expected} in {metrics}");
    }
    // The token's holder is served.
    client.lease_range(request("links", 10, "")).await?;
    Ok(())
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_with_a_reason_and_the_field() -> anyhow::Result<()> {
    let (cluster, database, process) = small_lease_idalloc().await?;
    let mut client = client(&process).await?;

    let long_namespace = "n".repeat(65);
    let long_request_id = "r".repeat(129);
    let cases: [(&str, u64, &str, &str, &str); 8] = [
        ("", 1, "", "namespace", "must not be empty"),
        ("Links", 1, "", "namespace", "only a-z"),
        ("links/x", 1, "", "namespace", "only a-z"),
        (&long_namespace, 1, "", "namespace", "at most 64"),
        ("links", 0, "", "count", "at least 1"),
        ("links", 1_001, "", "count", "maximum lease of 1000"),
        ("links", 1, "has space", "request_id", "printable ASCII"),
        ("links", 1, &long_request_id, "request_id", "at most 128"),
    ];
    for (namespace, count, request_id, field, reason) in cases {
        let status = client
            .lease_range(request(namespace, count, request_id))
            .await
            .expect_err("must be rejected");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{namespace:?} {count}"
        );
        assert_eq!(
            bad_field(&status),
            field,
            "{namespace:?} {count} {request_id:?}"
        );
        assert!(
            status.message().contains(reason),
            "{:?} lacks {reason:?}",
            status.message()
        );
    }
    let db = cluster.primary.connect(&database.name).await?;
    let namespaces: i64 = db
        .query_one("SELECT count(*) FROM idalloc_namespaces", &[])
        .await?
        .get(0);
    let leases: i64 = db
        .query_one("SELECT count(*) FROM idalloc_leases", &[])
        .await?
        .get(0);
    assert_eq!(
        (namespaces, leases),
        (0, 0),
        "bad requests must not reach storage"
    );
    Ok(())
}

#[tokio::test]
async fn a_database_that_is_down_or_frozen_gives_unavailable_not_a_hang() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start_with_replicas(0).await?;
    let database = cluster.create_database().await?;
    let process =
        start_idalloc(&database.primary_url, &[("TINYURL_DB_TIMEOUT_MS", "1000")]).await?;
    let mut client = client(&process).await?;
    client.lease_range(request("links", 5, "")).await?;

    // The client waits far longer than the server's timeout: a hang shows up
    // as DEADLINE_EXCEEDED, the wanted behaviour as UNAVAILABLE.
    let mut patient = tonic::Request::new(request("links", 5, "during-freeze"));
    patient.set_timeout(Duration::from_secs(15));
    cluster.primary.freeze()?;
    let started = Instant::now();
    let frozen = client
        .lease_range(patient)
        .await
        .expect_err("the database is frozen");
    let frozen_after = started.elapsed();
    cluster.primary.thaw()?;
    assert_eq!(frozen.code(), tonic::Code::Unavailable, "{frozen:?}");
    assert!(
        frozen.message().contains("did not answer within 1000 ms"),
        "{}",
        frozen.message()
    );
    eprintln!("frozen database answered UNAVAILABLE after {frozen_after:?}");

    cluster.primary.stop()?;
    let mut patient = tonic::Request::new(request("links", 5, "during-stop"));
    patient.set_timeout(Duration::from_secs(15));
    let started = Instant::now();
    let stopped = client
        .lease_range(patient)
        .await
        .expect_err("the database is stopped");
    eprintln!(
        "stopped database answered UNAVAILABLE after {:?}",
        started.elapsed()
    );
    assert_eq!(stopped.code(), tonic::Code::Unavailable, "{stopped:?}");
    assert!(stopped.message().contains("retry with the same request_id"));

    cluster.primary.start().await?;
    let (lease, _) = lease_with_retry(&mut client, "links", 5, "after-restart").await?;
    assert_eq!(
        lease.end - lease.start,
        5,
        "leasing recovers when the database returns"
    );
    Ok(())
}

#[tokio::test]
async fn health_reflection_metrics_help_and_graceful_shutdown() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start_with_replicas(0).await?;
    let database = cluster.create_database().await?;
    let mut process = start_idalloc(&database.primary_url, &[]).await?;
    let channel = Channel::from_shared(process.endpoint())?.connect().await?;

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "tinyurl.v1.IdAllocator"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([list]))
        .await?
        .into_inner();
    let response = responses.message().await?.expect("one reflection response");
    let Some(MessageResponse::ListServicesResponse(services)) = response.message_response else {
        anyhow::bail!("unexpected reflection response");
    };
    let names: Vec<String> = services
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(
        names.contains(&"tinyurl.v1.IdAllocator".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    let mut client = idalloc_client(channel)?;
    client.lease_range(request("links", 7, "")).await?;
    let (status, metrics) = http_get(process.admin_addr(), "/metrics").await?;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("idalloc_leases_total{outcome=\"leased\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("idalloc_ids_leased_total 7"), "{metrics}");
    assert!(
        metrics.contains("idalloc_lease_duration_seconds_bucket"),
        "{metrics}"
    );
    assert_eq!(http_get(process.admin_addr(), "/healthz").await?.0, 200);
    assert_eq!(http_get(process.admin_addr(), "/readyz").await?.0, 200);

    let started = Instant::now();
    let exit = process.terminate(Duration::from_secs(20)).await?;
    eprintln!("SIGTERM to exit took {:?}", started.elapsed());
    assert!(
        exit.success(),
        "SIGTERM must end in a clean exit, got {exit:?}"
    );

    let binary = tinyurl_harness::ServiceBinary::locate("tinyurl-idalloc")?;
    let help = std::process::Command::new(binary.path())
        .arg("--help")
        .output()?;
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout)?;
    for variable in [
        "TINYURL_DATABASE_URL",
        "TINYURL_LISTEN",
        "TINYURL_ADMIN_LISTEN",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(help.contains(variable), "--help lacks {variable}");
    }

    let missing = std::process::Command::new(binary.path())
        .env_clear()
        .output()?;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("TINYURL_DATABASE_URL"), "{stderr}");
    Ok(())
}

/// Asynchronous replication can lose the newest leases in a failover: the
/// promoted replica's counters are behind what the old primary handed out.
/// The failover guard must skip past them before the first lease on the new
/// timeline.
#[tokio::test]
async fn after_a_failover_that_lost_leases_new_ranges_do_not_overlap() -> anyhow::Result<()> {
    let skip: u64 = 1_000_000;
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let settings = [
        ("TINYURL_IDALLOC_MAX_LEASE", "1000"),
        ("TINYURL_IDALLOC_FAILOVER_SKIP", "1000000"),
    ];
    let mut old_idalloc = start_idalloc(&database.primary_url, &settings).await?;
    let mut old_client = client(&old_idalloc).await?;

    let mut handed_out = Vec::new();
    for _ in 0..5 {
        let (lease, _) = lease_with_retry(&mut old_client, "links", 1000, "").await?;
        handed_out.push(lease);
    }
    let replicated_end = handed_out.iter().map(|lease| lease.end).max().unwrap_or(0);
    let replica = cluster.replica().connect(&database.name).await?;
    tinyurl_harness::wait_until("the replica to catch up", Duration::from_secs(30), || {
        let replica = &replica;
        async move {
            let row = replica
                .query_opt(
                    "SELECT next_id FROM idalloc_namespaces WHERE namespace = 'links'",
                    &[],
                )
                .await?;
            Ok(row.is_some_and(|row| {
                row.get::<_, i64>(0) == i64::try_from(replicated_end).unwrap_or(-1)
            }))
        }
    })
    .await?;
    drop(replica);

    // An idalloc must refuse to lease from a standby at all.
    let on_standby = start_idalloc(&database.replica_urls[0], &settings).await;
    assert!(
        on_standby.is_err(),
        "idalloc must not start against a standby"
    );

    // The replica falls behind; the primary keeps leasing, then dies.
    cluster.replica_mut().stop()?;
    for _ in 0..5 {
        let (lease, _) = lease_with_retry(&mut old_client, "links", 1000, "").await?;
        handed_out.push(lease);
    }
    let lost_end = handed_out.iter().map(|lease| lease.end).max().unwrap_or(0);
    old_idalloc.kill()?;
    cluster.primary.kill()?;

    cluster.replica_mut().start().await?;
    cluster.replica_mut().promote().await?;
    let promoted = cluster.replica().connect(&database.name).await?;
    let stale_next: i64 = promoted
        .query_one(
            "SELECT next_id FROM idalloc_namespaces WHERE namespace = 'links'",
            &[],
        )
        .await?
        .get(0);
    assert!(
        u64::try_from(stale_next)? < lost_end,
        "the scenario must really lose leases (stored {stale_next}, handed out up to {lost_end})"
    );

    let new_idalloc = start_idalloc(&database.replica_urls[0], &settings).await?;
    let mut new_client = client(&new_idalloc).await?;
    let (first_after, _) = lease_with_retry(&mut new_client, "links", 1000, "").await?;
    assert!(
        first_after.start >= lost_end,
        "lease {first_after:?} after failover overlaps IDs handed out before it (up to {lost_end})"
    );
    assert_eq!(first_after.start, u64::try_from(stale_next)? + skip);
    handed_out.push(first_after);
    assert_disjoint(handed_out);
    let (_, metrics) = http_get(new_idalloc.admin_addr(), "/metrics").await?;
    assert!(
        metrics.contains("idalloc_failover_skips_total 1"),
        "{metrics}"
    );
    Ok(())
}
