//! The attacker suite: each test plays an attack a review found against the
//! real split system and prints its row of the table: what the attacker
//! did, what the attacker got, and what the honest clients got.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use tinyurl_harness::services::{http_send, metric, unissued_api_key};
use tinyurl_harness::system::System;

use tinyurl_harness::attacker::row;
use tinyurl_proto::v1::{CreateLinkRequest, ListLinksRequest};

/// A keep-alive HTTP/1.1 connection to `to` from `source`.
async fn connect_from(
    source: IpAddr,
    to: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(to).await?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Statuses counted by code.
#[derive(Default)]
struct Statuses(std::sync::Mutex<BTreeMap<u16, u64>>);

impl Statuses {
    fn count(&self, status: u16) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(status)
            .or_default() += 1;
    }

    fn summary(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(status, count)| format!("{status} ×{count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn total(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .sum()
    }
}

/// One honest REST call with `key`: a create (link `n`) or a list. Answers
/// the status.
async fn honest_call(rest: SocketAddr, key: &str, create: bool, n: usize) -> anyhow::Result<u16> {
    let bearer = format!("Bearer {key}");
    let response = if create {
        let body = format!(r#"{{"target_url":"https://example.com/honest/{n}"}}"#);
        http_send(
            rest,
            "POST",
            "/api/v1/links",
            &[
                ("Authorization", bearer.as_str()),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
        )
        .await?
    } else {
        http_send(
            rest,
            "GET",
            "/api/v1/links?page_size=5",
            &[("Authorization", bearer.as_str())],
            None,
        )
        .await?
    };
    Ok(response.status)
}

/// The sum of a counter over the writers.
async fn writers_metric(
    writers: &[(tinyurl_harness::ServiceProcess, SocketAddr)],
    name: &str,
) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for (writer, _) in writers {
        total += metric(writer.admin_addr(), name, &[]).await?;
    }
    Ok(total)
}

/// Made-up API keys sent from `sources` loopback addresses
/// (127.0.0.2 onwards), `per_source` keep-alive connections each, spread
/// over the REST listeners, `per_second` in all, until stopped.
struct KeyFlood {
    stop: Arc<AtomicBool>,
    statuses: Arc<Statuses>,
    errors: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KeyFlood {
    fn start(sources: u8, per_source: usize, per_second: u64, rests: &[SocketAddr]) -> Self {
        let flood = Self {
            stop: Arc::new(AtomicBool::new(false)),
            statuses: Arc::new(Statuses::default()),
            errors: Arc::new(AtomicU64::new(0)),
            tasks: Vec::new(),
        };
        let connections = usize::from(sources) * per_source;
        let interval = Duration::from_secs_f64(connections as f64 / per_second as f64);
        let mut tasks = Vec::new();
        for source in 0..sources {
            let address = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + source));
            for connection in 0..per_source {
                tasks.push(tokio::spawn(flood.connection(
                    address,
                    rests[connection % rests.len()],
                    interval,
                )));
            }
        }
        Self { tasks, ..flood }
    }

    /// One connection's loop: a request each `interval`, reconnecting when
    /// the server closes.
    fn connection(
        &self,
        address: IpAddr,
        rest: SocketAddr,
        interval: Duration,
    ) -> impl Future<Output = ()> + use<> {
        let (stop, statuses, errors) = (
            Arc::clone(&self.stop),
            Arc::clone(&self.statuses),
            Arc::clone(&self.errors),
        );
        async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut sender = None;
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                if sender
                    .as_ref()
                    .is_none_or(hyper::client::conn::http1::SendRequest::is_closed)
                {
                    match connect_from(address, rest).await {
                        Ok(connected) => sender = Some(connected),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
                let Some(connected) = sender.as_mut() else {
                    continue;
                };
                let request = http::Request::get("/api/v1/links")
                    .header("host", "sho.rt")
                    .header("authorization", format!("Bearer {}", unissued_api_key()))
                    .body(Full::new(Bytes::new()));
                let Ok(request) = request else { continue };
                if connected.ready().await.is_err() {
                    sender = None;
                    continue;
                }
                match connected.send_request(request).await {
                    Ok(response) => {
                        statuses.count(response.status().as_u16());
                        let _ = response.into_body().collect().await;
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        sender = None;
                    }
                }
            }
        }
    }

    async fn stop(self) -> anyhow::Result<(Arc<Statuses>, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await?;
        }
        Ok((self.statuses, self.errors.load(Ordering::Relaxed)))
    }
}

/// The honest clients: every key creates and lists, in turn, at each REST
/// listener, every 1.5 s for `lasting`; the keys not used yet start first.
/// Answers the statuses and a line per failed call.
async fn honest_clients(
    keys: &[String],
    rests: &[SocketAddr],
    lasting: Duration,
) -> anyhow::Result<(Statuses, Vec<String>)> {
    let started = Instant::now();
    let honest = Arc::new(Statuses::default());
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let (key, rests, honest, failures) = (
            key.clone(),
            rests.to_vec(),
            Arc::clone(&honest),
            Arc::clone(&failures),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            tokio::time::sleep(Duration::from_millis(40 * (index as u64 % 50))).await;
            while started.elapsed() < lasting {
                let rest = rests[n % rests.len()];
                let failure = match honest_call(rest, &key, n % 2 == 0, n).await {
                    Ok(status) => {
                        honest.count(status);
                        (!(200..300).contains(&status))
                            .then(|| format!("key {index}, call {n}: {status}"))
                    }
                    Err(error) => Some(format!("key {index}, call {n}: {error:#}")),
                };
                if let Some(failure) = failure {
                    failures
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(failure);
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(1_500)).await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let failures = failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let honest = Arc::try_unwrap(honest).map_err(|_| anyhow::anyhow!("a client still runs"))?;
    Ok((honest, failures))
}

/// A flood of made-up API keys cannot lock real keys out: 20 source
/// addresses (127.0.0.2–127.0.0.21) send 5,000 made-up keys a second for
/// 90 s at two writers while 50 real keys (half of them not yet used, so
/// not cached, when the flood starts; the others falling out of the cache
/// during it) create and list from another address. The real keys get no
/// failed request, and the writers' database key lookups stay within the
/// unknown-key budget: at most (20 a second + 1) × seconds per writer, plus
/// one per real key per writer per cache lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_keys_locks_no_real_key_out() -> anyhow::Result<()> {
    const SOURCES: u8 = 20;
    const CONNECTIONS_PER_SOURCE: usize = 4;
    const FLOOD_PER_SECOND: u64 = 5_000;
    const FLOOD: Duration = Duration::from_secs(90);
    const REAL_KEYS: usize = 50;
    const BUDGET_PER_SECOND: u64 = 20;

    let system = System::start(&[]).await?;
    let mut keys = Vec::new();
    for index in 0..REAL_KEYS {
        keys.push(system.setup.create_api_key(&format!("real-{index}"))?);
    }
    let mut writers = Vec::new();
    for _ in 0..2 {
        writers.push(system.setup.start_with_rest(&[]).await?);
    }
    let rests: Vec<SocketAddr> = writers.iter().map(|(_, rest)| *rest).collect();
    let lookups_before = writers_metric(&writers, "writer_key_lookups_total").await?;

    // Half the real keys are used (and cached) before the flood.
    for (index, key) in keys.iter().enumerate().take(REAL_KEYS / 2) {
        for rest in &rests {
            let status = honest_call(*rest, key, false, index).await?;
            anyhow::ensure!(status == 200, "warming key {index}: {status}");
        }
    }

    let started = Instant::now();
    let flood = KeyFlood::start(SOURCES, CONNECTIONS_PER_SOURCE, FLOOD_PER_SECOND, &rests);
    let (honest, failures) = honest_clients(&keys, &rests, FLOOD).await?;
    let (flood, flood_errors) = flood.stop().await?;
    let seconds = started.elapsed().as_secs_f64();

    let lookups =
        (writers_metric(&writers, "writer_key_lookups_total").await? - lookups_before) as u64;
    // Per writer: the budget's burst and rate, and each real key once per
    // cache lifetime (60 s) plus its first use.
    let bound = 2
        * ((BUDGET_PER_SECOND + 1) * seconds.ceil() as u64
            + REAL_KEYS as u64 * (2 + seconds as u64 / 60));
    row(
        "H1 made-up keys lock real keys out",
        &format!(
            "{SOURCES} addresses, {} made-up keys in {seconds:.0} s ({:.0}/s; {flood_errors} connection errors) at two writers",
            flood.total(),
            flood.total() as f64 / seconds,
        ),
        &flood.summary(),
        &format!(
            "{} calls of {REAL_KEYS} real keys: {}; {lookups} database key lookups (bound {bound})",
            honest.total(),
            honest.summary()
        ),
    );
    anyhow::ensure!(
        failures.is_empty(),
        "{} failed honest calls: {:?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    anyhow::ensure!(
        honest.total() >= REAL_KEYS as u64 * 40,
        "only {} honest calls were made",
        honest.total()
    );
    anyhow::ensure!(
        flood.total() >= FLOOD_PER_SECOND * FLOOD.as_secs() / 4,
        "the flood sent only {} made-up keys",
        flood.total()
    );
    anyhow::ensure!(
        lookups <= bound,
        "{lookups} database key lookups, more than {bound}"
    );
    Ok(())
}

/// Anonymous visitors cannot grow the click tables without bound: 100,000
/// redirects of one link through two redirect processes, each with a
/// referrer of its own, leave at most the bound of referrer rows per minute
/// (folded by the writer) and per day (rolled up by the same store code the
/// writer runs), every click counted, and `GetLinkStats` answering a top
/// list and one "other" (its latency printed, never asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_made_up_referrers_leave_bounded_rows() -> anyhow::Result<()> {
    use tinyurl_analytics::{DEFAULT_VALUES_PER_BUCKET, OTHER, minute_of, stats::TOP};
    use tinyurl_proto::v1::{GetLinkStatsRequest, StatsGranularity};
    const REQUESTS: usize = 100_000;
    const CONNECTIONS: usize = 16;
    const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const HONEST: u64 = 500;

    let system = System::start(&[]).await?;
    let fast = [("TINYURL_CLICKS_FLUSH_MS", "200")];
    let redirects = [
        system.start_redirect(&fast).await?,
        system.start_redirect(&fast).await?,
    ];
    let mut links = system.links()?;
    let code = links
        .create_link(system.authed(CreateLinkRequest {
            target_url: "https://example.com/popular".to_owned(),
            ..CreateLinkRequest::default()
        }))
        .await?
        .into_inner()
        .code;
    system.wait_replicated(&code).await?;

    let started = Instant::now();
    let statuses = Arc::new(Statuses::default());
    let mut tasks = Vec::new();
    for connection in 0..CONNECTIONS {
        let to = redirects[connection % redirects.len()].listen_addr();
        let (statuses, code) = (Arc::clone(&statuses), code.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), to).await?;
            let mut index = connection;
            // The honest visitors: one referrer, the first requests of the
            // first connection.
            let mut honest = if connection == 0 { HONEST } else { 0 };
            while index < REQUESTS || honest > 0 {
                let referrer = if honest > 0 {
                    honest -= 1;
                    "https://news.example.com/item".to_owned()
                } else {
                    let referrer = format!("https://r{index}.example/");
                    index += CONNECTIONS;
                    referrer
                };
                let request = http::Request::get(format!("/{code}"))
                    .header("host", "sho.rt")
                    .header("referer", referrer)
                    .header("user-agent", BROWSER)
                    .body(Full::new(Bytes::new()))?;
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                statuses.count(response.status().as_u16());
                response.into_body().collect().await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let sending = started.elapsed().as_secs_f64();
    let expected = REQUESTS as u64 + HONEST;
    anyhow::ensure!(
        statuses.total() == expected && statuses.summary() == format!("302 ×{expected}"),
        "redirects: {}",
        statuses.summary()
    );

    // Every click reaches the rollups.
    // Days over the default week, or hours over the last one: the two
    // tables an owner's stats read.
    let stats_request = |granularity: StatsGranularity| {
        let from = (granularity == StatsGranularity::Hour).then(|| {
            prost_types::Timestamp::from(std::time::SystemTime::now() - Duration::from_secs(3600))
        });
        system.authed(GetLinkStatsRequest {
            code: code.clone(),
            granularity: granularity.into(),
            from,
            ..GetLinkStatsRequest::default()
        })
    };
    tinyurl_harness::wait_until("every click folded", Duration::from_secs(120), || {
        let mut links = links.clone();
        let request = stats_request(StatsGranularity::Day);
        async move {
            let stats = links.get_link_stats(request).await?.into_inner();
            Ok(stats.lifetime_clicks >= expected)
        }
    })
    .await?;
    // What the redirects would roll up two minutes from now, now: the
    // store code the writer runs.
    let store = tinyurl_links::store::PostgresLinkStore::connect(
        &system.database.primary_url.clone().into(),
        2,
        Duration::from_secs(5),
    )?;
    let rollups = tinyurl_links::store::LinkStore::clicks(&store);
    while !rollups
        .roll_up_days(
            minute_of(std::time::SystemTime::now()) + 1,
            DEFAULT_VALUES_PER_BUCKET,
        )
        .await?
        .caught_up
    {}
    let db = tinyurl_harness::postgres::connect(&system.database.primary_url).await?;
    let widest = |table: &'static str, bucket: &'static str| {
        let (db, code) = (&db, code.clone());
        async move {
            let row = db
                .query_one(
                    &format!(
                        "SELECT coalesce(max(n), 0), coalesce(sum(n), 0)::int8 FROM (
                             SELECT count(*) AS n FROM {table}
                              WHERE code = $1 AND dimension = 1
                              GROUP BY {bucket}, class) groups"
                    ),
                    &[&code],
                )
                .await?;
            anyhow::Ok((row.try_get::<_, i64>(0)?, row.try_get::<_, i64>(1)?))
        }
    };
    let (minute_widest, minute_rows) = widest("click_minute_rows", "minute").await?;
    let (day_widest, day_rows) = widest("click_days", "day").await?;
    let bound = DEFAULT_VALUES_PER_BUCKET as i64 + 1;

    // The stats an owner reads: a short top list, every click in it.
    let mut latencies = Vec::new();
    let mut answer = None;
    for round in 0..200 {
        let granularity = if round % 2 == 0 {
            StatsGranularity::Day
        } else {
            StatsGranularity::Hour
        };
        let request = stats_request(granularity);
        let asked = Instant::now();
        let stats = links.get_link_stats(request).await?.into_inner();
        latencies.push(asked.elapsed());
        answer.get_or_insert(stats);
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    let p50 = latencies[latencies.len() / 2];
    let Some(stats) = answer else {
        anyhow::bail!("no stats answer");
    };
    let listed: u64 = stats.referrers.iter().map(|count| count.clicks).sum();
    let other = stats
        .referrers
        .iter()
        .find(|count| count.value == OTHER)
        .map_or(0, |count| count.clicks);
    let honest_row = stats
        .referrers
        .iter()
        .find(|count| count.value == "news.example.com")
        .map_or(0, |count| count.clicks);

    row(
        "M5 anonymous visitors grow the click tables",
        &format!(
            "{REQUESTS} redirects of one link, each with its own Referer, through two redirects ({:.0}/s)",
            REQUESTS as f64 / sending
        ),
        &format!(
            "referrer rows: at most {minute_widest} per minute ({minute_rows} in all), {day_widest} per day (bound {bound}); {} clicks as \"other\"",
            other
        ),
        &format!(
            "{HONEST} clicks from news.example.com listed as {honest_row}; all {expected} counted; stats p50 {:.1} ms, p99 {:.1} ms ({} referrer entries)",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            stats.referrers.len()
        ),
    );
    anyhow::ensure!(
        minute_widest <= bound && day_widest <= bound,
        "referrer rows: {minute_widest} in a minute, {day_widest} in a day; bound {bound}"
    );
    anyhow::ensure!(day_rows > 0, "the roll-up wrote no day rows");
    anyhow::ensure!(
        stats.referrers.len() <= TOP + 1 && listed == expected,
        "{} referrer entries summing to {listed}, {expected} clicks",
        stats.referrers.len()
    );
    anyhow::ensure!(
        stats.lifetime_clicks == expected,
        "lifetime clicks {}",
        stats.lifetime_clicks
    );
    Ok(())
}

/// Least privilege: each service's database role can do what the service
/// does and nothing else, so stolen credentials of one service are worth
/// little. The system runs as those roles (the harness starts every service
/// as its own, after migrating as the migrator): a link is created and
/// redirected; then, with each service's credentials, the statements an
/// attacker would try are refused by Postgres. A writer whose role may not
/// migrate refuses to start on a schema older than it needs, naming the
/// command to run, and its role cannot run that command.
#[tokio::test]
async fn each_services_database_role_can_do_its_work_and_nothing_else() -> anyhow::Result<()> {
    use tinyurl_harness::postgres::{as_role, roles};

    let mut system = System::start(&[]).await?;
    let redirect = system.start_redirect(&[]).await?;
    let code = system
        .links()?
        .create_link(system.authed(CreateLinkRequest {
            target_url: "https://example.com/honest".to_owned(),
            ..CreateLinkRequest::default()
        }))
        .await?
        .into_inner()
        .code;
    system.wait_replicated(&code).await?;
    let redirected = tinyurl_harness::services::http_request_with(
        redirect.listen_addr(),
        "GET",
        &format!("/{code}"),
        &[],
    )
    .await?;
    anyhow::ensure!(redirected.status == 302, "redirect: {}", redirected.status);

    // What each role may not do: (role, statement). Every one must fail
    // with insufficient_privilege (42501) or must-be-owner.
    let refused: &[(&str, &str)] = &[
        (roles::REDIRECT, "SELECT owner_key_id FROM links"),
        (roles::REDIRECT, "SELECT key_hash FROM api_keys"),
        (
            roles::REDIRECT,
            "UPDATE links SET target_url = 'https://evil.example/'",
        ),
        (
            roles::REDIRECT,
            "INSERT INTO links (code, owner_key_id, target_url, redirect_status, flags) VALUES ('evil01', 1, 'https://evil.example/', 302, 0)",
        ),
        (roles::REDIRECT, "SELECT next_id FROM idalloc_namespaces"),
        (roles::IDALLOC, "SELECT target_url FROM links"),
        (roles::IDALLOC, "SELECT key_hash FROM api_keys"),
        (roles::WRITER, "UPDATE idalloc_namespaces SET next_id = 0"),
        (roles::WRITER, "DROP TABLE links"),
        (roles::WRITER, "ALTER TABLE links ADD COLUMN backdoor text"),
        (roles::WRITER, "CREATE TABLE stash (data text)"),
        (roles::WRITER, "TRUNCATE click_totals"),
        (roles::WRITER, "CREATE ROLE intruder LOGIN SUPERUSER"),
    ];
    let mut outcomes: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let mut allowed = Vec::new();
    for (role, statement) in refused {
        let client =
            tinyurl_harness::postgres::connect(&as_role(&system.database.primary_url, role))
                .await?;
        let outcome = outcomes.entry(role).or_default();
        match client.batch_execute(statement).await {
            Ok(()) => allowed.push(format!("{role}: {statement}")),
            Err(error)
                if error.code()
                    == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                outcome.0 += 1;
            }
            Err(error) => {
                outcome.1 += 1;
                allowed.push(format!(
                    "{role}: {statement}: not a privilege error: {error}"
                ));
            }
        }
    }

    // A writer whose role may not migrate, on a database a migration
    // behind (here: none applied), refuses to start and says what to run;
    // its role cannot run it.
    let fresh = system.cluster.create_database().await?;
    let writer_url = as_role(&fresh.primary_url, roles::WRITER);
    let started = system
        .setup
        .start(&[
            ("TINYURL_DATABASE_URL", writer_url.as_str()),
            ("TINYURL_MIGRATE", "false"),
        ])
        .await;
    let refusal = match started {
        Ok(_) => anyhow::bail!("a writer started on a schema it may not migrate"),
        Err(error) => format!("{error:#}"),
    };
    let migrate_as_writer = std::process::Command::new(
        tinyurl_harness::ServiceBinary::locate("tinyurl-writer")?.path(),
    )
    .arg("migrate")
    .env_clear()
    .env("TINYURL_DATABASE_URL", &writer_url)
    .env("TINYURL_IDALLOC_URL", "http://127.0.0.1:9")
    .env(
        "TINYURL_IDALLOC_TOKEN",
        tinyurl_harness::services::TEST_IDALLOC_TOKEN,
    )
    .env(
        "TINYURL_CODE_SECRET",
        tinyurl_harness::services::TEST_CODE_SECRET,
    )
    .env("TINYURL_PUBLIC_BASE_URL", "https://sho.rt")
    .output()?;
    let migrate_error = String::from_utf8_lossy(&migrate_as_writer.stderr).into_owned();

    row(
        "L7 every service connects as the owner",
        &format!(
            "the database credentials of each service, trying {} statements outside its work",
            refused.len()
        ),
        &format!(
            "refused for want of privilege: {}",
            outcomes
                .iter()
                .map(|(role, (denied, other))| format!("{role} {denied} (other errors {other})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "created and redirected a link through services running as those roles",
    );
    row(
        "L7 every service connects as the owner",
        "the writer's role, a schema a migration behind",
        &format!(
            "writer start refused ({}); `migrate` as that role {}",
            if refusal.contains("tinyurl-writer migrate") {
                "names `tinyurl-writer migrate`"
            } else {
                "without naming the command"
            },
            if migrate_as_writer.status.success() {
                "succeeded"
            } else {
                "refused"
            }
        ),
        "the migrator migrates; every service then starts",
    );
    anyhow::ensure!(allowed.is_empty(), "not refused: {allowed:#?}");
    anyhow::ensure!(
        refusal.contains("tinyurl-writer migrate"),
        "the refusal does not say what to run: {refusal}"
    );
    anyhow::ensure!(
        !migrate_as_writer.status.success() && migrate_error.contains("permission denied"),
        "migrate as the writer's role: {migrate_error}"
    );
    Ok(())
}

/// A writer with its REST listener behind a trusted proxy (127.0.0.1) that
/// allows two failed authentications a second, and clients of both
/// transports.
struct BothTransports {
    links: tinyurl_proto::v1::links_client::LinksClient<tonic::transport::Channel>,
    rest: SocketAddr,
    bearer: String,
    _writer: tinyurl_harness::ServiceProcess,
    // Declared last: the writer stops before its databases.
    system: System,
}

impl BothTransports {
    async fn start() -> anyhow::Result<Self> {
        let system = System::start(&[]).await?;
        let (writer, rest) = system
            .setup
            .start_with_rest(&[
                ("TINYURL_TRUSTED_PROXIES", "127.0.0.1/32"),
                ("TINYURL_AUTH_FAILURE_RATE_PER_IP", "2/s"),
            ])
            .await?;
        let channel = tonic::transport::Channel::from_shared(writer.endpoint())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        Ok(Self {
            links: tinyurl_proto::v1::links_client::LinksClient::new(channel),
            rest,
            bearer: format!("Bearer {}", system.api_key),
            _writer: writer,
            system,
        })
    }
}

/// A REST problem as its status and field.
fn rest_field(response: &tinyurl_harness::services::HttpResponse) -> String {
    let problem: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    format!(
        "{} `{}`",
        response.status,
        problem["field"].as_str().unwrap_or_default()
    )
}

/// A gRPC error as its code and the field of its first violation.
fn grpc_field(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    let field = status
        .get_error_details()
        .bad_request()
        .and_then(|bad| bad.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default();
    format!("{:?} `{field}`", status.code())
}

/// L2: page tokens from past year 9999, up to the largest number.
async fn forged_page_tokens_are_bad_requests(both: &mut BothTransports) -> anyhow::Result<()> {
    let mut forged_answers = Vec::new();
    for micros in ["300000000000000000", "18446744073709551615"] {
        let token = format!("{micros}.abcdefg");
        let response = http_send(
            both.rest,
            "GET",
            &format!("/api/v1/links?page_token={token}"),
            &[("Authorization", both.bearer.as_str())],
            None,
        )
        .await?;
        let status = both
            .links
            .list_links(both.system.authed(ListLinksRequest {
                page_token: token.clone(),
                ..ListLinksRequest::default()
            }))
            .await
            .expect_err("a forged page token");
        forged_answers.push((rest_field(&response), grpc_field(&status)));
    }
    row(
        "L2 a forged page token with an out-of-range time answers 500",
        "list with page tokens of year 11476 and of the largest u64, over REST and gRPC",
        &forged_answers
            .iter()
            .map(|(rest, grpc)| format!("REST {rest}, gRPC {grpc}"))
            .collect::<Vec<_>>()
            .join("; "),
        "a token the server issued pages on (the REST and writer suites)",
    );
    anyhow::ensure!(
        forged_answers.iter().all(
            |(rest, grpc)| rest == "400 `page_token`" && grpc == "InvalidArgument `page_token`"
        ),
        "forged page tokens: {forged_answers:?}"
    );
    Ok(())
}

/// L4: an alias equal to a REST route segment.
async fn an_alias_equal_to_a_route_segment_is_refused(
    both: &mut BothTransports,
) -> anyhow::Result<()> {
    let body = br#"{"target_url":"https://example.com/batch","alias":"batch"}"#;
    let response = http_send(
        both.rest,
        "POST",
        "/api/v1/links",
        &[
            ("Authorization", both.bearer.as_str()),
            ("Content-Type", "application/json"),
        ],
        Some(body),
    )
    .await?;
    let alias_rest = rest_field(&response);
    let status = both
        .links
        .create_link(both.system.authed(CreateLinkRequest {
            target_url: "https://example.com/batch".to_owned(),
            alias: "batch".to_owned(),
            ..CreateLinkRequest::default()
        }))
        .await
        .expect_err("the alias batch");
    let alias_grpc = grpc_field(&status);
    row(
        "L4 an alias equal to a REST route segment is accepted and unreachable",
        "create with the alias `batch` over REST and gRPC",
        &format!("REST {alias_rest}, gRPC {alias_grpc}"),
        "other aliases are created as before",
    );
    anyhow::ensure!(
        alias_rest == "400 `alias`" && alias_grpc == "InvalidArgument `alias`",
        "the alias batch: REST {alias_rest}, gRPC {alias_grpc}"
    );
    Ok(())
}

/// L8: IPv6 clients behind the trusted proxy share their /64's allowance.
async fn ipv6_clients_are_limited_per_64(both: &BothTransports) -> anyhow::Result<()> {
    let rest = both.rest;
    let failures_until_429 = |forwarded: String| async move {
        for attempt in 1..=20 {
            let key = format!("Bearer {}", unissued_api_key());
            let response = http_send(
                rest,
                "GET",
                "/api/v1/links",
                &[
                    ("Authorization", key.as_str()),
                    ("X-Forwarded-For", forwarded.as_str()),
                ],
                None,
            )
            .await?;
            if response.status == 429 {
                return anyhow::Ok(Some(attempt));
            }
            anyhow::ensure!(response.status == 401, "{}", response.status);
        }
        Ok(None)
    };
    // One address per request, all in 2001:db8:1:2::/64.
    let mut limited_at = None;
    for host in 1..=20u16 {
        let forwarded = format!("2001:db8:1:2::{host:x}");
        if failures_until_429(forwarded).await? == Some(1) {
            limited_at = Some(host);
            break;
        }
    }
    let neighbour = http_send(
        rest,
        "GET",
        "/api/v1/links",
        &[
            ("Authorization", both.bearer.as_str()),
            ("X-Forwarded-For", "2001:db8:1:3::1"),
        ],
        None,
    )
    .await?;
    row(
        "L8 IPv6 clients are limited per /128",
        "made-up keys from a new IPv6 address of one /64 each time, behind the trusted proxy (2 failures a second allowed)",
        &match limited_at {
            Some(host) => {
                format!("429 at the first request of address {host}: the /64 is one client")
            }
            None => "never limited".to_owned(),
        },
        &format!(
            "the next /64's client with a real key: {}",
            neighbour.status
        ),
    );
    anyhow::ensure!(
        limited_at.is_some_and(|host| host <= 4),
        "addresses of one /64 were limited apart: {limited_at:?}"
    );
    anyhow::ensure!(neighbour.status == 200, "{}", neighbour.status);
    Ok(())
}

/// The low findings a transport can reach, over REST and gRPC alike: a
/// forged page token past any stored time, an alias equal to a REST route
/// segment, and IPv6 clients (behind the trusted proxy) each limited per
/// /128 instead of per /64.
#[tokio::test]
async fn low_findings_stay_closed_over_both_transports() -> anyhow::Result<()> {
    let mut both = BothTransports::start().await?;
    forged_page_tokens_are_bad_requests(&mut both).await?;
    an_alias_equal_to_a_route_segment_is_refused(&mut both).await?;
    ipv6_clients_are_limited_per_64(&both).await
}
