//! Target URLs, parsed once at the edge. A [`TargetUrl`] is an absolute
//! http(s) URL with a host, no credentials, no whitespace or control
//! characters, an ASCII (punycode) host, at most [`MAX_TARGET_URL_LEN`] bytes,
//! not pointing at the service itself, a private address or a blocked host.

use std::net::{IpAddr, Ipv4Addr};

/// Longest accepted target URL, in bytes, before and after normalisation.
/// 2,048 is what every mainstream browser and proxy handles.
pub const MAX_TARGET_URL_LEN: usize = 2048;

/// Why a target URL was refused. Every message is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetUrlError {
    #[error("target URL must not be empty")]
    Empty,
    #[error("target URL is {length} bytes; the limit is {MAX_TARGET_URL_LEN}")]
    TooLong { length: usize },
    #[error("target URL contains whitespace or a control character at byte {position}")]
    ForbiddenCharacter { position: usize },
    #[error("target URL is not a valid absolute URL: {reason}")]
    Malformed { reason: String },
    #[error("target URL scheme {scheme:?} is not allowed; use http or https")]
    Scheme { scheme: String },
    #[error("target URL must have a host")]
    MissingHost,
    #[error("target URL must not contain a user name or password")]
    Credentials,
    #[error("target URL points at this service ({host}); links to short links would loop")]
    OwnHost { host: String },
    #[error("target URL points at a private, loopback or link-local address ({host})")]
    PrivateAddress { host: String },
    #[error("target URL host {host} is blocked")]
    BlockedHost { host: String },
    #[error("target URL host {host:?} is not a valid host name: {reason}")]
    HostName { host: String, reason: &'static str },
}

/// Longest host name, without a trailing dot (RFC 1035).
const MAX_HOST_NAME_LEN: usize = 253;
/// Longest label of a host name (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// What a deployment allows as targets.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// The service's own public host (from `TINYURL_PUBLIC_BASE_URL`); it and
    /// its subdomains are refused.
    pub own_host: Option<String>,
    /// Hosts refused together with their subdomains, lowercase, no trailing dot.
    pub blocked_hosts: Vec<String>,
    /// Accept IP-literal private, loopback and link-local targets (and
    /// `localhost`), for internal deployments.
    pub allow_private_addresses: bool,
    /// Hosts refused from the operators' blocklist file.
    pub blocklist: std::sync::Arc<HostBlocklist>,
}

/// The host of a stored target URL as blocklist entries match it
/// (lowercase, punycode, IPv6 in brackets).
pub fn stored_host(target_url: &str) -> Option<String> {
    let url = url::Url::parse(target_url).ok()?;
    Some(match url.host()? {
        url::Host::Ipv6(address) => format!("[{address}]"),
        _ => url.host_str()?.trim_end_matches('.').to_ascii_lowercase(),
    })
}

/// A typed search for links by where they lead, in the form the stored
/// targets compare with: a URL or the start of one, with the scheme and a
/// leading `www.` dropped and the host part lowercase and punycode, so that
/// `https://www.Example.com/a`, `example.com/a` and `EXAMPLE.COM/a` all read
/// `example.com/a`. The path and query keep their case, as targets do.
/// `None` when nothing of a host is left.
pub fn target_search_form(text: &str) -> Option<String> {
    let text = text.trim();
    let rest = ["https://", "http://"]
        .iter()
        .find_map(|scheme| {
            text.get(..scheme.len())
                .filter(|head| head.eq_ignore_ascii_case(scheme))
                .map(|_| &text[scheme.len()..])
        })
        .unwrap_or(text);
    let end = rest.find(['/', '?', '#', ':']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(end);
    let host = host.to_lowercase();
    // A whole non-ASCII host compares as the punycode it is stored as; a
    // partly typed one cannot (its punycode is not a prefix of the whole's).
    let host = if host.is_ascii() {
        host
    } else {
        match url::Host::parse(&host) {
            Ok(url::Host::Domain(ascii)) => ascii,
            _ => host,
        }
    };
    let host = host.strip_prefix("www.").unwrap_or(&host);
    (!host.is_empty()).then(|| format!("{host}{path}"))
}

/// The host part of [`target_search_form`]'s result: what the host index
/// narrows by before the rest is compared.
pub fn search_form_host(form: &str) -> &str {
    &form[..form.find(['/', '?', '#', ':']).unwrap_or(form.len())]
}

/// Hosts refused as targets, from a file operators edit: one entry a line,
/// `host` for that host only, `*.suffix` for every host under `suffix`
/// (not `suffix` itself); blank lines and `#` comments are skipped. Entries
/// are compared as the stored URLs hold hosts: lowercase, punycode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostBlocklist {
    exact: std::collections::HashSet<String>,
    suffixes: std::collections::HashSet<String>,
}

impl HostBlocklist {
    /// The error names the line (from 1) and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut list = Self::default();
        for (index, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or_default().trim();
            if entry.is_empty() {
                continue;
            }
            let (wildcard, host) = match entry.strip_prefix("*.") {
                Some(suffix) => (true, suffix),
                None => (false, entry),
            };
            let host = match url::Host::parse(host.trim_end_matches('.')) {
                Ok(url::Host::Domain(domain)) if !domain.is_empty() => domain,
                Ok(url::Host::Ipv4(address)) if !wildcard => address.to_string(),
                Ok(url::Host::Ipv6(address)) if !wildcard => format!("[{address}]"),
                _ => {
                    return Err(format!(
                        "line {}: {entry:?} is not a host name or `*.` and a domain",
                        index + 1
                    ));
                }
            };
            if wildcard {
                list.suffixes.insert(host);
            } else {
                list.exact.insert(host);
            }
        }
        Ok(list)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.suffixes.len()
    }

    /// Both lists' entries.
    pub fn union(mut self, other: &Self) -> Self {
        self.exact.extend(other.exact.iter().cloned());
        self.suffixes.extend(other.suffixes.iter().cloned());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries as they are compared (`host`, `*.suffix`; lowercase,
    /// punycode, no trailing dot), sorted: one spelling however they were
    /// typed.
    pub fn entries(&self) -> Vec<String> {
        let mut entries: Vec<String> = self
            .exact
            .iter()
            .cloned()
            .chain(self.suffixes.iter().map(|suffix| format!("*.{suffix}")))
            .collect();
        entries.sort();
        entries
    }

    /// The entry that blocks `host` (lowercase, punycode), if any.
    pub fn blocking(&self, host: &str) -> Option<String> {
        if self.exact.contains(host) {
            return Some(host.to_owned());
        }
        // Every proper suffix at a label boundary: a few set lookups.
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if self.suffixes.contains(parent) {
                return Some(format!("*.{parent}"));
            }
            rest = parent;
        }
        None
    }
}

/// A validated, normalised target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl(String);

impl TargetUrl {
    pub fn parse(raw: &str, policy: &TargetPolicy) -> Result<Self, TargetUrlError> {
        if raw.is_empty() {
            return Err(TargetUrlError::Empty);
        }
        if raw.len() > MAX_TARGET_URL_LEN {
            return Err(TargetUrlError::TooLong { length: raw.len() });
        }
        // The URL parser silently strips some of these; refuse them instead,
        // so what is stored is exactly what was sent.
        if let Some((position, _)) = raw
            .char_indices()
            .find(|(_, character)| character.is_whitespace() || character.is_control())
        {
            return Err(TargetUrlError::ForbiddenCharacter { position });
        }
        let url = url::Url::parse(raw).map_err(|error| TargetUrlError::Malformed {
            reason: error.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetUrlError::Scheme {
                scheme: url.scheme().to_owned(),
            });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetUrlError::Credentials);
        }
        let host = match url.host() {
            None => return Err(TargetUrlError::MissingHost),
            Some(url::Host::Domain("")) => {
                return Err(TargetUrlError::MissingHost);
            }
            Some(host) => host,
        };
        let host_name = url
            .host_str()
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_ascii_lowercase();

        if let url::Host::Domain(_) = host {
            check_host_name(&host_name)?;
        }
        if let Some(own_host) = &policy.own_host
            && host_matches(&host_name, own_host)
        {
            return Err(TargetUrlError::OwnHost { host: host_name });
        }
        if !policy.allow_private_addresses {
            let private = match host {
                url::Host::Ipv4(address) => is_private_ip(IpAddr::V4(address)),
                url::Host::Ipv6(address) => is_private_ip(IpAddr::V6(address)),
                url::Host::Domain(_) => host_matches(&host_name, "localhost"),
            };
            if private {
                return Err(TargetUrlError::PrivateAddress { host: host_name });
            }
        }
        if let Some(blocked) = policy
            .blocked_hosts
            .iter()
            .find(|blocked| host_matches(&host_name, blocked))
        {
            return Err(TargetUrlError::BlockedHost {
                host: blocked.clone(),
            });
        }
        let listed = match host {
            url::Host::Ipv6(address) => format!("[{address}]"),
            _ => host_name.clone(),
        };
        if let Some(entry) = policy.blocklist.blocking(&listed) {
            return Err(TargetUrlError::BlockedHost { host: entry });
        }
        let normalised = String::from(url);
        if normalised.len() > MAX_TARGET_URL_LEN {
            return Err(TargetUrlError::TooLong {
                length: normalised.len(),
            });
        }
        Ok(Self(normalised))
    }

    /// A URL read back from storage, which only ever holds parsed URLs.
    pub fn from_trusted(stored: String) -> Self {
        Self(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// DNS rules for a host name (already lowercase ASCII: the URL parser
/// punycodes the rest): labels of letters, digits and inner hyphens, 1 to 63
/// bytes each, at most 253 in all, ending in a real top-level label (letters,
/// or an IDN's `xn--` form). `localhost` is left to the private-address rule.
fn check_host_name(host: &str) -> Result<(), TargetUrlError> {
    let refuse = |reason| {
        Err(TargetUrlError::HostName {
            host: host.to_owned(),
            reason,
        })
    };
    if host == "localhost" {
        return Ok(());
    }
    if host.len() > MAX_HOST_NAME_LEN {
        return refuse("longer than 253 characters");
    }
    let labels: Vec<&str> = host.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return refuse("it has an empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return refuse("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        {
            return refuse("labels hold only letters, digits and hyphens");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return refuse("a label starts or ends with a hyphen");
        }
    }
    let top = labels.last().copied().unwrap_or_default();
    let real_top = if let Some(idn) = top.strip_prefix("xn--") {
        !idn.is_empty()
    } else {
        top.len() >= 2 && top.bytes().all(|byte| byte.is_ascii_lowercase())
    };
    if labels.len() < 2 || !real_top {
        return refuse("it does not end in a top-level domain");
    }
    Ok(())
}

/// `host` is `domain` or one of its subdomains.
fn host_matches(host: &str, domain: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    host.eq_ignore_ascii_case(domain)
        || (host.len() > domain.len()
            && host.ends_with(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain))
}

/// Whether `address` reaches inside a network (private, loopback,
/// link-local, carrier-grade NAT, multicast…) rather than the internet.
pub fn is_private_ip(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(mapped) = v6.to_ipv4_mapped() {
                return is_private_v4(mapped);
            }
            let segments = v6.segments();
            let embedded =
                |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
            // IPv4 inside IPv6: the deprecated compatible form ::a.b.c.d,
            // NAT64's well-known prefix 64:ff9b::/96 (a gateway reaches the
            // embedded address), and 6to4's 2002:a.b.c.d::/48.
            if segments[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                return is_private_v4(embedded(segments[6], segments[7]));
            }
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_private_v4(embedded(segments[6], segments[7]));
            }
            if segments[0] == 0x2002 {
                return is_private_v4(embedded(segments[1], segments[2]));
            }
            let first = segments[0];
            // NAT64 for local use (64:ff9b:1::/48) only reaches inside.
            (segments[0] == 0x64 && segments[1] == 0xff9b && segments[2] == 1)
                || v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        }
    }
}

fn is_private_v4(v4: Ipv4Addr) -> bool {
    let [first, second, ..] = v4.octets();
    v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || first == 0 // "this network" 0.0.0.0/8
        || (first == 100 && (64..128).contains(&second)) // carrier-grade NAT 100.64.0.0/10
        || (first == 198 && (second == 18 || second == 19)) // benchmarking 198.18.0.0/15
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn policy() -> TargetPolicy {
        TargetPolicy {
            own_host: Some("sho.rt".to_owned()),
            blocked_hosts: vec!["evil.example".to_owned()],
            allow_private_addresses: false,
            ..TargetPolicy::default()
        }
    }

    #[test]
    fn accepts_and_normalises_ordinary_urls() {
        let cases = [
            ("https://example.com", "https://example.com/"),
            ("HTTP://Example.COM/a?b=c#d", "http://example.com/a?b=c#d"),
            (
                "https://bücher.example/straße",
                "https://xn--bcher-kva.example/stra%C3%9Fe",
            ),
            ("https://example.com:8443/x", "https://example.com:8443/x"),
            ("https://8.8.8.8/", "https://8.8.8.8/"),
            ("https://notsho.rt/", "https://notsho.rt/"),
            // Public addresses in IPv6 forms, the longest legal names, IDNs.
            ("http://[64:ff9b::808:808]/", "http://[64:ff9b::808:808]/"),
            ("http://[2002:808:808::1]/", "http://[2002:808:808::1]/"),
            (
                "https://xn--bcher-kva.xn--p1ai/",
                "https://xn--bcher-kva.xn--p1ai/",
            ),
            ("https://a-b.example.com./", "https://a-b.example.com./"),
        ];
        for (raw, expected) in cases {
            let target =
                TargetUrl::parse(raw, &policy()).unwrap_or_else(|error| panic!("{raw}: {error}"));
            assert_eq!(target.as_str(), expected);
        }
    }

    #[test]
    fn refuses_each_bad_url_with_its_reason() {
        let too_long = format!("https://example.com/{}", "a".repeat(MAX_TARGET_URL_LEN));
        type Expectation = fn(&TargetUrlError) -> bool;
        let cases: Vec<(&str, Expectation)> = vec![
            ("", |e| matches!(e, TargetUrlError::Empty)),
            (&too_long, |e| matches!(e, TargetUrlError::TooLong { .. })),
            ("https://exa mple.com/", |e| {
                matches!(e, TargetUrlError::ForbiddenCharacter { .. })
            }),
            (" https://example.com/", |e| {
                matches!(e, TargetUrlError::ForbiddenCharacter { position: 0 })
            }),
            ("https://example.com/\n", |e| {
                matches!(e, TargetUrlError::ForbiddenCharacter { .. })
            }),
            ("https://example.com/\u{7f}", |e| {
                matches!(e, TargetUrlError::ForbiddenCharacter { .. })
            }),
            ("example.com", |e| {
                matches!(e, TargetUrlError::Malformed { .. })
            }),
            ("https://", |e| {
                matches!(e, TargetUrlError::Malformed { .. })
            }),
            ("https://exa_mple.com:99999/", |e| {
                matches!(e, TargetUrlError::Malformed { .. })
            }),
            ("javascript:alert(1)", |e| {
                matches!(e, TargetUrlError::Scheme { .. })
            }),
            ("ftp://example.com/", |e| {
                matches!(e, TargetUrlError::Scheme { .. })
            }),
            ("data:text/html,hi", |e| {
                matches!(e, TargetUrlError::Scheme { .. })
            }),
            ("file:///etc/passwd", |e| {
                matches!(e, TargetUrlError::Scheme { .. })
            }),
            ("https://bank.com@evil.example/", |e| {
                matches!(e, TargetUrlError::Credentials)
            }),
            ("https://user:pw@example.com/", |e| {
                matches!(e, TargetUrlError::Credentials)
            }),
            ("https://sho.rt/abc", |e| {
                matches!(e, TargetUrlError::OwnHost { .. })
            }),
            ("https://WWW.SHO.RT./abc", |e| {
                matches!(e, TargetUrlError::OwnHost { .. })
            }),
            ("http://127.0.0.1/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://2130706433/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://10.1.2.3/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://192.168.0.1/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://169.254.169.254/latest/meta-data", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://[::1]/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://[fe80::1]/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://[fd00::1]/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://[::ffff:10.0.0.1]/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://localhost:8080/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("https://evil.example/", |e| {
                matches!(e, TargetUrlError::BlockedHost { .. })
            }),
            ("https://a.b.evil.example/", |e| {
                matches!(e, TargetUrlError::BlockedHost { .. })
            }),
            // IPv4 private addresses inside IPv6 forms.
            ("http://[::ffff:127.0.0.1]/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://[64:ff9b::10.0.0.1]/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://[64:ff9b::a9fe:a9fe]/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://[64:ff9b:1::8.8.8.8]/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://[2002:c0a8:101::1]/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://[2002:7f00:1::]/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            ("http://[::10.0.0.1]/", |e| {
                matches!(e, TargetUrlError::PrivateAddress { .. })
            }),
            // DNS rules for host names.
            ("https://intranet/", |e| {
                matches!(e, TargetUrlError::HostName { .. })
            }),
            ("https://example.c0m/", |e| {
                matches!(e, TargetUrlError::HostName { .. })
            }),
            ("https://example.c/", |e| {
                matches!(e, TargetUrlError::HostName { .. })
            }),
            ("https://a..example.com/", |e| {
                matches!(e, TargetUrlError::HostName { .. })
            }),
            ("https://-start.example.com/", |e| {
                matches!(e, TargetUrlError::HostName { .. })
            }),
            ("https://end-.example.com/", |e| {
                matches!(e, TargetUrlError::HostName { .. })
            }),
            ("https://exa_mple.com/", |e| {
                matches!(e, TargetUrlError::HostName { .. })
            }),
        ];
        let long_label = format!("https://{}.example.com/", "a".repeat(64));
        let long_name = format!("https://{}example.com/", "abcdefghi.".repeat(25));
        let mut cases = cases;
        cases.push((&long_label, |e| {
            matches!(e, TargetUrlError::HostName { .. })
        }));
        cases.push((&long_name, |e| matches!(e, TargetUrlError::HostName { .. })));
        for (raw, is_expected) in cases {
            let error = TargetUrl::parse(raw, &policy()).expect_err(raw);
            assert!(is_expected(&error), "{raw:?} gave {error:?}");
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn private_addresses_can_be_allowed() {
        let policy = TargetPolicy {
            allow_private_addresses: true,
            ..policy()
        };
        assert!(TargetUrl::parse("http://10.0.0.1/", &policy).is_ok());
        assert!(TargetUrl::parse("http://localhost/", &policy).is_ok());
    }
}

#[cfg(test)]
mod blocklist_tests {
    use super::*;

    #[test]
    fn exact_hosts_and_wildcard_suffixes() {
        let list = HostBlocklist::parse(
            "# phishing\nBad.Example.\n*.phish.example  # and below\n\n10.1.2.3\nbücher.example\n",
        )
        .expect("valid");
        assert_eq!(list.len(), 4);
        assert_eq!(list.blocking("bad.example").as_deref(), Some("bad.example"));
        assert_eq!(list.blocking("sub.bad.example"), None, "exact only");
        assert_eq!(
            list.blocking("a.b.phish.example").as_deref(),
            Some("*.phish.example")
        );
        assert_eq!(
            list.blocking("phish.example"),
            None,
            "not the suffix itself"
        );
        assert_eq!(
            list.blocking("xn--bcher-kva.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(list.blocking("10.1.2.3").as_deref(), Some("10.1.2.3"));
        assert_eq!(
            list.entries(),
            [
                "*.phish.example",
                "10.1.2.3",
                "bad.example",
                "xn--bcher-kva.example"
            ]
        );
        for bad in ["*.", "exa mple.com", "*.10.0.0.1", "http://x.example/"] {
            let error = HostBlocklist::parse(&format!("ok.example\n{bad}")).expect_err(bad);
            assert!(error.starts_with("line 2:"), "{error}");
        }
    }

    #[test]
    fn targets_on_the_list_are_refused() {
        let policy = TargetPolicy {
            blocklist: std::sync::Arc::new(
                HostBlocklist::parse("bad.example\n*.phish.example").expect("valid"),
            ),
            ..TargetPolicy::default()
        };
        for (url, refused) in [
            ("https://bad.example/x", true),
            ("https://BAD.example./x", true),
            ("https://ok.bad.example/", false),
            ("https://login.phish.example/", true),
            ("https://phish.example/", false),
        ] {
            let parsed = TargetUrl::parse(url, &policy);
            assert_eq!(
                matches!(parsed, Err(TargetUrlError::BlockedHost { .. })),
                refused,
                "{url}: {parsed:?}"
            );
        }
    }

    #[test]
    fn search_forms_compare_as_stored_targets() {
        let cases = [
            ("example.com", Some("example.com")),
            (
                "  https://www.Example.COM/Path?Q=1 ",
                Some("example.com/Path?Q=1"),
            ),
            ("HTTP://WWW.example.com", Some("example.com")),
            ("www.", None),
            ("https://", None),
            ("/articles", None),
            ("bücher.example/Seite", Some("xn--bcher-kva.example/Seite")),
            ("exam", Some("exam")),
            ("example.com:8080/a", Some("example.com:8080/a")),
        ];
        for (typed, expected) in cases {
            assert_eq!(target_search_form(typed).as_deref(), expected, "{typed:?}");
        }
        assert_eq!(search_form_host("example.com:8080/a"), "example.com");
        assert_eq!(search_form_host("example.com"), "example.com");
        // The stored form of a target, made the same way, starts with the
        // form of any typed prefix of it.
        let stored = TargetUrl::parse("https://www.Example.com/Long/Path", &super::tests::policy())
            .map(TargetUrl::into_string)
            .ok()
            .and_then(|url| target_search_form(&url));
        assert_eq!(stored.as_deref(), Some("example.com/Long/Path"));
    }
}
