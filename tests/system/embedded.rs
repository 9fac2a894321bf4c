//! The `tinyurl` binary as a user runs it: `tinyurl up` on a fresh
//! directory, the client against it, redirects over real HTTP, a restart on
//! the same data, and a bulk import interrupted half-way and resumed.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use tinyurl_harness::embedded::Embedded;
use tinyurl_harness::process::ScratchDir;
use tinyurl_harness::services::http_request;
use tinyurl_harness::wait_until;
use tinyurl_runtime::sqlite::Sqlite;

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The path of a short URL printed by the client.
fn path_of(short_url: &str, system: &Embedded) -> anyhow::Result<String> {
    let prefix = format!("http://{}", system.http);
    short_url
        .strip_prefix(&prefix)
        .map(str::to_owned)
        .with_context(|| format!("{short_url:?} is not under {prefix}"))
}

/// `tinyurl up` on a fresh directory with the key its first start printed.
struct Up {
    system: Embedded,
    key: String,
    // Declared last: dropped after the system that runs in it.
    _dir: ScratchDir,
}

impl Up {
    async fn start(name: &str) -> anyhow::Result<Self> {
        let dir = ScratchDir::new(name, None)?;
        let system = Embedded::start(dir.path()).await?;
        let key = system
            .printed_key
            .clone()
            .with_context(|| format!("a fresh start prints an API key:\n{}", system.banner()))?;
        Ok(Self {
            system,
            key,
            _dir: dir,
        })
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        self.system.cli(&self.key, args)
    }

    /// Shortens `target` with the client and answers the short URL's path.
    fn shorten(&self, target: &str) -> anyhow::Result<String> {
        let shortened = self.cli(&["shorten", target])?;
        ensure!(
            shortened.status.success(),
            "shorten failed: {}",
            stderr(&shortened)
        );
        path_of(
            stdout(&shortened).lines().next().unwrap_or_default().trim(),
            &self.system,
        )
    }

    async fn get(&self, path: &str) -> anyhow::Result<tinyurl_harness::services::HttpResponse> {
        http_request(self.system.http, "GET", path).await
    }

    /// Shortens to the alias `guide` with status 308; `first` are options
    /// before the command (`--json`).
    fn shorten_guide(&self, first: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut args = first.to_vec();
        args.extend([
            "shorten",
            "https://example.org/",
            "--alias",
            "guide",
            "--status",
            "308",
        ]);
        let created = self.cli(&args)?;
        ensure!(created.status.success(), "{}", stderr(&created));
        Ok(created)
    }

    fn database_url(&self) -> String {
        format!("sqlite:{}", self.system.data_path().display())
    }
}

#[tokio::test]
async fn a_fresh_start_keeps_its_data_and_first_key_to_the_owner() -> anyhow::Result<()> {
    let up = Up::start("embedded-fresh").await?;
    let system = &up.system;
    ensure!(system.data_path().is_file(), "the database file is created");
    // The data holds the code key and the key hashes: owner only. The first
    // key went to a file, not to standard output (a pipe here).
    let mode = |path: &std::path::Path| -> anyhow::Result<u32> {
        use std::os::unix::fs::PermissionsExt as _;
        Ok(std::fs::metadata(path)
            .with_context(|| format!("{}", path.display()))?
            .permissions()
            .mode()
            & 0o777)
    };
    let data = system.data_path();
    let directory = data.parent().context("the data has a directory")?;
    ensure!(
        mode(directory)? == 0o700,
        "directory {:o}",
        mode(directory)?
    );
    for suffix in ["", "-wal", "-shm", ".api-key"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", data.display()));
        ensure!(
            mode(&path)? == 0o600,
            "{} is {:o}",
            path.display(),
            mode(&path)?
        );
    }
    ensure!(
        !system.banner().contains(&up.key),
        "the key is not on standard output"
    );
    ensure!(system.banner().contains(&format!("http://{}", system.http)));
    Ok(())
}

#[tokio::test]
async fn shorten_then_redirect_with_an_alias_and_each_status() -> anyhow::Result<()> {
    let up = Up::start("embedded-shorten").await?;
    let path = up.shorten("https://example.com/landing?x=1")?;
    let response = up.get(&path).await?;
    ensure!(response.status == 302, "GET {path}: {}", response.status);
    ensure!(response.header("location") == Some("https://example.com/landing?x=1"));

    let created = up.shorten_guide(&["--json"])?;
    let link: serde_json::Value = serde_json::from_slice(&created.stdout)?;
    ensure!(
        link["code"] == "guide" && link["status"] == 308 && link["is_alias"] == true,
        "{link}"
    );
    let response = up.get("/guide").await?;
    ensure!(response.status == 308 && response.header("location") == Some("https://example.org/"));
    Ok(())
}

#[tokio::test]
async fn the_client_exits_with_the_documented_code_and_the_servers_reason() -> anyhow::Result<()> {
    let up = Up::start("embedded-errors").await?;
    up.shorten_guide(&[])?;
    let cases: [(&[&str], i32, &str); 5] = [
        (&["shorten", "ftp://example.com/"], 4, "scheme"),
        (
            &["shorten", "https://example.com/", "--alias", "guide"],
            4,
            "is taken",
        ),
        (&["get", "NoSuch1"], 3, "no link"),
        (
            &["--server", "http://127.0.0.1:1", "list"],
            5,
            "cannot reach the writer at http://127.0.0.1:1",
        ),
        (
            &["shorten", "https://example.com/", "--status", "303"],
            2,
            "301, 302, 307 or 308",
        ),
    ];
    for (args, code, reason) in cases {
        let output = up.cli(args)?;
        ensure!(
            output.status.code() == Some(code),
            "{args:?}: exit {:?}, {}",
            output.status.code(),
            stderr(&output)
        );
        ensure!(
            stderr(&output).contains(reason),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let unauthenticated = up.system.cli("tu_wrong", &["list"])?;
    ensure!(
        unauthenticated.status.code() == Some(6),
        "{}",
        stderr(&unauthenticated)
    );
    Ok(())
}

#[tokio::test]
async fn disable_enable_update_and_delete_from_the_client_reach_the_redirect_at_once()
-> anyhow::Result<()> {
    let up = Up::start("embedded-lifecycle").await?;
    up.shorten("https://example.com/first")?;
    up.shorten_guide(&[])?;
    ensure!(up.get("/guide").await?.status == 308);

    // The writer invalidates the redirect's caches: 410 at once, then back.
    ensure!(up.cli(&["disable", "guide"])?.status.success());
    ensure!(up.get("/guide").await?.status == 410);
    ensure!(up.cli(&["enable", "guide"])?.status.success());
    ensure!(up.get("/guide").await?.status == 308);
    let updated = up.cli(&[
        "update",
        "guide",
        "--url",
        "https://example.net/",
        "--status",
        "301",
    ])?;
    ensure!(updated.status.success(), "{}", stderr(&updated));
    let response = up.get("/guide").await?;
    ensure!(response.status == 301 && response.header("location") == Some("https://example.net/"));
    let listed = up.cli(&["--json", "list"])?;
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout)?;
    ensure!(
        listed.len() == 2 && listed[0]["code"] == "guide",
        "{listed:?}"
    );
    ensure!(up.cli(&["delete", "guide"])?.status.success());
    ensure!(up.get("/guide").await?.status == 404);
    // The deleted alias is retired, even for the key that owned it.
    let reclaimed = up.cli(&["shorten", "https://example.org/again", "--alias", "guide"])?;
    ensure!(
        reclaimed.status.code() == Some(4) && stderr(&reclaimed).contains("never reissued"),
        "{}",
        stderr(&reclaimed)
    );
    Ok(())
}

#[tokio::test]
async fn a_restart_keeps_the_links_and_the_code_key_and_prints_no_new_key() -> anyhow::Result<()> {
    let mut up = Up::start("embedded-restart").await?;
    let path = up.shorten("https://example.com/landing")?;
    let status = up.system.stop()?;
    ensure!(status.success(), "up exits cleanly on SIGTERM: {status}");
    up.system.start_again().await?;
    ensure!(
        up.system.printed_key.is_none(),
        "the key is printed only once:\n{}",
        up.system.banner()
    );
    ensure!(
        up.get(&path).await?.status == 302,
        "a link survives a restart"
    );
    // New codes never collide with old ones: the code key is kept.
    let new_path = up.shorten("https://example.com/after-restart")?;
    ensure!(new_path != path);
    ensure!(
        up.get(&new_path).await?.header("location") == Some("https://example.com/after-restart")
    );
    Ok(())
}

#[tokio::test]
async fn api_keys_made_listed_and_revoked_on_the_data_file_of_a_running_up() -> anyhow::Result<()> {
    let up = Up::start("embedded-keys").await?;
    up.shorten("https://example.com/first-keys-link")?;
    let database_url = up.database_url();
    let created_key = up.system.cli(
        "",
        &[
            "api-key",
            "create",
            "--name",
            "second",
            "--database-url",
            &database_url,
        ],
    )?;
    ensure!(created_key.status.success(), "{}", stderr(&created_key));
    let second_key = stdout(&created_key).trim().to_owned();
    // A key sees only its own links.
    let listed = up.system.cli(&second_key, &["--json", "list"])?;
    ensure!(
        listed.status.success()
            && serde_json::from_slice::<Vec<serde_json::Value>>(&listed.stdout)?.is_empty()
    );

    // Listed without their values, and revoked from the command line: the
    // running system refuses the key within a second, not after its cache.
    let keys = up.system.cli(
        "",
        &["--json", "api-key", "list", "--database-url", &database_url],
    )?;
    ensure!(keys.status.success(), "{}", stderr(&keys));
    let keys: Vec<serde_json::Value> = serde_json::from_slice(&keys.stdout)?;
    ensure!(
        keys.len() == 2 && keys.iter().all(|key| key.get("key").is_none()),
        "{keys:?}"
    );
    ensure!(keys[1]["name"] == "second" && keys[1]["scope"] == "manage");
    ensure!(
        keys[0]["scope"] == "admin",
        "the first key is the operator's: {keys:?}"
    );
    ensure!(!keys[1]["last_used_at"].is_null(), "the list call used it");
    let second_id = keys[1]["id"].to_string();
    let revoked = up.system.cli(
        "",
        &[
            "api-key",
            "revoke",
            &second_id,
            "--database-url",
            &database_url,
        ],
    )?;
    ensure!(revoked.status.success(), "{}", stderr(&revoked));
    let started = std::time::Instant::now();
    let system = &up.system;
    wait_until("the revoked key refused", Duration::from_secs(10), || {
        let refused = system
            .cli(&second_key, &["list"])
            .map(|output| output.status.code() == Some(6));
        async move { refused }
    })
    .await?;
    println!(
        "tinyurl up refused a revoked key after {:?}",
        started.elapsed()
    );
    Ok(())
}

const ROWS: usize = 100_000;

/// Row `index` of the import file and whether it is good; every 100th row
/// is bad, in one of several ways.
fn import_row(index: usize) -> (String, bool) {
    if index % 100 == 99 {
        let bad = match (index / 100) % 5 {
            0 => format!("ftp://example.com/{index}"),
            1 => format!("https://user:pass@example.com/{index}"),
            2 => format!("https://example.com/{index},,next tuesday"),
            3 => format!("https://example.com/{index},bad alias!,"),
            _ => "not a url".to_owned(),
        };
        return (bad, false);
    }
    let row = if index.is_multiple_of(50) {
        format!("https://example.com/item/{index},imp-{index},30d")
    } else {
        format!("https://example.com/item/{index}")
    };
    (row, true)
}

async fn count_links(db: &Sqlite) -> anyhow::Result<i64> {
    Ok(db
        .run(|connection| connection.query_row("SELECT count(*) FROM links", [], |row| row.get(0)))
        .await?)
}

#[tokio::test]
async fn import_interrupted_half_way_and_resumed_creates_each_good_row_once() -> anyhow::Result<()>
{
    let dir = ScratchDir::new("import", None)?;
    let system = Embedded::start(dir.path()).await?;
    let key = system.printed_key.clone().context("first key")?;
    let file = dir.path().join("links.csv");
    let mut csv = std::io::BufWriter::new(std::fs::File::create(&file)?);
    writeln!(csv, "url,alias,expires")?;
    let mut good = 0;
    for index in 0..ROWS {
        let (row, is_good) = import_row(index);
        good += usize::from(is_good);
        writeln!(csv, "{row}")?;
    }
    csv.into_inner()?.sync_all()?;

    // First run: SIGKILL once about half the good rows are in.
    let db = Sqlite::open(&system.data_path(), 1, Duration::from_secs(5)).await?;
    let mut first = system
        .cli_command(
            &key,
            &[
                "import",
                file.to_str().context("utf-8 path")?,
                "--batch",
                "200",
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    wait_until("half of the import", Duration::from_secs(300), || async {
        Ok(count_links(&db).await? >= (good / 2) as i64)
    })
    .await?;
    first.kill()?;
    first.wait()?;
    let after_kill = count_links(&db).await?;
    ensure!(
        after_kill < good as i64,
        "killed before the end ({after_kill} of {good})"
    );

    // Second run to completion.
    let second = system.cli(
        &key,
        &["--json", "import", file.to_str().context("utf-8 path")?],
    )?;
    ensure!(
        second.status.code() == Some(4),
        "rejected rows make exit code 4: {}",
        stderr(&second)
    );
    let summary: serde_json::Value = serde_json::from_slice(&second.stdout)
        .with_context(|| format!("summary: {}", stdout(&second)))?;
    ensure!(summary["rows"] == ROWS as u64, "{summary}");
    ensure!(summary["rejected"] == (ROWS - good) as u64, "{summary}");
    let created = summary["created"].as_u64().unwrap_or_default();
    let replayed = summary["already_imported"].as_u64().unwrap_or_default();
    ensure!(created + replayed == good as u64, "{summary}");
    ensure!(
        replayed as i64 >= after_kill,
        "what the first run created is replayed: {summary}"
    );

    // Exactly one link per good row.
    let targets: Vec<String> = db
        .run(|connection| {
            let mut statement = connection.prepare("SELECT target_url FROM links")?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect()
        })
        .await?;
    ensure!(
        targets.len() == good,
        "{} links for {good} good rows",
        targets.len()
    );
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for target in &targets {
        *seen.entry(target.as_str()).or_default() += 1;
    }
    ensure!(
        seen.values().all(|count| *count == 1),
        "a good row was created twice"
    );
    for index in (0..ROWS).filter(|index| import_row(*index).1) {
        ensure!(
            seen.contains_key(format!("https://example.com/item/{index}").as_str()),
            "row {index} missing"
        );
    }

    // Every bad row in the report, with a reason.
    let report_path = summary["error_report"]
        .as_str()
        .context("an error report")?;
    let mut report = csv_reader(report_path)?;
    let mut reported = 0;
    for record in report.records() {
        let record = record?;
        let line: usize = record.get(0).unwrap_or_default().parse()?;
        // Line 1 is the header; row `index` is on line `index + 2`.
        ensure!(
            !import_row(line - 2).1,
            "line {line} is a good row but was rejected: {record:?}"
        );
        ensure!(
            !record.get(5).unwrap_or_default().is_empty(),
            "a reason for line {line}"
        );
        reported += 1;
    }
    ensure!(reported == ROWS - good, "{reported} rows reported");

    // Export writes every link; it imports back as the same URLs.
    let exported = dir.path().join("export.csv");
    let export = system.cli(&key, &["export", exported.to_str().context("utf-8 path")?])?;
    ensure!(export.status.success(), "{}", stderr(&export));
    ensure!(
        csv_reader(exported.to_str().context("utf-8")?)?
            .records()
            .count()
            == good
    );
    Ok(())
}

fn csv_reader(path: &str) -> anyhow::Result<csv::Reader<std::fs::File>> {
    csv::Reader::from_path(path).with_context(|| format!("cannot read {path}"))
}

/// Lifetime clicks (humans) of `code`, from `tinyurl stats --json`.
fn lifetime_clicks(system: &Embedded, key: &str, code: &str) -> anyhow::Result<u64> {
    let output = system.cli(key, &["--json", "stats", code])?;
    ensure!(output.status.success(), "stats failed: {}", stderr(&output));
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    stats["lifetime_clicks"]
        .as_u64()
        .with_context(|| format!("no lifetime_clicks in {stats}"))
}

/// The embedded store counts unique visitors too (sketches and the day's key
/// in the process's memory): ten people, each three times, are ten; a
/// person asking not to be tracked is a click only.
#[tokio::test]
async fn unique_visitors_on_the_embedded_store() -> anyhow::Result<()> {
    use tinyurl_harness::services::http_request_with;
    let dir = ScratchDir::new("embedded-visitors", None)?;
    let system = Embedded::start(dir.path()).await?;
    let key = system
        .printed_key
        .clone()
        .context("a fresh start prints an API key")?;
    let shortened = system.cli(&key, &["--json", "shorten", "https://example.com/people"])?;
    ensure!(shortened.status.success(), "{}", stderr(&shortened));
    let code = serde_json::from_slice::<serde_json::Value>(&shortened.stdout)?["code"]
        .as_str()
        .context("a code")?
        .to_owned();
    let path = format!("/{code}");
    for _ in 0..3 {
        for person in 0..10 {
            let agent = format!(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0.0.0 Safari/537.36",
                110 + person
            );
            let response =
                http_request_with(system.http, "GET", &path, &[("User-Agent", &agent)]).await?;
            ensure!(response.status == 302);
        }
    }
    let asking = [
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0",
        ),
        ("DNT", "1"),
    ];
    ensure!(
        http_request_with(system.http, "GET", &path, &asking)
            .await?
            .status
            == 302
    );
    wait_until("31 clicks folded", Duration::from_secs(30), || async {
        Ok(lifetime_clicks(&system, &key, &code)? >= 31)
    })
    .await?;
    let output = system.cli(&key, &["--json", "stats", &code])?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    ensure!(stats["lifetime_clicks"] == 31, "{stats}");
    ensure!(stats["visitors"] == 10, "ten people: {stats}");
    ensure!(stats["daily_visitors"][0]["visitors"] == 10, "{stats}");
    let text = system.cli(&key, &["stats", &code])?;
    ensure!(
        stdout(&text).contains("10 unique visitors"),
        "{}",
        stdout(&text)
    );
    Ok(())
}

#[tokio::test]
async fn stats_count_every_folded_click_once_across_a_kill_and_restart() -> anyhow::Result<()> {
    let dir = ScratchDir::new("embedded-stats", None)?;
    let mut system = Embedded::start(dir.path()).await?;
    let key = system
        .printed_key
        .clone()
        .context("a fresh start prints an API key")?;
    let shortened = system.cli(&key, &["--json", "shorten", "https://example.com/counted"])?;
    ensure!(shortened.status.success(), "{}", stderr(&shortened));
    let code = serde_json::from_slice::<serde_json::Value>(&shortened.stdout)?["code"]
        .as_str()
        .context("a code")?
        .to_owned();

    for _ in 0..300 {
        let response = http_request(system.http, "GET", &format!("/{code}")).await?;
        ensure!(response.status == 302);
    }
    // HEAD and previews are not clicks.
    http_request(system.http, "HEAD", &format!("/{code}")).await?;
    http_request(system.http, "GET", &format!("/{code}+")).await?;
    wait_until("300 clicks folded", Duration::from_secs(30), || async {
        Ok(lifetime_clicks(&system, &key, &code)? >= 300)
    })
    .await?;
    ensure!(lifetime_clicks(&system, &key, &code)? == 300);

    // SIGKILL, restart on the same data: what was folded stays, once.
    system.kill()?;
    system.start_again().await?;
    ensure!(
        lifetime_clicks(&system, &key, &code)? == 300,
        "folded clicks survive a kill"
    );
    for _ in 0..200 {
        let response = http_request(system.http, "GET", &format!("/{code}")).await?;
        ensure!(response.status == 302);
    }
    wait_until("500 clicks folded", Duration::from_secs(30), || async {
        Ok(lifetime_clicks(&system, &key, &code)? >= 500)
    })
    .await?;
    ensure!(lifetime_clicks(&system, &key, &code)? == 500);

    // The readable form: totals, a chart, the top lists.
    let text = system.cli(&key, &["stats", &code, "--since", "1h", "--by", "minute"])?;
    ensure!(text.status.success(), "{}", stderr(&text));
    let text = stdout(&text);
    ensure!(text.contains(&format!("{code}: 500 clicks")), "{text}");
    ensure!(text.contains("clicks per minute"), "{text}");
    // The chart has bars: braille cells with dots in them, not just a frame.
    let dotted = text
        .lines()
        .filter(|line| {
            line.chars()
                .any(|cell| ('\u{2801}'..='\u{28FF}').contains(&cell))
        })
        .count();
    ensure!(dotted >= 8, "a chart of bars: {text}");
    ensure!(text.contains("referrers  - 500"), "{text}");
    // The same as CSV rows, on the embedded store: the total and the
    // referrer, summed over the minutes.
    let csv = system.cli(
        &key,
        &[
            "stats",
            &code,
            "--since",
            "1h",
            "--by",
            "minute",
            "--csv",
            "--dimensions",
            "total,referrer",
        ],
    )?;
    ensure!(csv.status.success(), "{}", stderr(&csv));
    let csv = stdout(&csv);
    let mut lines = csv.lines();
    ensure!(
        lines.next() == Some("start,dimension,value,clicks,bot_clicks"),
        "{csv}"
    );
    let mut sums = std::collections::HashMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        ensure!(fields.len() == 5, "{line}");
        *sums.entry((fields[1], fields[2])).or_insert(0u64) += fields[3].parse::<u64>()?;
    }
    ensure!(
        sums == std::collections::HashMap::from([(("total", ""), 500), (("referrer", "-"), 500)]),
        "{csv}"
    );
    // A reader that goes away (`tinyurl stats … | head -n 1`) ends the client
    // quietly: here the pipe is closed before the client writes anything.
    let mut closed_early = system
        .cli_command(&key, &["stats", &code])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    drop(closed_early.stdout.take());
    let finished = closed_early.wait_with_output()?;
    ensure!(
        finished.status.success() && finished.stderr.is_empty(),
        "a closed standard output: {:?} {}",
        finished.status,
        stderr(&finished)
    );
    // Another key's view, and a bad range, fail with their exit codes.
    let bad = system.cli(&key, &["stats", &code, "--since", "30d", "--by", "hour"])?;
    ensure!(bad.status.code() == Some(4), "{}", stderr(&bad));
    Ok(())
}

/// `tinyurl block-host`, run on the store of a running `tinyurl up`, reaches
/// the redirect's in-process cache within about a second (the running
/// system rewrites the links' entries when it sees the stored list change),
/// whatever the spelling of the host; the owner cannot bring the link back,
/// and `unblock-host` does.
#[tokio::test]
async fn a_block_from_the_command_line_reaches_a_running_up_at_once() -> anyhow::Result<()> {
    let dir = ScratchDir::new("embedded-block", None)?;
    let system = Embedded::start(dir.path()).await?;
    let key = system
        .printed_key
        .clone()
        .with_context(|| format!("a fresh start prints an API key:\n{}", system.banner()))?;
    let shortened = system.cli(&key, &["shorten", "https://Evil.example/phish"])?;
    ensure!(shortened.status.success(), "{}", stderr(&shortened));
    let path = path_of(
        stdout(&shortened).lines().next().unwrap_or_default().trim(),
        &system,
    )?;
    let code = path.trim_start_matches('/').to_owned();
    // Twice: the second answer is the in-process cache's.
    for _ in 0..2 {
        let response = http_request(system.http, "GET", &path).await?;
        ensure!(response.status == 302, "GET {path}: {}", response.status);
    }
    let store = format!("sqlite:{}", system.data_path().display());
    let status_is = |wanted: u16| {
        let path = path.clone();
        let http = system.http;
        move || {
            let path = path.clone();
            async move { Ok(http_request(http, "GET", &path).await?.status == wanted) }
        }
    };

    let blocked = system.cli(
        &key,
        &["block-host", "EVIL.example.", "--database-url", &store],
    )?;
    ensure!(blocked.status.success(), "{}", stderr(&blocked));
    ensure!(
        stdout(&blocked).contains("blocked evil.example; 1 links"),
        "{}",
        stdout(&blocked)
    );
    let blocking = std::time::Instant::now();
    wait_until(
        "410 from the running system",
        Duration::from_secs(10),
        status_is(410),
    )
    .await?;
    let blocked_after = blocking.elapsed();

    let enabled = system.cli(&key, &["enable", &code])?;
    ensure!(
        !enabled.status.success(),
        "the owner re-enabled a blocked link"
    );
    ensure!(
        stderr(&enabled).contains("blocked"),
        "the refusal names the block: {}",
        stderr(&enabled)
    );

    let unblocked = system.cli(
        &key,
        &["unblock-host", "evil.example", "--database-url", &store],
    )?;
    ensure!(unblocked.status.success(), "{}", stderr(&unblocked));
    ensure!(
        stdout(&unblocked).contains("1 links"),
        "{}",
        stdout(&unblocked)
    );
    wait_until("302 again", Duration::from_secs(10), status_is(302)).await?;
    let again = system.cli(
        &key,
        &["unblock-host", "evil.example", "--database-url", &store],
    )?;
    ensure!(
        !again.status.success(),
        "an entry not on the list is refused"
    );
    tinyurl_harness::attacker::row(
        "H2 an owner undoes an operator's block",
        "`tinyurl up` serving a link to `Evil.example` from its in-process cache; `tinyurl block-host EVIL.example.` on its store; the owner's `tinyurl enable`",
        &format!(
            "the running system answered 410 within {:.1} s (the cache's lifetime is 60 s); `enable` refused naming the block",
            blocked_after.as_secs_f64()
        ),
        "`unblock-host` brings back 302",
    );
    Ok(())
}

/// Behind a proxy, one scanner must not throttle everybody: without
/// `--trusted-proxies` every visitor has the proxy's address, and one
/// client's misses make uncached links answer 429 to all; with it, the
/// scanner is throttled by its own address and the others are served.
#[tokio::test]
async fn behind_a_trusted_proxy_a_scanner_throttles_only_itself() -> anyhow::Result<()> {
    use tinyurl_harness::services::http_request_with;
    let dir = ScratchDir::new("embedded-proxy", None)?;
    let mut system = Embedded::start(dir.path()).await?;
    let key = system
        .printed_key
        .clone()
        .context("a fresh start prints an API key")?;
    let mut paths = Vec::new();
    for target in ["https://example.com/one", "https://example.com/two"] {
        let shortened = system.cli(&key, &["shorten", target])?;
        ensure!(shortened.status.success(), "{}", stderr(&shortened));
        paths.push(path_of(
            stdout(&shortened).lines().next().unwrap_or_default().trim(),
            &system,
        )?);
    }
    const SCANNER: &str = "203.0.113.66";
    const VISITOR: &str = "198.51.100.7";
    let scan = |system: &Embedded, round: &'static str| {
        let http = system.http;
        async move {
            let mut last = 0;
            for n in 0..25 {
                let path = format!("/nope{round}{n:04}");
                last = http_request_with(http, "GET", &path, &[("X-Forwarded-For", SCANNER)])
                    .await?
                    .status;
            }
            anyhow::Ok(last)
        }
    };
    system.set_env("TINYURL_SCANNER_404_PER_MINUTE", "20");
    for (round, trusted) in [("a", false), ("b", true)] {
        // A restart empties the in-process caches: the links are uncached.
        system.stop()?;
        if trusted {
            system.set_env("TINYURL_TRUSTED_PROXIES", "127.0.0.1");
        }
        system.start_again().await?;
        let path = &paths[usize::from(trusted)];
        // The allowance is per wall-clock minute: the round must not span
        // the turn of one.
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            % 60;
        if second >= 50 {
            tokio::time::sleep(Duration::from_secs(61 - second)).await;
        }
        ensure!(
            scan(&system, round).await? == 429,
            "the scanner is throttled"
        );
        let visitor =
            http_request_with(system.http, "GET", path, &[("X-Forwarded-For", VISITOR)]).await?;
        let expected = if trusted { 302 } else { 429 };
        ensure!(
            visitor.status == expected,
            "trusted proxy {trusted}: a visitor's first visit answered {}, not {expected}",
            visitor.status
        );
    }
    tinyurl_harness::attacker::row(
        "M3 behind one proxy, one abuser blocks everyone",
        "behind a proxy, one client asks for 25 unknown codes (a scanner; 20 a minute allowed)",
        "429 by its own address once `tinyurl up --trusted-proxies` names the proxy (without it: every visitor shares the proxy's address)",
        "another visitor's first visit to an uncached link: 302 (429 without the setting)",
    );
    Ok(())
}

/// The first API key's file is made anew, mode 0600, whatever was at its
/// path: a symbolic link planted there is replaced, not followed.
#[tokio::test]
async fn the_first_key_file_is_made_anew_and_follows_no_link() -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let dir = ScratchDir::new("embedded-key-file", None)?;
    let data = dir.path().join("data");
    std::fs::DirBuilder::new().mode(0o700).create(&data)?;
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me\n")?;
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644))?;
    let key_path = data.join("tinyurl.db.api-key");
    std::os::unix::fs::symlink(&victim, &key_path)?;

    let system = Embedded::start(dir.path()).await?;
    let key = system
        .printed_key
        .clone()
        .with_context(|| format!("the key was written:\n{}", system.banner()))?;
    ensure!(
        std::fs::read_to_string(&victim)? == "keep me\n",
        "the link's target was written"
    );
    let metadata = std::fs::symlink_metadata(&key_path)?;
    ensure!(
        metadata.file_type().is_file(),
        "the key file is a plain file"
    );
    ensure!(
        metadata.permissions().mode() & 0o777 == 0o600,
        "mode {:o}",
        metadata.permissions().mode()
    );
    ensure!(std::fs::read_to_string(&key_path)?.trim() == key);
    tinyurl_harness::attacker::row(
        "L5 `tinyurl up`'s key file follows links and keeps modes",
        "a symbolic link to another file planted where `tinyurl up` writes the first API key",
        "the planted link replaced by a new file, mode 0600; the link's target untouched",
        "the key is in its file and works",
    );
    Ok(())
}

/// Tags from the command line, on the embedded store: created with a link,
/// shown, listed by, replaced, summed, renamed and deleted.
#[tokio::test]
async fn tags_from_the_command_line() -> anyhow::Result<()> {
    let up = Up::start("embedded-tags").await?;
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let output = up.cli(args)?;
        ensure!(output.status.success(), "{args:?}: {}", stderr(&output));
        Ok(stdout(&output))
    };
    let created = run(&[
        "--json",
        "shorten",
        "https://example.com/a",
        "--alias",
        "with-tags",
        "--tag",
        "News",
        "--tag",
        "spring sale",
    ])?;
    let link: serde_json::Value = serde_json::from_str(&created)?;
    ensure!(
        link["tags"] == serde_json::json!(["news", "spring sale"]),
        "{link}"
    );
    run(&["shorten", "https://example.com/b", "--alias", "plain"])?;
    ensure!(run(&["get", "with-tags"])?.contains("tags: news, spring sale"));

    let listed = run(&["--json", "list", "--tag", "news"])?;
    let listed: serde_json::Value = serde_json::from_str(&listed)?;
    ensure!(
        listed.as_array().is_some_and(|links| links.len() == 1) && listed[0]["code"] == "with-tags",
        "{listed}"
    );
    run(&["update", "with-tags", "--tag", "later"])?;
    let tags: serde_json::Value = serde_json::from_str(&run(&["--json", "tags"])?)?;
    ensure!(
        tags == serde_json::json!([
            { "name": "later", "links": 1, "lifetime_clicks": 0, "lifetime_bot_clicks": 0 }
        ]),
        "{tags}"
    );
    ensure!(run(&["tags", "rename", "later", "archive"])?.contains("on 1 links"));
    ensure!(run(&["tags", "show", "archive"])?.starts_with("archive\t1 links"));
    ensure!(run(&["tags", "delete", "archive"])?.contains("off 1 links"));
    let missing = up.cli(&["tags", "show", "archive"])?;
    ensure!(
        missing.status.code() == Some(3),
        "not found: {}",
        stderr(&missing)
    );
    run(&["update", "with-tags", "--tag", "x"])?;
    run(&["update", "with-tags", "--no-tags"])?;
    ensure!(!run(&["get", "with-tags"])?.contains("tags:"));
    Ok(())
}

/// The rules table (`tinyurl_harness::rules`) on `tinyurl up`, the link made
/// with the command line's `--rule` and `--utm-*`, then changed and
/// refused by it.
#[tokio::test]
async fn rules_and_utm_from_the_command_line() -> anyhow::Result<()> {
    use tinyurl_harness::rules;

    let mut up = Up::start("embedded-rules").await?;
    let database = up._dir.path().join("countries.mmdb");
    tinyurl_harness::geoip::write_country_db(&database, &rules::NETWORKS)?;
    up.system.stop()?;
    up.system
        .set_env("TINYURL_GEOIP_DB", &database.to_string_lossy());
    up.system.set_env("TINYURL_TRUSTED_PROXIES", "127.0.0.0/8");
    up.system.start_again().await?;
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let output = up.cli(args)?;
        ensure!(output.status.success(), "{args:?}: {}", stderr(&output));
        Ok(stdout(&output))
    };

    let rule_arguments = rules::rule_arguments();
    let mut args = vec![
        "--json",
        "shorten",
        rules::TARGET,
        "--alias",
        "ruled",
        "--status",
        "301",
        "--utm-source",
        rules::UTM[0].1,
        "--utm-campaign",
        rules::UTM[1].1,
    ];
    for rule in &rule_arguments {
        args.extend(["--rule", rule.as_str()]);
    }
    let link: serde_json::Value = serde_json::from_str(&run(&args)?)?;
    ensure!(
        link["utm"]
            == serde_json::json!({ "utm_source": "newsletter", "utm_campaign": "spring sale" }),
        "{link}"
    );
    ensure!(
        link["rules"][0]
            == serde_json::json!({
                "devices": ["ios"], "countries": ["DE"], "languages": [],
                "target_url": "https://apps.example/de-ios"
            }),
        "{link}"
    );
    let shown = run(&["get", "ruled"])?;
    ensure!(
        shown.contains("rule 1: device=ios country=DE https://apps.example/de-ios")
            && shown.contains("rule 5: lang=de,fr-ca https://example.com/lang#top")
            && shown.contains(r#"utm: utm_campaign="spring sale" utm_source="newsletter""#),
        "{shown}"
    );

    for (index, visit) in rules::visits().iter().enumerate() {
        let response = tinyurl_harness::services::http_request_with(
            up.system.http,
            "GET",
            "/ruled",
            &visit.headers(),
        )
        .await?;
        ensure!(
            response.status == 301 && response.header("location") == Some(visit.location),
            "visit {index}: {} {:?}, expected {}",
            response.status,
            response.header("location"),
            visit.location
        );
    }

    // The UTM fields given replace the old ones; the rules stay until removed.
    run(&["update", "ruled", "--utm-medium", "email"])?;
    let iphone = [("User-Agent", rules::IPHONE)];
    let location = |response: tinyurl_harness::services::HttpResponse| {
        response.header("location").map(str::to_owned)
    };
    wait_until("the new UTM fields", Duration::from_secs(5), || async {
        let response =
            tinyurl_harness::services::http_request_with(up.system.http, "GET", "/ruled", &iphone)
                .await?;
        Ok(location(response).as_deref() == Some("https://apps.example/ios?utm_medium=email"))
    })
    .await?;
    run(&["update", "ruled", "--no-rules", "--no-utm"])?;
    wait_until("the rules to go", Duration::from_secs(5), || async {
        let response =
            tinyurl_harness::services::http_request_with(up.system.http, "GET", "/ruled", &iphone)
                .await?;
        Ok(location(response).as_deref() == Some(rules::TARGET))
    })
    .await?;
    ensure!(!run(&["get", "ruled"])?.contains("rule 1"));

    for (rule, reason) in [
        (
            "device=tv https://example.com/tv",
            r#"device "tv" is not one of ios, android, desktop"#,
        ),
        (
            "country=Germany https://example.com/de",
            "is not an ISO 3166-1 alpha-2 code",
        ),
        (
            "lang=english! https://example.com/en",
            "is not a language tag",
        ),
        (
            "device=ios javascript:alert(1)",
            "scheme \"javascript\" is not allowed",
        ),
    ] {
        let refused = up.cli(&["shorten", "https://example.com/x", "--rule", rule])?;
        ensure!(
            !refused.status.success() && stderr(&refused).contains(reason),
            "{rule}: {}",
            stderr(&refused)
        );
    }
    let refused = up.cli(&[
        "shorten",
        "https://example.com/x",
        "--rule",
        "https://example.com/y",
    ])?;
    ensure!(
        refused.status.code() == Some(2) && stderr(&refused).contains("needs a condition"),
        "{}",
        stderr(&refused)
    );
    Ok(())
}

/// A visit cap on `tinyurl up`: set by the command line, counted in the
/// process (exactly, across its serving threads), shown, raised, removed.
#[tokio::test]
async fn a_capped_link_from_the_command_line() -> anyhow::Result<()> {
    let up = Up::start("embedded-capped").await?;
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let output = up.cli(args)?;
        ensure!(output.status.success(), "{args:?}: {}", stderr(&output));
        Ok(stdout(&output))
    };
    let visit = |method: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let http = up.system.http;
        async move {
            tinyurl_harness::services::http_request_with(http, method, "/capped", headers)
                .await
                .map(|response| response.status)
        }
    };
    run(&[
        "shorten",
        "https://example.com/c",
        "--alias",
        "capped",
        "--max-visits",
        "3",
    ])?;
    ensure!(run(&["get", "capped"])?.contains("at most 3 visits"));
    const PERSON: &[(&str, &str)] = &[(
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    )];
    const CRAWLER: &[(&str, &str)] = &[(
        "User-Agent",
        "Googlebot/2.1 (+http://www.google.com/bot.html)",
    )];
    ensure!(visit("HEAD", PERSON).await? == 410, "a HEAD uses no visit");
    ensure!(
        visit("GET", CRAWLER).await? == 410,
        "a crawler uses no visit"
    );
    ensure!(visit("GET", &[]).await? == 410, "no User-Agent is a tool");
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(visit("GET", PERSON).await?);
    }
    ensure!(answers == [302, 302, 302, 410, 410], "{answers:?}");
    let shown = run(&["get", "capped"])?;
    ensure!(shown.contains("at most 3 visits (3 used)"), "{shown}");
    run(&["update", "capped", "--max-visits", "4"])?;
    wait_until("the raised cap", Duration::from_secs(5), || async {
        Ok(visit("GET", PERSON).await? == 302)
    })
    .await?;
    ensure!(visit("GET", PERSON).await? == 410);
    run(&["update", "capped", "--no-max-visits"])?;
    wait_until("the cap to go", Duration::from_secs(5), || async {
        Ok(visit("HEAD", PERSON).await? == 302)
    })
    .await?;
    ensure!(!run(&["get", "capped"])?.contains("visits"));
    Ok(())
}

/// A password-protected link on `tinyurl up`: the password given on
/// standard input, never on the command line; the form, a wrong password, the
/// right one (303 and a cookie), the cookie's redirect; the password removed.
#[tokio::test]
async fn a_protected_link_from_the_command_line() -> anyhow::Result<()> {
    let up = Up::start("embedded-password").await?;
    let mut shorten = up
        .system
        .cli_command(
            &up.key,
            &[
                "shorten",
                "https://example.com/behind-a-password",
                "--alias",
                "locked",
                "--password-stdin",
            ],
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    shorten
        .stdin
        .take()
        .context("the client's standard input")?
        .write_all(b"open sesame\n")?;
    let shortened = shorten.wait_with_output()?;
    ensure!(shortened.status.success(), "{}", stderr(&shortened));
    let shown = up.cli(&["get", "locked"])?;
    ensure!(
        stdout(&shown).contains("password protected"),
        "{}",
        stdout(&shown)
    );
    let http = up.system.http;
    let form = tinyurl_harness::services::http_request(http, "GET", "/locked").await?;
    ensure!(
        form.status == 403 && !form.text().contains("behind-a-password"),
        "{} {}",
        form.status,
        form.text()
    );
    let post = |password: &'static str| {
        tinyurl_harness::services::http_send(
            http,
            "POST",
            "/locked",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(password.as_bytes()),
        )
    };
    let wrong = post("password=open+sesam").await?;
    ensure!(
        wrong.status == 403 && !wrong.text().contains("behind-a-password"),
        "{}",
        wrong.status
    );
    let right = post("password=open+sesame").await?;
    ensure!(
        right.status == 303
            && right.header("location") == Some("https://example.com/behind-a-password"),
        "{} {:?}",
        right.status,
        right.headers
    );
    let cookie = right
        .header("set-cookie")
        .and_then(|set| set.split(';').next())
        .context("a cookie")?
        .to_owned();
    let opened = tinyurl_harness::services::http_request_with(
        http,
        "GET",
        "/locked",
        &[("Cookie", cookie.as_str())],
    )
    .await?;
    ensure!(
        opened.status == 302
            && opened.header("location") == Some("https://example.com/behind-a-password"),
        "{} {:?}",
        opened.status,
        opened.headers
    );
    let removed = up.cli(&["update", "locked", "--no-password"])?;
    ensure!(removed.status.success(), "{}", stderr(&removed));
    ensure!(
        !stdout(&up.cli(&["get", "locked"])?).contains("password protected"),
        "the password is gone"
    );
    wait_until("the plain link", Duration::from_secs(5), || async {
        Ok(
            tinyurl_harness::services::http_request(http, "GET", "/locked")
                .await?
                .status
                == 302,
        )
    })
    .await?;
    Ok(())
}

/// Several domains on `tinyurl up` (its embedded store): a domain added by
/// the command line, the same alias on it and on the default domain, each
/// answered by its host, the link named `domain/code` by the other
/// commands, and the domain removed once its link is gone.
#[tokio::test]
async fn domains_from_the_command_line() -> anyhow::Result<()> {
    let up = Up::start("embedded-domains").await?;
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let output = up.cli(args)?;
        ensure!(output.status.success(), "{args:?}: {}", stderr(&output));
        Ok(stdout(&output))
    };
    run(&[
        "domains",
        "add",
        "Go.Example",
        "--not-found-url",
        "https://example.com/lost",
    ])?;
    ensure!(run(&["domains"])?.contains("go.example\tunknown codes → https://example.com/lost"));
    run(&["shorten", "https://example.com/default", "--alias", "same"])?;
    let made = run(&[
        "shorten",
        "https://example.com/on-go",
        "--alias",
        "same",
        "--domain",
        "go.example",
    ])?;
    ensure!(made.contains("/same"), "{made}");
    ensure!(run(&["get", "go.example/same"])?.contains("https://example.com/on-go"));
    // The export names each link's domain, its alias the path there.
    let exported = run(&["export"])?;
    ensure!(
        exported.contains("https://example.com/on-go,same,,same,http")
            && exported.contains(",go.example,,,false")
            && exported
                .lines()
                .next()
                .is_some_and(|header| header.ends_with("domain,tags,max_visits,password_protected")),
        "{exported}"
    );
    let http = up.system.http;
    let on = |host: &'static str, path: &'static str| async move {
        tinyurl_harness::services::http_request_with(http, "GET", path, &[("Host", host)]).await
    };
    wait_until("the domain", Duration::from_secs(10), || async {
        Ok(
            on("go.example", "/same").await?.header("location")
                == Some("https://example.com/on-go"),
        )
    })
    .await?;
    ensure!(
        on("localhost", "/same").await?.header("location") == Some("https://example.com/default")
    );
    ensure!(
        on("go.example", "/nothing").await?.header("location") == Some("https://example.com/lost")
    );
    let refused = up.cli(&["domains", "remove", "go.example"])?;
    ensure!(!refused.status.success(), "a domain with links stays");
    run(&["delete", "go.example/same"])?;
    wait_until("the delete", Duration::from_secs(5), || async {
        Ok(on("go.example", "/same").await?.header("location") == Some("https://example.com/lost"))
    })
    .await?;
    ensure!(
        on("localhost", "/same").await?.status == 302,
        "the default domain's link stays"
    );
    run(&["domains", "remove", "go.example"])?;
    ensure!(!run(&["domains", "list"])?.contains("go.example"));
    Ok(())
}
