//! The web console (`/console/…`) of real writer processes against real
//! Postgres, over HTTP as a browser speaks it: sign-in and its limits,
//! sessions shared by every writer (sign-out, revoked keys, idle timeout),
//! CSRF and cross-site refusals, scopes, and every link action checked
//! through the REST API. The browser itself drives it in `console_browser`.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, ensure};
use tinyurl_harness::services::{self, HttpResponse, http_send};
use tinyurl_harness::{Stack, wait_until};

/// The console tests' parts: no replica and no Redis, one idalloc.
async fn stack() -> anyhow::Result<Stack> {
    Stack::builder().replicas(0).without_redis().start().await
}

/// A browser's view of one console: its cookie, sent back on every request.
struct Browser {
    rest: SocketAddr,
    cookie: Option<String>,
}

impl Browser {
    fn new(rest: SocketAddr) -> Self {
        Self { rest, cookie: None }
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&[(&str, &str)]>,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<HttpResponse> {
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        let cookie = self.cookie.clone();
        if let Some(cookie) = &cookie {
            headers.push(("Cookie", cookie));
        }
        let body = form.map(encode);
        if body.is_some() {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        let response = http_send(
            self.rest,
            method,
            path,
            &headers,
            body.as_deref().map(str::as_bytes),
        )
        .await?;
        if let Some(set) = response.header("set-cookie") {
            let pair = set.split(';').next().unwrap_or_default();
            self.cookie = match pair.split_once('=') {
                Some((_, "")) | None => None,
                Some(_) => Some(pair.to_owned()),
            };
        }
        Ok(response)
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<HttpResponse> {
        self.request("GET", path, None, &[]).await
    }

    /// A form posted as the console's own page posts it.
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<HttpResponse> {
        self.request(
            "POST",
            path,
            Some(form),
            &[("Sec-Fetch-Site", "same-origin")],
        )
        .await
    }

    async fn sign_in(&mut self, key: &str) -> anyhow::Result<HttpResponse> {
        self.post("/console/sign-in", &[("key", key)]).await
    }

    /// The anti-forgery token of a signed-in page.
    async fn csrf(&mut self) -> anyhow::Result<String> {
        let page = self.get("/console/links").await?;
        ensure!(page.status == 200, "the links page: {}", page.status);
        let text = page.text();
        let start = text
            .find("name=\"csrf\" value=\"")
            .context("a csrf field")?
            + "name=\"csrf\" value=\"".len();
        let end = text[start..].find('"').context("the field's end")? + start;
        Ok(text[start..end].to_owned())
    }

    /// Whether the session is refused: pages send the browser to sign in.
    async fn signed_out(&mut self) -> anyhow::Result<bool> {
        let page = self.get("/console/links").await?;
        Ok(page.status == 303 && page.header("location") == Some("/console/sign-in"))
    }
}

fn encode(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(key, value)| format!("{}={}", escape(key), escape(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn escape(raw: &str) -> String {
    raw.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// The REST API's view of a link: status and JSON body.
async fn rest_link(
    rest: SocketAddr,
    key: &str,
    code: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let bearer = format!("Bearer {key}");
    let response = http_send(
        rest,
        "GET",
        &format!("/api/v1/links/{code}"),
        &[("Authorization", &bearer)],
        None,
    )
    .await?;
    let body = serde_json::from_slice(&response.body).unwrap_or_default();
    Ok((response.status, body))
}

fn expect(response: &HttpResponse, status: u16, what: &str) -> anyhow::Result<()> {
    ensure!(
        response.status == status,
        "{what}: expected {status}, got {} {}",
        response.status,
        response.text()
    );
    Ok(())
}

#[tokio::test]
async fn a_key_signs_in_and_manages_its_links() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (_writer, rest) = stack.setup.start_with_rest(&[]).await?;
    let key = stack.setup.create_api_key("console")?;
    let mut browser = Browser::new(rest);

    ensure!(browser.signed_out().await?, "no cookie: sent to sign in");
    let refused = browser.sign_in("tu_not_a_key").await?;
    expect(&refused, 401, "a wrong key")?;
    ensure!(refused.text().contains("not valid"), "{}", refused.text());
    ensure!(browser.cookie.is_none(), "no session for a wrong key");

    let signed = browser.sign_in(&key).await?;
    expect(&signed, 303, "sign-in")?;
    let set = signed.header("set-cookie").context("a cookie")?;
    ensure!(
        set.starts_with("tinyurl-session=")
            && set.contains("HttpOnly")
            && set.contains("SameSite=Strict")
            && set.contains("Path=/")
            && !set.contains("Secure"),
        "plain HTTP: a host-only, script-proof cookie: {set}"
    );
    ensure!(
        !set.contains(&key),
        "the cookie is a session token, not the key"
    );
    let page = browser.get("/console/links").await?;
    expect(&page, 200, "the links page")?;
    let csp = page.header("content-security-policy").unwrap_or_default();
    ensure!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let csrf = browser.csrf().await?;

    // The service's own validation message, next to its field.
    let bad = browser
        .post(
            "/console/links",
            &[("csrf", &csrf), ("target_url", "ftp://example.com/")],
        )
        .await?;
    expect(&bad, 400, "an ftp target")?;
    ensure!(
        bad.text().contains("id=\"target_url-error\"") && bad.text().contains("ftp"),
        "{}",
        bad.text()
    );
    let created = browser
        .post(
            "/console/links",
            &[
                ("csrf", &csrf),
                ("target_url", "https://example.com/console"),
                ("alias", "from-console"),
                ("redirect_type", "307"),
                ("forward_query", "on"),
                ("expires_at", "2035-03-04T05:06"),
            ],
        )
        .await?;
    expect(&created, 303, "a create")?;
    ensure!(created.header("location") == Some("/console/links/from-console?created"));
    let (status, link) = rest_link(rest, &key, "from-console").await?;
    ensure!(status == 200, "the REST API sees it: {status}");
    ensure!(
        link["target_url"] == "https://example.com/console"
            && link["redirect_type"] == 307
            && link["forward_query"] == true
            && link["expires_at"]
                .as_str()
                .is_some_and(|at| at.starts_with("2035-03-04T05:06:00")),
        "created as asked: {link}"
    );
    let taken = browser
        .post(
            "/console/links",
            &[
                ("csrf", &csrf),
                ("target_url", "https://example.com/again"),
                ("alias", "from-console"),
            ],
        )
        .await?;
    expect(&taken, 409, "a taken alias")?;

    let list = browser.get("/console/links").await?;
    ensure!(list.text().contains("/console/links/from-console"));
    let page = browser.get("/console/links/from-console?created").await?;
    expect(&page, 200, "the link's page")?;
    ensure!(page.text().contains("https://example.com/console"));
    for range in ["1h", "24h", "7d", "30d"] {
        let page = browser
            .get(&format!("/console/links/from-console?range={range}"))
            .await?;
        expect(&page, 200, range)?;
        ensure!(
            page.text().contains("<svg class=\"chart\""),
            "{range}: the chart, not an error: {}",
            page.text()
        );
    }
    // Days chosen: today per hour; long ago per minute is past the minute
    // rollups' reach, and a bad day is named — both said where the chart goes.
    let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let today = &today[..10];
    let days = browser
        .get(&format!(
            "/console/links/from-console?from={today}&to={today}&granularity=hour"
        ))
        .await?;
    ensure!(
        days.text().contains("<svg class=\"chart\"")
            && days
                .text()
                .contains("Clicks per hour: 0 human and 0 bot in 24 buckets"),
        "today per hour: {}",
        days.text()
    );
    let too_old = browser
        .get("/console/links/from-console?from=2020-01-01&to=2020-01-02&granularity=minute")
        .await?;
    ensure!(
        too_old
            .text()
            .contains("minute and hour statistics reach back"),
        "{}",
        too_old.text()
    );
    let bad_day = browser
        .get("/console/links/from-console?from=someday&to=2020-01-02")
        .await?;
    ensure!(bad_day.text().contains("from is not a day like"));
    let svg = browser.get("/console/links/from-console/qr.svg").await?;
    ensure!(svg.header("content-type") == Some("image/svg+xml") && svg.text().contains("<svg"));
    let png = browser
        .get("/console/links/from-console/qr.png?download")
        .await?;
    ensure!(png.body.starts_with(b"\x89PNG"), "a PNG");
    ensure!(
        png.header("content-disposition")
            .is_some_and(|value| value.contains("from-console.png")),
        "offered as a download"
    );

    // Edit, disable, delete: each visible through the REST API.
    let edited = browser
        .post(
            "/console/links/from-console",
            &[
                ("csrf", &csrf),
                ("target_url", "https://example.com/edited"),
                ("redirect_type", "302"),
                ("expires_at", ""),
            ],
        )
        .await?;
    expect(&edited, 303, "an edit")?;
    let (_, link) = rest_link(rest, &key, "from-console").await?;
    ensure!(
        link["target_url"] == "https://example.com/edited"
            && link["redirect_type"] == 302
            && link["forward_query"] == false
            && link
                .get("expires_at")
                .is_none_or(serde_json::Value::is_null),
        "edited: {link}"
    );
    let bad_edit = browser
        .post(
            "/console/links/from-console",
            &[("csrf", &csrf), ("target_url", "not a url")],
        )
        .await?;
    expect(&bad_edit, 400, "a bad edit")?;
    ensure!(bad_edit.text().contains("id=\"target_url-error\""));
    let disabled = browser
        .post(
            "/console/links/from-console/enabled",
            &[("csrf", &csrf), ("enabled", "false")],
        )
        .await?;
    expect(&disabled, 303, "disable")?;
    ensure!(rest_link(rest, &key, "from-console").await?.1["enabled"] == false);
    let unconfirmed = browser
        .post("/console/links/from-console/delete", &[("csrf", &csrf)])
        .await?;
    expect(&unconfirmed, 400, "a delete without confirmation")?;
    ensure!(
        rest_link(rest, &key, "from-console").await?.0 == 200,
        "kept"
    );
    let deleted = browser
        .post(
            "/console/links/from-console/delete",
            &[("csrf", &csrf), ("confirm", "on")],
        )
        .await?;
    expect(&deleted, 303, "delete")?;
    ensure!(
        rest_link(rest, &key, "from-console").await?.0 == 404,
        "gone"
    );
    let missing = browser.get("/console/links/from-console").await?;
    expect(&missing, 404, "a deleted link's page")?;

    let out = browser
        .post("/console/sign-out", &[("csrf", &csrf)])
        .await?;
    expect(&out, 303, "sign-out")?;
    ensure!(browser.cookie.is_none(), "the cookie is cleared");
    Ok(())
}

#[tokio::test]
async fn forged_and_cross_site_forms_change_nothing() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (_writer, rest) = stack.setup.start_with_rest(&[]).await?;
    let key = stack.setup.create_api_key("victim")?;
    let mut browser = Browser::new(rest);
    expect(&browser.sign_in(&key).await?, 303, "sign-in")?;
    let csrf = browser.csrf().await?;
    let create = |csrf: &str, alias: &str| {
        vec![
            ("csrf".to_owned(), csrf.to_owned()),
            ("target_url".to_owned(), "https://evil.example/".to_owned()),
            ("alias".to_owned(), alias.to_owned()),
        ]
    };
    let forms = [
        (
            "no token",
            create("", "forged-1"),
            ("Sec-Fetch-Site", "same-origin"),
        ),
        (
            "another session's token",
            create("x".repeat(43).as_str(), "forged-2"),
            ("Sec-Fetch-Site", "same-origin"),
        ),
        (
            "a cross-site page with the right token",
            create(&csrf, "forged-3"),
            ("Sec-Fetch-Site", "cross-site"),
        ),
        (
            "another origin with the right token",
            create(&csrf, "forged-4"),
            ("Origin", "https://evil.example"),
        ),
    ];
    for (what, form, header) in forms {
        let borrowed: Vec<(&str, &str)> = form
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let response = browser
            .request("POST", "/console/links", Some(&borrowed), &[header])
            .await?;
        expect(&response, 403, what)?;
    }
    for alias in ["forged-1", "forged-2", "forged-3", "forged-4"] {
        ensure!(
            rest_link(rest, &key, alias).await?.0 == 404,
            "{alias} was not created"
        );
    }
    // Sign-out is a form too: a forged one leaves the session open.
    let forged_out = browser.post("/console/sign-out", &[("csrf", "")]).await?;
    expect(&forged_out, 403, "a forged sign-out")?;
    ensure!(!browser.signed_out().await?, "still signed in");
    Ok(())
}

#[tokio::test]
async fn sessions_end_everywhere_on_sign_out_revocation_and_idleness() -> anyhow::Result<()> {
    let stack = stack().await?;
    let idle = [("TINYURL_CONSOLE_IDLE_TIMEOUT", "3s")];
    let (_one, rest_one) = stack.setup.start_with_rest(&[]).await?;
    let (_two, rest_two) = stack.setup.start_with_rest(&idle).await?;
    let key = stack.setup.create_api_key("shared")?;

    // Signed in on one writer, the session works on the other; signed out
    // on the other, it is refused by both.
    let mut one = Browser::new(rest_one);
    expect(&one.sign_in(&key).await?, 303, "sign-in")?;
    let mut two = Browser::new(rest_two);
    two.cookie.clone_from(&one.cookie);
    ensure!(
        !two.signed_out().await?,
        "the session works on both writers"
    );
    let csrf = two.csrf().await?;
    expect(
        &two.post("/console/sign-out", &[("csrf", &csrf)]).await?,
        303,
        "sign-out",
    )?;
    ensure!(one.signed_out().await?, "signed out on every writer");

    // A revoked key's sessions end (on every writer, as their keys do).
    let id_line = stack.setup.api_key_command(&["list"])?;
    let listed = String::from_utf8(id_line.stdout)?;
    let id = listed
        .lines()
        .find(|line| line.contains("shared"))
        .and_then(|line| line.split_whitespace().next())
        .context("the key's id")?
        .to_owned();
    expect(&one.sign_in(&key).await?, 303, "sign-in again")?;
    two.cookie.clone_from(&one.cookie);
    ensure!(!one.signed_out().await?);
    let revoked = stack.setup.api_key_command(&["revoke", &id])?;
    ensure!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let started = Instant::now();
    wait_until(
        "the revoked key's session refused by both writers",
        Duration::from_secs(20),
        || {
            let (mut one, mut two) = (
                Browser {
                    rest: one.rest,
                    cookie: one.cookie.clone(),
                },
                Browser {
                    rest: two.rest,
                    cookie: two.cookie.clone(),
                },
            );
            async move { Ok(one.signed_out().await? && two.signed_out().await?) }
        },
    )
    .await?;
    println!(
        "a revoked key's session was refused by both writers after {:?}",
        started.elapsed()
    );

    // Idleness: the second writer ends sessions unused for 3 s.
    let other = stack.setup.create_api_key("idle")?;
    let mut idle_browser = Browser::new(rest_two);
    expect(&idle_browser.sign_in(&other).await?, 303, "sign-in")?;
    ensure!(!idle_browser.signed_out().await?, "fresh");
    // Unused for longer than the timeout: the next request is refused.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut after = Browser {
        rest: rest_two,
        cookie: idle_browser.cookie.clone(),
    };
    ensure!(after.signed_out().await?, "unused for 4 s: ended");
    Ok(())
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_address() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (_writer, rest) = stack
        .setup
        .start_with_rest(&[("TINYURL_AUTH_FAILURE_RATE_PER_IP", "2/s")])
        .await?;
    let key = stack.setup.create_api_key("honest")?;
    let mut guesser = Browser::new(rest);
    let mut statuses = Vec::new();
    for attempt in 0..10 {
        let guess = format!("tu_{attempt:0>43}");
        statuses.push(guesser.sign_in(&guess).await?.status);
    }
    ensure!(
        statuses
            .iter()
            .all(|status| *status == 401 || *status == 429)
            && statuses.contains(&429),
        "a burst of wrong keys is cut off: {statuses:?}"
    );
    let limited = guesser.sign_in("malformed").await?;
    expect(&limited, 429, "a malformed key is refused at once")?;
    ensure!(limited.header("retry-after").is_some(), "with a hint");
    ensure!(guesser.cookie.is_none());
    // Malformed keys alone are attempts too (another writer: without
    // Redis each keeps its own count).
    let (_other, other_rest) = stack
        .setup
        .start_with_rest(&[("TINYURL_AUTH_FAILURE_RATE_PER_IP", "2/s")])
        .await?;
    let mut sloppy = Browser::new(other_rest);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(sloppy.sign_in("not-a-key").await?.status);
    }
    ensure!(
        statuses.contains(&429),
        "malformed keys are cut off too: {statuses:?}"
    );
    // The honest key, once the address's allowance is back.
    wait_until("the address allowed again", Duration::from_secs(20), || {
        let mut browser = Browser::new(rest);
        let key = key.clone();
        async move { Ok(browser.sign_in(&key).await?.status == 303) }
    })
    .await
}

#[tokio::test]
async fn scopes_decide_what_the_console_offers_and_allows() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (_writer, rest) = stack.setup.start_with_rest(&[]).await?;
    let reader = stack
        .setup
        .create_api_key_with(&["--name", "reader", "--scope", "read"])?;
    let mut browser = Browser::new(rest);
    expect(&browser.sign_in(&reader).await?, 303, "sign-in")?;
    let list = browser.get("/console/links").await?;
    ensure!(
        !list.text().contains("/console/links/new"),
        "no create link for a read key"
    );
    expect(
        &browser.get("/console/links/new").await?,
        403,
        "the create page",
    )?;
    let csrf = browser.csrf().await?;
    let create = browser
        .post(
            "/console/links",
            &[("csrf", &csrf), ("target_url", "https://example.com/")],
        )
        .await?;
    expect(&create, 403, "a create with a read key")?;
    ensure!(create.text().contains("scope is read"), "{}", create.text());
    Ok(())
}

/// The visits to codes that do not exist, for a manage key: people and
/// bots, the paths asked for, one class alone, and a purge that needs its
/// box ticked; a read key is refused.
#[tokio::test]
async fn unknown_codes_are_shown_by_class_and_purged() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (_writer, rest) = stack.setup.start_with_rest(&[]).await?;
    // As a fold writes them: under the default domain's orphan key `~`,
    // 3 people and 2 crawlers, the paths with them.
    let minute = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() / 60 - 5;
    let db = tinyurl_harness::postgres::connect(&stack.database.primary_url).await?;
    db.batch_execute(&format!(
        r#"INSERT INTO click_minutes (code, minute, class, clicks, counts) VALUES
           ('~', {minute}, 0, 3, '{{"7": {{"/old-sale": 3}}}}'),
           ('~', {minute}, 1, 2, '{{"7": {{"/wp-login.php": 2}}, "6": {{"crawler": 2}}}}')"#
    ))
    .await?;
    let key = stack.setup.create_api_key("manager")?;
    let mut browser = Browser::new(rest);
    expect(&browser.sign_in(&key).await?, 303, "sign-in")?;
    let page = browser.get("/console/orphan-visits").await?;
    expect(&page, 200, "the page")?;
    let text = page.text();
    ensure!(
        text.contains("<strong>3</strong> by people and <strong>2</strong> by bots")
            && text.contains("/old-sale")
            && text.contains("/wp-login.php"),
        "{text}"
    );
    let crawlers = browser
        .get("/console/orphan-visits?range=24h&class=crawler")
        .await?;
    let text = crawlers.text();
    ensure!(
        text.contains("<strong>0</strong> by people and <strong>2</strong> by bots")
            && text.contains("/wp-login.php")
            && !text.contains("/old-sale"),
        "crawlers alone: {text}"
    );
    let csrf = browser.csrf().await?;
    let unticked = browser
        .post(
            "/console/orphan-visits/purge",
            &[("csrf", &csrf), ("domain", "")],
        )
        .await?;
    expect(&unticked, 400, "a purge without its box")?;
    let purged = browser
        .post(
            "/console/orphan-visits/purge",
            &[("csrf", &csrf), ("domain", ""), ("confirm", "yes")],
        )
        .await?;
    expect(&purged, 303, "the purge")?;
    let location = purged.header("location").context("a location")?.to_owned();
    let after = browser.get(&location).await?;
    let text = after.text();
    ensure!(
        text.contains("Purged: 5 rollup rows deleted.")
            && text.contains("<strong>0</strong> by people and <strong>0</strong> by bots"),
        "{text}"
    );

    let reader = stack
        .setup
        .create_api_key_with(&["--name", "reader", "--scope", "read"])?;
    let mut reading = Browser::new(rest);
    expect(&reading.sign_in(&reader).await?, 303, "sign-in")?;
    ensure!(
        !reading
            .get("/console/links")
            .await?
            .text()
            .contains("/console/orphan-visits"),
        "no link for a read key"
    );
    expect(
        &reading.get("/console/orphan-visits").await?,
        403,
        "the page for a read key",
    )?;
    Ok(())
}

#[tokio::test]
async fn behind_a_tls_proxy_the_cookie_is_host_only_and_secure() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (_writer, rest) = stack
        .setup
        .start_with_rest(&[("TINYURL_TRUSTED_PROXIES", "127.0.0.1/32")])
        .await?;
    let key = stack.setup.create_api_key("proxied")?;
    let https = [
        ("X-Forwarded-Proto", "https"),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let mut browser = Browser::new(rest);
    let signed = browser
        .request("POST", "/console/sign-in", Some(&[("key", &key)]), &https)
        .await?;
    expect(&signed, 303, "sign-in over https")?;
    let set = signed.header("set-cookie").context("a cookie")?;
    ensure!(
        set.starts_with("__Host-tinyurl-session=") && set.contains("; Secure"),
        "{set}"
    );
    let page = browser
        .request("GET", "/console/links", None, &https)
        .await?;
    expect(&page, 200, "the session over https")?;
    // The same token under the plain name is not the https session.
    let token = browser
        .cookie
        .as_deref()
        .and_then(|cookie| cookie.split_once('='))
        .map(|(_, token)| token.to_owned())
        .context("the token")?;
    browser.cookie = Some(format!("tinyurl-session={token}"));
    let downgraded = browser
        .request("GET", "/console/links", None, &https)
        .await?;
    expect(&downgraded, 303, "the plain cookie over https")?;
    Ok(())
}

#[tokio::test]
async fn the_console_can_be_turned_off() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (_writer, rest) = stack
        .setup
        .start_with_rest(&[("TINYURL_CONSOLE", "false")])
        .await?;
    let page = http_send(rest, "GET", "/console/sign-in", &[], None).await?;
    expect(&page, 404, "no console")?;
    let api = http_send(rest, "GET", "/api/v1/openapi.json", &[], None).await?;
    expect(&api, 200, "the API still")?;
    Ok(())
}

/// A link made through the REST API.
async fn rest_create(rest: SocketAddr, key: &str, alias: &str, target: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "target_url": target, "alias": alias });
    expect(
        &services::rest_create(rest, key, &body).await?,
        201,
        "a REST create",
    )
}

#[tokio::test]
async fn the_listing_searches_filters_and_acts_in_bulk() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (_writer, rest) = stack.setup.start_with_rest(&[]).await?;
    let key = stack.setup.create_api_key("lister")?;
    let other = stack.setup.create_api_key("neighbour")?;
    rest_create(rest, &key, "alpha-one", "https://alpha.example/1").await?;
    rest_create(rest, &key, "alpha-two", "https://beta.example/2").await?;
    rest_create(rest, &key, "gamma-three", "https://gamma.example/3").await?;
    rest_create(rest, &other, "not-mine", "https://alpha.example/x").await?;
    let mut browser = Browser::new(rest);
    expect(&browser.sign_in(&key).await?, 303, "sign-in")?;

    let overview = browser.get("/console/").await?;
    expect(&overview, 200, "the overview")?;
    ensure!(
        overview.text().contains("id=\"link-count\">3<"),
        "three links: {}",
        overview.text()
    );
    let found = browser.get("/console/links?q=BETA").await?;
    ensure!(
        found.text().contains("/console/links/alpha-two")
            && !found.text().contains("/console/links/alpha-one"),
        "a target's host, case ignored"
    );
    let found = browser.get("/console/links?q=alpha").await?;
    ensure!(
        found.text().contains("/console/links/alpha-one")
            && found.text().contains("/console/links/alpha-two")
            && !found.text().contains("not-mine"),
        "a code prefix, this key's links only"
    );
    let none = browser.get("/console/links?q=nothing-like-it").await?;
    ensure!(none.text().contains("No links match."));

    let csrf = browser.csrf().await?;
    let disabled = browser
        .post(
            "/console/links/bulk",
            &[
                ("csrf", &csrf),
                ("code", "alpha-one"),
                ("code", "alpha-two"),
                ("action", "disable"),
            ],
        )
        .await?;
    expect(&disabled, 303, "bulk disable")?;
    let location = disabled.header("location").unwrap_or_default().to_owned();
    ensure!(
        location == "/console/links?done=disabled&count=2",
        "{location}"
    );
    ensure!(
        browser
            .get(&location)
            .await?
            .text()
            .contains("Disabled 2 links.")
    );
    for code in ["alpha-one", "alpha-two"] {
        ensure!(rest_link(rest, &key, code).await?.1["enabled"] == false);
    }
    let off = browser.get("/console/links?state=disabled").await?;
    ensure!(
        off.text().contains("/console/links/alpha-one")
            && !off.text().contains("/console/links/gamma-three")
    );
    let on = browser.get("/console/links?state=active").await?;
    ensure!(
        on.text().contains("/console/links/gamma-three")
            && !on.text().contains("/console/links/alpha-one")
    );

    let exported = browser
        .post(
            "/console/links/bulk",
            &[("csrf", &csrf), ("code", "alpha-one"), ("action", "export")],
        )
        .await?;
    expect(&exported, 200, "export")?;
    ensure!(exported.header("content-type") == Some("text/csv; charset=utf-8"));
    let csv = exported.text();
    let mut lines = csv.lines();
    ensure!(
        lines.next()
            == Some(
                "url,alias,expires,code,short_url,status,forward_query,enabled,created_at,updated_at,domain,tags,max_visits,password_protected,clicks"
            ),
        "{csv}"
    );
    let row = lines.next().unwrap_or_default();
    ensure!(
        row.starts_with("https://alpha.example/1,alpha-one,,alpha-one,")
            && row.contains(",302,false,false,")
            && row.ends_with(",0"),
        "{row}"
    );
    ensure!(lines.next().is_none(), "one row: {csv}");

    let unconfirmed = browser
        .post(
            "/console/links/bulk",
            &[("csrf", &csrf), ("code", "alpha-one"), ("action", "delete")],
        )
        .await?;
    expect(&unconfirmed, 400, "bulk delete without confirmation")?;
    ensure!(rest_link(rest, &key, "alpha-one").await?.0 == 200);
    let mixed = browser
        .post(
            "/console/links/bulk",
            &[
                ("csrf", &csrf),
                ("code", "alpha-one"),
                ("code", "not-mine"),
                ("action", "delete"),
                ("confirm", "on"),
            ],
        )
        .await?;
    expect(&mixed, 200, "a bulk delete with another key's link")?;
    ensure!(
        mixed.text().contains("Deleted 1 of 2 links.") && mixed.text().contains("not-mine"),
        "{}",
        mixed.text()
    );
    ensure!(rest_link(rest, &key, "alpha-one").await?.0 == 404);
    ensure!(
        rest_link(rest, &other, "not-mine").await?.0 == 200,
        "another key's link is untouched"
    );
    let forged = browser
        .post(
            "/console/links/bulk",
            &[
                ("csrf", "forged"),
                ("code", "alpha-two"),
                ("action", "enable"),
            ],
        )
        .await?;
    expect(&forged, 403, "a forged bulk action")?;
    Ok(())
}

/// A `multipart/form-data` body of text fields and one file, and its
/// content type.
fn multipart(fields: &[(&str, &str)], file: (&str, &[u8])) -> (String, Vec<u8>) {
    let boundary = "tinyurl-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    let (name, content) = file;
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"links.csv\"\r\nContent-Type: text/csv\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Browser {
    async fn upload(&mut self, csrf: &str, csv: &str) -> anyhow::Result<HttpResponse> {
        let (content_type, body) = multipart(
            &[("csrf", csrf), ("status", "301")],
            ("file", csv.as_bytes()),
        );
        let cookie = self.cookie.clone().unwrap_or_default();
        http_send(
            self.rest,
            "POST",
            "/console/import",
            &[
                ("Cookie", &cookie),
                ("Content-Type", &content_type),
                ("Sec-Fetch-Site", "same-origin"),
            ],
            Some(&body),
        )
        .await
    }
}

#[tokio::test]
async fn an_import_reports_refused_rows_and_resumes_without_duplicates() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (_writer, rest) = stack.setup.start_with_rest(&[]).await?;
    let key = stack.setup.create_api_key("importer")?;
    let mut browser = Browser::new(rest);
    expect(&browser.sign_in(&key).await?, 303, "sign-in")?;
    let csrf = browser.csrf().await?;
    let csv = "url,alias,expires\n\
               https://example.com/1,imp-one,\n\
               ftp://example.com/bad,,\n\
               https://example.com/2,,30d\n\
               \n\
               https://example.com/3,imp-three,not-a-time\n";

    let first = browser.upload(&csrf, csv).await?;
    expect(&first, 200, "an import")?;
    let text = first.text();
    ensure!(
        text.contains("4 rows: 2 created, 0 already imported, 2 refused."),
        "{text}"
    );
    // Rows are numbered as `tinyurl import` numbers them (a blank line is
    // not a row), so both derive the same idempotency keys.
    let refused = text
        .find("<tbody>")
        .map(|start| &text[start..])
        .unwrap_or_default();
    ensure!(
        matches!(
            (refused.find("<td>3</td>"), refused.find("<td>5</td>")),
            (Some(third), Some(fifth)) if third < fifth
        ) && refused.contains("<td>target_url</td>")
            && refused.contains("<td>expires</td>"),
        "the refused rows in order, with the field: {text}"
    );
    ensure!(text.trim_end().ends_with("</html>"), "the whole page");
    let (status, link) = rest_link(rest, &key, "imp-one").await?;
    ensure!(
        status == 200 && link["redirect_type"] == 301,
        "imported with the chosen status: {link}"
    );

    // The same file again: nothing created twice, relative expiry included.
    let again = browser.upload(&csrf, csv).await?;
    ensure!(
        again
            .text()
            .contains("4 rows: 0 created, 2 already imported, 2 refused."),
        "{}",
        again.text()
    );
    let listed = browser.get("/console/").await?;
    ensure!(
        listed.text().contains("id=\"link-count\">2<"),
        "two links in all"
    );

    let forged = browser.upload("forged", csv).await?;
    expect(&forged, 403, "a forged import")?;
    let reader = stack
        .setup
        .create_api_key_with(&["--name", "reader", "--scope", "read"])?;
    let mut reading = Browser::new(rest);
    expect(&reading.sign_in(&reader).await?, 303, "sign-in")?;
    let reader_csrf = reading.csrf().await?;
    expect(
        &reading.upload(&reader_csrf, csv).await?,
        403,
        "an import with a read key",
    )?;
    Ok(())
}

/// The id of the key named `name` on the keys page.
fn key_id(page: &str, name: &str) -> Option<String> {
    page.split("<tr id=\"key-").skip(1).find_map(|row| {
        let (id, rest) = row.split_once('"')?;
        rest.contains(&format!("<td>{name}</td>"))
            .then(|| id.to_owned())
    })
}

/// The key a "new API key" page shows once.
fn shown_key(page: &str) -> Option<String> {
    let start = page.find("id=\"new-key\">")? + "id=\"new-key\">".len();
    let end = page[start..].find('<')? + start;
    Some(page[start..end].to_owned())
}

/// The status of a REST create of `target` with `key`.
async fn rest_create_status(rest: SocketAddr, key: &str, target: &str) -> anyhow::Result<u16> {
    let body = serde_json::json!({ "target_url": target });
    Ok(services::rest_create(rest, key, &body).await?.status)
}

#[tokio::test]
async fn an_admin_key_manages_every_key_and_the_blocklist() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (_writer, rest) = stack.setup.start_with_rest(&[]).await?;
    let operator = stack
        .setup
        .create_api_key_with(&["--name", "operator", "--scope", "admin"])?;
    let manager = stack.setup.create_api_key("manager")?;

    // A manage key has no key or blocklist pages.
    let mut managing = Browser::new(rest);
    expect(&managing.sign_in(&manager).await?, 303, "sign-in")?;
    ensure!(
        !managing
            .get("/console/")
            .await?
            .text()
            .contains("/console/keys")
    );
    for page in ["/console/keys", "/console/blocklist"] {
        let refused = managing.get(page).await?;
        expect(&refused, 403, page)?;
        ensure!(refused.text().contains("scope is manage; this needs admin"));
    }
    let csrf = managing.csrf().await?;
    let forged = managing
        .post(
            "/console/keys",
            &[("csrf", &csrf), ("name", "mine now"), ("scope", "admin")],
        )
        .await?;
    expect(&forged, 403, "a key created with a manage key")?;

    let mut browser = Browser::new(rest);
    expect(&browser.sign_in(&operator).await?, 303, "sign-in")?;
    let csrf = browser.csrf().await?;
    let listed = browser.get("/console/keys").await?;
    expect(&listed, 200, "the keys page")?;
    ensure!(key_id(&listed.text(), "manager").is_some());

    // Created with a scope and a rate, shown once, and working.
    let bad = browser
        .post(
            "/console/keys",
            &[("csrf", &csrf), ("name", "partner"), ("rate", "fast")],
        )
        .await?;
    expect(&bad, 400, "a key with a bad rate")?;
    let created = browser
        .post(
            "/console/keys",
            &[
                ("csrf", &csrf),
                ("name", "partner"),
                ("scope", "create"),
                ("rate", "5/s"),
            ],
        )
        .await?;
    expect(&created, 200, "a key created")?;
    let partner = shown_key(&created.text()).context("the new key")?;
    ensure!(
        rest_create_status(rest, &partner, "https://example.com/partner").await? == 201,
        "the new key creates links"
    );
    let listed = browser.get("/console/keys").await?.text();
    let id = key_id(&listed, "partner").context("the partner's row")?;
    ensure!(listed.contains("<td>create</td>") && listed.contains("<td>5/s</td>"));
    let rate = browser
        .post(
            &format!("/console/keys/{id}/rate"),
            &[("csrf", &csrf), ("rate", "default")],
        )
        .await?;
    expect(&rate, 303, "a rate set")?;
    ensure!(
        !browser
            .get("/console/keys")
            .await?
            .text()
            .contains("<td>5/s</td>")
    );

    // Rotated without grace: the old value stops, the new one works.
    let rotated = browser
        .post(
            &format!("/console/keys/{id}/rotate"),
            &[("csrf", &csrf), ("grace", "0")],
        )
        .await?;
    expect(&rotated, 200, "a rotation")?;
    let rotated = shown_key(&rotated.text()).context("the rotated key")?;
    wait_until("the old value refused", Duration::from_secs(20), || async {
        Ok(rest_create_status(rest, &partner, "https://example.com/old").await? == 401)
    })
    .await?;
    ensure!(rest_create_status(rest, &rotated, "https://example.com/new").await? == 201);

    // Revoked: only with the box ticked; then refused.
    let unconfirmed = browser
        .post(&format!("/console/keys/{id}/revoke"), &[("csrf", &csrf)])
        .await?;
    expect(&unconfirmed, 400, "a revocation unconfirmed")?;
    let revoked = browser
        .post(
            &format!("/console/keys/{id}/revoke"),
            &[("csrf", &csrf), ("confirm", "on")],
        )
        .await?;
    expect(&revoked, 303, "a revocation")?;
    wait_until(
        "the revoked key refused",
        Duration::from_secs(20),
        || async {
            Ok(rest_create_status(rest, &rotated, "https://example.com/late").await? == 401)
        },
    )
    .await?;

    // The blocklist: a host blocked for every key, then unblocked.
    let bad_host = browser
        .post(
            "/console/blocklist",
            &[
                ("csrf", &csrf),
                ("host", "not a host!"),
                ("action", "block"),
            ],
        )
        .await?;
    expect(&bad_host, 400, "a malformed host")?;
    ensure!(bad_host.text().contains("id=\"blocklist-error\""));
    let blocked = browser
        .post(
            "/console/blocklist",
            &[
                ("csrf", &csrf),
                ("host", "Evil.Example"),
                ("action", "block"),
            ],
        )
        .await?;
    expect(&blocked, 303, "a block")?;
    ensure!(
        browser
            .get("/console/blocklist")
            .await?
            .text()
            .contains("<td>evil.example</td>")
    );
    wait_until("the host refused", Duration::from_secs(20), || async {
        Ok(rest_create_status(rest, &manager, "https://evil.example/x").await? == 400)
    })
    .await?;
    let unblocked = browser
        .post(
            "/console/blocklist",
            &[
                ("csrf", &csrf),
                ("host", "evil.example"),
                ("action", "unblock"),
            ],
        )
        .await?;
    expect(&unblocked, 303, "an unblock")?;
    wait_until(
        "the host allowed again",
        Duration::from_secs(20),
        || async { Ok(rest_create_status(rest, &manager, "https://evil.example/y").await? == 201) },
    )
    .await?;
    Ok(())
}

/// Tags in the console: given on create (commas, any case), shown on the
/// link's page as links to the listing of that tag, filtered by, refused
/// with the API's message next to the field, and replaced by an edit.
#[tokio::test]
async fn tags_are_given_shown_filtered_and_changed() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (_writer, rest) = stack.setup.start_with_rest(&[]).await?;
    let key = stack.setup.create_api_key("console-tagger")?;
    let mut browser = Browser::new(rest);
    expect(&browser.sign_in(&key).await?, 303, "sign-in")?;
    let csrf = browser.csrf().await?;
    let create = |tags: &'static str, alias: &'static str| {
        [
            ("target_url", "https://example.com/tagged"),
            ("alias", alias),
            ("redirect_type", "302"),
            ("expires_at", ""),
            ("tags", tags),
        ]
    };
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend(create("Spring  Sale, news, ", "console-tags"));
    expect(
        &browser.post("/console/links", &form).await?,
        303,
        "a create with tags",
    )?;
    let (_, link) = rest_link(rest, &key, "console-tags").await?;
    ensure!(
        link["tags"] == serde_json::json!(["news", "spring sale"]),
        "{link}"
    );
    rest_create(rest, &key, "console-plain", "https://example.com/plain").await?;

    let page = browser.get("/console/links/console-tags").await?;
    ensure!(
        page.text()
            .contains("href=\"/console/links?tag=spring%20sale\""),
        "the tag links to its links: {}",
        page.text()
    );
    let tagged = browser.get("/console/links?tag=Spring%20Sale").await?;
    expect(&tagged, 200, "the listing by tag")?;
    ensure!(
        tagged.text().contains("/console/links/console-tags")
            && !tagged.text().contains("/console/links/console-plain")
            && tagged.text().contains("id=\"tag-filter\""),
        "{}",
        tagged.text()
    );

    let mut form = vec![("csrf", csrf.as_str())];
    form.extend(create("a<b", "console-bad"));
    let refused = browser.post("/console/links", &form).await?;
    expect(&refused, 400, "a bad tag")?;
    ensure!(
        refused.text().contains("id=\"tags-error\""),
        "{}",
        refused.text()
    );
    ensure!(rest_link(rest, &key, "console-bad").await?.0 == 404);

    let edited = browser
        .post(
            "/console/links/console-tags",
            &[
                ("csrf", csrf.as_str()),
                ("target_url", "https://example.com/tagged"),
                ("redirect_type", "302"),
                ("expires_at", ""),
                ("tags", "later"),
            ],
        )
        .await?;
    expect(&edited, 303, "an edit of the tags")?;
    let (_, link) = rest_link(rest, &key, "console-tags").await?;
    ensure!(link["tags"] == serde_json::json!(["later"]), "{link}");
    Ok(())
}

/// UTM fields and redirect rules from the console's forms: given on
/// create (rules one per line), shown on the link's page, a bad rule named
/// next to its field with nothing stored, changed and removed by an edit,
/// and an edit that leaves the fields out (an old form) keeps them.
#[tokio::test]
async fn utm_and_rules_are_given_shown_and_changed() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (_writer, rest) = stack.setup.start_with_rest(&[]).await?;
    let key = stack.setup.create_api_key("console-rules")?;
    let mut browser = Browser::new(rest);
    expect(&browser.sign_in(&key).await?, 303, "sign-in")?;
    let csrf = browser.csrf().await?;
    let create = |alias: &'static str, rules: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("target_url", "https://example.com/app".to_owned()),
            ("alias", alias.to_owned()),
            ("redirect_type", "302".to_owned()),
            ("expires_at", String::new()),
            ("tags", String::new()),
            ("utm_source", " newsletter ".to_owned()),
            ("utm_medium", String::new()),
            ("utm_campaign", "spring sale".to_owned()),
            ("utm_term", String::new()),
            ("utm_content", String::new()),
            ("rules", rules.to_owned()),
        ]
    };
    let form = create(
        "console-rules",
        "device=ios country=de https://apps.example/de\r\n\r\nlang=PT-br https://example.com/pt\r\n",
    );
    let pairs: Vec<(&str, &str)> = form
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    expect(
        &browser.post("/console/links", &pairs).await?,
        303,
        "a create with rules",
    )?;
    let (_, link) = rest_link(rest, &key, "console-rules").await?;
    ensure!(
        link["utm"] == serde_json::json!({ "source": "newsletter", "campaign": "spring sale" })
            && link["rules"]
                == serde_json::json!([
                    { "devices": ["ios"], "countries": ["DE"], "languages": [],
                      "target_url": "https://apps.example/de" },
                    { "devices": [], "countries": [], "languages": ["pt-br"],
                      "target_url": "https://example.com/pt" },
                ]),
        "{link}"
    );
    let page = browser.get("/console/links/console-rules").await?;
    expect(&page, 200, "the link's page")?;
    let text = page.text();
    ensure!(
        text.contains("utm_source=newsletter")
            && text.contains("iOS, in DE")
            && text.contains("speaking pt-br")
            && text.contains(
                "device=ios country=DE https://apps.example/de\nlang=pt-br https://example.com/pt"
            ),
        "the page shows them and the edit form holds them: {text}"
    );

    let form = create("console-bad-rule", "device=tv https://example.com/tv");
    let pairs: Vec<(&str, &str)> = form
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let refused = browser.post("/console/links", &pairs).await?;
    expect(&refused, 400, "a bad rule")?;
    ensure!(
        refused.text().contains("id=\"rules-error\"")
            && refused
                .text()
                .contains("device &quot;tv&quot; is not one of"),
        "{}",
        refused.text()
    );
    let form = create("console-bad-line", "https://example.com/no-condition");
    let pairs: Vec<(&str, &str)> = form
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let refused = browser.post("/console/links", &pairs).await?;
    expect(&refused, 400, "a rule without a condition")?;
    ensure!(
        refused.text().contains("line 1: a rule needs a condition"),
        "{}",
        refused.text()
    );
    ensure!(rest_link(rest, &key, "console-bad-rule").await?.0 == 404);

    // An edit without the fields keeps them; with them empty, removes them.
    let edited = browser
        .post(
            "/console/links/console-rules",
            &[
                ("csrf", csrf.as_str()),
                ("target_url", "https://example.com/app2"),
                ("redirect_type", "302"),
                ("expires_at", ""),
            ],
        )
        .await?;
    expect(&edited, 303, "an edit without the option fields")?;
    let (_, link) = rest_link(rest, &key, "console-rules").await?;
    ensure!(
        link["rules"]
            .as_array()
            .is_some_and(|rules| rules.len() == 2),
        "{link}"
    );
    let edited = browser
        .post(
            "/console/links/console-rules",
            &[
                ("csrf", csrf.as_str()),
                ("target_url", "https://example.com/app2"),
                ("redirect_type", "302"),
                ("expires_at", ""),
                ("utm_source", ""),
                ("utm_medium", "email"),
                ("utm_campaign", ""),
                ("utm_term", ""),
                ("utm_content", ""),
                ("rules", ""),
            ],
        )
        .await?;
    expect(&edited, 303, "an edit of the option fields")?;
    let (_, link) = rest_link(rest, &key, "console-rules").await?;
    ensure!(
        link["utm"] == serde_json::json!({ "medium": "email" })
            && link["rules"] == serde_json::json!([]),
        "{link}"
    );

    // A password: given on the form (a short one refused beside its
    // field), shown as a fact on the link's page, kept by an edit that
    // leaves the field empty, removed by the checkbox.
    let protect = |password: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("target_url", "https://example.com/app2".to_owned()),
            ("redirect_type", "302".to_owned()),
            ("expires_at", String::new()),
            ("password", password.to_owned()),
        ]
    };
    let short = protect("abc");
    let pairs: Vec<(&str, &str)> = short
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let refused = browser.post("/console/links/console-rules", &pairs).await?;
    expect(&refused, 400, "a short password")?;
    ensure!(
        refused.text().contains("id=\"password-error\"")
            && refused.text().contains("4 to 128 characters")
            && !refused.text().contains("value=\"abc\""),
        "{}",
        refused.text()
    );
    let given = protect("open sesame");
    let pairs: Vec<(&str, &str)> = given
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    expect(
        &browser.post("/console/links/console-rules", &pairs).await?,
        303,
        "a password given",
    )?;
    let (_, link) = rest_link(rest, &key, "console-rules").await?;
    ensure!(link["password_protected"] == true, "{link}");
    let page = browser.get("/console/links/console-rules").await?;
    ensure!(
        page.text().contains("visitors must give it first")
            && page.text().contains("Remove the password")
            && !page.text().contains("sesame"),
        "{}",
        page.text()
    );
    let kept = protect("");
    let pairs: Vec<(&str, &str)> = kept
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    expect(
        &browser.post("/console/links/console-rules", &pairs).await?,
        303,
        "an edit that keeps the password",
    )?;
    ensure!(rest_link(rest, &key, "console-rules").await?.1["password_protected"] == true);
    let mut removal: Vec<(&str, &str)> = kept
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    removal.push(("remove_password", "1"));
    expect(
        &browser
            .post("/console/links/console-rules", &removal)
            .await?,
        303,
        "the password removed",
    )?;
    ensure!(rest_link(rest, &key, "console-rules").await?.1["password_protected"] == false);
    Ok(())
}
