//! Click batches: what the redirect service appends to the click stream and
//! the writer's analytics consumer folds into rollups. One batch is one
//! stream entry with the fields `format` ([`BATCH_FORMAT`]), `batch` (an id
//! unique to the batch, the key of exactly-once folding) and `clicks`
//! (newline-separated lines).
//!
//! Formats, so that a rolling upgrade in either order loses no click: a
//! consumer folds its own format and the one before, and leaves a newer one
//! pending for a consumer that knows it.
//! - 1: `clicks` only (redirects from before batch ids); the stream entry's
//!   id stands in for the batch id, so a redelivery is still found.
//! - 2: `batch` and `clicks`, with `format` = 2 (or, written before the
//!   field existed, without it).
//! - 3: as 2, and a line may end with the redirect rule that answered.
//! - 4: as 3; visits to codes that do not exist are counted under a
//!   domain's [`orphan_key`] (`~`, `host/~`), the line's third field being
//!   the requested path ([`path_token`]) rather than a referrer; and a
//!   referrer, browser, device or country may be
//!   [`NOT_RECORDED`]: the visitor asked not to be tracked (`DNT: 1`,
//!   `Sec-GPC: 1`) or the operator turned that dimension off; the bot flag
//!   became the traffic class (0 a person, 1 a crawler, 2 a link previewer,
//!   3 a monitor or scanner).
//!
//! A line is `code minute referrer browser device country class count
//! [rule]`, space-separated: `minute` in whole minutes since the Unix epoch,
//! `referrer` a normalised host (or [`DIRECT`], [`OTHER`]), `class` the
//! [`TrafficClass`]'s digit (formats up to 3: 0 a person, 1 a bot),
//! `rule` (only for a link with redirect rules) the number of the rule that
//! answered, from 1, or 0 for the link's own target.
//! Every field is a token without spaces, checked on the way in, so a
//! corrupt entry is refused whole rather than half-folded.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Redis stream the redirect services append click batches to.
pub const CLICKS_STREAM: &str = "tinyurl:clicks";
/// The consumer group of the writers' analytics consumers.
pub const CLICKS_GROUP: &str = "tinyurl-analytics";
/// Stream field holding the batch's format.
pub const FORMAT_FIELD: &str = "format";
/// The format this version writes.
pub const BATCH_FORMAT: &str = "4";
/// The format before it, which this version folds too.
pub const PREVIOUS_BATCH_FORMAT: &str = "3";
/// Stream of the batches no consumer could fold after repeated attempts
/// (each with the error and the original entry's id), for an operator.
pub const DEAD_LETTER_STREAM: &str = "tinyurl:clicks:dead";
/// Stream field holding the batch id.
pub const BATCH_FIELD: &str = "batch";
/// Stream field holding the lines.
pub const CLICKS_FIELD: &str = "clicks";
/// Referrer of a request without a usable `Referer` header.
pub const DIRECT: &str = "-";
/// The bucket of referrers past the per-code bound, and of hosts that are
/// not host names.
pub const OTHER: &str = "other";
/// The code visits to codes that do not exist are counted under, on the
/// default domain (on another, `host/~`): `~` is in no code.
pub const ORPHANS: &str = "~";

/// The key a domain's visits to codes that do not exist are counted under.
pub fn orphan_key(host: Option<&str>) -> String {
    crate::domains::link_key(host, ORPHANS)
}

/// Whether `key` is an [`orphan_key`].
pub fn is_orphan_key(key: &str) -> bool {
    let (host, code) = crate::domains::split_key(key);
    code == ORPHANS && host.is_none_or(crate::domains::is_host_shaped)
}

/// A requested path as it is counted: itself when it is at most
/// [`MAX_VALUE_LEN`] bytes of the characters a URL path holds unescaped
/// (RFC 3986 `pchar` and `/`, `%` included), else [`OTHER`]. The query is
/// never part of it.
pub fn path_token(path: &str) -> &str {
    if is_path_token(path) { path } else { OTHER }
}

fn is_path_token(value: &str) -> bool {
    value.starts_with('/')
        && value.len() <= MAX_VALUE_LEN
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%/".contains(&byte))
}

/// A dimension's value that was not recorded: the click counts in the
/// link's totals and in no row of that dimension.
pub const NOT_RECORDED: &str = "*";
/// Country when no IP-to-country database is configured or it has no answer.
pub const UNKNOWN_COUNTRY: &str = "unknown";
/// Longest dimension value kept; longer values are folded into [`OTHER`].
pub const MAX_VALUE_LEN: usize = 64;

/// One aggregated line of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClickLine {
    pub code: String,
    /// Minutes since the Unix epoch (UTC).
    pub minute: i64,
    pub referrer: String,
    pub browser: String,
    pub device: String,
    pub country: String,
    pub class: TrafficClass,
    pub count: u64,
    /// For a link with redirect rules: the rule that answered (from 1), or
    /// 0 for the link's own target.
    pub rule: Option<u8>,
}

impl ClickLine {
    /// Whether the click is a bot's (any class but a person's): every
    /// dimension is split into humans and bots.
    pub fn bot(&self) -> bool {
        self.class != TrafficClass::Human
    }
}

/// Who made a visit, from its User-Agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrafficClass {
    /// A person's browser.
    #[default]
    Human,
    /// A search engine's or other crawler, or a tool (curl, python-requests).
    Crawler,
    /// A chat or social app fetching the link to show a preview of it
    /// (Slack, X, Facebook, LinkedIn, Discord, Telegram, WhatsApp, iMessage,
    /// Mastodon…).
    Previewer,
    /// An uptime monitor or a security scanner.
    Monitor,
}

impl TrafficClass {
    pub const ALL: [Self; 4] = [Self::Human, Self::Crawler, Self::Previewer, Self::Monitor];

    /// Its name in statistics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::Crawler => "crawler",
            Self::Previewer => "previewer",
            Self::Monitor => "monitor",
        }
    }

    /// Its digit in a click line.
    fn digit(self) -> u8 {
        match self {
            Self::Human => 0,
            Self::Crawler => 1,
            Self::Previewer => 2,
            Self::Monitor => 3,
        }
    }

    /// Its number in a rollup row's `class` column: its line digit.
    pub fn code(self) -> i16 {
        i16::from(self.digit())
    }

    /// The class whose [`Self::as_str`] is `name`.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.as_str() == name)
    }

    fn from_digit(digit: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|class| digit.len() == 1 && digit.as_bytes()[0] == b'0' + class.digit())
    }
}

/// Minutes since the Unix epoch (UTC) of `at`: the bucket of a click, of
/// minute rollups, and of their retention. Fits `i32` until the year 6053.
pub fn minute_of(at: SystemTime) -> i32 {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    i32::try_from(seconds / 60).unwrap_or(i32::MAX)
}

/// Appends one line to a batch being built.
#[allow(clippy::too_many_arguments)]
pub fn push_line(
    batch: &mut String,
    code: &str,
    minute: i64,
    referrer: &str,
    browser: &str,
    device: &str,
    country: &str,
    class: TrafficClass,
    count: u64,
    rule: Option<u8>,
) {
    // Writing to a String cannot fail.
    let _ = write!(
        batch,
        "{code} {minute} {referrer} {browser} {device} {country} {} {count}",
        class.digit()
    );
    if let Some(rule) = rule {
        let _ = write!(batch, " {rule}");
    }
    batch.push('\n');
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct BatchError {
    pub line: usize,
    pub reason: &'static str,
}

/// Parses every line of a batch; any malformed line refuses the whole batch.
pub fn parse_batch(raw: &str) -> Result<Vec<ClickLine>, BatchError> {
    raw.lines()
        .filter(|line| !line.is_empty())
        .enumerate()
        .map(|(index, line)| {
            parse_line(line).map_err(|reason| BatchError {
                line: index + 1,
                reason,
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Result<ClickLine, &'static str> {
    let mut fields = line.split(' ');
    let mut next = |name: &'static str| fields.next().ok_or(name);
    let code = next("missing code")?;
    let minute = next("missing minute")?;
    let referrer = next("missing referrer")?;
    let browser = next("missing browser")?;
    let device = next("missing device")?;
    let country = next("missing country")?;
    let class = next("missing class")?;
    let count = next("missing count")?;
    let rule = fields
        .next()
        .map(|text| match text.parse::<u8>() {
            // Digits only, no sign or leading zero: one spelling per rule.
            Ok(rule)
                if usize::from(rule) <= crate::options::MAX_RULES && rule.to_string() == text =>
            {
                Ok(rule)
            }
            _ => Err("malformed rule"),
        })
        .transpose()?;
    if fields.next().is_some() {
        return Err("too many fields");
    }
    // A link on a registered domain is counted under its key, `host/code`;
    // visits to codes that do not exist under the domain's orphan key, with
    // the path where the referrer is.
    let orphan = is_orphan_key(code);
    if !orphan && !crate::domains::is_link_key(code) {
        return Err("malformed code");
    }
    let minute: i64 = minute.parse().map_err(|_| "malformed minute")?;
    if !(0..=i64::from(i32::MAX)).contains(&minute) {
        return Err("minute out of range");
    }
    if orphan {
        if !(is_path_token(referrer) || referrer == OTHER) {
            return Err("malformed path");
        }
    } else if !is_referrer_token(referrer) {
        return Err("malformed referrer");
    }
    for value in [browser, device, country] {
        if !is_label_token(value) {
            return Err("malformed browser, device or country");
        }
    }
    let class = TrafficClass::from_digit(class).ok_or("malformed class")?;
    let count: u64 = count.parse().map_err(|_| "malformed count")?;
    if count == 0 || count > i64::MAX as u64 {
        return Err("count out of range");
    }
    Ok(ClickLine {
        code: code.to_owned(),
        minute,
        referrer: referrer.to_owned(),
        browser: browser.to_owned(),
        device: device.to_owned(),
        country: country.to_owned(),
        class,
        count,
        rule,
    })
}

fn is_referrer_token(value: &str) -> bool {
    value == DIRECT
        || value == NOT_RECORDED
        || (!value.is_empty()
            && value.len() <= MAX_VALUE_LEN
            && value.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"-.".contains(&byte)
            }))
}

fn is_label_token(value: &str) -> bool {
    value == NOT_RECORDED
        || !value.is_empty()
            && value.len() <= MAX_VALUE_LEN
            && value
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
}

/// The referrer dimension of a `Referer` header: its host, lowercased, without
/// port, user info or a leading `www.`; [`DIRECT`] when there is none (or it
/// is not an absolute http(s) URL), [`OTHER`] when the host is not a plain
/// host name or IP address.
pub fn referrer_host(header: Option<&[u8]>) -> Referrer<'_> {
    // Byte by byte rather than with `str` patterns: this runs on every
    // counted redirect, and the delimiters are all ASCII, which never occur
    // inside a multi-byte UTF-8 sequence, so the answer is the same.
    let Some(header) = header else {
        return Referrer::Direct;
    };
    if !header.is_ascii() && std::str::from_utf8(header).is_err() {
        return Referrer::Other;
    }
    let Some(scheme_end) = find_scheme_end(header) else {
        return Referrer::Direct;
    };
    let scheme = &header[..scheme_end];
    if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
        return Referrer::Direct;
    }
    let rest = &header[scheme_end + 3..];
    let authority = rest
        .iter()
        .position(|byte| matches!(byte, b'/' | b'?' | b'#'))
        .map_or(rest, |end| &rest[..end]);
    let host_port = authority
        .iter()
        .rposition(|byte| *byte == b'@')
        .map_or(authority, |at| &authority[at + 1..]);
    if let Some(bracketed) = host_port.strip_prefix(b"[") {
        // An IPv6 literal keeps its colons; it is not a host name token.
        return if bracketed.contains(&b']') {
            Referrer::Other
        } else {
            Referrer::Direct
        };
    }
    let mut host = host_port
        .iter()
        .position(|byte| *byte == b':')
        .map_or(host_port, |colon| &host_port[..colon]);
    while let [rest @ .., b'.'] = host {
        host = rest;
    }
    if host.len() >= 4 && host[..4].eq_ignore_ascii_case(b"www.") {
        host = &host[4..];
    }
    if host.is_empty() {
        return Referrer::Direct;
    }
    if host.len() > MAX_VALUE_LEN
        || !host
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-.".contains(byte))
    {
        return Referrer::Other;
    }
    // All ASCII by the check above.
    std::str::from_utf8(host).map_or(Referrer::Other, Referrer::Host)
}

/// Where the first `://` of `header` starts.
fn find_scheme_end(header: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(offset) = header[from..].iter().position(|byte| *byte == b':') {
        let colon = from + offset;
        if header[colon + 1..].starts_with(b"//") {
            return Some(colon);
        }
        from = colon + 1;
    }
    None
}

/// A request's referrer dimension, before lowercasing (done once per
/// distinct host, not per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Referrer<'a> {
    Direct,
    Other,
    /// A host name or IPv4 address, possibly in mixed case.
    Host(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip() {
        let mut batch = String::new();
        push_line(
            &mut batch,
            "Ab3xY9q",
            29_000_000,
            "news.ycombinator.com",
            "chrome",
            "desktop",
            "DE",
            TrafficClass::Human,
            3,
            None,
        );
        push_line(
            &mut batch,
            "my-alias",
            29_000_001,
            DIRECT,
            "googlebot",
            "bot",
            UNKNOWN_COUNTRY,
            TrafficClass::Crawler,
            1,
            None,
        );
        push_line(
            &mut batch,
            "ruled",
            29_000_002,
            DIRECT,
            "safari",
            "mobile",
            "DE",
            TrafficClass::Human,
            2,
            Some(3),
        );
        let lines = parse_batch(&batch).expect("well-formed");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].rule, None);
        assert_eq!(lines[2].rule, Some(3));
        assert!(batch.ends_with("DE 0 2 3\n"), "{batch}");
        assert_eq!(lines[0].code, "Ab3xY9q");
        assert_eq!(lines[0].referrer, "news.ycombinator.com");
        assert_eq!(lines[0].count, 3);
        assert!(lines[1].bot());
        assert_eq!(lines[1].country, "unknown");
    }

    #[test]
    fn links_on_registered_domains_are_counted_under_their_key() {
        let lines = parse_batch("go.example/sale 29000000 - chrome desktop DE 0 2\nsale 29000000 - chrome desktop DE 0 1")
            .expect("well-formed");
        assert_eq!(lines[0].code, "go.example/sale");
        assert_eq!(lines[1].code, "sale");
        for bad in [
            "Go.example/sale",
            "go/sale",
            "go.example/s",
            "go.example/",
            "/sale",
            "go.example/sa le",
            "a.b/c/sale",
        ] {
            assert!(
                parse_batch(&format!("{bad} 29000000 - chrome desktop DE 0 1")).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn visits_to_codes_that_do_not_exist_carry_their_path() {
        let lines = parse_batch(
            "~ 29000000 /wp-login.php * * * 3 7\ngo.example/~ 29000000 /Nope_1 * * * 0 1\n~ 29000000 other * * * 0 1",
        )
        .expect("well-formed");
        assert_eq!(lines[0].code, ORPHANS);
        assert_eq!(lines[0].referrer, "/wp-login.php");
        assert_eq!(lines[1].code, orphan_key(Some("go.example")));
        for bad in [
            "~ 29000000 wp-login.php * * * 0 1",
            "~ 29000000 /a%20b<c * * * 0 1",
            "Go.example/~ 29000000 /a * * * 0 1",
            "~~ 29000000 /a * * * 0 1",
        ] {
            assert!(parse_batch(bad).is_err(), "{bad:?}");
        }
        assert_eq!(path_token("/.env"), "/.env");
        assert_eq!(path_token("/a\"b"), OTHER);
        assert_eq!(path_token(&format!("/{}", "a".repeat(64))), OTHER);
    }

    #[test]
    fn values_not_recorded_round_trip() {
        let mut batch = String::new();
        push_line(
            &mut batch,
            "private",
            29_000_000,
            NOT_RECORDED,
            NOT_RECORDED,
            NOT_RECORDED,
            NOT_RECORDED,
            TrafficClass::Previewer,
            1,
            None,
        );
        let lines = parse_batch(&batch).expect("well-formed");
        assert_eq!(lines[0].referrer, NOT_RECORDED);
        assert_eq!(lines[0].country, NOT_RECORDED);
        assert_eq!(lines[0].class, TrafficClass::Previewer);
        for (digit, class) in [
            ("0", "human"),
            ("1", "crawler"),
            ("2", "previewer"),
            ("3", "monitor"),
        ] {
            let line = format!("c0de 29000000 - chrome desktop DE {digit} 1");
            let parsed = parse_batch(&line).expect("a class");
            assert_eq!(parsed[0].class.as_str(), class);
        }
        for bad in ["4", "01", "", "x"] {
            assert!(parse_batch(&format!("c0de 29000000 - chrome desktop DE {bad} 1")).is_err());
        }
        // Only the whole token: a value with a star in it is malformed.
        assert!(parse_batch("private 29000000 a*b chrome desktop DE 0 1").is_err());
        assert!(parse_batch("private 29000000 - ch*rome desktop DE 0 1").is_err());
    }

    #[test]
    fn refuses_corrupt_batches_whole() {
        for raw in [
            "Ab3xY9q 1 - chrome desktop DE 0",
            "Ab3xY9q 1 - chrome desktop DE 0 1 extra",
            "Ab3xY9q 1 - chrome desktop DE 0 1 11",
            "Ab3xY9q 1 - chrome desktop DE 0 1 01",
            "Ab3xY9q 1 - chrome desktop DE 0 1 -1",
            "Ab3xY9q 1 - chrome desktop DE 0 1 2 3",
            "a/b 1 - chrome desktop DE 0 1",
            "Ab3xY9q -1 - chrome desktop DE 0 1",
            "Ab3xY9q 1 Bad.Host chrome desktop DE 0 1",
            "Ab3xY9q 1 - chr%me desktop DE 0 1",
            "Ab3xY9q 1 - chrome desktop DE 4 1",
            "Ab3xY9q 1 - chrome desktop DE 0 0",
            "Ab3xY9q 1 - chrome desktop DE 0 many",
            "Ab3xY9q 1 - chrome desktop DE 0 1\ngarbage",
        ] {
            assert!(parse_batch(raw).is_err(), "{raw:?}");
        }
        assert_eq!(parse_batch(""), Ok(Vec::new()));
    }

    #[test]
    fn normalises_referrers() {
        fn host(raw: &str) -> Referrer<'_> {
            referrer_host(Some(raw.as_bytes()))
        }
        assert_eq!(referrer_host(None), Referrer::Direct);
        assert_eq!(
            host("https://www.Example.com:8443/path?q=1"),
            Referrer::Host("Example.com")
        );
        assert_eq!(
            host("http://user:pw@news.example.org./x"),
            Referrer::Host("news.example.org")
        );
        assert_eq!(
            host("HTTPS://WWW.EXAMPLE.COM"),
            Referrer::Host("EXAMPLE.COM")
        );
        assert_eq!(host("https://10.0.0.1:80/"), Referrer::Host("10.0.0.1"));
        assert_eq!(host("android-app://com.example"), Referrer::Direct);
        assert_eq!(host("/relative"), Referrer::Direct);
        assert_eq!(host("https://"), Referrer::Direct);
        assert_eq!(host("https://[::1]:8080/"), Referrer::Other);
        assert_eq!(host("https://ex ample.com/"), Referrer::Other);
        assert_eq!(
            host(&format!("https://{}.com/", "a".repeat(80))),
            Referrer::Other
        );
        assert_eq!(referrer_host(Some(b"https://\xff.com/")), Referrer::Other);
    }

    /// [`referrer_host`] as it was written first, with `str` patterns: the
    /// byte-by-byte one must answer the same for every header.
    fn referrer_host_by_str(header: Option<&[u8]>) -> Referrer<'_> {
        let Some(header) = header else {
            return Referrer::Direct;
        };
        let Ok(header) = std::str::from_utf8(header) else {
            return Referrer::Other;
        };
        let rest = match header.split_once("://") {
            Some((scheme, rest))
                if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
            {
                rest
            }
            _ => return Referrer::Direct,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        let host = if let Some(bracketed) = host_port.strip_prefix('[') {
            return if bracketed.contains(']') {
                Referrer::Other
            } else {
                Referrer::Direct
            };
        } else {
            host_port.split(':').next().unwrap_or_default()
        };
        let host = host.trim_end_matches('.');
        let host = match host.get(..4) {
            Some(prefix) if prefix.eq_ignore_ascii_case("www.") => &host[4..],
            _ => host,
        };
        if host.is_empty() {
            return Referrer::Direct;
        }
        if host.len() > MAX_VALUE_LEN
            || !host
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-.".contains(&byte))
        {
            return Referrer::Other;
        }
        Referrer::Host(host)
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_048))]
        #[test]
        fn referrer_hosts_read_by_bytes_as_by_str(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(vec![
                        "a", "Z9", "ex-ample", ".", "-", ":", "/", "?", "#", "@", "[", "]",
                        "www.", "WwW.", "://", "http", "https", " ", "_", "\u{e9}", "\u{20ac}",
                    ])
                    .prop_map(|piece| piece.as_bytes().to_vec()),
                    proptest::num::u8::ANY.prop_map(|byte| vec![byte]),
                ],
                0..16,
            ),
            prefix in proptest::sample::select(vec![
                "", "http://", "HTTPS://", "https://www.", "ftp://", "http:/", "https://a@",
                "http://[", "https://wWw.", "http:://", "https://u:p@",
            ]),
        ) {
            let mut raw = prefix.as_bytes().to_vec();
            raw.extend(pieces.concat());
            proptest::prop_assert_eq!(
                referrer_host(Some(&raw)),
                referrer_host_by_str(Some(&raw))
            );
        }
    }
}
