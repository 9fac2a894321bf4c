//! `bench-capacity`: the measurements `docs/capacity.md` is computed from,
//! and the computation.
//!
//! One run starts the split system (Postgres primary + streaming replica,
//! Redis, idalloc, a writer with REST, three redirect processes) and measures
//! each kind of work on its own: creates over gRPC, REST and
//! `BatchCreateLinks`; redirects answered from L1, from Redis and from the
//! replica; and the clicks of a Zipf workload folded by the writer's
//! consumer while nothing else runs (the writer is stopped with SIGSTOP while
//! the clicks are made, then let go), then the roll-up of their minutes into
//! days, run at a set point by the writer's `roll-up` command rather than
//! whenever the writer's once-a-minute timer falls. For every phase it records the CPU
//! seconds each process used (Postgres with its backends), the Redis
//! commands and the Postgres transactions, row writes and WAL bytes, so the
//! figures are per core of the component that did the work rather than per
//! share of a machine that every process competes for. The sizing table
//! follows from those figures and the stated assumptions; `--from` computes
//! it again from a saved run, `--compare` sets two runs side by side.

mod common;
mod creates;
mod nginx;
mod workload;
mod wrk;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde::{Deserialize, Serialize};
use tinyurl_harness::process::{
    ScratchDir, cpu_seconds_tree, find_binary, reaped_children_cpu_seconds,
};
use tinyurl_harness::services::{ServiceProcess, metric, start_redirect};
use tinyurl_harness::system::PUBLIC_BASE_URL;
use tinyurl_harness::{PgServer, Stack};
use workload::{CLICK_HEADERS, l1_counts, zipf_lua};
use wrk::Wrk;

#[derive(Parser)]
#[command(
    name = "bench-capacity",
    about = "per-core figures of each component and the sizing computed from them"
)]
struct Args {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs per phase (their operations and CPU seconds are summed).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Links in the system before the redirect phases (created with
    /// `BatchCreateLinks`, which the batch phase measures).
    #[arg(long, default_value_t = 200_000)]
    links: usize,
    /// Write the run's measurements here (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compute the table from a saved run instead of measuring.
    #[arg(long, conflicts_with = "compare")]
    from: Option<PathBuf>,
    /// Two saved runs: each figure of both and their difference.
    #[arg(long, num_args = 2)]
    compare: Vec<PathBuf>,
    /// Share of the redirects that Redis does not answer either (entries
    /// evicted or expired, codes never cached) and the replica must.
    #[arg(long, default_value_t = 0.01)]
    database_share: f64,
    /// Print the primary's statements of the fold and roll-up phases, dearest first
    /// (from `pg_stat_statements`): where the consumer's database time goes.
    #[arg(long)]
    statements: bool,
}

/// The least CPU seconds of a component in a phase that a figure is made
/// of: the kernel counts in 0.01 s ticks.
const MEASURABLE_CPU: f64 = 0.05;

/// What one phase cost: its operations, wall seconds, CPU seconds per
/// component, Redis commands and Postgres activity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Phase {
    operations: f64,
    seconds: f64,
    cpu: BTreeMap<String, f64>,
    redis_commands: BTreeMap<String, f64>,
    primary: PgActivity,
    replica: PgActivity,
    /// Phase-specific observations (p99, L1 hit ratio, …).
    notes: BTreeMap<String, f64>,
}

impl Phase {
    fn cpu(&self, component: &str) -> f64 {
        self.cpu.get(component).copied().unwrap_or(0.0)
    }

    /// Operations per CPU second of `component`; NaN when it used too
    /// little CPU to measure (under 0.05 s at the kernel's 0.01 s ticks).
    fn per_core(&self, component: &str) -> f64 {
        let cpu = self.cpu(component);
        if cpu < MEASURABLE_CPU {
            return f64::NAN;
        }
        self.operations / cpu
    }

    /// CPU seconds of `component` per operation.
    fn cost(&self, component: &str) -> f64 {
        self.cpu(component) / self.operations.max(1.0)
    }

    /// [`Self::cost`] as a figure: NaN when the component used too little
    /// CPU to measure, as [`Self::per_core`].
    fn measured_cost(&self, component: &str) -> f64 {
        if self.cpu(component) < MEASURABLE_CPU {
            return f64::NAN;
        }
        self.cost(component)
    }

    fn redis_per_op(&self, filter: impl Fn(&str) -> bool) -> f64 {
        self.redis_commands
            .iter()
            .filter(|(name, _)| filter(name))
            .map(|(_, calls)| calls)
            .sum::<f64>()
            / self.operations.max(1.0)
    }

    fn add(&mut self, other: &Self) {
        self.operations += other.operations;
        self.seconds += other.seconds;
        for (name, value) in &other.cpu {
            *self.cpu.entry(name.clone()).or_default() += value;
        }
        for (name, value) in &other.redis_commands {
            *self.redis_commands.entry(name.clone()).or_default() += value;
        }
        self.primary.add(&other.primary);
        self.replica.add(&other.replica);
        for (name, value) in &other.notes {
            *self.notes.entry(name.clone()).or_default() += value;
        }
    }
}

/// `pg_stat_database` counters of the benchmark's database and WAL bytes
/// (written on the primary, replayed on the replica).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PgActivity {
    transactions: f64,
    rows_written: f64,
    rows_read: f64,
    wal_bytes: f64,
}

impl PgActivity {
    fn add(&mut self, other: &Self) {
        self.transactions += other.transactions;
        self.rows_written += other.rows_written;
        self.rows_read += other.rows_read;
        self.wal_bytes += other.wal_bytes;
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            transactions: self.transactions - before.transactions,
            rows_written: self.rows_written - before.rows_written,
            rows_read: self.rows_read - before.rows_read,
            wal_bytes: self.wal_bytes - before.wal_bytes,
        }
    }
}

/// One run's measurements (a figure added later reads as 0 from an older
/// saved run).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Run {
    measured_at_unix: u64,
    cpus: usize,
    seconds: u64,
    rounds: usize,
    links: f64,
    lease_size: f64,
    phases: BTreeMap<String, Phase>,
    bytes_per_link: f64,
    bytes_per_rollup_row: f64,
    /// The links' average target length: bytes per link depend on it.
    target_bytes: f64,
}

impl Run {
    fn phase(&self, name: &str) -> anyhow::Result<&Phase> {
        self.phases
            .get(name)
            .with_context(|| format!("the run has no {name} phase"))
    }

    /// The roll-up phase; all zeros in runs made before it was measured on
    /// its own (their fold phase held a roll-up or not, by chance).
    fn roll_up(&self) -> Phase {
        self.phases.get(ROLL_UP).cloned().unwrap_or_default()
    }
}

const CREATE_GRPC: &str = "create-grpc";
const CREATE_REST: &str = "create-rest";
const CREATE_BATCH: &str = "create-batch";
const REDIRECT_L1: &str = "redirect-l1";
const REDIRECT_REDIS: &str = "redirect-redis";
const REDIRECT_REPLICA: &str = "redirect-replica";
const NGINX: &str = "nginx";
const ZIPF: &str = "redirect-zipf";
const FOLD: &str = "fold";
const ROLL_UP: &str = "roll-up";

/// Postgres flushes a backend's statistics at most once a second and an
/// idle backend's within ten: wait this long before reading them.
const STATS_SETTLE: Duration = Duration::from_secs(11);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let [before, after] = args.compare.as_slice() {
        let before = read_run(before)?;
        let after = read_run(after)?;
        print!("{}", compare(&before, &after)?);
        return Ok(());
    }
    let run = match &args.from {
        Some(path) => read_run(path)?,
        None => {
            let run = measure(&args).await?;
            if let Some(out) = &args.out {
                std::fs::write(out, serde_json::to_string_pretty(&run)?)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                eprintln!("measurements written to {}", out.display());
            }
            run
        }
    };
    print!("{}", render(&run, args.database_share)?);
    Ok(())
}

fn read_run(path: &Path) -> anyhow::Result<Run> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a saved run", path.display()))
}

/// The processes whose CPU is counted, by component.
struct Meter {
    processes: Vec<(&'static str, u32)>,
    redis_port: u16,
    primary: tokio_postgres::Client,
    replica: tokio_postgres::Client,
    database: String,
}

/// A reading of every counter.
struct Reading {
    at: Instant,
    cpu: BTreeMap<String, f64>,
    redis: BTreeMap<String, f64>,
}

impl Meter {
    fn read(&self) -> anyhow::Result<Reading> {
        let mut cpu = BTreeMap::<String, f64>::new();
        for (component, pid) in &self.processes {
            *cpu.entry((*component).to_owned()).or_default() += cpu_seconds_tree(*pid);
        }
        Ok(Reading {
            at: Instant::now(),
            cpu,
            redis: BTreeMap::new(),
        })
    }

    async fn read_all(&self) -> anyhow::Result<Reading> {
        let mut reading = self.read()?;
        reading.redis = redis_calls(self.redis_port).await?;
        Ok(reading)
    }

    async fn postgres(&self) -> anyhow::Result<(PgActivity, PgActivity)> {
        const STATS: &str = "SELECT (xact_commit + xact_rollback)::float8,
                                    (tup_inserted + tup_updated + tup_deleted)::float8,
                                    (tup_returned + tup_fetched)::float8
                               FROM pg_stat_database WHERE datname = $1";
        let mut activity = Vec::new();
        for (client, wal) in [
            (&self.primary, "pg_current_wal_lsn()"),
            (&self.replica, "pg_last_wal_replay_lsn()"),
        ] {
            let row = client
                .query_one(STATS, &[&self.database])
                .await
                .context("cannot read pg_stat_database")?;
            let wal_row = client
                .query_one(&format!("SELECT ({wal} - '0/0')::float8"), &[])
                .await
                .context("cannot read the WAL position")?;
            activity.push(PgActivity {
                transactions: row.try_get(0)?,
                rows_written: row.try_get(1)?,
                rows_read: row.try_get(2)?,
                wal_bytes: wal_row.try_get(0)?,
            });
        }
        let replica = activity.pop().context("no replica reading")?;
        let primary = activity.pop().context("no primary reading")?;
        Ok((primary, replica))
    }

    /// Measures `work` (which returns its operation count and notes): CPU
    /// and Redis from its start to its end, Postgres from a settled reading
    /// before to one after.
    async fn phase<F, Fut>(&self, work: F) -> anyhow::Result<Phase>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<(f64, BTreeMap<String, f64>)>>,
    {
        tokio::time::sleep(STATS_SETTLE).await;
        let (primary_before, replica_before) = self.postgres().await?;
        let before = self.read_all().await?;
        let (operations, notes) = work().await?;
        let after = self.read_all().await?;
        tokio::time::sleep(STATS_SETTLE).await;
        let (primary_after, replica_after) = self.postgres().await?;
        Ok(Phase {
            operations,
            seconds: (after.at - before.at).as_secs_f64(),
            cpu: difference(&after.cpu, &before.cpu),
            redis_commands: difference(&after.redis, &before.redis),
            primary: primary_after.since(&primary_before),
            replica: replica_after.since(&replica_before),
            notes,
        })
    }
}

fn difference(
    after: &BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(name, value)| {
            (
                name.clone(),
                value - before.get(name).copied().unwrap_or(0.0),
            )
        })
        .filter(|(_, value)| *value > 0.0)
        .collect()
}

/// Calls per command since Redis started (`INFO commandstats`).
async fn redis_calls(port: u16) -> anyhow::Result<BTreeMap<String, f64>> {
    let reply = tinyurl_harness::redis::command(port, &["INFO", "commandstats"]).await?;
    let text = reply.strings().concat();
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        // cmdstat_get:calls=12,usec=…
        let Some((name, stats)) = line
            .trim()
            .strip_prefix("cmdstat_")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        let count = stats
            .split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .and_then(|count| count.parse::<f64>().ok())
            .unwrap_or(0.0);
        // INFO itself is the benchmark's, not the system's.
        if name != "info" {
            calls.insert(name.to_owned(), count);
        }
    }
    Ok(calls)
}

/// The system under measurement.
struct System {
    stack: Stack,
    writer: ServiceProcess,
    rest: SocketAddr,
    key: Arc<String>,
    l1: ServiceProcess,
    redis_tier: ServiceProcess,
    replica_tier: ServiceProcess,
    zipf: ServiceProcess,
}

async fn measure(args: &Args) -> anyhow::Result<Run> {
    let nginx_binary = find_binary("nginx", &[PathBuf::from("/usr/sbin")], "nginx-light")?;
    let wrk_binary = find_binary("wrk", &[PathBuf::from("/usr/bin")], "wrk")?;
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let half = (cpus / 2).max(1);
    let scratch = ScratchDir::new("bench-capacity", None)?;
    eprintln!("starting postgres (primary + replica), redis, idalloc, writer …");
    let system = System::start(half, args.links).await?;
    let nginx = nginx::Nginx::start(&nginx_binary, scratch.path(), half)?;
    let meter = system.meter(&nginx).await?;
    let wrk = Wrk {
        binary: wrk_binary,
        threads: half,
        duration: Duration::from_secs(args.seconds),
        headers: CLICK_HEADERS.to_vec(),
    };
    let duration = wrk.duration;
    let mut run = Run {
        measured_at_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_secs(),
        cpus,
        seconds: args.seconds,
        rounds: args.rounds,
        ..Run::default()
    };
    let record = |run: &mut Run, name: &str, phase: Phase| {
        eprintln!(
            "{name}: {:.0} ops in {:.1} s, cpu {:?}",
            phase.operations, phase.seconds, phase.cpu
        );
        run.phases.entry(name.to_owned()).or_default().add(&phase);
    };

    // The links the redirect phases read, then creates by each API.
    eprintln!("creating {} links …", args.links);
    let (seeded, seeding) = system.seed(args.links).await?;
    eprintln!("created {seeded:.0} links: {seeding:?}");
    for _ in 0..args.rounds {
        let batch = meter
            .phase(|| async {
                let endpoint = system.writer.endpoint();
                let sample = creates::run_writer(&endpoint, &system.key, 16, duration, 100).await?;
                created(sample, "BatchCreateLinks")
            })
            .await?;
        record(&mut run, CREATE_BATCH, batch);
        let grpc = meter
            .phase(|| async {
                let endpoint = system.writer.endpoint();
                let sample = creates::run_writer(&endpoint, &system.key, 64, duration, 1).await?;
                created(sample, "CreateLink")
            })
            .await?;
        record(&mut run, CREATE_GRPC, grpc);
        let rest = meter
            .phase(|| async {
                let sample = creates::run_rest(system.rest, &system.key, 64, duration).await?;
                created(sample, "POST /api/v1/links")
            })
            .await?;
        record(&mut run, CREATE_REST, rest);
    }

    // Redirects by tier, each over 10,000 codes in turn. The writer is
    // stopped meanwhile so that folding their clicks does not run on the
    // same cores (the fold phase measures it on its own).
    let codes = system.codes(10_000).await?;
    let codes_file = scratch.path().join("codes.txt");
    std::fs::write(&codes_file, codes.join("\n") + "\n")?;
    let cycle = scratch.path().join("cycle.lua");
    std::fs::write(&cycle, cycle_lua(&codes_file))?;
    let all_codes = system.codes(args.links).await?;
    let all_file = scratch.path().join("all.txt");
    std::fs::write(&all_file, all_codes.join("\n") + "\n")?;
    let zipf = scratch.path().join("zipf.lua");
    std::fs::write(&zipf, zipf_lua(&all_file))?;
    // Warm: L1 holds the 10,000 codes; the other tiers' connections are up.
    for (addr, seconds) in [
        (system.l1.listen_addr(), 3),
        (system.redis_tier.listen_addr(), 2),
        (system.replica_tier.listen_addr(), 2),
        (nginx.addr, 2),
    ] {
        wrk.run(addr, "/", Some(&cycle), 64, Duration::from_secs(seconds))?;
    }
    system.drain_clicks().await?;
    system.writer.freeze()?;
    for _ in 0..args.rounds {
        for (name, addr) in [
            (NGINX, nginx.addr),
            (REDIRECT_L1, system.l1.listen_addr()),
            (REDIRECT_REDIS, system.redis_tier.listen_addr()),
            (REDIRECT_REPLICA, system.replica_tier.listen_addr()),
        ] {
            let phase = meter
                .phase(|| async {
                    let result = wrk.run(addr, "/", Some(&cycle), 64, duration)?;
                    if result.non_3xx > 0 {
                        bail!("{name}: {} answers were not redirects", result.non_3xx);
                    }
                    Ok((
                        result.requests_per_second * duration.as_secs_f64(),
                        BTreeMap::from([("p99_ms".to_owned(), result.p99_ms)]),
                    ))
                })
                .await?;
            record(&mut run, name, phase);
        }
    }
    system.writer.thaw()?;
    system.drain_clicks().await?;

    // Clicks: a Zipf workload over every link with L1 at 1% of them (the
    // mix the sizing assumes), its clicks left in the stream while the
    // writer is stopped, then folded with nothing else running.
    wrk.run(
        system.zipf.listen_addr(),
        "/",
        Some(&zipf),
        64,
        Duration::from_secs(5),
    )?;
    system.drain_clicks().await?;
    // Every minute so far into days, and the Zipf clicks in a minute of
    // their own: the writer's periodic roll-up (of minutes two old) then has
    // nothing to do until after the fold phase, and the roll-up of the
    // Zipf minutes is measured as its own phase.
    system.roll_up()?;
    let into_minute = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs()
        % 60;
    tokio::time::sleep(Duration::from_secs(61 - into_minute)).await;
    let writer_admin = system.writer.admin_addr();
    let folded_before = metric(writer_admin, "writer_clicks_folded_total", &[]).await?;
    let rolled_before = metric(writer_admin, "writer_click_day_rows_rolled_total", &[]).await?;
    system.writer.freeze()?;
    let admin = system.zipf.admin_addr();
    let zipf_phase = meter
        .phase(|| async {
            let (hits, misses) = l1_counts(admin).await?;
            let mut requests = 0.0;
            for _ in 0..args.rounds {
                let result = wrk.run(system.zipf.listen_addr(), "/", Some(&zipf), 64, duration)?;
                requests += result.requests_per_second * duration.as_secs_f64();
            }
            let (hits_after, misses_after) = l1_counts(admin).await?;
            let ratio = (hits_after - hits) / (hits_after - hits + misses_after - misses).max(1.0);
            // The last aggregated clicks reach the stream within the flush
            // interval.
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok((
                requests,
                BTreeMap::from([("l1_hit_ratio".to_owned(), ratio)]),
            ))
        })
        .await?;
    if args.statements {
        system.reset_statements().await?;
    }
    let fold = meter
        .phase(|| async {
            system.writer.thaw()?;
            system.drain_clicks().await?;
            let folded =
                metric(writer_admin, "writer_clicks_folded_total", &[]).await? - folded_before;
            Ok((folded, BTreeMap::new()))
        })
        .await?;
    anyhow::ensure!(
        fold.operations >= zipf_phase.operations * 0.99,
        "{:.0} clicks folded of {:.0} redirects",
        fold.operations,
        zipf_phase.operations
    );
    let rolled =
        metric(writer_admin, "writer_click_day_rows_rolled_total", &[]).await? - rolled_before;
    anyhow::ensure!(
        rolled == 0.0,
        "the writer's own roll-up wrote {rolled} day rows during the fold phase \
         (the Zipf and fold phases took over two minutes: fewer --seconds or --rounds)"
    );
    if args.statements {
        system.print_statements(FOLD).await?;
        system.reset_statements().await?;
    }
    let mut day_rows = 0.0;
    let mut command_cpu = 0.0;
    let mut roll_up = meter
        .phase(|| async {
            let before = reaped_children_cpu_seconds();
            day_rows = system.roll_up()?;
            command_cpu = reaped_children_cpu_seconds() - before;
            Ok((
                fold.operations,
                BTreeMap::from([("day_rows".to_owned(), day_rows)]),
            ))
        })
        .await?;
    // The same code as the writer's periodic roll-up, run by the writer's
    // binary as a command: its CPU is the writer's part.
    *roll_up.cpu.entry("writer".to_owned()).or_default() += command_cpu;
    anyhow::ensure!(day_rows > 0.0, "the roll-up phase rolled up nothing");
    record(&mut run, ZIPF, zipf_phase);
    record(&mut run, FOLD, fold);
    record(&mut run, ROLL_UP, roll_up);
    if args.statements {
        system.print_statements(ROLL_UP).await?;
    }

    let (bytes_per_link, links, bytes_per_rollup_row, target_bytes) = system.bytes().await?;
    run.bytes_per_link = bytes_per_link;
    run.links = links;
    run.bytes_per_rollup_row = bytes_per_rollup_row;
    run.target_bytes = target_bytes;
    run.lease_size = metric(system.writer.admin_addr(), "writer_lease_range_size", &[]).await?;
    drop(nginx);
    Ok(run)
}

/// A create phase's operations and p99; a run with a failed call is refused.
fn created(mut sample: common::Sample, what: &str) -> anyhow::Result<(f64, BTreeMap<String, f64>)> {
    ensure_clean(&sample, what)?;
    let p99 = sample.percentile_ms(0.99);
    Ok((
        sample.operations as f64,
        BTreeMap::from([("p99_ms".to_owned(), p99)]),
    ))
}

fn ensure_clean(sample: &common::Sample, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(sample.errors == 0, "{what}: {} calls failed", sample.errors);
    Ok(())
}

impl System {
    async fn start(threads: usize, links: usize) -> anyhow::Result<Self> {
        let stack = Stack::builder()
            .idalloc_env(&[("RUST_LOG", "warn")])
            .start()
            .await?;
        let (writer, rest) = stack
            .setup
            .start_with_rest(&[("RUST_LOG", "warn"), ("TINYURL_DB_POOL_SIZE", "64")])
            .await?;
        let key = Arc::new(stack.setup.create_api_key("capacity")?);
        let redis_url = stack.redis()?.url();
        let threads = threads.to_string();
        let zipf_l1 = (links / 100).max(1).to_string();
        let redirect = |extra: Vec<(&'static str, String)>| {
            let mut env: Vec<(&'static str, String)> = vec![
                ("RUST_LOG", "warn".to_owned()),
                ("TINYURL_WORKER_THREADS", threads.clone()),
                (
                    "TINYURL_REPLICA_URLS",
                    stack.database.replica_urls.join(","),
                ),
                ("TINYURL_DATABASE_URL", stack.database.primary_url.clone()),
                ("TINYURL_REDIS_URL", redis_url.clone()),
                ("TINYURL_CLICKS_REDIS_URL", redis_url.clone()),
                ("TINYURL_PUBLIC_BASE_URL", PUBLIC_BASE_URL.to_owned()),
            ];
            env.extend(extra);
            async move {
                let pairs: Vec<(&str, &str)> = env
                    .iter()
                    .map(|(key, value)| (*key, value.as_str()))
                    .collect();
                start_redirect(&pairs).await
            }
        };
        let l1 = redirect(vec![]).await?;
        let redis_tier = redirect(vec![("TINYURL_L1_CAPACITY", "0".to_owned())]).await?;
        // No shared tier for links (clicks still go to Redis): every request
        // is a replica lookup.
        let replica_tier = redirect(vec![
            ("TINYURL_L1_CAPACITY", "0".to_owned()),
            ("TINYURL_REDIS_URL", String::new()),
        ])
        .await?;
        let zipf = redirect(vec![("TINYURL_L1_CAPACITY", zipf_l1)]).await?;
        Ok(Self {
            stack,
            writer,
            rest,
            key,
            l1,
            redis_tier,
            replica_tier,
            zipf,
        })
    }

    async fn meter(&self, nginx: &nginx::Nginx) -> anyhow::Result<Meter> {
        let pid = |process: &ServiceProcess| process.pid().context("a process is not running");
        let cluster = &self.stack.cluster;
        let redis = self.stack.redis()?;
        let processes = vec![
            ("writer", pid(&self.writer)?),
            (
                "idalloc",
                pid(self.stack.idallocs.first().context("no idalloc")?)?,
            ),
            ("redirect", pid(&self.l1)?),
            ("redirect", pid(&self.redis_tier)?),
            ("redirect", pid(&self.replica_tier)?),
            ("redirect", pid(&self.zipf)?),
            ("redis", redis.pid().context("redis is not running")?),
            ("postgres-primary", postmaster(&cluster.primary)?),
            ("postgres-replica", postmaster(cluster.replica())?),
            // Inside the replica's figure too: the one process that replays
            // WAL, a single-threaded ceiling of its own.
            (
                "replica-startup",
                recovery_process(postmaster(cluster.replica())?)
                    .context("the replica has no startup (recovery) process")?,
            ),
            ("nginx", nginx.child.id()),
        ];
        Ok(Meter {
            processes,
            redis_port: redis.port(),
            primary: cluster.primary.connect(&self.stack.database.name).await?,
            replica: cluster.replica().connect(&self.stack.database.name).await?,
            database: self.stack.database.name.clone(),
        })
    }

    /// Creates `count` links with `BatchCreateLinks` of 100, 16 calls in
    /// flight; the number created, their rate and the calls' p99.
    async fn seed(&self, count: usize) -> anyhow::Result<(f64, BTreeMap<String, f64>)> {
        let mut created = common::Sample::default();
        while (created.operations as usize) < count {
            let sample = creates::run_writer(
                &self.writer.endpoint(),
                &self.key,
                16,
                Duration::from_secs(5),
                100,
            )
            .await?;
            ensure_clean(&sample, "BatchCreateLinks")?;
            created.append_run(sample);
        }
        let p99 = created.percentile_ms(0.99);
        Ok((
            created.operations as f64,
            BTreeMap::from([
                ("creates_per_second".to_owned(), created.rate()),
                ("p99_ms_per_call".to_owned(), p99),
            ]),
        ))
    }

    /// A connection to the primary's database.
    async fn primary(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.stack
            .cluster
            .primary
            .connect(&self.stack.database.name)
            .await
    }

    /// `count` codes of the links created (by the benchmark's key).
    async fn codes(&self, count: usize) -> anyhow::Result<Vec<String>> {
        let client = self.primary().await?;
        let rows = client
            .query(
                "SELECT code FROM links ORDER BY created_at, code LIMIT $1",
                &[&i64::try_from(count)?],
            )
            .await
            .context("cannot list the links' codes")?;
        let codes: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        anyhow::ensure!(codes.len() == count, "only {} links", codes.len());
        Ok(codes)
    }

    /// Waits until the writer has folded every click in the stream. A slow
    /// answer from its admin listener (it shares two cores with a backlog
    /// being folded) is waited out, not failed on.
    async fn drain_clicks(&self) -> anyhow::Result<()> {
        let admin = self.writer.admin_addr();
        let started = Instant::now();
        let mut quiet_since: Option<Instant> = None;
        let mut last = f64::NAN;
        loop {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "the click stream did not drain in 10 minutes"
            );
            let read = async {
                let lag = metric(admin, "writer_clicks_stream_lag_entries", &[]).await?;
                let folded = metric(admin, "writer_clicks_folded_total", &[]).await?;
                anyhow::Ok((lag, folded))
            };
            match read.await {
                Ok((lag, folded)) if lag == 0.0 && folded == last => {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_secs(3) {
                        return Ok(());
                    }
                }
                Ok((_, folded)) => {
                    quiet_since = None;
                    last = folded;
                }
                Err(error) => {
                    eprintln!("waiting for the writer's metrics: {error:#}");
                    quiet_since = None;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Rolls every minute folded so far up into days with the writer's
    /// `roll-up --all` command; the day rows it wrote.
    fn roll_up(&self) -> anyhow::Result<f64> {
        let output = self.stack.setup.command(&["roll-up", "--all"])?;
        let said = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "roll-up failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        said.rsplit_once(": ")
            .and_then(|(_, rows)| rows.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("roll-up said {said:?}"))
    }

    /// Forgets the primary's statement statistics (creating the extension
    /// the server preloads).
    async fn reset_statements(&self) -> anyhow::Result<()> {
        let client = self.primary().await?;
        client
            .batch_execute(
                "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
                 SELECT pg_stat_statements_reset();",
            )
            .await
            .context("cannot reset pg_stat_statements")
    }

    /// The primary's statements since [`Self::reset_statements`], by time
    /// spent executing them, under the phase's name.
    async fn print_statements(&self, phase: &str) -> anyhow::Result<()> {
        let client = self.primary().await?;
        let rows = client
            .query(
                "SELECT total_exec_time, calls, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
                   FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15",
                &[],
            )
            .await
            .context("cannot read pg_stat_statements")?;
        eprintln!("the {phase} phase's statements on the primary:");
        eprintln!("{:>10} {:>8} {:>9}  statement", "ms", "calls", "rows");
        for row in rows {
            let (ms, calls, count, query): (f64, i64, i64, String) = (
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            );
            eprintln!("{ms:>10.0} {calls:>8} {count:>9}  {query}");
        }
        Ok(())
    }

    /// (bytes per link, links, bytes per minute-rollup row, average target
    /// length),
    /// after `VACUUM` as the storage benchmark measures.
    async fn bytes(&self) -> anyhow::Result<(f64, f64, f64, f64)> {
        let client = self.primary().await?;
        for table in ["links", "click_minutes"] {
            client
                .batch_execute(&format!("VACUUM ANALYZE {table}"))
                .await
                .with_context(|| format!("cannot vacuum {table}"))?;
        }
        let row = client
            .query_one(
                "SELECT (pg_total_relation_size('links')
                         + coalesce((SELECT sum(pg_total_relation_size(inhrelid))
                                       FROM pg_inherits WHERE inhparent = 'links'::regclass), 0))::float8,
                        (SELECT count(*) FROM links)::float8,
                        pg_total_relation_size('click_minutes')::float8,
                        (SELECT count(*) FROM click_minutes)::float8,
                        (SELECT avg(octet_length(target_url)) FROM links)::float8",
                &[],
            )
            .await
            .context("cannot measure the tables")?;
        let (link_bytes, links, rollup_bytes, rollups): (f64, f64, f64, f64) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        Ok((
            link_bytes / links.max(1.0),
            links,
            rollup_bytes / rollups.max(1.0),
            row.try_get(4)?,
        ))
    }
}

/// The replica's startup process (`postgres: startup recovering …`), the
/// child of its postmaster that replays WAL.
fn recovery_process(postmaster: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                });
            parent == Some(postmaster)
                && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|title| title.contains("startup"))
        })
}

fn postmaster(server: &PgServer) -> anyhow::Result<u32> {
    server.pid().context("postgres is not running")
}

/// Planned utilisation of every core: headroom for spikes and a lost node.
const UTILISATION: f64 = 0.6;
/// Cores per redirect or writer pod.
const POD_CORES: f64 = 2.0;
/// A Redis shard executes commands on one thread.
const REDIS_SHARD_CORES: f64 = 1.0;
/// Cores of a replica node.
const REPLICA_CORES: f64 = 8.0;
/// The largest primary considered: one node's cores.
const PRIMARY_CORES: f64 = 64.0;
/// A replica replays WAL on one thread (the startup process).
const REPLAY_CORES: f64 = 1.0;
/// Links kept per partition at most (bytes), the partition count's bound.
const PARTITION_BYTES: f64 = 32.0 * 1024.0 * 1024.0 * 1024.0;

/// A measured figure: label, value, unit.
struct Figure {
    label: &'static str,
    value: f64,
    unit: &'static str,
}

fn figure(label: &'static str, value: f64, unit: &'static str) -> Figure {
    Figure { label, value, unit }
}

/// Every figure the model uses, from the run.
fn figures(run: &Run) -> anyhow::Result<Vec<Figure>> {
    let (l1, redis, replica, nginx) = (
        run.phase(REDIRECT_L1)?,
        run.phase(REDIRECT_REDIS)?,
        run.phase(REDIRECT_REPLICA)?,
        run.phase(NGINX)?,
    );
    let (grpc, rest, batch) = (
        run.phase(CREATE_GRPC)?,
        run.phase(CREATE_REST)?,
        run.phase(CREATE_BATCH)?,
    );
    let (zipf, fold) = (run.phase(ZIPF)?, run.phase(FOLD)?);
    let roll_up = run.roll_up();
    let stream = |name: &str| name.starts_with('x');
    Ok(vec![
        figure(
            "nginx `return 301` (reference) per nginx core",
            nginx.per_core("nginx"),
            "req/s",
        ),
        figure(
            "redirect, L1 hit, per redirect core",
            l1.per_core("redirect"),
            "req/s",
        ),
        figure(
            "redirect, Redis GET, per redirect core",
            redis.per_core("redirect"),
            "req/s",
        ),
        figure(
            "redirect, replica lookup, per redirect core",
            replica.per_core("redirect"),
            "req/s",
        ),
        figure(
            "Redis GETs per Redis core (Redis tier)",
            redis.per_core("redis"),
            "req/s",
        ),
        figure(
            "replica lookups per replica core",
            replica.per_core("postgres-replica"),
            "req/s",
        ),
        figure(
            "redirect, Zipf over all links (L1 1%), per redirect core",
            zipf.per_core("redirect"),
            "req/s",
        ),
        figure(
            "Zipf L1 hit ratio",
            zipf.notes.get("l1_hit_ratio").copied().unwrap_or(0.0),
            "",
        ),
        figure(
            "Redis commands per Redis-tier redirect",
            redis.redis_per_op(|_| true),
            "",
        ),
        figure(
            "Redis commands per 1,000 L1 redirects (click stream)",
            1000.0 * l1.redis_per_op(|_| true),
            "",
        ),
        figure(
            "replica transactions per replica-tier redirect",
            replica.replica.transactions / replica.operations.max(1.0),
            "",
        ),
        figure(
            "CreateLink per writer core",
            grpc.per_core("writer"),
            "creates/s",
        ),
        figure(
            "REST create per writer core",
            rest.per_core("writer"),
            "creates/s",
        ),
        figure(
            "BatchCreateLinks ×100 per writer core",
            batch.per_core("writer"),
            "creates/s",
        ),
        figure(
            "CreateLink per primary core",
            grpc.per_core("postgres-primary"),
            "creates/s",
        ),
        figure(
            "BatchCreateLinks per primary core",
            batch.per_core("postgres-primary"),
            "creates/s",
        ),
        figure(
            "CreateLink per Redis core",
            grpc.per_core("redis"),
            "creates/s",
        ),
        figure(
            "idalloc CPU seconds per million creates",
            1e6 * grpc.measured_cost("idalloc"),
            "s",
        ),
        figure("Redis commands per create", grpc.redis_per_op(|_| true), ""),
        figure(
            "Postgres transactions per create (primary)",
            grpc.primary.transactions / grpc.operations.max(1.0),
            "",
        ),
        figure(
            "Postgres row writes per create",
            grpc.primary.rows_written / grpc.operations.max(1.0),
            "",
        ),
        figure(
            "WAL bytes per create",
            grpc.primary.wal_bytes / grpc.operations.max(1.0),
            "B",
        ),
        figure(
            "WAL bytes received and replayed per replica core",
            grpc.replica.wal_bytes / grpc.cpu("postgres-replica").max(1e-9),
            "B/s",
        ),
        figure(
            "WAL bytes replayed per core of the startup process",
            grpc.replica.wal_bytes / grpc.cpu("replica-startup").max(1e-9),
            "B/s",
        ),
        figure(
            "clicks folded per writer core",
            fold.per_core("writer"),
            "clicks/s",
        ),
        figure(
            "clicks folded per primary core",
            fold.per_core("postgres-primary"),
            "clicks/s",
        ),
        figure(
            "Postgres row writes per click",
            fold.primary.rows_written / fold.operations.max(1.0),
            "",
        ),
        figure(
            "WAL bytes per click",
            fold.primary.wal_bytes / fold.operations.max(1.0),
            "B",
        ),
        figure(
            "Redis stream commands per 1,000 clicks (redirect and consumer)",
            1000.0
                * (zipf.redis_per_op(stream) * zipf.operations
                    + fold.redis_per_op(stream) * fold.operations)
                / fold.operations.max(1.0),
            "",
        ),
        figure(
            "consumer CPU per 1,000 clicks folded (writer)",
            1e6 * fold.cost("writer"),
            "ms",
        ),
        figure(
            "consumer CPU per 1,000 clicks folded (primary)",
            1e6 * fold.cost("postgres-primary"),
            "ms",
        ),
        figure(
            "roll-up CPU per 1,000 clicks (writer)",
            1e6 * roll_up.cost("writer"),
            "ms",
        ),
        figure(
            "roll-up CPU per 1,000 clicks (primary)",
            1e6 * roll_up.cost("postgres-primary"),
            "ms",
        ),
        figure(
            "Postgres row writes per click rolled up",
            roll_up.primary.rows_written / roll_up.operations.max(1.0),
            "",
        ),
        figure(
            "WAL bytes per click rolled up",
            roll_up.primary.wal_bytes / roll_up.operations.max(1.0),
            "B",
        ),
        figure("average target URL length", run.target_bytes, "B"),
        figure(
            "bytes per link (table and indexes)",
            run.bytes_per_link,
            "B",
        ),
        figure("bytes per minute-rollup row", run.bytes_per_rollup_row, "B"),
    ])
}

fn value(figures: &[Figure], label: &str) -> f64 {
    figures
        .iter()
        .find(|figure| figure.label == label)
        .map_or(f64::NAN, |figure| figure.value)
}

/// The measured table and the sizing computed from it.
fn render(run: &Run, database_share: f64) -> anyhow::Result<String> {
    let figures = figures(run)?;
    let mut out = String::new();
    writeln!(
        out,
        "Measured: {} CPUs, {} s × {} rounds per phase, {:.0} links; CPU per component from /proc.\n",
        run.cpus, run.seconds, run.rounds, run.links
    )?;
    writeln!(out, "| figure | value |\n|---|---:|")?;
    for figure in &figures {
        writeln!(
            out,
            "| {} | {} {} |",
            figure.label,
            human(figure.value),
            if figure.value.is_nan() {
                ""
            } else {
                figure.unit
            }
        )?;
    }
    let (zipf, fold, grpc, replica) = (
        run.phase(ZIPF)?,
        run.phase(FOLD)?,
        run.phase(CREATE_GRPC)?,
        run.phase(REDIRECT_REPLICA)?,
    );
    let roll_up = run.roll_up();
    let hit = value(&figures, "Zipf L1 hit ratio");
    let replay_per_core = value(
        &figures,
        "WAL bytes replayed per core of the startup process",
    );
    writeln!(
        out,
        "\nSizing: cores planned at {:.0}% busy; pods of {POD_CORES} cores; a Redis shard is one core; replica nodes of {REPLICA_CORES} cores; one primary of at most {PRIMARY_CORES} cores; WAL replay is one core per replica. Redirects: the Zipf mix above (L1 {:.0}% hits), one click each, {:.1}% of them answered by a replica.\n",
        UTILISATION * 100.0,
        hit * 100.0,
        database_share * 100.0
    )?;
    writeln!(
        out,
        "| redirects/s | redirect cores (pods) | Redis cores (shards) | consumer cores (writer pods) | primary cores for clicks | replica cores (replicas) | WAL MB/s | replay busy | first limit |"
    )?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for rate in [10_000.0, 100_000.0, 1_000_000.0] {
        let database = rate * database_share;
        let redirect = rate * zipf.cost("redirect") + database * replica.cost("redirect");
        let redis = rate * (zipf.cost("redis") + fold.cost("redis"));
        let consumer = rate * (fold.cost("writer") + roll_up.cost("writer"));
        let primary = rate * (fold.cost("postgres-primary") + roll_up.cost("postgres-primary"));
        let wal = rate
            * (fold.primary.wal_bytes / fold.operations.max(1.0)
                + roll_up.primary.wal_bytes / roll_up.operations.max(1.0));
        let replay = wal / replay_per_core / (REPLAY_CORES * UTILISATION);
        let replicas = database * replica.cost("postgres-replica");
        let primary_busy = primary / (PRIMARY_CORES * UTILISATION);
        let limit = first_limit(
            &[
                ("the primary (clicks)", primary_busy),
                ("WAL replay on each replica", replay),
            ],
            &[
                ("redirect pods", redirect),
                ("Redis shards", redis / REDIS_SHARD_CORES),
                ("consumers", consumer),
            ],
        );
        writeln!(
            out,
            "| {} | {} ({}) | {} ({}) | {} ({}) | {} | {} ({}) | {} | {:.0}% | {limit} |",
            human(rate),
            human(redirect),
            pods(redirect),
            human(redis),
            shards(redis),
            human(consumer),
            pods(consumer),
            human(primary),
            human(replicas),
            (replicas / (REPLICA_CORES * UTILISATION)).ceil().max(2.0),
            human(wal / 1e6),
            replay * 100.0,
        )?;
    }
    writeln!(
        out,
        "\n| creates/s | writer cores (pods) | primary cores | Redis cores | idalloc cores (replicas) | WAL MB/s | replay busy | storage GB/day | partitions for a year | first limit |"
    )?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for rate in [1_000.0, 10_000.0] {
        let writer = rate * grpc.cost("writer");
        let primary = rate * grpc.cost("postgres-primary");
        let redis = rate * grpc.cost("redis");
        let idalloc = rate * grpc.cost("idalloc");
        let wal = rate * grpc.primary.wal_bytes / grpc.operations.max(1.0);
        let replay = wal / replay_per_core / (REPLAY_CORES * UTILISATION);
        let per_day = rate * 86_400.0 * run.bytes_per_link;
        let partitions = (per_day * 365.0 / PARTITION_BYTES)
            .max(16.0)
            .log2()
            .ceil()
            .exp2();
        let primary_busy = primary / (PRIMARY_CORES * UTILISATION);
        let limit = first_limit(
            &[
                ("the primary (inserts)", primary_busy),
                ("WAL replay on each replica", replay),
            ],
            &[
                ("writer pods", writer),
                ("Redis shards", redis),
                ("idalloc", idalloc),
            ],
        );
        writeln!(
            out,
            "| {} | {} ({}) | {} | {} | {} ({}) | {} | {:.0}% | {} | {partitions:.0} | {limit} |",
            human(rate),
            human(writer),
            pods(writer),
            human(primary),
            human(redis),
            human(idalloc),
            (idalloc / (POD_CORES * UTILISATION)).ceil().max(2.0),
            human(wal / 1e6),
            replay * 100.0,
            human(per_day / 1e9),
        )?;
    }
    Ok(out)
}

/// The component that runs out first: a single-instance one (the primary,
/// a replica's replay) past its planned share, or else the scale-out
/// component needing the most cores.
fn first_limit(single: &[(&str, f64)], scale_out: &[(&str, f64)]) -> String {
    let busiest =
        single.iter().copied().fold(
            ("", 0.0_f64),
            |best, item| if item.1 > best.1 { item } else { best },
        );
    if busiest.1 >= 1.0 {
        return format!("{} ({:.0}% of one)", busiest.0, busiest.1 * 100.0);
    }
    let largest =
        scale_out.iter().copied().fold(
            ("", 0.0_f64),
            |best, item| if item.1 > best.1 { item } else { best },
        );
    format!(
        "none; next: {} at {:.0}% of its share; most cores: {}",
        busiest.0,
        busiest.1 * 100.0,
        largest.0
    )
}

fn pods(cores: f64) -> String {
    format!("{:.0}", (cores / (POD_CORES * UTILISATION)).ceil().max(2.0))
}

fn shards(cores: f64) -> String {
    format!(
        "{:.0}",
        (cores / (REDIS_SHARD_CORES * UTILISATION)).ceil().max(1.0)
    )
}

/// Three significant digits, with k/M suffixes for large values.
fn human(value: f64) -> String {
    if value.is_nan() {
        return "too little CPU to measure".to_owned();
    }
    let (scaled, suffix) = if value.abs() >= 1e6 {
        (value / 1e6, "M")
    } else if value.abs() >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let digits = if scaled.abs() >= 100.0 {
        0
    } else if scaled.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.digits$}{suffix}")
}

/// Both runs' figures side by side, with the difference of each.
fn compare(first: &Run, second: &Run) -> anyhow::Result<String> {
    let (first, second) = (figures(first)?, figures(second)?);
    let mut out = String::from("| figure | first | second | difference |\n|---|---:|---:|---:|\n");
    let mut worst = 0.0_f64;
    for (a, b) in first.iter().zip(&second) {
        // A figure too small to measure in either run has no difference.
        let difference = if a.value.is_nan() || b.value.is_nan() {
            "not compared".to_owned()
        } else {
            let difference = (b.value - a.value) / a.value.abs().max(f64::MIN_POSITIVE);
            worst = worst.max(difference.abs());
            format!("{:+.1}%", difference * 100.0)
        };
        writeln!(
            out,
            "| {} | {} | {} | {difference} |",
            a.label,
            human(a.value),
            human(b.value),
        )?;
    }
    writeln!(out, "\nlargest difference: {:.1}%", worst * 100.0)?;
    Ok(out)
}

/// A wrk script that requests the codes in `codes_file` in turn, each wrk
/// thread starting at its own offset: every code equally often.
fn cycle_lua(codes_file: &Path) -> String {
    format!(
        r#"local codes = {{}}
for line in io.lines("{file}") do codes[#codes + 1] = "/" .. line end
local n = #codes
math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16))
local next_code = math.random(n)
request = function()
  next_code = next_code % n + 1
  return wrk.format("GET", codes[next_code])
end
"#,
        file = codes_file.display()
    )
}
