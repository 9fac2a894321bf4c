//! Click analytics against the real split system: redirect processes count
//! clicks and append batches to the Redis stream, writer processes fold them
//! as one consumer group into Postgres rollups, `GetLinkStats` reads them.
//! Exact counts through a consumer's SIGKILL and a Redis restart, every
//! dimension in its bucket, freshness, and bad input.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;

use tinyurl_harness::process::ScratchDir;
use tinyurl_harness::redis::{Reply, command};
use tinyurl_harness::services::{http_request_with, metric};
use tinyurl_harness::system::System;
use tinyurl_harness::{RedisServer, ServiceProcess, wait_until};
use tinyurl_proto::v1::{CreateLinkRequest, GetLinkStatsRequest, LinkStats, StatsGranularity};
use tonic_types::StatusExt as _;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const CURL: &str = "curl/8.5.0";

/// Flushes every 200 ms; dead consumers' batches are claimed after 1.5 s.
const FAST_CLICKS: &[(&str, &str)] = &[("TINYURL_CLICKS_FLUSH_MS", "200")];
const FAST_CLAIM: &[(&str, &str)] = &[("TINYURL_CLICKS_CLAIM_IDLE_MS", "1500")];

async fn create(system: &System, target: &str) -> anyhow::Result<String> {
    let link = system
        .links()?
        .create_link(system.authed(CreateLinkRequest {
            target_url: target.to_owned(),
            ..CreateLinkRequest::default()
        }))
        .await?
        .into_inner();
    Ok(link.code)
}

async fn stats(system: &System, code: &str) -> anyhow::Result<LinkStats> {
    Ok(system
        .links()?
        .get_link_stats(system.authed(GetLinkStatsRequest {
            code: code.to_owned(),
            granularity: StatsGranularity::Day.into(),
            ..GetLinkStatsRequest::default()
        }))
        .await?
        .into_inner())
}

/// One redirect with request headers; it must redirect.
async fn click(
    redirect: &ServiceProcess,
    code: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<()> {
    let response =
        http_request_with(redirect.listen_addr(), "GET", &format!("/{code}"), headers).await?;
    anyhow::ensure!(response.status == 302, "GET /{code}: {}", response.status);
    Ok(())
}

fn counts(list: &[tinyurl_proto::v1::StatsCount]) -> HashMap<String, u64> {
    list.iter()
        .map(|count| (count.value.clone(), count.clicks))
        .collect()
}

/// Batches read but unacknowledged for over a second: a live consumer
/// acknowledges within milliseconds, so these are a frozen one's.
async fn stuck_batches(port: u16) -> anyhow::Result<usize> {
    let reply = command(
        port,
        &[
            "XPENDING",
            "tinyurl:clicks",
            "tinyurl-analytics",
            "IDLE",
            "1000",
            "-",
            "+",
            "10",
        ],
    )
    .await?;
    Ok(match reply {
        Reply::Array(entries) => entries.len(),
        _ => 0,
    })
}

/// The host name of the writer whose consumer is frozen and killed; its
/// consumer's name starts with it.
const FROZEN_HOST: &str = "frozen-writer";

/// The name of the consumer whose name starts with `host` (a writer's
/// consumer joins the group at its first read).
async fn consumer_named(port: u16, host: &str) -> anyhow::Result<String> {
    let reply = command(
        port,
        &["XINFO", "CONSUMERS", "tinyurl:clicks", "tinyurl-analytics"],
    )
    .await?;
    reply
        .strings()
        .into_iter()
        .find(|name| name.starts_with(&format!("{host}-")))
        .with_context(|| format!("no consumer of {host} in {reply:?}"))
}

/// Reads new batches as `consumer` and leaves them unacknowledged; returns
/// how many it got.
async fn read_as(port: u16, consumer: &str) -> anyhow::Result<usize> {
    let reply = command(
        port,
        &[
            "XREADGROUP",
            "GROUP",
            "tinyurl-analytics",
            consumer,
            "COUNT",
            "5",
            "STREAMS",
            "tinyurl:clicks",
            ">",
        ],
    )
    .await?;
    // [[stream, [entry, …]]], or nil when there is nothing new.
    Ok(match reply {
        Reply::Array(streams) => match streams.into_iter().next() {
            Some(Reply::Array(stream)) => match stream.into_iter().nth(1) {
                Some(Reply::Array(entries)) => entries.len(),
                _ => 0,
            },
            _ => 0,
        },
        _ => 0,
    })
}

/// The kinds of request the load sends, by index: referrer, User-Agent.
const MIX: [(Option<&str>, &str); 5] = [
    (Some("https://news.example.com/item?id=1"), CHROME),
    (Some("https://www.Blog.example.org:8443/post"), IPHONE),
    (None, CHROME),
    (None, GOOGLEBOT),
    (Some("https://news.example.com/other"), CURL),
];

/// Eight workers sending `PER_WORKER` redirects each, spread over the codes,
/// the request kinds and both redirect processes, counting what they sent
/// per (code, kind).
struct Load {
    codes: Arc<Vec<String>>,
    sent: Arc<Vec<AtomicU64>>,
    done: Arc<AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Load {
    const WORKERS: usize = 8;
    const PER_WORKER: usize = 2_500;
    const TOTAL: u64 = (Self::WORKERS * Self::PER_WORKER) as u64;

    fn start(redirects: &Arc<[ServiceProcess; 2]>, codes: Vec<String>) -> Self {
        let codes = Arc::new(codes);
        let done = Arc::new(AtomicU64::new(0));
        let sent: Arc<Vec<AtomicU64>> = Arc::new(
            (0..codes.len() * MIX.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
        );
        let workers = (0..Self::WORKERS)
            .map(|worker| {
                let (redirects, codes, sent, done) = (
                    Arc::clone(redirects),
                    Arc::clone(&codes),
                    Arc::clone(&sent),
                    Arc::clone(&done),
                );
                tokio::spawn(async move {
                    for index in 0..Self::PER_WORKER {
                        let which = worker * Self::PER_WORKER + index;
                        let code_index = which % codes.len();
                        let kind = (which / codes.len()) % MIX.len();
                        let (referrer, agent) = MIX[kind];
                        let mut headers = vec![("User-Agent", agent)];
                        if let Some(referrer) = referrer {
                            headers.push(("Referer", referrer));
                        }
                        click(&redirects[which % 2], &codes[code_index], &headers).await?;
                        sent[code_index * MIX.len() + kind].fetch_add(1, Ordering::Relaxed);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        Self {
            codes,
            sent,
            done,
            workers,
        }
    }

    /// Waits until `fraction` of the load is sent.
    async fn sent_fraction(&self, what: &str, fraction: f64) -> anyhow::Result<()> {
        wait_until(what, Duration::from_secs(120), || {
            let done = Arc::clone(&self.done);
            async move { Ok(done.load(Ordering::Relaxed) as f64 >= Self::TOTAL as f64 * fraction) }
        })
        .await
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        for worker in self.workers.drain(..) {
            worker.await??;
        }
        Ok(())
    }

    fn sent(&self, code_index: usize, kind: usize) -> u64 {
        self.sent[code_index * MIX.len() + kind].load(Ordering::Relaxed)
    }
}

/// Both writers are frozen (SIGSTOP), so nothing folds; batches are then
/// read from the stream in the second consumer's name, exactly as Redis
/// hands them to a consumer that reads and never acknowledges; then the
/// second writer is SIGKILLed. Those batches must be claimed by the other.
/// (Freezing only the second writer and waiting for Redis to hand it
/// batches depended on where it was frozen: frozen between reads, it never
/// got any.)
async fn kill_a_consumer_that_holds_batches(
    system: &mut System,
    mut second_writer: ServiceProcess,
) -> anyhow::Result<()> {
    system.writer.freeze()?;
    second_writer.freeze()?;
    let port = system.redis.port();
    let frozen = consumer_named(port, FROZEN_HOST).await?;
    wait_until(
        "a batch handed to the frozen consumer",
        Duration::from_secs(30),
        || {
            let frozen = frozen.clone();
            async move { Ok(read_as(port, &frozen).await? > 0) }
        },
    )
    .await?;
    wait_until(
        "the frozen consumer's batches to be idle",
        Duration::from_secs(30),
        || async move { Ok(stuck_batches(port).await? > 0) },
    )
    .await?;
    second_writer.kill()?;
    system.writer.thaw()?;
    Ok(())
}

/// Waits until every click sent is folded or counted as dropped; answers
/// the clicks dropped.
async fn every_click_folded_or_dropped(
    system: &System,
    redirects: &[ServiceProcess],
    codes: &[String],
) -> anyhow::Result<f64> {
    let mut dropped = 0.0;
    for redirect in redirects {
        dropped += metric(redirect.admin_addr(), "redirect_clicks_dropped_total", &[]).await?;
    }
    let expected = Load::TOTAL - dropped as u64;
    wait_until(
        "every click to be folded",
        Duration::from_secs(120),
        || async move {
            let mut folded = 0;
            for code in codes {
                let stats = stats(system, code).await?;
                folded += stats.lifetime_clicks + stats.lifetime_bot_clicks;
            }
            anyhow::ensure!(
                folded <= expected,
                "{folded} clicks folded, more than the {expected} sent"
            );
            Ok(folded == expected)
        },
    )
    .await?;
    Ok(dropped)
}

/// A link's stats count exactly what was sent to it, per dimension.
fn assert_exact(code: &str, stats: &LinkStats, sent_of: impl Fn(usize) -> u64) {
    let humans = sent_of(0) + sent_of(1) + sent_of(2);
    let bots = sent_of(3) + sent_of(4);
    assert_eq!(
        (stats.lifetime_clicks, stats.lifetime_bot_clicks),
        (humans, bots),
        "{code}"
    );
    assert_eq!(
        (stats.clicks, stats.bot_clicks),
        (humans, bots),
        "{code}: the range"
    );
    let series: u64 = stats.series.iter().map(|point| point.clicks).sum();
    assert_eq!(series, humans, "{code}: the series");
    assert_eq!(
        counts(&stats.referrers),
        HashMap::from([
            ("news.example.com".to_owned(), sent_of(0)),
            ("blog.example.org".to_owned(), sent_of(1)),
            ("-".to_owned(), sent_of(2)),
        ]),
        "{code}: referrers of human clicks"
    );
    assert_eq!(
        counts(&stats.browsers),
        HashMap::from([
            ("chrome".to_owned(), sent_of(0) + sent_of(2)),
            ("safari".to_owned(), sent_of(1))
        ]),
    );
    assert_eq!(
        counts(&stats.devices),
        HashMap::from([
            ("desktop".to_owned(), sent_of(0) + sent_of(2)),
            ("mobile".to_owned(), sent_of(1))
        ]),
    );
    assert_eq!(
        counts(&stats.bots),
        HashMap::from([
            ("googlebot".to_owned(), sent_of(3)),
            ("curl".to_owned(), sent_of(4))
        ]),
    );
    assert_eq!(
        counts(&stats.countries),
        HashMap::from([("unknown".to_owned(), humans)])
    );
}

/// No batch id was folded twice: one row per batch the redirects sent (all
/// sent by now: every click is folded); and the killed consumer's batches
/// were claimed. Answers (batches sent, redelivered, found folded before).
async fn each_batch_folded_once(
    system: &System,
    redirects: &[ServiceProcess],
) -> anyhow::Result<(f64, f64, f64)> {
    let mut batches_sent = 0.0;
    for redirect in redirects {
        batches_sent += metric(
            redirect.admin_addr(),
            "redirect_click_batches_sent_total",
            &[],
        )
        .await?;
    }
    let db = tinyurl_harness::postgres::connect(&system.database.primary_url).await?;
    let folded_batches: i64 = db
        .query_one("SELECT count(*) FROM click_batches", &[])
        .await?
        .get(0);
    assert_eq!(
        folded_batches as f64, batches_sent,
        "one folded id per batch sent"
    );
    let writer = system.writer.admin_addr();
    let redelivered = metric(writer, "writer_click_batches_redelivered_total", &[]).await?;
    let duplicates = metric(writer, "writer_click_batches_duplicate_total", &[]).await?;
    assert!(
        redelivered >= 1.0,
        "the killed consumer's batches were claimed"
    );
    Ok((batches_sent, redelivered, duplicates))
}

#[tokio::test]
async fn counts_every_click_exactly_through_a_consumer_kill_and_a_redis_restart()
-> anyhow::Result<()> {
    let mut system = System::start_on(RedisServer::start_persistent().await?, FAST_CLAIM).await?;
    let second_writer = system
        .setup
        .start(&[FAST_CLAIM[0], ("HOSTNAME", FROZEN_HOST)])
        .await?;
    let redirects = Arc::new([
        system.start_redirect(FAST_CLICKS).await?,
        system.start_redirect(FAST_CLICKS).await?,
    ]);
    let mut codes = Vec::new();
    for index in 0..3 {
        codes.push(create(&system, &format!("https://example.com/exact/{index}")).await?);
    }
    let mut load = Load::start(&redirects, codes);

    load.sent_fraction("a third of the redirects", 1.0 / 3.0)
        .await?;
    kill_a_consumer_that_holds_batches(&mut system, second_writer).await?;
    // Two thirds in: stop Redis for a second and start it again (its append
    // file keeps the stream); redirects keep unsent batches meanwhile.
    load.sent_fraction("two thirds of the redirects", 2.0 / 3.0)
        .await?;
    system.redis.stop()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    system.redis.start_again().await?;
    load.finish().await?;

    let dropped = every_click_folded_or_dropped(&system, &redirects[..], &load.codes).await?;
    // The drops, if any, were while Redis was down with a full backlog; the
    // backlog here is far larger than the load, so none is expected.
    assert_eq!(dropped, 0.0, "no click dropped");
    for (code_index, code) in load.codes.iter().enumerate() {
        assert_exact(code, &stats(&system, code).await?, |kind| {
            load.sent(code_index, kind)
        });
    }
    let (batches_sent, redelivered, duplicates) =
        each_batch_folded_once(&system, &redirects[..]).await?;
    println!(
        "{} redirects, {batches_sent} batches, {redelivered} redelivered to the surviving consumer, {duplicates} found folded before",
        Load::TOTAL
    );
    Ok(())
}

#[tokio::test]
async fn puts_each_request_in_its_dimensions() -> anyhow::Result<()> {
    let scratch = ScratchDir::new("geoip", None)?;
    let database = scratch.path().join("countries.mmdb");
    tinyurl_harness::geoip::write_country_db(
        &database,
        &[
            (Ipv4Addr::new(203, 0, 113, 0), 24, "DE"),
            (Ipv4Addr::new(198, 51, 100, 0), 24, "US"),
        ],
    )?;
    let database = database.to_string_lossy().into_owned();
    let system = System::start(&[]).await?;
    let geo = [("TINYURL_GEOIP_DB", database.as_str()), FAST_CLICKS[0]];
    // The tests' requests come from 127.0.0.1: trusted by one redirect
    // process, not by the other.
    let mut trusting_env = geo.to_vec();
    trusting_env.push(("TINYURL_TRUSTED_PROXIES", "127.0.0.0/8"));
    let trusting = system.start_redirect(&trusting_env).await?;
    let untrusting = system.start_redirect(&geo).await?;

    // (redirect, referrer, User-Agent, X-Forwarded-For, link): each request
    // gets a link of its own, so its buckets can be read alone.
    type Case = (
        &'static str,
        Option<&'static str>,
        &'static str,
        Option<&'static str>,
        &'static [(&'static str, &'static str)],
    );
    let cases: Vec<Case> = vec![
        (
            "trusting",
            Some("https://WWW.Example.COM:8443/a/b?c#d"),
            CHROME,
            None,
            &[
                ("referrer", "example.com"),
                ("browser", "chrome"),
                ("device", "desktop"),
                ("country", "unknown"),
                ("class", "human"),
            ],
        ),
        (
            "trusting",
            Some("http://news.example.com/"),
            IPHONE,
            None,
            &[
                ("referrer", "news.example.com"),
                ("browser", "safari"),
                ("device", "mobile"),
            ],
        ),
        ("trusting", None, CHROME, None, &[("referrer", "-")]),
        (
            "trusting",
            Some("android-app://com.example.app/"),
            CHROME,
            None,
            &[("referrer", "-")],
        ),
        (
            "trusting",
            None,
            GOOGLEBOT,
            None,
            &[("bot", "googlebot"), ("class", "crawler")],
        ),
        ("trusting", None, CURL, None, &[("bot", "curl")]),
        (
            "trusting",
            Some("https://app.slack.com/"),
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            None,
            &[("bot", "slack"), ("class", "previewer")],
        ),
        (
            "trusting",
            None,
            "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
            None,
            &[("bot", "uptimerobot"), ("class", "monitor")],
        ),
        (
            "trusting",
            None,
            CHROME,
            Some("203.0.113.7"),
            &[("country", "DE")],
        ),
        (
            "trusting",
            None,
            CHROME,
            Some("1.2.3.4, 198.51.100.9"),
            &[("country", "US")],
        ),
        (
            "untrusting",
            None,
            CHROME,
            Some("203.0.113.7"),
            &[("country", "unknown")],
        ),
    ];
    let mut expected = Vec::new();
    for (index, (which, referrer, agent, forwarded, buckets)) in cases.iter().enumerate() {
        let code = create(&system, &format!("https://example.com/dimension/{index}")).await?;
        let redirect = if *which == "trusting" {
            &trusting
        } else {
            &untrusting
        };
        let mut headers = vec![("User-Agent", *agent)];
        if let Some(referrer) = referrer {
            headers.push(("Referer", *referrer));
        }
        if let Some(forwarded) = forwarded {
            headers.push(("X-Forwarded-For", *forwarded));
        }
        click(redirect, &code, &headers).await?;
        expected.push((code, *buckets));
    }
    for (code, buckets) in expected {
        let system = &system;
        wait_until("the click to be folded", Duration::from_secs(30), || {
            let code = code.clone();
            async move {
                let stats = stats(system, &code).await?;
                Ok(stats.lifetime_clicks + stats.lifetime_bot_clicks == 1)
            }
        })
        .await?;
        let stats = stats(system, &code).await?;
        for (dimension, value) in buckets {
            let list = match *dimension {
                "referrer" => &stats.referrers,
                "browser" => &stats.browsers,
                "device" => &stats.devices,
                "country" => &stats.countries,
                "class" => &stats.classes,
                _ => &stats.bots,
            };
            assert_eq!(
                counts(list),
                HashMap::from([((*value).to_owned(), 1)]),
                "{code}: {dimension} should be {value}: {stats:?}"
            );
        }
    }
    Ok(())
}

/// Statistics read for one traffic class: people, link previewers,
/// crawlers and monitors on one link; each class alone over gRPC, REST and
/// the console has every figure and breakdown of its own clicks, `bot`
/// every kind of bot, and the default view stays people's breakdowns with
/// bots apart.
#[tokio::test]
async fn stats_are_read_for_one_class_at_a_time() -> anyhow::Result<()> {
    const SLACK: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";
    const UPTIME: &str = "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)";
    let system = System::start(&[]).await?;
    let redirect = system.start_redirect(FAST_CLICKS).await?;
    let (_rest_writer, rest) = system.setup.start_with_rest(&[]).await?;
    let code = create(&system, "https://example.com/classes").await?;
    let people = [("User-Agent", CHROME), ("Referer", "https://news.example/")];
    let slack = [("User-Agent", SLACK), ("Referer", "https://app.slack.com/")];
    for _ in 0..3 {
        click(&redirect, &code, &people).await?;
    }
    for _ in 0..2 {
        click(&redirect, &code, &slack).await?;
    }
    click(&redirect, &code, &[("User-Agent", GOOGLEBOT)]).await?;
    click(&redirect, &code, &[("User-Agent", UPTIME)]).await?;
    let system_ref = &system;
    wait_until("the clicks", Duration::from_secs(30), || {
        let code = code.clone();
        async move {
            let stats = stats(system_ref, &code).await?;
            Ok(stats.lifetime_clicks + stats.lifetime_bot_clicks == 7)
        }
    })
    .await?;
    let read = |classes: &[&str]| {
        let request = system.authed(GetLinkStatsRequest {
            code: code.clone(),
            granularity: StatsGranularity::Day.into(),
            classes: classes.iter().map(|name| (*name).to_owned()).collect(),
            ..GetLinkStatsRequest::default()
        });
        async move {
            let mut links = system_ref
                .links()
                .map_err(|error| tonic::Status::internal(error.to_string()))?;
            links
                .get_link_stats(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let one = |pairs: &[(&str, u64)]| -> HashMap<String, u64> {
        pairs
            .iter()
            .map(|(value, clicks)| ((*value).to_owned(), *clicks))
            .collect()
    };
    let series = |stats: &LinkStats| -> (u64, u64) {
        stats.series.iter().fold((0, 0), |(humans, bots), point| {
            (humans + point.clicks, bots + point.bot_clicks)
        })
    };

    let everyone = read(&[]).await?;
    anyhow::ensure!(
        (everyone.clicks, everyone.bot_clicks) == (3, 4),
        "{everyone:?}"
    );
    anyhow::ensure!(
        counts(&everyone.referrers) == one(&[("news.example", 3)]),
        "the default view's breakdowns are people's: {everyone:?}"
    );
    anyhow::ensure!(
        counts(&everyone.classes)
            == one(&[
                ("human", 3),
                ("previewer", 2),
                ("crawler", 1),
                ("monitor", 1)
            ]),
        "{everyone:?}"
    );

    let previewers = read(&["previewer"]).await?;
    anyhow::ensure!(
        (previewers.clicks, previewers.bot_clicks) == (0, 2) && series(&previewers) == (0, 2),
        "{previewers:?}"
    );
    anyhow::ensure!(
        counts(&previewers.referrers) == one(&[("app.slack.com", 2)])
            && counts(&previewers.browsers) == one(&[("slack", 2)])
            && counts(&previewers.bots) == one(&[("slack", 2)])
            && counts(&previewers.classes) == one(&[("previewer", 2)]),
        "previewers alone, every breakdown theirs: {previewers:?}"
    );
    anyhow::ensure!(
        previewers.visitors == 0,
        "unique visitors are people: {previewers:?}"
    );

    let people_only = read(&["human"]).await?;
    anyhow::ensure!(
        (people_only.clicks, people_only.bot_clicks) == (3, 0)
            && counts(&people_only.referrers) == one(&[("news.example", 3)])
            && people_only.bots.is_empty()
            && people_only.visitors == 1,
        "{people_only:?}"
    );
    let bots = read(&["bot"]).await?;
    anyhow::ensure!(
        (bots.clicks, bots.bot_clicks) == (0, 4)
            && counts(&bots.referrers) == one(&[("app.slack.com", 2), ("-", 2)]),
        "{bots:?}"
    );
    let two = read(&["monitor,crawler"]).await?;
    anyhow::ensure!(
        two.bot_clicks == 2 && counts(&two.bots) == one(&[("googlebot", 1), ("uptimerobot", 1)]),
        "{two:?}"
    );
    let refused = read(&["robots"]).await;
    anyhow::ensure!(
        refused.as_ref().is_err_and(|error| {
            error.code() == tonic::Code::InvalidArgument
                && error.get_details_bad_request().is_some_and(|details| {
                    details
                        .field_violations
                        .iter()
                        .any(|violation| violation.field == "classes")
                })
        }),
        "an unknown class is refused: {refused:?}"
    );

    // REST: the same filter as a comma-separated query parameter.
    let bearer = format!("Bearer {}", system.api_key);
    let rest_get = |path: String| {
        let bearer = bearer.clone();
        async move {
            tinyurl_harness::services::http_send(
                rest,
                "GET",
                &path,
                &[("Authorization", bearer.as_str())],
                None,
            )
            .await
        }
    };
    let answer = rest_get(format!(
        "/api/v1/links/{code}/stats?granularity=day&classes=previewer,monitor"
    ))
    .await?;
    anyhow::ensure!(answer.status == 200, "{}", answer.text());
    let body: serde_json::Value = serde_json::from_slice(&answer.body)?;
    anyhow::ensure!(
        body["clicks"] == 0 && body["bot_clicks"] == 3,
        "REST previewers and monitors: {body}"
    );
    let refused = rest_get(format!("/api/v1/links/{code}/stats?classes=robots")).await?;
    anyhow::ensure!(refused.status == 400, "{}", refused.text());

    // The console: signed in, the link's page for previewers alone.
    let signed = tinyurl_harness::services::http_send(
        rest,
        "POST",
        "/console/sign-in",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        Some(format!("key={}", system.api_key).as_bytes()),
    )
    .await?;
    let cookie = signed
        .header("set-cookie")
        .and_then(|set| set.split(';').next())
        .context("a session cookie")?
        .to_owned();
    let page = tinyurl_harness::services::http_send(
        rest,
        "GET",
        &format!("/console/links/{code}?range=24h&class=previewer"),
        &[("Cookie", cookie.as_str())],
        None,
    )
    .await?;
    let text = page.text();
    anyhow::ensure!(page.status == 200, "{}: {text}", page.status);
    anyhow::ensure!(
        text.contains("Every figure here counts link previewers only.")
            && text.contains("app.slack.com")
            && !text.contains("news.example"),
        "the console's previewers: {text}"
    );
    let page = tinyurl_harness::services::http_send(
        rest,
        "GET",
        &format!("/console/links/{code}"),
        &[("Cookie", cookie.as_str())],
        None,
    )
    .await?;
    let text = page.text();
    anyhow::ensure!(
        text.contains("count human clicks") && text.contains("news.example"),
        "the console's default view: {text}"
    );
    Ok(())
}

#[tokio::test]
async fn visitors_who_ask_not_to_be_tracked_count_in_the_totals_only() -> anyhow::Result<()> {
    let system = System::start(&[]).await?;
    let honouring = system.start_redirect(FAST_CLICKS).await?;
    let mut ignoring_env = FAST_CLICKS.to_vec();
    ignoring_env.extend([
        ("TINYURL_CLICKS_HONOR_DNT", "false"),
        ("TINYURL_CLICKS_DIMENSIONS", "browser"),
    ]);
    let ignoring = system.start_redirect(&ignoring_env).await?;
    let referred = [
        ("User-Agent", CHROME),
        ("Referer", "https://news.example/a"),
    ];
    let asking = |name| [referred[0], referred[1], (name, "1")];

    let code = create(&system, "https://example.com/private").await?;
    click(&honouring, &code, &asking("DNT")).await?;
    click(&honouring, &code, &asking("Sec-GPC")).await?;
    click(
        &honouring,
        &code,
        &[("User-Agent", GOOGLEBOT), ("DNT", "1")],
    )
    .await?;
    click(&honouring, &code, &referred).await?;
    click(&honouring, &code, &[referred[0], referred[1], ("DNT", "0")]).await?;
    let system_ref = &system;
    let folded = |code: String, total: u64| async move {
        wait_until("the clicks to be folded", Duration::from_secs(30), || {
            let code = code.clone();
            async move {
                let stats = stats(system_ref, &code).await?;
                Ok(stats.lifetime_clicks + stats.lifetime_bot_clicks == total)
            }
        })
        .await
    };
    folded(code.clone(), 5).await?;
    let seen = stats(&system, &code).await?;
    anyhow::ensure!(
        (seen.lifetime_clicks, seen.lifetime_bot_clicks) == (4, 1),
        "every visit in the totals: {seen:?}"
    );
    let one = |value: &str, clicks| HashMap::from([(value.to_owned(), clicks)]);
    anyhow::ensure!(
        counts(&seen.referrers) == one("news.example", 2),
        "{seen:?}"
    );
    anyhow::ensure!(counts(&seen.browsers) == one("chrome", 2), "{seen:?}");
    anyhow::ensure!(counts(&seen.devices) == one("desktop", 2), "{seen:?}");
    anyhow::ensure!(counts(&seen.countries) == one("unknown", 2), "{seen:?}");
    anyhow::ensure!(seen.bots.is_empty(), "the bot asked too: {seen:?}");

    // An operator who does not honour the headers and counts browsers only.
    let code = create(&system, "https://example.com/browsers-only").await?;
    click(&ignoring, &code, &asking("DNT")).await?;
    click(&ignoring, &code, &referred).await?;
    folded(code.clone(), 2).await?;
    let seen = stats(&system, &code).await?;
    anyhow::ensure!(counts(&seen.browsers) == one("chrome", 2), "{seen:?}");
    anyhow::ensure!(
        seen.referrers.is_empty() && seen.devices.is_empty() && seen.countries.is_empty(),
        "dimensions turned off: {seen:?}"
    );
    Ok(())
}

/// A link on a registered domain is counted under its key (`host/code`), in
/// the same batches as the default domain's links: neither is lost.
#[tokio::test]
async fn clicks_on_a_registered_domain_are_counted() -> anyhow::Result<()> {
    let system = System::start(&[]).await?;
    let redirect = system.start_redirect(FAST_CLICKS).await?;
    let mut links = system.links()?;
    links
        .add_domain(system.authed(tinyurl_proto::v1::AddDomainRequest {
            host: "go.example".to_owned(),
            not_found_url: String::new(),
        }))
        .await?;
    let on = |domain: &str| CreateLinkRequest {
        target_url: format!("https://example.com/on/{domain}"),
        alias: "sale".to_owned(),
        domain: domain.to_owned(),
        ..CreateLinkRequest::default()
    };
    links.create_link(system.authed(on("go.example"))).await?;
    links.create_link(system.authed(on(""))).await?;
    let visit = |method: &'static str, host: &'static str| {
        let redirect = &redirect;
        async move {
            http_request_with(
                redirect.listen_addr(),
                method,
                "/sale",
                &[("Host", host), ("User-Agent", CHROME)],
            )
            .await
        }
    };
    // The redirect reads the domains every 2 s; a HEAD is not counted.
    wait_until("the domain", Duration::from_secs(10), || async {
        Ok(visit("HEAD", "go.example").await?.header("location")
            == Some("https://example.com/on/go.example"))
    })
    .await?;
    for _ in 0..3 {
        anyhow::ensure!(visit("GET", "go.example").await?.status == 302);
    }
    anyhow::ensure!(visit("GET", "127.0.0.1").await?.status == 302);
    let system = &system;
    wait_until(
        "both links' clicks",
        Duration::from_secs(30),
        || async move {
            Ok(stats(system, "go.example/sale").await?.lifetime_clicks == 3
                && stats(system, "sale").await?.lifetime_clicks == 1)
        },
    )
    .await?;
    let dead = command(system.redis.port(), &["XLEN", "tinyurl:clicks:dead"]).await?;
    anyhow::ensure!(
        matches!(dead, Reply::Integer(0)),
        "nothing dead-lettered: {dead:?}"
    );
    Ok(())
}

/// A link's rollups as rows, humans and bots of a value on one row, the
/// dimensions asked for only.
#[tokio::test]
async fn stats_export_as_rows() -> anyhow::Result<()> {
    use tinyurl_proto::v1::ExportLinkStatsRequest;
    let system = System::start(&[]).await?;
    let redirect = system.start_redirect(FAST_CLICKS).await?;
    let code = create(&system, "https://example.com/exported").await?;
    click(
        &redirect,
        &code,
        &[("User-Agent", CHROME), ("Referer", "https://news.example/")],
    )
    .await?;
    click(&redirect, &code, &[("User-Agent", CHROME)]).await?;
    click(&redirect, &code, &[("User-Agent", GOOGLEBOT)]).await?;
    let system_ref = &system;
    wait_until("the clicks", Duration::from_secs(30), || {
        let code = code.clone();
        async move {
            let stats = stats(system_ref, &code).await?;
            Ok(stats.lifetime_clicks + stats.lifetime_bot_clicks == 3)
        }
    })
    .await?;
    let export = |dimensions: &[&str], granularity: StatsGranularity| {
        // A day back: minute rollups (hours) are kept a week, and a
        // default range of a week reaches past that.
        let from = SystemTime::now() - Duration::from_secs(86_400);
        let request = system.authed(ExportLinkStatsRequest {
            code: code.clone(),
            granularity: granularity.into(),
            dimensions: dimensions.iter().map(|name| (*name).to_owned()).collect(),
            from: Some(prost_types::Timestamp::from(from)),
            ..ExportLinkStatsRequest::default()
        });
        async move {
            anyhow::Ok(
                system_ref
                    .links()?
                    .export_link_stats(request)
                    .await?
                    .into_inner(),
            )
        }
    };
    // Summed over the buckets: the clicks may straddle an hour or a day.
    let summed = |exported: &tinyurl_proto::v1::ExportLinkStatsResponse| {
        let mut summed: std::collections::BTreeMap<(String, String), (u64, u64)> =
            std::collections::BTreeMap::new();
        for row in &exported.rows {
            let sum = summed
                .entry((row.dimension.clone(), row.value.clone()))
                .or_default();
            sum.0 += row.clicks;
            sum.1 += row.bot_clicks;
        }
        summed
    };
    let expected = |rows: &[(&str, &str, u64, u64)]| {
        rows.iter()
            .map(|(dimension, value, clicks, bots)| {
                (
                    ((*dimension).to_owned(), (*value).to_owned()),
                    (*clicks, *bots),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let all = export(&[], StatsGranularity::Day).await?;
    anyhow::ensure!(
        summed(&all)
            == expected(&[
                ("total", "", 2, 1),
                ("referrer", "-", 1, 1),
                ("referrer", "news.example", 1, 0),
                ("country", "unknown", 2, 1),
                ("browser", "chrome", 2, 0),
                ("browser", "googlebot", 0, 1),
                ("device", "bot", 0, 1),
                ("device", "desktop", 2, 0),
                ("class", "crawler", 0, 1),
                // The day's unique visitors: both people's clicks came from
                // one address with one browser.
                ("visitors", "", 1, 0),
            ]),
        "{:?}",
        all.rows
    );
    anyhow::ensure!(
        all.rows.first().map(|row| row.dimension.as_str()) == Some("total")
            && all
                .rows
                .iter()
                .all(|row| row.start.is_some_and(|start| start.seconds % 86_400 == 0)),
        "by bucket, the total first, days: {:?}",
        all.rows
    );
    let referrers = export(&["referrer"], StatsGranularity::Hour).await?;
    anyhow::ensure!(
        summed(&referrers)
            == expected(&[("referrer", "-", 1, 1), ("referrer", "news.example", 1, 0)]),
        "{:?}",
        referrers.rows
    );
    anyhow::ensure!(
        referrers
            .rows
            .iter()
            .all(|row| row.start.is_some_and(|start| start.seconds % 3_600 == 0)),
        "hours: {:?}",
        referrers.rows
    );
    let refused = export(&["ip"], StatsGranularity::Day).await;
    anyhow::ensure!(
        refused
            .as_ref()
            .is_err_and(|error| error.to_string().contains("dimensions")
                || error.to_string().contains("is not one of")),
        "{refused:?}"
    );
    Ok(())
}

/// Visits to codes that do not exist (and to paths that are no code),
/// counted per domain with the paths asked for, bounded; the scanner
/// throttle still answers an address that keeps missing; purgeable.
#[tokio::test]
async fn visits_to_codes_that_do_not_exist_are_counted_by_path() -> anyhow::Result<()> {
    use tinyurl_proto::v1::{AddDomainRequest, GetOrphanVisitsRequest, PurgeOrphanVisitsRequest};
    let system = System::start(&[]).await?;
    let mut env = FAST_CLICKS.to_vec();
    env.push(("TINYURL_TRUSTED_PROXIES", "127.0.0.0/8"));
    let redirect = system.start_redirect(&env).await?;
    let mut links = system.links()?;
    links
        .add_domain(system.authed(AddDomainRequest {
            host: "go.example".to_owned(),
            not_found_url: String::new(),
        }))
        .await?;
    let orphans = |domain: &str| {
        let request = system.authed(GetOrphanVisitsRequest {
            domain: domain.to_owned(),
            granularity: StatsGranularity::Day.into(),
            ..GetOrphanVisitsRequest::default()
        });
        let mut links = links.clone();
        async move { anyhow::Ok(links.get_orphan_visits(request).await?.into_inner()) }
    };

    // 100 paths, codes and not: the first ten asked 46 times each, the rest
    // 6 times, 1,000 in all, each from an address of its own (the scanner
    // throttle counts per address), people and curl.
    let paths: Vec<String> = (0..100)
        .map(|index| match index % 4 {
            0 => format!("/nope{index:03}"),
            1 => format!("/wp-content/{index}.php"),
            2 => format!("/.env{index}"),
            _ => format!("/No_Such-{index}"),
        })
        .collect();
    let mut asked = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        let times = if index < 10 { 46 } else { 6 };
        asked.extend(std::iter::repeat_n(path.as_str(), times));
    }
    anyhow::ensure!(asked.len() == 1_000);
    let mut humans = 0;
    for (index, path) in asked.iter().enumerate() {
        let address = format!("10.0.{}.{}", index / 250, index % 250);
        let agent = if index % 3 == 0 { CURL } else { CHROME };
        humans += u64::from(agent == CHROME);
        let response = http_request_with(
            redirect.listen_addr(),
            "GET",
            path,
            &[("User-Agent", agent), ("X-Forwarded-For", address.as_str())],
        )
        .await?;
        anyhow::ensure!(response.status == 404, "{path}: {}", response.status);
    }
    // Two on the registered domain, counted there alone, once the redirect
    // knows the domain (it reads them every 2 s; until then the host is the
    // default domain's): a link on it answers a HEAD (not counted).
    system
        .links()?
        .create_link(system.authed(CreateLinkRequest {
            target_url: "https://example.com/on-go".to_owned(),
            alias: "known".to_owned(),
            domain: "go.example".to_owned(),
            ..CreateLinkRequest::default()
        }))
        .await?;
    wait_until("the domain", Duration::from_secs(10), || async {
        let response = http_request_with(
            redirect.listen_addr(),
            "HEAD",
            "/known",
            &[("Host", "go.example")],
        )
        .await?;
        Ok(response.header("location") == Some("https://example.com/on-go"))
    })
    .await?;
    for path in ["/gone-sale", "/.git/config"] {
        let response = http_request_with(
            redirect.listen_addr(),
            "GET",
            path,
            &[("Host", "go.example"), ("User-Agent", CHROME)],
        )
        .await?;
        anyhow::ensure!(
            response.status == 404,
            "{path} on go.example: {}",
            response.status
        );
    }
    wait_until(
        "the visits to be folded",
        Duration::from_secs(30),
        || async {
            let seen = orphans("").await?;
            Ok(seen.lifetime_clicks + seen.lifetime_bot_clicks == 1_000)
        },
    )
    .await?;
    let seen = orphans("").await?;
    anyhow::ensure!(
        (seen.lifetime_clicks, seen.lifetime_bot_clicks) == (humans, 1_000 - humans),
        "people and curl apart: {seen:?}"
    );
    let top = counts(&seen.paths);
    anyhow::ensure!(top.len() == 11, "ten paths and other: {:?}", seen.paths);
    for path in &paths[..10] {
        anyhow::ensure!(
            top.get(path.as_str()) == Some(&46),
            "{path}: {:?}",
            seen.paths
        );
    }
    anyhow::ensure!(top.get("other") == Some(&540), "{:?}", seen.paths);
    anyhow::ensure!(seen.paths.last().is_some_and(|last| last.value == "other"));
    anyhow::ensure!(
        counts(&seen.classes)
            == HashMap::from([
                ("human".to_owned(), humans),
                ("crawler".to_owned(), 1_000 - humans)
            ]),
        "{:?}",
        seen.classes
    );
    anyhow::ensure!(
        seen.referrers.is_empty() && seen.countries.is_empty() && seen.browsers.is_empty(),
        "nothing of the visitor: {seen:?}"
    );
    wait_until("the domain's visits", Duration::from_secs(30), || async {
        let seen = orphans("go.example").await?;
        Ok(seen.lifetime_clicks == 2
            && counts(&seen.paths)
                == HashMap::from([("/gone-sale".to_owned(), 1), ("/.git/config".to_owned(), 1)]))
    })
    .await?;
    let unknown = orphans("no.example").await;
    anyhow::ensure!(
        unknown
            .as_ref()
            .is_err_and(|error| error.to_string().contains("no domain")),
        "an unregistered domain is refused: {unknown:?}"
    );

    // An address that keeps missing is still throttled (429 before any
    // I/O), and only its answered misses are counted.
    let mut throttled_env = FAST_CLICKS.to_vec();
    throttled_env.push(("TINYURL_SCANNER_404_PER_MINUTE", "5"));
    let throttled = system.start_redirect(&throttled_env).await?;
    let mut statuses = HashMap::new();
    for index in 0..20 {
        let response = http_request_with(
            throttled.listen_addr(),
            "GET",
            &format!("/scan{index:04}"),
            &[("User-Agent", CHROME)],
        )
        .await?;
        *statuses.entry(response.status).or_insert(0u64) += 1;
    }
    let missed = statuses.get(&404).copied().unwrap_or(0);
    anyhow::ensure!(
        statuses.get(&429).copied().unwrap_or(0) > 0 && missed + statuses[&429] == 20,
        "{statuses:?}"
    );
    wait_until("the answered misses", Duration::from_secs(30), || async {
        let seen = orphans("").await?;
        Ok(seen.lifetime_clicks + seen.lifetime_bot_clicks == 1_000 + missed)
    })
    .await?;

    // Purged: the default domain's counts go, the other domain's stay.
    let purged = system
        .links()?
        .purge_orphan_visits(system.authed(PurgeOrphanVisitsRequest {
            domain: String::new(),
        }))
        .await?
        .into_inner();
    anyhow::ensure!(purged.rows > 0, "{purged:?}");
    let seen = orphans("").await?;
    anyhow::ensure!(
        seen.lifetime_clicks + seen.lifetime_bot_clicks == 0 && seen.paths.is_empty(),
        "{seen:?}"
    );
    anyhow::ensure!(orphans("go.example").await?.lifetime_clicks == 2);
    Ok(())
}

#[tokio::test]
async fn a_click_is_visible_within_the_flush_interval_plus_a_little() -> anyhow::Result<()> {
    let system = System::start(&[]).await?;
    let redirect = system.start_redirect(FAST_CLICKS).await?;
    let code = create(&system, "https://example.com/fresh").await?;
    let mut latencies = Vec::new();
    for expected in 1..=20u64 {
        let clicked = Instant::now();
        click(&redirect, &code, &[("User-Agent", CHROME)]).await?;
        // Generous: the figure is reported, not asserted.
        wait_until("the click to be visible", Duration::from_secs(30), || {
            let (system, code) = (&system, code.clone());
            async move { Ok(stats(system, &code).await?.lifetime_clicks >= expected) }
        })
        .await?;
        latencies.push(clicked.elapsed());
    }
    latencies.sort();
    println!(
        "visibility with a 200 ms flush: p50 {:?}, p99 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)],
        latencies[latencies.len() - 1]
    );
    Ok(())
}

/// `admin roll-up --all` puts the minutes folded so far into the day
/// rollups at once (the writers' own roll-up waits for minutes to finish),
/// with every click; a second run finds nothing left to roll.
#[tokio::test]
async fn an_operator_rolls_up_the_minutes_folded_so_far() -> anyhow::Result<()> {
    let system = System::start(&[]).await?;
    let redirect = system.start_redirect(FAST_CLICKS).await?;
    let code = create(&system, "https://example.com/days").await?;
    let db = tinyurl_harness::postgres::connect(&system.database.primary_url).await?;
    // A new database's roll-up mark is the minute it was made, and a
    // click of a minute already rolled up goes to its day at once: the
    // clicks wait for the first minute after the mark.
    let mark: i32 = db
        .query_one("SELECT rolled_through FROM click_rollup_mark", &[])
        .await?
        .get(0);
    let after_mark =
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(mark + 1)? * 60 + 1);
    if let Ok(wait) = after_mark.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    for browser in [CHROME, CHROME, IPHONE] {
        click(&redirect, &code, &[("User-Agent", browser)]).await?;
    }
    wait_until("the clicks to be folded", Duration::from_secs(30), || {
        let (system, code) = (&system, code.clone());
        async move { Ok(stats(system, &code).await?.lifetime_clicks >= 3) }
    })
    .await?;
    let day_clicks = || async {
        let row = db
            .query_one(
                "SELECT coalesce(sum(clicks), 0)::int8 FROM click_days WHERE code = $1 AND dimension = 0",
                &[&code],
            )
            .await?;
        anyhow::Ok(row.get::<_, i64>(0))
    };
    assert_eq!(day_clicks().await?, 0, "not rolled up before the command");

    let rolled = system.setup.command(&["roll-up", "--all"])?;
    let said = String::from_utf8_lossy(&rolled.stdout);
    assert!(
        rolled.status.success(),
        "{}",
        String::from_utf8_lossy(&rolled.stderr)
    );
    assert!(said.contains("rolled up into days"), "{said}");
    assert!(!said.contains(": 0 day rows"), "{said}");
    assert_eq!(day_clicks().await?, 3);
    let by_browser: i64 = db
        .query_one(
            "SELECT count(*) FROM click_days WHERE code = $1 AND dimension <> 0",
            &[&code],
        )
        .await?
        .get(0);
    assert!(by_browser > 0, "the day rows carry the breakdowns too");

    let again = system.setup.command(&["roll-up", "--all"])?;
    assert!(again.status.success());
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(said.contains(": 0 day rows written"), "{said}");
    assert_eq!(day_clicks().await?, 3);
    Ok(())
}

#[tokio::test]
async fn refuses_bad_stats_requests_and_skips_corrupt_batches() -> anyhow::Result<()> {
    let system = System::start(&[]).await?;
    let redirect = system.start_redirect(FAST_CLICKS).await?;
    let code = create(&system, "https://example.com/mine").await?;
    let other_key = system.setup.create_api_key("someone else")?;
    let mut links = system.links()?;

    let mut request = tonic::Request::new(GetLinkStatsRequest {
        code: code.clone(),
        ..GetLinkStatsRequest::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {other_key}").parse()?);
    let status = links
        .get_link_stats(request)
        .await
        .expect_err("not this key's link");
    assert_eq!(status.code(), tonic::Code::NotFound);

    let now = SystemTime::now();
    let at = |time: SystemTime| Some(prost_types::Timestamp::from(time));
    let bad = [
        (at(now), at(now - Duration::from_secs(60)), 0, "from"),
        (
            at(now - Duration::from_secs(30 * 24 * 3600)),
            None,
            StatsGranularity::Hour as i32,
            "from",
        ),
        (None, None, 42, "granularity"),
        (
            Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            None,
            0,
            "from",
        ),
    ];
    for (from, to, granularity, field) in bad {
        let status = links
            .get_link_stats(system.authed(GetLinkStatsRequest {
                code: code.clone(),
                from,
                to,
                granularity,
                classes: Vec::new(),
            }))
            .await
            .expect_err("a bad request");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let named = status.get_error_details().bad_request().and_then(|bad| {
            bad.field_violations
                .first()
                .map(|violation| violation.field.clone())
        });
        assert_eq!(named.as_deref(), Some(field), "{status:?}");
    }

    // A corrupt entry ahead of good ones is counted and skipped; the good
    // ones behind it are folded.
    let port = system.redis.port();
    for fields in [
        &["batch", "0123456789abcdef", "clicks", "not a click line\n"][..],
        &["something", "else"][..],
    ] {
        let mut args = vec!["XADD", "tinyurl:clicks", "*"];
        args.extend_from_slice(fields);
        command(port, &args).await?;
    }
    click(&redirect, &code, &[("User-Agent", CHROME)]).await?;
    wait_until(
        "the good click to be folded",
        Duration::from_secs(30),
        || {
            let (system, code) = (&system, code.clone());
            async move { Ok(stats(system, &code).await?.lifetime_clicks == 1) }
        },
    )
    .await?;
    let corrupt = metric(
        system.writer.admin_addr(),
        "writer_click_batches_corrupt_total",
        &[],
    )
    .await?;
    assert_eq!(corrupt, 2.0);
    Ok(())
}

#[tokio::test]
async fn the_click_stream_is_trimmed_by_age() -> anyhow::Result<()> {
    let system = System::start(&[]).await?;
    let port = system.redis.port();
    // `MINID ~` trims whole stream nodes; one entry per node makes it exact.
    command(port, &["CONFIG", "SET", "stream-node-max-entries", "1"]).await?;
    let mut env = FAST_CLICKS.to_vec();
    env.push(("TINYURL_CLICKS_STREAM_MAX_AGE_SECS", "1"));
    let redirect = system.start_redirect(&env).await?;
    let code = create(&system, "https://example.com/aged").await?;
    let first_entry = || async move {
        let reply = command(port, &["XRANGE", "tinyurl:clicks", "-", "+", "COUNT", "1"]).await?;
        anyhow::Ok(reply.strings().into_iter().next())
    };
    click(&redirect, &code, &[]).await?;
    wait_until("the first batch", Duration::from_secs(10), || async {
        Ok(first_entry().await?.is_some())
    })
    .await?;
    let first = first_entry().await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    click(&redirect, &code, &[]).await?;
    wait_until(
        "the old batch to be trimmed",
        Duration::from_secs(10),
        || async {
            let oldest = first_entry().await?;
            Ok(oldest.is_some() && oldest != first)
        },
    )
    .await?;
    let length = command(port, &["XLEN", "tinyurl:clicks"]).await?;
    assert!(
        matches!(length, Reply::Integer(1)),
        "only the recent batch is left: {length:?}"
    );
    Ok(())
}

/// A rolling upgrade loses no click and a bad batch blocks nothing: a batch
/// of the previous format (no batch id) is folded, one of a newer format is
/// left pending for a consumer that knows it, and one that parses but
/// cannot be folded goes to the dead-letter stream after its attempts while
/// the batches behind it are folded.
#[tokio::test]
async fn old_formats_fold_newer_ones_wait_and_poison_is_dead_lettered() -> anyhow::Result<()> {
    let system = System::start(&[]).await?;
    let code = create(&system, "https://example.com/formats").await?;
    let port = system.redis.port();
    let minute = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        / 60;
    let line = |count: &str| format!("{code} {minute} - chrome desktop DE 0 {count}");
    let add = |fields: Vec<String>| async move {
        let mut args = vec![
            "XADD".to_owned(),
            "tinyurl:clicks".to_owned(),
            "*".to_owned(),
        ];
        args.extend(fields);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match command(port, &args).await? {
            Reply::Bulk(Some(id)) => anyhow::Ok(id),
            other => anyhow::bail!("XADD answered {other:?}"),
        }
    };
    let lifetime = || async { anyhow::Ok(stats(&system, &code).await?.lifetime_clicks) };

    // Format 1: `clicks` only.
    add(vec!["clicks".to_owned(), line("3")]).await?;
    wait_until(
        "the format-1 batch to be folded",
        Duration::from_secs(30),
        || async { Ok(lifetime().await? == 3) },
    )
    .await?;

    // A newer format waits; a poison batch (its count overflows the
    // rollups) is dead-lettered; a good batch behind them is folded.
    add(vec![
        "format".to_owned(),
        "5".to_owned(),
        "batch".to_owned(),
        "from-the-future".to_owned(),
        "clicks".to_owned(),
        line("5"),
    ])
    .await?;
    let poison = add(vec![
        "format".to_owned(),
        "3".to_owned(),
        "batch".to_owned(),
        "poison".to_owned(),
        "clicks".to_owned(),
        line("9223372036854775807"),
    ])
    .await?;
    add(vec![
        "format".to_owned(),
        "3".to_owned(),
        "batch".to_owned(),
        "good".to_owned(),
        "clicks".to_owned(),
        line("2"),
    ])
    .await?;
    wait_until(
        "the good batch to be folded",
        Duration::from_secs(60),
        || async { Ok(lifetime().await? == 5) },
    )
    .await?;
    let dead = command(port, &["XRANGE", "tinyurl:clicks:dead", "-", "+"]).await?;
    let dead = dead.strings();
    anyhow::ensure!(
        dead.contains(&poison)
            && dead
                .iter()
                .any(|value| value.ends_with("9223372036854775807")),
        "the poison batch is in the dead-letter stream: {dead:?}"
    );
    let admin = system.writer.admin_addr();
    anyhow::ensure!(metric(admin, "writer_click_batches_dead_lettered_total", &[]).await? == 1.0);
    anyhow::ensure!(metric(admin, "writer_click_batches_deferred_total", &[]).await? >= 1.0);
    // The newer batch is still pending, and counted nowhere.
    let pending = command(port, &["XPENDING", "tinyurl:clicks", "tinyurl-analytics"]).await?;
    anyhow::ensure!(
        matches!(&pending, Reply::Array(summary) if matches!(summary.first(), Some(Reply::Integer(count)) if *count == 1)),
        "one batch pending: {pending:?}"
    );
    anyhow::ensure!(lifetime().await? == 5);
    tinyurl_harness::attacker::row(
        "L6 a batch that parses but cannot be folded stalls its consumer",
        "a click batch whose count overflows the rollups, between a batch of a newer format and a good one",
        "dead-lettered to `tinyurl:clicks:dead` after 5 attempts (counted), the newer one left pending for a newer consumer",
        "the good batch behind it folded: every honest click counted",
    );
    tinyurl_harness::attacker::row(
        "U1 a rolling upgrade loses the old redirects' clicks",
        "a batch in the previous format (no batch id) from a redirect not yet upgraded",
        "—",
        "folded and counted (3 clicks), its entry id standing in for the batch id",
    );
    Ok(())
}

/// The statistics of a link with redirect rules say which rule answered
/// each human visit (and how many went to the link's own target); a plain
/// link's have no such list.
#[tokio::test]
async fn stats_say_which_rule_answered() -> anyhow::Result<()> {
    use tinyurl_proto::v1::RedirectRule;
    let system = System::start(&[]).await?;
    let redirect = system.start_redirect(FAST_CLICKS).await?;
    let rule = |device: &str, target: &str| RedirectRule {
        devices: vec![device.to_owned()],
        target_url: target.to_owned(),
        ..RedirectRule::default()
    };
    let ruled = system
        .links()?
        .create_link(system.authed(CreateLinkRequest {
            target_url: "https://example.com/desktop".to_owned(),
            rules: vec![
                rule("ios", "https://example.com/ios"),
                rule("android", "https://example.com/android"),
            ],
            ..CreateLinkRequest::default()
        }))
        .await?
        .into_inner()
        .code;
    let plain = create(&system, "https://example.com/plain").await?;
    const ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";
    let visits = [
        (IPHONE, 3),
        (ANDROID, 2),
        (CHROME, 1),
        // A bot is answered by the rules too, and counted apart.
        (GOOGLEBOT, 2),
    ];
    for (agent, times) in visits {
        for _ in 0..times {
            click(&redirect, &ruled, &[("User-Agent", agent)]).await?;
        }
    }
    click(&redirect, &plain, &[("User-Agent", CHROME)]).await?;
    let system = &system;
    let ruled = &ruled;
    wait_until(
        "the clicks to be folded",
        Duration::from_secs(20),
        || async move {
            let stats = stats(system, ruled).await?;
            Ok(stats.clicks == 6 && stats.bot_clicks == 2)
        },
    )
    .await?;
    let folded = stats(system, ruled).await?;
    anyhow::ensure!(
        counts(&folded.rules)
            == HashMap::from([
                ("1".to_owned(), 3),
                ("2".to_owned(), 2),
                ("target".to_owned(), 1)
            ]),
        "{:?}",
        folded.rules
    );
    let plain = &plain;
    wait_until(
        "the plain link's click",
        Duration::from_secs(20),
        || async move { Ok(stats(system, plain).await?.clicks == 1) },
    )
    .await?;
    anyhow::ensure!(stats(system, plain).await?.rules.is_empty());
    Ok(())
}

/// Where Debian's `faketime` package puts the library that shifts a
/// process's clock (`LD_PRELOAD`): how a test has a redirect live tomorrow.
fn libfaketime() -> anyhow::Result<String> {
    for dir in std::fs::read_dir("/usr/lib")?.flatten() {
        let candidate = dir.path().join("faketime/libfaketime.so.1");
        if candidate.is_file() {
            return Ok(candidate.to_string_lossy().into_owned());
        }
    }
    anyhow::bail!(
        "libfaketime.so.1 not found: install Debian's faketime package (scripts/test does)"
    )
}

/// A visitor's User-Agent: a person's browser, one of several, in many
/// versions.
fn browser_of(visitor: u32) -> String {
    let version = 100 + visitor % 31;
    match visitor % 4 {
        0 => format!(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{version}.0.{}.0 Safari/537.36",
            visitor % 997
        ),
        1 => format!(
            "Mozilla/5.0 (X11; Linux x86_64; rv:{version}.0) Gecko/20100101 Firefox/{version}.0"
        ),
        2 => format!(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{} Mobile/15E148 Safari/604.1",
            visitor % 7,
            visitor % 5
        ),
        _ => format!(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{version}.0.0.0 Safari/537.36 Edg/{version}.0.{}.0",
            visitor % 89
        ),
    }
}

/// Visitor `visitor`'s address, as the trusted proxy forwards it.
fn address_of(visitor: u32) -> Ipv4Addr {
    Ipv4Addr::new(
        100,
        64 + (visitor >> 16) as u8,
        (visitor >> 8) as u8,
        visitor as u8,
    )
}

/// One visit: which redirect, which visitor, extra request headers.
type Visit = (usize, u32, &'static [(&'static str, &'static str)]);

/// Sends every visit, 32 at a time, each from its visitor's address through
/// the trusted proxy.
async fn visit(
    redirects: &[&ServiceProcess],
    code: &str,
    visits: Vec<Visit>,
) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(visits)
        .map(|(redirect, visitor, extra)| async move {
            let address = address_of(visitor).to_string();
            let agent = browser_of(visitor);
            let mut headers = vec![
                ("User-Agent", agent.as_str()),
                ("X-Forwarded-For", address.as_str()),
            ];
            headers.extend_from_slice(extra);
            click(redirects[redirect], code, &headers).await
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Every key in Redis with its value as `DUMP` gives it (binary-safe).
async fn redis_dump(url: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    use fred::prelude::*;
    let client = Builder::from_config(Config::from_url(url)?).build()?;
    client.init().await?;
    let keys: Vec<String> = client.custom(fred::cmd!("KEYS"), vec!["*"]).await?;
    let mut dumped = Vec::new();
    for key in keys {
        let value: fred::types::Value = client.dump(key.as_str()).await?;
        dumped.push((
            key,
            value.as_bytes().map(<[u8]>::to_vec).unwrap_or_default(),
        ));
    }
    client.quit().await?;
    Ok(dumped)
}

/// Every row of every table of the database, as text.
async fn postgres_dump(url: &str) -> anyhow::Result<String> {
    let db = tinyurl_harness::postgres::connect(url).await?;
    let tables: Vec<String> = db
        .query(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(relname) FROM pg_stat_user_tables",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut text = String::new();
    for table in tables {
        for row in db
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .await?
        {
            text.push_str(row.get::<_, &str>(0));
            text.push('\n');
        }
    }
    Ok(text)
}

/// 10,000 people, each visiting one link 1–5 times over two redirect
/// processes (a person's visits alternate between them) while two writers
/// fold the batches, are counted as 10,000 unique visitors within 2%;
/// visits from bots and from people asking not to be tracked are not
/// visitors. The same people the next day (two redirects whose clock is a
/// day ahead) are that day's visitors again. Neither an address nor a hash
/// of one is anywhere in Postgres or Redis, and the key that makes the
/// day's hashes ends with the day.
#[tokio::test]
async fn unique_visitors_are_estimated_within_two_percent_and_kept_by_day() -> anyhow::Result<()> {
    const PEOPLE: u32 = 10_000;
    // The first day's visits must all fall in one UTC day: a start in the
    // last five minutes of one waits for the next.
    let now = SystemTime::now();
    if let Some(left) =
        tinyurl_domain::visitors::until_day_ends(tinyurl_domain::visitors::day_of(now), now)
        && left < Duration::from_secs(300)
    {
        tokio::time::sleep(left + Duration::from_secs(1)).await;
    }
    let system = System::start(&[]).await?;
    let _second_writer = system.setup.start(&[]).await?;
    let proxied = [FAST_CLICKS[0], ("TINYURL_TRUSTED_PROXIES", "127.0.0.0/8")];
    let redirects = [
        system.start_redirect(&proxied).await?,
        system.start_redirect(&proxied).await?,
    ];
    let code = create(&system, "https://example.com/uniques").await?;
    system.wait_replicated(&code).await?;

    let mut visits = Vec::new();
    let mut people_visits = 0u64;
    for visitor in 0..PEOPLE {
        let times = 1 + (visitor.wrapping_mul(7919) % 5);
        for time in 0..times {
            visits.push(((visitor + time) as usize % 2, visitor, &[][..]));
            people_visits += 1;
        }
    }
    // Not visitors: people who ask not to be tracked (a tenth more: counted,
    // they would put the estimate 10% off), and bots.
    const ASKING: &[(&str, &str)] = &[("DNT", "1")];
    const PRIVATE: &[(&str, &str)] = &[("Sec-GPC", "1")];
    for visitor in PEOPLE..PEOPLE + PEOPLE / 10 {
        visits.push((0, visitor, ASKING));
        visits.push((1, visitor, PRIVATE));
        people_visits += 2;
    }
    visit(&[&redirects[0], &redirects[1]], &code, visits).await?;
    let mut bots = 0u64;
    for index in 0..100u32 {
        let address = address_of(PEOPLE + 2_000 + index).to_string();
        click(
            &redirects[(index % 2) as usize],
            &code,
            &[("User-Agent", GOOGLEBOT), ("X-Forwarded-For", &address)],
        )
        .await?;
        bots += 1;
    }

    let system_ref = &system;
    let code_ref = &code;
    wait_until(
        "every click to be folded",
        Duration::from_secs(60),
        || async move {
            let seen = stats(system_ref, code_ref).await?;
            Ok((seen.lifetime_clicks, seen.lifetime_bot_clicks) == (people_visits, bots))
        },
    )
    .await?;
    let today = tinyurl_domain::visitors::day_of(SystemTime::now());
    let seen = stats(&system, &code).await?;
    let error = (seen.visitors as f64 - f64::from(PEOPLE)).abs() / f64::from(PEOPLE);
    println!(
        "{} unique visitors counted for {PEOPLE} people ({people_visits} visits, {bots} from bots): {:.2}% off",
        seen.visitors,
        error * 100.0
    );
    anyhow::ensure!(error <= 0.02, "visitors {} for {PEOPLE}", seen.visitors);
    anyhow::ensure!(
        seen.daily_visitors.len() == 1 && seen.daily_visitors[0].visitors == seen.visitors,
        "one day of visitors: {:?}",
        seen.daily_visitors
    );

    // What was kept: the day's key lives no longer than the day, and no
    // address, digest or visitor hash is stored anywhere.
    let key_name = tinyurl_domain::visitors::day_key_name(today);
    let stored_key = match command(system.redis.port(), &["GET", &key_name]).await? {
        Reply::Bulk(Some(stored)) => stored,
        other => anyhow::bail!("{key_name}: {other:?}"),
    };
    let day_key = tinyurl_domain::visitors::decode_day_key(&stored_key)
        .context("the day key is 32 hex digits")?;
    let left = match command(system.redis.port(), &["PTTL", &key_name]).await? {
        Reply::Integer(left) => left,
        other => anyhow::bail!("PTTL {key_name}: {other:?}"),
    };
    let until_midnight = tinyurl_domain::visitors::until_day_ends(today, SystemTime::now())
        .context("still today")?;
    anyhow::ensure!(
        left > 0 && u128::try_from(left)? <= until_midnight.as_millis() + 1_000,
        "the day key expires at midnight: {left} ms left, {until_midnight:?} to midnight"
    );
    let mut secrets: Vec<[u8; 8]> = Vec::new();
    let mut addresses = Vec::new();
    for visitor in 0..PEOPLE {
        let address = address_of(visitor);
        let digest = tinyurl_domain::visitors::digest(
            std::net::IpAddr::V4(address),
            browser_of(visitor).as_bytes(),
            &code,
        );
        let hash = tinyurl_domain::visitors::visitor_hash(&day_key, digest);
        for value in [digest, hash] {
            secrets.push(value.to_be_bytes());
            secrets.push(value.to_le_bytes());
        }
        addresses.push(address.to_string());
    }
    let secret_set: std::collections::HashSet<[u8; 8]> = secrets.iter().copied().collect();
    let dumped = redis_dump(&system.redis.url()).await?;
    let sketch = tinyurl_domain::visitors::sketch_name(today, &code);
    anyhow::ensure!(
        dumped.iter().any(|(key, _)| *key == sketch),
        "the link day's sketch is in Redis: {:?}",
        dumped.iter().map(|(key, _)| key).collect::<Vec<_>>()
    );
    // Added to flush after flush, by visitors new and seen before: it still
    // expires, a while after its day.
    let sketch_left = match command(system.redis.port(), &["PTTL", &sketch]).await? {
        Reply::Integer(left) => left,
        other => anyhow::bail!("PTTL {sketch}: {other:?}"),
    };
    let kept = until_midnight + tinyurl_domain::visitors::SKETCH_KEPT_AFTER_DAY;
    anyhow::ensure!(
        sketch_left > 0 && u128::try_from(sketch_left)? <= kept.as_millis() + 1_000,
        "the sketch expires after its day: {sketch_left} ms left, {kept:?} at most"
    );
    for (key, value) in &dumped {
        let found = value.windows(8).any(|window| {
            window
                .try_into()
                .is_ok_and(|bytes: [u8; 8]| secret_set.contains(&bytes))
        });
        anyhow::ensure!(!found, "Redis key {key} holds a visitor's hash");
        let text = String::from_utf8_lossy(value);
        anyhow::ensure!(
            !addresses
                .iter()
                .any(|address| text.contains(address.as_str())),
            "Redis key {key} holds an address"
        );
    }
    let rows = postgres_dump(&system.database.primary_url).await?;
    anyhow::ensure!(rows.contains(&code), "the dump has the link");
    for (visitor, address) in addresses.iter().enumerate() {
        anyhow::ensure!(!rows.contains(address.as_str()), "Postgres holds {address}");
        let digest = u64::from_be_bytes(secrets[visitor * 4]);
        let hash = u64::from_be_bytes(secrets[visitor * 4 + 2]);
        for value in [digest, hash] {
            for shown in [
                format!("{value:016x}"),
                value.to_string(),
                (value as i64).to_string(),
            ] {
                anyhow::ensure!(!rows.contains(&shown), "Postgres holds a visitor's hash");
            }
        }
    }

    // The next day: the same people through two redirects a day ahead, once
    // each, are that day's visitors, counted again.
    let faketime = libfaketime()?;
    let mut tomorrow_env = proxied.to_vec();
    tomorrow_env.extend([
        ("LD_PRELOAD", faketime.as_str()),
        ("FAKETIME", "+1d"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]);
    let tomorrow = [
        system.start_redirect(&tomorrow_env).await?,
        system.start_redirect(&tomorrow_env).await?,
    ];
    let visits = (0..PEOPLE)
        .map(|visitor| ((visitor % 2) as usize, visitor, &[][..]))
        .collect();
    visit(&[&tomorrow[0], &tomorrow[1]], &code, visits).await?;
    let two_days = || async {
        let request = GetLinkStatsRequest {
            code: code.clone(),
            granularity: StatsGranularity::Day.into(),
            from: Some(prost_types::Timestamp {
                seconds: i64::from(today) * 86_400,
                nanos: 0,
            }),
            to: Some(prost_types::Timestamp {
                seconds: (i64::from(today) + 2) * 86_400,
                nanos: 0,
            }),
            classes: Vec::new(),
        };
        anyhow::Ok(
            system
                .links()?
                .get_link_stats(system.authed(request))
                .await?
                .into_inner(),
        )
    };
    let total = people_visits + u64::from(PEOPLE);
    wait_until(
        "the next day's clicks to be folded",
        Duration::from_secs(120),
        || async { Ok(two_days().await?.lifetime_clicks == total) },
    )
    .await?;
    let seen = two_days().await?;
    let days: Vec<(i64, u64)> = seen
        .daily_visitors
        .iter()
        .map(|day| {
            (
                day.day.as_ref().map_or(0, |at| at.seconds) / 86_400,
                day.visitors,
            )
        })
        .collect();
    println!("visitors by day: {days:?}");
    anyhow::ensure!(days.len() == 2, "two days of visitors: {days:?}");
    anyhow::ensure!(days[0].0 == i64::from(today) && days[1].0 == i64::from(today) + 1);
    for (_, visitors) in &days {
        let error = (*visitors as f64 - f64::from(PEOPLE)).abs() / f64::from(PEOPLE);
        anyhow::ensure!(error <= 0.02, "{days:?}");
    }
    anyhow::ensure!(seen.visitors == days[0].1 + days[1].1, "{seen:?}");
    // Tomorrow's key is another key, made by the redirects living in it.
    let tomorrow_key = tinyurl_domain::visitors::day_key_name(today + 1);
    match command(system.redis.port(), &["GET", &tomorrow_key]).await? {
        Reply::Bulk(Some(stored)) => anyhow::ensure!(stored != stored_key, "a new key"),
        other => anyhow::bail!("{tomorrow_key}: {other:?}"),
    }
    Ok(())
}
