//! The link record shared through Redis between writer (which writes it
//! through after every commit) and redirect (which reads it). A compact,
//! versioned text form, so that an operator can read it with `redis-cli`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Redis key of a link.
pub fn link_key(code: &str) -> String {
    format!("link:{code}")
}

/// Redis key of the visits a capped link has used: an integer, kept as long
/// as the link (no expiry), counted by the redirects.
pub fn visits_key(code: &str) -> String {
    format!("visits:{code}")
}

/// Redis pub/sub channel on which created, changed and deleted codes are
/// announced; a message holds one or more codes separated by spaces.
pub const INVALIDATION_CHANNEL: &str = "tinyurl:invalidate";

/// One invalidation message announcing `codes`.
pub fn announcement<'a>(codes: impl IntoIterator<Item = &'a str>) -> String {
    codes.into_iter().collect::<Vec<_>>().join(" ")
}

/// The codes an invalidation message announces.
pub fn announced_codes(message: &str) -> impl Iterator<Item = &str> {
    message.split(' ').filter(|code| !code.is_empty())
}

/// The value of a negative entry: "no link has this code". Redirect writes it
/// with `NX` (so it never replaces a link), the writer overwrites it when the
/// code is created and writes it as a tombstone when a link is deleted (so a
/// lagging replica cannot put the deleted link back).
pub const NEGATIVE_ENTRY: &str = "none";

/// The target field of a password-protected link's record: its target is
/// in the options, sealed.
pub const SEALED_TARGET: &str = "-";

/// What redirect needs to answer for a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedLink {
    pub target_url: String,
    pub redirect_status: crate::RedirectStatus,
    pub forward_query: bool,
    pub expires_at: Option<SystemTime>,
    pub enabled: bool,
    /// UTM fields and redirect rules; empty for a plain link.
    pub options: crate::LinkOptions,
}

impl CachedLink {
    /// `v1 <status> <forward 0|1> <enabled 0|1> <expires unix seconds or -> <target>`,
    /// space-separated; the target comes last and never contains a space.
    /// A link with options is `v2`, the same fields and then, after the
    /// target and a space, the options' stored JSON: a plain link's record
    /// stays the short v1 form.
    pub fn encode(&self) -> String {
        let expires = self
            .expires_at
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or_else(|| "-".to_owned(), |since| since.as_secs().to_string());
        let fields = format!(
            "{} {} {} {} {}",
            self.redirect_status.code(),
            u8::from(self.forward_query),
            u8::from(self.enabled),
            expires,
            self.target_url
        );
        match self.options.to_stored() {
            None => format!("v1 {fields}"),
            Some(options) => format!("v2 {fields} {options}"),
        }
    }

    /// `None` for anything that is not a well-formed v1 or v2 record.
    pub fn decode(raw: &str) -> Option<Self> {
        let (version, rest) = raw.split_once(' ')?;
        let with_options = match version {
            "v1" => false,
            "v2" => true,
            _ => return None,
        };
        let mut parts = rest.splitn(if with_options { 6 } else { 5 }, ' ');
        let redirect_status = crate::RedirectStatus::from_code(parts.next()?.parse::<u16>().ok()?)?;
        let forward_query = parse_flag(parts.next()?)?;
        let enabled = parse_flag(parts.next()?)?;
        let expires_at = match parts.next()? {
            "-" => None,
            seconds => Some(UNIX_EPOCH + Duration::from_secs(seconds.parse().ok()?)),
        };
        let target_url = parts.next()?.to_owned();
        if target_url.is_empty() {
            return None;
        }
        let options = if with_options {
            let options = crate::LinkOptions::from_stored(Some(parts.next()?)).ok()?;
            // A v2 record says it has options.
            if options.is_empty() {
                return None;
            }
            options
        } else {
            crate::LinkOptions::default()
        };
        Some(Self {
            target_url,
            redirect_status,
            forward_query,
            expires_at,
            enabled,
            options,
        })
    }
}

fn parse_flag(raw: &str) -> Option<bool> {
    match raw {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip() {
        let message = announcement(["Ab3xY9q", "my-alias"]);
        assert_eq!(message, "Ab3xY9q my-alias");
        assert_eq!(
            announced_codes(&message).collect::<Vec<_>>(),
            ["Ab3xY9q", "my-alias"]
        );
        assert_eq!(announced_codes("  a  b ").collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn round_trips() {
        let link = CachedLink {
            target_url: "https://example.com/a?b=c#d".to_owned(),
            redirect_status: crate::RedirectStatus::PermanentRedirect,
            forward_query: true,
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
            enabled: false,
            options: crate::LinkOptions::default(),
        };
        assert!(link.encode().starts_with("v1 308 1 0 1900000000 https://"));
        assert_eq!(CachedLink::decode(&link.encode()), Some(link.clone()));
        let forever = CachedLink {
            expires_at: None,
            ..link.clone()
        };
        assert_eq!(CachedLink::decode(&forever.encode()), Some(forever));
        let with_options = CachedLink {
            options: crate::LinkOptions {
                utm: crate::Utm {
                    campaign: Some("a spring sale".to_owned()),
                    ..crate::Utm::default()
                },
                max_visits: Some(100),
                password: None,
                rules: vec![crate::RedirectRule {
                    languages: vec!["de".to_owned()],
                    target_url: "https://example.de/a".to_owned(),
                    ..crate::RedirectRule::default()
                }],
            },
            ..link
        };
        let encoded = with_options.encode();
        assert!(encoded.starts_with("v2 308 1 0 1900000000 https://example.com/a?b=c#d {"));
        assert_eq!(CachedLink::decode(&encoded), Some(with_options));
    }

    #[test]
    fn rejects_malformed_records() {
        for raw in [
            "",
            "v2 301 0 1 - https://x",
            "v1 200 0 1 - https://x",
            "v1 301 2 1 - https://x",
            "v1 301 0 1 soon https://x",
            "v1 301 0 1 -",
            "v2 301 0 1 - https://x",
            "v2 301 0 1 - https://x {}",
            "v2 301 0 1 - https://x {\"utm\":3}",
        ] {
            assert_eq!(CachedLink::decode(raw), None, "{raw:?}");
        }
    }
}
