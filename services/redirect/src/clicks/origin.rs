//! Where a click comes from: its country, from an IP-to-country database in
//! MaxMind's format (the client address is found by
//! [`tinyurl_runtime::proxies::TrustedProxies`]). The address is cut to its
//! network first (IPv4 /24, IPv6 /48: no country is smaller), that is
//! looked up, and both are dropped; only the country is counted.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;

/// An IP-to-country database (`TINYURL_GEOIP_DB`), held in memory.
pub struct Countries {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl Countries {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let reader = maxminddb::Reader::open_readfile(path)
            .with_context(|| format!("cannot read the country database {}", path.display()))?;
        Ok(Self { reader })
    }

    /// The ISO 3166-1 alpha-2 code of `address`'s country, if the database
    /// has one.
    pub fn country(&self, address: IpAddr) -> Option<[u8; 2]> {
        use maxminddb::PathElement::Key;
        let found = self.reader.lookup(network_of(address)).ok()?;
        let code: &str = found
            .decode_path(&[Key("country"), Key("iso_code")])
            .ok()
            .flatten()?;
        match code.as_bytes() {
            &[first, second] if first.is_ascii_alphabetic() && second.is_ascii_alphabetic() => {
                Some([first.to_ascii_uppercase(), second.to_ascii_uppercase()])
            }
            _ => None,
        }
    }
}

/// `address` with its host part zeroed: the /24 of an IPv4 address, the /48
/// of an IPv6 one (an IPv4-mapped IPv6 address as IPv4).
pub fn network_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_of(IpAddr::V4(v4)),
            None => {
                let segments = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    0,
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_cut_to_their_network() {
        for (address, network) in [
            ("203.0.113.7", "203.0.113.0"),
            ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
            ("::ffff:198.51.100.9", "198.51.100.0"),
        ] {
            let address: IpAddr = address.parse().expect("an address");
            let network: IpAddr = network.parse().expect("a network");
            assert_eq!(network_of(address), network);
        }
    }
}
