//! The web console (`/console/…`): server-rendered pages over the same link
//! service as gRPC and REST, on the REST listener (same origin as the API).
//!
//! A browser signs in with an API key and gets a server-side session (see
//! `tinyurl_links::sessions`) behind an HttpOnly, SameSite=Strict cookie —
//! `__Host-tinyurl-session` with `Secure` when the page was served over TLS
//! (here or at a trusted proxy), `tinyurl-session` on plain HTTP, where
//! browsers refuse `__Host-` cookies. Every state change is a POST carrying
//! the session's anti-forgery token, and a POST another site's page sends
//! (by `Sec-Fetch-Site` or `Origin`) is refused before it is read. Pages
//! allow only this origin's own stylesheet, script and images (strict CSP,
//! no inline script); the core flows work with scripts off.

mod admin;
mod assets;
mod chart;
mod handlers;
mod import;
mod orphans;
mod pages;

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use maud::Markup;
use tinyurl_links::auth::Scope;
use tinyurl_links::error::WriterError;
use tinyurl_links::sessions::{SessionTimeouts, SessionToken};
use tinyurl_links::{Call, LinkService, SignedIn};

use crate::rest::Peer;

/// Where the console lives on the REST listener.
pub const PREFIX: &str = "/console";

/// The session cookie over TLS: `__Host-` binds it to this origin (no
/// Domain, Path=/, Secure).
const SECURE_COOKIE: &str = "__Host-tinyurl-session";
/// The session cookie on plain HTTP (a local `tinyurl up`), where browsers
/// refuse `__Host-` and `Secure` cookies.
const PLAIN_COOKIE: &str = "tinyurl-session";

/// Every console page's policy: this origin's stylesheet, script and
/// images (QR codes are `data:`-free, served here), nothing inline, no
/// framing, forms only to here.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// What the console needs besides the link service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleSettings {
    pub timeouts: SessionTimeouts,
    /// The listener speaks TLS itself.
    pub tls: bool,
}

pub(crate) struct Console {
    links: Arc<LinkService>,
    settings: ConsoleSettings,
}

type Shared = Arc<Console>;

/// The console's routes, to merge into the REST listener's router.
pub fn router(links: Arc<LinkService>, settings: ConsoleSettings) -> Router {
    let console = Arc::new(Console { links, settings });
    Router::new()
        .route("/console", get(handlers::to_console))
        .route("/console/", get(handlers::home))
        .route(
            "/console/sign-in",
            get(handlers::sign_in_page).post(handlers::sign_in),
        )
        .route("/console/sign-out", post(handlers::sign_out))
        .route(
            "/console/links",
            get(handlers::links_page).post(handlers::create),
        )
        .route("/console/links/new", get(handlers::new_link_page))
        .route("/console/links/bulk", post(handlers::bulk))
        .route(
            "/console/import",
            get(import::import_page).post(import::import).layer(
                axum::extract::DefaultBodyLimit::max(import::MAX_IMPORT_BYTES),
            ),
        )
        .route(
            "/console/links/{code}",
            get(handlers::link_page).post(handlers::update),
        )
        .route("/console/links/{code}/enabled", post(handlers::set_enabled))
        .route("/console/links/{code}/delete", post(handlers::delete))
        .route("/console/links/{code}/qr.svg", get(handlers::qr_svg))
        .route("/console/links/{code}/qr.png", get(handlers::qr_png))
        .route(
            "/console/keys",
            get(admin::keys_page).post(admin::create_key),
        )
        .route("/console/keys/{id}/rotate", post(admin::rotate_key))
        .route("/console/keys/{id}/revoke", post(admin::revoke_key))
        .route("/console/keys/{id}/rate", post(admin::set_key_rate))
        .route(
            "/console/blocklist",
            get(admin::blocklist_page).post(admin::change_host),
        )
        .route("/console/orphan-visits", get(orphans::orphans_page))
        .route("/console/orphan-visits/purge", post(orphans::purge))
        .route("/console/assets/{name}", get(assets::serve))
        .route("/console/{*rest}", get(handlers::not_found))
        .layer(axum::middleware::from_fn(guard))
        .with_state(console)
}

/// Refuses state changes another site's page asks for, before anything is
/// read, and sets the headers every console response carries.
async fn guard(request: Request, next: Next) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    if !safe && !same_origin(request.headers()) {
        metrics::counter!("writer_console_refused_total", "reason" => "cross_site").increment(1);
        return error_page(
            StatusCode::FORBIDDEN,
            "This request came from another site's page and was refused.",
        );
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Whether a state-changing request came from this origin's own pages:
/// browsers say so in `Sec-Fetch-Site` (or at least `Origin`); a client
/// that sends neither is not a browser another site can drive.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, host)| host);
    matches!((origin_host, host), (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host))
}

impl Console {
    /// Whether the page reached the browser over TLS: this listener's own,
    /// or a trusted proxy's that says so.
    fn secure(&self, parts: &Parts) -> bool {
        if self.settings.tls {
            return true;
        }
        peer(parts).is_some_and(|peer| {
            self.links.state().proxies.contains(peer)
                && parts
                    .headers
                    .get("x-forwarded-proto")
                    .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"))
        })
    }

    fn cookie_name(&self, parts: &Parts) -> &'static str {
        if self.secure(parts) {
            SECURE_COOKIE
        } else {
            PLAIN_COOKIE
        }
    }

    /// The client's address, as the REST API judges it.
    fn client(&self, parts: &Parts) -> Option<IpAddr> {
        peer(parts).map(|peer| {
            self.links.rest_client(
                peer,
                parts
                    .headers
                    .get("x-forwarded-for")
                    .map(HeaderValue::as_bytes),
            )
        })
    }

    /// The session token the request's cookie holds, if any.
    fn token(&self, parts: &Parts) -> Option<SessionToken> {
        let name = self.cookie_name(parts);
        parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| SessionToken::parse(value))
    }

    /// `Set-Cookie` that stores `token`, or with `None` removes it.
    fn set_cookie(&self, parts: &Parts, token: Option<&SessionToken>) -> HeaderValue {
        let secure = self.secure(parts);
        let name = self.cookie_name(parts);
        let value = match token {
            Some(token) => format!(
                "{name}={}; Path=/; HttpOnly; SameSite=Strict",
                token.as_str()
            ),
            None => format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
        };
        let value = if secure {
            format!("{value}; Secure")
        } else {
            value
        };
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""))
    }
}

fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(Peer(peer))| peer.ip())
}

/// A signed-in request: its session's token and call, and the key's scope.
pub(crate) struct Signed {
    token: SessionToken,
    call: Call,
    scope: Scope,
}

impl Signed {
    /// Refuses the request unless `presented` is the session's
    /// anti-forgery token.
    fn check_csrf(&self, presented: &str) -> Result<(), Refused> {
        if self.token.csrf_matches(presented) {
            Ok(())
        } else {
            metrics::counter!("writer_console_refused_total", "reason" => "csrf").increment(1);
            Err(Refused::from(error_page(
                StatusCode::FORBIDDEN,
                "This form is out of date or was not sent by the console; reload the page and try again.",
            )))
        }
    }

    fn csrf(&self) -> String {
        self.token.csrf()
    }

    /// What a signed-in page's header shows.
    fn nav(&self) -> pages::Nav {
        pages::Nav {
            csrf: self.csrf(),
            scope: self.scope,
        }
    }

    fn may(&self, scope: Scope) -> bool {
        self.scope >= scope
    }

    /// Refuses a key below `scope` with the page that says so.
    fn require(&self, scope: Scope) -> Result<(), Refused> {
        if self.may(scope) {
            Ok(())
        } else {
            Err(Refused::from(handlers::scope_page(scope, self.scope)))
        }
    }
}

impl FromRequestParts<Shared> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Shared) -> Result<Self, Response> {
        let Some(token) = console.token(parts) else {
            return Err(to_sign_in(None));
        };
        let client = console.client(parts);
        match console
            .links
            .session(&token, client, console.settings.timeouts)
            .await
        {
            Ok(Some(SignedIn { call, scope })) => Ok(Self { token, call, scope }),
            // Ended, timed out, or its key revoked: the stale cookie goes.
            Ok(None) => Err(to_sign_in(Some(console.set_cookie(parts, None)))),
            Err(error) => Err(service_error_page(&error)),
        }
    }
}

/// A page that ends a request early (boxed: responses are large, and
/// handlers pass refusals up with `?`).
pub(crate) struct Refused(Box<Response>);

impl From<Response> for Refused {
    fn from(response: Response) -> Self {
        Self(Box::new(response))
    }
}

/// A service error as its page, so handlers can `?` the link service.
impl From<WriterError> for Refused {
    fn from(error: WriterError) -> Self {
        Self::from(service_error_page(&error))
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// `303 See Other` to `location`.
fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn to_sign_in(set_cookie: Option<HeaderValue>) -> Response {
    let mut response = see_other("/console/sign-in");
    if let Some(cookie) = set_cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// An HTML page with `status`.
fn html(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        page.into_string(),
    )
        .into_response()
}

fn error_page(status: StatusCode, message: &str) -> Response {
    html(status, pages::error(status, message))
}

/// The page of a link service error: its status and public message, and a
/// `Retry-After` when it has one.
fn service_error_page(error: &WriterError) -> Response {
    let status = error.kind().http_status();
    let mut response = error_page(status, &error.public_message());
    if let Some(retry) = retry_after(error) {
        response.headers_mut().insert(header::RETRY_AFTER, retry);
    }
    response
}

fn retry_after(error: &WriterError) -> Option<HeaderValue> {
    let wait = match error {
        WriterError::RateLimited { retry_after, .. }
        | WriterError::TooManyFailures { retry_after, .. }
        | WriterError::QuotaExhausted { retry_after, .. } => *retry_after,
        _ => return None,
    };
    HeaderValue::from_str(&crate::rest::retry_seconds(wait).max(1).to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn posts_from_other_sites_are_refused() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:8081"),
            ("host", "127.0.0.1:8081")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8081")
        ])));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "a")])));
        assert!(same_origin(&headers(&[])), "not a browser");
    }
}
