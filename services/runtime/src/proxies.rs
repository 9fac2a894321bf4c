//! Who a request really comes from: `X-Forwarded-For` is believed only when
//! the direct peer is a trusted proxy (`TINYURL_TRUSTED_PROXIES`), and only
//! as far as the chain of trusted proxies reaches.

use std::net::IpAddr;

use ipnet::IpNet;

/// Peers whose `X-Forwarded-For` is believed (`TINYURL_TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// No proxy is trusted: every peer is the client.
    pub const NONE: Self = Self(Vec::new());

    /// Comma-separated CIDRs or single addresses.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut networks = Vec::new();
        for item in list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let network = match item.parse::<IpNet>() {
                Ok(network) => network,
                Err(_) => item
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("{item:?} is not a CIDR or an IP address"))?,
            };
            networks.push(network);
        }
        Ok(Self(networks))
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client of a request from `peer`: the rightmost `X-Forwarded-For`
    /// address that is not a trusted proxy (each proxy appends the address it
    /// saw, so everything left of that is the client's to forge), when `peer`
    /// is trusted; `peer` otherwise.
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&[u8]>) -> IpAddr {
        if !self.contains(peer) {
            if forwarded_for.is_some() {
                untrusted_forwarded_for(peer);
            }
            return canonical(peer);
        }
        let Some(header) = forwarded_for.and_then(|header| std::str::from_utf8(header).ok()) else {
            return canonical(peer);
        };
        let mut client = canonical(peer);
        for hop in header.rsplit(',') {
            let Ok(address) = hop.trim().parse::<IpAddr>() else {
                // A malformed hop ends what can be believed.
                break;
            };
            client = canonical(address);
            if !self.contains(address) {
                break;
            }
        }
        client
    }
}

/// A request carried `X-Forwarded-For` from a peer that is not trusted:
/// either someone forges it (ignored, as it should be) or a proxy in front
/// is missing from `TINYURL_TRUSTED_PROXIES`, and then every client behind
/// it shares the proxy's address in the limits and the analytics. Counted,
/// and logged at most once every ten minutes per process.
fn untrusted_forwarded_for(peer: IpAddr) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
    const EVERY_SECONDS: u64 = 600;
    metrics::counter!("untrusted_forwarded_for_total").increment(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let last = LAST_WARNED.load(Ordering::Relaxed);
    if (last == 0 || now.saturating_sub(last) >= EVERY_SECONDS)
        && LAST_WARNED
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            %peer,
            "requests carry X-Forwarded-For from a peer TINYURL_TRUSTED_PROXIES does not list: the peer's own address is used; if a proxy is in front, list it, or every client behind it shares its limits"
        );
    }
}

/// The address the per-client limits count: the address itself, or for
/// IPv6 its /64 (one subscriber's allocation: a client can pick any address
/// in it).
pub fn limited(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4 peers)
/// as plain IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_ipv6_per_64_and_mapped_addresses_as_ipv4() {
        assert_eq!(
            limited(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(limited(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(limited(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn believes_forwarded_for_only_from_trusted_peers() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").expect("valid");
        let header = Some(&b"203.0.113.9, 198.51.100.7"[..]);
        // An untrusted peer's header is ignored: the peer is the client.
        assert_eq!(trusted.client(ip("192.0.2.1"), header), ip("192.0.2.1"));
        // A trusted peer: the rightmost untrusted hop (the left one was
        // forgeable by 198.51.100.7).
        assert_eq!(trusted.client(ip("10.1.2.3"), header), ip("198.51.100.7"));
        // Chains of trusted proxies are walked through.
        let chain = Some(&b"203.0.113.9, 10.9.9.9"[..]);
        assert_eq!(trusted.client(ip("127.0.0.1"), chain), ip("203.0.113.9"));
        // Garbage stops the walk; no header means the peer.
        let garbage = Some(&b"nonsense, 10.9.9.9"[..]);
        assert_eq!(trusted.client(ip("10.1.2.3"), garbage), ip("10.9.9.9"));
        assert_eq!(trusted.client(ip("10.1.2.3"), None), ip("10.1.2.3"));
        // IPv4-mapped peers count as their IPv4 address.
        assert_eq!(
            trusted.client(ip("::ffff:10.1.2.3"), header),
            ip("198.51.100.7")
        );
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("").expect("empty").0.is_empty());
    }
}
