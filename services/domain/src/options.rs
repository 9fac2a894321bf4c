//! What a link may carry beyond its target, status, query forwarding and
//! expiry: UTM fields merged into the target it redirects to, and redirect
//! rules that send some visitors elsewhere (by device, country or preferred
//! language). A plain link has none of them: its stored options are NULL and
//! its cached record is the short v1 form, so it pays nothing for them.
//!
//! Everything here is decided from the cached record and the request's
//! headers, with no I/O.

use serde::{Deserialize, Serialize};

/// Most redirect rules on one link.
pub const MAX_RULES: usize = 10;
/// Most values in one condition of a rule.
pub const MAX_CONDITION_VALUES: usize = 20;
/// Longest UTM value, in characters.
pub const MAX_UTM_LEN: usize = 200;
/// Largest visit cap.
pub const MAX_VISITS: u64 = 1_000_000_000;

/// A link's options; the default is none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkOptions {
    #[serde(default, skip_serializing_if = "Utm::is_empty")]
    pub utm: Utm,
    /// In order: the first that matches a request answers it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RedirectRule>,
    /// The link redirects this many human visits, then answers 410; bots,
    /// link previewers and HEAD requests never use one (nor are redirected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_visits: Option<u64>,
    /// A password protects the link (see [`crate::protect`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<crate::protect::Password>,
}

/// The five UTM fields; each one set is merged into the query of whichever
/// target a visit goes to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Utm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// A condition and where a visit that meets it goes. Within one kind the
/// values are alternatives (any of them); the kinds given must all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// ISO 3166-1 alpha-2, upper case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<String>,
    /// BCP 47 language ranges, lower case: `en` matches `en-GB`, `pt-br`
    /// only `pt-BR`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    pub target_url: String,
}

/// The device classes a rule can name, told apart by the User-Agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// iPhone, iPad (before iPadOS 13, which presents itself as a Mac), iPod.
    Ios,
    Android,
    /// Anything else, crawlers included.
    Desktop,
}

impl Device {
    pub const ALL: [Self; 3] = [Self::Ios, Self::Android, Self::Desktop];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ios => "ios",
            Self::Android => "android",
            Self::Desktop => "desktop",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|device| device.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The class of a `User-Agent` header: a substring scan, no parser (a
    /// rule is decided on the request path).
    pub fn of(user_agent: Option<&[u8]>) -> Self {
        let Some(agent) = user_agent else {
            return Self::Desktop;
        };
        let has = |needle: &[u8]| agent.windows(needle.len()).any(|window| window == needle);
        if has(b"iPhone") || has(b"iPad") || has(b"iPod") {
            Self::Ios
        } else if has(b"Android") {
            Self::Android
        } else {
            Self::Desktop
        }
    }
}

/// What a request brings to the choice of a rule.
#[derive(Debug, Clone, Copy)]
pub struct Visit<'a> {
    pub device: Device,
    /// Upper case, when known.
    pub country: Option<[u8; 2]>,
    /// The `Accept-Language` header.
    pub accept_language: Option<&'a [u8]>,
}

impl LinkOptions {
    pub fn is_empty(&self) -> bool {
        self.utm.is_empty()
            && self.rules.is_empty()
            && self.max_visits.is_none()
            && self.password.is_none()
    }

    /// The stored form: compact JSON, `None` when there are no options
    /// (a plain link stores NULL).
    pub fn to_stored(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        serde_json::to_string(self).ok()
    }

    /// The options a stored form holds; NULL is none.
    pub fn from_stored(stored: Option<&str>) -> Result<Self, String> {
        match stored {
            None => Ok(Self::default()),
            Some(text) => serde_json::from_str(text).map_err(|error| error.to_string()),
        }
    }

    /// The index of the first rule `visit` meets.
    pub fn rule_for(&self, visit: &Visit<'_>) -> Option<usize> {
        if self.rules.is_empty() {
            return None;
        }
        let language = visit.accept_language.and_then(preferred_language);
        self.rules
            .iter()
            .position(|rule| rule.matches(visit, language.as_deref()))
    }
}

impl RedirectRule {
    fn matches(&self, visit: &Visit<'_>, language: Option<&str>) -> bool {
        let device = self.devices.is_empty() || self.devices.contains(&visit.device);
        let country = self.countries.is_empty()
            || visit.country.is_some_and(|country| {
                self.countries
                    .iter()
                    .any(|wanted| wanted.as_bytes() == country)
            });
        let language = self.languages.is_empty()
            || language.is_some_and(|language| {
                self.languages
                    .iter()
                    .any(|range| language_matches(range, language))
            });
        device && country && language
    }

    /// Whether the rule has any condition (one without would answer every
    /// visit, which is the link's target's job).
    pub fn has_condition(&self) -> bool {
        !(self.devices.is_empty() && self.countries.is_empty() && self.languages.is_empty())
    }
}

/// `range` (`en`, `pt-br`) matches `tag` (`en-gb`, `pt-br`) when it is the
/// tag or a prefix of it ending at a subtag (RFC 4647 basic filtering).
fn language_matches(range: &str, tag: &str) -> bool {
    tag.strip_prefix(range)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

/// The visitor's preferred language: of the `Accept-Language` entries with a
/// non-zero weight, the first of the highest weight, lower case; `*` is none.
pub fn preferred_language(header: &[u8]) -> Option<String> {
    let header = std::str::from_utf8(header).ok()?;
    let mut best: Option<(u16, &str)> = None;
    for entry in header.split(',') {
        let mut parts = entry.split(';');
        let tag = parts.next()?.trim();
        if tag.is_empty() || tag == "*" || tag.len() > 35 {
            continue;
        }
        let mut weight = 1000;
        for parameter in parts {
            if let Some(value) = parameter.trim().strip_prefix("q=") {
                weight = parse_weight(value.trim()).unwrap_or(0);
            }
        }
        if weight > 0 && best.is_none_or(|(held, _)| weight > held) {
            best = Some((weight, tag));
        }
    }
    best.map(|(_, tag)| tag.to_ascii_lowercase())
}

/// An RFC 9110 `qvalue` in thousandths.
fn parse_weight(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let whole: u16 = match whole {
        "0" => 0,
        "1" => 1,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (place, digit) in fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .enumerate()
    {
        thousandths += u16::from(digit - b'0') * [100, 10, 1][place];
    }
    let weight = whole * 1000 + thousandths;
    (weight <= 1000).then_some(weight)
}

impl Utm {
    pub fn is_empty(&self) -> bool {
        self.pairs().next().is_none()
    }

    /// The fields set, as `(parameter, value)` in a fixed order.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("utm_source", &self.source),
            ("utm_medium", &self.medium),
            ("utm_campaign", &self.campaign),
            ("utm_term", &self.term),
            ("utm_content", &self.content),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|value| (name, value)))
    }

    /// Whether the link sets the query parameter `name`.
    pub fn sets(&self, name: &str) -> bool {
        self.pairs().any(|(set, _)| set == name)
    }

    /// `target` with these fields in its query: a parameter of the same name
    /// already there is replaced (the link's campaign is what it says), the
    /// rest of the target is kept byte for byte, the fragment stays last.
    pub fn apply(&self, target: &str) -> String {
        if self.is_empty() {
            return target.to_owned();
        }
        let (before_fragment, fragment) = match target.find('#') {
            Some(at) => target.split_at(at),
            None => (target, ""),
        };
        let (base, query) = match before_fragment.split_once('?') {
            Some((base, query)) => (base, query),
            None => (before_fragment, ""),
        };
        let mut pairs: Vec<String> = query
            .split('&')
            .filter(|pair| !pair.is_empty() && !self.sets(parameter_name(pair)))
            .map(str::to_owned)
            .collect();
        for (name, value) in self.pairs() {
            let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
            pairs.push(format!("{name}={encoded}"));
        }
        format!("{base}?{}{fragment}", pairs.join("&"))
    }

    /// A forwarded query string without the parameters the link sets.
    pub fn strip_from_query(&self, query: &str) -> String {
        query
            .split('&')
            .filter(|pair| !pair.is_empty() && !self.sets(parameter_name(pair)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// The name of a `name=value` query pair, as sent (not decoded).
fn parameter_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utm() -> Utm {
        Utm {
            source: Some("news letter".to_owned()),
            medium: Some("email".to_owned()),
            campaign: Some("spring&sale".to_owned()),
            ..Utm::default()
        }
    }

    #[test]
    fn utm_fields_are_merged_into_the_target() {
        let cases = [
            (
                "https://x.example/p",
                "https://x.example/p?utm_source=news+letter&utm_medium=email&utm_campaign=spring%26sale",
            ),
            (
                "https://x.example/p?a=1&utm_source=old&b=%20#top",
                "https://x.example/p?a=1&b=%20&utm_source=news+letter&utm_medium=email&utm_campaign=spring%26sale#top",
            ),
            (
                "https://x.example/p?utm_term=kept",
                "https://x.example/p?utm_term=kept&utm_source=news+letter&utm_medium=email&utm_campaign=spring%26sale",
            ),
        ];
        for (target, expected) in cases {
            assert_eq!(utm().apply(target), expected, "{target}");
        }
        assert_eq!(
            Utm::default().apply("https://x.example/p?a"),
            "https://x.example/p?a"
        );
        assert_eq!(
            utm().strip_from_query("utm_source=mine&q=1&utm_content=x&utm_medium"),
            "q=1&utm_content=x"
        );
    }

    #[test]
    fn devices_from_user_agents() {
        let cases = [
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
                Device::Ios,
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 12_5 like Mac OS X) AppleWebKit/605.1.15",
                Device::Ios,
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36",
                Device::Android,
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
                Device::Desktop,
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 Version/17.1 Safari/605.1.15",
                Device::Desktop,
            ),
            ("curl/8.4.0", Device::Desktop),
        ];
        for (agent, expected) in cases {
            assert_eq!(Device::of(Some(agent.as_bytes())), expected, "{agent}");
        }
        assert_eq!(Device::of(None), Device::Desktop);
        assert_eq!(Device::parse(" iOS "), Some(Device::Ios));
        assert_eq!(Device::parse("tv"), None);
    }

    #[test]
    fn the_preferred_language_is_the_first_of_the_highest_weight() {
        let cases = [
            ("de-CH, de;q=0.9, en;q=0.8", Some("de-ch")),
            ("en;q=0.5, fr", Some("fr")),
            ("fr;q=0.8, en;q=0.8", Some("fr")),
            ("*, es;q=0.1", Some("es")),
            ("pt-BR;q=0, it;q=0.001", Some("it")),
            ("en;q=2", None),
            ("", None),
        ];
        for (header, expected) in cases {
            assert_eq!(
                preferred_language(header.as_bytes()).as_deref(),
                expected,
                "{header}"
            );
        }
    }

    #[test]
    fn the_first_rule_that_matches_answers() {
        let rule = |devices: &[Device], countries: &[&str], languages: &[&str], target: &str| {
            RedirectRule {
                devices: devices.to_vec(),
                countries: countries.iter().map(|c| (*c).to_owned()).collect(),
                languages: languages.iter().map(|l| (*l).to_owned()).collect(),
                target_url: target.to_owned(),
            }
        };
        let options = LinkOptions {
            utm: Utm::default(),
            max_visits: None,
            password: None,
            rules: vec![
                rule(&[Device::Ios], &["DE", "AT"], &[], "https://de.example/ios"),
                rule(
                    &[Device::Ios, Device::Android],
                    &[],
                    &[],
                    "https://example/mobile",
                ),
                rule(&[], &[], &["pt-br", "fr"], "https://example/lang"),
            ],
        };
        let visit = |device, country: Option<&str>, language: Option<&'static str>| Visit {
            device,
            country: country.map(|country| {
                let bytes = country.as_bytes();
                [bytes[0], bytes[1]]
            }),
            accept_language: language.map(str::as_bytes),
        };
        let cases = [
            (visit(Device::Ios, Some("DE"), None), Some(0)),
            (visit(Device::Ios, Some("US"), None), Some(1)),
            (visit(Device::Ios, None, None), Some(1)),
            (visit(Device::Android, Some("AT"), None), Some(1)),
            (
                visit(Device::Desktop, Some("DE"), Some("pt-BR,en;q=0.5")),
                Some(2),
            ),
            (visit(Device::Desktop, None, Some("pt-PT")), None),
            (visit(Device::Desktop, None, Some("fr-CA")), Some(2)),
            (visit(Device::Desktop, None, Some("en, fr;q=0.9")), None),
            (visit(Device::Desktop, None, None), None),
        ];
        for (index, (visit, expected)) in cases.iter().enumerate() {
            assert_eq!(options.rule_for(visit), *expected, "case {index}");
        }
    }

    #[test]
    fn stored_form_round_trips_and_plain_links_store_nothing() {
        assert_eq!(LinkOptions::default().to_stored(), None);
        assert_eq!(LinkOptions::from_stored(None), Ok(LinkOptions::default()));
        let options = LinkOptions {
            utm: utm(),
            max_visits: None,
            password: None,
            rules: vec![RedirectRule {
                devices: vec![Device::Android],
                countries: vec!["FR".to_owned()],
                languages: Vec::new(),
                target_url: "https://example.com/a".to_owned(),
            }],
        };
        let stored = options.to_stored().unwrap_or_default();
        assert_eq!(
            stored,
            r#"{"utm":{"source":"news letter","medium":"email","campaign":"spring&sale"},"rules":[{"devices":["android"],"countries":["FR"],"target_url":"https://example.com/a"}]}"#
        );
        assert_eq!(LinkOptions::from_stored(Some(&stored)), Ok(options));
        assert!(LinkOptions::from_stored(Some(r#"{"utm":{},"mystery":1}"#)).is_err());
    }
}
