//! One table of redirect rules and the visits they must answer, held by
//! every deployment alike: the split system's redirect processes and
//! `tinyurl up`. The link has UTM fields too, so every expected `Location`
//! shows them merged into whichever target answered.

use std::net::Ipv4Addr;

pub const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
pub const ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";
pub const DESKTOP: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

/// An address of each country of [`NETWORKS`], as a trusted proxy's
/// `X-Forwarded-For` names it.
pub const IN_GERMANY: &str = "203.0.113.7";
pub const IN_THE_US: &str = "198.51.100.9";

/// The networks of the test country database.
pub const NETWORKS: [(Ipv4Addr, u8, &str); 2] = [
    (Ipv4Addr::new(203, 0, 113, 0), 24, "DE"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "US"),
];

/// The link's own target.
pub const TARGET: &str = "https://example.com/home?ref=1";

/// The link's UTM fields, `(field, value)`.
pub const UTM: [(&str, &str); 2] = [("source", "newsletter"), ("campaign", "spring sale")];

/// A rule as `(devices, countries, languages, target)`, in the link's order.
pub type Rule = (
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
    &'static str,
);

pub const RULES: [Rule; 5] = [
    (&["ios"], &["DE"], &[], "https://apps.example/de-ios"),
    (&["ios"], &[], &[], "https://apps.example/ios"),
    (&["android"], &[], &[], "https://play.example/app"),
    (&[], &["US"], &["es"], "https://example.com/us-es"),
    (&[], &[], &["de", "fr-CA"], "https://example.com/lang#top"),
];

/// One visit: User-Agent, `X-Forwarded-For`, `Accept-Language`, and the
/// `Location` it must get.
pub struct Visit {
    pub agent: Option<&'static str>,
    pub forwarded_for: Option<&'static str>,
    pub accept_language: Option<&'static str>,
    pub location: &'static str,
}

pub fn visits() -> Vec<Visit> {
    let visit = |agent, forwarded_for, accept_language, location| Visit {
        agent,
        forwarded_for,
        accept_language,
        location,
    };
    vec![
        visit(
            Some(IPHONE),
            Some(IN_GERMANY),
            None,
            "https://apps.example/de-ios?utm_source=newsletter&utm_campaign=spring+sale",
        ),
        visit(
            Some(IPHONE),
            Some(IN_THE_US),
            Some("de"),
            "https://apps.example/ios?utm_source=newsletter&utm_campaign=spring+sale",
        ),
        visit(
            Some(IPHONE),
            None,
            None,
            "https://apps.example/ios?utm_source=newsletter&utm_campaign=spring+sale",
        ),
        visit(
            Some(ANDROID),
            Some(IN_GERMANY),
            Some("de"),
            "https://play.example/app?utm_source=newsletter&utm_campaign=spring+sale",
        ),
        visit(
            Some(DESKTOP),
            Some(IN_THE_US),
            Some("es-MX,en;q=0.5"),
            "https://example.com/us-es?utm_source=newsletter&utm_campaign=spring+sale",
        ),
        // The preferred language is English: Spanish comes second.
        visit(
            Some(DESKTOP),
            Some(IN_THE_US),
            Some("en, es;q=0.9"),
            "https://example.com/home?ref=1&utm_source=newsletter&utm_campaign=spring+sale",
        ),
        visit(
            Some(DESKTOP),
            Some(IN_GERMANY),
            Some("de-AT"),
            "https://example.com/lang?utm_source=newsletter&utm_campaign=spring+sale#top",
        ),
        visit(
            Some(DESKTOP),
            None,
            Some("fr-CA,fr;q=0.8"),
            "https://example.com/lang?utm_source=newsletter&utm_campaign=spring+sale#top",
        ),
        visit(
            Some(DESKTOP),
            None,
            Some("fr-FR"),
            "https://example.com/home?ref=1&utm_source=newsletter&utm_campaign=spring+sale",
        ),
        // Spanish from an address of no known country.
        visit(
            Some(DESKTOP),
            Some("192.0.2.1"),
            Some("es"),
            "https://example.com/home?ref=1&utm_source=newsletter&utm_campaign=spring+sale",
        ),
        visit(
            None,
            None,
            None,
            "https://example.com/home?ref=1&utm_source=newsletter&utm_campaign=spring+sale",
        ),
    ]
}

impl Visit {
    /// The request headers of the visit.
    pub fn headers(&self) -> Vec<(&'static str, &'static str)> {
        let mut headers = Vec::new();
        if let Some(agent) = self.agent {
            headers.push(("User-Agent", agent));
        }
        if let Some(forwarded) = self.forwarded_for {
            headers.push(("X-Forwarded-For", forwarded));
        }
        if let Some(language) = self.accept_language {
            headers.push(("Accept-Language", language));
        }
        headers
    }
}

/// The command line's `--rule` arguments for [`RULES`].
pub fn rule_arguments() -> Vec<String> {
    RULES
        .iter()
        .map(|(devices, countries, languages, target)| {
            let mut words = Vec::new();
            for (name, values) in [
                ("device", devices),
                ("country", countries),
                ("lang", languages),
            ] {
                if !values.is_empty() {
                    words.push(format!("{name}={}", values.join(",")));
                }
            }
            words.push((*target).to_owned());
            words.join(" ")
        })
        .collect()
}
