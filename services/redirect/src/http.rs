//! The public HTTP interface.
//!
//! - `GET|HEAD /{code}`: the link's redirect; `/{code}/` is the same link (one
//!   trailing slash is ignored). Codes and aliases are case-sensitive.
//! - `GET|HEAD /{code}+`: an HTML preview of the destination, no redirect.
//! - `GET|HEAD /{code}/qr`: a PNG QR code of the short URL (`?format=svg` for SVG).
//! - `POST /{code}`: the password form of a password-protected link (see
//!   [`crate::protected`]); 405 for any other link.
//!
//! A path that cannot be a code or alias is answered 404 before any I/O.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;

use crate::clicks::Clicks;
use crate::entry::{Destination, Entry, Link, Protected, location_with_query};
use crate::l2::SharedCache;
use crate::pages;
use crate::resolve::{Resolution, Resolver};
use tinyurl_domain::clicks::{ORPHANS, orphan_key};
use tinyurl_domain::domains::split_key;

/// What one serving thread's handlers share.
pub struct Shared {
    pub resolver: Arc<Resolver>,
    /// This thread's own Redis client: its connection is driven by this
    /// thread, so a Redis read never hops to another thread.
    pub l2: Option<Arc<dyn SharedCache>>,
    /// `None` when clicks are not counted.
    pub clicks: Option<Arc<Clicks>>,
    /// What redirect rules read of a request.
    pub visitors: Arc<crate::visitors::Visitors>,
    pub public_base_url: String,
    pub metrics: HttpMetrics,
    /// `None` when scanners are not throttled.
    pub scanners: Option<Arc<crate::scanners::Scanners>>,
    /// Whether traces are exported: only then does a request get a span
    /// (the L1 path is otherwise a few hundred nanoseconds).
    pub traced: bool,
    /// Cookies and attempt allowances of password-protected links.
    pub passwords: Arc<crate::protected::Passwords>,
    /// The registered short domains, by host.
    pub domains: Arc<crate::domains::Domains>,
}

impl Shared {
    /// The short URL of the link keyed `key` (on its own domain when it
    /// has one).
    fn short_url(&self, key: &str) -> String {
        match tinyurl_domain::domains::split_key(key) {
            (Some(host), code) => {
                let scheme = self
                    .public_base_url
                    .split_once("://")
                    .map_or("https", |(scheme, _)| scheme);
                format!("{scheme}://{host}/{code}")
            }
            (None, _) => format!("{}/{key}", self.public_base_url),
        }
    }
}

/// Counter handles registered once: the hot path does no label lookups.
pub struct HttpMetrics {
    redirects: metrics::Counter,
    not_found: metrics::Counter,
    gone: metrics::Counter,
    malformed: metrics::Counter,
    unavailable: metrics::Counter,
    previews: metrics::Counter,
    qr_codes: metrics::Counter,
    query_too_long: metrics::Counter,
    throttled: metrics::Counter,
}

impl HttpMetrics {
    pub fn new() -> Self {
        let outcome = |outcome: &'static str| metrics::counter!("redirect_requests_total", "outcome" => outcome);
        Self {
            redirects: outcome("redirect"),
            not_found: outcome("not_found"),
            gone: outcome("gone"),
            malformed: outcome("malformed"),
            unavailable: outcome("unavailable"),
            previews: outcome("preview"),
            qr_codes: outcome("qr"),
            query_too_long: outcome("query_too_long"),
            throttled: outcome("throttled"),
        }
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

enum Page<'a> {
    Redirect(&'a str),
    Preview(&'a str),
    Qr(&'a str),
}

fn route(path: &str) -> Option<Page<'_>> {
    let rest = path.strip_prefix('/')?;
    let page = if let Some(code) = rest.strip_suffix("/qr") {
        Page::Qr(code)
    } else if let Some(code) = rest.strip_suffix('+') {
        Page::Preview(code)
    } else {
        Page::Redirect(rest.strip_suffix('/').unwrap_or(rest))
    };
    let (Page::Redirect(code) | Page::Preview(code) | Page::Qr(code)) = page;
    tinyurl_domain::is_link_shaped(code).then_some(page)
}

/// Answers one request from `peer` (the direct peer's address); `body` is
/// a POST's (only a password form has one worth reading).
pub async fn handle(
    shared: &Shared,
    request: &Parts,
    body: Option<hyper::body::Incoming>,
    peer: Option<IpAddr>,
) -> Response {
    if !shared.traced {
        return respond(shared, request, body, peer).await;
    }
    // Fields filled as the answer takes shape: `code` once routed, `tier`
    // by whichever cache or database answered.
    let span = tracing::info_span!(
        "redirect",
        otel.kind = "server",
        http.request.method = %request.method,
        code = tracing::field::Empty,
        tier = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    tinyurl_runtime::telemetry::join_trace(&span, &request.headers);
    let response =
        tracing::Instrument::instrument(respond(shared, request, body, peer), span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

async fn respond(
    shared: &Shared,
    request: &Parts,
    body: Option<hyper::body::Incoming>,
    peer: Option<IpAddr>,
) -> Response {
    let (head, post) = match request.method {
        Method::GET => (false, false),
        Method::HEAD => (true, false),
        Method::POST => (false, true),
        _ => return method_not_allowed(),
    };
    let Some(page) = route(request.uri.path()) else {
        shared.metrics.malformed.increment(1);
        match shared.domains.scope(&request.headers) {
            crate::domains::Scope::Default => count_orphan(shared, request, None),
            crate::domains::Scope::Domain(domain) => {
                count_orphan(shared, request, Some(&domain.host));
            }
            crate::domains::Scope::Refused => {}
        }
        return not_found(false);
    };
    if post && !matches!(page, Page::Redirect(_)) {
        return method_not_allowed();
    }
    let code = match page {
        Page::Redirect(code) | Page::Preview(code) | Page::Qr(code) => code,
    };
    // On a registered domain the link's key is `{host}/{code}`; from here
    // on `code` is that key.
    let scope = shared.domains.scope(&request.headers);
    if let crate::domains::Scope::Refused = scope {
        shared.metrics.not_found.increment(1);
        return not_found(false);
    }
    let key = scope.key(code);
    let code: &str = &key;
    if shared.traced {
        tracing::Span::current().record("code", code);
    }
    if let Some(entry) = shared.resolver.cached(code) {
        if shared.traced {
            tracing::Span::current().record("tier", "l1");
        }
        let asked = Asked {
            request,
            peer,
            head,
        };
        if let Entry::Protected(protected) = &*entry {
            return answer_protected(shared, &page, code, asked, protected, body).await;
        }
        if post {
            return method_not_allowed();
        }
        if let Some(cap) = capped(&entry, &page) {
            return answer_capped(shared, code, asked, &entry, cap).await;
        }
        if let Entry::Missing = *entry
            && let Some(page) = domain_not_found(shared, &scope, request)
        {
            return page;
        }
        // The hot path: counted, not timed (it is sub-microsecond).
        return answer(shared, &page, code, asked, Resolution::Entry(entry));
    }
    // Beyond this point a request costs I/O: not for an address that keeps
    // asking for codes that do not exist.
    let scanner = shared.scanners.as_ref().and_then(|scanners| {
        let forwarded = request
            .headers
            .get("x-forwarded-for")
            .map(axum::http::HeaderValue::as_bytes);
        scanners
            .client(peer, forwarded)
            .map(|client| (scanners, client))
    });
    if let Some((scanners, client)) = scanner
        && let Some(wait) = scanners.throttled(client)
    {
        shared.metrics.throttled.increment(1);
        return too_many_misses(wait);
    }
    // Timed inside the resolver (redirect_lookup_duration_seconds).
    let resolution = shared.resolver.resolve_miss(code, shared.l2.as_ref()).await;
    if let Some((scanners, client)) = scanner
        && is_missing(&resolution)
    {
        scanners.missed(client);
    }
    let asked = Asked {
        request,
        peer,
        head,
    };
    if let Resolution::Entry(entry) = &resolution {
        if let Entry::Protected(protected) = &**entry {
            return answer_protected(shared, &page, code, asked, protected, body).await;
        }
        if post {
            return method_not_allowed();
        }
        if let Some(cap) = capped(entry, &page) {
            return answer_capped(shared, code, asked, entry, cap).await;
        }
    }
    if post {
        return method_not_allowed();
    }
    if is_missing(&resolution)
        && let Some(page) = domain_not_found(shared, &scope, request)
    {
        return page;
    }
    answer(shared, &page, code, asked, resolution)
}

/// A registered domain's own page for codes it does not have: a redirect
/// there, re-asked every time (the code may be created any moment).
fn domain_not_found(
    shared: &Shared,
    scope: &crate::domains::Scope,
    request: &Parts,
) -> Option<Response> {
    let crate::domains::Scope::Domain(domain) = scope else {
        return None;
    };
    let location = domain.not_found.clone()?;
    shared.metrics.not_found.increment(1);
    count_orphan(shared, request, Some(&domain.host));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    response.headers_mut().insert(LOCATION, location);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

/// A password-protected link: its form, or what its cookie or a right
/// password opens.
async fn answer_protected(
    shared: &Shared,
    page: &Page<'_>,
    code: &str,
    asked: Asked<'_>,
    protected: &Protected,
    body: Option<hyper::body::Incoming>,
) -> Response {
    use crate::protected::Outcome;
    if protected.expired(SystemTime::now()) {
        shared.metrics.gone.increment(1);
        return gone();
    }
    let request = asked.request;
    let outcome = match (page, body) {
        (Page::Qr(_), _) => {
            // The short URL's code: nothing of where it leads.
            shared.metrics.qr_codes.increment(1);
            let short_url = shared.short_url(code);
            let svg = request
                .uri
                .query()
                .is_some_and(|query| query.split('&').any(|pair| pair == "format=svg"));
            return pages::qr(&short_url, svg);
        }
        (Page::Redirect(_), Some(body)) if request.method == Method::POST => {
            let client = asked.peer.map(|peer| {
                let forwarded = request
                    .headers
                    .get("x-forwarded-for")
                    .map(HeaderValue::as_bytes);
                shared.visitors.trusted_proxies.client(peer, forwarded)
            });
            crate::protected::submit(
                &shared.passwords,
                shared.l2.as_ref(),
                code,
                protected,
                body,
                client,
            )
            .await
        }
        _ => crate::protected::visit(&shared.passwords, code, protected, request),
    };
    let (link, cookie) = match outcome {
        Outcome::Answer(response) => return response,
        Outcome::Opened(link) => (link, None),
        Outcome::Unlocked(link, cookie) => (link, Some(cookie)),
    };
    if let Page::Preview(_) = page {
        shared.metrics.previews.increment(1);
        let short_url = shared.short_url(code);
        let mut response = html(pages::preview(&short_url, &link));
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        return response;
    }
    let entry = Entry::Link(link);
    let mut response = match (&entry, capped(&entry, page)) {
        (_, Some(cap)) => answer_capped(shared, code, asked, &entry, cap).await,
        (Entry::Link(link), None) => {
            refuse_long_query(shared, link, request).unwrap_or_else(|| {
                redirect_counted(shared, link, code, request, asked.peer, !asked.head)
            })
        }
        _ => gone(),
    };
    if let Some(cookie) = cookie {
        if response.status().is_redirection() {
            *response.status_mut() = StatusCode::SEE_OTHER;
        }
        response
            .headers_mut()
            .insert(axum::http::header::SET_COOKIE, cookie);
    }
    response
}

/// The cap of a live capped link asked for its redirect.
fn capped(entry: &Entry, page: &Page<'_>) -> Option<u64> {
    match (entry, page) {
        (Entry::Link(link), Page::Redirect(_))
            if link.expires_at.is_none_or(|at| at > SystemTime::now()) =>
        {
            link.max_visits()
        }
        _ => None,
    }
}

/// A capped link's redirect: a person's visit uses one of the link's visits
/// (counted in the shared tier, so exactly `cap` across every redirect
/// process) and is redirected while any is left; a bot, a link previewer
/// or a HEAD request uses none and is never redirected.
async fn answer_capped(
    shared: &Shared,
    code: &str,
    Asked {
        request,
        peer,
        head,
    }: Asked<'_>,
    entry: &Entry,
    cap: u64,
) -> Response {
    let Entry::Link(link) = entry else {
        return gone();
    };
    if head || shared.visitors.is_bot(&request.headers) {
        shared.metrics.gone.increment(1);
        return visits_used_up();
    }
    // Refused before a visit is used on it.
    if let Some(refused) = refuse_long_query(shared, link, request) {
        return refused;
    }
    // No shared tier, or it cannot count now: refusing is exact, guessing
    // is not.
    let Some(l2) = shared.l2.as_ref() else {
        shared.metrics.unavailable.increment(1);
        return unavailable();
    };
    match l2.spend_visit(code, cap).await {
        Ok(true) => {}
        Ok(false) => {
            shared.metrics.gone.increment(1);
            return visits_used_up();
        }
        Err(error) => {
            tracing::warn!(
                code,
                error = format!("{error:#}"),
                "cannot count a capped link's visit"
            );
            shared.metrics.unavailable.increment(1);
            return unavailable();
        }
    }
    redirect_counted(shared, link, code, request, peer, true)
}

/// 414 for a link that forwards its query when the query is too long.
fn refuse_long_query(shared: &Shared, link: &Link, request: &Parts) -> Option<Response> {
    let query = request.uri.query()?;
    if !link.forward_query || query.len() <= MAX_FORWARDED_QUERY {
        return None;
    }
    shared.metrics.query_too_long.increment(1);
    Some(query_too_long())
}

/// The redirect to the target the visit chooses, its click counted when
/// `count` says so.
fn redirect_counted(
    shared: &Shared,
    link: &Link,
    code: &str,
    request: &Parts,
    peer: Option<IpAddr>,
    count: bool,
) -> Response {
    shared.metrics.redirects.increment(1);
    let destination = link.destination(|| shared.visitors.visit(&request.headers, peer));
    if let Some(clicks) = shared.clicks.as_ref().filter(|_| count) {
        clicks.record(code, &request.headers, peer, destination.rule_number());
    }
    redirect(link, destination, request.uri.query())
}

/// The request as the answer needs it.
struct Asked<'a> {
    request: &'a Parts,
    /// The direct peer, for the click's country.
    peer: Option<IpAddr>,
    head: bool,
}

fn answer(
    shared: &Shared,
    page: &Page<'_>,
    code: &str,
    Asked {
        request,
        peer,
        head,
    }: Asked<'_>,
    resolution: Resolution,
) -> Response {
    let query = request.uri.query();
    let entry = match resolution {
        Resolution::Entry(entry) => entry,
        Resolution::Unconfirmed => {
            shared.metrics.not_found.increment(1);
            count_orphan(shared, request, split_key(code).0);
            return not_found(true);
        }
        Resolution::Unavailable => {
            shared.metrics.unavailable.increment(1);
            return unavailable();
        }
    };
    let link = match &*entry {
        Entry::Link(link) if link.expires_at.is_none_or(|at| at > SystemTime::now()) => link,
        // A protected link is answered before this; here it would be gone.
        Entry::Link(_) | Entry::Gone | Entry::Protected(_) => {
            shared.metrics.gone.increment(1);
            return gone();
        }
        Entry::Missing => {
            shared.metrics.not_found.increment(1);
            count_orphan(shared, request, split_key(code).0);
            return not_found(false);
        }
    };
    match page {
        Page::Redirect(_) => refuse_long_query(shared, link, request)
            .unwrap_or_else(|| redirect_counted(shared, link, code, request, peer, !head)),
        Page::Preview(_) => {
            shared.metrics.previews.increment(1);
            let short_url = shared.short_url(code);
            html(pages::preview(&short_url, link))
        }
        Page::Qr(_) => {
            shared.metrics.qr_codes.increment(1);
            let short_url = shared.short_url(code);
            let svg = query.is_some_and(|query| query.split('&').any(|pair| pair == "format=svg"));
            pages::qr(&short_url, svg)
        }
    }
}

fn redirect(link: &Link, destination: Destination<'_>, query: Option<&str>) -> Response {
    let location = match query {
        Some(query) if link.forward_query && !query.is_empty() => {
            // The link's own UTM fields are not overridden by the request's.
            let stripped = link
                .extra
                .as_ref()
                .filter(|extra| !extra.options.utm.is_empty())
                .map(|extra| extra.options.utm.strip_from_query(query));
            let query = stripped.as_deref().unwrap_or(query);
            if query.is_empty() {
                destination.location.clone()
            } else {
                HeaderValue::try_from(location_with_query(destination.target, query))
                    .unwrap_or_else(|_| destination.location.clone())
            }
        }
        _ => destination.location.clone(),
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = link.status;
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    headers.insert(CACHE_CONTROL, link.cache_control.clone());
    response
}

fn plain(status: StatusCode, body: &'static str, cache_control: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    response
}

/// `unconfirmed`: the answer could not be checked against the primary, so no
/// cache (ours or a browser's) may keep it.
fn is_missing(resolution: &Resolution) -> bool {
    match resolution {
        Resolution::Unconfirmed => true,
        Resolution::Entry(entry) => matches!(**entry, Entry::Missing),
        Resolution::Unavailable => false,
    }
}

fn too_many_misses(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs().max(1);
    let mut response = plain(
        StatusCode::TOO_MANY_REQUESTS,
        "429 Too Many Requests: too many addresses that do not exist were asked for from here; retry later.\n",
        "no-store",
    );
    if let Ok(value) = HeaderValue::try_from(seconds.to_string()) {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

/// Counts a GET for a code that does not exist (or a path that is no code)
/// on the domain `host` names (`None`: the default one): a visit its owner
/// may want to know of (a mistyped or printed link, a scanner).
fn count_orphan(shared: &Shared, request: &Parts, host: Option<&str>) {
    if request.method != Method::GET {
        return;
    }
    let Some(clicks) = shared.clicks.as_ref() else {
        return;
    };
    let path = request.uri.path();
    match host {
        None => clicks.record_orphan(ORPHANS, path, &request.headers),
        Some(host) => clicks.record_orphan(&orphan_key(Some(host)), path, &request.headers),
    }
}

fn not_found(unconfirmed: bool) -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "404 Not Found: no link has this address.\n",
        if unconfirmed { "no-store" } else { "no-cache" },
    )
}

/// Longest query string forwarded to a target. The target is at most 2,048
/// bytes, so the `Location` header stays under 3.1 KiB, inside the 4 KiB
/// response-header buffer of a proxy in front (nginx's `proxy_buffer_size`).
pub const MAX_FORWARDED_QUERY: usize = 1024;

fn query_too_long() -> Response {
    plain(
        StatusCode::URI_TOO_LONG,
        "414 URI Too Long: this link forwards its query string, and at most 1024 bytes of it.\n",
        "no-store",
    )
}

fn visits_used_up() -> Response {
    plain(
        StatusCode::GONE,
        "410 Gone: this link has been visited as many times as it may be, or only redirects people.\n",
        "no-store",
    )
}

pub(crate) fn gone() -> Response {
    plain(
        StatusCode::GONE,
        "410 Gone: this link has expired or was disabled.\n",
        "no-cache",
    )
}

pub(crate) fn unavailable() -> Response {
    let mut response = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 Service Unavailable: links cannot be read right now; try again shortly.\n",
        "no-store",
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn method_not_allowed() -> Response {
    let mut response = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "405 Method Not Allowed: only GET and HEAD.\n",
        "no-store",
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

pub(crate) fn html(body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The page embeds a user-supplied URL: no scripts, no remote content, no
    // framing (clickjacking), and the short URL is not leaked onwards.
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(path: &str) -> Option<(&'static str, String)> {
        route(path).map(|page| match page {
            Page::Redirect(code) => ("redirect", code.to_owned()),
            Page::Preview(code) => ("preview", code.to_owned()),
            Page::Qr(code) => ("qr", code.to_owned()),
        })
    }

    #[test]
    fn routes_documented_paths() {
        let routed = |kind: &'static str, code: &str| Some((kind, code.to_owned()));
        assert_eq!(code_of("/abc123X"), routed("redirect", "abc123X"));
        assert_eq!(code_of("/abc123X/"), routed("redirect", "abc123X"));
        assert_eq!(code_of("/Sale-2026"), routed("redirect", "Sale-2026"));
        assert_eq!(code_of("/abc123X+"), routed("preview", "abc123X"));
        assert_eq!(code_of("/abc123X/qr"), routed("qr", "abc123X"));
    }

    #[test]
    fn refuses_what_cannot_be_a_code() {
        for path in [
            "/",
            "//",
            "/ab",
            "/favicon.ico",
            "/abc123X//",
            "/a/b/c",
            "/%61bc",
            "/-abc",
            "/abc123X+/qr",
            "/abc123X/qr/",
            &format!("/{}", "x".repeat(65)),
        ] {
            assert!(code_of(path).is_none(), "{path}");
        }
    }
}
