//! Where a click comes from: its country, from an IP-to-country database in
//! MaxMind's format (the client address is found by
//! [`tinyurl_runtime::proxies::TrustedProxies`]). The address is used for the
//! lookup and dropped; only the country is counted.

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
        let found = self.reader.lookup(address).ok()?;
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
