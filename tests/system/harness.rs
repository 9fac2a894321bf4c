//! Self-test of the harness: the replica really streams from the primary,
//! apply delay really delays, Redis really answers, and a missing server
//! binary fails with the package to install.

use std::time::{Duration, Instant};

use tinyurl_harness::postgres::PgBinaries;
use tinyurl_harness::{PgCluster, RedisServer, wait_until};

#[tokio::test]
async fn replica_streams_rows_from_the_primary_and_honours_apply_delay() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let primary = cluster.primary.connect(&database.name).await?;
    let replica = cluster.replica().connect(&database.name).await?;

    primary
        .batch_execute("CREATE TABLE probe (id int PRIMARY KEY, note text NOT NULL)")
        .await?;
    primary
        .execute("INSERT INTO probe VALUES (1, 'streamed')", &[])
        .await?;
    wait_until("row 1 on the replica", Duration::from_secs(30), || {
        let replica = &replica;
        async move {
            Ok(replica
                .query_opt("SELECT note FROM probe WHERE id = 1", &[])
                .await?
                .is_some())
        }
    })
    .await?;
    let in_recovery: bool = replica
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .get(0);
    assert!(in_recovery, "the replica must be a standby");
    let write_on_replica = replica
        .execute("INSERT INTO probe VALUES (9, 'no')", &[])
        .await;
    assert!(write_on_replica.is_err(), "a standby must refuse writes");

    let delay = Duration::from_secs(3);
    cluster.replica().set_apply_delay(delay).await?;
    let committed = Instant::now();
    primary
        .execute("INSERT INTO probe VALUES (2, 'delayed')", &[])
        .await?;
    let early = replica
        .query_opt("SELECT note FROM probe WHERE id = 2", &[])
        .await?;
    assert!(
        early.is_none() || committed.elapsed() >= delay,
        "row 2 must not be visible on the replica before the apply delay"
    );
    wait_until(
        "row 2 on the replica after the delay",
        Duration::from_secs(30),
        || {
            let replica = &replica;
            async move {
                Ok(replica
                    .query_opt("SELECT note FROM probe WHERE id = 2", &[])
                    .await?
                    .is_some())
            }
        },
    )
    .await?;
    // Apply delay is measured from the commit, so the row cannot have been
    // applied before it; this bounds from below, never from above.
    assert!(committed.elapsed() >= delay - Duration::from_millis(100));

    cluster.replica().set_apply_delay(Duration::ZERO).await?;
    Ok(())
}

#[tokio::test]
async fn each_test_gets_a_fresh_database() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start_with_replicas(0).await?;
    let first = cluster.create_database().await?;
    let second = cluster.create_database().await?;
    assert_ne!(first.name, second.name);
    let client = cluster.primary.connect(&first.name).await?;
    client
        .batch_execute("CREATE TABLE only_in_first (id int)")
        .await?;
    let other = cluster.primary.connect(&second.name).await?;
    let exists: bool = other
        .query_one("SELECT to_regclass('only_in_first') IS NOT NULL", &[])
        .await?
        .get(0);
    assert!(!exists);
    Ok(())
}

#[tokio::test]
async fn primary_survives_kill_and_restart_with_committed_rows() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start_with_replicas(0).await?;
    let database = cluster.create_database().await?;
    let client = cluster.primary.connect(&database.name).await?;
    client
        .batch_execute("CREATE TABLE durable (id int); INSERT INTO durable VALUES (42);")
        .await?;
    drop(client);

    cluster.primary.kill()?;
    assert!(
        cluster.primary.connect(&database.name).await.is_err(),
        "killed means down"
    );
    cluster.primary.start().await?;
    let client = cluster.primary.connect(&database.name).await?;
    let id: i32 = client
        .query_one("SELECT id FROM durable", &[])
        .await?
        .get(0);
    assert_eq!(id, 42);
    Ok(())
}

#[tokio::test]
async fn redis_starts_stops_and_comes_back_on_its_port() -> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    let port = redis.port();
    tinyurl_harness::redis::ping(port).await?;
    redis.kill()?;
    assert!(tinyurl_harness::redis::ping(port).await.is_err());
    redis.start_again().await?;
    tinyurl_harness::redis::ping(port).await?;
    assert_eq!(redis.port(), port);
    Ok(())
}

#[test]
fn a_missing_server_binary_names_the_package_to_install() {
    let error = tinyurl_harness::process::find_binary("postgres-not-installed", &[], "postgresql")
        .expect_err("the binary does not exist");
    let message = error.to_string();
    assert!(message.contains("apt-get install postgresql"), "{message}");
}

#[test]
fn the_installed_postgres_is_found() {
    PgBinaries::locate().expect("postgres is installed on every machine the tests run on");
}
