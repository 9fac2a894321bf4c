//! The console's pages, as maud templates (checked when the writer is
//! compiled; every interpolation is escaped).

use std::time::SystemTime;

use http::StatusCode;
use maud::{DOCTYPE, Markup, html};
use tinyurl_analytics::LinkStats;
use tinyurl_domain::RedirectStatus;
use tinyurl_links::auth::Scope;
use tinyurl_links::store::StoredLink;

use super::{assets, chart};

/// What the header of a signed-in page needs.
pub(super) struct Nav {
    pub csrf: String,
    pub scope: Scope,
}

fn layout(title: &str, nav: Option<&Nav>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) " · tinyurl" }
                link rel="stylesheet" href=(assets::style());
                script src=(assets::script()) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/" { "tinyurl" }
                    @if let Some(nav) = nav {
                        nav aria-label="Console" {
                            a href="/console/links" { "Links" }
                            @if nav.scope >= Scope::Create {
                                a href="/console/links/new" { "New link" }
                            }
                        }
                        span.muted { "scope: " (nav.scope.as_str()) }
                        form method="post" action="/console/sign-out" {
                            input type="hidden" name="csrf" value=(nav.csrf);
                            button.plain type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { (content) }
            }
        }
    }
}

pub(super) fn error(status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    layout(
        title,
        None,
        html! {
            h1 { (status.as_u16()) " " (title) }
            p.alert role="alert" { (message) }
            p { a href="/console/links" { "Back to the console" } }
        },
    )
}

pub(super) fn sign_in(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(error) = error {
                p.alert role="alert" #sign-in-error { (error) }
            }
            form.stack method="post" action="/console/sign-in" {
                label {
                    "API key"
                    input type="password" name="key" autocomplete="current-password"
                        required autofocus spellcheck="false" placeholder="tu_…";
                }
                button type="submit" { "Sign in" }
            }
            p.muted {
                "Sign in with an API key; the console can do what the key's scope allows. "
                "An operator creates keys with " code { "tinyurl-writer api-key create" } "."
            }
        },
    )
}

/// When a link redirects, and if not, why.
fn state(link: &StoredLink, now: SystemTime) -> (&'static str, &'static str) {
    if link.blocked {
        ("blocked", "blocked")
    } else if !link.enabled {
        ("off", "disabled")
    } else if link.expires_at.is_some_and(|at| at <= now) {
        ("expired", "expired")
    } else {
        ("on", "active")
    }
}

/// A time in UTC, to the minute.
pub(super) fn when(at: SystemTime) -> String {
    let full = humantime::format_rfc3339_seconds(at).to_string();
    format!("{} {} UTC", &full[..10], &full[11..16])
}

/// A time as a `datetime-local` input's value (UTC).
pub(super) fn local_input(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()[..16].to_owned()
}

pub(super) struct ListView<'a> {
    pub links: &'a [StoredLink],
    pub next: Option<&'a str>,
    pub first_page: bool,
    pub short_url: &'a dyn Fn(&str) -> String,
}

pub(super) fn links(nav: &Nav, view: &ListView<'_>) -> Markup {
    let now = SystemTime::now();
    layout(
        "Links",
        Some(nav),
        html! {
            div.row {
                h1 { "Links" }
                @if nav.scope >= Scope::Create {
                    a.button href="/console/links/new" { "New link" }
                }
            }
            @if view.links.is_empty() {
                p.muted #no-links {
                    @if view.first_page { "No links yet." } @else { "No more links." }
                }
            } @else {
                table.links {
                    thead { tr { th { "Short link" } th { "Target" } th { "State" } th { "Created" } } }
                    tbody {
                        @for link in view.links {
                            @let (class, label) = state(link, now);
                            tr {
                                td { a href=(format!("/console/links/{}", link.code)) { (link.code) } }
                                td.target { (link.target_url) }
                                td { span class=(format!("badge {class}")) { (label) } }
                                td.muted { (when(link.created_at)) }
                            }
                        }
                    }
                }
            }
            nav.pager.row aria-label="Pages" {
                @if !view.first_page { a href="/console/links" { "First page" } }
                @if let Some(next) = view.next {
                    a href=(format!("/console/links?after={}", urlencode(next))) rel="next" { "Next page" }
                }
            }
            @if let Some(first) = view.links.first() {
                p.muted { "Short links look like " code { ((view.short_url)(&first.code)) } "." }
            }
        },
    )
}

/// What a create form holds, to show it again with its error.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
pub(super) struct CreateForm {
    pub csrf: String,
    pub target_url: String,
    pub alias: String,
    pub redirect_type: String,
    pub forward_query: Option<String>,
    pub expires_at: String,
}

/// An error to show next to a field (or above the form, without one).
pub(super) struct FormError {
    pub field: Option<&'static str>,
    pub message: String,
}

fn field_error(error: Option<&FormError>, field: &str) -> Markup {
    html! {
        @if let Some(error) = error.filter(|error| error.field == Some(field)) {
            span.field-error id=(format!("{field}-error")) role="alert" { (error.message) }
        }
    }
}

fn status_options(selected: &str) -> Markup {
    html! {
        @for status in RedirectStatus::ALL {
            @let code = status.code().to_string();
            option value=(code) selected[code == selected] {
                (code) @if status.is_permanent() { " (permanent)" } @else { " (temporary)" }
            }
        }
    }
}

pub(super) fn new_link(nav: &Nav, form: &CreateForm, error: Option<&FormError>) -> Markup {
    let selected = if form.redirect_type.is_empty() {
        "302"
    } else {
        &form.redirect_type
    };
    layout(
        "New link",
        Some(nav),
        html! {
            h1 { "New link" }
            @if let Some(error) = error.filter(|error| error.field.is_none()) {
                p.alert role="alert" { (error.message) }
            }
            form.stack method="post" action="/console/links" novalidate {
                input type="hidden" name="csrf" value=(nav.csrf);
                label {
                    "Target URL"
                    input type="url" name="target_url" value=(form.target_url) required
                        placeholder="https://example.com/a/long/path" autofocus;
                    (field_error(error, "target_url"))
                }
                label {
                    "Alias (optional)"
                    input type="text" name="alias" value=(form.alias) spellcheck="false"
                        placeholder="a custom code";
                    (field_error(error, "alias"))
                }
                label {
                    "Redirect"
                    select name="redirect_type" { (status_options(selected)) }
                    (field_error(error, "redirect_type"))
                }
                label.check {
                    input type="checkbox" name="forward_query" checked[form.forward_query.is_some()];
                    "Pass the short link's query string on to the target"
                }
                label {
                    "Expires (UTC, optional)"
                    input type="datetime-local" name="expires_at" value=(form.expires_at);
                    (field_error(error, "expires_at"))
                }
                button type="submit" { "Create" }
            }
        },
    )
}

pub(super) struct LinkView<'a> {
    pub link: &'a StoredLink,
    pub short_url: String,
    pub stats: Result<&'a LinkStats, String>,
    pub range: &'a str,
    pub notice: Option<&'a str>,
    pub error: Option<&'a FormError>,
}

/// The ranges the stats can be shown over.
pub(super) const RANGES: [(&str, &str); 4] = [
    ("1h", "last hour"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
    ("30d", "last 30 days"),
];

fn counts(title: &str, rows: &[(String, u64)]) -> Markup {
    html! {
        div.panel {
            h2 { (title) }
            @if rows.is_empty() {
                p.muted { "None yet." }
            } @else {
                table {
                    @for (name, count) in rows {
                        tr { td { (name) } td { (count) } }
                    }
                }
            }
        }
    }
}

pub(super) fn link(nav: &Nav, view: &LinkView<'_>) -> Markup {
    let link = view.link;
    let (class, label) = state(link, SystemTime::now());
    let code = &link.code;
    let manage = nav.scope >= Scope::Manage;
    layout(
        code,
        Some(nav),
        html! {
            div.row {
                h1 { (code) }
                span class=(format!("badge {class}")) #link-state { (label) }
            }
            @if let Some(notice) = view.notice {
                p.notice role="status" { (notice) }
            }
            @if let Some(error) = view.error.filter(|error| error.field.is_none()) {
                p.alert role="alert" { (error.message) }
            }
            div.grid2 {
                div.panel {
                    dl.facts {
                        dt { "Short link" }
                        dd {
                            a href=(view.short_url) #short-url { (view.short_url) } " "
                            button.plain type="button" data-copy=(view.short_url) hidden { "Copy" }
                        }
                        dt { "Target" } dd #target { (link.target_url) }
                        dt { "Redirect" } dd { (link.redirect_status.code()) }
                        dt { "Query" } dd { @if link.forward_query { "passed on" } @else { "dropped" } }
                        dt { "Expires" } dd { @match link.expires_at { Some(at) => (when(at)), None => "never" } }
                        dt { "Created" } dd { (when(link.created_at)) }
                        dt { "Changed" } dd { (when(link.updated_at)) }
                    }
                }
                div.panel {
                    img.qr src=(format!("/console/links/{code}/qr.svg")) alt=(format!("QR code of {}", view.short_url));
                    p.row {
                        a href=(format!("/console/links/{code}/qr.png?download")) download=(format!("{code}.png")) { "PNG" }
                        a href=(format!("/console/links/{code}/qr.svg?download")) download=(format!("{code}.svg")) { "SVG" }
                    }
                }
            }
            h2 { "Clicks" }
            nav.row aria-label="Range" {
                @for (range, label) in RANGES {
                    @if range == view.range {
                        strong aria-current="true" { (label) }
                    } @else {
                        a href=(format!("/console/links/{code}?range={range}")) { (label) }
                    }
                }
            }
            @match &view.stats {
                Ok(stats) => {
                    p #click-totals {
                        strong { (stats.clicks) } " human and "
                        strong { (stats.bot_clicks) } " bot clicks in this range; "
                        (stats.lifetime_clicks) " human and " (stats.lifetime_bot_clicks) " bot in all."
                    }
                    (chart::clicks(&stats.series, stats.query.granularity))
                    p.legend.muted { span.human {} " humans " span.bot {} " bots" }
                    p.muted { "Referrers, countries, browsers and devices count human clicks." }
                    div.grid2 {
                        (counts("Referrers", &stats.referrers))
                        (counts("Countries", &stats.countries))
                        (counts("Browsers", &stats.browsers))
                        (counts("Devices", &stats.devices))
                        (counts("Bots", &stats.bots))
                    }
                }
                Err(message) => { p.alert role="alert" { (message) } }
            }
            @if manage && !link.blocked {
                h2 { "Edit" }
                form.stack method="post" action=(format!("/console/links/{code}")) novalidate {
                    input type="hidden" name="csrf" value=(nav.csrf);
                    label {
                        "Target URL"
                        input type="url" name="target_url" value=(link.target_url) required;
                        (field_error(view.error, "target_url"))
                    }
                    label {
                        "Redirect"
                        select name="redirect_type" { (status_options(&link.redirect_status.code().to_string())) }
                    }
                    label.check {
                        input type="checkbox" name="forward_query" checked[link.forward_query];
                        "Pass the short link's query string on to the target"
                    }
                    label {
                        "Expires (UTC, empty for never)"
                        input type="datetime-local" name="expires_at"
                            value=(link.expires_at.map(local_input).unwrap_or_default());
                        (field_error(view.error, "expires_at"))
                    }
                    button type="submit" { "Save" }
                }
                form.row method="post" action=(format!("/console/links/{code}/enabled")) {
                    input type="hidden" name="csrf" value=(nav.csrf);
                    @if link.enabled {
                        input type="hidden" name="enabled" value="false";
                        button.plain type="submit" #disable { "Disable" }
                        span.muted { "A disabled link answers 410 Gone until enabled again." }
                    } @else {
                        input type="hidden" name="enabled" value="true";
                        button type="submit" #enable { "Enable" }
                    }
                }
            }
            @if manage {
                h2 { "Delete" }
                form.row method="post" action=(format!("/console/links/{code}/delete")) {
                    input type="hidden" name="csrf" value=(nav.csrf);
                    label.check {
                        input type="checkbox" name="confirm" required;
                        "Delete " (code) " for good; its code is never given out again"
                    }
                    button.danger type="submit" #delete { "Delete" }
                    (field_error(view.error, "confirm"))
                }
            }
        },
    )
}

/// Percent-encodes a query value (page tokens are base64url-like, but a
/// token is the server's and could change shape).
fn urlencode(raw: &str) -> String {
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
