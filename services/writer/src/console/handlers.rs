//! One handler per console route: each turns a form or a query into the
//! link service's input, calls it with the session's call, and answers
//! with a page or a `303 See Other` (so a reload never sends a form again).

use std::time::{Duration, SystemTime};

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use tinyurl_analytics::LinkStats;
use tinyurl_domain::RedirectStatus;
use tinyurl_links::auth::{Scope, bearer};
use tinyurl_links::error::WriterError;
use tinyurl_links::import::EXPORT_COLUMNS;
use tinyurl_links::input::{CreateInput, RuleInput, UpdateInput};
use tinyurl_links::store::{LinkOrder, LinkSearch, LinkState};
use tinyurl_links::{Call, SearchInput, StatsInput};

use super::pages::{self, CreateForm, FormError, LinkView, ListView};
use super::{Refused, Shared, Signed, error_page, html, see_other, service_error_page};

/// Links on a page of the listing.
const PAGE_SIZE: u32 = 50;

/// Statistics granularities, as the protobuf enum numbers them.
const MINUTE: i32 = 1;
const HOUR: i32 = 2;
const DAY: i32 = 3;

/// A form, or the page saying why it could not be read.
pub(super) fn form<T>(form: Result<Form<T>, FormRejection>) -> Result<T, Refused> {
    form.map(|Form(form)| form).map_err(|rejection| {
        Refused::from(error_page(StatusCode::BAD_REQUEST, &rejection.body_text()))
    })
}

pub(super) async fn to_console() -> Response {
    see_other("/console/")
}

pub(super) async fn home(State(console): State<Shared>, signed: Signed) -> Response {
    match console.links.overview(&signed.call).await {
        Ok(overview) => html(StatusCode::OK, pages::overview(&signed.nav(), &overview)),
        Err(error) => service_error_page(&error),
    }
}

pub(super) async fn not_found(_signed: Signed) -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "There is no such page in the console.",
    )
}

pub(super) async fn sign_in_page() -> Response {
    html(StatusCode::OK, pages::sign_in(None))
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    #[serde(default)]
    key: String,
}

pub(super) async fn sign_in(
    State(console): State<Shared>,
    parts: Parts,
    body: Result<Form<SignInForm>, FormRejection>,
) -> Result<Response, Refused> {
    let SignInForm { key } = form(body)?;
    let header = format!("Bearer {}", key.trim());
    // A malformed key is still an attempt: it goes to the link service
    // without a key, which charges it to the address like a wrong one.
    let call = Call {
        key: bearer(Some(header.as_bytes())).ok(),
        client: console.client(&parts),
    };
    Ok(match console.links.sign_in(&call).await {
        Ok(token) => {
            let mut response = see_other("/console/");
            response
                .headers_mut()
                .insert(header::SET_COOKIE, console.set_cookie(&parts, Some(&token)));
            response
        }
        Err(WriterError::Unauthenticated(_) | WriterError::KeyBudgetSpent) => html(
            StatusCode::UNAUTHORIZED,
            pages::sign_in(Some("That API key is not valid, or it was revoked.")),
        ),
        Err(error) => {
            let mut response = html(
                error.kind().http_status(),
                pages::sign_in(Some(&error.public_message())),
            );
            if let Some(retry) = super::retry_after(&error) {
                response.headers_mut().insert(header::RETRY_AFTER, retry);
            }
            response
        }
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CsrfForm {
    csrf: String,
}

pub(super) async fn sign_out(
    State(console): State<Shared>,
    parts: Parts,
    signed: Signed,
    body: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, Refused> {
    signed.check_csrf(&form(body)?.csrf)?;
    console
        .links
        .sign_out(&signed.token)
        .await
        .map_err(|error| service_error_page(&error))?;
    Ok(super::to_sign_in(Some(console.set_cookie(&parts, None))))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ListParams {
    q: String,
    state: String,
    sort: String,
    after: Option<String>,
    /// Only the links with this tag.
    tag: String,
    /// What a bulk action just did (`disabled`, `enabled`, `deleted`), and
    /// to how many links.
    done: String,
    count: u32,
}

impl ListParams {
    fn search(&self) -> LinkSearch {
        LinkSearch {
            text: Some(self.q.trim().to_owned()).filter(|text| !text.is_empty()),
            tag: Some(self.tag.trim().to_owned()).filter(|tag| !tag.is_empty()),
            state: match self.state.as_str() {
                "active" => Some(LinkState::Active),
                "disabled" => Some(LinkState::Disabled),
                "expired" => Some(LinkState::Expired),
                "blocked" => Some(LinkState::Blocked),
                _ => None,
            },
            order: if self.sort == "clicks" {
                LinkOrder::MostClicked
            } else {
                LinkOrder::Newest
            },
            now: None,
        }
    }
}

pub(super) async fn links_page(
    State(console): State<Shared>,
    signed: Signed,
    params: Query<ListParams>,
) -> Response {
    let Query(params) = params;
    let first_page = params.after.as_deref().is_none_or(str::is_empty);
    let page = console
        .links
        .search(
            &signed.call,
            SearchInput {
                search: params.search(),
                page_size: Some(PAGE_SIZE),
                page_token: params.after.clone(),
            },
        )
        .await;
    match page {
        Ok(page) => {
            let view = ListView {
                links: &page.links,
                next: page.next_page_token.as_deref(),
                first_page,
                q: &params.q,
                state: &params.state,
                sort: &params.sort,
                tag: &params.tag,
                notice: bulk_notice(&params.done, params.count),
            };
            html(StatusCode::OK, pages::links(&signed.nav(), &view))
        }
        Err(error) => service_error_page(&error),
    }
}

/// The most links one bulk action takes (a page of the listing).
const MAX_BULK: usize = PAGE_SIZE as usize;

/// Disables, enables, deletes or exports the ticked links of a page.
pub(super) async fn bulk(
    State(console): State<Shared>,
    signed: Signed,
    body: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, Refused> {
    let fields = form(body)?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    signed.check_csrf(field("csrf").unwrap_or_default())?;
    let codes: Vec<&str> = fields
        .iter()
        .filter(|(key, _)| key == "code")
        .map(|(_, value)| value.as_str())
        .collect();
    let refuse = |message: &str| Refused::from(error_page(StatusCode::BAD_REQUEST, message));
    if codes.is_empty() {
        return Err(refuse("Tick the links to act on first."));
    }
    if codes.len() > MAX_BULK {
        return Err(refuse(&format!(
            "At most {MAX_BULK} links at once, not {}.",
            codes.len()
        )));
    }
    let action = field("action").unwrap_or_default();
    if action == "export" {
        return Ok(Box::pin(export(&console, &signed, &codes)).await);
    }
    let (verb, enabled) = match action {
        "disable" => ("Disabled", Some(false)),
        "enable" => ("Enabled", Some(true)),
        "delete" if field("confirm").is_some() => ("Deleted", None),
        "delete" => {
            return Err(refuse(
                "Tick the confirmation box to delete the selected links.",
            ));
        }
        _ => return Err(refuse("Choose disable, enable, delete or export.")),
    };
    let mut done = 0;
    let mut failures = Vec::new();
    for code in &codes {
        let result = match enabled {
            Some(enabled) => console
                .links
                .update(
                    &signed.call,
                    code,
                    Ok(UpdateInput {
                        enabled: Some(enabled),
                        ..UpdateInput::default()
                    }),
                )
                .await
                .map(drop),
            None => console.links.delete(&signed.call, code).await,
        };
        match result {
            Ok(()) => done += 1,
            // The key's rate or the store: the rest would fail alike.
            Err(error @ (WriterError::RateLimited { .. } | WriterError::Unavailable(_))) => {
                failures.push(((*code).to_owned(), error.public_message()));
                break;
            }
            Err(error) => failures.push(((*code).to_owned(), error.public_message())),
        }
    }
    if failures.is_empty() {
        return Ok(see_other(&format!(
            "/console/links?done={}&count={done}",
            verb.to_ascii_lowercase()
        )));
    }
    Ok(html(
        StatusCode::OK,
        pages::bulk_result(
            &signed.nav(),
            &format!("{verb} {done} of {} links.", codes.len()),
            &failures,
        ),
    ))
}

/// The notice after a bulk action, from the listing's query (only words
/// of our own: the query cannot put text on the page).
fn bulk_notice(done: &str, count: u32) -> Option<String> {
    let verb = match done {
        "disabled" => "Disabled",
        "enabled" => "Enabled",
        "deleted" => "Deleted",
        _ => return None,
    };
    let plural = if count == 1 { "" } else { "s" };
    Some(format!("{verb} {count} link{plural}."))
}

/// The ticked links as CSV, in the columns `tinyurl export` writes (and
/// `tinyurl import` reads), with their lifetime human clicks last.
async fn export(console: &Shared, signed: &Signed, codes: &[&str]) -> Response {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = EXPORT_COLUMNS.map(str::to_owned).to_vec();
    header.push("clicks".to_owned());
    let mut rows = vec![header];
    for code in codes {
        let link = match console.links.get(&signed.call, code).await {
            Ok(link) => link,
            Err(WriterError::NotFound(_)) => continue,
            Err(error) => return service_error_page(&error),
        };
        let clicks = match console
            .links
            .stats(
                &signed.call,
                code,
                Ok(StatsInput {
                    granularity: DAY,
                    ..StatsInput::default()
                }),
            )
            .await
        {
            Ok(stats) => stats.lifetime_clicks,
            Err(error) => return service_error_page(&error),
        };
        let rfc3339 = |at| humantime::format_rfc3339_micros(at).to_string();
        let (domain, bare) = tinyurl_domain::domains::split_key(&link.code);
        rows.push(vec![
            link.target_url.clone(),
            if link.is_alias {
                bare.to_owned()
            } else {
                String::new()
            },
            link.expires_at.map(rfc3339).unwrap_or_default(),
            bare.to_owned(),
            console.links.short_url(&link.code),
            link.redirect_status.code().to_string(),
            link.forward_query.to_string(),
            link.enabled.to_string(),
            rfc3339(link.created_at),
            rfc3339(link.updated_at),
            domain.unwrap_or_default().to_owned(),
            link.tags.join("|"),
            link.options
                .max_visits
                .map(|cap| cap.to_string())
                .unwrap_or_default(),
            link.options.is_protected().to_string(),
            clicks.to_string(),
        ]);
    }
    for row in rows {
        if let Err(error) = writer.write_record(&row) {
            return error_page(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string());
        }
    }
    let body = match writer.into_inner() {
        Ok(body) => body,
        Err(error) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"links.csv\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The registered short domains' hosts, for the create form's domain
/// field (none when they cannot be read: the field still takes any).
async fn domain_hosts(console: &Shared, signed: &Signed) -> Vec<String> {
    console
        .links
        .domains(&signed.call)
        .await
        .map(|domains| domains.into_iter().map(|domain| domain.host).collect())
        .unwrap_or_default()
}

pub(super) async fn new_link_page(State(console): State<Shared>, signed: Signed) -> Response {
    if !signed.may(Scope::Create) {
        return scope_page(Scope::Create, signed.scope);
    }
    html(
        StatusCode::OK,
        pages::new_link(
            &signed.nav(),
            &CreateForm::default(),
            None,
            &domain_hosts(&console, &signed).await,
        ),
    )
}

pub(super) fn scope_page(needed: Scope, scope: Scope) -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        &format!(
            "This API key's scope is {}; this needs {}.",
            scope.as_str(),
            needed.as_str()
        ),
    )
}

/// A `datetime-local` value (UTC) or an RFC 3339 time; empty is none.
fn expiry(raw: &str) -> Result<Option<SystemTime>, WriterError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let full = match raw.len() {
        // 2030-01-31T12:00
        16 => format!("{raw}:00Z"),
        // 2030-01-31T12:00:30
        19 => format!("{raw}Z"),
        _ => raw.to_owned(),
    };
    humantime::parse_rfc3339_weak(&full).map(Some).map_err(|_| {
        WriterError::invalid(
            "expires_at",
            "the expiry is not a date and time like 2030-01-31T12:00 (UTC)",
        )
    })
}

pub(super) fn redirect_status(raw: &str) -> Result<Option<RedirectStatus>, WriterError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<i64>()
        .ok()
        .and_then(RedirectStatus::from_code)
        .map(Some)
        .ok_or_else(|| {
            WriterError::invalid(
                "redirect_type",
                format!("redirect type {raw:?} is not one of 301, 302, 307, 308"),
            )
        })
}

fn form_error(error: &WriterError) -> FormError {
    FormError {
        field: error.field(),
        message: error.public_message(),
    }
}

pub(super) async fn create(
    State(console): State<Shared>,
    signed: Signed,
    body: Result<Form<CreateForm>, FormRejection>,
) -> Result<Response, Refused> {
    let body = form(body)?;
    signed.check_csrf(&body.csrf)?;
    let input = (|| {
        Ok(CreateInput {
            target_url: body.target_url.trim().to_owned(),
            alias: Some(body.alias.trim().to_owned()).filter(|alias| !alias.is_empty()),
            expires_at: expiry(&body.expires_at)?,
            redirect_status: redirect_status(&body.redirect_type)?,
            forward_query: body.forward_query.is_some(),
            idempotency_key: None,
            tags: split_tags(&body.tags),
            utm: utm_of([
                &body.utm_source,
                &body.utm_medium,
                &body.utm_campaign,
                &body.utm_term,
                &body.utm_content,
            ]),
            rules: rule_lines(&body.rules)?,
            max_visits: visit_cap(&body.max_visits)?,
            password: Some(body.password.clone()).filter(|password| !password.is_empty()),
            domain: Some(body.domain.clone()),
        })
    })();
    Ok(match console.links.create(&signed.call, input).await {
        Ok(link) => see_other(&format!(
            "/console/links/{}?created",
            link.code.replace('/', "%2F")
        )),
        Err(error) if error.field().is_some() || matches!(error, WriterError::AlreadyExists(_)) => {
            html(
                error.kind().http_status(),
                pages::new_link(
                    &signed.nav(),
                    &body,
                    Some(&form_error(&error)),
                    &domain_hosts(&console, &signed).await,
                ),
            )
        }
        Err(error) => service_error_page(&error),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct LinkParams {
    range: Option<String>,
    /// A range of whole UTC days, `YYYY-MM-DD` to `YYYY-MM-DD` (both in).
    from: String,
    to: String,
    /// `minute`, `hour`, `day`, or empty to choose by the range.
    granularity: String,
    /// A traffic class to show alone (`human`, `previewer`, `crawler`,
    /// `monitor`, `bot`); empty: everyone.
    class: String,
    created: Option<String>,
    saved: Option<String>,
}

/// The statistics a link's page shows: a preset range, or days chosen.
pub(super) enum Window<'a> {
    Preset(Option<&'a str>),
    Days {
        from: &'a str,
        to: &'a str,
        granularity: &'a str,
    },
}

impl<'a> Window<'a> {
    fn of(params: &'a LinkParams) -> Self {
        if params.from.is_empty() && params.to.is_empty() {
            Self::Preset(params.range.as_deref())
        } else {
            Self::Days {
                from: &params.from,
                to: &params.to,
                granularity: &params.granularity,
            }
        }
    }
}

/// The statistics `fetch` answers over the preset range `name` (by its
/// name as shown) for `classes`: over days when minute rollups are kept for
/// less than the range.
pub(super) async fn preset_stats<F, Fut>(
    name: Option<&str>,
    classes: &[String],
    fetch: F,
) -> (&'static str, Result<LinkStats, WriterError>)
where
    F: Fn(StatsInput) -> Fut,
    Fut: std::future::Future<Output = Result<LinkStats, WriterError>>,
{
    let (range_name, span, granularity) = range(name);
    let now = SystemTime::now();
    let over = |granularity| {
        fetch(StatsInput {
            from: now.checked_sub(span),
            to: Some(now),
            granularity,
            classes: classes.to_vec(),
        })
    };
    let stats = match over(granularity).await {
        Err(WriterError::InvalidField { field: "from", .. }) => over(DAY).await,
        other => other,
    };
    (range_name, stats)
}

/// The start of a UTC day written `YYYY-MM-DD`.
fn day_start(raw: &str, field: &'static str) -> Result<SystemTime, WriterError> {
    humantime::parse_rfc3339_weak(&format!("{}T00:00:00Z", raw.trim()))
        .map_err(|_| WriterError::invalid(field, format!("{field} is not a day like 2026-12-31")))
}

/// The statistics input of chosen days.
fn days_input(from: &str, to: &str, granularity: &str) -> Result<StatsInput, WriterError> {
    let from = day_start(from, "from")?;
    let to = day_start(to, "to")? + Duration::from_secs(86_400);
    let granularity = match granularity {
        "" => 0,
        "minute" => MINUTE,
        "hour" => HOUR,
        "day" => DAY,
        other => {
            return Err(WriterError::invalid(
                "granularity",
                format!("granularity {other:?} is not minute, hour or day"),
            ));
        }
    };
    Ok(StatsInput {
        from: Some(from),
        to: Some(to),
        granularity,
        classes: Vec::new(),
    })
}

/// The stats range a `range` parameter names: its name, its span and the
/// granularity (the protobuf enum number) that gives 24 to 168 bars.
fn range(raw: Option<&str>) -> (&'static str, Duration, i32) {
    match raw {
        Some("1h") => ("1h", Duration::from_secs(3600), MINUTE),
        // An hour short of 7 days, so the first hour's bucket starts
        // within the default week of minute rollups.
        Some("7d") => ("7d", Duration::from_secs(7 * 86_400 - 3600), HOUR),
        Some("30d") => ("30d", Duration::from_secs(30 * 86_400), DAY),
        _ => ("24h", Duration::from_secs(86_400), HOUR),
    }
}

pub(super) async fn link_page(
    State(console): State<Shared>,
    signed: Signed,
    Path(code): Path<String>,
    Query(params): Query<LinkParams>,
) -> Response {
    let notice = if params.created.is_some() {
        Some("Created.")
    } else if params.saved.is_some() {
        Some("Saved.")
    } else {
        None
    };
    Box::pin(render_link(
        &console,
        &signed,
        &code,
        &Window::of(&params),
        &params.class,
        notice,
        None,
    ))
    .await
}

/// The link's page, with a notice or a form's error.
async fn render_link(
    console: &Shared,
    signed: &Signed,
    code: &str,
    window: &Window<'_>,
    class: &str,
    notice: Option<&str>,
    error: Option<(StatusCode, FormError)>,
) -> Response {
    // An empty name is no class: the default view.
    let classes = vec![class.to_owned()];
    let link = match console.links.get(&signed.call, code).await {
        Ok(link) => link,
        Err(error) => return service_error_page(&error),
    };
    let (range_name, stats) = match window {
        Window::Preset(name) => {
            preset_stats(*name, &classes, |input| {
                console.links.stats(&signed.call, code, Ok(input))
            })
            .await
        }
        Window::Days {
            from,
            to,
            granularity,
        } => (
            "",
            console
                .links
                .stats(
                    &signed.call,
                    code,
                    days_input(from, to, granularity).map(|input| StatsInput {
                        classes: classes.clone(),
                        ..input
                    }),
                )
                .await,
        ),
    };
    let stats = stats.map_err(|error| error.public_message());
    let days = match window {
        Window::Days {
            from,
            to,
            granularity,
        } => Some((*from, *to, *granularity)),
        Window::Preset(_) => None,
    };
    let (status, error) = match error {
        Some((status, error)) => (status, Some(error)),
        None => (StatusCode::OK, None),
    };
    let visits_used = console.links.visits_used(&link).await;
    let view = LinkView {
        visits_used,
        link: &link,
        short_url: console.links.short_url(&link.code),
        stats: stats.as_ref().map_err(Clone::clone),
        range: range_name,
        days,
        class,
        notice,
        error: error.as_ref(),
    };
    html(status, pages::link(&signed.nav(), &view))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct EditForm {
    csrf: String,
    target_url: Option<String>,
    redirect_type: String,
    forward_query: Option<String>,
    expires_at: String,
    /// Comma-separated; absent (a form without the field) keeps the tags.
    tags: Option<String>,
    /// Absent (a form without them) keeps the UTM fields.
    utm_source: Option<String>,
    utm_medium: Option<String>,
    utm_campaign: Option<String>,
    utm_term: Option<String>,
    utm_content: Option<String>,
    /// One per line; absent keeps the rules.
    rules: Option<String>,
    /// Empty removes the cap; absent keeps it.
    max_visits: Option<String>,
    /// A new password; empty or absent keeps the current one.
    password: Option<String>,
    /// Present: remove the password.
    remove_password: Option<String>,
}

/// A form's visit cap: empty for none.
fn visit_cap(raw: &str) -> Result<Option<u64>, WriterError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<u64>().map(Some).map_err(|_| {
        WriterError::invalid(
            "max_visits",
            format!("{raw:?} is not a whole number of visits"),
        )
    })
}

/// A form's UTM fields (source, medium, campaign, term, content); the
/// link service trims them and drops the empty ones.
fn utm_of(fields: [&String; 5]) -> tinyurl_domain::Utm {
    let [source, medium, campaign, term, content] = fields.map(|field| Some(field.clone()));
    tinyurl_domain::Utm {
        source,
        medium,
        campaign,
        term,
        content,
    }
}

/// A form's rules, one per line, blank lines skipped.
fn rule_lines(raw: &str) -> Result<Vec<RuleInput>, WriterError> {
    raw.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            RuleInput::parse_line(line).map_err(|reason| {
                WriterError::invalid("rules", format!("line {}: {reason}", index + 1))
            })
        })
        .collect()
}

/// The tags typed into a form's field, separated by commas.
fn split_tags(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) async fn update(
    State(console): State<Shared>,
    signed: Signed,
    Path(code): Path<String>,
    body: Result<Form<EditForm>, FormRejection>,
) -> Result<Response, Refused> {
    let body = form(body)?;
    signed.check_csrf(&body.csrf)?;
    let input = (|| {
        Ok(UpdateInput {
            target_url: body.target_url.as_deref().map(str::trim).map(str::to_owned),
            expires_at: Some(expiry(&body.expires_at)?),
            redirect_status: redirect_status(&body.redirect_type)?,
            enabled: None,
            forward_query: Some(body.forward_query.is_some()),
            tags: body.tags.as_deref().map(split_tags),
            utm: match (
                &body.utm_source,
                &body.utm_medium,
                &body.utm_campaign,
                &body.utm_term,
                &body.utm_content,
            ) {
                (Some(source), Some(medium), Some(campaign), Some(term), Some(content)) => {
                    Some(utm_of([source, medium, campaign, term, content]))
                }
                _ => None,
            },
            rules: body.rules.as_deref().map(rule_lines).transpose()?,
            max_visits: body.max_visits.as_deref().map(visit_cap).transpose()?,
            password: match (&body.password, &body.remove_password) {
                (Some(password), Some(_)) if !password.is_empty() => {
                    return Err(WriterError::invalid(
                        "password",
                        "give a new password or remove it, not both",
                    ));
                }
                (_, Some(_)) => Some(None),
                (Some(password), None) if !password.is_empty() => Some(Some(password.clone())),
                _ => None,
            },
        })
    })();
    Ok(Box::pin(changed(&console, &signed, &code, input)).await)
}

/// Applies `input` to the link: back to its page with a notice, or the
/// page with the error next to its field.
async fn changed(
    console: &Shared,
    signed: &Signed,
    code: &str,
    input: Result<UpdateInput, WriterError>,
) -> Response {
    match console.links.update(&signed.call, code, input).await {
        Ok(link) => see_other(&format!(
            "/console/links/{}?saved",
            link.code.replace('/', "%2F")
        )),
        Err(error @ (WriterError::InvalidField { .. } | WriterError::PermissionDenied(_))) => {
            let status = error.kind().http_status();
            Box::pin(render_link(
                console,
                signed,
                code,
                &Window::Preset(None),
                "",
                None,
                Some((status, form_error(&error))),
            ))
            .await
        }
        Err(error) => service_error_page(&error),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct EnableForm {
    csrf: String,
    enabled: String,
}

pub(super) async fn set_enabled(
    State(console): State<Shared>,
    signed: Signed,
    Path(code): Path<String>,
    body: Result<Form<EnableForm>, FormRejection>,
) -> Result<Response, Refused> {
    let body = form(body)?;
    signed.check_csrf(&body.csrf)?;
    let enabled = match body.enabled.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(WriterError::invalid("enabled", "enabled is true or false")),
    };
    let input = enabled.map(|enabled| UpdateInput {
        enabled: Some(enabled),
        ..UpdateInput::default()
    });
    Ok(Box::pin(changed(&console, &signed, &code, input)).await)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct DeleteForm {
    csrf: String,
    confirm: Option<String>,
}

pub(super) async fn delete(
    State(console): State<Shared>,
    signed: Signed,
    Path(code): Path<String>,
    body: Result<Form<DeleteForm>, FormRejection>,
) -> Result<Response, Refused> {
    let body = form(body)?;
    signed.check_csrf(&body.csrf)?;
    if body.confirm.is_none() {
        let error = FormError {
            field: Some("confirm"),
            message: "Tick the box to confirm the deletion.".to_owned(),
        };
        return Ok(Box::pin(render_link(
            &console,
            &signed,
            &code,
            &Window::Preset(None),
            "",
            None,
            Some((StatusCode::BAD_REQUEST, error)),
        ))
        .await);
    }
    console
        .links
        .delete(&signed.call, &code)
        .await
        .map_err(|error| service_error_page(&error))?;
    Ok(see_other("/console/links"))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct QrParams {
    download: Option<String>,
}

pub(super) async fn qr_svg(
    state: State<Shared>,
    signed: Signed,
    code: Path<String>,
    params: Query<QrParams>,
) -> Response {
    qr(state, signed, code, params, true).await
}

pub(super) async fn qr_png(
    state: State<Shared>,
    signed: Signed,
    code: Path<String>,
    params: Query<QrParams>,
) -> Response {
    qr(state, signed, code, params, false).await
}

/// The QR code of one of the key's links, shown or as a download.
async fn qr(
    State(console): State<Shared>,
    signed: Signed,
    Path(code): Path<String>,
    Query(params): Query<QrParams>,
    svg: bool,
) -> Response {
    let link = match console.links.get(&signed.call, &code).await {
        Ok(link) => link,
        Err(error) => return service_error_page(&error),
    };
    let short_url = console.links.short_url(&link.code);
    let (body, content_type, extension) = if svg {
        (
            tinyurl_domain::qr::svg(&short_url).map(String::into_bytes),
            "image/svg+xml",
            "svg",
        )
    } else {
        (tinyurl_domain::qr::png(&short_url), "image/png", "png")
    };
    let body = match body {
        Ok(body) => body,
        Err(error) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response();
    if params.download.is_some() {
        // Codes are letters, digits and a few marks: safe in the header.
        if let Ok(disposition) = HeaderValue::from_str(&format!(
            "attachment; filename=\"{}.{extension}\"",
            link.code
        )) {
            response
                .headers_mut()
                .insert(header::CONTENT_DISPOSITION, disposition);
        }
    }
    response
}
