//! Benchmark: idalloc leases/s and p50/p99 latency at 1, 16 and 64 concurrent
//! clients, against the raw lease statement sent straight to the same Postgres
//! in the same run (the reference). Runs are interleaved (reference, service,
//! reference, …) because this class of machine drifts over minutes.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-idalloc`

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{Sample, collect, timed_loop};
use tinyurl_harness::Stack;
use tinyurl_harness::services::idalloc_client;
use tinyurl_proto::v1::LeaseRangeRequest;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(
    name = "bench-idalloc",
    about = "idalloc lease throughput and latency against raw Postgres"
)]
struct Args {
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Interleaved rounds per concurrency level.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    concurrency: Vec<usize>,
    /// IDs per lease.
    #[arg(long, default_value_t = 1000)]
    count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The lease statement sent directly to Postgres.
    RawSql,
    /// `LeaseRange` over gRPC without a request id.
    Grpc,
    /// `LeaseRange` over gRPC with a request id, as writers call it.
    GrpcIdempotent,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::RawSql => "raw SQL (reference)",
            Self::Grpc => "idalloc gRPC",
            Self::GrpcIdempotent => "idalloc gRPC + request_id",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let max_concurrency = args
        .concurrency
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .to_string();
    let stack = Stack::builder()
        .replicas(0)
        .without_redis()
        .idalloc_env(&[
            ("TINYURL_DB_POOL_SIZE", &max_concurrency),
            ("RUST_LOG", "warn"),
        ])
        .start()
        .await?;
    let (database, idalloc) = (&stack.database, &stack.idallocs[0]);
    let endpoint = idalloc.endpoint();

    let mut pg_config: tokio_postgres::Config = database.primary_url.parse()?;
    pg_config.application_name("bench-reference");
    let run_seconds = Duration::from_secs(args.seconds);

    println!(
        "idalloc benchmark: {} s per run, {} interleaved rounds, {} IDs per lease, {} cores",
        args.seconds,
        args.rounds,
        args.count,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!();
    println!("| clients | variant | leases/s | p50 ms | p99 ms | ratio to raw SQL |");
    println!("|---:|---|---:|---:|---:|---:|");

    for &concurrency in &args.concurrency {
        let mut totals: Vec<(Variant, Sample)> = Vec::new();
        for _ in 0..args.rounds {
            for variant in [
                Variant::RawSql,
                Variant::Grpc,
                Variant::RawSql,
                Variant::GrpcIdempotent,
            ] {
                let sample = match variant {
                    Variant::RawSql => {
                        run_raw(&pg_config, concurrency, args.count, run_seconds).await?
                    }
                    Variant::Grpc | Variant::GrpcIdempotent => {
                        run_grpc(
                            &endpoint,
                            concurrency,
                            args.count,
                            run_seconds,
                            variant == Variant::GrpcIdempotent,
                        )
                        .await?
                    }
                };
                match totals.iter_mut().find(|(existing, _)| *existing == variant) {
                    Some((_, total)) => total.append_run(sample),
                    None => totals.push((variant, sample)),
                }
            }
        }
        let reference_rate = totals
            .iter()
            .find(|(variant, _)| *variant == Variant::RawSql)
            .map_or(f64::NAN, |(_, sample)| sample.rate());
        for (variant, mut sample) in totals {
            anyhow::ensure!(
                sample.errors == 0,
                "{} had {} errors",
                variant.name(),
                sample.errors
            );
            println!(
                "| {concurrency} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
                variant.name(),
                sample.rate(),
                sample.percentile_ms(0.50),
                sample.percentile_ms(0.99),
                sample.rate() / reference_rate
            );
        }
    }
    Ok(())
}

async fn run_raw(
    config: &tokio_postgres::Config,
    concurrency: usize,
    count: u64,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let count = i64::try_from(count)?;
    let mut tasks = Vec::new();
    let start_line = Arc::new(tokio::sync::Barrier::new(concurrency));
    for _ in 0..concurrency {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let start_line = Arc::clone(&start_line);
        tasks.push(tokio::spawn(async move {
            let statement = client.prepare(tinyurl_idalloc::store::LEASE_SQL).await?;
            start_line.wait().await;
            let no_request_id: Option<&str> = None;
            let (client, statement) = (&client, &statement);
            let sample = timed_loop(duration, |_| async move {
                client
                    .query_one(statement, &[&"bench-raw", &count, &no_request_id])
                    .await
                    .ok()
                    .map(|_| 1)
            })
            .await;
            anyhow::Ok(sample)
        }));
    }
    collect(tasks).await
}

async fn run_grpc(
    endpoint: &str,
    concurrency: usize,
    count: u64,
    duration: Duration,
    with_request_id: bool,
) -> anyhow::Result<Sample> {
    // A few HTTP/2 connections, as a handful of writer replicas would hold.
    let channels: Vec<Channel> = {
        let mut channels = Vec::new();
        for _ in 0..concurrency.clamp(1, 4) {
            channels.push(Channel::from_shared(endpoint.to_owned())?.connect().await?);
        }
        channels
    };
    let start_line = Arc::new(tokio::sync::Barrier::new(concurrency));
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = idalloc_client(channels[worker % channels.len()].clone())?;
        let start_line = Arc::clone(&start_line);
        tasks.push(tokio::spawn(async move {
            start_line.wait().await;
            let run = Instant::now();
            let sample = timed_loop(duration, |sequence| {
                let mut client = client.clone();
                let request_id = if with_request_id {
                    format!("bench-{worker}-{sequence}-{}", run.elapsed().as_nanos())
                } else {
                    String::new()
                };
                async move {
                    let request = LeaseRangeRequest {
                        namespace: "bench-grpc".to_owned(),
                        count,
                        request_id,
                    };
                    client.lease_range(request).await.ok().map(|_| 1)
                }
            })
            .await;
            anyhow::Ok(sample)
        }));
    }
    collect(tasks).await
}
