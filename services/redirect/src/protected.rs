//! Password-protected links on the redirect.
//!
//! - `GET /{code}` without a cookie that opens the link: a small page with a
//!   password form (403), nothing of the target in it or its headers (the
//!   record this process holds has the target only sealed).
//! - `POST /{code}` with `password=…`: one attempt, taken from the client
//!   address's and the link's allowances (shared through Redis) before the
//!   password is hashed; a right password gives the attempts back, sets a
//!   cookie for this link and answers 303 to where the visit goes; a wrong
//!   one answers the page again, 429 once an allowance is spent.
//! - With the cookie: the link's redirect (a permanent status answered as
//!   its temporary twin, never cached), counted like any other; a capped
//!   link's visit is used only here.
//! - `/{code}+` (preview) shows where the link goes only with the cookie;
//!   `/{code}/qr` is the short URL's and shows nothing else.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, LOCATION, RETRY_AFTER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt as _;
use tinyurl_domain::protect::{Key, MAX_PASSWORD_BYTES, open_cookie};

use crate::entry::{Link, Protected};
use crate::l2::{LocalAttempts, SharedCache};

/// Name of the cookie that opens one link; its path is the link's, so a
/// browser sends it only there.
pub const COOKIE: &str = "tinyurl_pass";
/// How long a right password opens its link in that browser.
pub const UNLOCKED_FOR: Duration = Duration::from_secs(3600);
/// The window the attempt allowances count in.
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(600);
/// Largest form body read: a password and its field name, URL-encoded
/// (three bytes for each byte at worst).
const MAX_FORM_BYTES: usize = 3 * MAX_PASSWORD_BYTES + 64;
/// How long a client may take to send the form.
const FORM_TIMEOUT: Duration = Duration::from_secs(10);

/// What the serving threads share for protected links.
pub struct Passwords {
    cookie_secret: Key,
    /// Wrong passwords one client address may try per window, over all links.
    pub per_address: u32,
    /// Wrong passwords one link may be tried with per window, from anywhere.
    pub per_link: u32,
    /// Whether cookies are marked `Secure` (short URLs are https).
    secure: bool,
    /// Argon2id runs at once at most this many (each holds 19 MiB and a
    /// core for tens of milliseconds); the rest wait.
    hashing: tokio::sync::Semaphore,
    /// The allowances, when no shared tier counts them.
    local: Arc<LocalAttempts>,
}

impl Passwords {
    pub fn new(cookie_secret: Key, per_address: u32, per_link: u32, secure: bool) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self {
            cookie_secret,
            per_address,
            per_link,
            secure,
            hashing: tokio::sync::Semaphore::new(cores),
            local: Arc::default(),
        }
    }

    /// The in-process allowances, for an in-process shared tier to share.
    pub fn local_attempts(&self) -> Arc<LocalAttempts> {
        Arc::clone(&self.local)
    }

    /// The link `protected` opened by the request's cookie, if it holds one
    /// that does.
    fn opened_by_cookie(&self, code: &str, protected: &Protected, request: &Parts) -> Option<Link> {
        let now = SystemTime::now();
        let seconds = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let key = request
            .headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == COOKIE)
            .find_map(|(_, value)| open_cookie(&self.cookie_secret, code, value, seconds))?;
        let locked = protected.password.open_with(code, &key)?;
        protected.opened(locked, now)
    }

    fn cookie(&self, code: &str, key: &Key) -> Option<HeaderValue> {
        let expires = SystemTime::now()
            .checked_add(UNLOCKED_FOR)?
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_secs();
        let value = tinyurl_domain::protect::cookie_value(
            &self.cookie_secret,
            code,
            key,
            expires,
            rand::random(),
        );
        let secure = if self.secure { "; Secure" } else { "" };
        // The path of the link on its own domain: its bare code.
        let path = tinyurl_domain::domains::split_key(code).1;
        HeaderValue::try_from(format!(
            "{COOKIE}={value}; Path=/{path}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            UNLOCKED_FOR.as_secs()
        ))
        .ok()
    }
}

/// What a request for a protected link gets.
pub enum Outcome {
    /// Opened: answer as the link would (its redirect, its preview).
    Opened(Link),
    /// Opened by a password just given: redirect with this cookie.
    Unlocked(Link, HeaderValue),
    /// An answer already made (the form, a refusal).
    Answer(Response),
}

/// A `GET`/`HEAD` of a protected link, or the preview's.
pub fn visit(passwords: &Passwords, code: &str, protected: &Protected, request: &Parts) -> Outcome {
    match passwords.opened_by_cookie(code, protected, request) {
        Some(link) => Outcome::Opened(link),
        None => Outcome::Answer(form(StatusCode::FORBIDDEN, None)),
    }
}

/// A `POST` of the password form to a protected link.
pub async fn submit(
    passwords: &Passwords,
    l2: Option<&Arc<dyn SharedCache>>,
    code: &str,
    protected: &Protected,
    body: hyper::body::Incoming,
    client: Option<IpAddr>,
) -> Outcome {
    let Some(password) = read_password(body).await else {
        return Outcome::Answer(form(
            StatusCode::BAD_REQUEST,
            Some("Send the form's password field (at most 128 characters)."),
        ));
    };
    let address_key = client.map(|client| format!("pwtry:addr:{client}"));
    let link_key = format!("pwtry:link:{code}");
    let attempts = Attempts {
        passwords,
        l2,
        keys: [
            address_key
                .as_deref()
                .map(|key| (key, passwords.per_address)),
            Some((link_key.as_str(), passwords.per_link)),
        ],
    };
    match attempts.take().await {
        Ok(Ok(())) => {}
        Ok(Err(wait)) => return Outcome::Answer(too_many_attempts(wait)),
        Err(error) => {
            tracing::warn!(
                code,
                error = format!("{error:#}"),
                "cannot count a password attempt"
            );
            return Outcome::Answer(crate::http::unavailable());
        }
    }
    let Ok(_permit) = passwords.hashing.acquire().await else {
        return Outcome::Answer(crate::http::unavailable());
    };
    let sealed = protected.password.clone();
    let owned_code = code.to_owned();
    let unlocked = tokio::task::spawn_blocking(move || sealed.unlock(&owned_code, &password)).await;
    let Ok(Some((key, locked))) = unlocked else {
        metrics::counter!("redirect_password_attempts_total", "outcome" => "wrong").increment(1);
        return Outcome::Answer(form(
            StatusCode::FORBIDDEN,
            Some("That is not this link's password."),
        ));
    };
    metrics::counter!("redirect_password_attempts_total", "outcome" => "right").increment(1);
    // A right password costs no attempt.
    attempts.refund().await;
    let Some(link) = protected.opened(locked, SystemTime::now()) else {
        return Outcome::Answer(crate::http::gone());
    };
    match passwords.cookie(code, &key) {
        Some(cookie) => Outcome::Unlocked(link, cookie),
        None => Outcome::Opened(link),
    }
}

/// The allowances one attempt is taken from.
struct Attempts<'a> {
    passwords: &'a Passwords,
    l2: Option<&'a Arc<dyn SharedCache>>,
    keys: [Option<(&'a str, u32)>; 2],
}

impl Attempts<'_> {
    /// Takes an attempt from every allowance, or from none.
    async fn take(&self) -> anyhow::Result<Result<(), Duration>> {
        let mut taken = Vec::with_capacity(2);
        for (key, limit) in self.keys.iter().flatten() {
            let outcome = match self.l2 {
                Some(l2) => l2.take_attempt(key, *limit, ATTEMPT_WINDOW).await,
                None => Ok(self.passwords.local.take(key, *limit, ATTEMPT_WINDOW)),
            };
            match outcome {
                Ok(Ok(())) => taken.push(*key),
                refused => {
                    for key in taken {
                        self.give_back(key).await;
                    }
                    return refused;
                }
            }
        }
        Ok(Ok(()))
    }

    async fn refund(&self) {
        for (key, _) in self.keys.iter().flatten() {
            self.give_back(key).await;
        }
    }

    async fn give_back(&self, key: &str) {
        match self.l2 {
            Some(l2) => {
                if let Err(error) = l2.refund_attempt(key).await {
                    tracing::debug!(error = format!("{error:#}"), "cannot give an attempt back");
                }
            }
            None => self.passwords.local.refund(key),
        }
    }
}

/// The `password` field of a URL-encoded form body.
async fn read_password(body: hyper::body::Incoming) -> Option<String> {
    let limited = http_body_util::Limited::new(body, MAX_FORM_BYTES);
    let bytes = tokio::time::timeout(FORM_TIMEOUT, limited.collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    url::form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == "password")
        .map(|(_, value)| value.into_owned())
        .filter(|password| !password.is_empty() && password.len() <= MAX_PASSWORD_BYTES)
}

/// The redirect a right password earns: 303 (the form was a POST), with the
/// cookie that opens the link from now on.
pub fn see_other(location: HeaderValue, cookie: HeaderValue) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    headers.insert(SET_COOKIE, cookie);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    response
}

fn too_many_attempts(wait: Duration) -> Response {
    let mut response = form(
        StatusCode::TOO_MANY_REQUESTS,
        Some("Too many wrong passwords; try again later."),
    );
    if let Ok(value) = HeaderValue::try_from(wait.as_secs().max(1).to_string()) {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

/// The password page: the form, and why it is shown again.
fn form(status: StatusCode, message: Option<&str>) -> Response {
    let message = message.map_or(String::new(), |message| {
        format!("<p role=\"alert\"><strong>{message}</strong></p>")
    });
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>Password required</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:30em;margin:3em auto;padding:0 1em}}\
         input,button{{font:inherit;padding:.4em .6em}}</style></head>\
         <body><h1>This link is protected</h1>{message}\
         <form method=\"post\"><p><label for=\"password\">Password</label><br>\
         <input id=\"password\" name=\"password\" type=\"password\" required \
         autocomplete=\"current-password\" maxlength=\"128\" autofocus></p>\
         <p><button type=\"submit\">Continue</button></p></form></body></html>\n"
    );
    // The preview's headers (no scripts, no framing, no referrer; no
    // form-action either, which Chrome would apply to the redirect after
    // the post), never stored.
    let mut response = crate::http::html(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    response
}
