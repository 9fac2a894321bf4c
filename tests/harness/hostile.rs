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
    /// The field the refusal names.
    pub field: &'static str,
    /// Words the refusal's message contains.
    pub reason: &'static str,
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
    cases
}
