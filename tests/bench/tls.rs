//! Benchmark: what internal TLS costs. A plaintext stack and a TLS stack
//! (TLS-only Postgres and Redis, idalloc, writer and redirect with a test CA)
//! run side by side; in each round both are measured back to back, in
//! alternating order, on two workloads:
//!
//! - `CreateLink` at 64 concurrent gRPC clients (over TLS to the writer on
//!   the TLS stack; the writer's Postgres, Redis and idalloc hops are TLS too);
//! - the redirect's Redis path: L1 off and clicks off, wrk cycling over
//!   10,000 links, so every request is one Redis `GET` (checked on the tier
//!   counters and printed); HTTP to the redirect is plaintext on both (nginx
//!   terminates the client's TLS in production).
//!
//! Reported as TLS ÷ plaintext, per workload.
//!
//! With `--compare redis-cluster` the two stacks are plaintext and differ in
//! their Redis instead: a single server against a Redis Cluster of three
//! masters (the writer's write-through then goes as a slot-split pipeline,
//! and each redirect `GET` to the master owning its slot). Reported as
//! cluster ÷ single.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-tls`

mod common;
mod wrk;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use common::{Sample, collect, timed_loop};
use tinyurl_harness::process::{ScratchDir, find_binary};
use tinyurl_harness::services::{WriterSetup, metric, start_idalloc, start_redirect};
use tinyurl_harness::tls::TestCa;
use tinyurl_harness::{PgCluster, RedisServer, ServiceProcess};
use tinyurl_proto::v1::links_client::LinksClient;
use tinyurl_proto::v1::{BatchCreateLinksRequest, CreateLinkRequest, batch_create_links_result};
use tinyurl_runtime::grpc::Bearer;
use tinyurl_runtime::tls::grpc_channel;
use tonic::transport::{Channel, Endpoint};
use wrk::Wrk;

#[derive(Parser)]
#[command(
    name = "bench-tls",
    about = "create and redirect throughput with internal TLS on and off, or on a single Redis and a Redis Cluster"
)]
struct Args {
    /// What the two stacks differ in.
    #[arg(long, value_enum, default_value_t = Compare::Tls)]
    compare: Compare,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds; each measures both stacks on both workloads.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent gRPC clients creating links.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// wrk connections to the redirect.
    #[arg(long, default_value_t = 64)]
    connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Compare {
    /// Plaintext inside against internal TLS.
    Tls,
    /// A single Redis against a three-master Redis Cluster.
    RedisCluster,
}

impl Compare {
    /// Names of the baseline and the variant.
    fn labels(self) -> [&'static str; 2] {
        match self {
            Self::Tls => ["plaintext", "TLS"],
            Self::RedisCluster => ["single Redis", "Redis Cluster"],
        }
    }
}

/// One whole system, plaintext or TLS inside.
struct Stack {
    redirect: ServiceProcess,
    channel: Channel,
    key: String,
    /// A wrk script cycling over the stack's seeded links.
    script: PathBuf,
    // Held for their lifetime; dropped (stopped) with the stack.
    _writer: ServiceProcess,
    _idalloc: ServiceProcess,
    _redis: RedisServer,
    _cluster: PgCluster,
}

/// Links every redirect run cycles over.
const LINKS: usize = 10_000;

async fn start_stack(
    tls: Option<&TestCa>,
    redis_cluster: bool,
    clients: usize,
    scratch: &std::path::Path,
) -> anyhow::Result<Stack> {
    let (mut cluster, redis, env, identity) = match tls {
        Some(ca) => {
            let backing = ca.issue("backing")?;
            let services = ca.issue("services")?;
            (
                PgCluster::start_tls(&backing).await?,
                RedisServer::start_tls(ca, &backing, "bench-redis-password").await?,
                ca.env(&services),
                Some(ca.identity(&ca.issue("client")?)?),
            )
        }
        None => (
            PgCluster::start_with_replicas(0).await?,
            if redis_cluster {
                RedisServer::start_cluster(3).await?
            } else {
                RedisServer::start().await?
            },
            Vec::new(),
            None,
        ),
    };
    let database = cluster.create_database().await?;
    let mut idalloc_env = env.clone();
    idalloc_env.push(("RUST_LOG".to_owned(), "warn".to_owned()));
    let idalloc = start_idalloc(&database.primary_url, &pairs(&idalloc_env)).await?;
    let setup = WriterSetup {
        database_url: database.primary_url.clone(),
        idalloc_urls: vec![idalloc.endpoint()],
        redis_url: Some(redis.url()),
        env: env.clone(),
    };
    let pool_size = clients.to_string();
    let writer = setup
        .start(&[("RUST_LOG", "warn"), ("TINYURL_DB_POOL_SIZE", &pool_size)])
        .await?;
    let key = setup.create_api_key("bench")?;
    let mut redirect_env = env;
    redirect_env.extend(
        [
            ("TINYURL_DATABASE_URL", database.primary_url.as_str()),
            ("TINYURL_REDIS_URL", redis.url().as_str()),
            ("TINYURL_L1_CAPACITY", "0"),
            ("TINYURL_CLICKS_ENABLED", "false"),
            ("RUST_LOG", "warn"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );
    let redirect = start_redirect(&pairs(&redirect_env)).await?;
    let channel = grpc_channel(
        vec![
            Endpoint::from_shared(writer.endpoint())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10)),
        ],
        identity.as_ref(),
    )?;
    let codes = seed(&channel, &key).await?;
    let name = format!("{}-{redis_cluster}", tls.is_some());
    let codes_file = scratch.join(format!("codes-{name}.txt"));
    std::fs::write(&codes_file, codes.join("\n"))?;
    let script = scratch.join(format!("cycle-{name}.lua"));
    std::fs::write(&script, cycle_lua(&codes_file))?;
    Ok(Stack {
        _writer: writer,
        redirect,
        channel,
        key,
        script,
        _idalloc: idalloc,
        _redis: redis,
        _cluster: cluster,
    })
}

async fn seed(channel: &Channel, key: &str) -> anyhow::Result<Vec<String>> {
    let mut codes = Vec::with_capacity(LINKS);
    for batch in 0..LINKS / 1_000 {
        let response = links(channel, key)?
            .batch_create_links(BatchCreateLinksRequest {
                links: (0..1_000)
                    .map(|index| CreateLinkRequest {
                        target_url: format!("https://example.com/tls/{batch}/{index}"),
                        ..CreateLinkRequest::default()
                    })
                    .collect(),
            })
            .await?
            .into_inner();
        for result in response.results {
            match result.result {
                Some(batch_create_links_result::Result::Link(link)) => codes.push(link.code),
                other => anyhow::bail!("seeding failed: {other:?}"),
            }
        }
    }
    Ok(codes)
}

/// Each wrk connection walks the codes from its own random start.
fn cycle_lua(codes_file: &std::path::Path) -> String {
    format!(
        r#"local codes = {{}}
for line in io.lines("{file}") do codes[#codes + 1] = "/" .. line end
local n = #codes
math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16))
local i = math.random(n)
request = function()
  i = i % n + 1
  return wrk.format("GET", codes[i])
end
"#,
        file = codes_file.display()
    )
}

/// Redis lookups the redirect made so far.
async fn redis_lookups(stack: &Stack) -> anyhow::Result<f64> {
    metric(
        stack.redirect.admin_addr(),
        "redirect_tier_lookups_total",
        &["tier=\"l2\""],
    )
    .await
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

fn links(
    channel: &Channel,
    key: &str,
) -> anyhow::Result<LinksClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>> {
    Ok(LinksClient::with_interceptor(
        channel.clone(),
        Bearer::new(key).context("the key is not a header value")?,
    ))
}

async fn creates(stack: &Stack, clients: usize, duration: Duration) -> anyhow::Result<Sample> {
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let links = links(&stack.channel, &stack.key)?;
        tasks.push(tokio::spawn(async move {
            Ok(timed_loop(duration, |sequence| {
                let mut links = links.clone();
                async move {
                    links
                        .create_link(CreateLinkRequest {
                            target_url: format!("https://example.com/{client}/{sequence}"),
                            ..CreateLinkRequest::default()
                        })
                        .await
                        .ok()
                        .map(|_| 1)
                }
            })
            .await)
        }));
    }
    collect(tasks).await
}

#[derive(Default)]
struct Totals {
    creates: [Sample; 2],
    redirects: [(f64, f64, f64, u64); 2],
    lookups_per_request: [f64; 2],
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wrk = Wrk {
        binary: find_binary("wrk", &[PathBuf::from("/usr/bin")], "wrk")?,
        threads: 1,
        duration: Duration::from_secs(args.seconds),
        headers: Vec::new(),
    };
    let ca = TestCa::new()?;
    let scratch = ScratchDir::new("bench-tls", None)?;
    let stacks = match args.compare {
        Compare::Tls => [
            Arc::new(start_stack(None, false, args.clients, scratch.path()).await?),
            Arc::new(start_stack(Some(&ca), false, args.clients, scratch.path()).await?),
        ],
        Compare::RedisCluster => [
            Arc::new(start_stack(None, false, args.clients, scratch.path()).await?),
            Arc::new(start_stack(None, true, args.clients, scratch.path()).await?),
        ],
    };
    let [base, variant] = args.compare.labels();
    for stack in &stacks {
        wrk.run(
            stack.redirect.listen_addr(),
            "/",
            Some(&stack.script),
            args.connections,
            Duration::from_secs(1),
        )?;
    }
    println!(
        "{variant} against {base}: {} s per run, {} rounds, {} create clients, {} wrk connections, {} cores; both stacks on this machine",
        args.seconds,
        args.rounds,
        args.clients,
        args.connections,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let duration = Duration::from_secs(args.seconds);
    let mut totals = Totals::default();
    for round in 0..args.rounds {
        // Alternate which stack goes first, so drift over the run evens out.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for index in order {
            let sample = creates(&stacks[index], args.clients, duration).await?;
            totals.creates[index].append_run(sample);
        }
        for index in order {
            let before = redis_lookups(&stacks[index]).await?;
            let run = wrk.run(
                stacks[index].redirect.listen_addr(),
                "/",
                Some(&stacks[index].script),
                args.connections,
                wrk.duration,
            )?;
            let lookups = redis_lookups(&stacks[index]).await? - before;
            let total = &mut totals.redirects[index];
            total.0 += run.requests_per_second / args.rounds as f64;
            total.1 = total.1.max(run.p50_ms);
            total.2 = total.2.max(run.p99_ms);
            total.3 += run.non_3xx;
            totals.lookups_per_request[index] += lookups
                / (run.requests_per_second * wrk.duration.as_secs_f64())
                / args.rounds as f64;
        }
    }

    println!();
    println!(
        "| workload | {base} /s | {variant} /s | {variant} ÷ {base} | p50 ms {base} / {variant} | p99 ms {base} / {variant} |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let [mut plain, mut tls] = totals.creates;
    anyhow::ensure!(
        plain.errors == 0 && tls.errors == 0,
        "failed creates: {} {base}, {} {variant}",
        plain.errors,
        tls.errors
    );
    println!(
        "| CreateLink, {} clients | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
        args.clients,
        plain.rate(),
        tls.rate(),
        tls.rate() / plain.rate(),
        plain.percentile_ms(0.50),
        tls.percentile_ms(0.50),
        plain.percentile_ms(0.99),
        tls.percentile_ms(0.99),
    );
    let [plain, tls] = totals.redirects;
    anyhow::ensure!(
        plain.3 == 0 && tls.3 == 0,
        "redirects that were not 3xx: {} {base}, {} {variant}",
        plain.3,
        tls.3
    );
    println!(
        "| redirect via Redis (L1 off), {} connections | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
        args.connections,
        plain.0,
        tls.0,
        tls.0 / plain.0,
        plain.1,
        tls.1,
        plain.2,
        tls.2,
    );
    println!();
    println!(
        "Redis lookups per redirect: {:.2} {base}, {:.2} {variant} (1.00: every request went to Redis).",
        totals.lookups_per_request[0], totals.lookups_per_request[1]
    );
    Ok(())
}
