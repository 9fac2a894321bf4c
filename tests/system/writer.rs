//! writer against real Postgres, Redis and idalloc processes: validation,
//! idempotency, auth, no duplicate codes across SIGKILLs, surviving an idalloc
//! outage on buffered IDs, and creating through a Redis outage.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tinyurl_harness::redis::{Reply, command};
use tinyurl_harness::services::{
    authed, http_get, links_client as client, metric, unissued_api_key as random_key,
};
use tinyurl_harness::{ServiceProcess, Stack, wait_until};
use tinyurl_proto::v1::links_client::LinksClient;
use tinyurl_proto::v1::{
    BatchCreateLinksRequest, CreateLinkRequest, DeleteLinkRequest, GetLinkRequest, Link,
    ListLinksRequest, RedirectType, UpdateLinkRequest, batch_create_links_result,
};
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

type Client = LinksClient<Channel>;

fn create(target: &str) -> CreateLinkRequest {
    CreateLinkRequest {
        target_url: target.to_owned(),
        ..CreateLinkRequest::default()
    }
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

/// The writer tests' parts: no replica (they write), `idallocs` idalloc
/// processes, and Redis when asked for.
async fn stack(idallocs: usize, with_redis: bool) -> anyhow::Result<Stack> {
    let builder = Stack::builder().replicas(0).idallocs(idallocs);
    let builder = if with_redis {
        builder
    } else {
        builder.without_redis()
    };
    builder.start().await
}

#[tokio::test]
async fn bad_batches_and_taken_aliases_are_refused_and_leave_no_row() -> anyhow::Result<()> {
    let stack = stack(1, false).await?;
    let writer = stack
        .setup
        .start(&[("TINYURL_BLOCKED_HOSTS", "evil.example")])
        .await?;
    let key = stack.setup.create_api_key("validation")?;
    let mut links = client(&writer)?;

    // The table of hostile single creates is shared with the REST API and
    // runs over both transports in the `rest` tests.
    let empty_batch = links
        .batch_create_links(authed(BatchCreateLinksRequest { links: vec![] }, &key))
        .await
        .expect_err("empty batch");
    assert_eq!(empty_batch.code(), tonic::Code::InvalidArgument);
    let huge_batch = BatchCreateLinksRequest {
        links: vec![create("https://example.com/"); 1001],
    };
    let huge = links
        .batch_create_links(authed(huge_batch, &key))
        .await
        .expect_err("oversized batch");
    assert_eq!(bad_field(&huge), "links");

    assert_eq!(
        stack.count_links().await?,
        0,
        "bad input must never reach storage"
    );

    // A taken alias is ALREADY_EXISTS, and the first link is untouched.
    let first = links
        .create_link(authed(
            CreateLinkRequest {
                alias: "spring-sale".to_owned(),
                ..create("https://example.com/a")
            },
            &key,
        ))
        .await?;
    assert_eq!(first.get_ref().code, "spring-sale");
    let taken = links
        .create_link(authed(
            CreateLinkRequest {
                alias: "spring-sale".to_owned(),
                ..create("https://example.com/b")
            },
            &key,
        ))
        .await
        .expect_err("alias taken");
    assert_eq!(taken.code(), tonic::Code::AlreadyExists);
    assert!(taken.message().contains("is taken"));
    assert_eq!(stack.count_links().await?, 1);
    Ok(())
}

/// A writer on a stack with Redis, and the keys of two owners.
struct Grpc {
    stack: Stack,
    writer: ServiceProcess,
    links: LinksClient<Channel>,
    key: String,
    other_key: String,
}

impl Grpc {
    async fn start() -> anyhow::Result<Self> {
        let stack = stack(1, true).await?;
        let writer = stack.setup.start(&[]).await?;
        let key = stack.setup.create_api_key("alice")?;
        let other_key = stack.setup.create_api_key("bob")?;
        let links = client(&writer)?;
        Ok(Self {
            stack,
            writer,
            links,
            key,
            other_key,
        })
    }

    /// A new link of the first owner.
    async fn link(&mut self, target: &str) -> anyhow::Result<Link> {
        Ok(self
            .links
            .create_link(authed(
                CreateLinkRequest {
                    redirect_type: RedirectType::RedirectType301 as i32,
                    forward_query: true,
                    ..create(target)
                },
                &self.key,
            ))
            .await?
            .into_inner())
    }
}

#[tokio::test]
async fn a_create_replays_its_idempotency_key_and_refuses_another_request() -> anyhow::Result<()> {
    let Grpc {
        stack,
        mut links,
        key,
        writer: _writer,
        ..
    } = Grpc::start().await?;
    let request = CreateLinkRequest {
        target_url: "https://bücher.example/straße?q=1".to_owned(),
        redirect_type: RedirectType::RedirectType301 as i32,
        forward_query: true,
        idempotency_key: "order-42".to_owned(),
        ..CreateLinkRequest::default()
    };
    let link = links
        .create_link(authed(request.clone(), &key))
        .await?
        .into_inner();
    assert_eq!(link.code.len(), 7);
    assert_eq!(link.short_url, format!("https://sho.rt/{}", link.code));
    assert_eq!(
        link.target_url,
        "https://xn--bcher-kva.example/stra%C3%9Fe?q=1"
    );
    assert_eq!(link.redirect_type, 301);
    let again = links
        .create_link(authed(request.clone(), &key))
        .await?
        .into_inner();
    assert_eq!(again.code, link.code, "same idempotency key, same link");
    assert_eq!(stack.count_links().await?, 1);
    // The key with another request is refused, not answered with the link.
    let reused = links
        .create_link(authed(
            CreateLinkRequest {
                redirect_type: RedirectType::RedirectType302 as i32,
                ..request
            },
            &key,
        ))
        .await
        .expect_err("the key with another request");
    assert_eq!(reused.code(), tonic::Code::FailedPrecondition, "{reused:?}");
    assert!(reused.message().contains(&link.code), "{reused:?}");
    assert_eq!(stack.count_links().await?, 1);
    tinyurl_harness::attacker::row(
        "L1 an Idempotency-Key reused with another body answers the first link",
        "gRPC: the key of a create again with another redirect type",
        "FAILED_PRECONDITION naming the key's link",
        "the same request replays the link; one link in all",
    );

    Ok(())
}

#[tokio::test]
async fn callers_are_authenticated_and_see_only_their_own_links() -> anyhow::Result<()> {
    let mut fixture = Grpc::start().await?;
    let link = fixture.link("https://example.com/alice").await?;
    let Grpc {
        stack: _stack,
        writer: _writer,
        mut links,
        other_key,
        ..
    } = fixture;
    // Auth: no key, a well-formed unknown key, another key's link.
    let no_key = links
        .get_link(GetLinkRequest {
            code: link.code.clone(),
        })
        .await
        .expect_err("no key");
    assert_eq!(no_key.code(), tonic::Code::Unauthenticated);
    let unknown = format!("tu_{}", "A".repeat(43));
    let wrong = links
        .get_link(authed(
            GetLinkRequest {
                code: link.code.clone(),
            },
            &unknown,
        ))
        .await
        .expect_err("unknown key");
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert!(wrong.message().contains("unknown or revoked"));
    let foreign = links
        .get_link(authed(
            GetLinkRequest {
                code: link.code.clone(),
            },
            &other_key,
        ))
        .await
        .expect_err("not yours");
    assert_eq!(foreign.code(), tonic::Code::NotFound);
    let foreign_update = UpdateLinkRequest {
        code: link.code.clone(),
        enabled: Some(false),
        ..UpdateLinkRequest::default()
    };
    assert_eq!(
        links
            .update_link(authed(foreign_update, &other_key))
            .await
            .expect_err("not yours")
            .code(),
        tonic::Code::NotFound
    );
    let foreign_delete = DeleteLinkRequest {
        code: link.code.clone(),
    };
    assert_eq!(
        links
            .delete_link(authed(foreign_delete, &other_key))
            .await
            .expect_err("not yours")
            .code(),
        tonic::Code::NotFound
    );
    let their_list = links
        .list_links(authed(ListLinksRequest::default(), &other_key))
        .await?
        .into_inner();
    assert!(
        their_list.links.is_empty(),
        "bob sees none of alice's links"
    );

    Ok(())
}

#[tokio::test]
async fn each_write_reaches_redis_for_the_redirects_and_a_delete_leaves_a_tombstone()
-> anyhow::Result<()> {
    let mut fixture = Grpc::start().await?;
    let link = fixture.link("https://bücher.example/straße?q=1").await?;
    let Grpc {
        stack,
        mut links,
        key,
        writer: _writer,
        ..
    } = fixture;
    // Written through to Redis for the redirect tier.
    let redis_port = stack.redis()?.port();
    let cached = command(redis_port, &["GET", &format!("link:{}", link.code)]).await?;
    assert_eq!(
        cached,
        Reply::Bulk(Some(format!("v1 301 1 1 - {}", link.target_url)))
    );

    // Disable: the cache entry is overwritten.
    let disable = UpdateLinkRequest {
        code: link.code.clone(),
        enabled: Some(false),
        ..UpdateLinkRequest::default()
    };
    let disabled = links.update_link(authed(disable, &key)).await?.into_inner();
    assert!(!disabled.enabled);
    let cached = command(redis_port, &["GET", &format!("link:{}", link.code)]).await?;
    assert_eq!(
        cached,
        Reply::Bulk(Some(format!("v1 301 1 0 - {}", link.target_url)))
    );

    // Delete: gone from Postgres and Redis.
    links
        .delete_link(authed(
            DeleteLinkRequest {
                code: link.code.clone(),
            },
            &key,
        ))
        .await?;
    assert_eq!(
        links
            .get_link(authed(
                GetLinkRequest {
                    code: link.code.clone()
                },
                &key
            ))
            .await
            .expect_err("deleted")
            .code(),
        tonic::Code::NotFound
    );
    // A tombstone, not a DEL: a redirect replica filling the cache from a
    // lagging Postgres replica cannot put the deleted link back.
    assert_eq!(
        command(redis_port, &["GET", &format!("link:{}", link.code)]).await?,
        Reply::Bulk(Some(tinyurl_domain::cached::NEGATIVE_ENTRY.to_owned()))
    );

    Ok(())
}

#[tokio::test]
async fn a_batch_fails_item_by_item_and_keyset_pages_list_every_link_once() -> anyhow::Result<()> {
    let mut fixture = Grpc::start().await?;
    fixture.link("https://example.com/first").await?;
    let Grpc {
        stack,
        mut links,
        key,
        writer: _writer,
        ..
    } = fixture;
    // Batch: one bad item fails alone, in its place.
    let batch = BatchCreateLinksRequest {
        links: vec![
            create("https://example.com/1"),
            create("ftp://example.com/2"),
            CreateLinkRequest {
                alias: "batch-alias".to_owned(),
                ..create("https://example.com/3")
            },
            CreateLinkRequest {
                alias: "batch-alias".to_owned(),
                ..create("https://example.com/4")
            },
            create("https://example.com/5"),
        ],
    };
    let results = links
        .batch_create_links(authed(batch, &key))
        .await?
        .into_inner()
        .results;
    assert_eq!(results.len(), 5);
    let outcome = |index: usize| {
        results[index]
            .result
            .clone()
            .expect("every item has a result")
    };
    assert!(matches!(
        outcome(0),
        batch_create_links_result::Result::Link(_)
    ));
    match outcome(1) {
        batch_create_links_result::Result::Error(error) => {
            assert_eq!(error.code, tonic::Code::InvalidArgument as i32);
            assert_eq!(error.field, "target_url");
        }
        other => panic!("item 1 should fail: {other:?}"),
    }
    assert!(
        matches!(outcome(2), batch_create_links_result::Result::Link(link) if link.code == "batch-alias")
    );
    assert!(
        matches!(outcome(3), batch_create_links_result::Result::Error(error) if error.code == tonic::Code::AlreadyExists as i32)
    );
    assert!(matches!(
        outcome(4),
        batch_create_links_result::Result::Link(_)
    ));
    assert_eq!(stack.count_links().await?, 4);

    // Keyset pagination returns every link once.
    let mut seen = HashSet::new();
    let mut token = String::new();
    loop {
        let page = links
            .list_links(authed(
                ListLinksRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    ..ListLinksRequest::default()
                },
                &key,
            ))
            .await?
            .into_inner();
        for link in &page.links {
            assert!(seen.insert(link.code.clone()), "{} listed twice", link.code);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 4);
    let bad_token = links
        .list_links(authed(
            ListLinksRequest {
                page_size: 3,
                page_token: "garbage".to_owned(),
                ..ListLinksRequest::default()
            },
            &key,
        ))
        .await;
    assert_eq!(
        bad_token.expect_err("bad token").code(),
        tonic::Code::InvalidArgument
    );

    Ok(())
}

#[tokio::test]
async fn the_writer_reports_its_health_and_exits_cleanly_on_sigterm() -> anyhow::Result<()> {
    let Grpc {
        stack: _stack,
        writer,
        ..
    } = Grpc::start().await?;
    // Health and reflection, like every gRPC service.
    let channel = Channel::from_shared(writer.endpoint())?.connect().await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tinyurl.v1.Links".to_owned(),
        })
        .await?
        .into_inner()
        .status;
    assert_eq!(
        serving,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut writer = writer;
    let exit = writer.terminate(Duration::from_secs(20)).await?;
    assert!(
        exit.success(),
        "SIGTERM must end in a clean exit, got {exit:?}"
    );
    Ok(())
}

/// 3 writers and 2 idallocs, 64 clients creating 60,000 links; one writer and
/// one idalloc SIGKILLed mid-run and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_duplicate_codes_when_a_writer_and_an_idalloc_are_sigkilled() -> anyhow::Result<()> {
    const CLIENTS: usize = 64;
    const LINKS: usize = 60_000;
    const PER_CLIENT: usize = LINKS / CLIENTS + 1;

    let mut stack = stack(2, false).await?;
    let mut writers = Vec::new();
    for _ in 0..3 {
        writers.push(stack.setup.start(&[]).await?);
    }
    let key = Arc::new(stack.setup.create_api_key("load")?);
    let (_, metrics) = http_get(writers[0].admin_addr(), "/metrics").await?;
    let killed_instance = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("writer_info{instance=\"")?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .ok_or_else(|| anyhow::anyhow!("writer_info missing from /metrics"))?;
    let clients: Vec<Client> = writers.iter().map(client).collect::<anyhow::Result<_>>()?;

    let created = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..CLIENTS {
        let clients = clients.clone();
        let key = Arc::clone(&key);
        let created = Arc::clone(&created);
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            let mut retries = 0_usize;
            for index in 0..PER_CLIENT {
                let number = worker * PER_CLIENT + index;
                if number >= LINKS {
                    break;
                }
                let target = format!("https://example.com/{number}");
                let mut attempt = 0;
                loop {
                    // Spread over writers; move to the next one on failure.
                    let mut client = clients[(worker + attempt) % clients.len()].clone();
                    let request = CreateLinkRequest {
                        idempotency_key: format!("load-{number}"),
                        ..create(&target)
                    };
                    match client.create_link(authed(request, &key)).await {
                        Ok(response) => {
                            results.push((number, response.into_inner().code));
                            created.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(status)
                            if matches!(
                                status.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::Unknown
                                    | tonic::Code::Cancelled
                            ) =>
                        {
                            attempt += 1;
                            retries += 1;
                            anyhow::ensure!(
                                attempt < 200,
                                "create {number} kept failing: {status:?}"
                            );
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(status) => anyhow::bail!("create {number} failed: {status:?}"),
                    }
                }
            }
            anyhow::Ok((results, retries))
        }));
    }

    wait_until("a third of the creates", Duration::from_secs(300), || {
        let created = Arc::clone(&created);
        async move { Ok(created.load(Ordering::Relaxed) >= LINKS / 3) }
    })
    .await?;
    writers[0].kill()?;
    stack.idallocs[0].kill()?;
    let at_kill = created.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.idallocs[0].start_again().await?;
    writers[0].start_again().await?;
    assert!(at_kill < LINKS, "the kills must land mid-run");

    let mut returned: HashMap<usize, String> = HashMap::new();
    let mut retries = 0;
    for task in tasks {
        let (results, task_retries) = task.await??;
        retries += task_retries;
        returned.extend(results);
    }
    eprintln!(
        "{} creates, {retries} retries across the kills",
        returned.len()
    );
    assert_eq!(returned.len(), LINKS);
    let distinct: HashSet<&String> = returned.values().collect();
    assert_eq!(distinct.len(), LINKS, "two creates got the same code");

    let db = stack.cluster.primary.connect(&stack.database.name).await?;
    let rows = db.query("SELECT code, target_url FROM links", &[]).await?;
    // The leased ID is not stored: a generated code decodes to it.
    let codec =
        tinyurl_domain::CodeCodec::new(tinyurl_harness::services::TEST_CODE_SECRET.as_bytes(), 7)?;
    assert_eq!(
        rows.len(),
        LINKS,
        "exactly one link per create (idempotent retries)"
    );
    let stored: HashMap<String, String> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    for (number, code) in &returned {
        assert_eq!(
            stored.get(code).map(String::as_str),
            Some(format!("https://example.com/{number}").as_str()),
            "code {code}"
        );
    }

    // Ranges the killed writer leased but did not use to the end: at most its
    // two buffered ranges.
    let ids = rows
        .iter()
        .map(|row| {
            let code: &str = row.get(0);
            codec
                .decode(code)
                .and_then(|id| i64::try_from(id).ok())
                .with_context(|| format!("{code} does not decode to an ID"))
        })
        .collect::<anyhow::Result<Vec<i64>>>()?;
    let ranges = db
        .query(
            "SELECT start_id, end_id FROM idalloc_leases WHERE request_id LIKE $1 || ':%'",
            &[&killed_instance],
        )
        .await?;
    anyhow::ensure!(!ranges.is_empty(), "the killed writer leased nothing");
    let mut sorted_ids = ids.clone();
    sorted_ids.sort_unstable();
    let used_in = |start: i64, end: i64| {
        let from = sorted_ids.partition_point(|id| *id < start);
        let to = sorted_ids.partition_point(|id| *id < end);
        i64::try_from(to - from).unwrap_or(0)
    };
    let not_fully_used = ranges
        .iter()
        .filter(|row| {
            let (start, end): (i64, i64) = (row.get(0), row.get(1));
            used_in(start, end) < end - start
        })
        .count();
    eprintln!(
        "killed writer leased {} ranges, {not_fully_used} not fully used",
        ranges.len()
    );
    assert!(
        not_fully_used <= 2,
        "the killed writer lost {not_fully_used} ranges"
    );
    Ok(())
}

#[tokio::test]
async fn creates_keep_working_while_idalloc_is_down_for_ten_seconds() -> anyhow::Result<()> {
    let mut stack = stack(1, false).await?;
    let writer = stack.setup.start(&[]).await?;
    let key = stack.setup.create_api_key("steady")?;
    let mut links = client(&writer)?;

    let mut created = 0;
    let mut failures = Vec::new();
    let create_for = async |links: &mut Client, duration: Duration, failures: &mut Vec<String>| {
        let until = Instant::now() + duration;
        let mut count = 0;
        while Instant::now() < until {
            match links
                .create_link(authed(create("https://example.com/steady"), &key))
                .await
            {
                Ok(_) => count += 1,
                Err(status) => failures.push(format!("{:?}: {}", status.code(), status.message())),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        count
    };
    created += create_for(&mut links, Duration::from_secs(2), &mut failures).await;
    stack.idallocs[0].kill()?;
    created += create_for(&mut links, Duration::from_secs(10), &mut failures).await;
    stack.idallocs[0].start_again().await?;
    created += create_for(&mut links, Duration::from_secs(1), &mut failures).await;
    eprintln!("{created} creates across a 10 s idalloc outage");
    assert!(
        failures.is_empty(),
        "creates failed during the outage: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert_eq!(stack.count_links().await?, created);
    Ok(())
}

#[tokio::test]
async fn creates_succeed_while_redis_is_down_and_caching_resumes_after() -> anyhow::Result<()> {
    let mut stack = stack(1, true).await?;
    let writer = stack.setup.start(&[]).await?;
    let key = stack.setup.create_api_key("cache")?;
    let mut links = client(&writer)?;
    let redis_port = stack.redis()?.port();

    let before = links
        .create_link(authed(create("https://example.com/before"), &key))
        .await?
        .into_inner();
    assert!(matches!(
        command(redis_port, &["GET", &format!("link:{}", before.code)]).await?,
        Reply::Bulk(Some(_))
    ));

    if let Some(redis) = stack.redis.as_mut() {
        redis.kill()?;
    }
    for index in 0..20 {
        links
            .create_link(authed(
                create(&format!("https://example.com/during/{index}")),
                &key,
            ))
            .await
            .map_err(|status| anyhow::anyhow!("create failed while Redis was down: {status:?}"))?;
    }
    let (_, metrics) = http_get(writer.admin_addr(), "/metrics").await?;
    assert!(
        metrics.contains("writer_cache_errors_total"),
        "cache failures must be counted"
    );

    if let Some(redis) = stack.redis.as_mut() {
        redis.start_again().await?;
    }
    let mut links_for_wait = links.clone();
    let key_for_wait = key.clone();
    wait_until(
        "new links to be cached again",
        Duration::from_secs(30),
        || {
            let mut links = links_for_wait.clone();
            let key = key_for_wait.clone();
            async move {
                let link = links
                    .create_link(authed(create("https://example.com/after"), &key))
                    .await?
                    .into_inner();
                Ok(matches!(
                    command(redis_port, &["GET", &format!("link:{}", link.code)]).await?,
                    Reply::Bulk(Some(_))
                ))
            }
        },
    )
    .await?;
    links_for_wait
        .get_link(authed(GetLinkRequest { code: before.code }, &key))
        .await?;
    assert!(stack.count_links().await? >= 22);
    Ok(())
}

/// Aliases and generated codes share one keyspace: a generated code that
/// meets an existing alias is skipped, never overwritten.
#[tokio::test]
async fn a_generated_code_that_meets_an_alias_is_skipped() -> anyhow::Result<()> {
    let stack = stack(1, false).await?;
    let writer = stack.setup.start(&[]).await?;
    let key = stack.setup.create_api_key("collide")?;
    let mut links = client(&writer)?;
    let codec =
        tinyurl_domain::CodeCodec::new(tinyurl_harness::services::TEST_CODE_SECRET.as_bytes(), 7)?;

    // A fresh database: the writer's first leased range starts at ID 0, so
    // the first generated code is the code of ID 0. Take it as an alias first.
    let squatted = codec.encode(0).into_string();
    let alias = CreateLinkRequest {
        alias: squatted.clone(),
        ..create("https://example.com/alias")
    };
    links.create_link(authed(alias, &key)).await?;

    let generated = links
        .create_link(authed(create("https://example.com/generated"), &key))
        .await?
        .into_inner();
    assert_ne!(
        generated.code, squatted,
        "the alias must not be overwritten"
    );
    assert_eq!(
        generated.code,
        codec.encode(1).into_string(),
        "ID 0 is skipped, ID 1 used"
    );
    let kept = links
        .get_link(authed(GetLinkRequest { code: squatted }, &key))
        .await?
        .into_inner();
    assert_eq!(kept.target_url, "https://example.com/alias");
    let (_, metrics) = http_get(writer.admin_addr(), "/metrics").await?;
    assert!(
        metrics.contains("writer_codes_skipped_total 1"),
        "{metrics}"
    );
    Ok(())
}

/// Every new link is written through to Redis — single creates (group
/// committed) and batches alike — with the configured TTL, never outliving
/// the link's own expiry. Each Redis run starts with no scripts loaded, so
/// the first write-through also covers loading the script on demand.
#[tokio::test]
async fn write_through_caches_each_new_link_until_its_own_expiry() -> anyhow::Result<()> {
    let stack = stack(1, true).await?;
    let writer = stack.setup.start(&[]).await?;
    let key = stack.setup.create_api_key("write-through")?;
    let mut links = client(&writer)?;
    let redis_port = stack.redis()?.port();
    let pttl = |code: String| async move {
        match command(redis_port, &["PTTL", &format!("link:{code}")]).await? {
            Reply::Integer(millis) => anyhow::Ok(millis),
            other => anyhow::bail!("PTTL of {code}: {other:?}"),
        }
    };

    let lasting = links
        .create_link(authed(create("https://example.com/lasting"), &key))
        .await?
        .into_inner();
    let lasting_ttl = pttl(lasting.code.clone()).await?;
    assert!(
        (3_600_000..=86_400_000).contains(&lasting_ttl),
        "a link without expiry is cached for the configured day: {lasting_ttl} ms"
    );

    let expires_at = SystemTime::now() + Duration::from_secs(600);
    let expiring = links
        .create_link(authed(
            CreateLinkRequest {
                target_url: "https://example.com/expiring".to_owned(),
                expires_at: Some(prost_types::Timestamp::from(expires_at)),
                ..CreateLinkRequest::default()
            },
            &key,
        ))
        .await?
        .into_inner();
    let expiring_ttl = pttl(expiring.code.clone()).await?;
    assert!(
        (1..=600_000).contains(&expiring_ttl),
        "an entry never outlives its link: {expiring_ttl} ms for a link expiring in 600 s"
    );

    let mut batch: Vec<CreateLinkRequest> = (0..50)
        .map(|index| create(&format!("https://example.com/batch/{index}")))
        .collect();
    batch[7].alias = "written-through".to_owned();
    let results = links
        .batch_create_links(authed(BatchCreateLinksRequest { links: batch }, &key))
        .await?
        .into_inner()
        .results;
    assert_eq!(results.len(), 50);
    for (index, result) in results.into_iter().enumerate() {
        let Some(batch_create_links_result::Result::Link(link)) = result.result else {
            anyhow::bail!("batch item {index} failed: {result:?}");
        };
        match command(redis_port, &["GET", &format!("link:{}", link.code)]).await? {
            Reply::Bulk(Some(entry)) => assert!(
                entry.ends_with(&format!(" https://example.com/batch/{index}")),
                "entry of item {index}: {entry}"
            ),
            other => anyhow::bail!("item {index} ({}) not cached: {other:?}", link.code),
        }
        assert!(pttl(link.code).await? > 3_600_000);
    }
    Ok(())
}

/// Single creates are group committed; callers that give up (the deadline
/// passes and the server drops the call) must neither take other callers'
/// creates down with them nor leave a commit slot or a queued create behind.
#[tokio::test]
async fn cancelled_creates_leave_the_group_commit_working() -> anyhow::Result<()> {
    let stack = stack(1, true).await?;
    let writer = stack.setup.start(&[]).await?;
    let key = stack.setup.create_api_key("cancel")?;
    let links = client(&writer)?;

    let mut calls = tokio::task::JoinSet::new();
    for index in 0..400 {
        // Every other call has a deadline too short to make; the server drops
        // those calls wherever they are. Each on its own connection: h2 closes
        // a connection on which a client resets many streams.
        let patient = index % 2 == 0;
        let mut links = if patient {
            links.clone()
        } else {
            client(&writer)?
        };
        let key = key.clone();
        calls.spawn(async move {
            let mut request = authed(create(&format!("https://example.com/cancel/{index}")), &key);
            if !patient {
                request.set_timeout(Duration::from_micros(50 + 10 * index as u64));
            }
            (patient, links.create_link(request).await)
        });
    }
    let mut created = Vec::new();
    let mut gave_up = 0;
    while let Some(joined) = calls.join_next().await {
        let (patient, result) = joined?;
        match result {
            Ok(link) => created.push(link.into_inner().code),
            Err(status) if !patient => {
                gave_up += 1;
                assert!(
                    matches!(
                        status.code(),
                        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                    ),
                    "an impatient call failed otherwise: {status:?}"
                );
            }
            Err(status) => anyhow::bail!("a call without a deadline failed: {status:?}"),
        }
    }
    eprintln!("{gave_up} of 200 calls with a deadline gave up");
    assert!(
        created.len() >= 200,
        "every call without a deadline succeeds"
    );

    let db = stack.cluster.primary.connect(&stack.database.name).await?;
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM links WHERE code = ANY($1)",
            &[&created],
        )
        .await?
        .get(0);
    assert_eq!(stored, created.len() as i64, "every success is stored");

    // Nothing is stuck: one at a time (a lone create commits at once) and in
    // a burst (grouped), creates still complete.
    let mut links = links.clone();
    for index in 0..20 {
        links
            .create_link(authed(
                create(&format!("https://example.com/after/{index}")),
                &key,
            ))
            .await?;
    }
    let mut burst = tokio::task::JoinSet::new();
    for index in 0..100 {
        let mut links = links.clone();
        let key = key.clone();
        burst.spawn(async move {
            links
                .create_link(authed(
                    create(&format!("https://example.com/burst/{index}")),
                    &key,
                ))
                .await
        });
    }
    while let Some(joined) = burst.join_next().await {
        joined??;
    }
    Ok(())
}

#[tokio::test]
async fn requests_are_bounded_by_the_largest_legitimate_one() -> anyhow::Result<()> {
    let stack = stack(1, false).await?;
    let writer = stack.setup.start(&[]).await?;
    let key = stack.setup.create_api_key("bounds")?;
    let mut links = client(&writer)?;

    // The largest legitimate request: 1,000 items with 2,000-byte targets,
    // aliases and idempotency keys. It is decoded and served.
    let long_path = "p".repeat(2_000 - "https://example.com/".len() - 4);
    let full: Vec<CreateLinkRequest> = (0..1_000)
        .map(|index| CreateLinkRequest {
            target_url: format!("https://example.com/{long_path}{index:04}"),
            idempotency_key: format!("{index:0>128}"),
            ..CreateLinkRequest::default()
        })
        .collect();
    let answered = links
        .batch_create_links(authed(BatchCreateLinksRequest { links: full }, &key))
        .await?
        .into_inner();
    assert_eq!(answered.results.len(), 1_000);

    // Past it: refused before it is parsed, whatever it holds.
    let oversized = CreateLinkRequest {
        target_url: format!("https://example.com/{}", "x".repeat(3 * 1024 * 1024)),
        ..CreateLinkRequest::default()
    };
    let status = links
        .create_link(authed(oversized, &key))
        .await
        .expect_err("an oversized request");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    // The connection and the server are fine afterwards.
    let link = links
        .create_link(authed(create("https://example.com/after"), &key))
        .await?
        .into_inner();
    assert_eq!(link.target_url, "https://example.com/after");
    Ok(())
}

/// 16 callers each trying `per_caller` random keys: every call must be
/// refused, as unknown (looked up, within the budget) or over the budget
/// (not looked up), and the store asked at most as the budget allows
/// (a burst of 20 and 20 a second after it, whatever the machine's speed).
/// Returns the refusals by code, the time taken and the lookups made.
async fn random_key_flood(
    links: &Client,
    admin: std::net::SocketAddr,
    per_caller: usize,
) -> anyhow::Result<(HashMap<tonic::Code, usize>, Duration, f64)> {
    let before = metric(admin, "writer_key_lookups_total", &[]).await?;
    let started = Instant::now();
    let refusals = Arc::new(std::sync::Mutex::new(HashMap::<tonic::Code, usize>::new()));
    let mut callers = Vec::new();
    for _ in 0..16 {
        let (mut links, refusals) = (links.clone(), Arc::clone(&refusals));
        callers.push(tokio::spawn(async move {
            for _ in 0..per_caller {
                let request = GetLinkRequest {
                    code: "Ab3xY9q".to_owned(),
                };
                let status = links
                    .get_link(authed(request, &random_key()))
                    .await
                    .expect_err("an unknown key");
                if let Ok(mut refusals) = refusals.lock() {
                    *refusals.entry(status.code()).or_default() += 1;
                }
            }
        }));
    }
    for caller in callers {
        caller.await?;
    }
    let elapsed = started.elapsed();
    let refusals = refusals.lock().map(|map| map.clone()).unwrap_or_default();
    assert_eq!(refusals.values().sum::<usize>(), 16 * per_caller);
    // UNAUTHENTICATED (looked up), UNAVAILABLE (past the lookup budget) or
    // RESOURCE_EXHAUSTED (the address failed too often).
    assert!(
        refusals.keys().all(|code| matches!(
            code,
            tonic::Code::Unauthenticated
                | tonic::Code::Unavailable
                | tonic::Code::ResourceExhausted
        )),
        "{refusals:?}"
    );
    let looked_up = metric(admin, "writer_key_lookups_total", &[]).await? - before;
    let budget = 20.0 + 20.0 * elapsed.as_secs_f64().ceil();
    assert!(
        looked_up <= budget,
        "{looked_up} lookups for {} random keys in {elapsed:?} (budget {budget})",
        16 * per_caller
    );
    Ok((refusals, elapsed, looked_up))
}

#[tokio::test]
async fn random_keys_cannot_drive_one_database_query_each() -> anyhow::Result<()> {
    let stack = stack(1, false).await?;
    let writer = stack.setup.start(&[]).await?;
    let real_key = stack.setup.create_api_key("real")?;
    let links = client(&writer)?;
    let lookups = || metric(writer.admin_addr(), "writer_key_lookups_total", &[]);
    // In use before the flood: a key this writer knows keeps working while
    // the flood's address is refused new lookups.
    links
        .clone()
        .list_links(authed(ListLinksRequest::default(), &real_key))
        .await?;

    // 10,000 random keys, 16 callers at a time.
    let (refusals, elapsed, looked_up) = random_key_flood(&links, writer.admin_addr(), 625).await?;
    println!(
        "10,000 random keys in {elapsed:?}: {looked_up} database lookups, refusals {refusals:?}"
    );

    // One unknown key tried again and again is looked up once (its refusal is
    // remembered for 10 s).
    let repeated = random_key();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = lookups().await?;
    let started = Instant::now();
    for _ in 0..500 {
        let status = links
            .clone()
            .get_link(authed(
                GetLinkRequest {
                    code: "Ab3xY9q".to_owned(),
                },
                &repeated,
            ))
            .await
            .expect_err("an unknown key");
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::ResourceExhausted
            ),
            "{status:?}"
        );
    }
    let repeated_lookups = lookups().await? - before;
    assert!(
        repeated_lookups <= 1.0 + (started.elapsed().as_secs_f64() / 10.0).floor(),
        "{repeated_lookups} lookups of one repeated unknown key"
    );

    // The real key, known to this writer, works from the flooding address.
    let link = links
        .clone()
        .create_link(authed(create("https://example.com/real"), &real_key))
        .await?
        .into_inner();
    assert_eq!(link.target_url, "https://example.com/real");
    Ok(())
}

/// The id `api-key create` reports on standard error.
fn created_key_id(stack: &Stack, args: &[&str]) -> anyhow::Result<(String, String)> {
    let mut full = vec!["create"];
    full.extend_from_slice(args);
    let output = stack.setup.api_key_command(&full)?;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8(output.stderr)?;
    let id = stderr
        .split_whitespace()
        .nth(3)
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no key id in {stderr:?}"))?;
    Ok((id, String::from_utf8(output.stdout)?.trim().to_owned()))
}

/// Waits until `key` is refused as UNAUTHENTICATED by every writer in
/// `clients`; returns how long that took.
async fn refused_everywhere(clients: &[Client], key: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    // Far below the 60 s a cached key would otherwise live: only the
    // revocation poll can make this pass.
    wait_until(
        "the key refused by every writer",
        Duration::from_secs(10),
        || {
            let clients = clients.to_vec();
            let key = key.to_owned();
            async move {
                for mut links in clients {
                    let answer = links
                        .list_links(authed(ListLinksRequest::default(), &key))
                        .await;
                    match answer {
                        Err(status) if status.code() == tonic::Code::Unauthenticated => {}
                        _ => return Ok(false),
                    }
                }
                Ok(true)
            }
        },
    )
    .await?;
    Ok(started.elapsed())
}

/// Two writers on one database, a client of each, and three keys: a
/// manager, a reader and a creator.
struct TwoWriters {
    clients: [Client; 2],
    manager_id: String,
    manager: String,
    reader: String,
    creator: String,
    _writers: [tinyurl_harness::ServiceProcess; 2],
    // Declared last: the writers stop before their databases.
    stack: Stack,
}

impl TwoWriters {
    async fn start() -> anyhow::Result<Self> {
        let stack = stack(1, false).await?;
        let writers = [stack.setup.start(&[]).await?, stack.setup.start(&[]).await?];
        let clients = [client(&writers[0])?, client(&writers[1])?];
        let (manager_id, manager) = created_key_id(&stack, &["--name", "manager"])?;
        let reader = stack
            .setup
            .create_api_key_with(&["--name", "reader", "--scope", "read"])?;
        let creator = stack
            .setup
            .create_api_key_with(&["--name", "creator", "--scope", "create"])?;
        Ok(Self {
            clients,
            manager_id,
            manager,
            reader,
            creator,
            _writers: writers,
            stack,
        })
    }

    fn links(&self) -> Client {
        self.clients[0].clone()
    }

    fn api_key_command(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        self.stack.setup.api_key_command(args)
    }
}

/// Scopes: read < create < manage.
async fn each_scope_allows_its_calls_only(two: &TwoWriters) -> anyhow::Result<()> {
    let mut links = two.links();
    let status = links
        .create_link(authed(create("https://example.com/r"), &two.reader))
        .await
        .expect_err("a read-only key cannot create");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("scope is read"), "{status:?}");
    links
        .list_links(authed(ListLinksRequest::default(), &two.reader))
        .await?;
    let made = links
        .create_link(authed(create("https://example.com/c"), &two.creator))
        .await?
        .into_inner();
    let status = links
        .delete_link(authed(DeleteLinkRequest { code: made.code }, &two.creator))
        .await
        .expect_err("a create key cannot delete");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    Ok(())
}

/// A deleted alias is never reissued: not to another key, not to its own.
async fn a_deleted_alias_is_never_reissued(two: &TwoWriters) -> anyhow::Result<()> {
    let mut links = two.links();
    let aliased = CreateLinkRequest {
        alias: "poster".to_owned(),
        ..create("https://example.com/poster")
    };
    links
        .create_link(authed(aliased.clone(), &two.manager))
        .await?;
    links
        .delete_link(authed(
            DeleteLinkRequest {
                code: "poster".to_owned(),
            },
            &two.manager,
        ))
        .await?;
    for key in [&two.creator, &two.manager] {
        let status = links
            .create_link(authed(aliased.clone(), key))
            .await
            .expect_err("a retired alias");
        assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
        assert!(status.message().contains("never reissued"), "{status:?}");
    }
    Ok(())
}

/// Both writers have a key cached; a revocation reaches both well within a
/// second of polling, not after the cache's minute.
async fn a_revocation_reaches_both_writers_at_once(two: &TwoWriters) -> anyhow::Result<()> {
    let (victim_id, victim) = created_key_id(&two.stack, &["--name", "leaked"])?;
    let revoked = two.api_key_command(&["revoke", &victim_id])?;
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let took = refused_everywhere(&two.clients, &victim).await?;
    println!("a revoked key was refused by both writers after {took:?}");
    let again = two.api_key_command(&["revoke", &victim_id])?;
    assert!(!again.status.success(), "a second revoke is an error");
    Ok(())
}

/// Rotation: during the grace period both values work on both writers; a
/// rotation without grace retires the old values everywhere, and the
/// newest value is the same key.
async fn a_rotation_keeps_both_values_through_its_grace_only(
    two: &TwoWriters,
) -> anyhow::Result<()> {
    let rotated = two.api_key_command(&["rotate", &two.manager_id, "--grace", "1h"])?;
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let new_value = String::from_utf8(rotated.stdout)?.trim().to_owned();
    assert!(new_value.starts_with("tu_") && new_value != two.manager);
    for mut links in two.clients.clone() {
        for key in [&two.manager, &new_value] {
            links
                .list_links(authed(ListLinksRequest::default(), key))
                .await?;
        }
    }
    let rotated_again = two.api_key_command(&["rotate", &two.manager_id, "--grace", "0s"])?;
    assert!(rotated_again.status.success());
    let newest = String::from_utf8(rotated_again.stdout)?.trim().to_owned();
    let took = refused_everywhere(&two.clients, &new_value).await?;
    println!("a rotated-out value was refused by both writers after {took:?}");
    // The first value, overwritten by the second rotation inside its grace,
    // stops working everywhere too (both writers had it cached).
    let first_took = refused_everywhere(&two.clients, &two.manager).await?;
    tinyurl_harness::attacker::row(
        "L3 a key rotated twice within a minute keeps its first value",
        "rotate a key with an hour's grace, use both values at two writers (cached), rotate again at once",
        &format!(
            "both earlier values refused by both writers within {:.1} s of the second rotation (the cache keeps a key 60 s)",
            (took + first_took).as_secs_f64()
        ),
        "the newest value creates and reads",
    );
    // Same key id: the newest value is still the manager, whose only link
    // (the alias) was deleted.
    let mut links = two.links();
    let listed = links
        .list_links(authed(ListLinksRequest::default(), &newest))
        .await?
        .into_inner();
    assert!(listed.links.is_empty(), "the only link was deleted");
    let kept = links
        .create_link(authed(create("https://example.com/kept"), &newest))
        .await?
        .into_inner();
    links
        .get_link(authed(GetLinkRequest { code: kept.code }, &newest))
        .await?;
    Ok(())
}

/// A key's own rate, set and shown; a malformed one names the field; the
/// list shows every key, revoked ones too, and never a key's value.
fn rates_set_and_keys_listed_without_values(two: &TwoWriters) -> anyhow::Result<()> {
    let set = two.api_key_command(&["set-rate", &two.manager_id, "50/s"])?;
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let bad = two.api_key_command(&["set-rate", &two.manager_id, "fast"])?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("rate"));
    let listing = two.api_key_command(&["list"])?;
    let listing = String::from_utf8(listing.stdout)?;
    for expected in [
        "manager", "reader", "creator", "leaked", "revoked", "read ", "create ",
    ] {
        assert!(listing.contains(expected), "{expected:?} in\n{listing}");
    }
    assert!(
        !listing.contains("tu_"),
        "keys are never listed:\n{listing}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_scopes_revocation_rotation_and_retired_codes_across_two_writers() -> anyhow::Result<()>
{
    let two = TwoWriters::start().await?;
    each_scope_allows_its_calls_only(&two).await?;
    a_deleted_alias_is_never_reissued(&two).await?;
    a_revocation_reaches_both_writers_at_once(&two).await?;
    a_rotation_keeps_both_values_through_its_grace_only(&two).await?;
    rates_set_and_keys_listed_without_values(&two)
}

/// The attacker table: what someone inside the network tries first, one row
/// each, every row refused with its own code and nothing reaching storage
/// that should not. gRPC only for now (the REST API will add its column).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_on_the_inside_is_refused_row_by_row() -> anyhow::Result<()> {
    use tinyurl_harness::services::idalloc_client;
    use tinyurl_proto::v1::LeaseRangeRequest;
    use tinyurl_proto::v1::id_allocator_client::IdAllocatorClient;

    let stack = stack(1, false).await?;
    let writers = [stack.setup.start(&[]).await?, stack.setup.start(&[]).await?];
    let clients = [client(&writers[0])?, client(&writers[1])?];
    let (victim_id, victim) = created_key_id(&stack, &["--name", "victim"])?;
    let attacker = stack.setup.create_api_key("attacker")?;
    let mut links = clients[0].clone();
    let idalloc_channel = Channel::from_shared(stack.idallocs[0].endpoint())?
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let lease = |namespace: &str, count: u64| LeaseRangeRequest {
        namespace: namespace.to_owned(),
        count,
        request_id: String::new(),
    };
    fn code_of<T>(answer: Result<T, tonic::Status>) -> tonic::Code {
        answer.map_or_else(|status| status.code(), |_| tonic::Code::Ok)
    }
    let mut table: Vec<(&str, tonic::Code, tonic::Code, String)> = Vec::new();
    // Both real keys in use on both writers before the random-key flood
    // spends the lookup budget (a real client would retry UNAVAILABLE).
    for mut links in clients.clone() {
        for key in [&victim, &attacker] {
            links
                .list_links(authed(ListLinksRequest::default(), key))
                .await?;
        }
    }

    let oversized = CreateLinkRequest {
        target_url: format!("https://example.com/{}", "x".repeat(3 * 1024 * 1024)),
        ..CreateLinkRequest::default()
    };
    let answer = links.create_link(authed(oversized, &victim)).await;
    table.push((
        "oversized message",
        tonic::Code::ResourceExhausted,
        code_of(answer),
        String::new(),
    ));

    let (refusals, elapsed, looked_up) =
        random_key_flood(&links, writers[0].admin_addr(), 125).await?;
    // Each refusal is UNAUTHENTICATED (looked up) or UNAVAILABLE (past the
    // lookup budget); the flood itself asserts both and the budget.
    let answered = if refusals.contains_key(&tonic::Code::Unauthenticated) {
        tonic::Code::Unauthenticated
    } else {
        tonic::Code::Unavailable
    };
    table.push((
        "2,000 random keys",
        tonic::Code::Unauthenticated,
        answered,
        format!("{looked_up} database lookups in {elapsed:.2?}, refusals {refusals:?}"),
    ));

    let answer = IdAllocatorClient::new(idalloc_channel.clone())
        .lease_range(lease("links", 10))
        .await;
    table.push((
        "idalloc without the service token",
        tonic::Code::Unauthenticated,
        code_of(answer),
        String::new(),
    ));
    let mut idalloc = idalloc_client(idalloc_channel)?;
    let answer = idalloc.lease_range(lease("payments", 10)).await;
    table.push((
        "idalloc, a namespace off the allow-list",
        tonic::Code::PermissionDenied,
        code_of(answer),
        String::new(),
    ));
    let answer = idalloc.lease_range(lease("links", u64::MAX / 2)).await;
    table.push((
        "idalloc, a huge count",
        tonic::Code::InvalidArgument,
        code_of(answer),
        String::new(),
    ));

    let poster = CreateLinkRequest {
        alias: "printed-poster".to_owned(),
        ..create("https://example.com/poster")
    };
    links.create_link(authed(poster.clone(), &victim)).await?;
    links
        .delete_link(authed(
            DeleteLinkRequest {
                code: "printed-poster".to_owned(),
            },
            &victim,
        ))
        .await?;
    let answer = links.create_link(authed(poster, &attacker)).await;
    table.push((
        "a deleted alias re-created by another key",
        tonic::Code::AlreadyExists,
        code_of(answer),
        String::new(),
    ));

    let revoked = stack.setup.api_key_command(&["revoke", &victim_id])?;
    anyhow::ensure!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let took = refused_everywhere(&clients, &victim).await?;
    table.push((
        "a revoked key, cached by two writers",
        tonic::Code::Unauthenticated,
        tonic::Code::Unauthenticated,
        format!("refused by both after {took:.2?}"),
    ));

    println!("| attack | expected | answered | measured |");
    println!("|---|---|---|---|");
    for (attack, expected, answered, measured) in &table {
        println!("| {attack} | {expected:?} | {answered:?} | {measured} |");
    }
    for (attack, expected, answered, _) in &table {
        assert_eq!(answered, expected, "{attack}");
    }
    let db = stack.cluster.primary.connect(&stack.database.name).await?;
    let namespaces: i64 = db
        .query_one(
            "SELECT count(*) FROM idalloc_namespaces WHERE namespace <> 'links'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(namespaces, 0, "no namespace was created by the attacker");
    Ok(())
}

/// Offers `per_second` creates a second for `duration`, spread over
/// `clients` (4 callers each); returns (accepted, refused with a retry hint,
/// elapsed). Any other answer fails.
async fn offer_creates(
    clients: &[Client],
    key: &str,
    per_second: u32,
    duration: Duration,
) -> anyhow::Result<(u64, u64, Duration)> {
    let callers = clients.len() * 4;
    let period = Duration::from_secs_f64(callers as f64 / f64::from(per_second));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let mut links = clients[caller % clients.len()].clone();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let (mut accepted, mut limited) = (0_u64, 0_u64);
            let mut ticks = tokio::time::interval(period);
            let mut sequence = 0;
            while started.elapsed() < duration {
                ticks.tick().await;
                sequence += 1;
                let request = create(&format!("https://example.com/limited/{caller}/{sequence}"));
                match links.create_link(authed(request, &key)).await {
                    Ok(_) => accepted += 1,
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        let hint = status
                            .get_error_details()
                            .retry_info()
                            .and_then(|info| info.retry_delay);
                        anyhow::ensure!(
                            hint.is_some_and(
                                |wait| wait > Duration::ZERO && wait <= Duration::from_secs(1)
                            ),
                            "a usable retry hint: {hint:?} in {status:?}"
                        );
                        limited += 1;
                    }
                    Err(status) => anyhow::bail!("unexpected answer {status:?}"),
                }
            }
            Ok((accepted, limited))
        }));
    }
    let (mut accepted, mut limited) = (0, 0);
    for task in tasks {
        let (task_accepted, task_limited) = task.await??;
        accepted += task_accepted;
        limited += task_limited;
    }
    Ok((accepted, limited, started.elapsed()))
}

/// One per-key rate of 100/s, enforced by two writers together through
/// Redis; with Redis stopped each writer limits on its own (creates keep
/// working, the fallback is counted), and with Redis back the limit is
/// shared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_share_one_per_key_rate_and_fall_back_without_redis() -> anyhow::Result<()> {
    let mut stack = stack(1, true).await?;
    let writers = [stack.setup.start(&[]).await?, stack.setup.start(&[]).await?];
    let clients = [client(&writers[0])?, client(&writers[1])?];
    let key = stack
        .setup
        .create_api_key_with(&["--name", "limited", "--rate", "100/s"])?;
    let fallbacks = || async {
        Ok::<_, anyhow::Error>(
            metric(
                writers[0].admin_addr(),
                "writer_rate_limit_fallbacks_total",
                &[],
            )
            .await?
                + metric(
                    writers[1].admin_addr(),
                    "writer_rate_limit_fallbacks_total",
                    &[],
                )
                .await?,
        )
    };

    // 400/s offered for 10 s over both writers: about 1,000 accepted (the
    // rate over the time actually taken, plus a burst of 10).
    let (accepted, limited, elapsed) =
        offer_creates(&clients, &key, 400, Duration::from_secs(10)).await?;
    let expected = 100.0 * elapsed.as_secs_f64() + 10.0;
    println!(
        "shared: {accepted} accepted, {limited} refused in {elapsed:.2?} (expected {expected:.0})"
    );
    assert!(
        (accepted as f64 - expected).abs() <= 0.1 * expected,
        "{accepted} accepted, {expected:.0} expected"
    );
    assert!(limited > 0);
    assert_eq!(fallbacks().await?, 0.0, "every decision was shared");

    // Redis stopped: each writer limits on its own, so creates go on (up to
    // the rate per writer), and the fallback is counted.
    stack
        .redis
        .as_mut()
        .context("the stack has Redis")?
        .stop()?;
    let (accepted, _, elapsed) = offer_creates(&clients, &key, 400, Duration::from_secs(3)).await?;
    println!("Redis down: {accepted} accepted in {elapsed:.2?}");
    // Each writer now limits on its own: creates go on, and at most both
    // writers' allowances (with their bursts) are accepted.
    assert!(accepted > 0, "creates keep working without Redis");
    assert!(
        accepted as f64 <= 2.0 * (100.0 * elapsed.as_secs_f64() + 10.0) * 1.1,
        "still limited, per writer: {accepted}"
    );
    assert!(
        (accepted as f64) <= 2.0 * (100.0 * elapsed.as_secs_f64() + 10.0) * 1.1,
        "still limited, per writer: {accepted}"
    );
    let counted = fallbacks().await?;
    assert!(counted > 0.0, "the fallback is counted");

    // Redis back: shared again once the writers have reconnected.
    stack
        .redis
        .as_mut()
        .context("the stack has Redis")?
        .start_again()
        .await?;
    wait_until(
        "the writers to decide through Redis again",
        Duration::from_secs(20),
        || {
            let (clients, key) = (clients.clone(), key.clone());
            async move {
                let before = fallbacks().await?;
                offer_creates(&clients, &key, 40, Duration::from_millis(500)).await?;
                Ok(fallbacks().await? == before)
            }
        },
    )
    .await?;
    let (accepted, _, elapsed) = offer_creates(&clients, &key, 400, Duration::from_secs(3)).await?;
    let expected = 100.0 * elapsed.as_secs_f64() + 10.0;
    println!("Redis back: {accepted} accepted in {elapsed:.2?} (expected {expected:.0})");
    assert!(
        (accepted as f64) <= expected * 1.1,
        "shared again: {accepted} accepted, {expected:.0} expected"
    );
    Ok(())
}

/// `count` calls with `key` to `writer`, the n-th claiming to come from
/// `forwarded(n)`; the codes answered.
async fn failed_calls(
    writer: &ServiceProcess,
    key: &str,
    forwarded: impl Fn(usize) -> String,
    count: usize,
) -> anyhow::Result<Vec<tonic::Code>> {
    let mut links = client(writer)?;
    let mut codes = Vec::with_capacity(count);
    for call in 0..count {
        let mut request = authed(ListLinksRequest::default(), key);
        request
            .metadata_mut()
            .insert("x-forwarded-for", forwarded(call).parse()?);
        codes.push(match links.list_links(request).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        });
    }
    Ok(codes)
}

/// Failed authentications are limited per client address: the peer's, or
/// the one a trusted gRPC proxy names in `x-forwarded-for` (a forged one
/// from an untrusted peer changes nothing, nor from a proxy trusted only for
/// the REST API).
#[tokio::test]
async fn failed_authentications_are_limited_per_client_address() -> anyhow::Result<()> {
    let stack = stack(1, true).await?;
    let limit = ("TINYURL_AUTH_FAILURE_RATE_PER_IP", "5/s");
    // Trusted in front of the REST API only: not for gRPC callers.
    let untrusting = stack
        .setup
        .start(&[limit, ("TINYURL_TRUSTED_PROXIES", "127.0.0.1")])
        .await?;
    let trusting = stack
        .setup
        .start(&[limit, ("TINYURL_GRPC_TRUSTED_PROXIES", "127.0.0.1")])
        .await?;
    let unknown = random_key();
    let real = stack.setup.create_api_key("real")?;
    for writer in [&untrusting, &trusting] {
        client(writer)?
            .list_links(authed(ListLinksRequest::default(), &real))
            .await?;
    }

    // An untrusted peer forging a new address each time is still one
    // client: refused after its burst.
    let codes = failed_calls(&untrusting, &unknown, |n| format!("203.0.113.{n}"), 20).await?;
    assert_eq!(codes[0], tonic::Code::Unauthenticated);
    assert!(
        codes.contains(&tonic::Code::ResourceExhausted),
        "forged addresses are ignored: {codes:?}"
    );
    // Behind a trusted proxy, each address has its own allowance...
    let codes = failed_calls(&trusting, &unknown, |n| format!("198.51.100.{n}"), 20).await?;
    assert!(
        codes
            .iter()
            .all(|code| *code == tonic::Code::Unauthenticated),
        "one failure from each of 20 addresses: {codes:?}"
    );
    // ...and one address failing again and again is refused.
    let codes = failed_calls(&trusting, &unknown, |_| "192.0.2.44".to_owned(), 20).await?;
    assert!(codes.contains(&tonic::Code::ResourceExhausted), "{codes:?}");
    // A key in use keeps working from the refused addresses.
    for writer in [&untrusting, &trusting] {
        let mut request = authed(ListLinksRequest::default(), &real);
        request
            .metadata_mut()
            .insert("x-forwarded-for", "192.0.2.44".parse()?);
        client(writer)?.list_links(request).await?;
    }
    Ok(())
}

/// The operators' blocklist file: exact hosts and `*.` suffixes refused at
/// create and update, changes applied within seconds, a broken change
/// refused with the old list kept.
#[tokio::test]
async fn the_blocklist_file_is_enforced_and_reloaded() -> anyhow::Result<()> {
    let stack = stack(1, false).await?;
    let dir = tinyurl_harness::process::ScratchDir::new("blocklist", None)?;
    let file = dir.path().join("blocklist.txt");
    let replace = |text: &str| -> anyhow::Result<()> {
        let staged = file.with_extension("new");
        std::fs::write(&staged, text)?;
        std::fs::rename(&staged, &file)?;
        Ok(())
    };
    replace("# phishing\nbad.example\n*.phish.example\n")?;
    let path = file.display().to_string();
    let writer = stack
        .setup
        .start(&[("TINYURL_BLOCKLIST_FILE", path.as_str())])
        .await?;
    let key = stack.setup.create_api_key("blocklist")?;
    let links = client(&writer)?;
    let refused = |url: &'static str| {
        let (mut links, key) = (links.clone(), key.clone());
        async move {
            match links.create_link(authed(create(url), &key)).await {
                Ok(_) => Ok(false),
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    anyhow::ensure!(bad_field(&status) == "target_url", "{status:?}");
                    anyhow::ensure!(status.message().contains("blocked"), "{status:?}");
                    Ok(true)
                }
                Err(status) => anyhow::bail!("unexpected {status:?}"),
            }
        }
    };
    for (url, blocked) in [
        ("https://bad.example/login", true),
        ("https://ok.bad.example/", false),
        ("https://login.phish.example/", true),
        ("https://phish.example/", false),
    ] {
        assert_eq!(refused(url).await?, blocked, "{url}");
    }
    // An update to a listed host is refused too.
    let link = links
        .clone()
        .create_link(authed(create("https://fine.example/"), &key))
        .await?
        .into_inner();
    let status = links
        .clone()
        .update_link(authed(
            UpdateLinkRequest {
                code: link.code,
                target_url: Some("https://bad.example/".to_owned()),
                ..UpdateLinkRequest::default()
            },
            &key,
        ))
        .await
        .expect_err("a listed host");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A new entry is in force within seconds, no restart.
    replace("bad.example\n*.phish.example\nnew.example\n")?;
    wait_until("the new entry to apply", Duration::from_secs(10), || {
        refused("https://new.example/")
    })
    .await?;
    // A broken change is refused; the list in force stays.
    replace("new.example\nnot a host!\n")?;
    wait_until(
        "the broken change to be counted",
        Duration::from_secs(10),
        || async {
            metric(
                writer.admin_addr(),
                "writer_blocklist_reloads_total",
                &["outcome=\"failed\""],
            )
            .await
            .map(|failed| failed >= 1.0)
        },
    )
    .await?;
    assert!(
        refused("https://login.phish.example/").await?,
        "the old list stays"
    );
    assert!(refused("https://new.example/").await?);
    Ok(())
}

/// One daily create quota per key, counted by every writer together; a
/// request that would go over is refused whole, with a hint to tomorrow.
#[tokio::test]
async fn the_daily_create_quota_is_shared_by_the_writers() -> anyhow::Result<()> {
    let stack = stack(1, true).await?;
    let quota = ("TINYURL_DAILY_CREATE_QUOTA", "5");
    let writers = [
        stack.setup.start(&[quota]).await?,
        stack.setup.start(&[quota]).await?,
    ];
    let key = stack.setup.create_api_key("quota")?;
    for index in 0..5 {
        client(&writers[index % 2])?
            .create_link(authed(
                create(&format!("https://example.com/q{index}")),
                &key,
            ))
            .await?;
    }
    let status = client(&writers[1])?
        .create_link(authed(create("https://example.com/over"), &key))
        .await
        .expect_err("past the quota");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("5 links a day"), "{status:?}");
    let hint = status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay);
    assert!(
        hint.is_some_and(|wait| wait <= Duration::from_secs(86_400)),
        "{hint:?}"
    );
    let batch = client(&writers[0])?
        .batch_create_links(authed(
            BatchCreateLinksRequest {
                links: vec![create("https://example.com/b1")],
            },
            &key,
        ))
        .await
        .expect_err("a batch past the quota");
    assert_eq!(batch.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        stack.count_links().await?,
        5,
        "nothing past the quota was stored"
    );
    Ok(())
}
