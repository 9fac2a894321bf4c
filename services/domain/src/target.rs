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
}

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

/// `host` is `domain` or one of its subdomains.
fn host_matches(host: &str, domain: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    host.eq_ignore_ascii_case(domain)
        || (host.len() > domain.len()
            && host.ends_with(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain))
}

fn is_private_ip(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(mapped) = v6.to_ipv4_mapped() {
                return is_private_v4(mapped);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
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

    fn policy() -> TargetPolicy {
        TargetPolicy {
            own_host: Some("sho.rt".to_owned()),
            blocked_hosts: vec!["evil.example".to_owned()],
            allow_private_addresses: false,
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
        ];
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
