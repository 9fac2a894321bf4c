//! Benchmark: writer creates/s and p50/p99 at 1, 16 and 64 concurrent clients,
//! for `CreateLink`, the REST API's `POST /api/v1/links` (HTTP/1.1 keep-alive,
//! one connection per client) and `BatchCreateLinks` of 100, against `pgbench`
//! running a raw single-row INSERT (and a raw 100-row multi-VALUES INSERT)
//! into the same table on the same Postgres, interleaved in the same run.
//!
//! The writer runs as in production: its own process, leased ID ranges from an
//! idalloc process, and write-through to Redis.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-writer`

mod common;
mod creates;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::Sample;
use creates::{run_rest, run_writer};
use tinyurl_harness::Stack;

#[derive(Parser)]
#[command(
    name = "bench-writer",
    about = "writer create throughput against raw pgbench INSERTs"
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
    /// Which cases to run: `single` (CreateLink and its reference), `batch`
    /// (BatchCreateLinks and its reference), `webhook` (CreateLink by keys
    /// with a webhook endpoint that answers at once, one that answers after
    /// 2 s and one nothing listens on, against CreateLink by one without).
    #[arg(long, value_delimiter = ',', default_values = ["single", "batch"])]
    cases: Vec<Case>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Case {
    Single,
    Batch,
    Webhook,
}

const BATCH: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    PgbenchSingle,
    CreateLink,
    RestCreate,
    PgbenchBatch,
    BatchCreateLinks,
    /// CreateLink by a key without webhooks, then by keys whose endpoint
    /// answers at once, answers after 2 s, or is dead (every delivery
    /// refused and retried meanwhile).
    CreateNoWebhook,
    CreateLiveWebhook,
    CreateSlowWebhook,
    CreateDeadWebhook,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::PgbenchSingle => "pgbench 1-row INSERT (reference)",
            Self::CreateLink => "writer CreateLink",
            Self::RestCreate => "writer REST POST /api/v1/links",
            Self::PgbenchBatch => "pgbench 100-row INSERT (reference)",
            Self::BatchCreateLinks => "writer BatchCreateLinks ×100",
            Self::CreateNoWebhook => "writer CreateLink, no webhook (reference)",
            Self::CreateLiveWebhook => "writer CreateLink, a webhook endpoint answering",
            Self::CreateSlowWebhook => "writer CreateLink, a webhook endpoint taking 2 s",
            Self::CreateDeadWebhook => "writer CreateLink, a dead webhook endpoint",
        }
    }

    fn case(self) -> Case {
        match self {
            Self::PgbenchSingle | Self::CreateLink | Self::RestCreate => Case::Single,
            Self::PgbenchBatch | Self::BatchCreateLinks => Case::Batch,
            Self::CreateNoWebhook
            | Self::CreateLiveWebhook
            | Self::CreateSlowWebhook
            | Self::CreateDeadWebhook => Case::Webhook,
        }
    }

    fn reference(self) -> Self {
        match self {
            Self::PgbenchSingle | Self::CreateLink | Self::RestCreate => Self::PgbenchSingle,
            Self::PgbenchBatch | Self::BatchCreateLinks => Self::PgbenchBatch,
            Self::CreateNoWebhook
            | Self::CreateLiveWebhook
            | Self::CreateSlowWebhook
            | Self::CreateDeadWebhook => Self::CreateNoWebhook,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stack = Stack::builder()
        .replicas(0)
        .idalloc_env(&[("RUST_LOG", "warn")])
        .start()
        .await?;
    let (cluster, database, setup) = (&stack.cluster, &stack.database, &stack.setup);
    let pool_size = args
        .concurrency
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .to_string();
    let (writer, rest) = setup
        .start_with_rest(&[
            ("RUST_LOG", "warn"),
            ("TINYURL_DB_POOL_SIZE", &pool_size),
            // The dead endpoint is on loopback.
            ("TINYURL_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ])
        .await?;
    let key = Arc::new(setup.create_api_key("bench")?);
    // Keys whose every link change is a message to an endpoint: one that
    // answers at once, one that takes 2 s, and one nothing listens on (each
    // delivery refused, logged and retried).
    let live = Arc::new(setup.create_api_key("bench-webhook-live")?);
    let slow = Arc::new(setup.create_api_key("bench-webhook-slow")?);
    let dead = Arc::new(setup.create_api_key("bench-webhook-dead")?);
    if args.cases.contains(&Case::Webhook) {
        let dead_port = tinyurl_harness::process::free_port()?;
        let endpoints = [
            (
                &live,
                format!("http://{}/live", endpoint(Duration::ZERO).await?),
            ),
            (
                &slow,
                format!("http://{}/slow", endpoint(Duration::from_secs(2)).await?),
            ),
            (&dead, format!("http://127.0.0.1:{dead_port}/dead")),
        ];
        let channel = tonic::transport::Channel::from_shared(writer.endpoint())?
            .connect()
            .await?;
        for (hooked, url) in endpoints {
            let mut request = tonic::Request::new(tinyurl_proto::v1::CreateWebhookRequest {
                url,
                events: Vec::new(),
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {hooked}").parse()?);
            tinyurl_proto::v1::links_client::LinksClient::new(channel.clone())
                .create_webhook(request)
                .await?;
        }
    }
    let scripts = tempdir()?;
    let single_script = scripts.join("single.sql");
    let batch_script = scripts.join("batch.sql");
    std::fs::write(&single_script, pgbench_script(1))?;
    std::fs::write(&batch_script, pgbench_script(BATCH))?;
    let pgbench = pgbench_binary()?;

    println!(
        "writer benchmark: {} s per run, {} interleaved rounds, {} cores; writer with Redis write-through",
        args.seconds,
        args.rounds,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!();
    println!("| clients | variant | rows/s | p50 ms | p99 ms | ratio to reference |");
    println!("|---:|---|---:|---:|---:|---:|");
    let duration = Duration::from_secs(args.seconds);
    for &concurrency in &args.concurrency {
        let mut totals: Vec<(Variant, Sample)> = Vec::new();
        for _ in 0..args.rounds {
            let variants = [
                Variant::PgbenchSingle,
                Variant::CreateLink,
                Variant::RestCreate,
                Variant::PgbenchBatch,
                Variant::BatchCreateLinks,
                Variant::CreateNoWebhook,
                Variant::CreateLiveWebhook,
                Variant::CreateSlowWebhook,
                Variant::CreateDeadWebhook,
            ];
            for variant in variants
                .into_iter()
                .filter(|variant| args.cases.contains(&variant.case()))
            {
                let sample = match variant {
                    Variant::PgbenchSingle => run_pgbench(
                        &pgbench,
                        &single_script,
                        cluster.primary.port(),
                        &database.name,
                        concurrency,
                        args.seconds,
                        1,
                    )?,
                    Variant::PgbenchBatch => run_pgbench(
                        &pgbench,
                        &batch_script,
                        cluster.primary.port(),
                        &database.name,
                        concurrency,
                        args.seconds,
                        BATCH,
                    )?,
                    Variant::CreateLink => {
                        run_writer(&writer.endpoint(), &key, concurrency, duration, 1).await?
                    }
                    Variant::RestCreate => run_rest(rest, &key, concurrency, duration).await?,
                    Variant::BatchCreateLinks => {
                        run_writer(&writer.endpoint(), &key, concurrency, duration, BATCH).await?
                    }
                    Variant::CreateNoWebhook => {
                        run_writer(&writer.endpoint(), &key, concurrency, duration, 1).await?
                    }
                    Variant::CreateLiveWebhook => {
                        run_writer(&writer.endpoint(), &live, concurrency, duration, 1).await?
                    }
                    Variant::CreateSlowWebhook => {
                        run_writer(&writer.endpoint(), &slow, concurrency, duration, 1).await?
                    }
                    Variant::CreateDeadWebhook => {
                        run_writer(&writer.endpoint(), &dead, concurrency, duration, 1).await?
                    }
                };
                match totals.iter_mut().find(|(existing, _)| *existing == variant) {
                    Some((_, total)) => total.append_run(sample),
                    None => totals.push((variant, sample)),
                }
            }
        }
        let rates: Vec<(Variant, f64)> = totals
            .iter()
            .map(|(variant, sample)| (*variant, sample.rate()))
            .collect();
        for (variant, mut sample) in totals.clone() {
            anyhow::ensure!(
                sample.errors == 0,
                "{} had {} errors",
                variant.name(),
                sample.errors
            );
            let reference = rates
                .iter()
                .find(|(candidate, _)| *candidate == variant.reference())
                .map_or(f64::NAN, |(_, rate)| *rate);
            println!(
                "| {concurrency} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
                variant.name(),
                sample.rate(),
                sample.percentile_ms(0.50),
                sample.percentile_ms(0.99),
                sample.rate() / reference
            );
        }
    }
    drop(writer);
    let _ = std::fs::remove_dir_all(&scripts);
    Ok(())
}

/// A webhook endpoint on loopback answering every request 204 after
/// `delay`; its address.
async fn endpoint(delay: Duration) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| async move {
                    tokio::time::sleep(delay).await;
                    let mut response = hyper::Response::new(String::new());
                    *response.status_mut() = hyper::StatusCode::NO_CONTENT;
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// A pgbench script inserting `rows` rows with random unique-enough codes
/// into the same table, owned by the benchmark's API key (id 1).
fn pgbench_script(rows: usize) -> String {
    let mut script = String::from(
        "\\set n random(1, 1000000000000000)\nINSERT INTO links (code, owner_key_id, target_url, redirect_status) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            script.push_str(", ");
        }
        let _ = write!(
            script,
            "('pgb' || :client_id || '-' || (CAST(:n AS bigint) + {row}), 1, 'https://example.com/pgbench', 302)"
        );
    }
    script.push_str(";\n");
    script
}

fn pgbench_binary() -> anyhow::Result<std::path::PathBuf> {
    tinyurl_harness::process::find_binary(
        "pgbench",
        &[std::path::PathBuf::from("/usr/lib/postgresql/15/bin")],
        "postgresql-client",
    )
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("tinyurl-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs pgbench and reads rows/s and latency from its per-transaction log.
fn run_pgbench(
    pgbench: &std::path::Path,
    script: &std::path::Path,
    port: u16,
    database: &str,
    clients: usize,
    seconds: u64,
    rows_per_transaction: usize,
) -> anyhow::Result<Sample> {
    let log_dir = tempdir()?.join(format!("log-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&log_dir)?;
    let started = Instant::now();
    let output = std::process::Command::new(pgbench)
        .current_dir(&log_dir)
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-n",
            "-M",
            "prepared",
            "-l",
        ])
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg(clients.to_string())
        .arg("-j")
        .arg(clients.min(2).to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-f")
        .arg(script)
        .arg(database)
        .output()?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut sample = Sample {
        elapsed: Duration::from_secs(seconds).min(elapsed),
        ..Sample::default()
    };
    for entry in std::fs::read_dir(&log_dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines() {
            // client_id transaction_no time script_no time_epoch time_us
            let latency: Option<u32> = line
                .split_whitespace()
                .nth(2)
                .and_then(|field| field.parse().ok());
            if let Some(latency) = latency {
                sample.operations += rows_per_transaction as u64;
                sample.latencies_micros.push(latency);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(sample)
}
