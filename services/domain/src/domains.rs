//! Several short domains on one installation.
//!
//! A link belongs to one domain. The default domain's links (the host of
//! `TINYURL_PUBLIC_BASE_URL`, and every link made before domains existed)
//! are keyed by their bare code, as always; a link on a registered domain
//! is keyed `{host}/{code}`. A `/` can be in neither a host nor a code, so
//! the keys of two domains never meet, and every table, cache entry, click
//! line, tombstone and invalidation keyed by a link's key is per domain
//! without a column of its own: a default-domain link pays nothing for
//! domains, a link on another domain the bytes of its host.

/// Longest host name (RFC 1035).
pub const MAX_HOST_LEN: usize = 253;

/// The key of `code` on `domain` (`None`: the default domain).
pub fn link_key(domain: Option<&str>, code: &str) -> String {
    match domain {
        Some(host) => format!("{host}/{code}"),
        None => code.to_owned(),
    }
}

/// The domain (`None`: the default) and code of a link's key.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.rsplit_once('/') {
        Some((host, code)) => (Some(host), code),
        None => (None, key),
    }
}

/// Whether `key` has a link key's shape: a code, or `{host}/{code}` with a
/// host as [`normalize_host`] leaves one (lower-case ASCII letters, digits,
/// `-` and `.`, at least one dot). A syntactic check, for keys that come
/// back from elsewhere (a click batch); creating a link checks the host in
/// full.
pub fn is_link_key(key: &str) -> bool {
    let (host, code) = split_key(key);
    crate::is_link_shaped(code) && host.is_none_or(is_host_shaped)
}

/// Whether `host` looks like a host [`normalize_host`] leaves (lower-case
/// ASCII letters, digits, `-` and `.`, at least one dot).
pub fn is_host_shaped(host: &str) -> bool {
    (1..=MAX_HOST_LEN).contains(&host.len())
        && host.contains('.')
        && host
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"-.".contains(&byte))
}

/// A host name as domains are registered and looked up: lower case, no
/// port, no trailing dot, internationalised names in their ASCII (punycode)
/// form; refused when it is not a DNS name (an IP address included).
pub fn normalize_host(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let without_dot = raw.strip_suffix('.').unwrap_or(raw);
    if without_dot.is_empty() {
        return Err("a domain needs a host name".to_owned());
    }
    let host = match url::Host::parse(without_dot) {
        Ok(url::Host::Domain(host)) => host,
        Ok(_) => return Err(format!("{raw:?} is an IP address, not a host name")),
        Err(error) => return Err(format!("{raw:?} is not a host name: {error}")),
    };
    if host.len() > MAX_HOST_LEN
        || !host.contains('.')
        || host.split('.').any(|label| {
            label.is_empty()
                || label.len() > 63
                || label.starts_with('-')
                || label.ends_with('-')
                || !label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
    {
        return Err(format!(
            "{raw:?} is not a host name: dot-separated labels of letters, digits and '-', \
             at most 253 characters"
        ));
    }
    Ok(host)
}

/// The host a request names in its `Host` header, as [`normalize_host`]
/// would have it for the ASCII names requests carry (lower case, no port,
/// no trailing dot); `None` for a header that is not one.
pub fn request_host(header: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(header).ok()?.trim();
    // A bracketed IPv6 literal has colons of its own; it names no domain.
    if text.starts_with('[') {
        return None;
    }
    let host = text.split_once(':').map_or(text, |(host, _)| host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_the_default_domain_keeps_bare_codes() {
        assert_eq!(link_key(None, "Abc1234"), "Abc1234");
        assert_eq!(link_key(Some("go.example"), "sale"), "go.example/sale");
        assert_eq!(split_key("go.example/sale"), (Some("go.example"), "sale"));
        assert_eq!(split_key("sale"), (None, "sale"));
    }

    #[test]
    fn hosts_are_normalized_or_refused() {
        for (raw, expected) in [
            ("Go.Example", "go.example"),
            (" links.example.com. ", "links.example.com"),
            ("bücher.example", "xn--bcher-kva.example"),
        ] {
            assert_eq!(normalize_host(raw).as_deref(), Ok(expected), "{raw}");
        }
        for raw in [
            "",
            "localhost",
            "127.0.0.1",
            "[::1]",
            "go.example:8080",
            "-bad.example",
            "a..example",
            "under_score.example",
            "go.example/path",
        ] {
            assert!(normalize_host(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn request_hosts_lose_their_port_and_case() {
        assert_eq!(
            request_host(b"Go.Example:443").as_deref(),
            Some("go.example")
        );
        assert_eq!(request_host(b"go.example.").as_deref(), Some("go.example"));
        assert_eq!(request_host(b"[::1]:8080"), None);
        assert_eq!(request_host(b""), None);
    }
}
