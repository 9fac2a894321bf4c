//! `bench-redirect`: the redirect service against nginx `return 301`, in the
//! same run on the same machine, with wrk at fixed connections and duration.
//!
//! Variants: (a) a hot code served from L1, clicks counted for analytics;
//! (o) the same with analytics off; (h) and (f) the L1 and Redis paths'
//! floors (hyper answering from a map, or after one Redis GET: `floor.rs`);
//! (b) L1 off, every request a Redis GET;
//! (c) Zipf(s = 1.0) over `--links` links with L1 sized to 1% of them, with
//! the writer's analytics consumer folding every click (its stream lag and
//! fold rate are reported); (u) `tinyurl up`, the embedded system, serving a
//! hot code from L1; (r) an L1 hit of a link with three redirect rules and
//! UTM fields, every rule checked and none met (the link's cost beside a
//! plain one's); (v) an L1 hit of a link with a visit cap (one Redis script
//! per visit). Every request carries a browser's User-Agent and a
//! Referer, as real clicks do.
//! Every variant run is bracketed by nginx runs of the same workload shape
//! (the same wrk script), and its ratio is taken against the mean of the two,
//! because this machine drifts by tens of percent over minutes.

mod floor;
mod nginx;
mod workload;
mod wrk;

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use nginx::Nginx;
use tinyurl_harness::ServiceProcess;
use tinyurl_harness::embedded::Embedded;
use tinyurl_harness::process::{ScratchDir, cpu_seconds_tree, find_binary};
use tinyurl_harness::services::{http_request, metric};
use tinyurl_harness::system::System;
use tinyurl_proto::v1::{BatchCreateLinksRequest, CreateLinkRequest, batch_create_links_result};
use workload::{CLICK_HEADERS, l1_counts, zipf_lua};
use wrk::Wrk;

#[derive(Parser)]
#[command(
    name = "bench-redirect",
    about = "redirect vs nginx `return 301`, interleaved"
)]
struct Args {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Interleaved rounds per connection count.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// wrk connection counts.
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    connections: Vec<usize>,
    /// wrk threads (default: half the CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// nginx worker processes and redirect worker threads, the same for both
    /// (default: half the CPUs, the other half being wrk's, as if client and
    /// server were separate hosts). The embedded variant keeps its own.
    #[arg(long)]
    server_threads: Option<usize>,
    /// Variants to run: a (L1 hit), o (L1 hit, analytics off), b (L1 off),
    /// q (L1 off, analytics off), f (the Redis path's floor), h (the L1
    /// path's floor), c (Zipf),
    /// u (`tinyurl up`), r (L1 hit of a link with rules), v (L1 hit of a
    /// capped link).
    #[arg(long, value_delimiter = ',', default_value = "a,o,h,b,q,f,c,u,r,v")]
    variants: Vec<char>,
    /// Links created for the Zipf workload.
    #[arg(long, default_value_t = 1_000_000)]
    links: usize,
    /// Serve the Redis path's floor (see `floor.rs`) on this address
    /// instead of benchmarking: variants (f) and (h) run this binary so.
    #[arg(long, hide = true, requires = "floor_redis")]
    serve_floor: Option<SocketAddr>,
    #[arg(long, hide = true)]
    floor_redis: Option<String>,
    /// The floor keeps what it looked up (the L1 path's floor).
    #[arg(long, hide = true)]
    floor_memory: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    L1,
    L1NoAnalytics,
    Redis,
    RedisNoAnalytics,
    Floor,
    L1Floor,
    Zipf,
    Embedded,
    Rules,
    Capped,
}

impl Variant {
    /// The letter `--variants` selects it by.
    fn letter(self) -> char {
        match self {
            Self::L1 => 'a',
            Self::L1NoAnalytics => 'o',
            Self::Redis => 'b',
            Self::RedisNoAnalytics => 'q',
            Self::Floor => 'f',
            Self::L1Floor => 'h',
            Self::Zipf => 'c',
            Self::Embedded => 'u',
            Self::Rules => 'r',
            Self::Capped => 'v',
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::L1 => "(a) L1 hit",
            Self::L1NoAnalytics => "(o) L1 hit, analytics off",
            Self::Redis => "(b) L1 off, Redis GET",
            Self::RedisNoAnalytics => "(q) L1 off, Redis GET, analytics off",
            Self::Floor => "(f) floor: hyper + one fred GET",
            Self::L1Floor => "(h) L1 floor: hyper + a per-thread map",
            Self::Zipf => "(c) Zipf 1M, L1 1%",
            Self::Embedded => "(u) tinyurl up, L1 hit",
            Self::Rules => "(r) L1 hit, 3 rules + UTM",
            Self::Capped => "(v) L1 hit, visit cap",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let (Some(addr), Some(redis)) = (args.serve_floor, &args.floor_redis) {
        let threads = args.server_threads.unwrap_or(1);
        return floor::serve(addr, redis, threads, args.floor_memory);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(benchmark(args))
}

async fn benchmark(args: Args) -> anyhow::Result<()> {
    let nginx_binary = find_binary("nginx", &[PathBuf::from("/usr/sbin")], "nginx-light")?;
    let wrk_binary = find_binary("wrk", &[PathBuf::from("/usr/bin")], "wrk")?;
    let half = (std::thread::available_parallelism().map_or(2, usize::from) / 2).max(1);
    let threads = args.threads.unwrap_or(half);
    let server_threads = args.server_threads.unwrap_or(half);
    let scratch = ScratchDir::new("bench-redirect", None)?;

    let split_variants = args
        .variants
        .iter()
        .any(|letter| "aohbqfcrv".contains(*letter));
    let split = if split_variants {
        Some(SplitSystem::start(&args, server_threads, scratch.path()).await?)
    } else {
        None
    };
    let embedded = if args.variants.contains(&'u') {
        Some(EmbeddedSystem::start(scratch.path()).await?)
    } else {
        None
    };

    let nginx = Nginx::start(&nginx_binary, scratch.path(), server_threads)?;
    let wrk = Wrk {
        binary: wrk_binary,
        threads,
        duration: Duration::from_secs(args.seconds),
        headers: CLICK_HEADERS.to_vec(),
    };
    wrk.run(nginx.addr, "/warm", None, 64, Duration::from_secs(2))?;

    let mut table = String::new();
    writeln!(
        table,
        "| conns | variant | req/s | p50 / p99 / p99.9 ms | nginx req/s | nginx p50 / p99 / p99.9 ms | ratio | p99 ÷ nginx p99 | server CPU µs/req (nginx) | per-core ratio | notes |"
    )?;
    writeln!(table, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for &connections in &args.connections {
        for variant in [
            Variant::L1,
            Variant::L1NoAnalytics,
            Variant::L1Floor,
            Variant::Redis,
            Variant::RedisNoAnalytics,
            Variant::Floor,
            Variant::Zipf,
            Variant::Embedded,
            Variant::Rules,
            Variant::Capped,
        ] {
            if !args.variants.contains(&variant.letter()) {
                continue;
            }
            let (target, script, path, admin, server) = match (variant, &split, &embedded) {
                (Variant::L1, Some(split), _) => (
                    split.l1.listen_addr(),
                    None,
                    split.hot_path(),
                    split.l1.admin_addr(),
                    split.l1.pid(),
                ),
                (Variant::L1NoAnalytics, Some(split), _) => (
                    split.quiet.listen_addr(),
                    None,
                    split.hot_path(),
                    split.quiet.admin_addr(),
                    split.quiet.pid(),
                ),
                (Variant::Redis, Some(split), _) => (
                    split.redis.listen_addr(),
                    None,
                    split.hot_path(),
                    split.redis.admin_addr(),
                    split.redis.pid(),
                ),
                (Variant::RedisNoAnalytics, Some(split), _) => (
                    split.redis_quiet.listen_addr(),
                    None,
                    split.hot_path(),
                    split.redis_quiet.admin_addr(),
                    split.redis_quiet.pid(),
                ),
                // The floor has no admin listener: its L1 counts are not read.
                (Variant::Floor, Some(split), _) => (
                    split.floor.addr,
                    None,
                    split.hot_path(),
                    split.redis.admin_addr(),
                    Some(split.floor.child.id()),
                ),
                (Variant::L1Floor, Some(split), _) => (
                    split.l1_floor.addr,
                    None,
                    split.hot_path(),
                    split.l1.admin_addr(),
                    Some(split.l1_floor.child.id()),
                ),
                (Variant::Zipf, Some(split), _) => (
                    split.zipf.listen_addr(),
                    Some(split.zipf_script.as_path()),
                    split.hot_path(),
                    split.zipf.admin_addr(),
                    split.zipf.pid(),
                ),
                (Variant::Rules, Some(split), _) => (
                    split.l1.listen_addr(),
                    None,
                    format!("/{}", split.ruled),
                    split.l1.admin_addr(),
                    split.l1.pid(),
                ),
                (Variant::Capped, Some(split), _) => (
                    split.l1.listen_addr(),
                    None,
                    format!("/{}", split.capped),
                    split.l1.admin_addr(),
                    split.l1.pid(),
                ),
                (Variant::Embedded, _, Some(embedded)) => (
                    embedded.system.http,
                    None,
                    embedded.hot_path.clone(),
                    embedded.admin,
                    embedded.system.pid(),
                ),
                _ => bail!("variant {} has no system", variant.letter()),
            };
            if variant == Variant::Zipf {
                // Fill L1 right before it is measured: entries filled before
                // the other variants ran would reach their L1 TTL during the
                // measurement and all miss once.
                wrk.run(
                    target,
                    &path,
                    script,
                    connections,
                    Duration::from_secs(args.seconds.clamp(5, 10)),
                )?;
            }
            let mut runs = Vec::new();
            let mut references = Vec::new();
            let hits_before = l1_counts(admin).await?;
            // During the Zipf runs the writer folds every click: sample its
            // consumer's lag meanwhile.
            let consumer = match (&split, variant) {
                (Some(split), Variant::Zipf) => {
                    Some(ConsumerWatch::start(split.writer_admin).await?)
                }
                _ => None,
            };
            let nginx_pid = Some(nginx.child.id());
            let run = |addr, pid| CpuRun::measure(&wrk, pid, addr, &path, script, connections);
            references.push(run(nginx.addr, nginx_pid)?);
            for _ in 0..args.rounds {
                runs.push(run(target, server)?);
                references.push(run(nginx.addr, nginx_pid)?);
            }
            let cpu = CpuRun::micros_per_request(&runs);
            let nginx_cpu = CpuRun::micros_per_request(&references);
            let (runs, references): (Vec<_>, Vec<_>) = (
                runs.into_iter().map(|run| run.run).collect(),
                references.into_iter().map(|run| run.run).collect(),
            );
            let hits_after = l1_counts(admin).await?;
            let variant_rate = mean(runs.iter().map(|run| run.requests_per_second));
            let nginx_rate = mean(references.iter().map(|run| run.requests_per_second));
            let p50 = mean(runs.iter().map(|run| run.p50_ms));
            let p99 = mean(runs.iter().map(|run| run.p99_ms));
            let nginx_p50 = mean(references.iter().map(|run| run.p50_ms));
            let nginx_p99 = mean(references.iter().map(|run| run.p99_ms));
            let p999 = mean(runs.iter().map(|run| run.p999_ms));
            let nginx_p999 = mean(references.iter().map(|run| run.p999_ms));
            let errors: u64 = runs.iter().map(|run| run.non_3xx).sum();
            let mut notes = String::new();
            if matches!(variant, Variant::Zipf | Variant::Embedded) {
                let hits = hits_after.0 - hits_before.0;
                let misses = hits_after.1 - hits_before.1;
                write!(
                    notes,
                    "L1 hit ratio {:.1}%",
                    100.0 * hits / (hits + misses).max(1.0)
                )?;
            }
            if let Some(consumer) = consumer {
                let (folded, elapsed, lag_entries, lag_seconds) = consumer.finish().await?;
                write!(
                    notes,
                    "; {folded:.0} clicks folded in the {elapsed:.0} s window, stream lag at most {lag_entries:.0} entries / {lag_seconds:.1} s"
                )?;
            }
            if errors > 0 {
                write!(notes, " {errors} non-3xx answers")?;
            }
            let (cpu_column, per_core) = match (cpu, nginx_cpu) {
                (Some(cpu), Some(nginx_cpu)) => (
                    format!("{cpu:.2} ({nginx_cpu:.2})"),
                    format!("{:.2}×", nginx_cpu / cpu),
                ),
                _ => ("—".to_owned(), "—".to_owned()),
            };
            let row = format!(
                "| {connections} | {} | {variant_rate:.0} | {p50:.2} / {p99:.2} / {p999:.2} | {nginx_rate:.0} | {nginx_p50:.2} / {nginx_p99:.2} / {nginx_p999:.2} | {:.2}× | {:.2}× | {cpu_column} | {per_core} | {notes} |",
                variant.label(),
                variant_rate / nginx_rate,
                p99 / nginx_p99.max(f64::MIN_POSITIVE),
            );
            eprintln!("{row}");
            writeln!(table, "{row}")?;
        }
    }
    println!("\n{table}");
    println!(
        "wrk -t{threads}; nginx and each redirect process {server_threads} worker(s); {} s per run, {} rounds; every server and wrk share this machine's {} CPUs.",
        args.seconds,
        args.rounds,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    drop(nginx);
    Ok(())
}

/// A wrk run with the CPU its server used meanwhile.
struct CpuRun {
    run: wrk::WrkRun,
    /// CPU seconds of the server's process and its children during the
    /// run; `None` when its process is not known.
    cpu_seconds: Option<f64>,
}

impl CpuRun {
    fn measure(
        wrk: &Wrk,
        server: Option<u32>,
        addr: SocketAddr,
        path: &str,
        script: Option<&Path>,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let before = server.map(cpu_seconds_tree);
        let run = wrk.run(addr, path, script, connections, wrk.duration)?;
        let cpu_seconds = server
            .map(cpu_seconds_tree)
            .zip(before)
            .map(|(after, before)| after - before);
        Ok(Self { run, cpu_seconds })
    }

    /// The server's CPU per request over `runs`, in microseconds: unlike
    /// throughput on a machine the load generator shares, it does not move
    /// with how the scheduler places wrk and the server, so it compares two
    /// servers' own cost more steadily.
    fn micros_per_request(runs: &[Self]) -> Option<f64> {
        let mut cpu = 0.0;
        let mut requests = 0;
        for run in runs {
            cpu += run.cpu_seconds?;
            requests += run.run.requests;
        }
        (requests > 0).then(|| cpu * 1e6 / requests as f64)
    }
}

/// The split system with its three redirect processes and the Zipf script.
struct SplitSystem {
    _system: System,
    writer_admin: SocketAddr,
    hot: String,
    /// A link with three rules that the benchmark's requests never meet.
    ruled: String,
    /// A link with a visit cap no run reaches.
    capped: String,
    l1: ServiceProcess,
    quiet: ServiceProcess,
    redis: ServiceProcess,
    redis_quiet: ServiceProcess,
    floor: Floor,
    l1_floor: Floor,
    zipf: ServiceProcess,
    zipf_script: PathBuf,
}

impl SplitSystem {
    async fn start(args: &Args, server_threads: usize, scratch: &Path) -> anyhow::Result<Self> {
        eprintln!("starting postgres (primary + replica), redis, idalloc, writer …");
        let system = System::start(&[]).await?;
        eprintln!("creating {} links …", args.links);
        let codes = seed(&system, args.links).await?;
        let hot = codes.first().context("no links")?.clone();
        let ruled = ruled_link(&system).await?;
        let capped = system
            .links()?
            .create_link(system.authed(CreateLinkRequest {
                target_url: "https://example.com/capped".to_owned(),
                max_visits: Some(1_000_000_000),
                ..CreateLinkRequest::default()
            }))
            .await?
            .into_inner()
            .code;
        let zipf_l1 = (args.links / 100).max(1).to_string();
        let threads = server_threads.to_string();
        let env = |extra: &[(&'static str, &'static str)]| {
            let mut env = vec![("RUST_LOG", "warn"), ("TINYURL_WORKER_THREADS", &threads)];
            env.extend_from_slice(extra);
            env
        };
        let l1 = system.start_redirect(&env(&[])).await?;
        let quiet = system
            .start_redirect(&env(&[("TINYURL_CLICKS_ENABLED", "false")]))
            .await?;
        let redis = system
            .start_redirect(&env(&[("TINYURL_L1_CAPACITY", "0")]))
            .await?;
        let redis_quiet = system
            .start_redirect(&env(&[
                ("TINYURL_L1_CAPACITY", "0"),
                ("TINYURL_CLICKS_ENABLED", "false"),
            ]))
            .await?;
        let floor = Floor::start(&system.redis.url(), server_threads, false)?;
        let l1_floor = Floor::start(&system.redis.url(), server_threads, true)?;
        let mut zipf_env = env(&[]);
        zipf_env.push(("TINYURL_L1_CAPACITY", &zipf_l1));
        let zipf = system.start_redirect(&zipf_env).await?;
        let codes_file = scratch.join("codes.txt");
        fs::write(&codes_file, codes.join("\n") + "\n")?;
        let zipf_script = scratch.join("zipf.lua");
        fs::write(&zipf_script, zipf_lua(&codes_file))?;
        // Warm: the hot code into L1, and each server's connections up.
        for addr in [
            l1.listen_addr(),
            quiet.listen_addr(),
            redis.listen_addr(),
            redis_quiet.listen_addr(),
            floor.addr,
            l1_floor.addr,
        ] {
            let status = http_request(addr, "GET", &format!("/{hot}")).await?.status;
            anyhow::ensure!(status == 302, "warm-up answered {status}");
        }
        let status = http_request(l1.listen_addr(), "GET", &format!("/{ruled}"))
            .await?
            .status;
        anyhow::ensure!(status == 302, "warm-up of the ruled link answered {status}");
        let status = http_request(l1.listen_addr(), "GET", &format!("/{capped}"))
            .await?
            .status;
        // No User-Agent: a tool, answered 410 without using a visit; the
        // entry is in L1 all the same.
        anyhow::ensure!(
            status == 410,
            "warm-up of the capped link answered {status}"
        );
        Ok(Self {
            writer_admin: system.writer.admin_addr(),
            _system: system,
            hot,
            ruled,
            capped,
            l1,
            quiet,
            redis,
            redis_quiet,
            floor,
            l1_floor,
            zipf,
            zipf_script,
        })
    }

    fn hot_path(&self) -> String {
        format!("/{}", self.hot)
    }
}

/// A link with UTM fields and three rules (iOS, Android, Germany) that a
/// desktop browser from loopback meets none of: every rule is checked.
async fn ruled_link(system: &System) -> anyhow::Result<String> {
    use tinyurl_proto::v1::{RedirectRule, Utm};
    let rule = |devices: &[&str], countries: &[&str], target: &str| RedirectRule {
        devices: devices.iter().map(|device| (*device).to_owned()).collect(),
        countries: countries
            .iter()
            .map(|country| (*country).to_owned())
            .collect(),
        languages: Vec::new(),
        target_url: target.to_owned(),
    };
    let link = system
        .links()?
        .create_link(system.authed(CreateLinkRequest {
            target_url: "https://example.com/ruled".to_owned(),
            utm: Some(Utm {
                source: "bench".to_owned(),
                campaign: "rules".to_owned(),
                ..Utm::default()
            }),
            rules: vec![
                rule(&["ios"], &[], "https://example.com/ios"),
                rule(&["android"], &[], "https://example.com/android"),
                rule(&[], &["DE"], "https://example.com/de"),
            ],
            ..CreateLinkRequest::default()
        }))
        .await?
        .into_inner();
    Ok(link.code)
}

/// This binary serving the Redis or the L1 path's floor ([`floor`]).
struct Floor {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Floor {
    fn start(redis_url: &str, threads: usize, memory: bool) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], tinyurl_harness::free_port()?));
        let mut command = std::process::Command::new(std::env::current_exe()?);
        if memory {
            command.arg("--floor-memory");
        }
        let child = command
            .arg("--serve-floor")
            .arg(addr.to_string())
            .arg("--floor-redis")
            .arg(redis_url)
            .arg("--server-threads")
            .arg(threads.to_string())
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("cannot start the floor server")?;
        let floor = Self { child, addr };
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "the floor server did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(floor)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tinyurl up` (the real binary) on a fresh directory, with one link.
struct EmbeddedSystem {
    system: Embedded,
    hot_path: String,
    admin: SocketAddr,
}

impl EmbeddedSystem {
    async fn start(scratch: &Path) -> anyhow::Result<Self> {
        eprintln!("starting tinyurl up …");
        let dir = scratch.join("up");
        fs::create_dir_all(&dir)?;
        let system = Embedded::start(&dir).await?;
        let key = system
            .printed_key
            .clone()
            .context("tinyurl up printed no API key")?;
        let output = system.cli(&key, &["shorten", "https://example.com/zipf/0"])?;
        anyhow::ensure!(
            output.status.success(),
            "shorten failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let short_url = String::from_utf8_lossy(&output.stdout);
        let code = short_url
            .lines()
            .next()
            .and_then(|line| line.trim().rsplit('/').next())
            .context("no short URL printed")?
            .to_owned();
        let hot_path = format!("/{code}");
        let status = http_request(system.http, "GET", &hot_path).await?.status;
        anyhow::ensure!(status == 302, "warm-up answered {status}");
        let admin = system.redirect_admin;
        Ok(Self {
            system,
            hot_path,
            admin,
        })
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Creates `count` links through the writer, 1,000 per `BatchCreateLinks`,
/// 4 calls in flight; returns their codes in creation order.
async fn seed(system: &System, count: usize) -> anyhow::Result<Vec<String>> {
    const BATCH: usize = 1_000;
    let started = Instant::now();
    let mut codes = Vec::with_capacity(count);
    let batches: Vec<usize> = (0..count.div_ceil(BATCH))
        .map(|index| BATCH.min(count - index * BATCH))
        .collect();
    for group in batches.chunks(4) {
        let mut calls = Vec::new();
        for &size in group {
            let mut links = system.links()?;
            let request = system.authed(BatchCreateLinksRequest {
                links: (0..size)
                    .map(|index| CreateLinkRequest {
                        target_url: format!("https://example.com/zipf/{}", codes.len() + index),
                        ..CreateLinkRequest::default()
                    })
                    .collect(),
            });
            calls.push(tokio::spawn(async move {
                links.batch_create_links(request).await
            }));
        }
        for call in calls {
            let response = call.await??.into_inner();
            for result in response.results {
                match result.result {
                    Some(batch_create_links_result::Result::Link(link)) => codes.push(link.code),
                    other => bail!("seeding failed: {other:?}"),
                }
            }
        }
    }
    eprintln!(
        "created {} links in {:.1} s",
        codes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(codes)
}

/// Samples the writer's analytics consumer while a workload runs.
struct ConsumerWatch {
    admin: SocketAddr,
    started: Instant,
    folded_before: f64,
    sampler: tokio::task::JoinHandle<(f64, f64)>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl ConsumerWatch {
    async fn start(admin: SocketAddr) -> anyhow::Result<Self> {
        let folded_before = metric(admin, "writer_clicks_folded_total", &[]).await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let sampler = tokio::spawn(async move {
            let (mut entries, mut seconds) = (0.0f64, 0.0f64);
            while stopped.try_recv().is_err() {
                entries = entries.max(
                    metric(admin, "writer_clicks_stream_lag_entries", &[])
                        .await
                        .unwrap_or(0.0),
                );
                seconds = seconds.max(
                    metric(admin, "writer_clicks_stream_lag_seconds", &[])
                        .await
                        .unwrap_or(0.0),
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (entries, seconds)
        });
        Ok(Self {
            admin,
            started: Instant::now(),
            folded_before,
            sampler,
            stop,
        })
    }

    /// Clicks folded during the watch, its seconds, and the largest lag seen.
    async fn finish(self) -> anyhow::Result<(f64, f64, f64, f64)> {
        let elapsed = self.started.elapsed().as_secs_f64();
        let folded =
            metric(self.admin, "writer_clicks_folded_total", &[]).await? - self.folded_before;
        let _ = self.stop.send(());
        let (entries, seconds) = self.sampler.await?;
        Ok((folded, elapsed, entries, seconds))
    }
}
