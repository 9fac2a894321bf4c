//! Which domain a request is for, by its `Host` header.
//!
//! The registered domains are read from the database every
//! [`REFRESH_INTERVAL`] (a short table; a new domain answers within that).
//! A request for the default domain (the host of `TINYURL_PUBLIC_BASE_URL`)
//! looks its code up as it always did; one for a registered domain looks up
//! `{host}/{code}` (see `tinyurl_domain::domains`); one for any other host
//! is answered as the default domain's, or 404 with no I/O when
//! `TINYURL_UNKNOWN_HOSTS=404`. While no domain is registered, nothing of
//! this runs on a request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

use crate::store::LinkSource;

/// How often the registered domains are read again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// What a request for a host that is no registered domain gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownHosts {
    /// The default domain's links.
    Default,
    /// 404, with no I/O.
    NotFound,
}

impl UnknownHosts {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "default" => Ok(Self::Default),
            "404" => Ok(Self::NotFound),
            other => Err(format!("{other:?} is neither \"default\" nor \"404\"")),
        }
    }
}

/// A registered domain as the redirect uses it.
#[derive(Debug)]
pub struct Domain {
    pub host: String,
    /// Where codes it does not have are sent; `None`: the built-in 404.
    pub not_found: Option<HeaderValue>,
}

/// The domain a request is for.
#[derive(Debug, Clone)]
pub enum Scope {
    /// The default domain: codes are their own keys.
    Default,
    Domain(Arc<Domain>),
    /// A host that is no domain, with `TINYURL_UNKNOWN_HOSTS=404`.
    Refused,
}

impl Scope {
    /// The key `code` is looked up by.
    pub fn key<'a>(&self, code: &'a str) -> std::borrow::Cow<'a, str> {
        match self {
            Self::Domain(domain) => format!("{}/{code}", domain.host).into(),
            Self::Default | Self::Refused => code.into(),
        }
    }
}

pub struct Domains {
    /// The default domain's host, lower case.
    default_host: String,
    unknown: UnknownHosts,
    /// Whether any domain is registered: until one is, the `Host` header
    /// is not read at all.
    any: AtomicBool,
    by_host: RwLock<Arc<HashMap<String, Arc<Domain>>>>,
}

impl Domains {
    pub fn new(public_base_url: &str, unknown: UnknownHosts) -> Self {
        let default_host = public_base_url
            .split_once("://")
            .map_or(public_base_url, |(_, rest)| rest)
            .split(['/', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        Self {
            default_host,
            unknown,
            any: AtomicBool::new(false),
            by_host: RwLock::default(),
        }
    }

    /// The domain a request with `headers` is for.
    pub fn scope(&self, headers: &HeaderMap) -> Scope {
        if !self.any.load(Ordering::Relaxed) && self.unknown == UnknownHosts::Default {
            return Scope::Default;
        }
        let Some(host) = headers
            .get(axum::http::header::HOST)
            .and_then(|value| tinyurl_domain::domains::request_host(value.as_bytes()))
        else {
            return self.unknown_host();
        };
        if host == self.default_host {
            return Scope::Default;
        }
        let by_host = match self.by_host.read() {
            Ok(by_host) => Arc::clone(&by_host),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        match by_host.get(&host) {
            Some(domain) => Scope::Domain(Arc::clone(domain)),
            None => self.unknown_host(),
        }
    }

    fn unknown_host(&self) -> Scope {
        match self.unknown {
            UnknownHosts::Default => Scope::Default,
            UnknownHosts::NotFound => Scope::Refused,
        }
    }

    /// Replaces the registered domains with `domains`.
    pub fn set(&self, domains: Vec<(String, Option<String>)>) {
        let by_host: HashMap<String, Arc<Domain>> = domains
            .into_iter()
            .map(|(host, not_found)| {
                let not_found = not_found.and_then(|url| HeaderValue::try_from(url).ok());
                (host.clone(), Arc::new(Domain { host, not_found }))
            })
            .collect();
        self.any.store(!by_host.is_empty(), Ordering::Relaxed);
        metrics::gauge!("redirect_domains").set(by_host.len() as f64);
        match self.by_host.write() {
            Ok(mut current) => *current = Arc::new(by_host),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(by_host),
        }
    }

    /// Reads the domains from `source` every [`REFRESH_INTERVAL`] until
    /// stopping; a failed read keeps the last ones.
    pub async fn refresh(
        self: Arc<Self>,
        source: Arc<dyn LinkSource>,
        stopping: tinyurl_runtime::Stopping,
    ) {
        stopping
            .every(REFRESH_INTERVAL, || async {
                match source.domains().await {
                    Ok(domains) => self.set(domains),
                    Err(error) => {
                        tracing::debug!(?error, "cannot read the domains; keeping the last ones")
                    }
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::HOST,
            HeaderValue::from_str(host).expect("a header value"),
        );
        headers
    }

    #[test]
    fn hosts_choose_their_domain() {
        let domains = Domains::new("https://sho.rt", UnknownHosts::Default);
        assert!(matches!(
            domains.scope(&headers("go.example")),
            Scope::Default
        ));
        domains.set(vec![
            ("go.example".to_owned(), None),
            (
                "b.example".to_owned(),
                Some("https://b.example/missing".to_owned()),
            ),
        ]);
        let key = |host: &str| domains.scope(&headers(host)).key("sale").into_owned();
        assert_eq!(key("Go.Example:443"), "go.example/sale");
        assert_eq!(key("b.example"), "b.example/sale");
        assert_eq!(key("sho.rt"), "sale");
        assert_eq!(key("SHO.RT:8080"), "sale");
        assert_eq!(key("127.0.0.1:8080"), "sale");
        let strict = Domains::new("https://sho.rt", UnknownHosts::NotFound);
        strict.set(vec![("go.example".to_owned(), None)]);
        assert!(matches!(
            strict.scope(&headers("other.example")),
            Scope::Refused
        ));
        assert!(matches!(strict.scope(&HeaderMap::new()), Scope::Refused));
        assert!(matches!(strict.scope(&headers("sho.rt")), Scope::Default));
    }
}
