//! Benchmark: the web console on a key with 100,000 links. Starts Postgres,
//! idalloc and a writer with its REST listener, creates the links through
//! `BatchCreateLinks`, gives a fifth of them lifetime clicks and the most
//! recent thousand a day of minute rollups (written straight into the
//! rollup tables), disables one in a hundred, signs in, and then times each
//! page one request at a time (a person's clicks, not a load test). The
//! reference, measured in the same run, is the REST API's first page of the
//! same key's links (`GET /api/v1/links?page_size=50`), the least the
//! console's listing could cost.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-console`

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use tinyurl_harness::Stack;
use tinyurl_harness::services::{HttpResponse, authed, http_send, links_client};
use tinyurl_proto::v1::{BatchCreateLinksRequest, CreateLinkRequest};

#[derive(Parser)]
#[command(name = "bench-console", about = "console page times on 100,000 links")]
struct Args {
    /// Links of the signed-in key.
    #[arg(long, default_value_t = 100_000)]
    links: usize,
    /// Requests timed per page.
    #[arg(long, default_value_t = 40)]
    samples: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let stack = Stack::builder().replicas(0).without_redis().start().await?;
    let (writer, rest) = stack.setup.start_with_rest(&[]).await?;
    let key = stack.setup.create_api_key("console-bench")?;

    let started = Instant::now();
    let mut links = links_client(&writer)?;
    let mut codes = Vec::with_capacity(args.links);
    for first in (0..args.links).step_by(1_000) {
        let batch = (first..(first + 1_000).min(args.links))
            .map(|n| CreateLinkRequest {
                // A thousand hosts, a hundred links each: what a search
                // by host narrows to.
                target_url: format!(
                    "https://www.site{}.example/articles/{n}/a-readable-slug",
                    n % 1_000
                ),
                ..CreateLinkRequest::default()
            })
            .collect();
        let response = links
            .batch_create_links(authed(BatchCreateLinksRequest { links: batch }, &key))
            .await?
            .into_inner();
        for result in response.results {
            match result.result {
                Some(tinyurl_proto::v1::batch_create_links_result::Result::Link(link)) => {
                    codes.push(link.code);
                }
                other => anyhow::bail!("a create failed: {other:?}"),
            }
        }
    }
    println!(
        "created {} links in {:.1} s",
        codes.len(),
        started.elapsed().as_secs_f64()
    );

    // Clicks and states, written straight into the tables.
    let (db, connection) =
        tokio_postgres::connect(&stack.database.primary_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let now_minute = i32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            / 60,
    )?;
    db.batch_execute(&format!(
        "INSERT INTO click_totals (code, clicks, bot_clicks)
             SELECT code, (hashtext(code) & 1023) + 1, hashtext(code) & 15
             FROM links WHERE hashtext(code) % 5 = 0 AND target_url IS NOT NULL;
         -- In minute order, as folds write them (the retention's BRIN
         -- index relies on it).
         INSERT INTO click_minutes (code, minute, class, clicks, counts)
             SELECT l.code, {now_minute} - m, 0, 1 + m % 9,
                    (SELECT jsonb_object_agg(d, jsonb_build_object('value-' || (m % 12), 1 + m % 9))
                       FROM generate_series(1, 4) d)
             FROM (SELECT code FROM links WHERE target_url IS NOT NULL
                   ORDER BY created_at DESC LIMIT 1000) l,
                  generate_series(0, 1439, 7) m
             ORDER BY {now_minute} - m;
         -- The roll-up runs every minute two minutes behind: the last
         -- minutes' rows are still to be rolled up.
         UPDATE click_rollup_mark SET rolled_through = {now_minute} - 3;
         -- What the roll-up would have made of the minutes at or before
         -- its mark: the day rollups, the keys' day totals and the links'
         -- ranks (the lifetime totals less the minutes after the mark).
         INSERT INTO click_days (code, day, dimension, value, class, clicks)
             SELECT code, minute / 1440, dimension, value, class, sum(clicks)
             FROM click_minute_rows
             WHERE minute <= (SELECT rolled_through FROM click_rollup_mark)
             GROUP BY code, minute / 1440, dimension, value, class;
         INSERT INTO owner_click_days (owner_key_id, day, bot, clicks)
             SELECT l.owner_key_id, d.day, d.class <> 0, sum(d.clicks)
             FROM click_days d JOIN links l ON l.code = d.code
             WHERE d.dimension = 0 GROUP BY 1, 2, 3;
         INSERT INTO click_totals AS t (code, clicks, bot_clicks)
             SELECT code, sum(clicks), 0 FROM click_minutes
             WHERE class = 0
               AND minute > (SELECT rolled_through FROM click_rollup_mark)
             GROUP BY code
             ON CONFLICT (code) DO UPDATE SET clicks = t.clicks + EXCLUDED.clicks;
         INSERT INTO click_ranks (owner_key_id, code, created_at, clicks)
             SELECT l.owner_key_id, l.code, l.created_at, t.clicks - COALESCE(recent.clicks, 0)
             FROM click_totals t JOIN links l ON l.code = t.code
             LEFT JOIN (SELECT code, sum(clicks) AS clicks FROM click_minutes
                        WHERE class = 0
                          AND minute > (SELECT rolled_through FROM click_rollup_mark)
                        GROUP BY code) recent ON recent.code = t.code
             WHERE t.clicks > COALESCE(recent.clicks, 0);
         UPDATE links SET flags = flags | 2 WHERE hashtext(code) % 100 = 0;"
    ))
    .await?;
    // As autovacuum leaves tables at rest: statistics and the visibility
    // map (index-only counts). VACUUM cannot share a statement batch.
    db.batch_execute("VACUUM ANALYZE").await?;

    let clicks: i64 = db
        .query_one(
            "SELECT (SELECT sum(clicks) FROM click_totals)::bigint
                  + (SELECT sum(clicks) FROM click_minutes)::bigint",
            &[],
        )
        .await?
        .get(0);
    println!("{clicks} clicks in the totals and the minute rollups");
    let host_index: i64 = db
        .query_one(
            "SELECT sum(pg_relation_size(relid))::bigint FROM pg_partition_tree('links_owner_host')",
            &[],
        )
        .await?
        .get(0);
    println!(
        "the host search index: {:.1} B/link",
        host_index as f64 / codes.len() as f64
    );
    let ranks = db
        .query_one(
            "SELECT (pg_total_relation_size('click_ranks')::float8 / greatest(count(*), 1))::float8,
                    count(*) FROM click_ranks",
            &[],
        )
        .await?;
    println!(
        "the most-clicked ranks: {:.1} B per link with clicks ({} links)",
        ranks.get::<_, f64>(0),
        ranks.get::<_, i64>(1)
    );
    let sign_in = http_send(
        rest,
        "POST",
        "/console/sign-in",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        Some(format!("key={key}").as_bytes()),
    )
    .await?;
    ensure!(sign_in.status == 303, "sign-in: {}", sign_in.status);
    let cookie = sign_in
        .header("set-cookie")
        .and_then(|value| value.split(';').next())
        .context("a session cookie")?
        .to_owned();
    let first_page = page(rest, &cookie, "/console/links").await?;
    let next =
        between(&first_page.text(), "/console/links?after=", "\"").context("a next page link")?;
    let csrf =
        between(&first_page.text(), "name=\"csrf\" value=\"", "\"").context("the csrf token")?;
    let clicked = &codes[codes.len() - 1];
    let most_clicked = page(rest, &cookie, "/console/links?sort=clicks").await?;
    let next_most_clicked = between(&most_clicked.text(), "sort=clicks&amp;after=", "\"")
        .context("a next page of the most clicked")?;

    let bearer = format!("Bearer {key}");
    let mut rows = Vec::new();
    let mut reference = time(args.samples, || async {
        let response = http_send(
            rest,
            "GET",
            "/api/v1/links?page_size=50",
            &[("Authorization", &bearer)],
            None,
        )
        .await?;
        ensure!(response.status == 200, "REST list: {}", response.status);
        Ok(())
    })
    .await?;
    let reference_p50 = reference.percentile_ms(0.5);
    rows.push(("REST GET /api/v1/links (reference)".to_owned(), reference));
    let pages = [
        ("overview", "/console/".to_owned()),
        ("links, first page", "/console/links".to_owned()),
        ("links, next page", format!("/console/links?after={next}")),
        (
            "links, most clicked",
            "/console/links?sort=clicks".to_owned(),
        ),
        (
            "links, most clicked, next page",
            format!("/console/links?sort=clicks&after={next_most_clicked}"),
        ),
        (
            // Where the links nobody clicked begin (the last year's
            // microseconds: past every link's creation).
            "links, most clicked, the unclicked",
            "/console/links?sort=clicks&after=c0.253402300799999999.zzz".to_owned(),
        ),
        (
            "links, search by host (100 found)",
            "/console/links?q=site427.example".to_owned(),
        ),
        (
            "links, search by URL start (1 found)",
            "/console/links?q=https%3A%2F%2Fwww.site427.example%2Farticles%2F9427%2F".to_owned(),
        ),
        (
            "links, search by code",
            format!(
                "/console/links?q={}",
                clicked.chars().take(5).collect::<String>()
            ),
        ),
        (
            "links, search matching every link",
            "/console/links?q=site".to_owned(),
        ),
        (
            "links, disabled",
            "/console/links?state=disabled".to_owned(),
        ),
        (
            "a link, 24 h of clicks",
            format!("/console/links/{clicked}"),
        ),
        (
            "a link, 7 days of clicks",
            format!("/console/links/{clicked}?range=7d"),
        ),
        (
            "a link's QR (SVG)",
            format!("/console/links/{clicked}/qr.svg"),
        ),
    ];
    let mut sizes = vec![None];
    for (name, path) in pages {
        let size = page(rest, &cookie, &path).await?.body.len();
        let sample = time(args.samples, || async {
            let response = page(rest, &cookie, &path).await?;
            ensure!(response.status == 200, "{path}: {}", response.status);
            Ok(())
        })
        .await?;
        rows.push((name.to_owned(), sample));
        sizes.push(Some(size));
    }
    sizes.push(None);
    let mut created = 0;
    let create = time(args.samples, || {
        created += 1;
        let body = format!(
            "csrf={csrf}&target_url=https%3A%2F%2Fexample.com%2Fconsole-bench%2F{created}&redirect_type=302"
        );
        let cookie = &cookie;
        async move {
            let response = http_send(
                rest,
                "POST",
                "/console/links",
                &[
                    ("Cookie", cookie),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Sec-Fetch-Site", "same-origin"),
                ],
                Some(body.as_bytes()),
            )
            .await?;
            ensure!(response.status == 303, "create: {}", response.status);
            Ok(())
        }
    })
    .await?;
    rows.push(("create (form post)".to_owned(), create));

    println!(
        "\n{} links, {} requests per row, one at a time\n",
        codes.len(),
        args.samples
    );
    println!("| page | p50 ms | p95 ms | max ms | p50 ÷ REST list p50 | bytes |");
    println!("|---|---:|---:|---:|---:|---:|");
    for ((name, mut sample), size) in rows.into_iter().zip(sizes) {
        let p50 = sample.percentile_ms(0.5);
        println!(
            "| {name} | {p50:.2} | {:.2} | {:.2} | {:.2} | {} |",
            sample.percentile_ms(0.95),
            sample.percentile_ms(1.0),
            p50 / reference_p50,
            size.map_or_else(String::new, |size| size.to_string())
        );
    }
    drop(writer);
    Ok(())
}

async fn page(
    rest: std::net::SocketAddr,
    cookie: &str,
    path: &str,
) -> anyhow::Result<HttpResponse> {
    http_send(rest, "GET", path, &[("Cookie", cookie)], None).await
}

/// The text between `start` and the next `end` in `text`.
fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(text[from..to].replace("&amp;", "&"))
}

/// The times of one page's requests.
struct Sample(Vec<Duration>);

impl Sample {
    fn percentile_ms(&mut self, percentile: f64) -> f64 {
        self.0.sort_unstable();
        let index = ((self.0.len().saturating_sub(1)) as f64 * percentile).round() as usize;
        self.0
            .get(index)
            .map_or(f64::NAN, |time| time.as_secs_f64() * 1000.0)
    }
}

/// Times `samples` calls of `request`, one after another, after two warm-ups.
async fn time<F, Fut>(samples: usize, mut request: F) -> anyhow::Result<Sample>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for _ in 0..2 {
        request().await?;
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let at = Instant::now();
        request().await?;
        times.push(at.elapsed());
    }
    Ok(Sample(times))
}
