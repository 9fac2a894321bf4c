//! The hostile inputs every transport of the links API must refuse, each
//! with the field at fault and the reason the refusal names. One table, so
//! gRPC and REST are held to the same rules.

/// How a case sets the expiry; each transport spells it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A minute ago.
    Past,
    /// 9999-12-31, beyond the 100-year bound.
    Far,
    /// Not a timestamp at all (protobuf: negative nanos; JSON: prose).
    Malformed,
}

/// One create that must be refused with INVALID_ARGUMENT / 400.
#[derive(Debug, Clone, Default)]
pub struct HostileCreate {
    pub target_url: String,
    pub alias: Option<String>,
    pub expires_at: Option<Expiry>,
    pub redirect_type: Option<i32>,
    pub idempotency_key: Option<String>,
    pub tags: Vec<String>,
    /// One UTM field, `(name, value)`: `source`, `medium`…
    pub utm: Option<(&'static str, String)>,
    pub rules: Vec<HostileRule>,
    pub max_visits: Option<u64>,
    pub password: Option<String>,
    pub domain: Option<String>,
    /// The field the refusal names.
    pub field: &'static str,
    /// Words the refusal's message contains.
    pub reason: &'static str,
}

/// A redirect rule of a hostile create.
#[derive(Debug, Clone, Default)]
pub struct HostileRule {
    pub devices: Vec<String>,
    pub countries: Vec<String>,
    pub languages: Vec<String>,
    pub target_url: String,
}

impl HostileRule {
    fn ios(target: &str) -> Self {
        Self {
            devices: vec!["ios".to_owned()],
            target_url: target.to_owned(),
            ..Self::default()
        }
    }
}

/// The table, with targets judged against a writer whose public base URL
/// is `https://sho.rt` and whose blocklist holds `evil.example`.
pub fn hostile_creates() -> Vec<HostileCreate> {
    let too_long = format!("https://example.com/{}", "a".repeat(2048));
    let mut cases = Vec::new();
    for (target, reason) in [
        ("", "must not be empty"),
        (too_long.as_str(), "the limit is 2048"),
        ("https://exa mple.com/", "whitespace or a control character"),
        (
            "https://example.com/\u{0}",
            "whitespace or a control character",
        ),
        (
            "https://example.com/\t",
            "whitespace or a control character",
        ),
        ("example.com/no-scheme", "not a valid absolute URL"),
        ("https://", "not a valid absolute URL"),
        ("https://example.com:99999/", "not a valid absolute URL"),
        (
            "javascript:alert(1)",
            "scheme \"javascript\" is not allowed",
        ),
        ("ftp://example.com/file", "scheme \"ftp\" is not allowed"),
        ("data:text/html,<h1>hi", "scheme \"data\" is not allowed"),
        (
            "mailto:someone@example.com",
            "scheme \"mailto\" is not allowed",
        ),
        ("https://bank.com@evil.example/", "user name or password"),
        ("https://user:secret@example.com/", "user name or password"),
        ("https://sho.rt/loop", "points at this service"),
        ("https://www.sho.rt/loop", "points at this service"),
        ("http://127.0.0.1/admin", "private, loopback or link-local"),
        ("http://10.0.0.8/", "private, loopback or link-local"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "private, loopback or link-local",
        ),
        ("http://[::1]:8080/", "private, loopback or link-local"),
        ("http://localhost/", "private, loopback or link-local"),
        ("https://evil.example/phish", "is blocked"),
        ("https://login.evil.example/phish", "is blocked"),
    ] {
        cases.push(HostileCreate {
            target_url: target.to_owned(),
            field: "target_url",
            reason,
            ..HostileCreate::default()
        });
    }
    let valid = || HostileCreate {
        target_url: "https://example.com/".to_owned(),
        ..HostileCreate::default()
    };
    for (alias, reason) in [
        ("ab", "3 to 64"),
        ("has space", "only letters, digits"),
        ("a/b", "only letters, digits"),
        ("emoji😀", "only letters, digits"),
        ("-lead", "must start with a letter or digit"),
        ("api", "is reserved"),
        ("Metrics", "is reserved"),
    ] {
        cases.push(HostileCreate {
            alias: Some(alias.to_owned()),
            field: "alias",
            reason,
            ..valid()
        });
    }
    for (expiry, reason) in [
        (Expiry::Past, "must be in the future"),
        (Expiry::Far, "within 100 years"),
        (Expiry::Malformed, "not a valid timestamp"),
    ] {
        cases.push(HostileCreate {
            expires_at: Some(expiry),
            field: "expires_at",
            reason,
            ..valid()
        });
    }
    for redirect_type in [200, 303, -302] {
        cases.push(HostileCreate {
            redirect_type: Some(redirect_type),
            field: "redirect_type",
            reason: "not one of 301, 302, 307, 308",
            ..valid()
        });
    }
    for (key, reason) in [
        ("has space".to_owned(), "printable ASCII"),
        ("k".repeat(129), "at most 128"),
    ] {
        cases.push(HostileCreate {
            idempotency_key: Some(key),
            field: "idempotency_key",
            reason,
            ..valid()
        });
    }
    let many: Vec<String> = (0..21).map(|n| format!("tag-{n}")).collect();
    for (tags, reason) in [
        (vec!["   ".to_owned()], "must not be empty"),
        (vec!["t".repeat(51)], "at most 50 allowed"),
        (vec!["a,b".to_owned()], "contains ','"),
        (vec!["<script>".to_owned()], "contains '<'"),
        (many, "21 tags; at most 20"),
    ] {
        cases.push(HostileCreate {
            tags,
            field: "tags",
            reason,
            ..valid()
        });
    }
    for (utm, reason) in [
        (
            ("campaign", "c".repeat(201)),
            "is 201 characters; at most 200 allowed",
        ),
        (
            ("source", "a\u{7}b".to_owned()),
            "contains a control character",
        ),
    ] {
        cases.push(HostileCreate {
            utm: Some(utm),
            field: "utm",
            reason,
            ..valid()
        });
    }
    let strings = |values: &[&str]| values.iter().map(|value| (*value).to_owned()).collect();
    let countries: Vec<String> = (0..21)
        .map(|n| format!("{}{}", char::from(b'A' + n / 10), char::from(b'A' + n % 10)))
        .collect();
    for (rules, reason) in [
        (
            vec![HostileRule::ios("https://example.com/ios"); 11],
            "11 rules; at most 10",
        ),
        (
            vec![HostileRule {
                devices: strings(&["tv"]),
                ..HostileRule::ios("https://example.com/tv")
            }],
            "rule 1: device \"tv\" is not one of ios, android, desktop",
        ),
        (
            vec![
                HostileRule::ios("https://example.com/ios"),
                HostileRule {
                    devices: Vec::new(),
                    countries: strings(&["DEU"]),
                    ..HostileRule::ios("https://example.com/de")
                },
            ],
            "rule 2: country \"DEU\" is not an ISO 3166-1 alpha-2 code",
        ),
        (
            vec![HostileRule {
                devices: Vec::new(),
                countries,
                ..HostileRule::ios("https://example.com/de")
            }],
            "21 countries; at most 20",
        ),
        (
            vec![HostileRule {
                languages: strings(&["english!"]),
                ..HostileRule::ios("https://example.com/en")
            }],
            "is not a language tag",
        ),
        (
            vec![HostileRule {
                devices: Vec::new(),
                ..HostileRule::ios("https://example.com/all")
            }],
            "needs a condition",
        ),
        (
            vec![HostileRule::ios("javascript:alert(1)")],
            "scheme \"javascript\" is not allowed",
        ),
        (
            vec![HostileRule::ios("https://evil.example/phish")],
            "is blocked",
        ),
    ] {
        cases.push(HostileCreate {
            rules,
            field: "rules",
            reason,
            ..valid()
        });
    }
    for cap in [0, 1_000_000_001] {
        cases.push(HostileCreate {
            max_visits: Some(cap),
            field: "max_visits",
            reason: "max_visits must be 1 to 1000000000",
            ..valid()
        });
    }
    for (password, reason) in [
        ("abc".to_owned(), "4 to 128 characters, got 3"),
        ("é".repeat(129), "4 to 128 characters, got 129"),
        ("pass\nword".to_owned(), "control characters"),
    ] {
        cases.push(HostileCreate {
            password: Some(password),
            field: "password",
            reason,
            ..valid()
        });
    }
    for (domain, reason) in [
        ("not a host", "is not a host name"),
        ("127.0.0.1", "an IP address"),
        (
            "unregistered.example",
            "no domain unregistered.example is registered",
        ),
    ] {
        cases.push(HostileCreate {
            domain: Some(domain.to_owned()),
            field: "domain",
            reason,
            ..valid()
        });
    }
    cases
}
