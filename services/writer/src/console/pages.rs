//! The console's pages, as maud templates (checked when the writer is
//! compiled; every interpolation is escaped).

use std::time::SystemTime;

use http::StatusCode;
use maud::{DOCTYPE, Markup, html};
use tinyurl_analytics::LinkStats;
use tinyurl_domain::RedirectStatus;
use tinyurl_links::Overview;
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
                            a href="/console/" { "Overview" }
                            a href="/console/links" { "Links" }
                            @if nav.scope >= Scope::Create {
                                a href="/console/links/new" { "New link" }
                                a href="/console/import" { "Import" }
                            }
                            @if nav.scope >= Scope::Manage {
                                a href="/console/orphan-visits" { "Unknown codes" }
                            }
                            @if nav.scope >= Scope::Admin {
                                a href="/console/keys" { "Keys" }
                                a href="/console/blocklist" { "Blocklist" }
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

fn link_rows(links: &[(StoredLink, i64)]) -> Markup {
    let now = SystemTime::now();
    html! {
        table.links {
            thead { tr { th { "Short link" } th { "Target" } th { "State" } th { "Clicks" } } }
            tbody {
                @for (link, clicks) in links {
                    @let (class, label) = state(link, now);
                    tr {
                        td.code { a href=(format!("/console/links/{}", link.code.replace('/', "%2F"))) { (link.code) } }
                        td.target { (link.target_url) }
                        td { span class=(format!("badge {class}")) { (label) } }
                        td.clicks { (clicks) }
                    }
                }
            }
        }
    }
}

pub(super) fn overview(nav: &Nav, overview: &Overview) -> Markup {
    layout(
        "Overview",
        Some(nav),
        html! {
            h1 { "Overview" }
            div.grid2.figures {
                div.panel {
                    p.figure #link-count { (overview.links) }
                    p.muted { "links" }
                }
                div.panel {
                    p.figure #clicks-day { (overview.today.0) }
                    p.muted { "human clicks today, UTC (" (overview.today.1) " by bots)" }
                }
                div.panel {
                    p.figure #clicks-week { (overview.last_week.0) }
                    p.muted { "human clicks in the last 7 days (" (overview.last_week.1) " by bots)" }
                }
            }
            h2 { "Most clicked" }
            @if overview.most_clicked.is_empty() {
                p.muted { "No clicks yet." }
            } @else {
                (link_rows(&overview.most_clicked))
                p { a href="/console/links?sort=clicks" { "All links, most clicked first" } }
            }
            h2 { "Newest" }
            @if overview.newest.is_empty() {
                p.muted #no-links { "No links yet." }
                @if nav.scope >= Scope::Create {
                    p { a.button href="/console/links/new" { "Create the first" } }
                }
            } @else {
                (link_rows(&overview.newest))
                p { a href="/console/links" { "All links" } }
            }
        },
    )
}

pub(super) struct ListView<'a> {
    pub links: &'a [(StoredLink, i64)],
    pub next: Option<&'a str>,
    pub first_page: bool,
    pub q: &'a str,
    pub state: &'a str,
    pub sort: &'a str,
    /// Only the links with this tag (empty: all).
    pub tag: &'a str,
    pub notice: Option<String>,
}

const STATES: [(&str, &str); 5] = [
    ("", "any state"),
    ("active", "active"),
    ("disabled", "disabled"),
    ("expired", "expired"),
    ("blocked", "blocked"),
];

pub(super) fn links(nav: &Nav, view: &ListView<'_>) -> Markup {
    let now = SystemTime::now();
    let searching = !view.q.is_empty() || !view.state.is_empty() || !view.tag.is_empty();
    let manage = nav.scope >= Scope::Manage;
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
            @if let Some(notice) = &view.notice {
                p.notice role="status" #bulk-notice { (notice) }
            }
            @if !view.tag.is_empty() {
                p.row #tag-filter {
                    "Tagged " span.tag { (view.tag) }
                    a href=(list_url_tagged(view, None, "")) { "show every tag" }
                }
            }
            form.row.search method="get" action="/console/links" role="search" {
                @if !view.tag.is_empty() {
                    input type="hidden" name="tag" value=(view.tag);
                }
                label.grow {
                    span.visually-hidden { "Search" }
                    input type="search" name="q" value=(view.q)
                        placeholder="code, alias, host or URL start" spellcheck="false";
                }
                label {
                    span.visually-hidden { "State" }
                    select name="state" {
                        @for (value, label) in STATES {
                            option value=(value) selected[value == view.state] { (label) }
                        }
                    }
                }
                label {
                    span.visually-hidden { "Order" }
                    select name="sort" {
                        option value="" selected[view.sort != "clicks"] { "newest first" }
                        option value="clicks" selected[view.sort == "clicks"] { "most clicked first" }
                    }
                }
                button type="submit" { "Show" }
            }
            @if view.links.is_empty() {
                p.muted #no-links {
                    @if !view.first_page { "No more links." }
                    @else if searching { "No links match." }
                    @else { "No links yet." }
                }
            } @else {
                form method="post" action="/console/links/bulk" {
                    input type="hidden" name="csrf" value=(nav.csrf);
                    table.links {
                        thead {
                            tr {
                                th { span.visually-hidden { "Select" } }
                                th { "Short link" } th { "Target" } th { "State" }
                                th { "Clicks" } th { "Created" }
                            }
                        }
                        tbody {
                            @for (link, clicks) in view.links {
                                @let (class, label) = state(link, now);
                                tr {
                                    td {
                                        input type="checkbox" name="code" value=(link.code)
                                            aria-label=(format!("Select {}", link.code));
                                    }
                                    td.code { a href=(format!("/console/links/{}", link.code.replace('/', "%2F"))) { (link.code) } }
                                    td.target {
                                        (link.target_url)
                                        (tag_links(&link.tags))
                                    }
                                    td { span class=(format!("badge {class}")) { (label) } }
                                    td.clicks { (clicks) }
                                    td.muted { (when(link.created_at)) }
                                }
                            }
                        }
                    }
                    div.row.bulk {
                        span.muted { "With the ticked links:" }
                        button.plain type="submit" name="action" value="export" { "Export CSV" }
                        @if manage {
                            button.plain type="submit" name="action" value="disable" { "Disable" }
                            button.plain type="submit" name="action" value="enable" { "Enable" }
                            label.check {
                                input type="checkbox" name="confirm";
                                "confirm deletion"
                            }
                            button.danger type="submit" name="action" value="delete" { "Delete" }
                        }
                    }
                }
            }
            nav.pager.row aria-label="Pages" {
                @if !view.first_page {
                    a href=(list_url(view, None)) { "First page" }
                }
                @if let Some(next) = view.next {
                    a href=(list_url(view, Some(next))) rel="next" { "Next page" }
                }
            }
        },
    )
}

/// The listing's URL with the same search, from `after`.
fn list_url(view: &ListView<'_>, after: Option<&str>) -> String {
    list_url_tagged(view, after, view.tag)
}

/// [`list_url`] with another tag (empty: every tag).
fn list_url_tagged(view: &ListView<'_>, after: Option<&str>, tag: &str) -> String {
    let mut query = Vec::new();
    for (name, value) in [
        ("q", view.q),
        ("state", view.state),
        ("sort", view.sort),
        ("tag", tag),
    ] {
        if !value.is_empty() {
            query.push(format!("{name}={}", urlencode(value)));
        }
    }
    if let Some(after) = after {
        query.push(format!("after={}", urlencode(after)));
    }
    if query.is_empty() {
        "/console/links".to_owned()
    } else {
        format!("/console/links?{}", query.join("&"))
    }
}

/// What a bulk action did, when some links were refused.
pub(super) fn bulk_result(nav: &Nav, summary: &str, failures: &[(String, String)]) -> Markup {
    layout(
        "Bulk action",
        Some(nav),
        html! {
            h1 { "Bulk action" }
            p #bulk-summary { (summary) }
            table {
                thead { tr { th { "Link" } th { "Why not" } } }
                tbody {
                    @for (code, reason) in failures {
                        tr { td { (code) } td { (reason) } }
                    }
                }
            }
            p { a href="/console/links" { "Back to the links" } }
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
    /// Comma-separated.
    pub tags: String,
    /// A registered domain's host; empty: the default domain.
    pub domain: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    /// One rule per line ([`tinyurl_links::input::RuleInput::parse_line`]).
    pub rules: String,
    /// Empty for no cap.
    pub max_visits: String,
    /// Empty for none; never shown again.
    pub password: String,
}

/// What the campaign and rules fields of a form show.
pub(super) struct OptionFields<'a> {
    pub utm: [(&'static str, &'static str, &'a str); 5],
    pub rules: String,
    pub max_visits: String,
    /// The link has a password (an edit form offers to remove it).
    pub protected: bool,
}

impl<'a> OptionFields<'a> {
    pub fn of_form(form: &'a CreateForm) -> Self {
        Self {
            utm: [
                ("utm_source", "Source", form.utm_source.as_str()),
                ("utm_medium", "Medium", form.utm_medium.as_str()),
                ("utm_campaign", "Campaign", form.utm_campaign.as_str()),
                ("utm_term", "Term", form.utm_term.as_str()),
                ("utm_content", "Content", form.utm_content.as_str()),
            ],
            rules: form.rules.clone(),
            max_visits: form.max_visits.clone(),
            protected: false,
        }
    }

    pub fn of_link(link: &'a StoredLink) -> Self {
        let utm = &link.options.utm;
        let value = |field: &'a Option<String>| field.as_deref().unwrap_or_default();
        Self {
            utm: [
                ("utm_source", "Source", value(&utm.source)),
                ("utm_medium", "Medium", value(&utm.medium)),
                ("utm_campaign", "Campaign", value(&utm.campaign)),
                ("utm_term", "Term", value(&utm.term)),
                ("utm_content", "Content", value(&utm.content)),
            ],
            rules: link
                .options
                .rules
                .iter()
                .map(|rule| tinyurl_links::input::RuleInput::from(rule).to_line())
                .collect::<Vec<_>>()
                .join("\n"),
            max_visits: link
                .options
                .max_visits
                .map(|cap| cap.to_string())
                .unwrap_or_default(),
            protected: link.options.is_protected(),
        }
    }

    fn is_empty(&self) -> bool {
        !self.protected
            && self.rules.trim().is_empty()
            && self.max_visits.trim().is_empty()
            && self.utm.iter().all(|(_, _, value)| value.is_empty())
    }
}

/// The UTM fields and the rules of a form, folded away unless they hold
/// something or an error.
fn option_fields(fields: &OptionFields<'_>, error: Option<&FormError>) -> Markup {
    let open = !fields.is_empty()
        || error.is_some_and(|error| {
            matches!(
                error.field,
                Some("utm" | "rules" | "max_visits" | "password" | "clear_password")
            )
        });
    html! {
        details.options open[open] {
            summary { "Campaign (UTM), redirect rules, a visit cap and a password" }
            fieldset.stack {
                legend { "UTM parameters added to the target" }
                @for (name, label, value) in &fields.utm {
                    label {
                        (label)
                        input type="text" name=(name) value=(value) spellcheck="false" maxlength="200";
                    }
                }
                (field_error(error, "utm"))
            }
            label {
                "Rules, one per line: conditions, then the target"
                textarea name="rules" rows="3" spellcheck="false"
                    placeholder="device=ios country=DE,AT lang=de https://example.com/de-app" { (fields.rules) }
                (field_error(error, "rules"))
            }
            label {
                "Visits by people before the link answers 410 (empty for no cap)"
                input type="text" inputmode="numeric" name="max_visits" value=(fields.max_visits)
                    spellcheck="false";
                (field_error(error, "max_visits"))
            }
            label {
                @if fields.protected {
                    "New password (empty keeps the current one)"
                } @else {
                    "Password visitors must give first (empty for none)"
                }
                input type="password" name="password" autocomplete="new-password" maxlength="128";
                (field_error(error, "password"))
            }
            @if fields.protected {
                label.check {
                    input type="checkbox" name="remove_password" value="1";
                    " Remove the password"
                }
            }
            p.muted {
                "Conditions: " code { "device=" } "ios, android or desktop; "
                code { "country=" } "two-letter codes; " code { "lang=" } "languages like en or pt-BR. "
                "The first rule a visit meets answers it; the target above answers the rest."
            }
        }
    }
}

/// A rule's conditions in words: `iOS or Android, in DE or AT, speaking de`.
fn rule_summary(rule: &tinyurl_domain::RedirectRule) -> String {
    let mut parts = Vec::new();
    if !rule.devices.is_empty() {
        let devices: Vec<&str> = rule
            .devices
            .iter()
            .map(|device| match device {
                tinyurl_domain::Device::Ios => "iOS",
                tinyurl_domain::Device::Android => "Android",
                tinyurl_domain::Device::Desktop => "desktop",
            })
            .collect();
        parts.push(devices.join(" or "));
    }
    if !rule.countries.is_empty() {
        parts.push(format!("in {}", rule.countries.join(" or ")));
    }
    if !rule.languages.is_empty() {
        parts.push(format!("speaking {}", rule.languages.join(" or ")));
    }
    parts.join(", ")
}

/// A link's tags, each a link to the listing of its links.
fn tag_links(tags: &[String]) -> Markup {
    html! {
        @if !tags.is_empty() {
            span.tags {
                @for tag in tags {
                    a.tag href=(format!("/console/links?tag={}", urlencode(tag))) { (tag) }
                }
            }
        }
    }
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

/// `domains`: the registered short domains' hosts, offered for the domain
/// field.
pub(super) fn new_link(
    nav: &Nav,
    form: &CreateForm,
    error: Option<&FormError>,
    domains: &[String],
) -> Markup {
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
                    "Domain (optional)"
                    input type="text" name="domain" value=(form.domain) spellcheck="false"
                        placeholder="the default domain" list="domains";
                    datalist #domains {
                        @for host in domains { option value=(host) {} }
                    }
                    (field_error(error, "domain"))
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
                label {
                    "Tags (optional, separated by commas)"
                    input type="text" name="tags" value=(form.tags) spellcheck="false"
                        placeholder="newsletter, spring sale";
                    (field_error(error, "tags"))
                }
                (option_fields(&OptionFields::of_form(form), error))
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
    /// Chosen days: from, to, granularity (as asked).
    pub days: Option<(&'a str, &'a str, &'a str)>,
    /// The traffic class shown alone; empty: everyone.
    pub class: &'a str,
    pub notice: Option<&'a str>,
    pub error: Option<&'a FormError>,
    /// A capped link's visits used, when they could be read.
    pub visits_used: Option<u64>,
}

/// Whose clicks the stats can be shown for: everyone (people in the
/// breakdowns, bots apart), or one class alone.
pub(super) const CLASS_VIEWS: [(&str, &str); 6] = [
    ("", "everyone"),
    ("human", "people"),
    ("previewer", "link previewers"),
    ("crawler", "crawlers"),
    ("monitor", "monitors"),
    ("bot", "all bots"),
];

/// The query parameter that shows `class` alone (none for everyone).
fn class_param(class: &str) -> String {
    if class.is_empty() {
        String::new()
    } else {
        format!("&class={class}")
    }
}

/// The query string of a link page's window with `class` shown.
fn window_query(view: &LinkView<'_>, class: &str) -> String {
    let window = match view.days {
        Some((from, to, granularity)) => {
            format!("from={from}&to={to}&granularity={granularity}")
        }
        None => format!("range={}", view.range),
    };
    window + &class_param(class)
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
    // A link on another domain is keyed `{host}/{code}`: one path segment.
    let code = &link.code.replace('/', "%2F");
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
                        dt { "Tags" }
                        dd #tags {
                            @if link.tags.is_empty() { "none" } @else { (tag_links(&link.tags)) }
                        }
                        @if !link.options.utm.is_empty() {
                            dt { "UTM" }
                            dd #utm {
                                @for (name, value) in link.options.utm.pairs() {
                                    code { (name) "=" (value) } " "
                                }
                            }
                        }
                        @if !link.options.rules.is_empty() {
                            dt { "Rules" }
                            dd #rules {
                                ol {
                                    @for rule in &link.options.rules {
                                        li { (rule_summary(rule)) " → " (rule.target_url) }
                                    }
                                }
                            }
                        }
                        @if let Some(cap) = link.options.max_visits {
                            dt { "Visits" }
                            dd #visit-cap {
                                "at most " (cap)
                                @if let Some(used) = view.visits_used { ", " (used) " used" }
                            }
                        }
                        @if link.options.is_protected() {
                            dt { "Password" } dd #password { "visitors must give it first" }
                        }
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
                        a href=(format!("/console/links/{code}?range={range}{}", class_param(view.class))) { (label) }
                    }
                }
            }
            nav.row #who aria-label="Whose clicks" {
                @for (class, label) in CLASS_VIEWS {
                    @if class == view.class {
                        strong aria-current="true" { (label) }
                    } @else {
                        a href=(format!("/console/links/{code}?{}", window_query(view, class))) { (label) }
                    }
                }
            }
            @let (from, to, granularity) = view.days.unwrap_or_default();
            form.row.days method="get" action=(format!("/console/links/{code}")) {
                label { "From " input type="date" name="from" value=(from) required; }
                label { "to " input type="date" name="to" value=(to) required; }
                label {
                    span.visually-hidden { "Granularity" }
                    select name="granularity" {
                        @for (value, label) in [("", "by the range"), ("minute", "per minute"), ("hour", "per hour"), ("day", "per day")] {
                            option value=(value) selected[value == granularity] { (label) }
                        }
                    }
                }
                @if !view.class.is_empty() {
                    input type="hidden" name="class" value=(view.class);
                }
                button.plain type="submit" { "Show days" }
            }
            @match &view.stats {
                Ok(stats) => {
                    p #click-totals {
                        strong { (stats.clicks) } " human and "
                        strong { (stats.bot_clicks) } " bot clicks in this range; "
                        (stats.lifetime_clicks) " human and " (stats.lifetime_bot_clicks) " bot in all."
                    }
                    p #visitors {
                        strong { (stats.visitors) }
                        " unique visitors on the days of this range (people, each day counted apart)."
                    }
                    (chart::clicks(&stats.series, stats.query.granularity))
                    p.legend.muted { span.human {} " humans " span.bot {} " bots" }
                    @match CLASS_VIEWS.iter().find(|(class, _)| *class == view.class) {
                        Some(("", _)) | None => {
                            p.muted #breakdowns-count { "Referrers, countries, browsers, devices and rules count human clicks." }
                        }
                        Some((_, label)) => {
                            p.muted #breakdowns-count { "Every figure here counts " (label) " only." }
                        }
                    }
                    div.grid2 {
                        (counts("Referrers", &stats.referrers))
                        (counts("Countries", &stats.countries))
                        (counts("Browsers", &stats.browsers))
                        (counts("Devices", &stats.devices))
                        (counts("Bots", &stats.bots))
                        (counts("Who: people, crawlers, link previewers, monitors", &stats.classes))
                        @if !stats.rules.is_empty() {
                            (counts("Rules (the link's own target: target)", &stats.rules))
                        }
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
                    label {
                        "Tags (separated by commas)"
                        input type="text" name="tags" value=(link.tags.join(", ")) spellcheck="false";
                        (field_error(view.error, "tags"))
                    }
                    (option_fields(&OptionFields::of_link(link), view.error))
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

/// Where an import's page is cut to stream its progress in between.
pub(super) const STREAM_MARK: &str = "<!--progress-->";

pub(super) fn import_form(nav: &Nav, error: Option<&str>) -> Markup {
    layout(
        "Import",
        Some(nav),
        html! {
            h1 { "Import links" }
            @if let Some(error) = error {
                p.alert role="alert" #import-error { (error) }
            }
            p {
                "A CSV file of " code { "url" } ", then optionally " code { "alias" } " and "
                code { "expires" } " (an RFC 3339 time or a duration from now, like "
                code { "30d" } "), one link a row; a first row starting with " code { "url" }
                " is a header. Files that " code { "tinyurl export" } " or this console's export
                wrote import as they are. An interrupted import resumes when the same file is
                uploaded again: rows already imported are not created twice."
            }
            form.stack method="post" action="/console/import" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(nav.csrf);
                label {
                    "CSV file (at most 10 MB)"
                    input type="file" name="file" accept=".csv,text/csv" required;
                }
                label {
                    "Redirect"
                    select name="status" { (status_options("302")) }
                }
                button type="submit" { "Import" }
            }
        },
    )
}

/// The import's page around its streamed progress (cut at [`STREAM_MARK`]).
pub(super) fn import_progress(nav: &Nav) -> Markup {
    layout(
        "Importing",
        Some(nav),
        html! {
            h1 { "Importing" }
            div #import-progress { (maud::PreEscaped(STREAM_MARK)) }
        },
    )
}

fn scope_options(selected: &str) -> Markup {
    html! {
        @for scope in [Scope::Read, Scope::Create, Scope::Manage, Scope::Admin] {
            option value=(scope.as_str()) selected[scope.as_str() == selected] { (scope.as_str()) }
        }
    }
}

pub(super) fn keys(
    nav: &Nav,
    keys: &[tinyurl_links::keys::ApiKeyInfo],
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    let now = SystemTime::now();
    layout(
        "API keys",
        Some(nav),
        html! {
            h1 { "API keys" }
            @if let Some(notice) = notice { p.notice role="status" #keys-notice { (notice) } }
            @if let Some(error) = error { p.alert role="alert" #keys-error { (error) } }
            table.keys {
                thead {
                    tr {
                        th { "Id" } th { "Name" } th { "Scope" } th { "Rate" }
                        th { "Last used" } th { "State" } th { span.visually-hidden { "Actions" } }
                    }
                }
                tbody {
                    @for key in keys {
                        @let state = match (key.revoked_at, key.previous_valid_until) {
                            (Some(at), _) => format!("revoked {}", when(at)),
                            (None, Some(until)) if until > now => format!("old value until {}", when(until)),
                            _ => "active".to_owned(),
                        };
                        tr id=(format!("key-{}", key.id)) {
                            td { (key.id) }
                            td { (key.name) }
                            td { (key.scope.as_str()) }
                            td { @match key.rate { Some(rate) => (rate.to_string()), None => "default" } }
                            td.muted { @match key.last_used_at { Some(at) => (when(at)), None => "never" } }
                            td.state { (state) }
                            td {
                                @if key.revoked_at.is_none() {
                                    details {
                                        summary { "Change" }
                                        form.row method="post" action=(format!("/console/keys/{}/rate", key.id)) {
                                            input type="hidden" name="csrf" value=(nav.csrf);
                                            label { "Rate " input type="text" name="rate" size="8" placeholder="100/s or default"; }
                                            button.plain type="submit" { "Set rate" }
                                        }
                                        form.row method="post" action=(format!("/console/keys/{}/rotate", key.id)) {
                                            input type="hidden" name="csrf" value=(nav.csrf);
                                            label {
                                                "Old value works for "
                                                select name="grace" {
                                                    option value="0" { "no time" }
                                                    option value="1h" { "1 hour" }
                                                    option value="24h" selected { "24 hours" }
                                                    option value="7d" { "7 days" }
                                                    option value="30d" { "30 days" }
                                                }
                                            }
                                            button.plain type="submit" { "Rotate" }
                                        }
                                        form.row method="post" action=(format!("/console/keys/{}/revoke", key.id)) {
                                            input type="hidden" name="csrf" value=(nav.csrf);
                                            label.check { input type="checkbox" name="confirm" required; "confirm" }
                                            button.danger type="submit" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "New key" }
            form.stack method="post" action="/console/keys" {
                input type="hidden" name="csrf" value=(nav.csrf);
                label { "Name" input type="text" name="name" required maxlength="200" placeholder="who or what it is for"; }
                label { "Scope" select name="scope" { (scope_options("manage")) } }
                label { "Rate (optional)" input type="text" name="rate" placeholder="100/s; empty for the writer's default"; }
                button type="submit" { "Create key" }
            }
        },
    )
}

/// A key just created or rotated: shown once.
pub(super) fn new_key(nav: &Nav, message: &str, key: &str) -> Markup {
    layout(
        "New API key",
        Some(nav),
        html! {
            h1 { "New API key" }
            p.notice role="status" { (message) }
            p { "This is the only time the key is shown: copy it now." }
            p.row {
                code #new-key { (key) }
                button.plain type="button" data-copy=(key) hidden { "Copy" }
            }
            p { a href="/console/keys" { "Back to the keys" } }
        },
    )
}

pub(super) fn blocklist(
    nav: &Nav,
    entries: &[String],
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    layout(
        "Blocklist",
        Some(nav),
        html! {
            h1 { "Host blocklist" }
            @if let Some(notice) = notice { p.notice role="status" #blocklist-notice { (notice) } }
            @if let Some(error) = error { p.alert role="alert" #blocklist-error { (error) } }
            p.muted {
                "A blocked host is refused as a target on every writer, and every link to it answers "
                "410 Gone within a second; owners cannot undo it. " code { "*.example.com" }
                " blocks everything under example.com."
            }
            @if entries.is_empty() {
                p.muted #no-blocks { "Nothing is blocked." }
            } @else {
                table #blocked-hosts {
                    tbody {
                        @for entry in entries {
                            tr {
                                td { (entry) }
                                td {
                                    form method="post" action="/console/blocklist" {
                                        input type="hidden" name="csrf" value=(nav.csrf);
                                        input type="hidden" name="host" value=(entry);
                                        button.plain type="submit" name="action" value="unblock" { "Unblock" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Block a host" }
            form.stack method="post" action="/console/blocklist" {
                input type="hidden" name="csrf" value=(nav.csrf);
                label { "Host" input type="text" name="host" required placeholder="bad.example or *.bad.example" spellcheck="false"; }
                button.danger type="submit" name="action" value="block" { "Block" }
            }
        },
    )
}

/// The page of visits to codes that do not exist on one domain.
pub(super) struct OrphanView<'a> {
    /// Empty: the default domain.
    pub domain: &'a str,
    /// The registered domains.
    pub domains: &'a [String],
    pub range: &'a str,
    /// The traffic class shown alone; empty: everyone.
    pub class: &'a str,
    pub stats: Result<&'a LinkStats, String>,
    pub notice: Option<&'a str>,
}

pub(super) fn orphans(nav: &Nav, view: &OrphanView<'_>) -> Markup {
    let query = |range: &str, class: &str| {
        let domain = if view.domain.is_empty() {
            String::new()
        } else {
            format!("&domain={}", view.domain)
        };
        format!("range={range}{domain}{}", class_param(class))
    };
    let shown = if view.domain.is_empty() {
        "the default domain"
    } else {
        view.domain
    };
    layout(
        "Unknown codes",
        Some(nav),
        html! {
            h1 { "Visits to codes that do not exist" }
            @if let Some(notice) = view.notice { p.notice role="status" #orphans-notice { (notice) } }
            p.muted {
                "Requests on " strong { (shown) } " for a code that was never created (or a path that is "
                "no code): counted by who made them and by the path asked for, nothing else of the visitor."
            }
            @if !view.domains.is_empty() {
                form.row method="get" action="/console/orphan-visits" {
                    label {
                        "Domain "
                        select name="domain" {
                            option value="" selected[view.domain.is_empty()] { "default" }
                            @for host in view.domains {
                                option value=(host) selected[host == view.domain] { (host) }
                            }
                        }
                    }
                    input type="hidden" name="range" value=(view.range);
                    button.plain type="submit" { "Show" }
                }
            }
            nav.row aria-label="Range" {
                @for (range, label) in RANGES {
                    @if range == view.range {
                        strong aria-current="true" { (label) }
                    } @else {
                        a href=(format!("/console/orphan-visits?{}", query(range, view.class))) { (label) }
                    }
                }
            }
            nav.row #who aria-label="Whose visits" {
                @for (class, label) in CLASS_VIEWS {
                    @if class == view.class {
                        strong aria-current="true" { (label) }
                    } @else {
                        a href=(format!("/console/orphan-visits?{}", query(view.range, class))) { (label) }
                    }
                }
            }
            @match &view.stats {
                Ok(stats) => {
                    p #orphan-totals {
                        strong { (stats.clicks) } " by people and "
                        strong { (stats.bot_clicks) } " by bots in this range."
                    }
                    (chart::clicks(&stats.series, stats.query.granularity))
                    p.legend.muted { span.human {} " humans " span.bot {} " bots" }
                    div.grid2 {
                        (counts("Paths asked for", &stats.paths))
                        (counts("Who: people, crawlers, link previewers, monitors", &stats.classes))
                    }
                }
                Err(message) => { p.alert role="alert" { (message) } }
            }
            h2 { "Purge" }
            form.stack method="post" action="/console/orphan-visits/purge" {
                input type="hidden" name="csrf" value=(nav.csrf);
                input type="hidden" name="domain" value=(view.domain);
                label.check {
                    input type="checkbox" name="confirm" value="yes";
                    "Delete every count of these visits on " (shown)
                }
                button.danger type="submit" { "Purge" }
            }
        },
    )
}
