//! `soak`: the split system (Postgres primary and streaming replica, Redis,
//! idalloc, two writers, two redirects; every one a real process) under
//! steady load for a long time, with one component, chosen at random,
//! SIGKILLed every two minutes and restarted after a pause. The load: creates
//! as a careful client sends them (an idempotency key each, retried with the
//! same key on UNAVAILABLE), and redirects of codes drawn from a Zipf
//! distribution over keep-alive connections, moving to the other redirect
//! process when one stops answering, as a load balancer would.
//!
//! Reports acknowledged creates lost and duplicate codes (both must be 0),
//! redirect errors inside and outside the kill windows (outside must be 0),
//! the create p99 outside kill windows for each minute, the RSS of each
//! process lifetime (sampled every 10 s from a warm-up after it began, so a
//! restart neither hides growth nor makes it up), and writes
//! `report.json`, `report.txt` and `soak.png` (throughput and p99 per
//! second, kill windows shaded) to `--out`. Exits non-zero when an invariant
//! broke.
//!
//! Run through `scripts/soak` (release build, then this).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use rand::Rng as _;
use rand::distr::Distribution as _;
use tinyurl_harness::ServiceProcess;
use tinyurl_harness::services::{authed, http_get, metric_in, retryable};
use tinyurl_harness::system::System;
use tinyurl_proto::v1::links_client::LinksClient;
use tinyurl_proto::v1::{BatchCreateLinksRequest, CreateLinkRequest};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(
    name = "soak",
    about = "long run of the split system under load with random kills"
)]
struct Args {
    #[arg(long, default_value_t = 20)]
    minutes: u64,
    /// A random component is killed this often.
    #[arg(long, default_value_t = 120)]
    kill_every_secs: u64,
    /// How long a killed component stays down.
    #[arg(long, default_value_t = 10)]
    down_secs: u64,
    /// After a restart is ready, errors still count as the kill's for this long.
    #[arg(long, default_value_t = 5)]
    grace_secs: u64,
    /// A process's RSS is compared from this long after it began.
    #[arg(long, default_value_t = 120)]
    warm_up_secs: u64,
    /// Links the redirect load draws from (Zipf, exponent 1).
    #[arg(long, default_value_t = 50_000)]
    links: u64,
    #[arg(long, default_value_t = 1.0)]
    zipf_exponent: f64,
    /// Concurrent keep-alive redirect connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Redirect requests per second, over all connections: a steady load
    /// that leaves the machine room for the restarts, not a saturation test.
    #[arg(long, default_value_t = 4000)]
    redirect_rate: u64,
    /// Creates per second, over all create clients.
    #[arg(long, default_value_t = 100)]
    create_rate: u64,
    #[arg(long, default_value_t = 4)]
    create_clients: usize,
    /// Where the report and the plot go.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
}

/// What happened in one second of the run.
#[derive(Default, Clone)]
struct Second {
    redirects: u64,
    redirect_errors: u64,
    /// Microseconds of every answered redirect.
    redirect_latencies: Vec<u32>,
    creates: u64,
    create_retries: u64,
    create_latencies: Vec<u32>,
}

struct Timeline {
    started: Instant,
    seconds: Mutex<Vec<Second>>,
}

impl Timeline {
    fn record(&self, at: Instant, update: impl FnOnce(&mut Second)) {
        let index = usize::try_from(at.duration_since(self.started).as_secs()).unwrap_or(0);
        let mut seconds = self.seconds.lock().unwrap_or_else(PoisonError::into_inner);
        if seconds.len() <= index {
            seconds.resize(index + 1, Second::default());
        }
        update(&mut seconds[index]);
    }
}

fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

/// A kill and the time until its component answered again (plus grace).
#[derive(Clone, serde::Serialize)]
struct KillWindow {
    victim: String,
    from_secs: f64,
    until_secs: f64,
    /// From the restart to ready, milliseconds.
    restart_ms: u64,
}

#[derive(Clone, Copy, Debug)]
enum Victim {
    Primary,
    Replica,
    Redis,
    Idalloc,
    Writer(usize),
    Redirect(usize),
}

const VICTIMS: [Victim; 8] = [
    Victim::Primary,
    Victim::Replica,
    Victim::Redis,
    Victim::Idalloc,
    Victim::Writer(0),
    Victim::Writer(1),
    Victim::Redirect(0),
    Victim::Redirect(1),
];

impl Victim {
    fn name(self) -> String {
        match self {
            Self::Primary => "postgres-primary".to_owned(),
            Self::Replica => "postgres-replica".to_owned(),
            Self::Redis => "redis".to_owned(),
            Self::Idalloc => "idalloc".to_owned(),
            Self::Writer(index) => format!("writer-{}", index + 1),
            Self::Redirect(index) => format!("redirect-{}", index + 1),
        }
    }
}

/// The harness's split system (its writer is writer-1) plus more writers
/// and two redirects.
struct Stack {
    system: System,
    /// writer-2 onwards.
    writers: Vec<ServiceProcess>,
    redirects: Vec<ServiceProcess>,
}

impl Stack {
    async fn start() -> anyhow::Result<Self> {
        let system = System::start(&[]).await?;
        let second = system.setup.start(&[]).await?;
        let redirects = vec![
            system.start_redirect(&[]).await?,
            system.start_redirect(&[]).await?,
        ];
        Ok(Self {
            system,
            writers: vec![second],
            redirects,
        })
    }

    fn key(&self) -> &str {
        &self.system.api_key
    }

    fn writer(&self, index: usize) -> &ServiceProcess {
        if index == 0 {
            &self.system.writer
        } else {
            &self.writers[index - 1]
        }
    }

    fn writer_mut(&mut self, index: usize) -> &mut ServiceProcess {
        if index == 0 {
            &mut self.system.writer
        } else {
            &mut self.writers[index - 1]
        }
    }

    fn services(&self) -> Vec<(String, &ServiceProcess)> {
        let mut services = vec![("idalloc".to_owned(), &self.system.idalloc)];
        for index in 0..=self.writers.len() {
            services.push((format!("writer-{}", index + 1), self.writer(index)));
        }
        for (index, redirect) in self.redirects.iter().enumerate() {
            services.push((format!("redirect-{}", index + 1), redirect));
        }
        services
    }

    fn kill(&mut self, victim: Victim) -> anyhow::Result<()> {
        match victim {
            Victim::Primary => self.system.cluster.primary.kill(),
            Victim::Replica => self.system.cluster.replica_mut().kill(),
            Victim::Redis => self.system.redis.kill(),
            Victim::Idalloc => self.system.idalloc.kill(),
            Victim::Writer(index) => self.writer_mut(index).kill(),
            Victim::Redirect(index) => self.redirects[index].kill(),
        }
    }

    async fn restart(&mut self, victim: Victim) -> anyhow::Result<()> {
        match victim {
            Victim::Primary => self.system.cluster.primary.start().await,
            Victim::Replica => self.system.cluster.replica_mut().start().await,
            Victim::Redis => self.system.redis.start_again().await,
            Victim::Idalloc => self.system.idalloc.start_again().await,
            Victim::Writer(index) => self.writer_mut(index).start_again().await,
            Victim::Redirect(index) => self.redirects[index].start_again().await,
        }
    }
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Creates the links the redirects are drawn from, 1,000 per call.
async fn seed(
    links: &mut LinksClient<Channel>,
    key: &str,
    count: u64,
) -> anyhow::Result<Vec<String>> {
    let mut codes = Vec::with_capacity(usize::try_from(count)?);
    let mut next = 0;
    while next < count {
        let batch = (next..count.min(next + 1000))
            .map(|index| CreateLinkRequest {
                target_url: format!("https://example.com/soak/seed/{index}"),
                ..CreateLinkRequest::default()
            })
            .collect::<Vec<_>>();
        next += batch.len() as u64;
        let answer = links
            .batch_create_links(authed(BatchCreateLinksRequest { links: batch }, key))
            .await?
            .into_inner();
        for result in answer.results {
            match result.result {
                Some(tinyurl_proto::v1::batch_create_links_result::Result::Link(link)) => {
                    codes.push(link.code);
                }
                other => anyhow::bail!("a seed link failed: {other:?}"),
            }
        }
    }
    Ok(codes)
}

/// One keep-alive connection's worth of redirect load.
async fn redirect_load(
    addrs: Arc<Vec<SocketAddr>>,
    first: usize,
    codes: Arc<Vec<String>>,
    zipf: rand_distr::Zipf<f64>,
    per_second: f64,
    timeline: Arc<Timeline>,
    stop: Arc<AtomicBool>,
) {
    let mut target = first;
    let mut sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(0.01)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let rank = zipf.sample(&mut rand::rng()) as usize;
        let code = &codes[(rank - 1).min(codes.len() - 1)];
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(3), async {
            if sender
                .as_ref()
                .is_none_or(hyper::client::conn::http1::SendRequest::is_closed)
            {
                let stream = tokio::net::TcpStream::connect(addrs[target]).await?;
                stream.set_nodelay(true)?;
                let (send, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await?;
                tokio::spawn(connection);
                sender = Some(send);
            }
            let send = sender.as_mut().context("no connection")?;
            send.ready().await?;
            let request = http::Request::get(format!("/{code}"))
                .header(http::header::HOST, "sho.rt")
                .body(Empty::<Bytes>::new())?;
            let response = send.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            anyhow::ensure!(status == http::StatusCode::FOUND, "answered {status}");
            anyhow::Ok(())
        })
        .await;
        let at = Instant::now();
        match outcome {
            Ok(Ok(())) => timeline.record(at, |second| {
                second.redirects += 1;
                second.redirect_latencies.push(micros(at - started));
            }),
            _ => {
                timeline.record(at, |second| second.redirect_errors += 1);
                // Another process, as a load balancer would route.
                sender = None;
                target = (target + 1) % addrs.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The acknowledged creates of one client: (code, target).
async fn create_load(
    client: usize,
    links: LinksClient<Channel>,
    key: Arc<String>,
    per_second: f64,
    timeline: Arc<Timeline>,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
) -> Vec<(String, String)> {
    let mut acknowledged = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(0.01)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sequence = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        sequence += 1;
        let request = CreateLinkRequest {
            target_url: format!("https://example.com/soak/{client}/{sequence}"),
            idempotency_key: format!("soak-{client}-{sequence}"),
            ..CreateLinkRequest::default()
        };
        let first_try = Instant::now();
        loop {
            let answer = links
                .clone()
                .create_link(authed(request.clone(), &key))
                .await;
            let at = Instant::now();
            match answer {
                Ok(link) => {
                    timeline.record(at, |second| {
                        second.creates += 1;
                        second.create_latencies.push(micros(at - first_try));
                    });
                    acknowledged.push((link.into_inner().code, request.target_url.clone()));
                    break;
                }
                Err(status)
                    if (retryable(&status) || status.code() == tonic::Code::ResourceExhausted)
                        && first_try.elapsed() < Duration::from_secs(60) =>
                {
                    timeline.record(at, |second| second.create_retries += 1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => {
                    eprintln!("create failed: {status:?}");
                    failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    acknowledged
}

fn percentile(values: &mut [u32], quantile: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let rank = ((values.len() as f64 * quantile).ceil() as usize).clamp(1, values.len());
    f64::from(values[rank - 1]) / 1000.0
}

/// The resident memory of one process over its life: a restart begins a
/// new lifetime, so growth is always that of one process, never hidden (or
/// made up) by a restart in between.
#[derive(Clone, serde::Serialize)]
struct Lifetime {
    service: String,
    pid: u32,
    /// Seconds into the run of its first and last sample; the first is taken
    /// a warm-up after the process began (the run's start for the processes
    /// started before it).
    from_secs: f64,
    until_secs: f64,
    first_kib: u64,
    last_kib: u64,
    peak_kib: u64,
}

impl Lifetime {
    fn growth_percent(&self) -> f64 {
        (self.last_kib as f64 - self.first_kib as f64) * 100.0 / self.first_kib.max(1) as f64
    }
}

/// RSS samples of every service process, by lifetime.
struct Memory {
    warm_up: Duration,
    /// When each process was first seen, into the run.
    born: HashMap<u32, Duration>,
    lifetimes: Vec<Lifetime>,
}

impl Memory {
    /// How often each process is sampled.
    const EVERY: Duration = Duration::from_secs(10);

    fn new(warm_up: Duration) -> Self {
        Self {
            warm_up,
            born: HashMap::new(),
            lifetimes: Vec::new(),
        }
    }

    fn sample(&mut self, stack: &Stack, at: Duration) {
        for (service, process) in stack.services() {
            let Some(pid) = process.pid() else { continue };
            let born = *self.born.entry(pid).or_insert(at);
            let Some(kib) = rss_kib(pid) else { continue };
            if at < born + self.warm_up {
                continue;
            }
            let at = at.as_secs_f64();
            match self.lifetimes.iter_mut().find(|life| life.pid == pid) {
                Some(life) => {
                    life.until_secs = at;
                    life.last_kib = kib;
                    life.peak_kib = life.peak_kib.max(kib);
                }
                None => self.lifetimes.push(Lifetime {
                    service,
                    pid,
                    from_secs: at,
                    until_secs: at,
                    first_kib: kib,
                    last_kib: kib,
                    peak_kib: kib,
                }),
            }
        }
    }
}

/// What the writers spent their time on in one sampling interval, summed
/// over the writers (from their /metrics): to tell a create stall's cause.
#[derive(Clone, Default, serde::Serialize)]
struct WriterWork {
    /// Seconds into the run at the end of the interval.
    at_secs: f64,
    group_commits: f64,
    /// Seconds inside the group commit's inserts.
    insert_secs: f64,
    roll_up_secs: f64,
    prune_secs: f64,
    fold_secs: f64,
    batches_folded: f64,
}

/// The counters behind [`WriterWork`], as last read.
#[derive(Default)]
struct WorkCounters {
    last: Option<WriterWork>,
    intervals: Vec<WriterWork>,
}

impl WorkCounters {
    /// Reads every writer's counters and records the interval since the
    /// last read (a writer that does not answer counts nothing; a restarted
    /// one starts from zero, so a negative difference counts as zero).
    async fn sample(&mut self, stack: &Stack, at: Duration) {
        let mut now = WriterWork {
            at_secs: at.as_secs_f64(),
            ..WriterWork::default()
        };
        for index in 0..=stack.writers.len() {
            let Ok((200, text)) = http_get(stack.writer(index).admin_addr(), "/metrics").await
            else {
                continue;
            };
            let sum = |name: &str, labels: &[&str]| metric_in(&text, name, labels);
            now.group_commits += sum("writer_group_commit_seconds_count", &[]);
            now.insert_secs += sum("writer_group_commit_seconds_sum", &[]);
            now.roll_up_secs += sum("writer_click_maintenance_seconds_sum", &["roll_up"]);
            now.prune_secs += sum("writer_click_maintenance_seconds_sum", &["prune"]);
            now.fold_secs += sum("writer_click_fold_seconds_sum", &[]);
            now.batches_folded += sum("writer_click_fold_seconds_count", &[]);
        }
        if let Some(last) = self.last.replace(now.clone()) {
            let delta = |now: f64, last: f64| (now - last).max(0.0);
            self.intervals.push(WriterWork {
                at_secs: now.at_secs,
                group_commits: delta(now.group_commits, last.group_commits),
                insert_secs: delta(now.insert_secs, last.insert_secs),
                roll_up_secs: delta(now.roll_up_secs, last.roll_up_secs),
                prune_secs: delta(now.prune_secs, last.prune_secs),
                fold_secs: delta(now.fold_secs, last.fold_secs),
                batches_folded: delta(now.batches_folded, last.batches_folded),
            });
        }
    }
}

#[derive(serde::Serialize)]
struct Report {
    minutes: u64,
    redirects: u64,
    redirect_errors_in_kill_windows: u64,
    redirect_errors_outside_kill_windows: u64,
    redirect_p99_ms_outside_kill_windows: f64,
    creates_acknowledged: u64,
    create_retries: u64,
    creates_failed: usize,
    creates_lost: usize,
    duplicate_codes: usize,
    /// First try to acknowledgement, retries included, over the seconds
    /// outside every kill window: the whole run, and each minute (none
    /// when a minute lies wholly inside kill windows).
    create_p99_ms_outside_kill_windows: f64,
    create_p99_ms_per_minute_outside_kill_windows: Vec<Option<f64>>,
    kills: Vec<KillWindow>,
    memory: Vec<Lifetime>,
    /// The writers' work per sampling interval (10 s).
    writer_work: Vec<WriterWork>,
    /// The sampling intervals outside kill windows whose create p99 was
    /// over 250 ms: (interval end, p99 ms).
    slow_create_intervals: Vec<(f64, f64)>,
}

/// The load: Zipf redirects over keep-alive connections and paced creates,
/// recording into one timeline until stopped.
struct Load {
    timeline: Arc<Timeline>,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    redirects: Vec<tokio::task::JoinHandle<()>>,
    creates: Vec<tokio::task::JoinHandle<Vec<(String, String)>>>,
}

impl Load {
    fn start(
        args: &Args,
        stack: &Stack,
        codes: &Arc<Vec<String>>,
        channel: &Channel,
    ) -> anyhow::Result<Self> {
        let timeline = Arc::new(Timeline {
            started: Instant::now(),
            seconds: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let zipf = rand_distr::Zipf::new(codes.len() as f64, args.zipf_exponent)
            .context("invalid Zipf parameters")?;
        let addrs = Arc::new(
            stack
                .redirects
                .iter()
                .map(ServiceProcess::listen_addr)
                .collect::<Vec<_>>(),
        );
        let redirects = (0..args.connections)
            .map(|connection| {
                tokio::spawn(redirect_load(
                    Arc::clone(&addrs),
                    connection % addrs.len(),
                    Arc::clone(codes),
                    zipf,
                    args.redirect_rate as f64 / args.connections.max(1) as f64,
                    Arc::clone(&timeline),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        let key = Arc::new(stack.key().to_owned());
        let failed = Arc::new(AtomicUsize::new(0));
        let per_client = args.create_rate as f64 / args.create_clients.max(1) as f64;
        let creates = (0..args.create_clients)
            .map(|client| {
                tokio::spawn(create_load(
                    client,
                    LinksClient::new(channel.clone()),
                    Arc::clone(&key),
                    per_client,
                    Arc::clone(&timeline),
                    Arc::clone(&stop),
                    Arc::clone(&failed),
                ))
            })
            .collect();
        Ok(Self {
            timeline,
            stop,
            failed,
            redirects,
            creates,
        })
    }

    /// Stops the load; answers every acknowledged create (code, target).
    async fn stop(self) -> anyhow::Result<(Vec<(String, String)>, Vec<Second>, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.redirects {
            task.await?;
        }
        let mut acknowledged = Vec::new();
        for task in self.creates {
            acknowledged.extend(task.await?);
        }
        let seconds = self
            .timeline
            .seconds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok((acknowledged, seconds, self.failed.load(Ordering::Relaxed)))
    }
}

/// Runs for `args.minutes`, killing a random component every
/// `kill_every_secs` (when its whole window fits in the run) and sampling
/// every process's memory; answers the kill windows.
async fn run_with_kills(
    args: &Args,
    stack: &mut Stack,
    started: Instant,
    memory: &mut Memory,
    work: &mut WorkCounters,
) -> anyhow::Result<Vec<KillWindow>> {
    let run_for = Duration::from_secs(args.minutes * 60);
    let kill_every = Duration::from_secs(args.kill_every_secs);
    let mut kills = Vec::new();
    let mut next_kill = kill_every;
    let mut next_sample = Duration::ZERO;
    loop {
        let elapsed = started.elapsed();
        if elapsed >= next_sample {
            memory.sample(stack, elapsed);
            work.sample(stack, elapsed).await;
            next_sample = elapsed + Memory::EVERY;
        }
        if elapsed >= run_for {
            return Ok(kills);
        }
        if elapsed >= next_kill && elapsed + Duration::from_secs(args.down_secs + 30) < run_for {
            next_kill += kill_every;
            let victim = VICTIMS[rand::rng().random_range(0..VICTIMS.len())];
            let from = started.elapsed();
            eprintln!("{:>5.0}s kill {}", from.as_secs_f64(), victim.name());
            stack.kill(victim)?;
            tokio::time::sleep(Duration::from_secs(args.down_secs)).await;
            let restarting = Instant::now();
            stack
                .restart(victim)
                .await
                .with_context(|| format!("cannot restart {}", victim.name()))?;
            let restart_ms = u64::try_from(restarting.elapsed().as_millis()).unwrap_or(u64::MAX);
            let until = started.elapsed() + Duration::from_secs(args.grace_secs);
            eprintln!(
                "{:>5.0}s {} back after {restart_ms} ms",
                started.elapsed().as_secs_f64(),
                victim.name()
            );
            kills.push(KillWindow {
                victim: victim.name(),
                from_secs: from.as_secs_f64(),
                until_secs: until.as_secs_f64(),
                restart_ms,
            });
            continue;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The report's figures of the timeline, outside the kill windows.
struct OutsideKills {
    redirect_errors_in: u64,
    redirect_errors_out: u64,
    redirect_p99_ms: f64,
    create_p99_ms: f64,
    create_p99_ms_per_minute: Vec<Option<f64>>,
}

impl OutsideKills {
    fn of(seconds: &[Second], kills: &[KillWindow]) -> Self {
        let in_window = |second: usize| {
            let (start, end) = (second as f64, second as f64 + 1.0);
            kills
                .iter()
                .any(|kill| start < kill.until_secs && end > kill.from_secs)
        };
        let (mut redirects, mut creates) = (Vec::new(), Vec::new());
        let mut per_minute: Vec<Vec<u32>> = vec![Vec::new(); seconds.len().div_ceil(60)];
        let (mut errors_in, mut errors_out) = (0, 0);
        for (index, second) in seconds.iter().enumerate() {
            if in_window(index) {
                errors_in += second.redirect_errors;
                continue;
            }
            errors_out += second.redirect_errors;
            redirects.extend_from_slice(&second.redirect_latencies);
            creates.extend_from_slice(&second.create_latencies);
            per_minute[index / 60].extend_from_slice(&second.create_latencies);
        }
        Self {
            redirect_errors_in: errors_in,
            redirect_errors_out: errors_out,
            redirect_p99_ms: percentile(&mut redirects, 0.99),
            create_p99_ms: percentile(&mut creates, 0.99),
            create_p99_ms_per_minute: per_minute
                .iter_mut()
                .map(|minute| (!minute.is_empty()).then(|| percentile(minute, 0.99)))
                .collect(),
        }
    }
}

/// The sampling intervals, outside every kill window, whose create p99 was
/// over 250 ms: (interval end, p99 ms).
fn slow_create_intervals(
    seconds: &[Second],
    kills: &[KillWindow],
    intervals: &[WriterWork],
) -> Vec<(f64, f64)> {
    let mut slow = Vec::new();
    let mut from = 0.0;
    for interval in intervals {
        let (start, end) = (from, interval.at_secs);
        from = end;
        if kills
            .iter()
            .any(|kill| start < kill.until_secs && end > kill.from_secs)
        {
            continue;
        }
        let within =
            &seconds[(start as usize).min(seconds.len())..(end as usize).min(seconds.len())];
        let mut latencies: Vec<u32> = within
            .iter()
            .flat_map(|second| second.create_latencies.iter().copied())
            .collect();
        let p99 = percentile(&mut latencies, 0.99);
        if p99 > 250.0 {
            slow.push((end, p99));
        }
    }
    slow
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    eprintln!("starting the split system");
    let mut stack = Stack::start().await?;
    let endpoints = (0..=stack.writers.len())
        .map(|index| {
            let writer = stack.writer(index);
            Ok(Endpoint::from_shared(writer.endpoint())?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(5)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let channel = Channel::balance_list(endpoints.into_iter());
    eprintln!("creating {} links to redirect to", args.links);
    let codes = Arc::new(
        seed(
            &mut LinksClient::new(channel.clone()),
            stack.key(),
            args.links,
        )
        .await?,
    );

    let load = Load::start(&args, &stack, &codes, &channel)?;
    let mut memory = Memory::new(Duration::from_secs(args.warm_up_secs));
    let mut work = WorkCounters::default();
    let kills = run_with_kills(
        &args,
        &mut stack,
        load.timeline.started,
        &mut memory,
        &mut work,
    )
    .await?;
    let (acknowledged, seconds, failed) = load.stop().await?;
    eprintln!("checking {} acknowledged creates", acknowledged.len());
    let (lost, duplicates) = verify(&stack.system.database.primary_url, &acknowledged).await?;
    let outside = OutsideKills::of(&seconds, &kills);
    let report = Report {
        minutes: args.minutes,
        redirects: seconds.iter().map(|second| second.redirects).sum(),
        redirect_errors_in_kill_windows: outside.redirect_errors_in,
        redirect_errors_outside_kill_windows: outside.redirect_errors_out,
        redirect_p99_ms_outside_kill_windows: outside.redirect_p99_ms,
        creates_acknowledged: acknowledged.len() as u64,
        create_retries: seconds.iter().map(|second| second.create_retries).sum(),
        creates_failed: failed,
        creates_lost: lost,
        duplicate_codes: duplicates,
        create_p99_ms_outside_kill_windows: outside.create_p99_ms,
        create_p99_ms_per_minute_outside_kill_windows: outside.create_p99_ms_per_minute,
        slow_create_intervals: slow_create_intervals(&seconds, &kills, &work.intervals),
        kills,
        memory: memory.lifetimes,
        writer_work: work.intervals,
    };
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let text = render_text(&report);
    std::fs::write(args.out.join("report.txt"), &text)?;
    print!("{text}");
    let plot = args.out.join("soak.png");
    draw(&plot, &seconds, &report.kills)?;
    println!("plot: {}", plot.display());
    anyhow::ensure!(
        report.creates_lost == 0
            && report.duplicate_codes == 0
            && report.creates_failed == 0
            && report.redirect_errors_outside_kill_windows == 0,
        "an invariant broke; see the report"
    );
    Ok(())
}

/// Every acknowledged create is in the primary with its target; no code
/// was acknowledged for two different creates.
async fn verify(
    primary_url: &str,
    acknowledged: &[(String, String)],
) -> anyhow::Result<(usize, usize)> {
    let mut targets: HashMap<&str, &str> = HashMap::new();
    let mut duplicates = 0;
    for (code, target) in acknowledged {
        if let Some(previous) = targets.insert(code, target)
            && previous != target
        {
            duplicates += 1;
            eprintln!("duplicate code {code}: {previous} and {target}");
        }
    }
    let db = tinyurl_harness::postgres::connect(primary_url).await?;
    let mut lost = 0;
    for chunk in acknowledged.chunks(5000) {
        let codes: Vec<&str> = chunk.iter().map(|(code, _)| code.as_str()).collect();
        let rows = db
            .query(
                "SELECT code, target_url FROM links WHERE code = ANY($1)",
                &[&codes],
            )
            .await?;
        let stored: HashMap<String, Option<String>> = rows
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        for (code, target) in chunk {
            if stored.get(code).and_then(Option::as_deref) != Some(target.as_str()) {
                lost += 1;
                eprintln!("lost: {code} ({target})");
            }
        }
    }
    Ok((lost, duplicates))
}

fn render_text(report: &Report) -> String {
    let mut text = format!(
        "soak of {} minutes\n\
         redirects {} (p99 outside kill windows {:.2} ms), errors {} inside kill windows, {} outside\n\
         creates acknowledged {}, retried calls {}, failed {}, lost {}, duplicate codes {}\n\
         kills:\n",
        report.minutes,
        report.redirects,
        report.redirect_p99_ms_outside_kill_windows,
        report.redirect_errors_in_kill_windows,
        report.redirect_errors_outside_kill_windows,
        report.creates_acknowledged,
        report.create_retries,
        report.creates_failed,
        report.creates_lost,
        report.duplicate_codes,
    );
    for kill in &report.kills {
        text.push_str(&format!(
            "  {:>6.0}s {:<17} restart ready in {} ms, window until {:.0}s\n",
            kill.from_secs, kill.victim, kill.restart_ms, kill.until_secs
        ));
    }
    text.push_str(&format!(
        "create p99 outside kill windows {:.1} ms; per minute (ms):",
        report.create_p99_ms_outside_kill_windows
    ));
    for (minute, p99) in report
        .create_p99_ms_per_minute_outside_kill_windows
        .iter()
        .enumerate()
    {
        if minute % 10 == 0 {
            text.push_str("\n ");
        }
        text.push_str(&p99.map_or_else(|| "      -".to_owned(), |p99| format!(" {p99:>6.1}")));
    }
    text.push_str(&format!(
        "\n10 s intervals outside kill windows with create p99 > 250 ms: {}\n",
        report.slow_create_intervals.len()
    ));
    for (end, p99) in &report.slow_create_intervals {
        let work = report
            .writer_work
            .iter()
            .find(|work| (work.at_secs - end).abs() < 0.001);
        text.push_str(&format!("  until {end:>6.0}s create p99 {p99:>7.1} ms"));
        if let Some(work) = work {
            text.push_str(&format!(
                "; writers: {:.0} group commits, {:.2} s inserting, roll-up {:.2} s, prune {:.2} s, {:.0} batches folded in {:.2} s",
                work.group_commits,
                work.insert_secs,
                work.roll_up_secs,
                work.prune_secs,
                work.batches_folded,
                work.fold_secs
            ));
        }
        text.push('\n');
    }
    text.push_str("RSS (KiB) of each process lifetime, from a warm-up after it began:\n");
    for life in &report.memory {
        text.push_str(&format!(
            "  {:<11} pid {:>7} {:>6.0}s-{:<6.0}s {:>8} -> {:>8} (peak {:>8}) {:+.1}%\n",
            life.service,
            life.pid,
            life.from_secs,
            life.until_secs,
            life.first_kib,
            life.last_kib,
            life.peak_kib,
            life.growth_percent()
        ));
    }
    text
}

/// Throughput and p99 per second, kill windows shaded.
fn draw(path: &Path, seconds: &[Second], kills: &[KillWindow]) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let font: &'static [u8] = Box::leak(
        std::fs::read(FONT)
            .with_context(|| format!("cannot read {FONT} (Debian: fonts-dejavu-core)"))?
            .into_boxed_slice(),
    );
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))?;

    const SIZE: (u32, u32) = (1400, 1100);
    let mut pixels = vec![0_u8; SIZE.0 as usize * SIZE.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((4, 1));
        let end = seconds.len().max(1) as f64;
        let series = |pick: &dyn Fn(&Second) -> f64| -> Vec<(f64, f64)> {
            seconds
                .iter()
                .enumerate()
                .map(|(index, second)| (index as f64, pick(second)))
                .collect()
        };
        let redirects = series(&|second| second.redirects as f64);
        let creates = series(&|second| second.creates as f64);
        let redirect_p99 =
            series(&|second| percentile(&mut second.redirect_latencies.clone(), 0.99));
        let create_p99 = series(&|second| percentile(&mut second.create_latencies.clone(), 0.99));
        let top =
            |points: &[(f64, f64)]| points.iter().map(|point| point.1).fold(1.0, f64::max) * 1.1;

        let panel_specs: [(&str, &str, Vec<Line<'_>>); 4] = [
            (
                "redirects per second",
                "req/s",
                vec![("redirects", &redirects, BLUE)],
            ),
            (
                "acknowledged creates per second",
                "creates/s",
                vec![("creates", &creates, GREEN)],
            ),
            (
                "redirect p99 per second",
                "ms",
                vec![("redirect p99", &redirect_p99, BLUE)],
            ),
            (
                "create p99 per second (first try to acknowledgement, retries included)",
                "ms",
                vec![("create p99", &create_p99, GREEN)],
            ),
        ];
        for (panel, (title, unit, lines)) in panels.iter().zip(panel_specs) {
            let y_max = lines
                .iter()
                .map(|(_, points, _)| top(points))
                .fold(1.0, f64::max);
            let mut chart = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..end, 0.0..y_max)?;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .y_desc(unit)
                .label_style(("sans-serif", 12))
                .draw()?;
            chart.draw_series(kills.iter().map(|kill| {
                Rectangle::new(
                    [(kill.from_secs, 0.0), (kill.until_secs, y_max)],
                    RED.mix(0.15).filled(),
                )
            }))?;
            chart.draw_series(kills.iter().map(|kill| {
                Text::new(
                    kill.victim.clone(),
                    (kill.from_secs, y_max * 0.95),
                    ("sans-serif", 11),
                )
            }))?;
            for (label, points, color) in lines {
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), color))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 12))
                .draw()?;
        }
        root.present()?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), SIZE.0, SIZE.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(())
}

/// One plotted line: its legend, its points, its colour.
type Line<'a> = (&'a str, &'a Vec<(f64, f64)>, plotters::style::RGBColor);

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
