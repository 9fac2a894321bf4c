//! What a code resolves to, prepared once when it enters the in-process cache
//! so that answering a hit copies ready-made header values and allocates
//! nothing.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderValue, StatusCode};
use tinyurl_domain::options::Visit;
use tinyurl_domain::{CachedLink, LinkOptions, RedirectStatus};

/// The answer for one code.
#[derive(Debug)]
pub enum Entry {
    /// A live link.
    Link(Link),
    /// A live link behind a password: what it leads to is sealed until the
    /// password (or a cookie that holds its key) opens it.
    Protected(Box<Protected>),
    /// Disabled, or past its expiry: 410.
    Gone,
    /// No link has this code: 404.
    Missing,
}

#[derive(Debug)]
pub struct Link {
    pub status: StatusCode,
    /// The destination, for query forwarding and the preview page.
    pub target: Box<str>,
    pub location: HeaderValue,
    pub cache_control: HeaderValue,
    pub forward_query: bool,
    pub expires_at: Option<SystemTime>,
    /// UTM fields and rules; `None` for a plain link, whose answer is decided
    /// by this one test.
    pub extra: Option<Box<Extra>>,
}

/// A password-protected link as the redirect holds it: its record, whose
/// target is a placeholder and whose options hold the sealed part.
#[derive(Debug)]
pub struct Protected {
    pub record: CachedLink,
    pub password: tinyurl_domain::protect::Password,
}

impl Protected {
    /// The link `locked` (what its key opened) describes, prepared like any
    /// other, except that no cache may keep its answer and a permanent
    /// status is answered as its temporary twin: a browser must ask again
    /// once its cookie has expired.
    pub fn opened(&self, locked: tinyurl_domain::protect::Locked, now: SystemTime) -> Option<Link> {
        let record = CachedLink {
            target_url: locked.target_url,
            options: LinkOptions {
                utm: locked.utm,
                rules: locked.rules,
                max_visits: self.record.options.max_visits,
                password: None,
            },
            ..self.record.clone()
        };
        let policy = CachePolicy {
            permanent_max_age: Duration::ZERO,
        };
        let Entry::Link(mut link) = Entry::from_record(record, now, policy) else {
            return None;
        };
        link.status = match link.status {
            StatusCode::MOVED_PERMANENTLY => StatusCode::FOUND,
            StatusCode::PERMANENT_REDIRECT => StatusCode::TEMPORARY_REDIRECT,
            other => other,
        };
        link.cache_control = HeaderValue::from_static("private, no-store");
        Some(link)
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        self.record.expires_at.is_some_and(|at| at <= now)
    }
}

/// What a link with options adds to its entry, prepared once.
#[derive(Debug)]
pub struct Extra {
    pub options: LinkOptions,
    /// Each rule's target with the link's UTM fields merged in, and its
    /// `Location` value, in the rules' order.
    pub rule_targets: Vec<(Box<str>, HeaderValue)>,
}

/// Where one visit goes: the link's target or a rule's.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub target: &'a str,
    pub location: &'a HeaderValue,
    /// The rule that answered (counted from 0), if one did.
    pub rule: Option<usize>,
    /// Whether the link has rules at all.
    pub has_rules: bool,
}

impl Destination<'_> {
    /// What the click counts: for a link with rules, the rule that answered
    /// (from 1) or 0 for the link's own target; nothing for a plain link.
    pub fn rule_number(&self) -> Option<u8> {
        match self.rule {
            Some(index) => u8::try_from(index + 1).ok(),
            None if self.has_rules => Some(0),
            None => None,
        }
    }
}

impl Link {
    /// The visit cap, for a capped link.
    pub fn max_visits(&self) -> Option<u64> {
        self.extra
            .as_ref()
            .and_then(|extra| extra.options.max_visits)
    }

    /// Where the visit described by `visit` goes; the function is called
    /// only for a link with rules.
    pub fn destination<'v>(&self, visit: impl FnOnce() -> Visit<'v>) -> Destination<'_> {
        let mut destination = Destination {
            target: &self.target,
            location: &self.location,
            rule: None,
            has_rules: false,
        };
        if let Some(extra) = &self.extra
            && !extra.rule_targets.is_empty()
        {
            destination.has_rules = true;
            if let Some(index) = extra.options.rule_for(&visit())
                && let Some((target, location)) = extra.rule_targets.get(index)
            {
                destination.target = target;
                destination.location = location;
                destination.rule = Some(index);
            }
        }
        destination
    }
}

/// Per-status browser caching.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    /// `max-age` of 301/308: bounded so that a disabled or changed link does
    /// not stay pinned in browsers.
    pub permanent_max_age: Duration,
}

impl Entry {
    /// Prepares the entry for a stored record as of `now`.
    pub fn from_record(record: CachedLink, now: SystemTime, policy: CachePolicy) -> Self {
        if !record.enabled || record.expires_at.is_some_and(|at| at <= now) {
            return Self::Gone;
        }
        if let Some(password) = &record.options.password {
            if password.sealed.is_none() {
                tracing::error!("a protected link's record has nothing sealed");
                return Self::Gone;
            }
            return Self::Protected(Box::new(Protected {
                password: password.clone(),
                record,
            }));
        }
        let target = record.options.utm.apply(&record.target_url);
        // A link with rules answers each visitor in their own way, and a
        // capped one must see every visit: no cache between us and them
        // may keep an answer.
        let private = !record.options.rules.is_empty() || record.options.max_visits.is_some();
        let Ok(location) = HeaderValue::try_from(target.as_str()) else {
            // The writer validates targets; a record that is not a valid header
            // value is corrupt, and redirecting to it is not an option.
            tracing::error!(target = %record.target_url, "stored target is not a valid Location");
            return Self::Gone;
        };
        let extra = if record.options.is_empty() {
            None
        } else {
            let mut rule_targets = Vec::with_capacity(record.options.rules.len());
            for rule in &record.options.rules {
                let target = record.options.utm.apply(&rule.target_url);
                let Ok(location) = HeaderValue::try_from(target.as_str()) else {
                    tracing::error!(target = %rule.target_url, "a stored rule's target is not a valid Location");
                    return Self::Gone;
                };
                rule_targets.push((target.into_boxed_str(), location));
            }
            Some(Box::new(Extra {
                options: record.options,
                rule_targets,
            }))
        };
        let status = match record.redirect_status {
            RedirectStatus::MovedPermanently => StatusCode::MOVED_PERMANENTLY,
            RedirectStatus::Found => StatusCode::FOUND,
            RedirectStatus::TemporaryRedirect => StatusCode::TEMPORARY_REDIRECT,
            RedirectStatus::PermanentRedirect => StatusCode::PERMANENT_REDIRECT,
        };
        let cache_control = if record.redirect_status.is_permanent() && !private {
            let mut max_age = policy.permanent_max_age;
            if let Some(left) = record.expires_at.and_then(|at| at.duration_since(now).ok()) {
                max_age = max_age.min(left);
            }
            HeaderValue::try_from(format!("public, max-age={}", max_age.as_secs()))
                .unwrap_or(HeaderValue::from_static("no-cache"))
        } else {
            // A temporary redirect is re-asked every time: that is its point.
            HeaderValue::from_static("private, no-cache")
        };
        Self::Link(Link {
            status,
            target: target.into_boxed_str(),
            location,
            cache_control,
            forward_query: record.forward_query,
            expires_at: record.expires_at,
            extra,
        })
    }

    /// How long the in-process cache may keep this entry.
    pub fn l1_lifetime(&self, ttl: Duration, negative_ttl: Duration, now: SystemTime) -> Duration {
        match self {
            Self::Link(link) => link.expires_at.map_or(ttl, |at| {
                ttl.min(at.duration_since(now).unwrap_or_default())
            }),
            Self::Protected(protected) => protected.record.expires_at.map_or(ttl, |at| {
                ttl.min(at.duration_since(now).unwrap_or_default())
            }),
            Self::Gone => ttl,
            Self::Missing => negative_ttl,
        }
    }
}

/// The Location for a request carrying `query`: the request's query string is
/// appended to the target's (before any fragment).
pub fn location_with_query(target: &str, query: &str) -> String {
    let (base, fragment) = match target.find('#') {
        Some(at) => target.split_at(at),
        None => (target, ""),
    };
    let separator = if !base.contains('?') {
        "?"
    } else if base.ends_with(['?', '&']) {
        ""
    } else {
        "&"
    };
    let mut location = String::with_capacity(target.len() + query.len() + 1);
    location.push_str(base);
    location.push_str(separator);
    location.push_str(query);
    location.push_str(fragment);
    location
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CachePolicy = CachePolicy {
        permanent_max_age: Duration::from_secs(300),
    };

    fn record(status: u16) -> CachedLink {
        CachedLink {
            target_url: "https://example.com/a".to_owned(),
            redirect_status: RedirectStatus::from_code(status).expect("a redirect status"),
            forward_query: false,
            expires_at: None,
            enabled: true,
            options: LinkOptions::default(),
        }
    }

    fn link(entry: Entry) -> Link {
        match entry {
            Entry::Link(link) => link,
            other => panic!("expected a link, got {other:?}"),
        }
    }

    #[test]
    fn permanent_redirects_are_cached_for_a_bounded_time() {
        let now = SystemTime::now();
        for status in [301, 308] {
            let prepared = link(Entry::from_record(record(status), now, POLICY));
            assert_eq!(prepared.status.as_u16(), status);
            assert_eq!(prepared.cache_control, "public, max-age=300");
        }
        for status in [302, 307] {
            let prepared = link(Entry::from_record(record(status), now, POLICY));
            assert_eq!(prepared.status.as_u16(), status);
            assert_eq!(prepared.cache_control, "private, no-cache");
        }
        let soon = CachedLink {
            expires_at: Some(now + Duration::from_secs(42)),
            ..record(301)
        };
        let prepared = link(Entry::from_record(soon, now, POLICY));
        assert!(
            prepared.cache_control.to_str().is_ok_and(|value| {
                value == "public, max-age=42" || value == "public, max-age=41"
            })
        );
    }

    #[test]
    fn disabled_and_expired_links_are_gone() {
        let now = SystemTime::now();
        let disabled = CachedLink {
            enabled: false,
            ..record(302)
        };
        assert!(matches!(
            Entry::from_record(disabled, now, POLICY),
            Entry::Gone
        ));
        let expired = CachedLink {
            expires_at: Some(now - Duration::from_secs(1)),
            ..record(302)
        };
        assert!(matches!(
            Entry::from_record(expired, now, POLICY),
            Entry::Gone
        ));
    }

    #[test]
    fn cache_lifetime_never_outlives_the_link() {
        let now = SystemTime::now();
        let ttl = Duration::from_secs(60);
        let negative = Duration::from_secs(2);
        let forever = Entry::from_record(record(302), now, POLICY);
        assert_eq!(forever.l1_lifetime(ttl, negative, now), ttl);
        let soon = Entry::from_record(
            CachedLink {
                expires_at: Some(now + Duration::from_secs(5)),
                ..record(302)
            },
            now,
            POLICY,
        );
        assert_eq!(soon.l1_lifetime(ttl, negative, now), Duration::from_secs(5));
        assert_eq!(Entry::Missing.l1_lifetime(ttl, negative, now), negative);
    }

    #[test]
    fn query_is_forwarded_before_the_fragment() {
        let cases = [
            ("https://x.example/p", "a=1", "https://x.example/p?a=1"),
            (
                "https://x.example/p?b=2",
                "a=1",
                "https://x.example/p?b=2&a=1",
            ),
            ("https://x.example/p?", "a=1", "https://x.example/p?a=1"),
            (
                "https://x.example/p#top",
                "a=1",
                "https://x.example/p?a=1#top",
            ),
            (
                "https://x.example/p?b=2#top",
                "a=1",
                "https://x.example/p?b=2&a=1#top",
            ),
        ];
        for (target, query, expected) in cases {
            assert_eq!(location_with_query(target, query), expected, "{target}");
        }
    }
}
