//! The web console in a real browser (headless Chromium through
//! ChromeDriver) against `tinyurl up`: a person signs in, makes a mistake
//! and sees the API's message next to the field, creates a link, watches
//! its clicks arrive (humans and bots apart), disables, enables and
//! deletes it, and signs out — by mouse and by keyboard, at 360 px wide, in
//! dark mode, and with scripts off. The page's own policy (CSP) must not
//! have refused anything along the way.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, ensure};
use serde_json::Value;
use tinyurl_harness::browser::Browser;
use tinyurl_harness::embedded::Embedded;
use tinyurl_harness::process::ScratchDir;
use tinyurl_harness::services::{self, http_request_with, http_status};
use tinyurl_harness::wait_until;

const HUMAN: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
const BOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

async fn sign_in(browser: &Browser, console: &str, key: &str) -> anyhow::Result<()> {
    browser.open(&format!("{console}/sign-in")).await?;
    let field = browser.find("input[name=key]").await?;
    browser.type_into(&field, key).await?;
    browser
        .click_to_next_page(&browser.find("form button[type=submit]").await?)
        .await
}

/// The answers this test provokes on purpose, which Chromium reports as
/// failed loads: the wrong key's sign-in and the invalid create.
const PROVOKED: [&str; 2] = [
    "/console/sign-in - Failed to load resource: the server responded with a status of 401",
    "/console/links - Failed to load resource: the server responded with a status of 400",
];

/// Console messages that are not the page's own: policy refusals, script
/// errors, failed loads (of the stylesheet, script or images).
fn complaints(messages: &[String]) -> Vec<&String> {
    messages
        .iter()
        .filter(|message| {
            message.contains("SEVERE")
                || message.contains("Content Security Policy")
                || message.contains("Refused")
        })
        .filter(|message| !message.contains("favicon.ico"))
        .filter(|message| !PROVOKED.iter().any(|provoked| message.contains(provoked)))
        .collect()
}

async fn text_of(browser: &Browser, selector: &str) -> anyhow::Result<String> {
    browser.text(&browser.find(selector).await?).await
}

/// Ticks the link page's confirmation box and deletes the link.
async fn delete_confirmed(browser: &Browser) -> anyhow::Result<()> {
    browser
        .click(&browser.find("input[name=confirm]").await?)
        .await?;
    browser
        .click_to_next_page(&browser.find("#delete").await?)
        .await
}

/// Whether a script in the page says `true`.
async fn holds(browser: &Browser, script: &str) -> anyhow::Result<bool> {
    Ok(browser.script(script, &[]).await? == Value::Bool(true))
}

/// Whether the page is no wider than the window (nothing to scroll sideways).
async fn fits(browser: &Browser) -> anyhow::Result<bool> {
    holds(
        browser,
        "return document.documentElement.scrollWidth <= window.innerWidth;",
    )
    .await
}

#[tokio::test]
async fn a_person_manages_a_link_in_the_browser() -> anyhow::Result<()> {
    let dir = ScratchDir::new("console-browser", None)?;
    let system = Embedded::start(dir.path()).await?;
    let key = system.printed_key.clone().context("the first key")?;
    let console = format!("http://{}/console", system.rest);
    let browser = Browser::start(1200, 900).await?;

    // Unsigned: sent to sign in; a wrong key is told so, on the same page.
    browser.open(&format!("{console}/")).await?;
    ensure!(browser.url().await?.ends_with("/console/sign-in"));
    sign_in(&browser, &console, "tu_wrong").await?;
    ensure!(
        text_of(&browser, "#sign-in-error")
            .await?
            .contains("not valid")
    );
    sign_in(&browser, &console, &key).await?;
    ensure!(
        browser.url().await?.ends_with("/console/"),
        "signed in, to the overview: {}",
        browser.url().await?
    );
    ensure!(text_of(&browser, "#no-links").await? == "No links yet.");
    ensure!(text_of(&browser, "#link-count").await? == "0");
    ensure!(
        browser.count("a[href='/console/keys']").await? == 1,
        "tinyurl up's first key is the operator's: it manages keys"
    );
    let cookies = browser.cookies().await?;
    let session = cookies
        .iter()
        .find(|cookie| cookie["name"] == "tinyurl-session")
        .context("the session cookie")?;
    ensure!(
        session["httpOnly"] == true && session["sameSite"] == "Strict",
        "{session}"
    );
    ensure!(
        browser.script("return document.cookie;", &[]).await? == "",
        "scripts cannot read the session"
    );

    // A mistake, answered by the API's own message next to the field.
    browser
        .click_to_next_page(&browser.find("a.button[href='/console/links/new']").await?)
        .await?;
    let target = browser.find("input[name=target_url]").await?;
    browser.type_into(&target, "ftp://example.com/file").await?;
    browser
        .click_to_next_page(&browser.find("form.stack button[type=submit]").await?)
        .await?;
    let error = text_of(&browser, "#target_url-error").await?;
    ensure!(error.contains("ftp"), "the field's error: {error}");
    let target = browser.find("input[name=target_url]").await?;
    browser.clear(&target).await?;
    browser
        .type_into(&target, "https://example.com/from/the/browser")
        .await?;
    browser
        .type_into(&browser.find("input[name=alias]").await?, "in-browser")
        .await?;
    browser
        .click(
            &browser
                .find("select[name=redirect_type] option[value='301']")
                .await?,
        )
        .await?;
    browser
        .click_to_next_page(&browser.find("form.stack button[type=submit]").await?)
        .await?;
    ensure!(
        browser
            .url()
            .await?
            .ends_with("/console/links/in-browser?created"),
        "{}",
        browser.url().await?
    );
    ensure!(text_of(&browser, "#target").await? == "https://example.com/from/the/browser");
    let qr_width = browser
        .script("return document.querySelector('img.qr').naturalWidth;", &[])
        .await?;
    ensure!(
        qr_width.as_u64().is_some_and(|width| width > 0),
        "the QR image loaded: {qr_width}"
    );
    ensure!(
        holds(
            &browser,
            "return !document.querySelector('button[data-copy]').hidden;"
        )
        .await?,
        "the console's script ran (it shows the copy button)"
    );

    // Clicks arrive, humans and bots apart.
    let clicked_at = SystemTime::now();
    for user_agent in [HUMAN, HUMAN, HUMAN, BOT] {
        let response = http_request_with(
            system.http,
            "GET",
            "/in-browser",
            &[
                ("User-Agent", user_agent),
                ("Referer", "https://news.example/post"),
            ],
        )
        .await?;
        ensure!(response.status == 301, "a redirect: {}", response.status);
    }
    let link_page = format!("{console}/links/in-browser?range=1h");
    wait_until(
        "the clicks on the link's page",
        Duration::from_secs(30),
        || {
            let browser = &browser;
            let link_page = &link_page;
            async move {
                browser.open(link_page).await?;
                let totals = text_of(browser, "#click-totals").await?;
                Ok(totals.starts_with("3 human and 1 bot clicks"))
            }
        },
    )
    .await?;
    ensure!(browser.count("svg.chart rect.human").await? >= 1);
    ensure!(browser.count("svg.chart rect.bot").await? >= 1);
    // The three people's clicks came from one address and browser.
    let visitors = text_of(&browser, "#visitors").await?;
    ensure!(visitors.starts_with("1 unique visitors"), "{visitors}");
    let page_text = text_of(&browser, "main").await?;
    ensure!(page_text.contains("news.example"), "the referrer is listed");

    // The overview counts them (today's figure only when the UTC day has
    // not turned since the clicks); the listing finds the link by the start
    // of its target, the host's case ignored.
    browser.open(&format!("{console}/")).await?;
    ensure!(text_of(&browser, "#clicks-week").await? == "3");
    if utc_day(clicked_at) == utc_day(SystemTime::now()) {
        ensure!(text_of(&browser, "#clicks-day").await? == "3");
    }
    ensure!(text_of(&browser, "#link-count").await? == "1");
    browser.open(&format!("{console}/links")).await?;
    browser
        .type_into(
            &browser.find("input[name=q]").await?,
            "https://Example.COM/from/",
        )
        .await?;
    browser
        .click_to_next_page(&browser.find("form.search button").await?)
        .await?;
    ensure!(browser.count("a[href='/console/links/in-browser']").await? == 1);
    ensure!(text_of(&browser, "td.clicks").await? == "3");
    browser.open(&link_page).await?;

    // Disable: the short link stops redirecting; enable: it redirects again.
    browser
        .click_to_next_page(&browser.find("#disable").await?)
        .await?;
    ensure!(text_of(&browser, "#link-state").await? == "disabled");
    wait_until("the redirect stops", Duration::from_secs(10), || async {
        Ok(http_status(system.http, "/in-browser").await? == 410)
    })
    .await?;
    browser
        .click_to_next_page(&browser.find("#enable").await?)
        .await?;
    ensure!(text_of(&browser, "#link-state").await? == "active");

    // Keyboard: the first Tab reaches the skip link; Enter follows it.
    browser.open(&format!("{console}/links")).await?;
    browser.keys("\u{E004}").await?;
    let focused = browser
        .script("return document.activeElement.textContent;", &[])
        .await?;
    ensure!(focused == "Skip to content", "focused first: {focused}");

    // 360 px wide: nothing scrolls sideways, the long target wraps.
    browser.resize(360, 740).await?;
    browser.open(&format!("{console}/")).await?;
    let width = browser.script("return window.innerWidth;", &[]).await?;
    ensure!(width == 360, "a 360 px viewport, not {width}");
    for page in [
        "/",
        "/links",
        "/links/in-browser",
        "/links/new",
        "/import",
        "/orphan-visits",
        "/keys",
        "/blocklist",
    ] {
        browser.open(&format!("{console}{page}")).await?;
        ensure!(fits(&browser).await?, "{page} fits 360 px");
    }
    browser.resize(1200, 900).await?;

    // Dark mode follows the system setting.
    let background = "return getComputedStyle(document.body).backgroundColor;";
    browser.prefer_dark(false).await?;
    browser.open(&format!("{console}/links")).await?;
    let light = browser.script(background, &[]).await?;
    browser.prefer_dark(true).await?;
    browser.open(&format!("{console}/links")).await?;
    let dark = browser.script(background, &[]).await?;
    ensure!(light != dark, "light {light}, dark {dark}");
    ensure!(dark == "rgb(21, 23, 27)", "dark background: {dark}");

    // Delete: not without the confirmation box, then for good.
    browser.open(&format!("{console}/links/in-browser")).await?;
    ensure!(
        holds(
            &browser,
            "const box = document.querySelector('input[name=confirm]'); \
             return box.validity.valueMissing && !box.form.checkValidity();",
        )
        .await?,
        "the browser will not send a deletion unconfirmed"
    );
    delete_confirmed(&browser).await?;
    ensure!(browser.url().await?.ends_with("/console/links"));
    ensure!(text_of(&browser, "#no-links").await? == "No links yet.");
    ensure!(http_status(system.http, "/in-browser").await? != 301);

    // Sign out: the session is gone, pages send the browser to sign in.
    browser
        .click_to_next_page(
            &browser
                .find("form[action='/console/sign-out'] button")
                .await?,
        )
        .await?;
    ensure!(browser.url().await?.ends_with("/console/sign-in"));
    browser.open(&format!("{console}/links")).await?;
    ensure!(browser.url().await?.ends_with("/console/sign-in"));

    let messages = browser.console_messages().await?;
    let complaints = complaints(&messages);
    ensure!(
        complaints.is_empty(),
        "the browser complained: {complaints:#?}"
    );
    browser.quit().await
}

#[tokio::test]
async fn the_core_flows_work_with_scripts_off() -> anyhow::Result<()> {
    let dir = ScratchDir::new("console-noscript", None)?;
    let system = Embedded::start(dir.path()).await?;
    let key = system.printed_key.clone().context("the first key")?;
    let console = format!("http://{}/console", system.rest);
    let browser = Browser::start_with(1200, 900, false).await?;
    let scripts = browser.script("return 1;", &[]).await?;
    ensure!(scripts == 1, "WebDriver's own scripts still run");

    sign_in(&browser, &console, &key).await?;
    ensure!(browser.url().await?.ends_with("/console/"));
    browser.open(&format!("{console}/links/new")).await?;
    browser
        .type_into(
            &browser.find("input[name=target_url]").await?,
            "https://example.com/no-script",
        )
        .await?;
    browser
        .type_into(&browser.find("input[name=alias]").await?, "noscript")
        .await?;
    browser
        .click_to_next_page(&browser.find("form.stack button[type=submit]").await?)
        .await?;
    ensure!(
        browser
            .url()
            .await?
            .ends_with("/console/links/noscript?created")
    );
    ensure!(
        holds(
            &browser,
            "return document.querySelector('button[data-copy]').hidden;"
        )
        .await?,
        "without the page's script the copy button stays hidden"
    );
    browser
        .click_to_next_page(&browser.find("#disable").await?)
        .await?;
    ensure!(text_of(&browser, "#link-state").await? == "disabled");
    delete_confirmed(&browser).await?;
    ensure!(text_of(&browser, "#no-links").await? == "No links yet.");
    // An import from a file chosen in the page.
    let csv = dir.path().join("links.csv");
    std::fs::write(
        &csv,
        "url,alias\nhttps://example.com/imported,imported\nnot a url,\n",
    )?;
    browser.open(&format!("{console}/import")).await?;
    browser
        .type_into(
            &browser.find("input[type=file]").await?,
            &csv.display().to_string(),
        )
        .await?;
    browser
        .click_to_next_page(&browser.find("form.stack button[type=submit]").await?)
        .await?;
    let summary = text_of(&browser, "#import-summary").await?;
    ensure!(
        summary == "2 rows: 1 created, 0 already imported, 1 refused.",
        "{summary}"
    );
    browser.quit().await
}

/// The status of a REST create with `key` on `tinyurl up`'s REST listener.
async fn rest_create(system: &Embedded, key: &str, target: &str) -> anyhow::Result<u16> {
    let body = serde_json::json!({ "target_url": target });
    Ok(services::rest_create(system.rest, key, &body).await?.status)
}

#[tokio::test]
async fn an_operator_manages_keys_blocks_a_host_and_imports_in_the_browser() -> anyhow::Result<()> {
    let dir = ScratchDir::new("console-operator", None)?;
    let system = Embedded::start(dir.path()).await?;
    let key = system.printed_key.clone().context("the first key")?;
    let console = format!("http://{}/console", system.rest);
    let browser = Browser::start(1200, 900).await?;
    sign_in(&browser, &console, &key).await?;

    // A key created with a scope, shown once, and working.
    browser.open(&format!("{console}/keys")).await?;
    browser
        .type_into(
            &browser.find("form.stack input[name=name]").await?,
            "partner",
        )
        .await?;
    browser
        .click(
            &browser
                .find("form.stack select[name=scope] option[value='create']")
                .await?,
        )
        .await?;
    browser
        .click_to_next_page(&browser.find("form.stack button[type=submit]").await?)
        .await?;
    let partner = text_of(&browser, "#new-key").await?;
    ensure!(rest_create(&system, &partner, "https://example.com/p").await? == 201);

    // Rotated with no grace: the new value works, the old one stops.
    browser.open(&format!("{console}/keys")).await?;
    browser
        .click(&browser.find("#key-2 summary").await?)
        .await?;
    browser
        .click(
            &browser
                .find("#key-2 select[name=grace] option[value='0']")
                .await?,
        )
        .await?;
    browser
        .click_to_next_page(
            &browser
                .find("#key-2 form[action$='/rotate'] button")
                .await?,
        )
        .await?;
    let rotated = text_of(&browser, "#new-key").await?;
    ensure!(rotated != partner && rotated.starts_with("tu_"));
    ensure!(rest_create(&system, &rotated, "https://example.com/r").await? == 201);
    wait_until("the old value refused", Duration::from_secs(20), || async {
        Ok(rest_create(&system, &partner, "https://example.com/o").await? == 401)
    })
    .await?;

    // Revoked, with the box ticked.
    browser.open(&format!("{console}/keys")).await?;
    browser
        .click(&browser.find("#key-2 summary").await?)
        .await?;
    browser
        .click(&browser.find("#key-2 input[name=confirm]").await?)
        .await?;
    browser
        .click_to_next_page(
            &browser
                .find("#key-2 form[action$='/revoke'] button")
                .await?,
        )
        .await?;
    ensure!(
        text_of(&browser, "#keys-notice")
            .await?
            .starts_with("Revoked")
    );
    ensure!(
        text_of(&browser, "#key-2 td.state")
            .await?
            .starts_with("revoked")
    );
    wait_until(
        "the revoked key refused",
        Duration::from_secs(20),
        || async { Ok(rest_create(&system, &rotated, "https://example.com/v").await? == 401) },
    )
    .await?;

    // A host blocked for every key, then unblocked.
    browser.open(&format!("{console}/blocklist")).await?;
    browser
        .type_into(&browser.find("input[name=host]").await?, "evil.example")
        .await?;
    browser
        .click_to_next_page(&browser.find("form.stack button[value=block]").await?)
        .await?;
    ensure!(
        text_of(&browser, "#blocklist-notice")
            .await?
            .starts_with("Blocked")
    );
    wait_until("the host refused", Duration::from_secs(20), || async {
        Ok(rest_create(&system, &key, "https://evil.example/x").await? == 400)
    })
    .await?;
    browser
        .click_to_next_page(&browser.find("#blocked-hosts button[value=unblock]").await?)
        .await?;
    ensure!(text_of(&browser, "#no-blocks").await? == "Nothing is blocked.");

    // A form sent without its anti-forgery token is refused.
    browser.open(&format!("{console}/links/new")).await?;
    browser
        .script(
            "document.querySelector('form.stack input[name=csrf]').remove();",
            &[],
        )
        .await?;
    browser
        .type_into(
            &browser.find("input[name=target_url]").await?,
            "https://example.com/forged",
        )
        .await?;
    browser
        .click_to_next_page(&browser.find("form.stack button[type=submit]").await?)
        .await?;
    let title = browser.title().await?;
    ensure!(
        title.starts_with("Forbidden"),
        "{title} at {}",
        browser.url().await?
    );
    browser.open(&format!("{console}/links?q=forged")).await?;
    ensure!(text_of(&browser, "#no-links").await? == "No links match.");

    // An import of 1,000 rows.
    let csv = dir.path().join("thousand.csv");
    let rows: String = (0..1_000)
        .map(|n| format!("https://example.com/import/{n},row-{n}\n"))
        .collect();
    std::fs::write(&csv, format!("url,alias\n{rows}"))?;
    browser.open(&format!("{console}/import")).await?;
    browser
        .type_into(
            &browser.find("input[type=file]").await?,
            &csv.display().to_string(),
        )
        .await?;
    browser
        .click_to_next_page(&browser.find("form.stack button[type=submit]").await?)
        .await?;
    let summary = text_of(&browser, "#import-summary").await?;
    ensure!(
        summary == "1000 rows: 1000 created, 0 already imported, 0 refused.",
        "{summary}"
    );
    browser.open(&format!("{console}/links?q=row-999")).await?;
    ensure!(browser.count("a[href='/console/links/row-999']").await? == 1);
    browser.quit().await
}

/// Every console screen, signed out and in, as `(name, path)`.
fn screens(code: &str) -> Vec<(&'static str, String)> {
    vec![
        ("overview", "/console/".to_owned()),
        ("links", "/console/links".to_owned()),
        ("new-link", "/console/links/new".to_owned()),
        ("link", format!("/console/links/{code}")),
        ("import", "/console/import".to_owned()),
        ("unknown-codes", "/console/orphan-visits".to_owned()),
        ("keys", "/console/keys".to_owned()),
        ("blocklist", "/console/blocklist".to_owned()),
    ]
}

/// axe-core on every screen at 1280 px and 375 px: no serious or critical
/// WCAG 2.1 A/AA violation. With `TINYURL_CONSOLE_SCREENSHOTS=DIR` it also
/// saves each screen at both widths (`docs/console/` holds them).
#[tokio::test]
async fn every_screen_passes_axe_at_desktop_and_phone_widths() -> anyhow::Result<()> {
    let dir = ScratchDir::new("console-axe", None)?;
    let system = Embedded::start(dir.path()).await?;
    let key = system.printed_key.clone().context("the first key")?;
    let console = format!("http://{}", system.rest);
    for (alias, target) in [
        (
            "spring-sale",
            "https://shop.example.com/campaigns/spring?utm_source=newsletter",
        ),
        (
            "install-guide",
            "https://docs.example.org/getting-started/install",
        ),
        ("talk-2026", "https://video.example.net/watch?v=Xq3f9"),
    ] {
        // Tags on some, so that their links are checked and shown too.
        let tags: &[&str] = if alias == "talk-2026" {
            &[]
        } else {
            &["campaign", "spring 2026"]
        };
        let body = serde_json::json!({ "target_url": target, "alias": alias, "tags": tags });
        let created = services::rest_create(system.rest, &key, &body).await?;
        ensure!(created.status == 201, "{}", created.text());
    }
    for (user_agent, referrer) in [
        (HUMAN, "https://news.example/post"),
        (HUMAN, "https://social.example/feed"),
        (HUMAN, "https://news.example/post"),
        (BOT, "-"),
    ] {
        http_request_with(
            system.http,
            "GET",
            "/spring-sale",
            &[("User-Agent", user_agent), ("Referer", referrer)],
        )
        .await?;
    }
    let shots = std::env::var_os("TINYURL_CONSOLE_SCREENSHOTS").map(std::path::PathBuf::from);
    let browser = Browser::start(1280, 900).await?;
    let mut found = Vec::new();
    let mut check = async |name: &str, width: &str| -> anyhow::Result<()> {
        for violation in browser.accessibility_violations().await? {
            found.push(format!("{name} at {width}: {violation}"));
        }
        if let Some(shots) = &shots {
            std::fs::write(
                shots.join(format!("{name}-{width}.png")),
                browser.screenshot().await?,
            )?;
        }
        Ok(())
    };
    for (width, height, label) in [(1280, 900, "desktop"), (375, 812, "phone")] {
        browser.resize(width, height).await?;
        browser.open(&format!("{console}/console/sign-in")).await?;
        check("sign-in", label).await?;
    }
    sign_in(&browser, &format!("{console}/console"), &key).await?;
    wait_until("the clicks folded", Duration::from_secs(30), || async {
        browser
            .open(&format!("{console}/console/links/spring-sale"))
            .await?;
        Ok(text_of(&browser, "#click-totals")
            .await?
            .starts_with("3 human and 1 bot"))
    })
    .await?;
    for (width, height, label) in [(1280, 900, "desktop"), (375, 812, "phone")] {
        browser.resize(width, height).await?;
        for (name, path) in screens("spring-sale") {
            browser.open(&format!("{console}{path}")).await?;
            check(name, label).await?;
        }
    }
    ensure!(found.is_empty(), "accessibility violations: {found:#?}");
    // The checker finds what it should: an image without a text
    // alternative, put in the page, is a critical violation.
    browser
        .script(
            "document.querySelector('main').appendChild(document.createElement('img'));",
            &[],
        )
        .await?;
    let planted = browser.accessibility_violations().await?;
    ensure!(
        planted
            .iter()
            .any(|violation| violation.starts_with("image-alt (critical)")),
        "axe-core missed an image without alt: {planted:?}"
    );
    browser.quit().await
}

#[tokio::test]
async fn edits_downloads_and_the_refusals_of_a_read_key_and_a_revoked_one() -> anyhow::Result<()> {
    let dir = ScratchDir::new("console-edit", None)?;
    let system = Embedded::start(dir.path()).await?;
    let key = system.printed_key.clone().context("the first key")?;
    let console = format!("http://{}/console", system.rest);
    let operator = Browser::start(1200, 900).await?;
    sign_in(&operator, &console, &key).await?;

    // Created with an alias and an expiry.
    operator.open(&format!("{console}/links/new")).await?;
    operator
        .type_into(
            &operator.find("input[name=target_url]").await?,
            "https://example.com/before",
        )
        .await?;
    operator
        .type_into(&operator.find("input[name=alias]").await?, "with-expiry")
        .await?;
    // A date input's typing depends on the locale; its value does not.
    operator
        .script(
            "document.querySelector('input[name=expires_at]').value = '2035-03-04T05:06';",
            &[],
        )
        .await?;
    operator
        .click_to_next_page(&operator.find("form.stack button[type=submit]").await?)
        .await?;
    let main = text_of(&operator, "main").await?;
    ensure!(main.contains("2035-03-04 05:06 UTC"), "the expiry: {main}");

    // Edited: a new target.
    let target = operator.find("form.stack input[name=target_url]").await?;
    operator.clear(&target).await?;
    operator
        .type_into(&target, "https://example.com/after")
        .await?;
    operator
        .click_to_next_page(&operator.find("form.stack button[type=submit]").await?)
        .await?;
    ensure!(text_of(&operator, "p.notice").await? == "Saved.");
    ensure!(text_of(&operator, "#target").await? == "https://example.com/after");

    // The QR download, fetched as the page's link would fetch it.
    let download = operator
        .script_async(
            "const done = arguments[arguments.length - 1];
             const link = document.querySelector('a[download=\"with-expiry.png\"]');
             fetch(link.href).then(async response => done([
                 response.status,
                 response.headers.get('content-type'),
                 response.headers.get('content-disposition'),
                 (await response.arrayBuffer()).byteLength,
             ])).catch(error => done(String(error)));",
            &[],
        )
        .await?;
    ensure!(
        download[0] == 200
            && download[1] == "image/png"
            && download[2]
                .as_str()
                .is_some_and(|value| value.contains("with-expiry.png"))
            && download[3].as_u64().is_some_and(|bytes| bytes > 100),
        "the PNG download: {download}"
    );

    // A read key, made on the keys page: it sees links but may not create.
    operator.open(&format!("{console}/keys")).await?;
    operator
        .type_into(
            &operator.find("form.stack input[name=name]").await?,
            "reader",
        )
        .await?;
    operator
        .click(
            &operator
                .find("form.stack select[name=scope] option[value='read']")
                .await?,
        )
        .await?;
    operator
        .click_to_next_page(&operator.find("form.stack button[type=submit]").await?)
        .await?;
    let reader_key = text_of(&operator, "#new-key").await?;
    let reader = Browser::start(1200, 900).await?;
    sign_in(&reader, &console, &reader_key).await?;
    ensure!(reader.count("a[href='/console/links/new']").await? == 0);
    reader.open(&format!("{console}/links/new")).await?;
    ensure!(reader.title().await?.starts_with("Forbidden"));

    // Revoked on the operator's keys page: the reader's session ends.
    operator.open(&format!("{console}/keys")).await?;
    operator
        .click(&operator.find("#key-2 summary").await?)
        .await?;
    operator
        .click(&operator.find("#key-2 input[name=confirm]").await?)
        .await?;
    operator
        .click_to_next_page(
            &operator
                .find("#key-2 form[action$='/revoke'] button")
                .await?,
        )
        .await?;
    wait_until(
        "the revoked key's session ended",
        Duration::from_secs(20),
        || async {
            reader.open(&format!("{console}/links")).await?;
            Ok(reader.url().await?.ends_with("/console/sign-in"))
        },
    )
    .await?;
    reader.quit().await?;
    operator.quit().await
}

/// Days since the Unix epoch, UTC: what the overview's "today" is.
fn utc_day(at: SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / 86_400)
}
